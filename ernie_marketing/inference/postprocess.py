"""Turn logits into labels, probabilities and values, one column per output."""

import numpy as np
import pandas as pd

from ..predictions import predict_tasks

# A binary task predicts its positive label, and a multilabel task each
# label, at this probability or above, as in evaluation.
BINARY_THRESHOLD = 0.5


def output_columns(tasks):
    """Return the output column names in order, for `tasks` from tasks.json."""
    columns = []
    for task in tasks:
        name, kind = task["name"], task["type"]
        if kind == "binary":
            columns += [name, f"{name}_score"]
            if task.get("parent"):
                columns.append(f"{name}_conditional")
        elif kind == "multiclass":
            columns += [name] + [f"{name}_prob_{label}" for label in task["labels"]]
        elif kind == "multilabel":
            columns += [f"{name}_labels"] + [f"{name}_prob_{label}"
                                             for label in task["labels"]]
        elif kind == "ranking":
            columns.append(f"{name}_top")
        else:
            columns.append(f"{name}_value")
            if kind == "zero_inflated":
                columns.append(f"{name}_probability_positive")
    return columns


def decode_outputs(tasks, logits):
    """Return a DataFrame of predictions from each task's logits.

    Columns per task type:
      multiclass     `<task>` (the most probable label) and
                     `<task>_prob_<label>` per class
      binary         `<task>` and `<task>_score`, the probability of the
                     positive label; a chained task's score is P(parent) x
                     P(task | parent), and `<task>_conditional` is
                     P(task | parent)
      multilabel     `<task>_labels`, the labels with probability >= 0.5
                     joined by the task's separator, and `<task>_prob_<label>`
      ranking        `<task>_top`, the max(top_k) highest-scored item ids
                     joined by the task's separator
      regression     `<task>_value`
      zero_inflated  `<task>_value` = P(y > 0) x E[y | y > 0], and
                     `<task>_probability_positive` = P(y > 0)
    """
    predictions = predict_tasks(tasks, logits)
    columns = {}
    for task in tasks:
        columns.update(_task_columns(task, predictions[task["name"]]))
    frame = pd.DataFrame(columns)
    return frame[output_columns(tasks)]


def _task_columns(task, prediction):
    name, kind = task["name"], task["type"]
    labels = np.asarray(task["labels"], dtype=object)
    columns = {}
    if kind == "binary":
        score = prediction["score"]
        columns[name] = labels[(score >= BINARY_THRESHOLD).astype(np.int64)]
        columns[f"{name}_score"] = score
        if "conditional" in prediction:
            columns[f"{name}_conditional"] = prediction["conditional"]
    elif kind == "multiclass":
        probs = prediction["probs"]
        columns[name] = labels[probs.argmax(axis=1)]
        for j, label in enumerate(task["labels"]):
            columns[f"{name}_prob_{label}"] = probs[:, j]
    elif kind == "multilabel":
        probs = prediction["probs"]
        separator = task.get("label_separator", "|")
        columns[f"{name}_labels"] = [separator.join(labels[row >= BINARY_THRESHOLD])
                                     for row in probs]
        for j, label in enumerate(task["labels"]):
            columns[f"{name}_prob_{label}"] = probs[:, j]
    elif kind == "ranking":
        k = max(task.get("top_k", (5, 10)))
        order = np.argsort(-prediction["scores"], axis=1, kind="stable")[:, :k]
        separator = task.get("label_separator", "|")
        columns[f"{name}_top"] = [separator.join(labels[row]) for row in order]
    else:
        columns[f"{name}_value"] = prediction["value"]
        if kind == "zero_inflated":
            columns[f"{name}_probability_positive"] = (
                prediction["probability_positive"])
    return columns
