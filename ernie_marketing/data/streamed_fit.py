"""Fit label encoders and a FeatureEncoder chunk by chunk.

Each class here gathers, one chunk of training rows at a time, what the
in-memory builders (`build_label_encoder`, `FeatureEncoder.fit`) read from
the whole training split, then builds the same encoder with the same
checks and errors. Label and category vocabularies come out identical.
Means and standard deviations are combined from per-chunk moments, so they
can differ from a one-piece computation by float64 rounding (the tests
allow a relative 1e-12).
"""

import collections
import math

import numpy as np
import pandas as pd

from ..config.schema import REGRESSION_TYPES, SET_TYPES
from ..errors import DataError
from .features import (
    FeatureEncoder,
    _mean_and_std,
    category_counts,
    check_numeric_fit,
    numeric_values,
)
from .labels import (
    LabelSetVocab,
    LabelVocab,
    TargetScaler,
    _label_sets,
    check_fitted_counts,
    normalize_label,
)


class RunningMoments:
    """Count, mean, standard deviation and range of float64 values added in
    pieces.

    Each piece's mean and std are taken on values divided by the piece's
    largest magnitude, as `_mean_and_std` does, and combined in units of
    the largest magnitude overall, so values near the float64 limit do
    not overflow.
    """

    def __init__(self):
        # One (count, mean, std, largest magnitude) per non-empty piece.
        self.pieces = []
        self.low = math.inf
        self.high = -math.inf

    @property
    def count(self):
        return sum(piece[0] for piece in self.pieces)

    def add(self, values):
        if values.size == 0:
            return
        mean, std = _mean_and_std(values)
        self.pieces.append((values.size, mean, std,
                            float(np.abs(values).max())))
        self.low = min(self.low, float(values.min()))
        self.high = max(self.high, float(values.max()))

    def mean_and_std(self):
        """Return the mean and standard deviation of all values added."""
        scale = max(piece[3] for piece in self.pieces)
        if scale == 0.0:
            return 0.0, 0.0
        counts = np.array([piece[0] for piece in self.pieces], dtype=np.float64)
        means = np.array([piece[1] for piece in self.pieces]) / scale
        stds = np.array([piece[2] for piece in self.pieces]) / scale
        total = counts.sum()
        mean = float((counts * means).sum() / total)
        variance = float((counts * (stds ** 2 + (means - mean) ** 2)).sum()
                         / total)
        return mean * scale, math.sqrt(max(variance, 0.0)) * scale


class LabelStatistics:
    """Statistics of one task's training labels, gathered chunk by chunk.

    The task's label encoder is built from them. Class tasks keep their
    distinct labels, set tasks their distinct items and numeric tasks the
    moments of their fitted targets.
    """

    def __init__(self, task):
        self.task = task
        self.labelled = 0
        # Distinct labels or items, in order of first appearance.
        self.values = {}
        self.scaler = None
        if task.type in REGRESSION_TYPES:
            self.scaler = TargetScaler(task.name, task.label_column, task.type,
                                       task.log1p)
            self.moments = RunningMoments()

    def add(self, values, row_ids):
        """Add a chunk's label cells; `row_ids` name its rows in errors."""
        task = self.task
        if self.scaler is not None:
            # encode() raises the in-memory path's errors for text,
            # infinite and negative targets.
            targets, _ = self.scaler.encode(values, row_ids=row_ids)
            n_present, fitted = self.scaler.fitted_values(targets)
            self.labelled += n_present
            self.moments.add(fitted)
        elif task.type in SET_TYPES:
            for items in _label_sets(values, task.label_separator):
                if items is not None:
                    self.labelled += 1
                    self.values.update(dict.fromkeys(items))
        else:
            keys = values.map(normalize_label).dropna()
            self.labelled += len(keys)
            self.values.update(dict.fromkeys(keys.unique().tolist()))

    def encoder(self):
        """Return the task's label encoder, as `build_label_encoder` makes it."""
        task = self.task
        if self.scaler is not None:
            check_fitted_counts(task, self.labelled, self.moments.count)
            mean, std = self.moments.mean_and_std()
            self.scaler.set_statistics(mean, std, self.moments.low,
                                       self.moments.high)
            return self.scaler
        check_number_spellings(self.values, f"label column "
                               f"{task.label_column!r} of task {task.name!r}")
        if task.type in SET_TYPES:
            # One cell with every item seen gives the same sorted items.
            return LabelSetVocab.build(task, [list(self.values)])
        return LabelVocab.build(task, list(self.values))


class FeatureStatistics:
    """Statistics of the feature columns, gathered chunk by chunk, that a
    `FeatureEncoder` is fitted on."""

    def __init__(self, feature_config):
        self.config = feature_config
        self.moments = {column: RunningMoments()
                        for column in feature_config.numeric}
        self.has_missing = dict.fromkeys(feature_config.numeric, False)
        self.counts = {column: collections.Counter()
                       for column in feature_config.categorical}

    def add(self, frame, row_ids):
        """Add a chunk's feature columns; `row_ids` name its rows in errors."""
        for column, moments in self.moments.items():
            values = numeric_values(frame, column, row_ids)
            present = values[~np.isnan(values)]
            moments.add(present)
            if present.size < values.size:
                self.has_missing[column] = True
        for column, counts in self.counts.items():
            counts.update(category_counts(frame[column]).to_dict())

    def encoder(self):
        """Return the encoder `FeatureEncoder.fit` makes from the same rows."""
        means, stds, indicators = [], [], []
        for column, moments in self.moments.items():
            check_numeric_fit(column, moments.count)
            mean, std = moments.mean_and_std()
            means.append(mean)
            stds.append(std if std > 0 else 1.0)
            if self.has_missing[column]:
                indicators.append(column)
        for column, counts in self.counts.items():
            check_number_spellings(counts, f"categorical feature column "
                                   f"{column!r}")
        value_counts = [pd.Series(counts, dtype=np.int64)
                        for counts in self.counts.values()]
        return FeatureEncoder.from_statistics(self.config, means, stds,
                                              indicators, value_counts)


def check_number_spellings(keys, column_description):
    """Raise DataError when two of `keys` are one number written two ways.

    pandas infers each chunk's column types on its own, so a chunk whose
    cells are all numbers reads "007" as 7 (key "7") while a chunk with a
    text cell keeps "007". The in-memory reader infers one type for the
    whole file and cannot split a value this way.
    """
    spellings = collections.defaultdict(list)
    for key in keys:
        try:
            number = float(key)
        except ValueError:
            continue
        if math.isfinite(number):
            spellings[number].append(key)
    clashes = [sorted(group) for group in spellings.values() if len(group) > 1]
    if clashes:
        raise DataError(
            f"{column_description} has values that are one number written "
            f"two ways: {clashes[:5]}; a streamed chunk whose cells are all "
            "numbers is read as numbers, which drops leading zeros and "
            "trailing decimal zeros, so make the values text in every row "
            "(e.g. 'c007') or set data.streaming=false")
