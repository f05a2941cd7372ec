"""Trace a checkpoint to a static graph and write a self-contained export.

An export directory contains:
  model.json        the inference program (Paddle 3; Paddle 2 wrote
                    model.pdmodel, which the predictor also loads)
  model.pdiparams   the weights
  tokenizer/        the tokenizer files, loadable with `from_pretrained`
  features.json     the fitted FeatureEncoder, only with structured features
  tasks.json        task schema, label maps and preprocessing settings
  config.yaml       the resolved config the export was made from
  export.json       file names, input and output names, versions
"""

import copy
import logging
import os
import shutil
import tempfile

import numpy as np
import paddle

from ..config import load_config, save_config
from ..data.features import FEATURES_FILE
from ..engine.checkpoint import (
    CONFIG_FILE,
    TASKS_FILE,
    load_checkpoint,
    replace_dir,
    resolve_checkpoint,
    write_json,
)
from ..errors import ConfigError

logger = logging.getLogger(__name__)

MODEL_PREFIX = "model"
TOKENIZER_DIR = "tokenizer"
MANIFEST_FILE = "export.json"
INPUT_NAMES = ("input_ids", "token_type_ids")
FORMAT_VERSION = 1

# Texts traced through both graphs after an export to check that they agree.
CHECK_TEXTS = ["", "质量很好，物流也快！", "屏幕太暗了，退货。" * 40, "👍 ＯＫ 繁體字"]
CHECK_TOLERANCE = 1e-4


def resolve_export_config(checkpoint, config_path=None, overrides=()):
    """Return (checkpoint directory, config) for an export.

    The config comes from `config_path` when given, else from the
    checkpoint's own config.yaml; `overrides` apply to either.
    """
    checkpoint = os.path.abspath(resolve_checkpoint(checkpoint))
    path = config_path or os.path.join(checkpoint, CONFIG_FILE)
    return checkpoint, load_config(path, overrides)


def export_model(checkpoint, output_dir, config=None, check=True):
    """Export `checkpoint` to `output_dir` for Paddle Inference; return its path.

    Text settings (columns, template, id column) come from `config.data` when
    `config` is given, so one checkpoint can serve files laid out differently
    from the training data. The maximum length, tokenizer, label maps and
    weights always come from the checkpoint. The directory is written under
    a temporary name and renamed, so a failed export leaves no partial one.
    With `check`, a few texts run through both graphs before the rename.
    """
    checkpoint = os.path.abspath(resolve_checkpoint(checkpoint))
    model, tokenizer, saved_config, schema, _, _ = load_checkpoint(checkpoint)
    config = config or saved_config
    schema = export_schema(schema, config, model.feature_encoder)
    output_dir = os.path.abspath(output_dir)
    _check_output_dir(output_dir, checkpoint)
    parent = os.path.dirname(output_dir)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the export folder {parent}: "
                          f"{exc.strerror}") from None
    # The reference logits come first, because tracing converts `model`.
    inputs = model_input_names(model)
    features = check_features(model)
    reference = (dynamic_check_logits(model, tokenizer, schema, features)
                 if check else None)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.tmp-",
                           dir=parent)
    os.chmod(tmp, 0o755)  # mkdtemp creates it readable by the owner only
    try:
        model_file = save_static_model(model, os.path.join(tmp, MODEL_PREFIX))
        tokenizer.save_pretrained(os.path.join(tmp, TOKENIZER_DIR))
        write_json(os.path.join(tmp, TASKS_FILE), schema)
        if model.feature_encoder is not None:
            model.feature_encoder.save(os.path.join(tmp, FEATURES_FILE))
        save_config(config, os.path.join(tmp, CONFIG_FILE))
        write_json(os.path.join(tmp, MANIFEST_FILE),
                   _manifest(model_file, schema, checkpoint, inputs))
        if check:
            check_export(tmp, reference, features)
        replace_dir(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("exported %s to %s", checkpoint, output_dir)
    return output_dir


def _check_output_dir(output_dir, checkpoint):
    """Raise ConfigError unless `output_dir` may be created or replaced.

    Only an empty directory or an earlier export is replaced, so a mistyped
    `--output` cannot delete a checkpoint or unrelated files.
    """
    common = os.path.commonpath([output_dir, checkpoint])
    if common in (output_dir, checkpoint):
        raise ConfigError(f"export directory {output_dir} overlaps the "
                          f"checkpoint {checkpoint}; choose a separate folder")
    if os.path.isfile(output_dir):
        raise ConfigError(f"export directory {output_dir} is a file; choose a "
                          "directory name")
    if os.path.isdir(output_dir) and os.listdir(output_dir):
        if not os.path.isfile(os.path.join(output_dir, MANIFEST_FILE)):
            raise ConfigError(f"{output_dir} exists and is not an export (no "
                              f"{MANIFEST_FILE}); choose another folder or "
                              "empty it")


def export_schema(schema, config, feature_encoder=None):
    """Return the checkpoint's schema with text settings from `config.data`.

    The feature columns always come from the checkpoint's FeatureEncoder.
    """
    schema = copy.deepcopy(schema)
    data = config.data
    preprocess = schema["preprocess"]
    preprocess.update({
        "text_columns": list(data.text_columns),
        "text_template": data.text_template,
        "text_separator": data.text_separator,
        "id_column": data.id_column,
        "feature_columns": (feature_encoder.columns
                            if feature_encoder is not None else []),
    })
    if config.tokenizer.max_length != preprocess["max_length"]:
        logger.warning("tokenizer.max_length=%d differs from the checkpoint's "
                       "%d; the export keeps the checkpoint's",
                       config.tokenizer.max_length, preprocess["max_length"])
    return schema


def model_input_names(model):
    """Return the inputs of the exported program, in order.

    The text inputs, then `numeric_features` and `categorical_features`
    when the model was trained with such features.
    """
    names = list(INPUT_NAMES)
    fusion = model.fusion
    if fusion is not None and fusion.num_numeric:
        names.append("numeric_features")
    if fusion is not None and len(fusion.embeddings):
        names.append("categorical_features")
    return names


class _FeatureInputs(paddle.nn.Layer):
    """The model with categorical but no numeric features, for tracing.

    Inputs are bound by position, so the third input must reach the model's
    `categorical_features` argument, not `numeric_features`.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, token_type_ids, categorical_features):
        return self.model(input_ids, token_type_ids,
                          categorical_features=categorical_features)


def save_static_model(model, prefix):
    """Trace `model` in eval mode and save the program; return its file name."""
    from paddle.static import InputSpec

    model.eval()
    names = model_input_names(model)
    input_spec = [InputSpec([None, None], "int64", name) for name in INPUT_NAMES]
    if "numeric_features" in names:
        input_spec.append(InputSpec([None, model.fusion.num_numeric], "float32",
                                    "numeric_features"))
    if "categorical_features" in names:
        input_spec.append(InputSpec([None, len(model.fusion.embeddings)],
                                    "int64", "categorical_features"))
    if names == [*INPUT_NAMES, "categorical_features"]:
        model = _FeatureInputs(model)
    static_model = paddle.jit.to_static(model, input_spec=input_spec,
                                        full_graph=True)
    paddle.jit.save(static_model, prefix)
    for extension in (".json", ".pdmodel"):
        if os.path.isfile(prefix + extension):
            return os.path.basename(prefix + extension)
    raise RuntimeError(f"paddle.jit.save wrote no program file for {prefix}")


def check_features(model, rows=len(CHECK_TEXTS), seed=0):
    """Return seeded (numeric, categorical) feature rows for the check.

    Numeric inputs are standard normal, indicators included; categorical
    ids cover the unseen and missing ids and known values. Either is None
    when the model does not take it.
    """
    fusion = model.fusion
    if fusion is None:
        return None, None
    rng = np.random.default_rng(seed)
    numeric = categorical = None
    if fusion.num_numeric:
        numeric = rng.normal(size=(rows, fusion.num_numeric)).astype("float32")
    if len(fusion.embeddings):
        sizes = [embedding.weight.shape[0] for embedding in fusion.embeddings]
        categorical = np.stack([np.arange(rows) % size for size in sizes],
                               axis=1).astype("int64")
    return numeric, categorical


def dynamic_check_logits(model, tokenizer, schema, features=(None, None)):
    """Return the dynamic graph's logits for the check texts and `features`
    (from `check_features`)."""
    from ..engine.evaluation import predict_logits
    from ..tokenizer import TextEncoder

    model.eval()
    encoder = TextEncoder(tokenizer, schema["preprocess"]["max_length"])
    encoded, _ = encoder.encode(CHECK_TEXTS)
    return predict_logits(model, encoded, len(encoded), encoder.pad_id,
                          *features)


def check_export(export_dir, reference, features=(None, None)):
    """Run the check inputs through the export; raise if the logits differ."""
    from ..inference.predictor import Predictor

    predictor = Predictor(export_dir, device="cpu")
    numeric, categorical = features
    static = predictor.predict_logits(predictor.encode(CHECK_TEXTS),
                                      numeric_features=numeric,
                                      categorical_features=categorical)
    gap = max(float(np.abs(s - d).max()) for s, d in zip(static, reference))
    logger.info("static and dynamic graphs agree within %.2e on %d check texts",
                gap, len(CHECK_TEXTS))
    if gap > CHECK_TOLERANCE:
        raise RuntimeError(f"the exported model's logits differ from the "
                           f"checkpoint's by {gap:.2e} (tolerance "
                           f"{CHECK_TOLERANCE}); the export is not usable")


def _manifest(model_file, schema, checkpoint, inputs):
    import paddlenlp

    return {
        "format_version": FORMAT_VERSION,
        "model_file": model_file,
        "params_file": MODEL_PREFIX + ".pdiparams",
        "tokenizer_dir": TOKENIZER_DIR,
        "inputs": list(inputs),
        "outputs": [task["name"] for task in schema["tasks"]],
        "checkpoint": checkpoint,
        "paddle_version": paddle.__version__,
        "paddlenlp_version": paddlenlp.__version__,
    }
