"""Offline evaluation of decisions on data with randomized actions.

In a randomized campaign customer i got action T_i with a known chance
e(T_i), the propensity. The value of any policy pi (an action, or a
distribution over actions, per customer) is then estimated without a model
by inverse propensity weighting (IPW, Horvitz-Thompson):

    V(pi) = 1/n sum_i pi(T_i | i) / e(T_i) * R_i

where R_i is the customer's realized net value under T_i (outcome values
minus action costs, see `ValueModel.realized`). It is unbiased when the
propensities are right. The confidence interval is the normal
approximation: mean +- z * sd(terms) / sqrt(n), with z from the standard
normal for the requested level.

Uplift curves rank customers by a score (a model's predicted gain) and
show what treating the top fraction would add:

- `uplift_curve` (cumulative gain): U(k) = 1/n sum over the top k of
  1{T = a} R / e(a) - 1{T = control} R / e(control), the IPW estimate of
  the value added per customer of the whole population by giving the top k
  their action a instead of the control. AUUC is its area over the
  fraction targeted (0 to 1); a random ranking gives U(1) / 2.
- `qini_curve` (Radcliffe): Q(k) = (Y_T(k) - Y_C(k) N_T(k) / N_C(k)) /
  N_T(n), with Y and N the outcome sums and row counts of treated and
  control rows in the top k. The Qini coefficient is its area minus the
  area under the straight line to Q(1).

Tied scores are ranked as one block: the curves have a point only where
the score changes.
"""

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import norm

from ..errors import DataError

logger = logging.getLogger(__name__)


@dataclass
class PolicyValue:
    """The IPW estimate of one policy's value per customer, with its interval."""

    name: str
    value: float
    low: float
    high: float
    std_error: float
    # Value minus the reference policy's value (targeting no one), with the
    # interval of the difference on the same rows.
    gain: float = float("nan")
    gain_low: float = float("nan")
    gain_high: float = float("nan")
    # Share of customers per action under the policy, by action name.
    shares: dict = field(default_factory=dict)
    # Expected cost per customer as the model predicts it, where known.
    predicted_cost: float = float("nan")
    # Value per customer from the generator's true expected outcomes.
    true_value: float = float("nan")

    def as_dict(self):
        return {"policy": self.name, "value": self.value, "low": self.low,
                "high": self.high, "std_error": self.std_error,
                "gain": self.gain, "gain_low": self.gain_low,
                "gain_high": self.gain_high,
                "predicted_cost": self.predicted_cost,
                "true_value": self.true_value, "shares": self.shares}


@dataclass
class Curve:
    """An uplift or Qini curve: value at each fraction of customers targeted."""

    fraction: np.ndarray
    value: np.ndarray

    @property
    def area(self):
        """Area under the curve over the fraction targeted, 0 to 1."""
        # The trapezoid rule, written out: numpy < 2 has no np.trapezoid.
        steps = np.diff(self.fraction)
        return float(np.sum(steps * (self.value[1:] + self.value[:-1]) / 2))

    @property
    def random_area(self):
        """Area under the straight line from 0 to the curve's last point."""
        return float(self.value[-1] / 2) if len(self.value) else 0.0


def estimate_propensities(treatment, num_actions, names, configured=None):
    """Return each action's assignment share [actions].

    `configured` (one share per action, or None) is returned as is, after a
    warning when it differs from the data by more than 0.02. Without it the
    shares are estimated from `treatment`.
    """
    counts = np.bincount(treatment, minlength=num_actions)
    empty = [names[a] for a in np.flatnonzero(counts == 0)]
    if empty:
        raise DataError(f"no customer in the evaluation data got the actions "
                        f"{empty}, so a policy that uses them cannot be "
                        "evaluated; evaluate on randomized data that has "
                        "every action")
    observed = counts / counts.sum()
    if configured is None:
        return observed
    configured = np.asarray(configured, np.float64)
    gap = np.abs(configured - observed).max()
    if gap > 0.02:
        logger.warning("the configured propensities %s differ from the "
                       "shares in the data %s by up to %.3f; check that the "
                       "data is the randomized campaign", configured.round(4),
                       observed.round(4), gap)
    return configured


def ipw_value(name, policy, treatment, realized, propensity, confidence=0.95,
              names=None, reference=None):
    """Return the `PolicyValue` of `policy` by inverse propensity weighting.

    `policy` is an action index per customer, or [customers, actions]
    probabilities for a random policy. With a `reference` policy, the
    result also has the gain over it, with the interval of the per-row
    differences. Rows with a NaN `realized` value must be removed by the
    caller.
    """
    policy = np.asarray(policy)
    terms = _ipw_terms(policy, treatment, realized, propensity)
    value, std_error = _mean_and_error(terms)
    z = norm.ppf(0.5 + confidence / 2)
    if policy.ndim == 1:
        shares = np.bincount(policy, minlength=len(propensity)) / len(policy)
    else:
        shares = policy.mean(axis=0)
    names = names or [str(a) for a in range(len(propensity))]
    result = PolicyValue(name, value, value - z * std_error,
                         value + z * std_error, std_error,
                         shares={names[a]: float(s)
                                 for a, s in enumerate(shares)})
    if reference is not None:
        gains = terms - _ipw_terms(np.asarray(reference), treatment, realized,
                                   propensity)
        gain, gain_error = _mean_and_error(gains)
        result.gain = gain
        result.gain_low = gain - z * gain_error
        result.gain_high = gain + z * gain_error
    return result


def _ipw_terms(policy, treatment, realized, propensity):
    """Return each row's term pi(T_i | i) / e(T_i) * R_i of the IPW mean."""
    if policy.ndim == 1:
        match = (policy == treatment).astype(np.float64)
    else:
        match = policy[np.arange(len(treatment)), treatment]
    return match / propensity[treatment] * realized


def _mean_and_error(terms):
    if len(terms) < 2:
        raise DataError(f"{len(terms)} evaluation rows cannot give a "
                        "confidence interval; evaluate on at least 2 rows")
    return float(terms.mean()), float(terms.std(ddof=1) / np.sqrt(len(terms)))


def random_policy(actions, cost, control):
    """Return random targeting [customers, actions] at the budget of `actions`.

    Every customer gets action a with a probability proportional to the
    share of customers that `actions` gives it. The shares of the
    non-control actions are scaled by one factor so that the expected cost
    by `cost` [customers, actions] equals the cost of `actions`, capped so
    that they sum to at most 1. The control action gets the rest.
    """
    count, num_actions = cost.shape
    shares = np.bincount(actions, minlength=num_actions) / count
    shares[control] = 0.0
    spent = cost[np.arange(count), actions].mean()
    random_cost = (shares * cost.mean(axis=0)).sum()
    if random_cost > 0:
        shares *= min(spent / random_cost, 1.0 / max(shares.sum(), 1e-12))
    shares[control] = 1.0 - shares.sum()
    return np.tile(shares, (count, 1))


def uplift_curve(score, treated, control, realized, treated_propensity,
                 control_propensity):
    """Return the IPW cumulative gain `Curve` of ranking by `score`.

    `treated` marks rows that got the action being scored (for a policy,
    the action it recommends for that row), and `control` marks rows that
    got the control action. `treated_propensity` is the propensity of each
    row's scored action.
    """
    contribution = np.where(treated, realized / treated_propensity, 0.0)
    contribution -= np.where(control, realized / control_propensity, 0.0)
    order, ends = _ranking(score)
    cumulative = np.cumsum(contribution[order])[ends] / len(score)
    return _curve(ends, cumulative, len(score))


def qini_curve(score, treated, control, realized):
    """Return the Qini `Curve` of ranking by `score` (see the module doc)."""
    order, ends = _ranking(score)
    n_treated = np.cumsum(treated[order])[ends]
    n_control = np.cumsum(control[order])[ends]
    y_treated = np.cumsum(np.where(treated, realized, 0.0)[order])[ends]
    y_control = np.cumsum(np.where(control, realized, 0.0)[order])[ends]
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.where(n_control > 0, y_control * n_treated / n_control, 0.0)
    total_treated = max(int(treated.sum()), 1)
    return _curve(ends, (y_treated - scaled) / total_treated, len(score))


def _ranking(score):
    """Return the order by falling score and the last index of each tie block."""
    score = np.asarray(score, np.float64)
    order = np.argsort(-score, kind="stable")
    ranked = score[order]
    ends = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))
    return order, ends


def _curve(ends, values, total):
    fraction = np.concatenate([[0.0], (ends + 1) / total])
    return Curve(fraction, np.concatenate([[0.0], values]))


def policy_curves(gain, actions, treatment, realized, propensity, control):
    """Return the uplift and Qini curves of the model's recommendations.

    Each customer's recommendation is the non-control action of largest
    predicted gain, and the score is that gain. Returns
    {"policy": (uplift, qini), action index: (uplift, qini), ...} where
    each action's curves rank by that action's predicted gain.
    """
    candidates = np.where(np.arange(gain.shape[1]) == control, -np.inf, gain)
    recommended = candidates.argmax(axis=1)
    score = candidates.max(axis=1)
    is_control = treatment == control
    treated = treatment == recommended
    curves = {"policy": (
        uplift_curve(score, treated, is_control, realized,
                     propensity[recommended], propensity[control]),
        qini_curve(score, treated, is_control, realized))}
    for a in actions:
        if a == control:
            continue
        treated = treatment == a
        curves[a] = (
            uplift_curve(gain[:, a], treated, is_control, realized,
                         propensity[a], propensity[control]),
            qini_curve(gain[:, a], treated, is_control, realized))
    return curves
