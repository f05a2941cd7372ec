"""Checkpoint directories, written whole under a temporary name and renamed.

A checkpoint holds:
  encoder/          a PaddleNLP model directory (config.json, weights) with
                    the tokenizer files, loadable with `from_pretrained`
  heads.pdparams    the task heads' parameters
  fusion.pdparams   the feature embeddings and fusion layer, only with
                    structured features
  sharing.pdparams  the experts and gates, only with MMoE or PLE sharing
  features.json     the fitted FeatureEncoder, only with structured features
  tasks.json        task schema, label maps and preprocessing settings
  config.yaml       the resolved run config
  metrics.json      evaluation metrics of this checkpoint
"""

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import tempfile

import paddle

from ..config import build_config, save_config
from ..config.schema import REGRESSION_TYPES
from ..data.features import FEATURES_FILE, FeatureEncoder
from ..data.labels import label_encoder_from_schema
from ..errors import ConfigError, UserError
from ..models import MultiTaskErnie, load_encoder, num_outputs

logger = logging.getLogger(__name__)

ENCODER_DIR = "encoder"
HEADS_FILE = "heads.pdparams"
FUSION_FILE = "fusion.pdparams"
SHARING_FILE = "sharing.pdparams"
TASKS_FILE = "tasks.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
_OLD_SUFFIX = ".old"


def task_schema(config, vocabs, features=None):
    """Return what a predictor needs to rebuild heads and decode outputs.

    `vocabs` maps task names to label encoders; `features` is the fitted
    FeatureEncoder, or None without structured features.
    """
    tasks = [_task_entry(task, vocabs[task.name]) for task in config.tasks]
    data = config.data
    return {
        "tasks": tasks,
        "preprocess": {
            "max_length": config.tokenizer.max_length,
            "text_columns": data.text_columns,
            "text_template": data.text_template,
            "text_separator": data.text_separator,
            "id_column": data.id_column,
        },
        "pooling": config.model.pooling,
        "features": (features.model_spec(config.features)
                     if features is not None else None),
        # None means hard sharing, which has no layer of its own.
        "sharing": (dataclasses.asdict(config.model.sharing)
                    if config.model.sharing.type != "hard" else None),
    }


def _task_entry(task, vocab):
    entry = {
        "name": task.name,
        "type": task.type,
        "label_column": task.label_column,
        "num_outputs": num_outputs(task.type, len(vocab)),
        "hidden_size": task.hidden_size,
        "dropout": task.dropout,
    }
    # labels, and the label separator or the target statistics.
    entry.update(vocab.to_dict())
    if task.type == "binary":
        entry["parent"] = task.parent
    if task.type in REGRESSION_TYPES:
        entry.update(loss=task.loss, huber_delta=task.huber_delta)
    if task.type == "ranking":
        entry["top_k"] = list(task.top_k)
    return entry


def save_checkpoint(directory, model, tokenizer, config, schema, metrics,
                    write_extra=None):
    """Write a checkpoint to `directory`, replacing any earlier one atomically.

    Everything is written to a temporary sibling and flushed to disk first;
    a crash before the final rename leaves the previous checkpoint untouched.
    `write_extra(tmp_dir)`, if given, adds more files before the rename.
    """
    with staged_dir(directory) as tmp:
        encoder_dir = os.path.join(tmp, ENCODER_DIR)
        model.encoder.save_pretrained(encoder_dir)
        tokenizer.save_pretrained(encoder_dir)
        paddle.save(model.heads.state_dict(), os.path.join(tmp, HEADS_FILE))
        write_json(os.path.join(tmp, TASKS_FILE), schema)
        write_json(os.path.join(tmp, METRICS_FILE), metrics)
        save_config(config, os.path.join(tmp, CONFIG_FILE))
        if model.fusion is not None:
            paddle.save(model.fusion.state_dict(), os.path.join(tmp, FUSION_FILE))
            model.feature_encoder.save(os.path.join(tmp, FEATURES_FILE))
        if model.sharing is not None:
            paddle.save(model.sharing.state_dict(),
                        os.path.join(tmp, SHARING_FILE))
        if write_extra is not None:
            write_extra(tmp)


@contextlib.contextmanager
def staged_dir(directory):
    """Yield a new temporary sibling of `directory` to write its files into.

    When the block ends normally, the files are flushed to disk and the
    sibling replaces `directory` (see `replace_dir`). When it raises, the
    sibling is deleted and `directory` is left as it was.
    """
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.tmp-",
                           dir=parent)
    os.chmod(tmp, 0o755)  # mkdtemp creates it readable by the owner only
    try:
        yield tmp
        fsync_tree(tmp)
        replace_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(new, directory):
    """Move directory `new` to `directory`, replacing an earlier one.

    A process killed at any point leaves `directory` or `directory.old`
    complete; partly deleted copies only ever carry a `.NAME.tmp-` name.
    """
    old = directory + _OLD_SUFFIX
    discard_dir(old, directory)
    if os.path.exists(directory):
        os.replace(directory, old)
    os.replace(new, directory)
    discard_dir(old, directory)


def discard_dir(path, directory):
    """Delete `path` after renaming it to a temporary name beside it."""
    if not os.path.exists(path):
        return
    trash = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.tmp-",
                             dir=os.path.dirname(os.path.abspath(directory)))
    # Renaming a directory onto an empty one replaces it on POSIX systems.
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def fsync_tree(directory):
    """Flush every file under `directory` to disk, so a rename publishes data.

    Without it a power loss soon after the rename can leave empty files.
    """
    for root, _, files in os.walk(directory):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def settle_old_copy(path, is_complete):
    """Clean up the `path.old` copy that a save killed between renames left.

    The copy is deleted when `is_complete(path)` is true, and renamed back
    to `path` when `path` does not exist.
    """
    old = path + _OLD_SUFFIX
    if not os.path.isdir(old):
        return
    if is_complete(path):
        discard_dir(old, path)
    elif not os.path.exists(path):
        os.replace(old, path)
        logger.warning("restored %s from %s, left by a save that was "
                       "interrupted", path, old)


def remove_temporary_copies(directory, names):
    """Delete the `.NAME.tmp-` directories in `directory`, for each of `names`.

    Only partly written or partly deleted copies carry such a name.
    """
    prefixes = tuple(f".{name}.tmp-" for name in names)
    for entry in os.listdir(directory):
        path = os.path.join(directory, entry)
        if entry.startswith(prefixes) and os.path.isdir(path):
            shutil.rmtree(path)
            logger.info("removed %s, left by a save that was interrupted",
                        path)


def resolve_checkpoint(directory):
    """Return the readable checkpoint path, recovering from a crash mid-rename."""
    if is_checkpoint(directory):
        return directory
    old = directory + _OLD_SUFFIX
    if is_checkpoint(old):
        logger.warning("using %s: a save was interrupted before it replaced "
                       "%s", old, directory)
        return old
    best = os.path.join(directory, "best")
    if is_checkpoint(best):
        return best
    raise ConfigError(f"no checkpoint found at {directory}: expected "
                      f"{TASKS_FILE}, {ENCODER_DIR}/ and {HEADS_FILE}; point "
                      "model.checkpoint at a run's best/ directory")


def is_checkpoint(directory):
    # A run's output directory also contains a tasks.json, but no heads.
    return (os.path.isfile(os.path.join(directory, TASKS_FILE))
            and os.path.isfile(os.path.join(directory, HEADS_FILE)))


def load_checkpoint(directory):
    """Return (model in eval mode, tokenizer, config, schema, vocabs, metrics).

    A file that is missing or cannot be parsed raises ConfigError naming the
    checkpoint, so a damaged checkpoint ends with one line, not a traceback.
    """
    import yaml

    directory = resolve_checkpoint(directory)
    try:
        return _load_checkpoint_files(directory)
    except UserError as exc:
        raise ConfigError(f"checkpoint {directory} cannot be used: {exc}"
                          ) from None
    except (OSError, ValueError, KeyError, TypeError, RuntimeError,
            yaml.YAMLError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(f"checkpoint {directory} is damaged or incomplete: "
                          f"{type(exc).__name__}: {detail}; point to another "
                          "checkpoint or train again") from None


def _load_checkpoint_files(directory):
    from paddlenlp.transformers import ErnieTokenizer

    schema = read_json(os.path.join(directory, TASKS_FILE))
    encoder_dir = os.path.join(directory, ENCODER_DIR)
    encoder = load_encoder(encoder_dir)
    model = MultiTaskErnie(encoder, schema["tasks"], schema["pooling"],
                           schema.get("features"), schema.get("sharing"))
    load_head_weights(model, directory)
    model.eval()
    tokenizer = ErnieTokenizer.from_pretrained(encoder_dir)
    config = load_saved_config(os.path.join(directory, CONFIG_FILE))
    vocabs = {t["name"]: label_encoder_from_schema(t) for t in schema["tasks"]}
    metrics_path = os.path.join(directory, METRICS_FILE)
    metrics = read_json(metrics_path) if os.path.exists(metrics_path) else {}
    return model, tokenizer, config, schema, vocabs, metrics


def load_head_weights(model, directory):
    """Load the heads, and the fusion layer, FeatureEncoder and sharing
    layer if any, into `model` from a checkpoint directory; the encoder is
    loaded separately."""
    model.heads.set_state_dict(paddle.load(os.path.join(directory, HEADS_FILE)))
    if model.sharing is not None:
        model.sharing.set_state_dict(
            paddle.load(os.path.join(directory, SHARING_FILE)))
    if model.fusion is not None:
        model.fusion.set_state_dict(
            paddle.load(os.path.join(directory, FUSION_FILE)))
        model.feature_encoder = FeatureEncoder.load(
            os.path.join(directory, FEATURES_FILE))


def load_saved_config(path, build=build_config):
    """Read a config saved by `save_config` and check it with `build`.

    `build` turns the mapping into a validated config; the default builds a
    fine-tuning Config.
    """
    import yaml

    with open(path, encoding="utf-8") as f:
        return build(yaml.safe_load(f))


def write_json(path, payload):
    """Write strict JSON through a temporary file and a rename.

    NaN and infinite floats (an AUC over one class, a loss that diverged)
    become null, because strict JSON readers reject bare NaN.
    """
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(_finite_or_null(payload), f, ensure_ascii=False, indent=2,
                  allow_nan=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _finite_or_null(value):
    """`value` with every non-finite float inside it replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)
