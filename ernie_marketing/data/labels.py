"""Label vocabularies: the mapping between a task's label values and ids."""

import math

import numpy as np

from ..errors import DataError

MISSING = -1
_BINARY_POSITIVES = {
    frozenset({"0", "1"}): "1",
    frozenset({"false", "true"}): "true",
    frozenset({"no", "yes"}): "yes",
    frozenset({"n", "y"}): "y",
    frozenset({"negative", "positive"}): "positive",
}


def normalize_label(value):
    """Return a label as a string key, or None when it is missing.

    Integral floats become integers ("1.0" -> "1"), because pandas reads an
    integer column with gaps as floats.
    """
    if value is None:
        return None
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return None
        if float(value).is_integer():
            return str(int(value))
        return str(value)
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (bytes, bytearray)):
        # Parquet binary columns arrive as bytes; str() would give "b'...'".
        value = bytes(value).decode("utf-8", errors="replace")
    text = str(value).strip()
    if text == "" or text.lower() in ("nan", "<na>", "none", "null"):
        return None
    return text


class LabelVocab:
    """Maps label values of one task to consecutive ids, in sorted order.

    For a binary task id 1 is the positive label.
    """

    def __init__(self, task_name, labels):
        self.task_name = task_name
        self.labels = list(labels)
        self.index = {label: i for i, label in enumerate(self.labels)}

    @classmethod
    def build(cls, task, values):
        present = sorted({v for v in map(normalize_label, values) if v is not None},
                         key=_sort_key)
        if not present:
            raise DataError(f"task {task.name!r}: column {task.label_column!r} "
                            "has no labels in the training split; fill it or "
                            "remove the task")
        if task.type == "binary":
            present = _order_binary(task, present)
        elif len(present) < 2:
            raise DataError(f"task {task.name!r}: column {task.label_column!r} "
                            f"has one label value {present} in the training "
                            "split; a multiclass task needs at least 2")
        return cls(task.name, present)

    def __len__(self):
        return len(self.labels)

    def encode(self, values, unknown="error"):
        """Return int64 ids (MISSING for absent labels) and unknown-value counts."""
        ids = np.full(len(values), MISSING, dtype=np.int64)
        unknown_counts = {}
        for i, value in enumerate(map(normalize_label, values)):
            if value is None:
                continue
            if value in self.index:
                ids[i] = self.index[value]
            else:
                unknown_counts[value] = unknown_counts.get(value, 0) + 1
        if unknown_counts and unknown == "error":
            shown = dict(sorted(unknown_counts.items())[:20])
            raise DataError(f"task {self.task_name!r}: label values {shown} "
                            "(value: rows) never occur in the training split, "
                            f"which has {self.labels}; fix the labels or set "
                            "data.unknown_label=ignore to mask them")
        return ids, unknown_counts

    def to_dict(self):
        return {"labels": self.labels}


def _order_binary(task, present):
    if len(present) != 2:
        raise DataError(f"task {task.name!r} is binary but column "
                        f"{task.label_column!r} has {len(present)} label values "
                        f"{present[:20]} in the training split; use type "
                        "multiclass or map the labels to two values")
    if task.positive_label is not None:
        positive = normalize_label(task.positive_label)
        if positive not in present:
            raise DataError(f"tasks.{task.name}.positive_label={positive!r} is "
                            f"not a label of column {task.label_column!r}; "
                            f"choose one of {present}")
    else:
        positive = _BINARY_POSITIVES.get(frozenset(v.lower() for v in present))
        if positive is None:
            raise DataError(f"task {task.name!r}: cannot tell which of "
                            f"{present} is positive; set "
                            f"tasks.{task.name}.positive_label")
        positive = next(v for v in present if v.lower() == positive)
    negative = next(v for v in present if v != positive)
    return [negative, positive]


def _sort_key(label):
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)
