"""Label encoders: from a task's label cells to the arrays losses read.

Each task type has one encoder, built from the training split:

- multiclass, binary: `LabelVocab`, int64 class ids.
- multilabel, ranking: `LabelSetVocab`, float32 multi-hot rows over the
  values seen in training.
- regression, zero_inflated: `TargetScaler`, float32 raw targets plus the
  training mean and standard deviation used to standardise them.

A missing label is MISSING (-1) in a class id, a row of MISSING in a
multi-hot array, and NaN in a target.
"""

import logging
import math

import numpy as np
import pandas as pd

from ..config.schema import REGRESSION_TYPES, SET_TYPES
from ..errors import DataError

logger = logging.getLogger(__name__)

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
            raise _no_labels_error(task)
        if task.type == "binary":
            present = _order_binary(task, present)
        elif len(present) < 2:
            raise DataError(f"task {task.name!r}: column {task.label_column!r} "
                            f"has one label value {present} in the training "
                            "split; a multiclass task needs at least 2")
        return cls(task.name, present)

    def __len__(self):
        return len(self.labels)

    def encode(self, values, unknown="error", row_ids=None):
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


class LabelSetVocab:
    """Maps the value sets of a multilabel or ranking task to multi-hot rows.

    A label cell contains one or more values joined by `separator` ("a|b"), or
    a JSON list. For ranking the values are item ids, and the items seen in
    training are the candidates the model ranks.
    """

    def __init__(self, task_name, labels, separator="|"):
        self.task_name = task_name
        self.labels = list(labels)
        self.separator = separator
        self.index = {label: i for i, label in enumerate(self.labels)}

    @classmethod
    def build(cls, task, values):
        present = set()
        for items in _label_sets(values, task.label_separator):
            present.update(items or ())
        if not present:
            raise _no_labels_error(task)
        present = sorted(present, key=_sort_key)
        if task.type == "ranking" and len(present) < 2:
            raise DataError(f"task {task.name!r}: column {task.label_column!r} "
                            f"has one item {present} in the training split; "
                            "a ranking task needs at least 2 candidate items")
        if task.type == "ranking" and max(task.top_k) >= len(present):
            logger.warning("task %s: top_k=%s reaches the %d candidate items, "
                           "so recall@%d is 1 for every row; lower "
                           "tasks.%s.top_k", task.name, task.top_k,
                           len(present), max(task.top_k), task.name)
        return cls(task.name, present, task.label_separator)

    def __len__(self):
        return len(self.labels)

    def encode(self, values, unknown="error", row_ids=None):
        """Return float32 multi-hot rows [rows, labels] and unknown-value counts.

        A row with no label, or only values never seen in training (with
        unknown="ignore"), is all MISSING.
        """
        multi_hot = np.full((len(values), len(self.labels)), MISSING,
                            dtype=np.float32)
        unknown_counts = {}
        for i, items in enumerate(_label_sets(values, self.separator)):
            if items is None:
                continue
            known = [self.index[item] for item in items if item in self.index]
            for item in items:
                if item not in self.index:
                    unknown_counts[item] = unknown_counts.get(item, 0) + 1
            if known:
                multi_hot[i] = 0.0
                multi_hot[i, known] = 1.0
        if unknown_counts and unknown == "error":
            shown = dict(sorted(unknown_counts.items())[:20])
            raise DataError(f"task {self.task_name!r}: values {shown} (value: "
                            "rows) never occur in the training split, which "
                            f"has {len(self.labels)} values such as "
                            f"{self.labels[:10]}; fix the labels or set "
                            "data.unknown_label=ignore to drop them")
        return multi_hot, unknown_counts

    def to_dict(self):
        return {"labels": self.labels, "label_separator": self.separator}


class TargetScaler:
    """Reads the numeric targets of a regression or zero_inflated task.

    Targets are standardised with the training mean and standard deviation
    (after log1p when set) for the loss; `inverse` maps model outputs back.
    A zero_inflated task's statistics come from its positive targets only,
    because its amount output is trained on those. A constant target gets
    standard deviation 1. `inverse` clips outputs to the range of the
    training targets (`low`, `high`, on the transformed scale), because a
    log1p model's exp() turns a far extrapolation into an absurd amount.
    """

    labels = ()

    def __init__(self, task_name, label_column, task_type, log1p=False,
                 mean=0.0, std=1.0, low=None, high=None):
        self.task_name = task_name
        self.label_column = label_column
        self.task_type = task_type
        self.log1p = bool(log1p)
        self.mean = float(mean)
        self.std = float(std)
        self.low = None if low is None else float(low)
        self.high = None if high is None else float(high)

    @classmethod
    def build(cls, task, values, row_ids=None):
        scaler = cls(task.name, task.label_column, task.type, task.log1p)
        targets, _ = scaler.encode(values, row_ids=row_ids)
        n_present, transformed = scaler.fitted_values(targets)
        check_fitted_counts(task, n_present, transformed.size)
        scaler.set_statistics(float(transformed.mean()),
                              float(transformed.std()),
                              float(transformed.min()),
                              float(transformed.max()))
        return scaler

    def fitted_values(self, targets):
        """Return the labelled count of `targets` (from `encode`) and the
        float64 values the statistics are fitted on.

        Those are the labelled targets (only the positive ones for a
        zero_inflated task), after log1p when set.
        """
        # float64, because the square of a float32 target can overflow.
        present = targets[~np.isnan(targets)].astype(np.float64)
        n_present = present.size
        if self.task_type == "zero_inflated":
            present = present[present > 0]
        return n_present, np.log1p(present) if self.log1p else present

    def set_statistics(self, mean, std, low, high):
        """Set the fitted mean, std (1 when 0) and range of the targets."""
        self.mean = mean
        self.std = std if std > 0 else 1.0
        self.low = low
        self.high = high

    def __len__(self):
        return 0

    def encode(self, values, unknown="error", row_ids=None):
        """Return float32 targets (NaN where missing) and no unknown values.

        Raises DataError for text, infinite values, and negative values
        where log1p or a zero_inflated task needs them to be >= 0.
        """
        targets = parse_numbers(values, f"task {self.task_name!r}: column "
                                f"{self.label_column!r}", row_ids,
                                "a number or an empty cell")
        self._check_negative(targets, row_ids)
        self._check_float32(targets, row_ids)
        return targets.astype(np.float32), {}

    def _check_float32(self, targets, row_ids):
        # Targets are stored as float32, where a larger value becomes inf
        # and turns the loss into NaN.
        limit = float(np.finfo(np.float32).max)
        too_large = np.flatnonzero(np.abs(targets) > limit)
        if too_large.size == 0:
            return
        first = too_large[0]
        row = row_ids[first] if row_ids is not None else first
        raise DataError(f"task {self.task_name!r}: column {self.label_column!r} "
                        f"has {too_large.size} values beyond the float32 "
                        f"range of +-{limit:.3g} (first: row {row} = "
                        f"{targets[first]:g}); fix them or rescale the column")

    def _check_negative(self, targets, row_ids):
        if not (self.log1p or self.task_type == "zero_inflated"):
            return
        negative = np.flatnonzero(targets < 0)
        if negative.size == 0:
            return
        first = negative[0]
        row = row_ids[first] if row_ids is not None else first
        reason = ("log1p needs values >= 0" if self.log1p else
                  "a zero_inflated target is 0 or a positive amount")
        fix = (f"set tasks.{self.task_name}.log1p=false or fix the values"
               if self.log1p else "fix the values or use type regression")
        raise DataError(f"task {self.task_name!r}: column {self.label_column!r} "
                        f"has {negative.size} negative values (first: row "
                        f"{row} = {targets[first]:g}), but {reason}; {fix}")

    def transform(self, targets):
        """Return standardised targets: (log1p(y) if log1p else y - mean) / std."""
        targets = np.asarray(targets, dtype=np.float64)
        if self.log1p:
            targets = np.log1p(targets)
        return (targets - self.mean) / self.std

    def inverse(self, outputs):
        """Return raw-scale values for standardised model outputs."""
        values = np.asarray(outputs, dtype=np.float64) * self.std + self.mean
        if self.low is not None:
            values = np.clip(values, self.low, self.high)
        return np.expm1(values) if self.log1p else values

    def to_dict(self):
        return {"labels": [], "target": {"log1p": self.log1p,
                                         "mean": self.mean, "std": self.std,
                                         "low": self.low, "high": self.high}}


def build_label_encoder(task, values, row_ids=None):
    """Return the label encoder for `task`, built from training label cells."""
    if task.type in SET_TYPES:
        return LabelSetVocab.build(task, values)
    if task.type in REGRESSION_TYPES:
        return TargetScaler.build(task, values, row_ids)
    return LabelVocab.build(task, values)


def check_fitted_counts(task, n_present, n_fitted):
    """Raise DataError when a numeric task has no targets to fit on.

    `n_present` counts the labelled training rows and `n_fitted` the values
    `TargetScaler.fitted_values` kept of them.
    """
    if n_present == 0:
        raise _no_labels_error(task)
    if n_fitted == 0:
        raise DataError(f"task {task.name!r}: column {task.label_column!r} "
                        "has no value above 0 in the training split, so a "
                        "zero_inflated task cannot learn an amount; check the "
                        "column or use a binary task")


def label_encoder_from_schema(task):
    """Return the label encoder saved in a task entry of tasks.json."""
    kind = task["type"]
    if kind in SET_TYPES:
        return LabelSetVocab(task["name"], task["labels"],
                             task.get("label_separator", "|"))
    if kind in REGRESSION_TYPES:
        target = task["target"]
        return TargetScaler(task["name"], task.get("label_column"), kind,
                            target["log1p"], target["mean"], target["std"],
                            target.get("low"), target.get("high"))
    return LabelVocab(task["name"], task["labels"])


def labelled_rows(labels):
    """Return a boolean mask of the rows that have a label in `labels`.

    Works for class ids (MISSING), multi-hot rows (all MISSING) and
    targets (NaN).
    """
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return labels[:, 0] != MISSING
    if np.issubdtype(labels.dtype, np.floating):
        return ~np.isnan(labels)
    return labels != MISSING


def unlabelled_rows(labels, count):
    """Return `count` rows without a label, in the layout of `labels`.

    The fill is NaN for targets and MISSING for class ids and multi-hot rows,
    so `labelled_rows` is false for every returned row.
    """
    labels = np.asarray(labels)
    is_target = labels.ndim == 1 and np.issubdtype(labels.dtype, np.floating)
    return np.full((count, *labels.shape[1:]), np.nan if is_target else MISSING,
                   dtype=labels.dtype)


def parse_numbers(values, what, row_ids=None, expected="a number"):
    """Return float64 numbers for label or feature cells, NaN where empty.

    Raises DataError naming `what`, the first bad rows and values for text
    that is not a number, and for infinite values.
    """
    keys = pd.Series(list(values), dtype=object).map(_number_key)
    numbers = pd.to_numeric(keys, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(keys.notna().to_numpy() & np.isnan(numbers))
    if bad.size:
        raise DataError(f"{what} has {bad.size} values that are not numbers, "
                        f"e.g. {_rows_and_values(keys, bad, row_ids)}; "
                        f"expected {expected}; fix or empty those cells")
    infinite = np.flatnonzero(np.isinf(numbers))
    if infinite.size:
        raise DataError(f"{what} has {infinite.size} infinite values, e.g. "
                        f"{_rows_and_values(keys, infinite, row_ids)}; replace "
                        "them with a finite number or an empty cell")
    return numbers


def _number_key(value):
    # Booleans (JSONL true/false) count as 1 and 0.
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    return normalize_label(value)


def _rows_and_values(keys, positions, row_ids):
    shown = []
    for i in positions[:5]:
        row = row_ids[i] if row_ids is not None else i
        shown.append(f"row {row} = {keys.iloc[i]!r}")
    return ", ".join(shown)


def _label_sets(values, separator):
    """Yield each cell's list of values, or None when the cell is empty."""
    for value in values:
        if isinstance(value, (list, tuple, np.ndarray)):
            parts = list(value)
        else:
            text = normalize_label(value)
            parts = [] if text is None else text.split(separator)
        items = [item for item in map(normalize_label, parts) if item is not None]
        yield list(dict.fromkeys(items)) or None


def _no_labels_error(task):
    return DataError(f"task {task.name!r}: column {task.label_column!r} has no "
                     "labels in the training split; fill it or remove the task")


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
