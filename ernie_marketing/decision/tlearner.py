"""The two-model (T-learner) baseline: one gradient-boosting model per action.

For each action and each priced outcome (one with a value or a cost), a
scikit-learn `HistGradientBoosting*` model learns the outcome from the
structured columns on the training rows that got that action. Predicting
with every action's model gives a customer's outcomes under every action.
The text is not used. Outcome kinds are read from the training labels:

- 0/1 labels: a classifier, predicting P(outcome = 1).
- non-negative amounts that are zero on most rows (spend): a classifier for
  amount > 0 times a regressor fit on the rows with amount > 0.
- anything else: a regressor on the squared error.

Unpriced outcomes are predicted as 0, since they do not change any value.
"""

import logging

import numpy as np
import pandas as pd
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
)

from ..errors import DataError

logger = logging.getLogger(__name__)

# HistGradientBoosting bins a categorical column into at most 255 values;
# rarer training values beyond that many are treated as missing.
MAX_CATEGORIES = 255
# Fewer labelled rows than this for one action and outcome give a constant
# prediction (the mean) instead of a model.
MIN_ROWS = 20


class TLearner:
    """One model per action and priced outcome, on numeric and categorical columns."""

    def __init__(self, numeric, categorical, seed=0, max_iter=200):
        if not numeric and not categorical:
            raise DataError("the T-learner baseline needs feature columns; set "
                            "decision.baseline_numeric or "
                            "decision.baseline_categorical")
        self.numeric = list(numeric)
        self.categorical = list(categorical)
        self.seed = seed
        self.max_iter = max_iter
        self.categories = {}
        self.models = {}
        self.shape = None

    def fit(self, frame, treatment, observed, outcomes):
        """Fit the models on the rows of `frame`.

        `treatment` contains each row's action index, `observed` the outcomes
        [rows, outcomes] (NaN where unlabelled) and `outcomes` the indices
        of the outcomes to model.
        """
        self.categories = {
            column: frame[column].dropna().astype(str).value_counts()
            .index[:MAX_CATEGORIES].tolist() for column in self.categorical}
        inputs = self._inputs(frame)
        num_actions = int(treatment.max()) + 1
        self.shape = (num_actions, observed.shape[1])
        for a in range(num_actions):
            for o in outcomes:
                rows = (treatment == a) & ~np.isnan(observed[:, o])
                self.models[a, o] = self._fit_one(inputs[rows],
                                                  observed[rows, o])
        logger.info("T-learner: fit %d models on %d rows", len(self.models),
                    len(frame))
        return self

    def predict(self, frame, num_actions=None):
        """Return predicted outcomes [rows, actions, outcomes]."""
        inputs = self._inputs(frame)
        num_actions = num_actions or self.shape[0]
        predictions = np.zeros((len(frame), num_actions, self.shape[1]))
        for (a, o), model in self.models.items():
            predictions[:, a, o] = model(inputs)
        return predictions

    def _inputs(self, frame):
        missing = [c for c in self.numeric + self.categorical
                   if c not in frame.columns]
        if missing:
            raise DataError(f"baseline feature columns {missing} not found; "
                            f"the file has columns {list(frame.columns)}")
        columns = {}
        for column in self.numeric:
            values = pd.to_numeric(frame[column], errors="coerce")
            bad = values.isna() & frame[column].notna()
            if bad.any():
                raise DataError(f"numeric baseline column {column!r} has "
                                f"{int(bad.sum())} values that are not numbers"
                                f", e.g. {frame[column][bad].iloc[0]!r}")
            columns[column] = values.to_numpy(np.float64)
        for column in self.categorical:
            index = {v: i for i, v in enumerate(self.categories[column])}
            codes = frame[column].astype(str).map(index)
            codes[frame[column].isna()] = np.nan
            columns[column] = codes.to_numpy(np.float64)
        return pd.DataFrame(columns)

    def _fit_one(self, inputs, labels):
        if len(labels) < MIN_ROWS:
            return _constant(labels.mean() if len(labels) else 0.0)
        if np.isin(labels, (0, 1)).all():
            return self._classifier(inputs, labels)
        if labels.min() >= 0 and (labels == 0).mean() > 0.5:
            positive = labels > 0
            chance = self._classifier(inputs, positive.astype(np.float64))
            amount = self._regressor(inputs[positive], labels[positive])
            return lambda x: chance(x) * amount(x)
        return self._regressor(inputs, labels)

    def _model_options(self):
        mask = [False] * len(self.numeric) + [True] * len(self.categorical)
        return {"categorical_features": mask, "max_iter": self.max_iter,
                "random_state": self.seed}

    def _classifier(self, inputs, labels):
        if len(np.unique(labels)) < 2:
            return _constant(float(labels.mean()))
        model = HistGradientBoostingClassifier(**self._model_options())
        model.fit(inputs, labels.astype(np.int64))
        return lambda x: model.predict_proba(x)[:, 1]

    def _regressor(self, inputs, labels):
        if len(labels) < MIN_ROWS:
            return _constant(float(labels.mean()) if len(labels) else 0.0)
        model = HistGradientBoostingRegressor(**self._model_options())
        model.fit(inputs, labels)
        return model.predict


def _constant(value):
    return lambda x: np.full(len(x), value)
