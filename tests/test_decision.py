"""Decisions: values, allocation, evaluation, the data generator and `decide`."""

import filecmp
import itertools
import os

import numpy as np
import pandas as pd
import pytest
import yaml

from ernie_marketing.cli import main
from ernie_marketing.decision import synthetic
from ernie_marketing.decision.allocate import allocate, eligible_pairs
from ernie_marketing.decision.command import run_decide
from ernie_marketing.decision.config import build_decision_config
from ernie_marketing.decision.evaluate import (
    estimate_propensities,
    ipw_value,
    qini_curve,
    random_policy,
    uplift_curve,
)
from ernie_marketing.decision.values import ValueModel
from ernie_marketing.errors import ConfigError, DataError

QUICKSTART_DECISION = os.path.join(os.path.dirname(__file__), "..", "configs",
                                   "decision", "quickstart.yaml")


def small_config(**changes):
    """Return a raw decision config: control "none", offers "a" and "b"."""
    section = {
        "treatment_column": "offer",
        "control": "none",
        "actions": [
            {"name": "none"},
            {"name": "a", "cost": 1.0},
            {"name": "b", "cost": 0.5,
             "outcome_costs": [{"outcome": "buy", "cost": 2.0}]},
        ],
        "outcomes": [{"name": "buy", "value": 0.0},
                     {"name": "spend", "value": 0.5}],
    }
    section.update(changes)
    return {"decision": section}


def quickstart_config(**changes):
    with open(QUICKSTART_DECISION, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    raw["decision"].update(changes)
    return build_decision_config(raw)


def brute_force(gain, cost, control, budget=None, capacity=None,
                min_return=0.0):
    """Return the best total gain by trying every assignment."""
    eligible = eligible_pairs(gain, cost, control, min_return)
    customers, actions = gain.shape
    best = 0.0
    for combo in itertools.product(range(actions), repeat=customers):
        combo = np.array(combo)
        chosen = combo != control
        if not eligible[np.arange(customers)[chosen], combo[chosen]].all():
            continue
        rows = np.arange(customers)
        if budget is not None and cost[rows, combo].sum() > budget + 1e-9:
            continue
        counts = np.bincount(combo, minlength=actions)
        if capacity is not None and any(
                c is not None and counts[a] > c
                for a, c in enumerate(capacity) if a != control):
            continue
        best = max(best, gain[rows, combo].sum())
    return best


def random_problem(seed, customers=6, actions=3):
    rng = np.random.default_rng(seed)
    gain = rng.normal(0.5, 1.0, (customers, actions))
    cost = rng.uniform(0.0, 2.0, (customers, actions))
    gain[:, 0] = 0.0
    cost[:, 0] = 0.0
    return gain, cost


# Values


def test_value_model_expected_by_hand():
    model = ValueModel(build_decision_config(small_config()))
    frame = pd.DataFrame({"buy@none": [0.1], "spend@none": [10.0],
                          "buy@a": [0.2], "spend@a": [20.0],
                          "buy@b": [0.3], "spend@b": [30.0]})
    value, cost = model.expected(model.read_predictions(frame))
    # none: 0.5 * 10; a: 0.5 * 20 - 1; b: 0.5 * 30 - 2 * 0.3 - 0.5
    assert value[0].tolist() == pytest.approx([5.0, 9.0, 13.9])
    assert cost[0].tolist() == pytest.approx([0.0, 1.0, 1.1])
    assert model.gain(value)[0].tolist() == pytest.approx([0.0, 4.0, 8.9])


def test_value_model_realized_uses_observed_action():
    model = ValueModel(build_decision_config(small_config()))
    frame = pd.DataFrame({"offer": ["none", "a", "b", "b"],
                          "buy": [1, 0, 1, np.nan], "spend": [10, 0, 30, 5]})
    treatment = model.treatment_indices(frame, "offer")
    realized = model.realized(model.observed_outcomes(frame), treatment)
    assert realized[:3].tolist() == pytest.approx([5.0, -1.0, 12.5])
    assert np.isnan(realized[3])


def test_missing_prediction_column_names_it():
    model = ValueModel(build_decision_config(small_config()))
    frame = pd.DataFrame({"buy@none": [0.1], "spend@none": [1.0],
                          "buy@a": [0.1], "spend@a": [1.0],
                          "buy@c": [0.1], "spend@c": [1.0]})
    with pytest.raises(DataError, match=r"\['buy@b', 'spend@b'\] not found"
                       r".*actions \['c'\] that are not in decision.actions"):
        model.read_predictions(frame)


def test_text_prediction_is_rejected():
    model = ValueModel(build_decision_config(small_config()))
    frame = pd.DataFrame({c: [0.1, 0.2] for c in model.prediction_columns})
    frame["spend@a"] = ["1.0", "lots"]
    with pytest.raises(DataError, match="'spend@a' has 1 values that are not "
                       "numbers, e.g. 'lots'"):
        model.read_predictions(frame)


def test_negative_prediction_with_cost_is_rejected():
    model = ValueModel(build_decision_config(small_config()))
    frame = pd.DataFrame({c: [0.1, 0.2] for c in model.prediction_columns})
    frame["buy@b"] = [0.1, -0.3]
    with pytest.raises(DataError, match="'buy@b' is negative on 1 rows"):
        model.expected(model.read_predictions(frame))


def test_unknown_treatment_value_is_rejected():
    model = ValueModel(build_decision_config(small_config()))
    frame = pd.DataFrame({"offer": ["none", "vip", "a"]})
    with pytest.raises(DataError, match=r"values that are not in "
                       r"decision.actions: \['vip'\] \(1 rows\)"):
        model.treatment_indices(frame, "offer")


@pytest.mark.parametrize("changes, message", [
    ({"budget": -5.0}, r"decision.budget=-5.0 is invalid"),
    ({"control": "nobody"}, r"decision.control='nobody' is invalid: expected "
     r"one of the action names"),
    ({"min_return": -1.0}, r"decision.min_return=-1.0 is invalid"),
    ({"actions": [{"name": "none", "cost": 1.0}, {"name": "a"}]},
     r"decision.control='none' is invalid: expected an action with cost 0"),
    ({"actions": [{"name": "none", "propensity": 0.5},
                  {"name": "a", "propensity": 0.2}]},
     r"propensities that sum to 1"),
    ({"actions": [{"name": "none"}, {"name": "a", "outcome_costs": [
        {"outcome": "clicks", "cost": 1.0}]}]},
     r"outcome_costs\[0\].outcome='clicks' is invalid"),
])
def test_invalid_decision_config(changes, message):
    with pytest.raises(ConfigError, match=message):
        build_decision_config(small_config(**changes))


def test_unknown_decision_key_is_rejected():
    raw = small_config()
    raw["decision"]["budjet"] = 10.0
    with pytest.raises(ConfigError, match="decision.budjet is not a known key"):
        build_decision_config(raw)


# Allocation


@pytest.mark.parametrize("seed", range(12))
def test_milp_matches_brute_force(seed):
    gain, cost = random_problem(seed)
    budget = [None, 1.0, 2.5, 4.0][seed % 4]
    capacity = [None, 1, None] if seed % 3 == 0 else None
    best = brute_force(gain, cost, 0, budget, capacity)
    result = allocate(gain, cost, 0, budget, capacity, method="milp")
    assert result.status == "optimal"
    assert result.gain == pytest.approx(best, abs=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_greedy_optimal_without_budget(seed):
    gain, cost = random_problem(seed)
    result = allocate(gain, cost, 0, method="greedy")
    assert result.gain == pytest.approx(brute_force(gain, cost, 0))
    positive = np.where(gain.max(axis=1) > 0, gain.argmax(axis=1), 0)
    assert result.actions.tolist() == positive.tolist()


@pytest.mark.parametrize("budget", [0.0, 1.0, 2.0, 3.0, 5.0])
def test_greedy_optimal_with_equal_costs(budget):
    # One offer at the same cost for everyone: the best k customers win.
    gain = np.array([[0, 3.0], [0, 1.0], [0, 2.0], [0, -1.0], [0, 0.5]])
    cost = np.array([[0, 1.0]] * 5)
    result = allocate(gain, cost, 0, budget, method="greedy")
    assert result.gain == pytest.approx(brute_force(gain, cost, 0, budget))


@pytest.mark.parametrize("seed", range(20))
def test_greedy_within_one_step_of_optimum(seed):
    gain, cost = random_problem(seed + 100)
    budget = 2.0
    best = brute_force(gain, cost, 0, budget)
    result = allocate(gain, cost, 0, budget, method="greedy")
    assert result.gain <= best + 1e-9
    assert result.gain >= best - gain.max() - 1e-9


@pytest.mark.parametrize("method", ["greedy", "milp"])
def test_allocation_respects_budget_and_capacity(method):
    rng = np.random.default_rng(7)
    gain = rng.normal(1.0, 1.0, (400, 4))
    cost = rng.uniform(0.1, 3.0, (400, 4))
    gain[:, 0] = cost[:, 0] = 0.0
    capacity = [None, 30, 200, 5]
    result = allocate(gain, cost, 0, 100.0, capacity, min_return=0.2,
                      method=method)
    rows = np.arange(400)
    counts = np.bincount(result.actions, minlength=4)
    assert cost[rows, result.actions].sum() <= 100.0 * (1 + 1e-9)
    assert counts[1] <= 30
    assert counts[3] <= 5
    chosen = result.actions != 0
    assert (gain[rows, result.actions][chosen] > 0).all()
    picked = result.actions[chosen]
    assert (gain[rows[chosen], picked] >= 0.2 * cost[rows[chosen], picked]).all()
    assert result.gain == pytest.approx(gain[rows, result.actions].sum())


def test_milp_beats_greedy_on_knapsack_trap():
    # Greedy takes the best ratio (customer 0) and cannot fit customer 1.
    gain = np.array([[0, 2.0], [0, 9.0]])
    cost = np.array([[0, 1.0], [0, 10.0]])
    greedy = allocate(gain, cost, 0, 10.0, method="greedy")
    exact = allocate(gain, cost, 0, 10.0, method="milp")
    assert greedy.gain == pytest.approx(2.0)
    assert exact.gain == pytest.approx(9.0)
    assert exact.actions.tolist() == [0, 1]


def test_free_action_with_gain_is_taken():
    gain = np.array([[0, 1.0, 3.0]])
    cost = np.array([[0, 0.0, 5.0]])
    result = allocate(gain, cost, 0, 1.0, method="greedy")
    assert result.actions.tolist() == [1]


def test_auto_uses_greedy_above_limit():
    gain, cost = random_problem(3, customers=50)
    small = allocate(gain, cost, 0, 5.0, milp_max_variables=1000)
    large = allocate(gain, cost, 0, 5.0, milp_max_variables=10)
    assert small.method == "milp"
    assert large.method == "greedy"


def test_allocate_rejects_negative_budget():
    gain, cost = random_problem(0)
    with pytest.raises(ValueError, match="budget=-1.0 is invalid"):
        allocate(gain, cost, 0, budget=-1.0)


# Evaluation


def test_ipw_interval_covers_known_value():
    # Outcome 1 with probability 0.3 + 0.2 [action 1 and x] for 4,000
    # customers: the value of "action 1 where x" is known exactly.
    rng = np.random.default_rng(0)
    x = rng.random(4000) < 0.5
    mean = {0: np.full(4000, 0.3), 1: 0.3 + 0.2 * x}
    policy = x.astype(np.int64)
    known = np.where(x, mean[1], mean[0]).mean()
    covered = 0
    for _ in range(200):
        treatment = (rng.random(4000) < 0.3).astype(np.int64)
        realized = (rng.random(4000) < np.where(treatment == 1, mean[1],
                                                mean[0])).astype(float)
        propensity = np.array([0.7, 0.3])
        estimate = ipw_value("rule", policy, treatment, realized, propensity)
        covered += estimate.low <= known <= estimate.high
    assert 0.9 <= covered / 200 <= 0.99


def test_ipw_recovers_true_value_on_generated_data():
    customers, truth = synthetic.generate(20000, seed=3)
    config = quickstart_config()
    model = ValueModel(config)
    treatment = model.treatment_indices(customers, "offer")
    realized = model.realized(model.observed_outcomes(customers), treatment)
    keep = ~np.isnan(realized)
    true_value, _ = model.expected(model.read_predictions(truth))
    # A simple rule: 满减券 for ordinary members, nothing for the others.
    policy = np.where(customers["membership"] == "普通", 1, 0)
    known = true_value[np.arange(len(policy)), policy][keep].mean()
    propensity = estimate_propensities(treatment[keep], 3, model.actions)
    estimate = ipw_value("rule", policy[keep], treatment[keep],
                         realized[keep], propensity)
    assert estimate.low <= known <= estimate.high
    assert estimate.high - estimate.low < 1.5


def test_random_policy_keeps_mix_and_budget():
    # The policy sends action 1 to the customer where it is cheap.
    cost = np.array([[0, 1.0, 2.0], [0, 3.0, 2.0], [0, 2.0, 2.0],
                     [0, 2.0, 2.0]])
    actions = np.array([1, 0, 2, 0])
    policy = random_policy(actions, cost, 0)
    assert policy.shape == (4, 3)
    # Same mix (1:1), scaled from 1/4 each to spend 3/4 per customer.
    assert policy[0].tolist() == pytest.approx([0.625, 0.1875, 0.1875])
    expected_cost = (policy * cost).sum(axis=1).mean()
    assert expected_cost == pytest.approx(cost[np.arange(4), actions].mean())


def test_random_policy_shares_stay_below_one():
    cost = np.array([[0, 5.0], [0, 0.1]])
    policy = random_policy(np.array([1, 1]), cost, 0)
    assert policy[0].tolist() == pytest.approx([0.0, 1.0])


def test_uplift_and_qini_on_constructed_case():
    # Ranked by score: t(1), c(0), t(0), c(1), with propensities 1/2.
    score = np.array([4.0, 3.0, 2.0, 1.0])
    treated = np.array([True, False, True, False])
    control = ~treated
    realized = np.array([1.0, 0.0, 0.0, 1.0])
    uplift = uplift_curve(score, treated, control, realized, 0.5, 0.5)
    assert uplift.fraction.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    # Contributions 2, 0, 0, -2, over n = 4.
    assert uplift.value.tolist() == pytest.approx([0, 0.5, 0.5, 0.5, 0.0])
    assert uplift.area == pytest.approx(0.375)
    assert uplift.random_area == pytest.approx(0.0)
    qini = qini_curve(score, treated, control, realized)
    # Y_T - Y_C * N_T / N_C, over N_T(n) = 2.
    assert qini.value.tolist() == pytest.approx([0, 0.5, 0.5, 0.5, 0.0])


def test_curves_merge_tied_scores():
    score = np.array([1.0, 1.0, 0.0])
    treated = np.array([True, False, True])
    curve = uplift_curve(score, treated, ~treated, np.ones(3), 0.5, 0.5)
    assert curve.fraction.tolist() == pytest.approx([0, 2 / 3, 1])


def test_missing_action_in_data_is_rejected():
    with pytest.raises(DataError, match=r"no customer .* got the actions "
                       r"\['b'\]"):
        estimate_propensities(np.array([0, 1, 0]), 3, ["none", "a", "b"])


# Data generator


def test_generator_same_seed_same_bytes(tmp_path):
    first = synthetic.write_dataset(tmp_path / "one", rows=1500, seed=5)
    second = synthetic.write_dataset(tmp_path / "two", rows=1500, seed=5)
    for name in first:
        assert filecmp.cmp(first[name], second[name], shallow=False), name


def test_generator_other_seed_other_data(tmp_path):
    first = synthetic.write_dataset(tmp_path / "one", rows=1500, seed=5)
    second = synthetic.write_dataset(tmp_path / "two", rows=1500, seed=6)
    assert not filecmp.cmp(first["train"], second["train"], shallow=False)


def test_generated_data_is_consistent():
    customers, truth = synthetic.generate(12000, seed=0)
    assert len(customers) == len(truth) == 12000
    lengths = customers["text"].str.len()
    assert lengths.min() >= 20
    assert lengths.max() <= 60
    shares = customers["offer"].value_counts(normalize=True)
    for action, share in zip(synthetic.ACTIONS, synthetic.ACTION_SHARES):
        assert abs(shares[action] - share) < 0.02
    bought = customers["conversion"] == 1
    assert (customers.loc[bought, "click"].fillna(1) == 1).all()
    labelled = customers["spend"].notna() & customers["conversion"].notna()
    assert ((customers["spend"] > 0)[labelled]
            == (customers["conversion"] == 1)[labelled]).all()
    for column in synthetic.OUTCOMES:
        assert 0 < customers[column].isna().mean() < 0.06
    for action in synthetic.ACTIONS:
        assert (truth[f"conversion@{action}"]
                <= truth[f"click@{action}"]).all()


def test_generated_effects_differ_by_customer():
    _, truth = synthetic.generate(5000, seed=1)
    model = ValueModel(quickstart_config())
    value, _ = model.expected(model.read_predictions(truth))
    gain = model.gain(value)
    # Each coupon helps some customers and hurts others.
    for a in (1, 2):
        assert 0.1 < (gain[:, a] > 0).mean() < 0.9
    assert len(set(gain.argmax(axis=1))) == 3


# decide


def test_decide_with_true_outcomes_finds_best_policy(tmp_path):
    customers, truth = synthetic.generate(2000, seed=2)
    predictions = customers.merge(truth, on="customer_id")
    config = quickstart_config(budget=300.0)
    output = tmp_path / "decisions.csv"
    summary = run_decide(config, predictions, str(output),
                         str(tmp_path / "report"), truth=truth)
    policies = {p["policy"]: p for p in summary["policies"]}
    assert summary["method"] == "milp"
    assert summary["expected_cost"] <= 300.0 + 1e-6
    assert policies["model"]["true_value"] == pytest.approx(
        policies["best possible"]["true_value"])
    assert (policies["model"]["true_value"]
            > policies["random, same budget"]["true_value"])
    decisions = pd.read_csv(output)
    assert list(decisions.columns[:6]) == ["customer_id", "action",
                                           "expected_value", "expected_gain",
                                           "expected_cost", "best_action"]
    assert (decisions["action"].value_counts().get("满减券", 0)
            <= config.action("满减券").capacity)
    report = tmp_path / "report"
    assert (report / "index.html").is_file()
    for name in ("uplift.png", "qini.png", "budget.png", "segments_0.png"):
        assert (report / name).stat().st_size > 1000, name


def test_decide_without_treatment_writes_decisions_only(tmp_path):
    customers, truth = synthetic.generate(300, seed=4)
    summary = run_decide(quickstart_config(), truth, str(tmp_path / "d.csv"),
                         str(tmp_path / "report"))
    assert "policies" not in summary
    assert (tmp_path / "report" / "budget.png").is_file()


def test_report_refuses_unrelated_folder(tmp_path):
    _, truth = synthetic.generate(300, seed=4)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not an earlier report"):
        run_decide(quickstart_config(), truth, str(tmp_path / "d.csv"),
                   str(folder))
    assert (folder / "notes.txt").read_text() == "keep me"


# Command line


@pytest.fixture
def decide_files(tmp_path):
    customers, truth = synthetic.generate(400, seed=8)
    predictions = customers.merge(truth, on="customer_id")
    path = tmp_path / "predictions.csv"
    predictions.to_csv(path, index=False)
    return tmp_path, path, predictions


def run_cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_decide_writes_files(decide_files, capsys):
    folder, path, _ = decide_files
    code, out, err = run_cli(["decide", "-c", QUICKSTART_DECISION,
                              "--predictions", str(path), "--output",
                              str(folder / "out.csv"), "--budget", "50"],
                             capsys)
    assert code == 0, err
    assert '"expected_cost"' in out
    assert (folder / "out.csv").is_file()
    assert (folder / "report" / "index.html").is_file()


@pytest.mark.parametrize("change, message", [
    ("drop", "prediction columns ['click@满减券', 'conversion@满减券', "
     "'spend@满减券'] not found"),
    ("unknown", "values that are not in decision.actions: ['VIP券']"),
    ("budget", "decision.budget=-10.0 is invalid: expected a budget >= 0"),
])
def test_cli_decide_errors_in_one_line(decide_files, capsys, change, message):
    folder, path, predictions = decide_files
    argv = ["decide", "-c", QUICKSTART_DECISION, "--predictions", str(path),
            "--output", str(folder / "out.csv")]
    if change == "drop":
        predictions.drop(columns=[c for c in predictions.columns
                                  if c.endswith("@满减券")]).to_csv(
            path, index=False)
    elif change == "unknown":
        predictions.loc[3, "offer"] = "VIP券"
        predictions.to_csv(path, index=False)
    else:
        argv += ["--budget", "-10"]
    code, out, err = run_cli(argv, capsys)
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith("error: ")
    assert message in err
    assert not (folder / "out.csv").exists()
