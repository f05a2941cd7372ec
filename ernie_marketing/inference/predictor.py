"""Batch prediction with an exported model through Paddle Inference."""

import logging
import os
import sys
import types
from dataclasses import dataclass

import numpy as np

from ..data.batching import pad_batch, sorted_batches
from ..data.features import FEATURES_FILE, FeatureEncoder, check_columns
from ..data.text import build_texts, text_source_columns
from ..engine.checkpoint import TASKS_FILE, read_json
from ..errors import ConfigError, DataError
from ..export.exporter import MANIFEST_FILE, MODEL_PREFIX, TOKENIZER_DIR
from ..tokenizer import TextEncoder
from .postprocess import decode_outputs

logger = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "gpu")
PRECISIONS = ("fp32", "bf16")
ROW_ID_COLUMN = "row_id"
# oneDNN is on by default: with paddle 3.3.1 on a 2-core AMD EPYC with
# AVX-512 it ran ERNIE encoders 1.3x (6 layers, hidden 768) and 1.4x
# (4 layers, hidden 312) faster than the MKL kernels used without it.
# benchmarks/bench_inference.py measures both.
DEFAULT_ONEDNN = True


@dataclass
class RuntimeSettings:
    """Device and CPU options for running the model in Paddle Inference."""

    device: str = "cpu"
    num_threads: int = 1
    onednn: bool = DEFAULT_ONEDNN
    # "bf16" runs matrix products in bfloat16 through oneDNN on the CPU:
    # faster where the CPU has bfloat16 instructions, but logits move by
    # about 1e-2, so results no longer match the dynamic graph.
    precision: str = "fp32"
    tensorrt: bool = False
    batch_size: int = 32

    def describe(self):
        """Return the settings that decide speed, as one line."""
        if self.device == "gpu":
            return "GPU" + (", TensorRT" if self.tensorrt else "")
        onednn = "on" if self.onednn else "off"
        return (f"CPU, threads={self.num_threads}, oneDNN {onednn}, "
                f"{self.precision}")


def resolve_settings(device="auto", num_threads=None, onednn=None,
                     precision="fp32", tensorrt=False, batch_size=32):
    """Return checked `RuntimeSettings`; None picks the default for a value."""
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} is invalid: expected an "
                          "integer >= 1")
    if num_threads is not None and num_threads < 1:
        raise ConfigError(f"num_threads={num_threads} is invalid: expected an "
                          "integer >= 1")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r} is invalid: allowed values "
                          f"are {', '.join(PRECISIONS)}")
    device = resolve_device(device)
    if tensorrt and device != "gpu":
        raise ConfigError("tensorrt=true needs device=gpu")
    if precision == "bf16":
        if device == "gpu":
            raise ConfigError("precision=bf16 is for the CPU; use fp32 on a GPU")
        if onednn is False:
            raise ConfigError("precision=bf16 needs oneDNN; drop onednn=off")
        onednn = True
    return RuntimeSettings(
        device=device, num_threads=num_threads or available_cores(),
        onednn=DEFAULT_ONEDNN if onednn is None else bool(onednn),
        precision=precision, tensorrt=tensorrt, batch_size=batch_size)


class Predictor:
    """An exported multi-task model behind a Paddle Inference predictor.

    Texts are tokenized as in training, batched in order of length to limit
    padding, and returned in input order. A model trained with structured
    features reads them from the table given to `predict_frame`, encoded
    with the export's features.json. Keyword options are those of
    `resolve_settings`.
    """

    def __init__(self, export_dir, **options):
        self.settings = resolve_settings(**options)
        self.export_dir = export_dir
        self.manifest, self.schema = read_export(export_dir)
        self.tasks = self.schema["tasks"]
        self.preprocess = self.schema["preprocess"]
        self.batch_size = self.settings.batch_size
        self.text_encoder = TextEncoder(_load_tokenizer(export_dir, self.manifest),
                                        self.preprocess["max_length"])
        self.feature_encoder = _load_feature_encoder(export_dir, self.schema)
        config = inference_config(find_model_files(export_dir, self.manifest),
                                  self.settings, self.preprocess["max_length"])
        self._create(config)
        logger.info("loaded %s (%s)", export_dir, self.describe())

    def _create(self, config):
        from paddle import inference

        self._predictor = inference.create_predictor(config)
        names = self._predictor.get_input_names()
        expected = self.manifest.get("inputs", ["input_ids", "token_type_ids"])
        if sorted(names) != sorted(expected):
            raise ConfigError(f"the model in {self.export_dir} takes inputs "
                              f"{names}, expected {expected}; export it again")
        self._inputs = {name: self._predictor.get_input_handle(name)
                        for name in names}
        self._output_names = self._predictor.get_output_names()
        if len(self._output_names) != len(self.tasks):
            raise ConfigError(f"the model in {self.export_dir} has "
                              f"{len(self._output_names)} outputs but "
                              f"{TASKS_FILE} lists {len(self.tasks)} tasks; "
                              "export it again")

    def describe(self):
        """Return the settings that decide speed, as one line."""
        return self.settings.describe()

    def encode(self, texts):
        """Return token id arrays for `texts`, truncated as in training."""
        encoded, truncated = self.text_encoder.encode(texts)
        if truncated:
            logger.info("%d of %d texts truncated to %d tokens", truncated,
                        len(encoded), self.text_encoder.max_length)
        return encoded

    def encode_features(self, frame):
        """Return (numeric_features, categorical_features) for `frame`'s rows.

        Both are None for a model without structured features.
        """
        if self.feature_encoder is None:
            return None, None
        return self.feature_encoder.transform(frame, "input")

    def run_batch(self, input_ids, token_type_ids, numeric_features=None,
                  categorical_features=None):
        """Return each task's logits for one padded batch."""
        arrays = {"input_ids": input_ids, "token_type_ids": token_type_ids,
                  "numeric_features": numeric_features,
                  "categorical_features": categorical_features}
        for name, handle in self._inputs.items():
            if arrays[name] is None:
                raise ConfigError(
                    f"the model in {self.export_dir} reads {name} from the "
                    f"feature columns {self.preprocess.get('feature_columns')}; "
                    "predict a table with predict_frame or `ernie-marketing "
                    "infer`")
            handle.reshape(arrays[name].shape)
            handle.copy_from_cpu(arrays[name])
        self._predictor.run()
        return [self._predictor.get_output_handle(name).copy_to_cpu()
                for name in self._output_names]

    def predict_logits(self, encoded, progress=False, numeric_features=None,
                       categorical_features=None):
        """Return each task's logits [rows, outputs] for `encoded`, in input order.

        The feature arrays, when the model reads them, have one row per text.
        """
        pad_id = self.text_encoder.pad_id
        outputs = [np.zeros((len(encoded), task["num_outputs"]), np.float32)
                   for task in self.tasks]
        batches = sorted_batches([len(ids) for ids in encoded], self.batch_size)
        bar = _progress_bar(len(encoded)) if progress else None
        for index in batches:
            input_ids, token_type_ids = pad_batch([encoded[i] for i in index],
                                                  pad_id)
            features = [None if array is None else array[index]
                        for array in (numeric_features, categorical_features)]
            batch_logits = self.run_batch(input_ids, token_type_ids, *features)
            for task, out, logits in zip(self.tasks, outputs, batch_logits):
                if logits.shape[-1] != out.shape[1]:
                    raise ConfigError(
                        f"the model in {self.export_dir} gives {logits.shape[-1]} "
                        f"logits for task {task['name']!r} but {TASKS_FILE} "
                        f"expects {out.shape[1]}; export it again")
                out[index] = logits
            if bar is not None:
                bar.update(len(index))
        if bar is not None:
            bar.close()
        return outputs

    def predict_texts(self, texts, progress=False, numeric_features=None,
                      categorical_features=None):
        """Return a DataFrame of predictions (see `decode_outputs`), one row
        per text; the feature arrays are those of `encode_features`."""
        logits = self.predict_logits(self.encode(list(texts)), progress,
                                     numeric_features, categorical_features)
        return decode_outputs(self.tasks, logits)

    def predict_frame(self, frame, progress=False):
        """Return row ids and predictions for a table read with `read_table`.

        The text is built from the columns named at export, and structured
        features from the export's feature columns. The row id is the
        export's `id_column`, or the row number from 0 when it has none.
        """
        texts, ids = frame_inputs(frame, self.preprocess)
        predictions = self.predict_texts(texts, progress,
                                         *self.encode_features(frame))
        return join_ids(ids, predictions)


def frame_inputs(frame, preprocess):
    """Return the texts and a one-column DataFrame of row ids of `frame`.

    Raises DataError for a missing text, feature or id column, before any
    model work.
    """
    import pandas as pd

    settings = types.SimpleNamespace(**preprocess)
    text_columns = text_source_columns(settings)
    missing = [c for c in text_columns if c not in frame.columns]
    if missing:
        # The model's text settings are fixed at export, so the fix is in
        # the input file.
        raise DataError(f"text column(s) {missing} not found; the file has "
                        f"columns {list(frame.columns)}; the model reads its "
                        f"text from {text_columns}, so add or rename those "
                        "columns in the input file")
    texts, _ = build_texts(frame, settings)
    check_columns(frame, preprocess.get("feature_columns", []), "the input")
    id_column = preprocess.get("id_column")
    if id_column is None:
        return texts.tolist(), pd.DataFrame({ROW_ID_COLUMN: np.arange(len(frame))})
    if id_column not in frame.columns:
        raise DataError(f"id column {id_column!r} not found; the file has "
                        f"columns {list(frame.columns)}; add it, or export "
                        "again with -o data.id_column=null to number rows")
    return texts.tolist(), pd.DataFrame({id_column: frame[id_column].to_numpy()})


def join_ids(ids, predictions):
    """Return the id column followed by the prediction columns."""
    import pandas as pd

    clash = [c for c in ids.columns if c in predictions.columns]
    if clash:
        raise DataError(f"the id column {clash[0]!r} has the name of an output "
                        "column; rename it in the input file")
    return pd.concat([ids, predictions], axis=1)


def read_export(export_dir):
    """Return the export's manifest and task schema."""
    if not os.path.isdir(export_dir):
        raise ConfigError(f"export directory not found: {export_dir}; create "
                          "one with `ernie-marketing export`")
    tasks_path = os.path.join(export_dir, TASKS_FILE)
    if not os.path.isfile(tasks_path):
        raise ConfigError(f"{export_dir} is not an export: it has no "
                          f"{TASKS_FILE}; create one with `ernie-marketing "
                          "export`")
    manifest_path = os.path.join(export_dir, MANIFEST_FILE)
    manifest = read_json(manifest_path) if os.path.isfile(manifest_path) else {}
    return manifest, read_json(tasks_path)


def find_model_files(export_dir, manifest):
    """Return (program file, params file): model.json (Paddle 3) or model.pdmodel."""
    prefix = os.path.join(export_dir, MODEL_PREFIX)
    candidates = [prefix + ".json", prefix + ".pdmodel"]
    if manifest.get("model_file"):
        candidates.insert(0, os.path.join(export_dir, manifest["model_file"]))
    params = os.path.join(export_dir,
                          manifest.get("params_file", MODEL_PREFIX + ".pdiparams"))
    for path in candidates:
        if os.path.isfile(path):
            if not os.path.isfile(params):
                raise ConfigError(f"{export_dir} has the program {path} but no "
                                  f"weights {params}; export it again")
            return path, params
    raise ConfigError(f"no inference model in {export_dir}: expected "
                      f"{MODEL_PREFIX}.json or {MODEL_PREFIX}.pdmodel with "
                      f"{MODEL_PREFIX}.pdiparams; export it again")


def resolve_device(device):
    """Return "gpu" or "cpu" for a device request of auto, cpu or gpu."""
    import paddle

    if device not in DEVICES:
        raise ConfigError(f"device={device!r} is invalid: allowed values are "
                          f"{', '.join(DEVICES)}")
    has_cuda = paddle.is_compiled_with_cuda()
    has_gpu = has_cuda and paddle.device.cuda.device_count() > 0
    if device == "gpu" and not has_gpu:
        missing = "a visible GPU" if has_cuda else "a CUDA build of paddlepaddle"
        raise ConfigError(f"device=gpu needs a CUDA build of paddlepaddle and a "
                          f"visible GPU, but this process has no {missing}; "
                          "use device=cpu")
    if device == "auto":
        return "gpu" if has_gpu else "cpu"
    return device


def inference_config(model_files, settings, max_length):
    """Return a `paddle.inference.Config` for `settings`."""
    from paddle import inference

    config = inference.Config(*model_files)
    config.disable_glog_info()
    config.switch_ir_optim(True)
    if settings.device == "gpu":
        config.enable_use_gpu(256, 0)
        if settings.tensorrt:
            _enable_tensorrt(config, settings.batch_size, max_length)
        return config
    config.disable_gpu()
    config.set_cpu_math_library_num_threads(settings.num_threads)
    if settings.onednn:
        config.enable_onednn()
        if settings.precision == "bf16":
            config.enable_onednn_bfloat16()
    else:
        config.disable_onednn()
    return config


def _enable_tensorrt(config, batch_size, max_length):
    # NOTE: untested, because the development machines have no GPU. Paddle 3
    # documents TensorRT for PIR (.json) programs through
    # `paddle.tensorrt.convert`; this older subgraph API may serve only
    # .pdmodel programs. The shape ranges cover the batches `predict_logits`
    # feeds, but only of the text inputs, not of the feature inputs.
    from paddle import inference

    config.enable_tensorrt_engine(
        workspace_size=1 << 30, max_batch_size=batch_size, min_subgraph_size=3,
        precision_mode=inference.PrecisionType.Float32, use_static=False,
        use_calib_mode=False)
    shapes = {name: [1, 1] for name in ("input_ids", "token_type_ids")}
    largest = {name: [batch_size, max_length] for name in shapes}
    typical = {name: [batch_size, max(1, max_length // 2)] for name in shapes}
    config.set_trt_dynamic_shape_info(shapes, largest, typical)


def available_cores():
    """Return the number of CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _load_feature_encoder(export_dir, schema):
    if not schema.get("features"):
        return None
    path = os.path.join(export_dir, FEATURES_FILE)
    if not os.path.isfile(path):
        raise ConfigError(f"{export_dir} has a model with structured features "
                          f"but no {FEATURES_FILE}; export it again")
    return FeatureEncoder.load(path)


def _load_tokenizer(export_dir, manifest):
    from paddlenlp.transformers import ErnieTokenizer

    tokenizer_dir = os.path.join(export_dir,
                                 manifest.get("tokenizer_dir", TOKENIZER_DIR))
    if not os.path.isfile(os.path.join(tokenizer_dir, "vocab.txt")):
        raise ConfigError(f"{export_dir} has no tokenizer ({tokenizer_dir}/"
                          "vocab.txt); export it again")
    return ErnieTokenizer.from_pretrained(tokenizer_dir)


def _progress_bar(total):
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="predict", unit="text", dynamic_ncols=True)
