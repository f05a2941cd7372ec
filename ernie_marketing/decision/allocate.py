"""Choose at most one action per customer under a budget and capacities.

The problem: pick x[i, a] in {0, 1} to maximise sum gain[i, a] x[i, a]
subject to
  - each customer gets at most one non-control action (the control action,
    with gain 0 and cost 0, is what everyone else gets),
  - sum cost[i, a] x[i, a] <= budget,
  - sum_i x[i, a] <= capacity[a] for each action,
  - x[i, a] = 0 unless gain[i, a] > 0 and gain[i, a] >= min_return x
    cost[i, a] (the pair is "eligible").

`allocate` solves it exactly as an integer program with
`scipy.optimize.milp` (HiGHS) when there are at most `milp_max_variables`
eligible pairs, and greedily otherwise. The greedy method is the classic
one for the multiple-choice knapsack. Each customer's eligible actions are
reduced to the upper concave hull of (cost, gain) starting at the control
action. A step along a hull moves a customer to a dearer action with more
gain, and the steps of all customers are taken in order of extra gain per
extra cost while the budget and capacities allow. Without capacities this is
within one step's gain of the optimum. A second pass then offers every
customer their eligible actions, best ratio first, and moves them where
that gains more and still fits, to use budget or capacity the first pass
left over.
"""

import contextlib
import logging
import os
import sys
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_array, vstack

logger = logging.getLogger(__name__)

METHODS = ("auto", "greedy", "milp")
# Default limit on eligible customer x action pairs for the exact method.
# With scipy 1.17 (HiGHS) on a shared 2-core AMD EPYC, random problems with
# a binding budget took 0.2 s at 1,150 pairs, 1.1 s at 2,900 and 4 s at
# 5,800. The time grows about with the square of the size (11,600 pairs:
# 19 s).
MILP_MAX_VARIABLES = 5000
# Relative slack on the budget, so rounding in sums does not drop a pair
# that fits exactly.
_BUDGET_TOLERANCE = 1e-9


@dataclass
class Allocation:
    """The chosen action of each customer and the totals it implies."""

    actions: np.ndarray  # int64 [customers]: index of each customer's action
    method: str  # "greedy" or "milp"
    status: str  # "optimal", "greedy", or why the integer program stopped
    gain: float  # total expected gain over the control action
    cost: float  # total expected cost

    def counts(self, num_actions):
        """Return the number of customers per action index."""
        return np.bincount(self.actions, minlength=num_actions)


def allocate(gain, cost, control, budget=None, capacity=None, min_return=0.0,
             method="auto", milp_max_variables=MILP_MAX_VARIABLES,
             time_limit=30.0):
    """Return the `Allocation` that maximises total gain under the constraints.

    `gain` and `cost` are [customers, actions] with gain 0 and cost 0 in
    column `control`. `budget` None means no budget; `capacity` is a
    sequence with the most customers per action (None or inf for no limit).
    """
    gain, cost, capacity = _check_inputs(gain, cost, control, budget, capacity,
                                         method)
    eligible = eligible_pairs(gain, cost, control, min_return)
    num_pairs = int(eligible.sum())
    if method == "auto":
        method = "milp" if num_pairs <= milp_max_variables else "greedy"
    greedy = GreedyAllocator(gain, cost, control, capacity, eligible)
    if method == "greedy":
        return greedy.allocate(budget)
    result = solve_milp(gain, cost, control, budget, capacity, eligible,
                        time_limit)
    if result.status != "optimal":
        fallback = greedy.allocate(budget)
        if result.gain < fallback.gain:
            logger.warning("the integer program stopped (%s) with gain %.4g, "
                           "below the greedy gain %.4g; keeping the greedy "
                           "allocation", result.status, result.gain,
                           fallback.gain)
            return fallback
    return result


def eligible_pairs(gain, cost, control, min_return=0.0):
    """Return a bool mask [customers, actions] of pairs that may be chosen."""
    eligible = (gain > 0) & (gain >= min_return * cost)
    eligible[:, control] = False
    return eligible


def _check_inputs(gain, cost, control, budget, capacity, method):
    gain = np.asarray(gain, np.float64)
    cost = np.asarray(cost, np.float64)
    if gain.ndim != 2 or gain.shape != cost.shape:
        raise ValueError(f"gain {gain.shape} and cost {cost.shape} must both "
                         "be [customers, actions]")
    if not (np.isfinite(gain).all() and np.isfinite(cost).all()):
        raise ValueError("gain and cost must be finite")
    if (cost < 0).any():
        raise ValueError(f"cost must be >= 0, but its minimum is {cost.min()}")
    if not 0 <= control < gain.shape[1]:
        raise ValueError(f"control={control} is not an action index "
                         f"0-{gain.shape[1] - 1}")
    if budget is not None and not budget >= 0:
        raise ValueError(f"budget={budget} is invalid: expected a number >= 0 "
                         "or None")
    if method not in METHODS:
        raise ValueError(f"method={method!r} is invalid: allowed values are "
                         f"{', '.join(METHODS)}")
    if capacity is None:
        capacity = [None] * gain.shape[1]
    capacity = np.array([np.inf if c is None else c for c in capacity],
                        np.float64)
    if capacity.shape != (gain.shape[1],) or (capacity < 0).any():
        raise ValueError(f"capacity {capacity.tolist()} must have one limit "
                         f">= 0 (or None) per action")
    capacity[control] = np.inf
    return gain, cost, capacity


def _totals(gain, cost, actions):
    rows = np.arange(len(actions))
    return float(gain[rows, actions].sum()), float(cost[rows, actions].sum())


class GreedyAllocator:
    """Greedy allocation that prepares the hull steps once for many budgets."""

    def __init__(self, gain, cost, control, capacity, eligible):
        self.gain = gain
        self.cost = cost
        self.control = control
        self.capacity = capacity
        self.eligible = eligible
        self._steps = _hull_steps(gain, cost, control, eligible)
        self._fallback = _fallback_order(gain, cost, eligible)

    def allocate(self, budget=None):
        """Return the greedy `Allocation` for `budget` (None: no budget)."""
        limit = np.inf if budget is None else budget * (1 + _BUDGET_TOLERANCE)
        state = State(len(self.gain), self.capacity, self.control, limit)
        for i, source, target, extra_cost in self._steps:
            if state.actions[i] != source:
                continue  # an earlier step of this customer was skipped
            if state.fits(target, extra_cost):
                state.move(i, source, target, extra_cost)
        # Second pass: offer every customer their eligible actions, best
        # ratio first, and move them when that gains more and still fits.
        # This uses budget or capacity the hull steps left over, e.g. for
        # customers whose best action was full.
        for i, target in self._fallback:
            source = state.actions[i]
            if self.gain[i, target] <= self.gain[i, source]:
                continue
            extra_cost = self.cost[i, target] - self.cost[i, source]
            if state.fits(target, extra_cost):
                state.move(i, source, target, extra_cost)
        total_gain, total_cost = _totals(self.gain, self.cost, state.actions)
        return Allocation(state.actions, "greedy", "greedy", total_gain,
                          total_cost)


class State:
    """Actions, spending and per-action counts while the greedy pass runs."""

    def __init__(self, num_customers, capacity, control, limit):
        self.actions = np.full(num_customers, control, np.int64)
        self.counts = np.zeros(len(capacity))
        self.capacity = capacity
        self.control = control
        self.limit = limit
        self.spent = 0.0

    def fits(self, target, extra_cost):
        return (self.spent + extra_cost <= self.limit
                and self.counts[target] + 1 <= self.capacity[target])

    def move(self, i, source, target, extra_cost):
        if source != self.control:
            self.counts[source] -= 1
        self.counts[target] += 1
        self.spent += extra_cost
        self.actions[i] = target


def _hull_steps(gain, cost, control, eligible):
    """Return the hull steps (customer, from, to, extra cost), best ratio first."""
    steps = []
    for i in np.flatnonzero(eligible.any(axis=1)):
        actions = np.flatnonzero(eligible[i])
        points = [(0.0, 0.0, control)] + sorted(
            ((cost[i, a], gain[i, a], a) for a in actions),
            key=lambda p: (p[0], -p[1]))
        hull = _upper_hull(points)
        for order, (start, end) in enumerate(zip(hull, hull[1:])):
            extra_cost = end[0] - start[0]
            extra_gain = end[1] - start[1]
            ratio = np.inf if extra_cost <= 0 else extra_gain / extra_cost
            steps.append((-ratio, i, order, start[2], end[2], extra_cost))
    steps.sort(key=lambda s: (s[0], s[1], s[2]))
    return [(i, source, target, extra_cost)
            for _, i, _, source, target, extra_cost in steps]


def _upper_hull(points):
    """Return the points on the upper concave hull, by increasing cost.

    `points` start with the control point (0, 0) and are sorted by cost,
    then by falling gain. A point that costs more without gaining more is
    dropped, as is one below the line between its neighbours.
    """
    hull = [points[0]]
    for point in points[1:]:
        if point[1] <= hull[-1][1]:
            continue  # costs at least as much for no more gain
        # A free action with a gain makes a vertical first step of slope
        # inf, which is never removed.
        while len(hull) >= 2 and _slope(hull[-2], hull[-1]) <= _slope(hull[-1],
                                                                       point):
            hull.pop()
        hull.append(point)
    return hull


def _slope(start, end):
    extra_cost = end[0] - start[0]
    return np.inf if extra_cost <= 0 else (end[1] - start[1]) / extra_cost


def _fallback_order(gain, cost, eligible):
    rows, cols = np.nonzero(eligible)
    with np.errstate(divide="ignore"):
        ratio = np.where(cost[rows, cols] > 0,
                         gain[rows, cols] / np.maximum(cost[rows, cols], 1e-300),
                         np.inf)
    order = np.lexsort((cols, rows, -ratio))
    return list(zip(rows[order].tolist(), cols[order].tolist()))


def solve_milp(gain, cost, control, budget, capacity, eligible, time_limit=30.0):
    """Return the optimal `Allocation` from `scipy.optimize.milp`.

    Only eligible pairs become variables. When the time limit stops the
    solver, the best solution found so far is returned with its status.
    """
    rows, cols = np.nonzero(eligible)
    actions = np.full(len(gain), control, np.int64)
    if len(rows) == 0:
        return Allocation(actions, "milp", "optimal", 0.0, 0.0)
    constraints = _milp_constraints(rows, cols, cost, budget, capacity)
    with _native_stdout_silenced():
        result = milp(-gain[rows, cols], integrality=np.ones(len(rows)),
                      bounds=Bounds(0, 1), constraints=constraints,
                      options={"time_limit": float(time_limit),
                               "disp": False})
    if result.x is None:
        logger.warning("the integer program found no solution: %s",
                       result.message)
        return Allocation(actions, "milp", f"failed: {result.message}", 0.0,
                          0.0)
    chosen = result.x > 0.5
    actions[rows[chosen]] = cols[chosen]
    status = "optimal" if result.status == 0 else f"stopped: {result.message}"
    total_gain, total_cost = _totals(gain, cost, actions)
    return Allocation(actions, "milp", status, total_gain, total_cost)


@contextlib.contextmanager
def _native_stdout_silenced():
    """Send file descriptor 1 to /dev/null while the block runs.

    HiGHS in scipy 1.17 prints debug lines such as
    "HighsMipSolverData::transformNewIntegerFeasibleSolution" from C++
    even with disp=False, which would mix into a command's JSON output.
    """
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no usable stdout: nothing to protect
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _milp_constraints(rows, cols, cost, budget, capacity):
    num_vars = len(rows)
    variables = np.arange(num_vars)
    # One row per customer: at most one action.
    customers, customer_row = np.unique(rows, return_inverse=True)
    matrices = [csr_array((np.ones(num_vars), (customer_row, variables)),
                          shape=(len(customers), num_vars))]
    upper = [np.ones(len(customers))]
    if budget is not None:
        matrices.append(csr_array(cost[rows, cols][None, :]))
        upper.append(np.array([budget * (1 + _BUDGET_TOLERANCE)]))
    limited = [a for a in np.unique(cols) if np.isfinite(capacity[a])]
    if limited:
        action_row = {a: k for k, a in enumerate(limited)}
        keep = np.isin(cols, limited)
        matrices.append(csr_array(
            (np.ones(int(keep.sum())),
             ([action_row[a] for a in cols[keep]], variables[keep])),
            shape=(len(limited), num_vars)))
        upper.append(capacity[limited])
    matrix = vstack(matrices, format="csr")
    return LinearConstraint(matrix, -np.inf, np.concatenate(upper))
