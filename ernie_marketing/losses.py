"""Per-task losses that skip rows whose label is missing for that task.

Every task loss returns the mean over the labelled rows of the batch and
the number of those rows. A batch with no labelled row gives a loss of zero
and no gradient. Labels arrive as the label encoders write them (data/labels.py):
class ids with MISSING, multi-hot rows of MISSING, or targets with NaN.
"""

import paddle
import paddle.nn.functional as F

from .data.labels import MISSING


def masked_task_loss(task, logits, labels, parent_log_probs=None,
                     divisor=None):
    """Return the mean loss of one task over its labelled rows and their count.

    `task` is the task's entry in tasks.json (at least `type`; `target`,
    `loss` and `huber_delta` for regression types). `parent_log_probs` is
    (log P(parent), log(1 - P(parent))) for a task chained on a parent,
    from `chained_log_probs`. `divisor` is passed to `masked_mean`.
    """
    kind = task["type"]
    if kind == "binary":
        return _binary_loss(logits, labels, parent_log_probs, divisor)
    if kind == "multiclass":
        mask = labels != MISSING
        safe = paddle.where(mask, labels, paddle.zeros_like(labels))
        per_row = F.cross_entropy(logits, safe.unsqueeze(-1),
                                  reduction="none").squeeze(-1)
        return masked_mean(per_row, mask, divisor)
    if kind == "multilabel":
        mask = labels[:, 0] != MISSING
        per_row = F.binary_cross_entropy_with_logits(
            logits, labels.clip(min=0.0), reduction="none").mean(axis=-1)
        return masked_mean(per_row, mask, divisor)
    if kind == "ranking":
        return _ranking_loss(logits, labels, divisor)
    if kind == "regression":
        mask = ~paddle.isnan(labels)
        residual = logits[:, 0] - _standardise(task, labels, mask)
        return masked_mean(_regression_per_row(task, residual), mask, divisor)
    if kind == "zero_inflated":
        return _zero_inflated_loss(task, logits, labels, divisor)
    raise ValueError(f"unknown task type {kind!r}")


def multitask_loss(tasks, weights, logits, labels, divisor=None):
    """Return the weighted total loss and each task's (loss, labelled count).

    `tasks` are tasks.json entries, `logits` one tensor per task in the same
    order, and `labels` a mapping from task name to that task's label
    tensor. The per-task losses are unweighted, keyed by task name.
    `divisor` is passed to `masked_mean`; a mapping from task name to a
    number divides each task's loss sum by that number instead.
    """
    by_name = {task["name"]: (task, task_logits)
               for task, task_logits in zip(tasks, logits)}
    task_losses = {}
    total = paddle.zeros([], dtype="float32")
    for task, task_logits, weight in zip(tasks, logits, weights):
        parent = task.get("parent")
        prior = chained_log_probs(parent, by_name) if parent else None
        task_divisor = divisor
        if isinstance(divisor, dict):
            task_divisor = _constant_divisor(divisor[task["name"]])
        loss, count = masked_task_loss(task, task_logits, labels[task["name"]],
                                       prior, task_divisor)
        task_losses[task["name"]] = (loss, count)
        total = total + weight * loss
    return total, task_losses


def _constant_divisor(value):
    """Return a `masked_mean` divisor that is `value` whatever the count."""
    def divide(count):
        return value
    return divide


def chained_log_probs(name, by_name):
    """Return (log P(task), log(1 - P(task))) for a binary task `name`.

    A task with a parent has P(task) = P(parent) x sigmoid(logit). Both logs
    are computed from log-sigmoids and a log-sum-exp, never from P itself,
    so they stay finite for any logits: with b the logit,
    1 - P(parent) sigmoid(b) = (1 - P(parent) + exp(-b)) sigmoid(b).
    `by_name` maps task names to (tasks.json entry, logits).
    """
    task, logits = by_name[name]
    logit = logits[:, 0]
    if not task.get("parent"):
        return F.log_sigmoid(logit), F.log_sigmoid(-logit)
    return _child_log_probs(chained_log_probs(task["parent"], by_name), logit)


def _child_log_probs(parent_log_probs, logit):
    """Return (log P, log(1 - P)) of P = P(parent) x sigmoid(logit)."""
    parent_log_p, parent_log_not_p = parent_log_probs
    log_sigmoid = F.log_sigmoid(logit)
    log_not_p = paddle.logsumexp(
        paddle.stack([parent_log_not_p, -logit], axis=-1), axis=-1)
    return parent_log_p + log_sigmoid, log_not_p + log_sigmoid


def masked_mean(per_row, mask, divisor=None):
    """Return the mean of `per_row` where `mask` is true, and the count.

    With `divisor`, a function of the count, the masked sum is divided by
    `divisor(count)` instead. Data-parallel training passes
    `ProcessGroup.loss_divisor`, which makes a rank's loss its share of the
    mean over the whole global batch.
    """
    weights = mask.astype(per_row.dtype)
    count = weights.sum()
    total = (per_row * weights).sum()
    if divisor is not None:
        return total / divisor(count), count
    return total / count.clip(min=1.0), count


def _binary_loss(logits, labels, parent_log_probs, divisor=None):
    mask = labels != MISSING
    target = paddle.where(mask, labels, paddle.zeros_like(labels)).astype(
        "float32")
    logit = logits[:, 0]
    if parent_log_probs is None:
        per_row = F.binary_cross_entropy_with_logits(logit, target,
                                                     reduction="none")
        return masked_mean(per_row, mask, divisor)
    # ESMM: the label is compared with P(parent) x P(task | parent).
    log_p, log_not_p = _child_log_probs(parent_log_probs, logit)
    per_row = -(target * log_p + (1.0 - target) * log_not_p)
    return masked_mean(per_row, mask, divisor)


def _ranking_loss(logits, labels, divisor=None):
    """Softmax cross-entropy over the item set against the relevant items.

    The target spreads probability 1 evenly over a row's relevant items.
    """
    relevant = labels.clip(min=0.0)
    n_relevant = relevant.sum(axis=-1)
    mask = (labels[:, 0] != MISSING) & (n_relevant > 0)
    target = relevant / n_relevant.clip(min=1.0).unsqueeze(-1)
    per_row = -(target * F.log_softmax(logits, axis=-1)).sum(axis=-1)
    return masked_mean(per_row, mask, divisor)


def _zero_inflated_loss(task, logits, labels, divisor=None):
    """BCE of P(y > 0) on labelled rows plus the amount loss on rows with y > 0.

    Output 0 is the logit of P(y > 0); output 1 is the standardised amount
    E[y | y > 0]. Each part is a mean over its own rows; the count is the
    number of labelled rows.
    """
    mask = ~paddle.isnan(labels)
    safe = paddle.where(mask, labels, paddle.zeros_like(labels))
    positive = mask & (safe > 0)
    occurrence = F.binary_cross_entropy_with_logits(
        logits[:, 0], positive.astype("float32"), reduction="none")
    occurrence_loss, count = masked_mean(occurrence, mask, divisor)
    residual = logits[:, 1] - _standardise(task, labels, positive)
    amount_loss, _ = masked_mean(_regression_per_row(task, residual), positive,
                                 divisor)
    return occurrence_loss + amount_loss, count


def _standardise(task, labels, mask):
    """Return (log1p(y) if log1p else y - mean) / std, 0 where `mask` is false."""
    target = task["target"]
    safe = paddle.where(mask, labels, paddle.zeros_like(labels))
    if target["log1p"]:
        safe = paddle.log1p(safe.clip(min=0.0))
    return (safe - target["mean"]) / target["std"]


def _regression_per_row(task, residual):
    """Return the squared error, or the Huber loss with task["huber_delta"]."""
    if task.get("loss", "mse") == "mse":
        return residual * residual
    delta = task.get("huber_delta", 1.0)
    size = residual.abs()
    return paddle.where(size <= delta, 0.5 * residual * residual,
                        delta * (size - 0.5 * delta))
