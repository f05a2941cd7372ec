"""Checkpoint directories, written whole under a temporary name and renamed.

A checkpoint holds:
  encoder/          a PaddleNLP model directory (config.json, weights) with
                    the tokenizer files, loadable with `from_pretrained`
  heads.pdparams    the task heads' parameters
  tasks.json        task schema, label maps and preprocessing settings
  config.yaml       the resolved run config
  metrics.json      evaluation metrics of this checkpoint
"""

import json
import logging
import os
import shutil
import tempfile

import paddle

from ..config import build_config, save_config
from ..data.labels import LabelVocab
from ..errors import ConfigError, UserError
from ..models import MultiTaskErnie, load_encoder, num_outputs

logger = logging.getLogger(__name__)

ENCODER_DIR = "encoder"
HEADS_FILE = "heads.pdparams"
TASKS_FILE = "tasks.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
_OLD_SUFFIX = ".old"


def task_schema(config, vocabs):
    """Return what a predictor needs to rebuild heads and decode outputs."""
    tasks = []
    for task in config.tasks:
        vocab = vocabs[task.name]
        tasks.append({
            "name": task.name,
            "type": task.type,
            "label_column": task.label_column,
            "labels": vocab.labels,
            "num_outputs": num_outputs(task.type, len(vocab)),
            "hidden_size": task.hidden_size,
            "dropout": task.dropout,
        })
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
    }


def save_checkpoint(directory, model, tokenizer, config, schema, metrics):
    """Write a checkpoint to `directory`, replacing any earlier one atomically.

    Everything is written to a temporary sibling first; a crash before the
    final rename leaves the previous checkpoint untouched.
    """
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.tmp-",
                           dir=parent)
    os.chmod(tmp, 0o755)  # mkdtemp creates it readable by the owner only
    try:
        encoder_dir = os.path.join(tmp, ENCODER_DIR)
        model.encoder.save_pretrained(encoder_dir)
        tokenizer.save_pretrained(encoder_dir)
        paddle.save(model.heads.state_dict(), os.path.join(tmp, HEADS_FILE))
        write_json(os.path.join(tmp, TASKS_FILE), schema)
        write_json(os.path.join(tmp, METRICS_FILE), metrics)
        save_config(config, os.path.join(tmp, CONFIG_FILE))
        replace_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(new, directory):
    """Move directory `new` to `directory`, replacing an earlier one."""
    old = directory + _OLD_SUFFIX
    if os.path.exists(old):
        shutil.rmtree(old)
    if os.path.exists(directory):
        os.replace(directory, old)
    os.replace(new, directory)
    shutil.rmtree(old, ignore_errors=True)


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
    model = MultiTaskErnie(encoder, schema["tasks"], schema["pooling"])
    heads_state = paddle.load(os.path.join(directory, HEADS_FILE))
    model.heads.set_state_dict(heads_state)
    model.eval()
    tokenizer = ErnieTokenizer.from_pretrained(encoder_dir)
    config = load_saved_config(os.path.join(directory, CONFIG_FILE))
    vocabs = {t["name"]: LabelVocab(t["name"], t["labels"])
              for t in schema["tasks"]}
    metrics_path = os.path.join(directory, METRICS_FILE)
    metrics = read_json(metrics_path) if os.path.exists(metrics_path) else {}
    return model, tokenizer, config, schema, vocabs, metrics


def load_saved_config(path):
    import yaml

    with open(path, encoding="utf-8") as f:
        return build_config(yaml.safe_load(f))


def write_json(path, payload):
    """Write JSON through a temporary file and a rename."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, ensure_ascii=False, indent=2, allow_nan=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)
