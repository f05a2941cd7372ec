"""Loss weighting methods and the guard against non-finite task losses."""

import math
import os

import numpy as np
import paddle
import pytest
from conftest import scalars, tiny_config

from ernie_marketing.config import build_config
from ernie_marketing.engine.checkpoint import load_checkpoint, read_json
from ernie_marketing.engine.trainer import train
from ernie_marketing.errors import ConfigError, UserError
from ernie_marketing.weighting import (
    WEIGHTING_METHODS,
    DynamicWeightAverage,
    GradNorm,
    PCGrad,
    UncertaintyWeighting,
    dwa_weights,
    project_conflicting,
)

NAMES = ["clean", "noisy"]


# Each method inside a real training run -----------------------------------


@pytest.mark.parametrize("method", WEIGHTING_METHODS)
def test_training_logs_finite_weights(reviews_csv, tmp_path, method):
    raw = tiny_config(reviews_csv, tmp_path / "run",
                      train={"loss_weighting": {"method": method},
                             "max_steps": 6, "eval_steps": 6})
    result = train(build_config(raw))
    assert math.isfinite(result["selection_value"])
    logged = scalars(tmp_path / "run")
    for task in ("category", "sentiment"):
        weights = [value for _, value in logged[f"train/weight/{task}"]]
        assert [step for step, _ in logged[f"train/weight/{task}"]] == [2, 4, 6]
        assert all(math.isfinite(w) and w > 0 for w in weights)
        # Raw per-task losses stay logged apart from the weighted total.
        assert len(logged[f"train/loss/{task}"]) == 3
    assert len(logged["train/loss/total"]) == 3


def test_loss_weighting_config_rejects_bad_values(reviews_csv, tmp_path):
    raw = tiny_config(reviews_csv, tmp_path / "run",
                      train={"loss_weighting": {"method": "dwa",
                                                "temperature": 0}})
    with pytest.raises(ConfigError, match="train.loss_weighting.temperature"):
        build_config(raw)
    raw["train"]["loss_weighting"] = {"method": "mgda"}
    with pytest.raises(ConfigError, match="train.loss_weighting.method"):
        build_config(raw)


# Uncertainty weighting ------------------------------------------------------


def test_uncertainty_lowers_noisy_task_weight():
    # Two regression tasks read one shared layer; the noisy task's targets
    # have 20 times the noise of the clean task's.
    paddle.seed(0)
    rng = np.random.default_rng(0)
    shared = paddle.nn.Linear(4, 8)
    heads = [paddle.nn.Linear(8, 1), paddle.nn.Linear(8, 1)]
    weighting = UncertaintyWeighting(NAMES, [1.0, 1.0])
    parameters = (shared.parameters() + heads[0].parameters()
                  + heads[1].parameters() + weighting.parameters())
    optimizer = paddle.optimizer.Adam(learning_rate=0.05,
                                      parameters=parameters)
    true_weights = rng.normal(size=(4,)).astype("float32")
    for _ in range(300):
        inputs = rng.normal(size=(64, 4)).astype("float32")
        signal = inputs @ true_weights
        targets = [signal + rng.normal(scale=scale, size=64).astype("float32")
                   for scale in (0.1, 2.0)]
        features = paddle.nn.functional.relu(shared(paddle.to_tensor(inputs)))
        losses = [((head(features)[:, 0] - paddle.to_tensor(t)) ** 2).mean()
                  for head, t in zip(heads, targets)]
        total = weighting.total_loss(losses)
        weighting.backward(total, losses, [])
        optimizer.step()
        optimizer.clear_grad()
    weights = weighting.weights()
    assert all(math.isfinite(w) for w in weights.values())
    assert weights["noisy"] < weights["clean"] / 10


# Dynamic weight average -----------------------------------------------------


def test_dwa_raises_slow_task_weight():
    weighting = DynamicWeightAverage(NAMES, [1.0, 1.0])
    assert weighting.weights() == {"clean": 1.0, "noisy": 1.0}
    weighting.end_window([1.0, 1.0])
    assert weighting.weights() == {"clean": 1.0, "noisy": 1.0}
    # The clean task's loss halves; the noisy task's barely falls.
    weighting.end_window([0.5, 0.95])
    weights = weighting.weights()
    assert weights["noisy"] > weights["clean"]
    assert sum(weights.values()) == pytest.approx(2.0)


def test_dwa_weights_follow_temperature():
    sharp = dwa_weights([1.0, 1.0], [0.5, 1.0], 0.5, [1.0, 1.0])
    smooth = dwa_weights([1.0, 1.0], [0.5, 1.0], 50.0, [1.0, 1.0])
    assert sharp[1] - sharp[0] > smooth[1] - smooth[0] > 0


def test_dwa_ignores_unlabelled_window():
    weighting = DynamicWeightAverage(NAMES, [1.0, 1.0])
    weighting.end_window([1.0, float("nan")])
    assert weighting.history == []


# GradNorm ---------------------------------------------------------------------


def test_gradnorm_balances_gradient_norms():
    weighting = GradNorm(NAMES, [1.0, 1.0])
    norms = [4.0, 1.0]
    # Equal training rates: the target is the same norm for both tasks.
    for _ in range(40):
        weighting.update(norms, [1.0, 1.0])
    weights = weighting.weights()
    assert weights["clean"] < weights["noisy"]
    assert sum(weights.values()) == pytest.approx(2.0)
    weighted = [weights[name] * norm for name, norm in zip(NAMES, norms)]
    assert abs(weighted[0] - weighted[1]) < 0.5 * abs(norms[0] - norms[1])


def test_gradnorm_backward_on_shared_layer():
    paddle.seed(0)
    shared = paddle.nn.Linear(4, 4)
    inputs = paddle.randn([8, 4])
    features = shared(inputs)
    losses = [(features ** 2).mean() * 10.0, features.mean() ** 2]
    weighting = GradNorm(NAMES, [1.0, 1.0])
    total = weighting.total_loss(losses)
    weighting.backward(total, losses, [shared.bias, shared.weight])
    assert shared.weight.grad is not None
    weights = list(weighting.weights().values())
    assert all(math.isfinite(w) and w > 0 for w in weights)
    assert weights[0] < weights[1]


# PCGrad -----------------------------------------------------------------------


def test_pcgrad_removes_conflicting_component():
    rng = np.random.default_rng(0)
    grads = [np.array([1.0, 0.0]), np.array([-1.0, 1.0])]
    projected = project_conflicting(grads, rng)
    assert float(grads[0] @ grads[1]) < 0
    assert float(projected[0] @ grads[1]) == pytest.approx(0.0, abs=1e-12)
    assert float(projected[1] @ grads[0]) == pytest.approx(0.0, abs=1e-12)
    assert float(projected[0] @ projected[1]) >= 0


def test_pcgrad_keeps_agreeing_gradients():
    rng = np.random.default_rng(0)
    grads = [np.array([1.0, 0.5]), np.array([0.5, 1.0])]
    projected = project_conflicting(grads, rng)
    for before, after in zip(grads, projected):
        np.testing.assert_array_equal(before, after)


def test_pcgrad_backward_sets_projected_sum():
    paddle.seed(0)
    shared = paddle.nn.Linear(3, 1)
    inputs = paddle.randn([16, 3])
    output = shared(inputs)[:, 0]
    # The second loss pushes the output the other way, so the two tasks'
    # gradients conflict.
    losses = [output.mean(),
              -2.0 * output.mean() + 0.1 * (output ** 2).mean()]
    parameters = [shared.bias, shared.weight]
    raw = [np.concatenate([g.numpy().ravel() for g in
                           paddle.grad(loss, parameters, retain_graph=True)])
           for loss in losses]
    weighting = PCGrad(NAMES, [1.0, 1.0], seed=3)
    total = weighting.total_loss(losses)
    weighting.backward(total, losses, parameters)
    applied = np.concatenate([p.grad.numpy().ravel() for p in parameters])
    expected = np.sum(project_conflicting(raw, np.random.default_rng(3)),
                      axis=0)
    np.testing.assert_allclose(applied, expected, rtol=1e-5, atol=1e-6)
    assert float(raw[0] @ raw[1]) < 0
    assert not np.allclose(applied, raw[0] + raw[1])


# Non-finite losses ------------------------------------------------------------


def nan_task_loss_at(monkeypatch, step, task):
    """Make `task`'s loss NaN at training step `step`."""
    from ernie_marketing.engine import trainer as trainer_module

    real_loss = trainer_module.multitask_loss
    calls = []

    def loss(*args):
        calls.append(None)
        total, task_losses = real_loss(*args)
        if len(calls) == step:
            value, count = task_losses[task]
            task_losses[task] = (value * float("nan"), count)
            total = total * float("nan")
        return total, task_losses

    monkeypatch.setattr(trainer_module, "multitask_loss", loss)


def test_nan_task_loss_aborts_named(reviews_csv, tmp_path, monkeypatch):
    nan_task_loss_at(monkeypatch, 6, "sentiment")
    raw = tiny_config(reviews_csv, tmp_path / "run")
    with pytest.raises(UserError) as info:
        train(build_config(raw))
    message = str(info.value)
    assert "training diverged at step 6" in message
    assert "sentiment=nan" in message
    assert "['sentiment']" in message
    assert "row ids [" in message
    assert "best checkpoint (step 4) is kept" in message
    best = load_checkpoint(str(tmp_path / "run" / "best"))[5]
    assert best["step"] == 4


def test_nan_task_loss_skips_batch(reviews_csv, tmp_path, monkeypatch):
    nan_task_loss_at(monkeypatch, 3, "category")
    raw = tiny_config(reviews_csv, tmp_path / "run",
                      train={"on_nonfinite_loss": "skip"})
    result = train(build_config(raw))
    with open(tmp_path / "run" / "train.log", encoding="utf-8") as f:
        skipped = [line for line in f if "skipped" in line]
    assert len(skipped) == 1
    assert "step 3 skipped (1 so far)" in skipped[0]
    assert "category=nan" in skipped[0]
    assert "row ids [" in skipped[0]
    assert result["steps"] == 8
    assert math.isfinite(result["selection_value"])
    # Every logged loss stays a number: the skipped batch is not averaged in.
    logged = scalars(tmp_path / "run")
    assert all(math.isfinite(v) for _, v in logged["train/loss/total"])
    assert os.path.isdir(tmp_path / "run" / "best")


def test_nan_in_second_part_skips_batch(reviews_csv, tmp_path, monkeypatch):
    """With 2 parts per batch, call 6 is the second part of step 3: its NaN
    gradients, already added to the first part's, must not reach the weights."""
    nan_task_loss_at(monkeypatch, 6, "category")
    raw = tiny_config(reviews_csv, tmp_path / "run",
                      train={"on_nonfinite_loss": "skip",
                             "accumulate_steps": 2})
    result = train(build_config(raw))
    with open(tmp_path / "run" / "train.log", encoding="utf-8") as f:
        skipped = [line for line in f if "skipped" in line]
    assert len(skipped) == 1
    assert "step 3 skipped (1 so far)" in skipped[0]
    assert result["steps"] == 8
    assert math.isfinite(result["selection_value"])
    weights = paddle.load(str(tmp_path / "run" / "last" / "model.pdparams"))
    assert all(np.isfinite(np.asarray(v)).all() for v in weights.values())


# Resuming with learned weights ----------------------------------------------


def test_uncertainty_resume_keeps_adam_moments(reviews_csv, tmp_path,
                                               monkeypatch):
    """A run stopped after its step-3 save and resumed ends where an
    uninterrupted run ends, learned log variances and their moments too."""
    from ernie_marketing.engine.trainer import Trainer

    train_section = {"loss_weighting": {"method": "uncertainty"},
                     "max_steps": 6, "save_steps": 3, "eval_steps": 6}
    reference = tmp_path / "reference"
    train(build_config(tiny_config(reviews_csv, reference,
                                   train=train_section)))

    write_last = Trainer._write_last

    def write_then_stop(self, *args, **kwargs):
        write_last(self, *args, **kwargs)
        if self.step == 3:
            raise RuntimeError("stopped after the step-3 save")

    interrupted = tmp_path / "interrupted"
    raw = tiny_config(reviews_csv, interrupted, train=train_section)
    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "_write_last", write_then_stop)
        with pytest.raises(RuntimeError, match="step-3"):
            train(build_config(raw))
    raw["train"]["resume"] = True
    train(build_config(raw))

    def final(run_dir):
        state = read_json(os.path.join(run_dir, "last", "trainer_state.json"))
        return state["loss_weighting"], state["loss_weighting_optimizer"]

    (expected_weights, expected_moments) = final(reference)
    (weights, moments) = final(interrupted)
    assert sorted(moments) == sorted(expected_moments)
    assert any("moment1" in key for key in moments)
    for key, entry in expected_moments.items():
        np.testing.assert_allclose(moments[key]["values"], entry["values"],
                                   rtol=0, atol=1e-7, err_msg=key)
    np.testing.assert_allclose(weights["log_variances"],
                               expected_weights["log_variances"],
                               rtol=0, atol=1e-7)
