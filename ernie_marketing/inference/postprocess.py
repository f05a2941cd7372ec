"""Turn logits into labels and probabilities, one column per output."""

import numpy as np
import pandas as pd

from ..metrics import probabilities

# A binary task predicts its positive label at this score or above, as in
# evaluation.
BINARY_THRESHOLD = 0.5


def output_columns(tasks):
    """Return the output column names in order, for `tasks` from tasks.json."""
    columns = []
    for task in tasks:
        name = task["name"]
        if task["type"] == "binary":
            columns += [name, f"{name}_score"]
        else:
            columns += [name] + [f"{name}_prob_{label}" for label in task["labels"]]
    return columns


def decode_outputs(tasks, logits):
    """Return a DataFrame of labels and probabilities from each task's logits.

    A multiclass task gives `<task>` (the most probable label) and
    `<task>_prob_<label>` per class. A binary task gives `<task>` and
    `<task>_score`, the probability of its positive label.
    """
    columns = {}
    for task, task_logits in zip(tasks, logits):
        name = task["name"]
        labels = np.asarray(task["labels"], dtype=object)
        probs = probabilities(task["type"], task_logits)
        if task["type"] == "binary":
            columns[name] = labels[(probs >= BINARY_THRESHOLD).astype(np.int64)]
            columns[f"{name}_score"] = probs
        else:
            columns[name] = labels[probs.argmax(axis=1)]
            for j, label in enumerate(task["labels"]):
                columns[f"{name}_prob_{label}"] = probs[:, j]
    frame = pd.DataFrame(columns)
    return frame[output_columns(tasks)]
