"""Per-task losses that skip rows whose label is missing for that task."""

import paddle
import paddle.nn.functional as F

from .data.labels import MISSING


def masked_task_loss(task_type, logits, labels):
    """Return the mean loss over labelled rows and their count.

    `labels` contains class ids, with MISSING (-1) for rows that have no label
    for this task; the loss of a batch with no labelled row is zero.
    """
    mask = labels != MISSING
    count = mask.astype("float32").sum()
    safe_labels = paddle.where(mask, labels, paddle.zeros_like(labels))
    if task_type == "binary":
        per_row = F.binary_cross_entropy_with_logits(
            logits.squeeze(-1), safe_labels.astype("float32"), reduction="none")
    else:
        per_row = F.cross_entropy(logits, safe_labels.unsqueeze(-1),
                                  reduction="none").squeeze(-1)
    total = (per_row * mask.astype(per_row.dtype)).sum()
    return total / count.clip(min=1.0), count


def multitask_loss(task_types, weights, logits, labels):
    """Return the weighted total loss and each task's unweighted loss.

    `labels` is [batch, tasks]; `logits` is one tensor per task, in order.
    """
    task_losses = []
    total = paddle.zeros([], dtype="float32")
    for j, (task_type, weight) in enumerate(zip(task_types, weights)):
        loss, _ = masked_task_loss(task_type, logits[j], labels[:, j])
        task_losses.append(loss)
        total = total + weight * loss
    return total, task_losses
