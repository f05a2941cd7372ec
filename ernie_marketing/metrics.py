"""Per-task evaluation metrics computed on labelled rows only.

`task_metrics` in config/schema.py lists each task type's metrics, and
LOWER_IS_BETTER there lists the ones that model selection minimises.
"""

import math

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from .config.schema import REGRESSION_TYPES, mean_metric, task_metrics
from .data.labels import labelled_rows
from .predictions import sigmoid, softmax

# Bins of the expected calibration error: 10 of equal width over [0, 1].
ECE_BINS = 10
# Probabilities are clipped this far from 0 and 1 in the log-loss.
LOG_LOSS_EPS = 1e-7
# A label (multilabel) is predicted present at this probability or above.
THRESHOLD = 0.5


def probabilities(task_type, logits):
    """Return probabilities: the positive class's [rows] for a binary task,
    per label [rows, labels] for multilabel, else a softmax [rows, outputs]."""
    logits = np.asarray(logits, dtype=np.float64)
    if task_type == "binary":
        return sigmoid(logits.reshape(-1))
    if task_type == "multilabel":
        return sigmoid(logits)
    return softmax(logits)


def task_scores(task, prediction, labels):
    """Return the metrics of one task, keyed by name, plus the labelled count.

    `task` is the task's tasks.json entry, `prediction` its entry from
    `predict_tasks` and `labels` the task's encoded labels. Every metric is
    NaN when no row is labelled; ROC AUC also when the labelled rows hold
    one class, and R-squared and Gini when the targets are constant.
    """
    kind = task["type"]
    mask = labelled_rows(labels)
    scores = {"count": int(mask.sum())}
    names = task_metrics(kind, task.get("top_k", (5, 10)))
    if not mask.any():
        scores.update({name: float("nan") for name in names})
        return scores
    labels = np.asarray(labels)[mask]
    if kind == "multiclass":
        probs = prediction["probs"][mask]
        scores.update(_class_scores(labels, probs.argmax(axis=1),
                                    probs.shape[1]))
    elif kind == "binary":
        scores.update(binary_scores(labels, prediction["score"][mask]))
    elif kind == "multilabel":
        scores.update(multilabel_scores(labels, prediction["probs"][mask]))
    elif kind in REGRESSION_TYPES:
        scores.update(regression_scores(labels, prediction["value"][mask]))
    else:
        scores.update(ranking_scores(labels, prediction["scores"][mask],
                                     task.get("top_k", (5, 10))))
    return {"count": scores.pop("count"),
            **{name: scores[name] for name in names}}


def _class_scores(y_true, y_pred, num_classes):
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro",
                                   labels=np.arange(num_classes),
                                   zero_division=0)),
    }


def binary_scores(y_true, score):
    """Return ROC AUC, log-loss, ECE, accuracy and macro-F1 of P(positive)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    score = np.asarray(score, dtype=np.float64)
    scores = _class_scores(y_true, (score >= THRESHOLD).astype(np.int64), 2)
    scores["roc_auc"] = (float(roc_auc_score(y_true, score))
                         if len(np.unique(y_true)) == 2 else float("nan"))
    clipped = np.clip(score, LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
    scores["log_loss"] = float(-np.mean(
        y_true * np.log(clipped) + (1 - y_true) * np.log(1 - clipped)))
    scores["ece"] = expected_calibration_error(y_true, score)
    return scores


def expected_calibration_error(y_true, score, bins=ECE_BINS):
    """Return the ECE: sum over equal-width score bins of
    (rows in bin / rows) x |mean label - mean score|."""
    y_true = np.asarray(y_true, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    # A score of exactly 1 belongs to the last bin.
    index = np.minimum((score * bins).astype(np.int64), bins - 1)
    error = 0.0
    for b in range(bins):
        in_bin = index == b
        if in_bin.any():
            gap = abs(y_true[in_bin].mean() - score[in_bin].mean())
            error += in_bin.mean() * gap
    return float(error)


def multilabel_scores(y_true, probs):
    """Return micro- and macro-F1 with each label present at p >= 0.5."""
    y_true = np.asarray(y_true).astype(np.int64)
    y_pred = (np.asarray(probs) >= THRESHOLD).astype(np.int64)
    return {name: float(f1_score(y_true, y_pred, average=name.split("_")[0],
                                 zero_division=0))
            for name in ("micro_f1", "macro_f1")}


def regression_scores(y_true, y_pred):
    """Return RMSE, MAE, R-squared and normalized Gini on the target's scale."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    error = y_pred - y_true
    total = float(((y_true - y_true.mean()) ** 2).sum())
    return {
        "rmse": float(np.sqrt(np.mean(error ** 2))),
        "mae": float(np.mean(np.abs(error))),
        "r2": 1.0 - float((error ** 2).sum()) / total if total > 0
        else float("nan"),
        "gini": normalized_gini(y_true, y_pred),
    }


def normalized_gini(y_true, y_pred):
    """Return Gini(y_true ordered by y_pred) / Gini(y_true ordered by itself).

    1 means the prediction orders rows as well as the targets themselves,
    0 no better than chance. Rows with tied predictions share the mean of
    their targets, so a constant prediction scores exactly 0. NaN when the
    targets sum to 0 or are all equal.
    """
    perfect = _gini(y_true, y_true)
    if not perfect or math.isnan(perfect):
        return float("nan")
    return float(_gini(y_true, y_pred) / perfect)


def _gini(y_true, y_pred):
    y_true = np.asarray(y_true, dtype=np.float64)
    n = len(y_true)
    if n == 0 or y_true.sum() == 0:
        return float("nan")
    order = np.argsort(-np.asarray(y_pred, dtype=np.float64), kind="stable")
    ranked_pred = np.asarray(y_pred)[order]
    ranked = y_true[order]
    # Replace targets within a group of tied predictions by the group mean.
    _, start, size = np.unique(ranked_pred, return_index=True,
                               return_counts=True)
    if len(size) < n:
        ranked = ranked.copy()
        for first, count in zip(start, size):
            if count > 1:
                block = slice(first, first + count)
                ranked[block] = ranked[block].mean()
    cumulative = np.cumsum(ranked) / ranked.sum()
    return float(cumulative.sum() / n - (n + 1) / (2 * n))


def ranking_scores(relevant, scores, top_k):
    """Return NDCG@K and Recall@K per cut-off, averaged over rows.

    `relevant` is a multi-hot [rows, items] array with at least one
    relevant item per row; items are ranked by `scores`, highest first.
    """
    relevant = np.asarray(relevant) > 0
    order = np.argsort(-np.asarray(scores), axis=1, kind="stable")
    hits = np.take_along_axis(relevant, order, axis=1)
    n_relevant = relevant.sum(axis=1)
    result = {}
    for k in top_k:
        top = hits[:, :k]
        discounts = 1.0 / np.log2(np.arange(2, top.shape[1] + 2))
        dcg = (top * discounts).sum(axis=1)
        ideal_hits = np.minimum(n_relevant, k)
        ideal = np.array([discounts[:m].sum() for m in ideal_hits])
        result[f"ndcg@{k}"] = float(np.mean(dcg / ideal))
        result[f"recall@{k}"] = float(np.mean(top.sum(axis=1) / n_relevant))
    return result


def selection_value(metrics, metric_name, tasks):
    """Return the model-selection value: one task metric or the "mean" rule.

    "mean" is the mean over tasks of `mean_metric` (each task's first
    metric, gini for regression types), skipping NaN values, and it is
    always maximised. For "<task>.<metric>", the caller minimises the value
    when `lower_is_better` in the schema returns True. `tasks` maps task
    names to tasks.json entries or to task types.
    """
    if metric_name != "mean":
        task, _, name = metric_name.partition(".")
        return metrics[task][name]
    values = []
    for name, task in tasks.items():
        if isinstance(task, str):
            task = {"type": task}
        values.append(metrics[name][mean_metric(task["type"],
                                                task.get("top_k", (5, 10)))])
    values = [v for v in values if v == v]
    return float(np.mean(values)) if values else float("nan")
