"""Batch prediction with the dynamic graph and per-task evaluation."""

import numpy as np
import paddle

from ..data.batching import pad_batch, sorted_batches
from ..errors import UserError
from ..metrics import probabilities, task_scores


class NonFiniteOutputError(UserError):
    """The model's logits contain NaN or infinity, so no metric is defined."""


@paddle.no_grad()
def predict_logits(model, encoded, batch_size, pad_id):
    """Return each task's logits for `encoded` rows, in input order.

    Rows are batched by length to limit padding; the model must be in eval
    mode for the result not to depend on the batching.
    """
    lengths = [len(ids) for ids in encoded]
    outputs = None
    for index in sorted_batches(lengths, batch_size):
        input_ids, token_type_ids = pad_batch([encoded[i] for i in index], pad_id)
        logits = model(paddle.to_tensor(input_ids),
                       paddle.to_tensor(token_type_ids))
        if outputs is None:
            outputs = [np.zeros((len(encoded), t.shape[-1]), dtype=np.float32)
                       for t in logits]
        for out, task_logits in zip(outputs, logits):
            out[index] = task_logits.numpy()
    return outputs


def evaluate(model, encoded, labels, tasks, batch_size, pad_id):
    """Return {task name: {metric: value}} on labelled rows of each task."""
    was_training = model.training
    model.eval()
    logits = predict_logits(model, encoded, batch_size, pad_id)
    if was_training:
        model.train()
    bad_rows = np.zeros(len(encoded), dtype=bool)
    for task_logits in logits:
        bad_rows |= ~np.isfinite(task_logits).all(axis=1)
    if bad_rows.any():
        raise NonFiniteOutputError(f"the model's outputs are NaN or infinite "
                                   f"for {int(bad_rows.sum())} of "
                                   f"{len(encoded)} rows")
    results = {}
    for j, task in enumerate(tasks):
        probs = probabilities(task["type"], logits[j])
        num_classes = len(task["labels"])
        results[task["name"]] = task_scores(task["type"], probs, labels[:, j],
                                            num_classes)
    return results
