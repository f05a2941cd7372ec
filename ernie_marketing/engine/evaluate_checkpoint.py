"""Re-evaluate a saved checkpoint on the splits its config describes."""

import logging
import os

from ..data import prepare_data
from ..runtime import set_num_threads
from ..tokenizer import TextEncoder
from .checkpoint import load_checkpoint
from .evaluation import evaluate

logger = logging.getLogger(__name__)


def evaluate_checkpoint(checkpoint, config=None, splits=("valid", "test")):
    """Return {split: {task: metrics}} and the metrics saved with the checkpoint.

    Data settings come from `config` when given (to evaluate other files),
    else from the checkpoint's own config; the tokenizer, label maps and
    weights always come from the checkpoint.
    """
    model, tokenizer, saved_config, schema, vocabs, saved = load_checkpoint(
        checkpoint)
    config = config or saved_config
    set_num_threads(config.train.num_threads)
    data = prepare_data(config, splits=splits, vocabs=vocabs)
    text_encoder = TextEncoder(tokenizer, schema["preprocess"]["max_length"])
    results = {}
    for name, split in data.splits.items():
        encoded, _ = text_encoder.encode(split.texts)
        results[name] = evaluate(model, encoded, split.labels, schema["tasks"],
                                 config.train.eval_batch_size,
                                 text_encoder.pad_id)
    logger.info("evaluated %s on %s", os.path.abspath(checkpoint),
                sorted(results))
    return results, saved


def max_difference(results, saved):
    """Return the largest absolute gap between fresh and saved metric values."""
    gap = 0.0
    for split, tasks in results.items():
        for task, scores in tasks.items():
            for name, value in scores.items():
                old = saved.get(split, {}).get(task, {}).get(name)
                if old is not None and value == value and old == old:
                    gap = max(gap, abs(value - old))
    return gap
