"""The multi-task model: one shared ERNIE encoder and one head per task."""

import logging
import os

import paddle
import paddle.nn as nn

from ..errors import ConfigError
from .fusion import FeatureFusion
from .sharing import build_sharing

logger = logging.getLogger(__name__)


def num_outputs(task_type, num_labels):
    """Return the outputs of a task's head.

    One for binary and regression, two for zero_inflated (the logit of
    P(y > 0) and the standardised amount), else one per class, label or item.
    """
    if task_type in ("binary", "regression"):
        return 1
    if task_type == "zero_inflated":
        return 2
    return num_labels


class TaskHead(nn.Layer):
    """Dropout, an optional hidden layer, then a linear layer to the logits."""

    def __init__(self, input_size, output_size, hidden_size=0, dropout=0.1):
        super().__init__()
        layers = [nn.Dropout(dropout)]
        if hidden_size > 0:
            layers += [nn.Linear(input_size, hidden_size), nn.GELU(),
                       nn.Dropout(dropout)]
            input_size = hidden_size
        layers.append(nn.Linear(input_size, output_size))
        self.layers = nn.Sequential(*layers)

    def forward(self, features):
        return self.layers(features)


class MultiTaskErnie(nn.Layer):
    """A shared `ErnieModel` whose pooled text representation feeds every head.

    With `feature_spec` (from `FeatureEncoder.model_spec`), a `FeatureFusion`
    layer first combines the text representation with the structured
    inputs; without it the heads read the text representation directly.
    `forward` returns one logits tensor per task, in `task_names` order, so
    the layer traces to a static graph with plain tensor outputs.

    With a `sharing_spec` of type "mmoe" or "ple" (the fields of
    `SharingConfig`), a `MMoE` or `PLE` layer turns that representation
    into one input per task head; "hard" or None feeds every head the same.
    """

    def __init__(self, encoder, task_specs, pooling="cls", feature_spec=None,
                 sharing_spec=None):
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.task_names = [spec["name"] for spec in task_specs]
        self.pad_token_id = encoder.config.pad_token_id
        hidden = encoder.config.hidden_size
        self.fusion = None
        if feature_spec:
            self.fusion = FeatureFusion(
                hidden, feature_spec["num_numeric"],
                feature_spec["vocab_sizes"], feature_spec["embedding_dim"],
                feature_spec["fusion"], feature_spec["hidden_size"],
                feature_spec["dropout"])
            hidden = self.fusion.output_size
        # The FeatureEncoder whose outputs this model reads; checkpoints
        # save it as features.json.
        self.feature_encoder = None
        self.sharing = build_sharing(sharing_spec, hidden, len(task_specs))
        if self.sharing is not None:
            hidden = self.sharing.output_size
        self.heads = nn.LayerDict({
            spec["name"]: TaskHead(hidden, spec["num_outputs"],
                                   spec.get("hidden_size", 0),
                                   spec.get("dropout", 0.1))
            for spec in task_specs
        })

    def forward(self, input_ids, token_type_ids=None, numeric_features=None,
                categorical_features=None):
        """Return each task's logits.

        `numeric_features` float32 [batch, numeric inputs] and
        `categorical_features` int64 [batch, categorical columns] are
        required exactly when the model was built with such features.
        """
        self._check_feature_inputs(numeric_features, categorical_features)
        attention_mask = (input_ids != self.pad_token_id).astype("float32")
        # ErnieModel wants an additive mask broadcast over heads and queries.
        additive_mask = ((1.0 - attention_mask) * -1e4).unsqueeze([1, 2])
        sequence_output, pooled_output = self.encoder(
            input_ids, token_type_ids=token_type_ids,
            attention_mask=additive_mask, return_dict=False)[:2]
        if self.pooling == "mean":
            weights = attention_mask.unsqueeze(-1)
            summed = (sequence_output * weights).sum(axis=1)
            features = summed / weights.sum(axis=1).clip(min=1.0)
        else:
            features = pooled_output
        if self.fusion is not None:
            features = self.fusion(features, numeric_features,
                                   categorical_features)
        if self.sharing is None:
            return tuple(self.heads[name](features)
                         for name in self.task_names)
        task_features = self.sharing(features)
        return tuple(self.heads[name](inputs)
                     for name, inputs in zip(self.task_names, task_features))

    def _check_feature_inputs(self, numeric_features, categorical_features):
        needs_numeric = self.fusion is not None and self.fusion.num_numeric > 0
        needs_categorical = (self.fusion is not None
                             and len(self.fusion.embeddings) > 0)
        for name, value, expected in (
                ("numeric_features", numeric_features, needs_numeric),
                ("categorical_features", categorical_features,
                 needs_categorical)):
            if expected and value is None:
                raise ValueError(f"the model was trained with {name}; pass "
                                 "them to forward")
            if not expected and value is not None:
                raise ValueError(f"the model was trained without {name}; "
                                 "do not pass them")

    def shared_parameters(self):
        """Return the parameters that every task's loss reaches.

        They are the encoder's, the fusion layer's and the MMoE or PLE
        layer's (whose gates are per task but whose experts are shared),
        without the pooler under mean pooling. The last shared layer's
        weight comes last: the fusion projection, else the pooler's dense
        layer (cls pooling) or the last encoder layer's output projection
        (mean pooling).
        """
        if self.fusion is not None:
            last = self.fusion.project.weight
        elif self.pooling == "mean":
            last = self.encoder.encoder.layers[-1].linear2.weight
        else:
            last = self.encoder.pooler.dense.weight
        layers = [self.encoder, self.fusion, self.sharing]
        parameters = [p for layer in layers if layer is not None
                      for n, p in layer.named_parameters()
                      if p is not last and not (self.pooling == "mean"
                                                and n.startswith("pooler."))]
        return parameters + [last]

    def save_heads(self, path):
        paddle.save(self.heads.state_dict(), path)


def build_encoder(model_config, vocab_size, max_length):
    """Return an `ErnieModel`: pretrained by name or directory, or new."""
    from paddlenlp.transformers import ErnieConfig, ErnieModel

    if model_config.name_or_path:
        source = model_config.name_or_path
        try:
            encoder = ErnieModel.from_pretrained(source)
        except Exception as exc:  # PaddleNLP raises several types here
            raise ConfigError(
                f"cannot load ERNIE weights from model.name_or_path={source!r}: "
                f"{type(exc).__name__}: {_first_line(exc)}; give a PaddleNLP "
                "model name (needs internet on first use) or a directory with "
                "config.json and model_state.pdparams") from None
        logger.info("loaded pretrained encoder %s", source)
    else:
        arch = model_config.encoder
        config = ErnieConfig(
            vocab_size=vocab_size,
            hidden_size=arch.hidden_size,
            num_hidden_layers=arch.num_hidden_layers,
            num_attention_heads=arch.num_attention_heads,
            intermediate_size=arch.intermediate_size,
            hidden_act=arch.hidden_act,
            hidden_dropout_prob=arch.hidden_dropout_prob,
            attention_probs_dropout_prob=arch.attention_probs_dropout_prob,
            max_position_embeddings=arch.max_position_embeddings,
            type_vocab_size=arch.type_vocab_size,
            pad_token_id=0,
        )
        encoder = ErnieModel(config)
        logger.info("built a new encoder: %d layers, hidden size %d, vocabulary "
                    "%d", arch.num_hidden_layers, arch.hidden_size, vocab_size)
    _check_sizes(encoder.config, vocab_size, max_length)
    return encoder


def load_encoder(directory):
    from paddlenlp.transformers import ErnieModel

    if not os.path.isdir(directory):
        raise ConfigError(f"encoder directory not found: {directory}")
    return ErnieModel.from_pretrained(directory)


def _check_sizes(config, vocab_size, max_length):
    if vocab_size > config.vocab_size:
        raise ConfigError(f"the tokenizer has {vocab_size} ids but the encoder's "
                          f"vocab_size is {config.vocab_size}; use the "
                          "tokenizer that belongs to the model")
    if max_length > config.max_position_embeddings:
        raise ConfigError(f"tokenizer.max_length={max_length} exceeds the "
                          "encoder's max_position_embeddings="
                          f"{config.max_position_embeddings}; lower it")


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
