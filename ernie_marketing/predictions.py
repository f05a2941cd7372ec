"""Turn each head's raw outputs into the task's predictions.

Evaluation and the predictor share these functions, so metrics and output
files see the same numbers. `tasks` are the task entries of tasks.json.
"""

import numpy as np

from .data.labels import label_encoder_from_schema


def sigmoid(x):
    x = np.asarray(x, dtype=np.float64)
    # exp of a large positive number overflows; this form never does.
    exp = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + exp), exp / (1.0 + exp))


def softmax(x):
    x = np.asarray(x, dtype=np.float64)
    exp = np.exp(x - x.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def predict_tasks(tasks, logits):
    """Return {task name: {output name: array}} from each task's logits.

    Outputs by task type:
      multiclass     probs [rows, classes]
      binary         score [rows]: P(positive); with a parent task, the
                     chained P(parent) x P(task | parent), and conditional
                     [rows]: P(task | parent)
      multilabel     probs [rows, labels], each label independently
      ranking        scores [rows, items]: a softmax over the item set
      regression     value [rows] on the target's own scale
      zero_inflated  value [rows] = probability_positive x amount, where
                     amount is E[y | y > 0], cut at 0
    """
    by_name = {task["name"]: (task, np.asarray(task_logits))
               for task, task_logits in zip(tasks, logits)}
    return {name: _predict_task(task, task_logits, by_name)
            for name, (task, task_logits) in by_name.items()}


def _predict_task(task, logits, by_name):
    kind = task["type"]
    if kind == "multiclass":
        return {"probs": softmax(logits)}
    if kind == "binary":
        conditional = sigmoid(logits[:, 0])
        if not task.get("parent"):
            return {"score": conditional}
        return {"score": chained_probability(task["name"], by_name),
                "conditional": conditional}
    if kind == "multilabel":
        return {"probs": sigmoid(logits)}
    if kind == "ranking":
        return {"scores": softmax(logits)}
    scaler = label_encoder_from_schema(task)
    if kind == "regression":
        return {"value": scaler.inverse(logits[:, 0])}
    if kind == "zero_inflated":
        # NOTE: the amount is de-standardised, not constrained to be
        # positive, so it is cut at 0: a spend cannot be negative.
        amount = np.maximum(scaler.inverse(logits[:, 1]), 0.0)
        probability = sigmoid(logits[:, 0])
        return {"value": probability * amount,
                "probability_positive": probability, "amount": amount}
    raise ValueError(f"unknown task type {kind!r}")


def chained_probability(name, by_name):
    """Return P(task) for a binary task: P(parent) x sigmoid(logit) up the chain."""
    task, logits = by_name[name]
    probability = sigmoid(logits[:, 0])
    if task.get("parent"):
        probability = probability * chained_probability(task["parent"], by_name)
    return probability
