"""Mixed precision settings, and the trainer's loss-scale steps on the CPU.

Paddle's auto_cast and GradScaler do nothing on the CPU, so these tests
check the settings and the trainer's order of operations (scale each
part's loss, unscale before the update, save the scale), not half
precision itself. The loss-scale test pretends to run on a GPU and swaps
Paddle's GradScaler for a fixed power-of-two scale that works on the CPU;
multiplying and dividing float32 gradients by 1024 is exact, so the
weights match a float32 run.
"""

import os

import numpy as np
import paddle
import pytest
from conftest import NO_DROPOUT_SECTIONS, max_weight_gap, tiny_config

from ernie_marketing.config import build_config
from ernie_marketing.engine import amp
from ernie_marketing.engine.checkpoint import read_json
from ernie_marketing.engine.trainer import train
from ernie_marketing.errors import ConfigError

SCALE = 1024.0


@pytest.mark.parametrize("setting, method, device, expected", [
    ("auto", "fixed", "cpu", None),
    ("off", "fixed", "gpu:0", None),
    ("auto", "fixed", "gpu:0", "float16"),
    ("auto", "dwa", "gpu:0", "float16"),
    ("auto", "uncertainty", "gpu:0", None),
    ("bfloat16", "fixed", "gpu:0", "bfloat16"),
    ("float16", "dwa", "gpu:0", "float16"),
])
def test_resolve_amp_settings(setting, method, device, expected):
    assert amp.resolve_amp(setting, method, device) == expected


def test_resolve_amp_dtype_on_cpu():
    with pytest.raises(ConfigError) as info:
        amp.resolve_amp("float16", "fixed", "cpu")
    assert "train.amp='float16' needs a GPU" in str(info.value)
    assert "set train.amp to auto or off" in str(info.value)


def test_resolve_amp_own_backward():
    with pytest.raises(ConfigError) as info:
        amp.resolve_amp("bfloat16", "pcgrad", "gpu:0")
    assert "train.loss_weighting.method='pcgrad'" in str(info.value)


def test_amp_config_rejects_unknown(reviews_csv, tmp_path):
    raw = tiny_config(reviews_csv, tmp_path / "run", train={"amp": "int8"})
    with pytest.raises(ConfigError, match="train.amp='int8' is invalid"):
        build_config(raw)


def test_amp_error_keeps_previous_run(reviews_csv, tmp_path):
    """A dtype this CPU cannot run fails before output.dir is touched."""
    raw = tiny_config(reviews_csv, tmp_path / "run",
                      train={"max_steps": 2, "eval_steps": 2})
    train(build_config(raw))
    before = sorted(os.listdir(tmp_path / "run"))
    with open(tmp_path / "run" / "config.yaml", encoding="utf-8") as f:
        saved = f.read()
    raw["output"]["overwrite"] = True
    raw["train"]["amp"] = "float16"
    with pytest.raises(ConfigError, match="needs a GPU"):
        train(build_config(raw))
    assert sorted(os.listdir(tmp_path / "run")) == before
    with open(tmp_path / "run" / "config.yaml", encoding="utf-8") as f:
        assert f.read() == saved


def test_amp_unquoted_off():
    from ernie_marketing.config.loader import build_dataclass
    from ernie_marketing.config.schema import TrainConfig

    assert build_dataclass(TrainConfig, {"amp": False}).amp == "off"
    with pytest.raises(ConfigError, match="train.amp=True is invalid"):
        build_dataclass(TrainConfig, {"amp": True}, "train")


class PowerOfTwoScaler:
    """A fixed loss scale with GradScaler's methods, working on the CPU."""

    calls = []

    def __init__(self, init_loss_scaling):
        self.scale_value = SCALE
        self.updates = 0

    def scale(self, loss):
        self.calls.append("scale")
        return loss * self.scale_value

    def step(self, optimizer):
        self.calls.append("step")
        for parameter in optimizer._parameter_list:
            if parameter.grad is not None:
                parameter.grad.set_value(parameter.grad / self.scale_value)
        optimizer.step()

    def update(self):
        self.calls.append("update")
        self.updates += 1

    def state_dict(self):
        return {"scale": np.array([self.scale_value], dtype="float32"),
                "incr_count": self.updates}

    def load_state_dict(self, state):
        self.scale_value = float(state["scale"][0])
        self.updates = state["incr_count"]


def run(train_path, output_dir, setting):
    raw = tiny_config(train_path, output_dir, **NO_DROPOUT_SECTIONS)
    raw["train"].update({"max_steps": 6, "eval_steps": 6, "batch_size": 16,
                         "accumulate_steps": 2, "amp": setting})
    train(build_config(raw))
    state = paddle.load(os.path.join(output_dir, "last", "model.pdparams"))
    return {key: np.asarray(value) for key, value in state.items()}


def test_loss_scale_steps_match_float32(partial_labels_csv, tmp_path,
                                        monkeypatch):
    expected = run(partial_labels_csv, tmp_path / "float32", "off")
    monkeypatch.setattr(amp, "current_device", lambda: "gpu:0")
    monkeypatch.setattr(amp.paddle.amp, "GradScaler", PowerOfTwoScaler)
    monkeypatch.setattr(PowerOfTwoScaler, "calls", [])
    scaled = run(partial_labels_csv, tmp_path / "scaled", "float16")

    assert max_weight_gap(scaled, expected) <= 1e-6
    # Each of the 6 steps scales its 2 parts' losses, then steps and updates.
    assert PowerOfTwoScaler.calls == ["scale", "scale", "step", "update"] * 6
    state = read_json(str(tmp_path / "scaled" / "last" /
                          "trainer_state.json"))
    assert state["amp"] == {"scale": [SCALE], "incr_count": 6}
    with open(tmp_path / "scaled" / "train.log", encoding="utf-8") as f:
        assert "precision: mixed, float16 (train.amp=float16)" in f.read()
