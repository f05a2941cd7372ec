"""Batch prediction with the dynamic graph and per-task evaluation."""

import numpy as np
import paddle

from ..data.batching import pad_batch, sorted_batches
from ..errors import UserError
from ..metrics import task_scores
from ..predictions import predict_tasks


class NonFiniteOutputError(UserError):
    """The model's logits contain NaN or infinity, so no metric is defined."""


@paddle.no_grad()
def predict_logits(model, encoded, batch_size, pad_id, numeric_features=None,
                   categorical_features=None):
    """Return each task's logits for `encoded` rows, in input order.

    Rows are batched by length to limit padding; the model must be in eval
    mode for the result not to depend on the batching. The feature arrays,
    when the model takes them, have one row per encoded text.
    """
    lengths = [len(ids) for ids in encoded]
    outputs = None
    for index in sorted_batches(lengths, batch_size):
        input_ids, token_type_ids = pad_batch([encoded[i] for i in index], pad_id)
        logits = model(paddle.to_tensor(input_ids),
                       paddle.to_tensor(token_type_ids),
                       **feature_tensors(index, numeric_features,
                                         categorical_features))
        if outputs is None:
            outputs = [np.zeros((len(encoded), t.shape[-1]), dtype=np.float32)
                       for t in logits]
        for out, task_logits in zip(outputs, logits):
            out[index] = task_logits.numpy()
    return outputs


def feature_tensors(index, numeric_features=None, categorical_features=None):
    """Return the forward keyword arguments for the feature rows `index`."""
    inputs = {}
    if numeric_features is not None:
        inputs["numeric_features"] = paddle.to_tensor(numeric_features[index])
    if categorical_features is not None:
        inputs["categorical_features"] = paddle.to_tensor(
            categorical_features[index])
    return inputs


def evaluate(model, encoded, labels, tasks, batch_size, pad_id,
             numeric_features=None, categorical_features=None, group=None):
    """Return {task name: {metric: value}} on labelled rows of each task.

    `labels` maps task names to encoded labels; a task missing from it is
    scored as unlabelled (count 0, NaN metrics). With a `group` of several
    processes, each one predicts its shard of the rows and every process
    scores the gathered logits, so all of them return the same metrics.
    """
    sharded = group is not None and group.distributed
    inputs = (encoded, numeric_features, categorical_features)
    if sharded:
        rows = group.shard(np.arange(len(encoded)))
        inputs = ([encoded[i] for i in rows],
                  *(None if f is None else f[rows]
                    for f in (numeric_features, categorical_features)))
    was_training = model.training
    model.eval()
    logits = predict_logits(model, inputs[0], batch_size, pad_id, *inputs[1:])
    if was_training:
        model.train()
    if sharded:
        if logits is None:  # a shard without rows, when rows < processes
            logits = [np.zeros((0, t["num_outputs"]), dtype=np.float32)
                      for t in tasks]
        logits = group.gather_rows(logits, len(encoded))
    bad_rows = np.zeros(len(encoded), dtype=bool)
    for task_logits in logits:
        bad_rows |= ~np.isfinite(task_logits).all(axis=1)
    if bad_rows.any():
        raise NonFiniteOutputError(f"the model's outputs are NaN or infinite "
                                   f"for {int(bad_rows.sum())} of "
                                   f"{len(encoded)} rows")
    predictions = predict_tasks(tasks, logits)
    results = {}
    for task in tasks:
        name = task["name"]
        task_labels = labels.get(name)
        if task_labels is None:
            task_labels = np.full(len(encoded), np.nan, dtype=np.float32)
        results[name] = task_scores(task, predictions[name], task_labels)
    return results
