"""Re-evaluate a saved checkpoint on the splits its config describes."""

import dataclasses
import logging
import os

from ..data import prepare_data
from ..errors import ConfigError, DataError
from ..runtime import set_num_threads
from ..tokenizer import TextEncoder
from .checkpoint import load_checkpoint
from .evaluation import evaluate

logger = logging.getLogger(__name__)


def evaluate_checkpoint(checkpoint, config=None, splits=("valid", "test")):
    """Return {split: {task: metrics}} and the metrics saved with the checkpoint.

    Data settings come from `config` when given (to evaluate other files),
    else from the checkpoint's own config; the tokenizer, label maps and
    weights always come from the checkpoint. The config's tasks are matched
    to the checkpoint's by name, so they may be reordered or a subset.
    """
    model, tokenizer, saved_config, schema, vocabs, saved = load_checkpoint(
        checkpoint)
    config = config or saved_config
    if model.feature_encoder is None and config.features.columns:
        raise ConfigError(f"checkpoint {checkpoint} was trained without "
                          "structured features, but the config lists "
                          f"features {config.features.columns}; remove the "
                          "features section")
    checkpoint_tasks = [t["name"] for t in schema["tasks"]]
    config = _tasks_in_checkpoint_order(config, checkpoint_tasks, checkpoint)
    set_num_threads(config.train.num_threads)
    data = prepare_data(config, splits=splits, vocabs=vocabs,
                        features=model.feature_encoder)
    if not data.splits:
        requested = " or ".join(splits)
        raise DataError(f"no rows to evaluate: the config gives no {requested} "
                        f"rows (data.split={config.data.split}); set "
                        "data.valid_path or data.test_path, or a split with "
                        "non-zero validation and test fractions")
    text_encoder = TextEncoder(tokenizer, schema["preprocess"]["max_length"])
    config_tasks = [t.name for t in config.tasks]
    results = {}
    for name, split in data.splits.items():
        encoded, _ = text_encoder.encode(split.texts)
        # Tasks the config leaves out have no labels and are not reported.
        scores = evaluate(model, encoded, split.labels, schema["tasks"],
                          config.train.eval_batch_size, text_encoder.pad_id,
                          split.numeric_features, split.categorical_features)
        results[name] = {task: scores[task] for task in config_tasks}
    logger.info("evaluated %s on %s", os.path.abspath(checkpoint),
                sorted(results))
    return results, saved


def _tasks_in_checkpoint_order(config, checkpoint_tasks, checkpoint):
    """Return a copy of `config` with its tasks in the checkpoint's order.

    The split and the max_rows sample are stratified by the first task, so
    this order reproduces the training run's validation and test rows.
    """
    unknown = [t.name for t in config.tasks if t.name not in checkpoint_tasks]
    if unknown:
        raise ConfigError(f"tasks {unknown} are not in checkpoint {checkpoint}, "
                          f"which has tasks {checkpoint_tasks}; use those "
                          "names in the config's tasks")
    tasks = sorted(config.tasks, key=lambda t: checkpoint_tasks.index(t.name))
    splits_one_file = (config.data.valid_path is None
                       and config.data.test_path is None)
    if tasks[0].name != checkpoint_tasks[0] and splits_one_file:
        logger.warning("the config leaves out task %s, by which training "
                       "stratified its split, so the validation and test rows "
                       "differ from the training run's", checkpoint_tasks[0])
    return dataclasses.replace(config, tasks=tasks)


def max_difference(results, saved):
    """Return the largest absolute gap between fresh and saved metric values.

    Returns None when a split's labelled row counts differ from the saved
    ones, because then the data differs and metrics cannot be compared.
    """
    gap = 0.0
    for split, tasks in results.items():
        for task, scores in tasks.items():
            old_count = saved.get(split, {}).get(task, {}).get("count")
            if old_count is not None and old_count != scores.get("count"):
                return None
            for name, value in scores.items():
                if name == "count":
                    continue
                old = saved.get(split, {}).get(task, {}).get(name)
                if old is not None and value == value and old == old:
                    gap = max(gap, abs(value - old))
    return gap
