"""The multi-task benchmark's Delta-m: average relative gain over single-task."""

import importlib.util
import os

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     "benchmarks", "bench_multitask.py")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_multitask", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def metrics(visit, spend):
    return {"test": {"visit": {"roc_auc": visit}, "spend": {"gini": spend}}}


def test_delta_m_relative_gain(bench):
    base = {"tasks": [{"name": "visit", "type": "binary"},
                      {"name": "spend", "type": "zero_inflated"}]}
    results = {
        "d/single-visit/seed0": metrics(0.60, None),
        "d/single-visit/seed1": metrics(0.70, None),
        "d/single-spend/seed0": metrics(None, 0.20),
        "d/single-spend/seed1": metrics(None, 0.20),
        # Visit +10% over 0.65, spend -50% over 0.20: Delta-m -20%.
        "d/hard-fixed/seed0": metrics(0.715, 0.10),
        # Visit 0%, spend +50%: Delta-m +25%.
        "d/hard-fixed/seed1": metrics(0.65, 0.30),
    }
    header, rows = bench.summarise("d", base, results)
    assert header == ["dataset", "model", "visit roc_auc", "spend gini",
                      "Delta-m"]
    assert rows[0][:3] == ["d", "single-task models", "0.6500 ± 0.0707 (n=2)"]
    hard = rows[1]
    assert hard[1] == "hard-fixed"
    assert hard[4].startswith("2.50% ± 31.82%")


def test_plan_single_task_weights(bench, tmp_path):
    args = bench.parse_args(["--seeds", "3", "--sharing", "mmoe",
                             "--weightings", "dwa", "--max-steps", "5"])
    dataset, _, runs = bench.plan_runs(
        os.path.join(os.path.dirname(BENCH), "..", "configs",
                     "hillstrom.yaml"), args)
    names = [name for name, _, _ in runs]
    assert dataset == "hillstrom"
    assert names == ["hillstrom/single-visit/seed3",
                     "hillstrom/single-conversion/seed3",
                     "hillstrom/single-spend/seed3",
                     "hillstrom/mmoe-dwa/seed3"]
    conversion = runs[1][1]
    # Every task stays, so the split is the multi-task runs' split.
    assert [t["name"] for t in conversion["tasks"]] == ["visit", "conversion",
                                                        "spend"]
    assert [t["weight"] for t in conversion["tasks"]] == [0.0, 1.0, 0.0]
    assert "parent" not in conversion["tasks"][1]
    assert conversion["train"]["max_steps"] == 5
    assert conversion["train"]["metric"] == "conversion.roc_auc"
    assert runs[3][1]["train"]["metric"] == "mean"
    assert runs[3][1]["model"]["sharing"] == {"type": "mmoe"}
    assert runs[3][1]["train"]["loss_weighting"] == {"method": "dwa"}
    # DWA gets logging windows short enough to update within the budget.
    assert runs[3][1]["train"]["logging_steps"] == 1
    assert conversion["train"]["logging_steps"] == 50


@pytest.mark.parametrize("argv, message", [
    (["--seeds", ""], "--seeds is empty"),
    (["--seeds", "a"], "--seeds='a' is invalid"),
    (["--sharing", "foo"], "--sharing='foo' is invalid"),
    (["--weightings", "mgda"], "--weightings='mgda' is invalid"),
    (["--jobs", "0"], "--jobs=0 is invalid"),
    (["--configs", "missing.yaml"], "missing.yaml"),
    (["--max-steps", "0"], "train.max_steps=0"),
])
def test_bad_options_exit_with_one_line(bench, argv, message):
    with pytest.raises(SystemExit) as info:
        bench.check_plans(bench.parse_args(argv))
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_changed_budget_trains_again(bench, tmp_path, monkeypatch):
    """A finished run is reused only when its saved config is the request."""
    trained = []

    def fake_run(command, **kwargs):
        config_path = command[-1]
        run_dir = config_path[:-len(".yaml")]
        os.makedirs(run_dir, exist_ok=True)
        with open(os.path.join(run_dir, "metrics.json"), "w") as f:
            f.write('{"test": {}}')
        trained.append(config_path)
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    raw = {"train": {"max_steps": 2}}
    bench.run_one("d/hard-fixed/seed0", raw, str(tmp_path))
    bench.run_one("d/hard-fixed/seed0", raw, str(tmp_path))
    assert len(trained) == 1
    bench.run_one("d/hard-fixed/seed0", {"train": {"max_steps": 50}},
                  str(tmp_path))
    assert len(trained) == 2
