"""Per-task evaluation metrics computed on labelled rows only."""

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from .config import task_metrics
from .data.labels import MISSING


def probabilities(task_type, logits):
    """Return probabilities: the positive class's [rows] for a binary task,
    else [rows, classes]."""
    logits = np.asarray(logits, dtype=np.float64)
    if task_type == "binary":
        return 1.0 / (1.0 + np.exp(-logits.reshape(-1)))
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def task_scores(task_type, probs, labels, num_classes):
    """Return the metrics of one task, keyed by name, plus the labelled count.

    ROC AUC is NaN when the labelled rows hold only one class.
    """
    mask = labels != MISSING
    y_true = labels[mask]
    scores = {"count": int(mask.sum())}
    if not mask.any():
        for name in task_metrics(task_type):
            scores[name] = float("nan")
        return scores
    probs = probs[mask]
    if task_type == "binary":
        y_pred = (probs >= 0.5).astype(np.int64)
        if len(np.unique(y_true)) == 2:
            scores["roc_auc"] = float(roc_auc_score(y_true, probs))
        else:
            scores["roc_auc"] = float("nan")
    else:
        y_pred = probs.argmax(axis=1)
    scores["accuracy"] = float(accuracy_score(y_true, y_pred))
    scores["macro_f1"] = float(f1_score(y_true, y_pred, average="macro",
                                        labels=np.arange(num_classes),
                                        zero_division=0))
    return scores


def selection_value(metrics, metric_name, task_types):
    """Return the model-selection value: one task metric or the mean of each
    task's first metric."""
    if metric_name != "mean":
        task, _, name = metric_name.partition(".")
        return metrics[task][name]
    values = [metrics[task][task_metrics(kind)[0]]
              for task, kind in task_types.items()]
    values = [v for v in values if v == v]
    return float(np.mean(values)) if values else float("nan")
