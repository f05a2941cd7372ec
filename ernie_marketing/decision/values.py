"""Expected value, cost and uplift of every action for every customer.

Predictions come as a table with one row per customer and one column
`<outcome>@<action>` per outcome and action, e.g. `conversion@Mens E-Mail`:
the expected outcome if the customer gets that action. With the values and
costs of a `DecisionConfig`:

    value[i, a] = sum_o pred[i, a, o] * (value_o - unit_cost[a, o]) - cost[a]
    cost[i, a]  = cost[a] + sum_o pred[i, a, o] * unit_cost[a, o]
    gain[i, a]  = value[i, a] - value[i, control]

`cost` is what the budget counts: the fixed cost of the action plus its
expected cost per unit of outcome, such as a coupon redeemed on conversion.
"""

import numpy as np
import pandas as pd

from ..errors import DataError

SEPARATOR = "@"


def column_name(outcome, action):
    """Return the prediction column of `outcome` under `action`."""
    return f"{outcome}{SEPARATOR}{action}"


class ValueModel:
    """The money side of a decision: outcome values and action costs.

    Arrays are indexed [customer, action, outcome] in the order of the
    config's `actions` and `outcomes`.
    """

    def __init__(self, config):
        self.config = config
        self.actions = config.action_names
        self.control = config.control
        self.control_index = self.actions.index(config.control)
        self.outcomes = [o.name for o in config.outcomes]
        self.values = np.array([o.value for o in config.outcomes], np.float64)
        self.fixed_costs = np.array([a.cost for a in config.actions], np.float64)
        self.unit_costs = np.zeros((len(self.actions), len(self.outcomes)))
        for a, action in enumerate(config.actions):
            for item in action.outcome_costs:
                self.unit_costs[a, self.outcomes.index(item.outcome)] += item.cost
        self.observed_columns = [o.column or o.name for o in config.outcomes]

    @property
    def prediction_columns(self):
        """All `<outcome>@<action>` columns, action by action."""
        return [column_name(o, a) for a in self.actions for o in self.outcomes]

    @property
    def priced_outcomes(self):
        """Indices of the outcomes that have a value or a cost under some action."""
        priced = (self.values != 0) | (self.unit_costs != 0).any(axis=0)
        return np.flatnonzero(priced)

    def read_predictions(self, frame):
        """Return predictions [customers, actions, outcomes] from `frame`.

        Raises DataError for a missing column, naming it and any action in
        the file that the config does not list, and for non-numeric or
        missing values.
        """
        check_prediction_columns(frame, self.actions, self.outcomes)
        predictions = np.zeros((len(frame), len(self.actions),
                                len(self.outcomes)))
        for a, action in enumerate(self.actions):
            for o, outcome in enumerate(self.outcomes):
                name = column_name(outcome, action)
                predictions[:, a, o] = numeric_column(frame, name, "prediction")
        return predictions

    def expected(self, predictions):
        """Return (value, cost), each [customers, actions].

        Raises DataError when a negative prediction would make a cost
        negative.
        """
        margin = self.values[None, :] - self.unit_costs
        value = (predictions * margin[None]).sum(axis=2) - self.fixed_costs
        cost = (predictions * self.unit_costs[None]).sum(axis=2) + self.fixed_costs
        if (cost < 0).any():
            a, o = np.argwhere((predictions < 0).any(axis=0)
                               & (self.unit_costs > 0))[0]
            rows = int((predictions[:, a, o] < 0).sum())
            raise DataError(
                f"prediction column {column_name(self.outcomes[o], self.actions[a])!r}"
                f" is negative on {rows} rows, which makes the action's cost "
                "negative; outcomes with an outcome cost need predictions "
                ">= 0, e.g. from a zero_inflated or log1p task")
        return value, cost

    def gain(self, value):
        """Return value minus the control action's value, [customers, actions]."""
        return value - value[:, [self.control_index]]

    def treatment_indices(self, frame, column):
        """Return the index of each row's observed action in `actions`."""
        if column not in frame.columns:
            raise DataError(f"treatment column {column!r} not found; the file "
                            f"has columns {list(frame.columns)}; set "
                            "decision.treatment_column")
        observed = frame[column]
        if observed.isna().any():
            raise DataError(f"treatment column {column!r} is empty on "
                            f"{int(observed.isna().sum())} rows; drop them or "
                            "fill in the action each customer got")
        labels = observed.astype(str)
        unknown = sorted(set(labels) - set(self.actions))
        if unknown:
            count = int(labels.isin(unknown).sum())
            raise DataError(f"treatment column {column!r} has values that are "
                            f"not in decision.actions: {unknown[:5]} ({count} "
                            f"rows); the actions are {self.actions}; add them "
                            "to decision.actions or drop those rows")
        lookup = {name: i for i, name in enumerate(self.actions)}
        return labels.map(lookup).to_numpy(np.int64)

    def observed_outcomes(self, frame):
        """Return the observed outcomes [customers, outcomes]; NaN where unlabelled.

        Only outcomes with a value or a cost are read; the others are NaN,
        so a file may lack their columns.
        """
        observed = np.full((len(frame), len(self.outcomes)), np.nan)
        for o in self.priced_outcomes:
            column = self.observed_columns[o]
            if column not in frame.columns:
                raise DataError(f"observed outcome column {column!r} of outcome "
                                f"{self.outcomes[o]!r} not found; the file has "
                                f"columns {list(frame.columns)}; set the "
                                "outcome's `column` in the decision config")
            observed[:, o] = numeric_column(frame, column, "outcome",
                                            allow_missing=True)
        return observed

    def realized(self, observed, treatment):
        """Return each customer's realized net value under the observed action.

        NaN where a priced outcome is unlabelled.
        """
        priced = self.priced_outcomes
        margin = self.values[None, :] - self.unit_costs[treatment]
        terms = observed[:, priced] * margin[:, priced]
        # A NaN term makes its row's sum NaN.
        return terms.sum(axis=1) - self.fixed_costs[treatment]


def check_prediction_columns(frame, actions, outcomes):
    """Raise DataError naming the first missing `<outcome>@<action>` columns."""
    expected = [column_name(o, a) for a in actions for o in outcomes]
    missing = [c for c in expected if c not in frame.columns]
    if not missing:
        return
    found = [c for c in frame.columns if SEPARATOR in str(c)]
    extra_actions = sorted({str(c).split(SEPARATOR, 1)[1] for c in found}
                           - set(actions))
    hint = (f"; the file has columns for actions {extra_actions} that are not "
            f"in decision.actions {actions}" if extra_actions else "")
    more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
    raise DataError(f"prediction columns {missing[:3]}{more} not found{hint}; "
                    "expected one '<outcome>@<action>' column per outcome and "
                    f"action, e.g. {expected[0]!r}")


def numeric_column(frame, name, kind, allow_missing=False):
    """Return column `name` as float64; raise DataError for text or missing values."""
    values = pd.to_numeric(frame[name], errors="coerce").to_numpy(np.float64)
    bad = np.isnan(values) & frame[name].notna().to_numpy()
    if bad.any():
        example = frame[name][bad].iloc[0]
        raise DataError(f"{kind} column {name!r} has {int(bad.sum())} values "
                        f"that are not numbers, e.g. {example!r}; fix the file")
    if np.isinf(values).any():
        raise DataError(f"{kind} column {name!r} has infinite values; fix the "
                        "file")
    if not allow_missing and np.isnan(values).any():
        raise DataError(f"{kind} column {name!r} is empty on "
                        f"{int(np.isnan(values).sum())} rows; every customer "
                        "needs a prediction for every action")
    return values
