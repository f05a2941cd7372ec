"""The MLM model: PaddleNLP's ErnieForMaskedLM, and the model directory it writes.

The output word embeddings of the MLM head are tied to the input
embeddings (PaddleNLP's `tie_weights`), so the base `ErnieModel` weights
contain the decoder matrix and `mlm_head.pdparams` contains only the transform,
layer norm and decoder bias.
"""

import logging
import os

import paddle

from ..engine.checkpoint import staged_dir
from ..errors import ConfigError
from ..models import build_encoder

logger = logging.getLogger(__name__)

MLM_HEAD_FILE = "mlm_head.pdparams"


def build_mlm_model(model_config, vocab_size, max_length):
    """Return an `ErnieForMaskedLM`, new from `model_config.encoder` or loaded.

    A model directory written by `save_model_dir` also restores its MLM
    head. Other sources start with a new head unless their weights contain one.
    """
    from paddlenlp.transformers import ErnieForMaskedLM

    source = model_config.name_or_path
    if source is None:
        # build_encoder maps the encoder section to an ErnieConfig exactly
        # as fine-tuning does, so both build the same architecture.
        encoder = build_encoder(model_config, vocab_size, max_length)
        model = ErnieForMaskedLM(encoder.config)
        model.ernie.set_state_dict(encoder.state_dict())
        return model
    try:
        model = ErnieForMaskedLM.from_pretrained(source)
    except Exception as exc:  # PaddleNLP raises several types for a bad source
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(
            f"cannot load ERNIE weights from model.name_or_path={source!r}: "
            f"{type(exc).__name__}: {detail}; give a PaddleNLP model name "
            "(needs internet on first use) or a directory with config.json "
            "and model_state.pdparams") from None
    head_path = os.path.join(source, MLM_HEAD_FILE)
    if os.path.isfile(head_path):
        missing, unexpected = model.cls.set_state_dict(paddle.load(head_path))
        if unexpected:
            raise ConfigError(f"{head_path} does not fit the model: unexpected "
                              f"{unexpected[:5]}; delete the file to start "
                              "with a new MLM head")
        logger.info("loaded the MLM head from %s", head_path)
    _check_sizes(model.config, vocab_size, max_length, source)
    logger.info("continuing from %s", source)
    return model


def _check_sizes(config, vocab_size, max_length, source):
    if vocab_size > config.vocab_size:
        raise ConfigError(f"the tokenizer has {vocab_size} ids but the model "
                          f"{source} has vocab_size {config.vocab_size}; use "
                          "the tokenizer that belongs to the model, e.g. "
                          "tokenizer.vocab_file=null")
    if max_length > config.max_position_embeddings:
        raise ConfigError(f"tokenizer.max_length={max_length} exceeds "
                          f"max_position_embeddings="
                          f"{config.max_position_embeddings} of {source}; "
                          "lower it")


def mlm_head_state(model):
    """Return the MLM head's parameters that are not the tied embeddings."""
    tied = model.ernie.embeddings.word_embeddings.weight
    return {name: value for name, value in model.cls.state_dict().items()
            if value is not tied}


def write_model_files(directory, model, tokenizer):
    """Write the base ErnieModel, the tokenizer files and the MLM head."""
    model.ernie.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    paddle.save(mlm_head_state(model), os.path.join(directory, MLM_HEAD_FILE))


def save_model_dir(directory, model, tokenizer):
    """Write a PaddleNLP model directory, replacing an earlier one atomically.

    `ErnieModel.from_pretrained(directory)` and
    `ErnieTokenizer.from_pretrained(directory)` load it, so fine-tuning
    takes it as `model.name_or_path`.
    """
    with staged_dir(directory) as tmp:
        write_model_files(tmp, model, tokenizer)
