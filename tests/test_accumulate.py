"""Gradient accumulation: a batch trained in parts gives the same update.

Each run trains a tiny model without dropout on 101 real reviews, with
every third sentiment label removed, so the parts of a batch hold
different labelled counts. The 81 training rows in batches of 16 leave a
last batch of one row, so 2 of its 3 parts are empty. The 2-process runs
with parts are in test_distributed.py.
"""

import os

import numpy as np
import paddle
import pytest
from conftest import NO_DROPOUT_SECTIONS, max_weight_gap, tiny_config

from ernie_marketing.config import build_config
from ernie_marketing.engine.checkpoint import read_json
from ernie_marketing.engine.trainer import train
from ernie_marketing.errors import ConfigError

# float32 sums over parts round differently from one sum over the batch.
TOLERANCE = 1e-5
def run(train_path, output_dir, parts, method="fixed"):
    raw = tiny_config(train_path, output_dir, **NO_DROPOUT_SECTIONS)
    raw["train"].update({"max_steps": None, "epochs": 2, "batch_size": 16,
                         "eval_steps": 5, "logging_steps": 1,
                         "accumulate_steps": parts,
                         "loss_weighting": {"method": method}})
    result = train(build_config(raw))
    return result, str(output_dir)


def weights(run_dir):
    state = paddle.load(os.path.join(run_dir, "last", "model.pdparams"))
    return {key: np.asarray(value) for key, value in state.items()}


@pytest.fixture(scope="module")
def whole_batches(partial_labels_csv, tmp_path_factory):
    return run(partial_labels_csv, tmp_path_factory.mktemp("whole") / "run", 1)


@pytest.mark.parametrize("parts", [2, 3])
def test_parts_match_whole_batch(partial_labels_csv, whole_batches, tmp_path,
                                 parts):
    reference, reference_dir = whole_batches
    result, run_dir = run(partial_labels_csv, tmp_path / "run", parts)
    assert max_weight_gap(weights(run_dir), weights(reference_dir)) <= TOLERANCE
    assert result["best_step"] == reference["best_step"]
    for task, scores in reference["valid"].items():
        for name, value in scores.items():
            assert result["valid"][task][name] == pytest.approx(
                value, abs=TOLERANCE, nan_ok=True), (task, name)


def test_parts_log_whole_batch_loss(partial_labels_csv, whole_batches, tmp_path):
    from conftest import scalars

    _, reference_dir = whole_batches
    _, run_dir = run(partial_labels_csv, tmp_path / "run", 3)
    logged, expected = scalars(run_dir), scalars(reference_dir)
    for tag in ("train/loss/total", "train/loss/category",
                "train/loss/sentiment"):
        assert [s for s, _ in logged[tag]] == [s for s, _ in expected[tag]]
        np.testing.assert_allclose([v for _, v in logged[tag]],
                                   [v for _, v in expected[tag]],
                                   rtol=0, atol=TOLERANCE, err_msg=tag)


def test_parts_uncertainty_matches_whole(partial_labels_csv, tmp_path):
    """The log-variance regulariser counts once per batch, not per part."""
    _, whole_dir = run(partial_labels_csv, tmp_path / "whole", 1, "uncertainty")
    _, parts_dir = run(partial_labels_csv, tmp_path / "parts", 2, "uncertainty")
    assert max_weight_gap(weights(parts_dir), weights(whole_dir)) <= TOLERANCE

    def log_variances(run_dir):
        state = read_json(os.path.join(run_dir, "last", "trainer_state.json"))
        return state["loss_weighting"]["log_variances"]

    np.testing.assert_allclose(log_variances(parts_dir),
                               log_variances(whole_dir), rtol=0,
                               atol=TOLERANCE)


@pytest.mark.parametrize("section, message", [
    ({"accumulate_steps": 0}, "train.accumulate_steps=0"),
    ({"accumulate_steps": 17}, "from 1 to train.batch_size (16)"),
    ({"accumulate_steps": 2, "loss_weighting": {"method": "pcgrad"}},
     "loss_weighting.method='pcgrad'"),
    ({"accumulate_steps": "2"}, "train.accumulate_steps"),
])
def test_accumulate_steps_invalid(reviews_csv, tmp_path, section, message):
    raw = tiny_config(reviews_csv, tmp_path / "run",
                      train=dict(section, batch_size=16))
    with pytest.raises(ConfigError) as info:
        build_config(raw)
    assert message in str(info.value)
