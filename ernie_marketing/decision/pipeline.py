"""From a predictions table to decisions, their evaluation and a report.

`decide` allocates actions with the configured values, costs and
constraints. When the table also has the observed action and outcomes of a
randomized campaign, it estimates the value of the chosen policy and of the
baselines by inverse propensity weighting (see evaluate.py).
"""

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import DataError
from .allocate import GreedyAllocator, allocate, eligible_pairs
from .evaluate import (
    estimate_propensities,
    ipw_value,
    policy_curves,
    random_policy,
)
from .values import ValueModel

logger = logging.getLogger(__name__)

DECISION_COLUMNS = ("action", "expected_value", "expected_gain",
                    "expected_cost", "best_action")


@dataclass
class Decision:
    """Predicted values and the chosen allocation for every customer."""

    model: ValueModel
    value: np.ndarray  # [customers, actions]
    cost: np.ndarray
    gain: np.ndarray
    allocation: object  # allocate.Allocation
    ids: pd.Series
    # Greedy allocations at `budget_points` budgets from 0 to the cost of the
    # allocation with no budget: (budget, Allocation) pairs.
    budget_allocations: list = field(default_factory=list)

    def budget_curve(self):
        """Return the predicted gain per customer at each budget."""
        count = len(self.value)
        return pd.DataFrame(
            [{"budget": budget, "cost": allocation.cost,
              "predicted_gain": allocation.gain / count}
             for budget, allocation in self.budget_allocations])


@dataclass
class Evaluation:
    """The policy values, curves and summaries that go into the report."""

    rows: int
    dropped: int
    propensity: np.ndarray
    policies: list  # evaluate.PolicyValue, the model's policy first
    curves: dict
    budget_curve: pd.DataFrame
    segments: dict = field(default_factory=dict)


def decide(config, predictions):
    """Return the `Decision` for a predictions table (see values.py)."""
    model = ValueModel(config)
    value, cost = model.expected(model.read_predictions(predictions))
    gain = model.gain(value)
    allocation = allocate(
        gain, cost, model.control_index, config.budget,
        [a.capacity for a in config.actions], config.min_return,
        config.method, config.milp_max_variables, config.milp_time_limit)
    logger.info("allocated %s by %s (%s): expected gain %.4g at cost %.4g",
                _count_text(model.actions, allocation.counts(len(model.actions))),
                allocation.method, allocation.status, allocation.gain,
                allocation.cost)
    greedy = _greedy(config, model, gain, cost)
    top = greedy.allocate(None).cost
    budgets = np.linspace(0.0, top, config.budget_points)
    return Decision(model, value, cost, gain, allocation,
                    customer_ids(predictions, config.id_column),
                    [(budget, greedy.allocate(budget)) for budget in budgets])


def customer_ids(frame, id_column):
    """Return the customer id column, or row numbers when none is configured."""
    if id_column is None:
        return pd.Series(np.arange(len(frame)), name="row_id")
    if id_column not in frame.columns:
        raise DataError(f"decision.id_column={id_column!r} not found; the file "
                        f"has columns {list(frame.columns)}")
    return frame[id_column].reset_index(drop=True)


def decision_table(decision):
    """Return one row per customer: the chosen action and its expected value."""
    model = decision.model
    rows = np.arange(len(decision.value))
    chosen = decision.allocation.actions
    candidates = decision.gain.copy()
    candidates[:, model.control_index] = 0.0
    names = np.array(model.actions, dtype=object)
    columns = {
        decision.ids.name: decision.ids.to_numpy(),
        "action": names[chosen],
        "expected_value": decision.value[rows, chosen],
        "expected_gain": decision.gain[rows, chosen],
        "expected_cost": decision.cost[rows, chosen],
        "best_action": names[candidates.argmax(axis=1)],
    }
    for a, action in enumerate(model.actions):
        columns[f"value@{action}"] = decision.value[:, a]
    return pd.DataFrame(columns)


def evaluate(config, decision, frame, baseline=None, truth=None):
    """Return the `Evaluation` of `decision` on randomized data in `frame`.

    `baseline` is an optional T-learner predictions array [rows, actions,
    outcomes] and `truth` the true expected outcomes in the same layout,
    from a data generator.
    """
    model = decision.model
    treatment = model.treatment_indices(frame, config.treatment_column)
    realized = model.realized(model.observed_outcomes(frame), treatment)
    # NOTE: leaving out unlabelled rows is unbiased only when labels are
    # missing at random, independently of the outcome.
    keep = ~np.isnan(realized)
    if not keep.all():
        logger.info("evaluation: %d of %d rows lack a priced outcome and are "
                    "left out", int((~keep).sum()), len(keep))
    configured = None
    if config.actions[0].propensity is not None:
        configured = [a.propensity for a in config.actions]
    propensity = estimate_propensities(treatment[keep], len(model.actions),
                                       model.actions, configured)
    context = _Context(config, decision, treatment, realized, keep, propensity,
                       truth)
    policies = _baseline_policies(context, baseline)
    curves = policy_curves(decision.gain[keep], range(len(model.actions)),
                           treatment[keep], realized[keep], propensity,
                           model.control_index)
    return Evaluation(int(keep.sum()), int((~keep).sum()), propensity,
                      policies, curves, _budget_curve(context, baseline),
                      _segments(context, frame))


@dataclass
class _Context:
    """Everything the policy estimates need, computed once."""

    config: object
    decision: Decision
    treatment: np.ndarray
    realized: np.ndarray
    keep: np.ndarray
    propensity: np.ndarray
    truth: np.ndarray = None

    def __post_init__(self):
        self.true_value = None
        if self.truth is not None:
            self.true_value, self.true_cost = self.decision.model.expected(
                self.truth)

    def value(self, name, policy, rows=None):
        """Return the `PolicyValue` of an action array or probability matrix."""
        keep = self.keep if rows is None else self.keep & rows
        model = self.decision.model
        reference = np.full(int(keep.sum()), model.control_index)
        result = ipw_value(name, policy[keep], self.treatment[keep],
                           self.realized[keep], self.propensity,
                           self.config.confidence, model.actions, reference)
        result.predicted_cost = _mean_under(self.decision.cost, policy)
        if self.true_value is not None:
            result.true_value = _mean_under(self.true_value, policy)
        return result


def _mean_under(table, policy):
    """Return the mean of `table` [customers, actions] under `policy`."""
    if policy.ndim == 1:
        return float(table[np.arange(len(policy)), policy].mean())
    return float((table * policy).sum(axis=1).mean())


def _baseline_policies(context, baseline):
    decision = context.decision
    model = decision.model
    count = len(decision.value)
    chosen = decision.allocation.actions
    policies = [context.value("model", chosen),
                context.value("no one", np.full(count, model.control_index))]
    for a, action in enumerate(model.actions):
        if a != model.control_index:
            policies.append(context.value(f"everyone: {action}",
                                          np.full(count, a)))
    policies.append(context.value(
        "random, same budget",
        random_policy(chosen, decision.cost, model.control_index)))
    if baseline is not None:
        policies.append(context.value(
            "T-learner", _allocate_with(context.config, model, baseline)))
    if context.truth is not None:
        policies.append(context.value(
            "best possible", _allocate_with(context.config, model,
                                            context.truth)))
    return policies


def _allocate_with(config, model, predictions):
    """Return the allocation the config's constraints give for `predictions`."""
    value, cost = model.expected(predictions)
    return allocate(model.gain(value), cost, model.control_index, config.budget,
                    [a.capacity for a in config.actions], config.min_return,
                    config.method, config.milp_max_variables,
                    config.milp_time_limit).actions


def _greedy(config, model, gain, cost):
    """Return a `GreedyAllocator` with the config's capacities and min_return."""
    capacity = np.array([np.inf if a.capacity is None else a.capacity
                         for a in config.actions], np.float64)
    capacity[model.control_index] = np.inf
    eligible = eligible_pairs(gain, cost, model.control_index,
                              config.min_return)
    return GreedyAllocator(gain, cost, model.control_index, capacity, eligible)


def _budget_curve(context, baseline):
    """Return value against budget for the greedy allocations of the decision.

    Each row has the model's predicted gain per customer and IPW estimates
    of the gain over targeting no one, per customer: of the model's
    allocation (with its interval) and of random targeting with the same
    action shares. Where given, the T-learner's gain and the true gain
    are added.
    """
    decision = context.decision
    model = decision.model
    other = None
    if baseline is not None:
        value, cost = model.expected(baseline)
        other = _greedy(context.config, model, model.gain(value), cost)
    rows = []
    for budget, allocation in decision.budget_allocations:
        row = _budget_row(context, budget, allocation)
        if other is not None:
            row["tlearner_gain"] = context.value(
                "T-learner", other.allocate(budget).actions).gain
        rows.append(row)
    return pd.DataFrame(rows)


def _budget_row(context, budget, allocation):
    decision = context.decision
    count = len(decision.value)
    estimate = context.value("model", allocation.actions)
    shuffled = context.value("random", random_policy(
        allocation.actions, decision.cost, decision.model.control_index))
    row = {"budget": budget, "cost": allocation.cost,
           "predicted_gain": allocation.gain / count,
           "gain": estimate.gain, "low": estimate.gain_low,
           "high": estimate.gain_high, "random_gain": shuffled.gain}
    if context.true_value is not None:
        row["true_gain"] = estimate.true_value - _mean_under(
            context.true_value,
            np.full(count, decision.model.control_index))
    return row


def _segments(context, frame):
    """Return a summary table per segment column of the decisions and values."""
    decision = context.decision
    model = decision.model
    chosen = decision.allocation.actions
    tables = {}
    for column in context.config.segment_columns:
        if column not in frame.columns:
            raise DataError(f"segment column {column!r} not found; the file "
                            f"has columns {list(frame.columns)}; fix "
                            "decision.segment_columns")
        labels = frame[column].astype("string").fillna("(missing)")
        labels = labels.to_numpy(dtype=object)
        rows = []
        for label in sorted(set(labels)):
            rows.append(_segment_row(context, labels == label, label, chosen,
                                     model))
        tables[column] = pd.DataFrame(rows)
    return tables


def _segment_row(context, rows, label, chosen, model):
    control = np.full(len(chosen), model.control_index)
    gain = context.decision.gain[np.arange(len(chosen)), chosen]
    row = {"segment": label, "customers": int(rows.sum())}
    for a, action in enumerate(model.actions):
        row[f"share {action}"] = float((chosen[rows] == a).mean())
    row["predicted gain"] = float(gain[rows].mean())
    # IPW needs at least 2 evaluation rows for its interval.
    if (context.keep & rows).sum() >= 2:
        estimate = context.value("model", chosen, rows)
        row["value"] = estimate.value
        row["value, no one"] = context.value("no one", control, rows).value
        row["gain"] = estimate.gain
        row["gain low"] = estimate.gain_low
        row["gain high"] = estimate.gain_high
    return row


def _count_text(actions, counts):
    return ", ".join(f"{name}: {int(n)}" for name, n in zip(actions, counts))
