"""Structured input columns: numeric standardisation and categorical ids.

`FeatureEncoder` is fitted on the training split and applied unchanged to
every other split, to checkpoint evaluation and to the predictor, through
the features.json file saved beside the model.

Numeric columns become (value - mean) / std with the training mean and
standard deviation; a constant column gets std 1. A missing value (an empty
cell or NaN) is replaced by the training mean, which is 0 after scaling.
Each numeric column that had missing values in training also gets a 0/1
indicator input that is 1 where the value was missing, so the model can
tell an imputed mean from a real one. A column with no missing training
value has no indicator; a missing value there at prediction time is still
imputed, and counted in the log. A value too far from the training mean
to standardise as float32 (such as 1e300 against a mean of 250) is an
error.

Categorical columns become ids into a vocabulary built from training. Id 0
is for a value unseen in training or seen fewer than
`features.min_frequency` times, and id 1 for a missing value. The known
values get ids from 2, most frequent first. A categorical column with no
value in training is an error, like an empty numeric column.
"""

import json
import logging

import numpy as np

from ..errors import DataError
from .labels import normalize_label, parse_numbers
from .text import separator_hint

logger = logging.getLogger(__name__)

FEATURES_FILE = "features.json"
UNSEEN_ID = 0
MISSING_ID = 1
_FIRST_VALUE_ID = 2
FORMAT_VERSION = 1


class FeatureEncoder:
    """Turns the configured feature columns of a table into model inputs.

    `transform` returns `numeric_features` float32 [rows, num_numeric_inputs]
    (the scaled columns, then the missing-value indicators) and
    `categorical_features` int64 [rows, len(categorical)]; either is None
    when no such column is configured.
    """

    def __init__(self, numeric=(), categorical=(), means=(), stds=(),
                 indicators=(), vocabularies=()):
        self.numeric = list(numeric)
        self.categorical = list(categorical)
        self.means = [float(v) for v in means]
        self.stds = [float(v) for v in stds]
        # Numeric columns that get a missing-value indicator input.
        self.indicators = list(indicators)
        # One list of known values per categorical column; value i has id i + 2.
        self.vocabularies = [list(v) for v in vocabularies]
        self._index = [{value: i + _FIRST_VALUE_ID for i, value in enumerate(v)}
                       for v in self.vocabularies]

    @classmethod
    def fit(cls, feature_config, frame, row_ids=None):
        """Return an encoder fitted on the training `frame`."""
        check_columns(frame, feature_config.columns, "the training split")
        means, stds, indicators = [], [], []
        for column in feature_config.numeric:
            values = numeric_values(frame, column, row_ids)
            present = values[~np.isnan(values)]
            check_numeric_fit(column, present.size)
            mean, std = _mean_and_std(present)
            means.append(mean)
            stds.append(std if std > 0 else 1.0)
            if present.size < values.size:
                indicators.append(column)
        value_counts = [category_counts(frame[column])
                        for column in feature_config.categorical]
        return cls.from_statistics(feature_config, means, stds, indicators,
                                   value_counts)

    @classmethod
    def from_statistics(cls, feature_config, means, stds, indicators,
                        value_counts):
        """Return an encoder from fitted numeric statistics and the
        `category_counts` of each categorical column."""
        vocabularies = []
        for column, counts in zip(feature_config.categorical, value_counts):
            if counts.empty:
                raise DataError(f"categorical feature column {column!r} is "
                                "empty in the training split; fill it or "
                                "remove it from features.categorical")
            vocabularies.append(_vocabulary(counts,
                                            feature_config.min_frequency))
        encoder = cls(feature_config.numeric, feature_config.categorical,
                      means, stds, indicators, vocabularies)
        encoder._log_fit([len(counts) for counts in value_counts])
        return encoder

    @property
    def num_numeric_inputs(self):
        return len(self.numeric) + len(self.indicators)

    @property
    def vocab_sizes(self):
        """Embedding rows per categorical column: known values plus 2 ids."""
        return [len(v) + _FIRST_VALUE_ID for v in self.vocabularies]

    @property
    def columns(self):
        return self.numeric + self.categorical

    def transform(self, frame, split_name="input", row_ids=None):
        """Return (numeric_features, categorical_features) for `frame`'s rows."""
        check_columns(frame, self.columns, split_name)
        numeric = self._transform_numeric(frame, split_name, row_ids)
        categorical = self._transform_categorical(frame, split_name)
        return numeric, categorical

    def _transform_numeric(self, frame, split_name, row_ids):
        if not self.numeric:
            return None
        scaled = np.zeros((len(frame), len(self.numeric)), dtype=np.float32)
        flags = []
        for j, column in enumerate(self.numeric):
            values = numeric_values(frame, column, row_ids)
            missing = np.isnan(values)
            standardized = np.where(missing, 0.0,
                                    (values - self.means[j]) / self.stds[j])
            _check_float32(standardized, values, column, split_name, row_ids,
                           self.means[j], self.stds[j])
            if split_name != "train":
                _warn_far_values(standardized, values, column, split_name,
                                 row_ids)
            scaled[:, j] = standardized
            if column in self.indicators:
                flags.append(missing.astype(np.float32))
            elif missing.any():
                logger.info("%s: numeric feature %s has %d missing values, "
                            "none in training; they get the training mean",
                            split_name, column, int(missing.sum()))
        if flags:
            scaled = np.concatenate([scaled, np.stack(flags, axis=1)], axis=1)
        return scaled

    def _transform_categorical(self, frame, split_name):
        if not self.categorical:
            return None
        ids = np.zeros((len(frame), len(self.categorical)), dtype=np.int64)
        for j, column in enumerate(self.categorical):
            keys = [normalize_label(value) for value in frame[column].tolist()]
            index = self._index[j]
            ids[:, j] = [MISSING_ID if key is None else index.get(key, UNSEEN_ID)
                         for key in keys]
            unseen = ids[:, j] == UNSEEN_ID
            if unseen.any() and split_name != "train":
                examples = sorted({k for k, u in zip(keys, unseen) if u})[:10]
                logger.info("%s: categorical feature %s has %d values unseen "
                            "in training (e.g. %s); they get the unseen-value "
                            "id", split_name, column, int(unseen.sum()),
                            examples)
        return ids

    def _log_fit(self, distinct_counts):
        for column, mean, std in zip(self.numeric, self.means, self.stds):
            logger.info("numeric feature %s: mean %.4g, std %.4g%s", column,
                        mean, std, ", with a missing-value indicator"
                        if column in self.indicators else "")
        for column, vocabulary, distinct in zip(
                self.categorical, self.vocabularies, distinct_counts):
            logger.info("categorical feature %s: %d values with ids, %d more "
                        "share the unseen-value id (features.min_frequency)",
                        column, len(vocabulary), distinct - len(vocabulary))

    def to_dict(self):
        return {"format_version": FORMAT_VERSION,
                "numeric": self.numeric, "means": self.means,
                "stds": self.stds, "indicators": self.indicators,
                "categorical": self.categorical,
                "vocabularies": self.vocabularies,
                "unseen_id": UNSEEN_ID, "missing_id": MISSING_ID}

    @classmethod
    def from_dict(cls, state):
        return cls(state["numeric"], state["categorical"], state["means"],
                   state["stds"], state["indicators"], state["vocabularies"])

    def model_spec(self, feature_config):
        """Return the structured-input sizes and fusion settings for the model."""
        return {"num_numeric": self.num_numeric_inputs,
                "vocab_sizes": self.vocab_sizes,
                "embedding_dim": feature_config.embedding_dim,
                "fusion": feature_config.fusion,
                "hidden_size": feature_config.hidden_size,
                "dropout": feature_config.dropout}

    def save(self, path):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, ensure_ascii=False, indent=2)

    @classmethod
    def load(cls, path):
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))


def check_columns(frame, columns, where):
    """Raise DataError when a feature column is not in `frame`."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"feature column(s) {missing} not found in {where}; "
                        f"the file has columns {list(frame.columns)}; add them to "
                        "the file, or fix features.numeric and "
                        "features.categorical and train again"
                        f"{separator_hint(frame)}")


def check_numeric_fit(column, n_present):
    """Raise DataError when a numeric column has no training value."""
    if n_present == 0:
        raise DataError(f"numeric feature column {column!r} is empty in the "
                        "training split; fill it or remove it from "
                        "features.numeric")


def category_counts(values):
    """Return how often each value of a categorical column occurs.

    Values are keyed as `normalize_label` makes them (3.0 and "3" are one
    key); missing cells are not counted.
    """
    return values.map(normalize_label).dropna().value_counts()


def numeric_values(frame, column, row_ids=None):
    """Return a numeric feature column as float64, NaN where missing."""
    return parse_numbers(
        frame[column].tolist(), f"numeric feature column {column!r}", row_ids,
        "a number or an empty cell; list a text column under "
        "features.categorical instead")


def _mean_and_std(values):
    """Return the mean and standard deviation of finite float64 `values`.

    Both are computed on values divided by their largest magnitude, so
    magnitudes near the float64 limit (1e300) do not overflow to inf.
    """
    scale = float(np.abs(values).max())
    if scale == 0.0:
        return 0.0, 0.0
    unit = values / scale
    return float(unit.mean()) * scale, float(unit.std()) * scale


def _check_float32(standardized, values, column, split_name, row_ids, mean,
                   std):
    """Raise DataError for values whose standardised form overflows float32."""
    # Inputs are float32, so a larger standardised value becomes inf, then
    # NaN in every prediction of its row.
    limit = float(np.finfo(np.float32).max)
    with np.errstate(invalid="ignore"):
        bad = np.flatnonzero(~(np.abs(standardized) <= limit))
    if bad.size == 0:
        return
    shown = ", ".join(
        f"row {row_ids[i] if row_ids is not None else i} = {values[i]:g}"
        for i in bad[:5])
    raise DataError(f"{split_name}: numeric feature column {column!r} has "
                    f"{bad.size} values too far from the training mean "
                    f"{mean:g} (std {std:g}) to standardise as float32, e.g. "
                    f"{shown}; fix those cells, or rescale the column (e.g. "
                    "log) and train again")


# No training value is further than sqrt(n - 1) standard deviations from
# the mean of its n values, so beyond 1,000 a value lies outside the range
# of any training set of up to a million rows.
FAR_STANDARD_DEVIATIONS = 1000.0


def _warn_far_values(standardized, values, column, split_name, row_ids):
    """Log a warning for values far beyond anything seen in training."""
    far = np.flatnonzero(np.abs(standardized) > FAR_STANDARD_DEVIATIONS)
    if far.size == 0:
        return
    examples = ", ".join(
        f"row {row_ids[i] if row_ids is not None else i} = {values[i]:g}"
        for i in far[:5])
    logger.warning("%s: numeric feature %s has %d values more than %g "
                   "training standard deviations from the training mean, "
                   "e.g. %s. The model never saw such values, so its "
                   "outputs for these rows may saturate; check the units",
                   split_name, column, far.size, FAR_STANDARD_DEVIATIONS,
                   examples)


def _vocabulary(counts, min_frequency):
    """Return the values of `category_counts` seen at least `min_frequency`
    times."""
    kept = counts[counts >= min_frequency]
    # Most frequent first; ties in order of the value, for a stable file.
    return sorted(kept.index, key=lambda v: (-int(kept[v]), str(v)))
