"""Data-parallel training: 2 CPU processes through paddle.distributed.launch.

One launched run trains a tiny model on 101 real reviews, split into 81
training rows: batches of 16 leave a last batch of one row in each epoch,
so rank 1 gets no rows there. Every third sentiment label is removed, so
the two ranks' shards have different labelled counts. The run is compared
with a single process training on the same global batches. Dropout is off,
because the masks of two half batches cannot equal those of one batch.
"""

import glob
import os
import random
import re
import socket
import subprocess
import sys

import numpy as np
import paddle
import pytest
from conftest import (
    NO_DROPOUT_SECTIONS,
    max_weight_gap,
    tiny_config,
    write_yaml,
)

from ernie_marketing.config import build_config
from ernie_marketing.data.labels import MISSING, labelled_rows, unlabelled_rows
from ernie_marketing.engine.checkpoint import read_json
from ernie_marketing.engine.distributed import ProcessGroup
from ernie_marketing.engine.trainer import RANK_WEIGHTS_ENV, Trainer, train
from ernie_marketing.errors import ConfigError

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH_TIMEOUT = 300
BATCH_SIZE = 16
# float32 sums over shards and over batches padded to other widths round
# differently, which moved the weights by 1.2e-7 in these 12 steps.
# Averaging per-rank loss means instead of dividing by the global labelled
# count moved them by 5.1e-3.
TOLERANCE = 1e-5
NO_DROPOUT = dict(
    NO_DROPOUT_SECTIONS,
    train={"max_steps": None, "epochs": 2, "batch_size": BATCH_SIZE,
           "eval_steps": 4, "logging_steps": 1, "num_threads": 1})


def free_port_pair():
    """Return a port p on 127.0.0.1 with p and p + 1 free just now.

    The ports are drawn below the kernel's range for outgoing connections,
    so another process's connection cannot take them before the launcher
    binds them.
    """
    first_ephemeral = 32768
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            first_ephemeral = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    low = max(1024, first_ephemeral - 10000)
    draw = random.Random()
    for _ in range(100):
        port = draw.randrange(low, first_ephemeral - 1)
        if _port_is_free(port) and _port_is_free(port + 1):
            return port
    pytest.fail("no two adjacent free ports on 127.0.0.1")


def _port_is_free(port):
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def run_config(train_path, output_dir, variant="fixed"):
    raw = tiny_config(train_path, output_dir, **NO_DROPOUT)
    if variant == "accumulate":
        # Each rank's 8 rows in 2 parts of 4: gradients add up over the
        # parts before the ranks average them.
        raw["train"]["accumulate_steps"] = 2
    else:
        raw["train"]["loss_weighting"] = {"method": variant}
    return raw


def load_state(path):
    return {k: np.asarray(v) for k, v in paddle.load(path).items()}


def logged_losses(run_dir):
    from visualdl import LogReader

    files = glob.glob(os.path.join(run_dir, "vdl", "vdlrecords.*.log"))
    assert len(files) == 1, files
    reader = LogReader(file_path=files[0])
    return [(r.id, r.value) for r in reader.get_data("scalar",
                                                     "train/loss/total")]


# Three variants: fixed task weights, uncertainty weighting and fixed
# weights with each batch trained in parts. The trainer averages the learned
# log variances, which live outside DataParallel.
@pytest.fixture(scope="module", params=["fixed", "uncertainty", "accumulate"])
def weighting(request):
    return request.param


@pytest.fixture(scope="module")
def launched_run(partial_labels_csv, weighting, tmp_path_factory):
    """Train with 2 processes; return (run folder, launch log folder,
    folder with each rank's final weights)."""
    tmp_path = tmp_path_factory.mktemp("launched")
    run_dir = tmp_path / "run"
    config_path = write_yaml(tmp_path / "config.yaml",
                             run_config(partial_labels_csv, run_dir, weighting))
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    env = dict(os.environ, **{RANK_WEIGHTS_ENV: str(weights_dir)})
    command = [sys.executable, "-m", "paddle.distributed.launch",
               "--nproc_per_node", "2", "--host", "127.0.0.1",
               "--ips", "127.0.0.1", "--start_port", str(free_port_pair()),
               "--log_dir", str(tmp_path / "launch"),
               "tools/train.py", "-c", config_path]
    done = subprocess.run(command, cwd=REPO_DIR, env=env, capture_output=True,
                          text=True, timeout=LAUNCH_TIMEOUT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return str(run_dir), str(tmp_path / "launch"), str(weights_dir)


@pytest.fixture(scope="module")
def single_run(partial_labels_csv, weighting, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("single") / "run"
    train(build_config(run_config(partial_labels_csv, run_dir, weighting)))
    return str(run_dir)


def test_ranks_end_identical(launched_run):
    run_dir, _, weights_dir = launched_run
    rank0 = load_state(os.path.join(weights_dir, "rank0.pdparams"))
    rank1 = load_state(os.path.join(weights_dir, "rank1.pdparams"))
    saved = load_state(os.path.join(run_dir, "last", "model.pdparams"))
    assert max_weight_gap(rank0, rank1) == 0.0
    assert max_weight_gap(rank0, saved) == 0.0


def test_rank_shard_can_be_empty(launched_run):
    with open(os.path.join(launched_run[0], "train.log"), encoding="utf-8") as f:
        rows = int(re.search(r"(\d+) training rows", f.read()).group(1))
    assert rows % BATCH_SIZE == 1


def test_matches_single_process(launched_run, single_run):
    run_dir = launched_run[0]
    parallel = load_state(os.path.join(run_dir, "last", "model.pdparams"))
    single = load_state(os.path.join(single_run, "last", "model.pdparams"))
    assert max_weight_gap(parallel, single) <= TOLERANCE


def test_learned_weights_match_single(launched_run, single_run, weighting):
    def learned(run_dir):
        state = read_json(os.path.join(run_dir, "last", "trainer_state.json"))
        return state["loss_weighting"].get("log_variances")

    parallel, single = learned(launched_run[0]), learned(single_run)
    if weighting == "uncertainty":
        # Both ranks trained the same variances, and they moved from 0.
        assert max(abs(v) for v in single) > 1e-3
        np.testing.assert_allclose(parallel, single, rtol=0, atol=TOLERANCE)
    else:
        assert parallel is None
        assert single is None


def test_logged_losses_global(launched_run, single_run):
    parallel = logged_losses(launched_run[0])
    single = logged_losses(single_run)
    assert [step for step, _ in parallel] == [step for step, _ in single]
    for (step, value), (_, expected) in zip(parallel, single):
        assert value == pytest.approx(expected, abs=TOLERANCE), step


def test_metrics_match_single(launched_run, single_run):
    parallel = read_json(os.path.join(launched_run[0], "metrics.json"))
    single = read_json(os.path.join(single_run, "metrics.json"))
    assert parallel["best_step"] == single["best_step"]
    for split in ("valid", "test"):
        for task, scores in single[split].items():
            for name, value in scores.items():
                assert parallel[split][task][name] == pytest.approx(
                    value, abs=TOLERANCE, nan_ok=True), (split, task, name)


def test_only_rank0_writes(launched_run):
    run_dir, log_dir, _ = launched_run
    assert sorted(os.listdir(run_dir)) == [
        "best", "config.yaml", "last", "metrics.json", "tasks.json",
        "tokenizer", "train.log", "vdl"]
    assert len(os.listdir(os.path.join(run_dir, "vdl"))) == 1
    with open(os.path.join(run_dir, "train.log"), encoding="utf-8") as f:
        log = f.read()
    assert log.count("step 1/") == 1
    assert log.count("data parallel over 2 processes") == 1
    with open(os.path.join(log_dir, "workerlog.1"), encoding="utf-8") as f:
        rank1_log = f.read()
    assert " INFO ernie_marketing" not in rank1_log
    assert "Traceback" not in rank1_log


def test_batch_size_not_divisible(monkeypatch, reviews_csv, tmp_path):
    monkeypatch.setenv("PADDLE_TRAINERS_NUM", "2")
    raw = tiny_config(reviews_csv, tmp_path / "run", train={"batch_size": 15})
    with pytest.raises(ConfigError) as info:
        Trainer(build_config(raw))
    assert "train.batch_size=15" in str(info.value)
    assert "2 training processes" in str(info.value)
    assert not os.path.exists(tmp_path / "run")


def test_shard_strides_rows():
    rows = np.arange(7)
    assert ProcessGroup(0, 2).shard(rows).tolist() == [0, 2, 4, 6]
    assert ProcessGroup(1, 2).shard(rows).tolist() == [1, 3, 5]
    assert ProcessGroup(2, 3).shard(rows[:2]).tolist() == []


@pytest.mark.parametrize("labels", [
    np.array([2, 0], dtype=np.int64),
    np.array([1.5, 0.0], dtype=np.float32),
    np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype=np.float32),
])
def test_unlabelled_rows_layout(labels):
    rows = unlabelled_rows(labels, 2)
    assert rows.dtype == labels.dtype
    assert rows.shape == labels.shape
    assert not labelled_rows(rows).any()
    if labels.dtype == np.int64:
        assert (rows == MISSING).all()
