"""Resumable training: kill and resume, Ctrl-C, failed saves, config checks.

The kill and Ctrl-C tests run the console command in subprocesses, as a
user would, and compare the resumed run with an uninterrupted run of the
same config. Both use 2 math threads: with a fixed thread count the resumed
weights are bit-identical on the CPU.
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import paddle
import pytest
from conftest import scalars, tiny_config, write_yaml

from ernie_marketing.config import build_config
from ernie_marketing.engine import trainer as trainer_module
from ernie_marketing.engine.checkpoint import load_checkpoint, read_json
from ernie_marketing.engine.resume import read_training_state
from ernie_marketing.engine.trainer import Trainer, train
from ernie_marketing.errors import ConfigError, UserError

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# About 320 training rows in batches of 16: 20 steps per epoch, so the
# 3 epochs cross two epoch boundaries. Logging every 3 steps leaves loss
# sums half-way through a logging interval in most saved states.
LONG_TRAIN = {"max_steps": None, "epochs": 3, "eval_steps": 10,
              "save_steps": 5, "logging_steps": 3, "num_threads": 2}
SUBPROCESS_TIMEOUT = 600
CHECKPOINT_NAMES = ("best", "last", "best.old", "last.old")
RUN_FILES = ("config.yaml", "tasks.json", "tokenizer", "train.log", "vdl",
             "metrics.json")


def cli_command(config_path, *overrides):
    command = [sys.executable, "-m", "ernie_marketing", "train", "-c",
               config_path]
    return command + (["-o", *overrides] if overrides else [])


def run_cli(config_path, *overrides):
    """Run `ernie-marketing train` to the end; return the finished process."""
    done = subprocess.run(cli_command(config_path, *overrides), cwd=REPO_DIR,
                          capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def start_cli(config_path):
    return subprocess.Popen(cli_command(config_path), cwd=REPO_DIR,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_for_state(process, run_dir, min_step):
    """Poll until run_dir/last contains a state of at least `min_step`."""
    path = os.path.join(run_dir, "last", "trainer_state.json")
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _, err = process.communicate()
            pytest.fail(f"training ended before a state was saved: {err[-2000:]}")
        try:
            step = read_json(path)["step"]
        except (OSError, ValueError):
            step = None
        if step is not None and step >= min_step:
            return step
        time.sleep(0.01)
    process.kill()
    pytest.fail("no resumable state appeared in time")


def long_config(tmp_path, reviews_csv, name):
    raw = tiny_config(reviews_csv, tmp_path / name, train=LONG_TRAIN)
    return write_yaml(tmp_path / f"{name}.yaml", raw), str(tmp_path / name)


def max_difference(first, second):
    """Return the largest absolute difference between two saved state dicts."""
    a, b = paddle.load(first), paddle.load(second)
    assert sorted(a) == sorted(b)
    gaps = [0.0]
    for key in a:
        if isinstance(a[key], dict):  # the learning-rate scheduler's state
            assert a[key] == b[key], key
        else:
            gaps.append(float(np.abs(np.asarray(a[key], dtype=np.float64)
                                     - np.asarray(b[key])).max()))
    return max(gaps)


def assert_checkpoints_load(run_dir):
    """Every checkpoint directory in run_dir loads; only save temps are partial."""
    names = os.listdir(run_dir)
    found = [n for n in names if n in CHECKPOINT_NAMES]
    assert "last" in found or "last.old" in found, names
    for name in found:
        path = os.path.join(run_dir, name)
        load_checkpoint(path)
        if name.startswith("last"):
            read_training_state(path)
    temps = (".best.tmp-", ".last.tmp-")
    unknown = [n for n in names if n not in CHECKPOINT_NAMES + RUN_FILES
               and not n.startswith(temps)]
    assert unknown == []


def assert_same_result(run_dir, reference_dir):
    for name in ("last/model.pdparams", "best/heads.pdparams",
                 "best/encoder/model_state.pdparams", "last/optimizer.pdopt"):
        gap = max_difference(os.path.join(reference_dir, name),
                             os.path.join(run_dir, name))
        assert gap <= 1e-6, name
    expected = read_json(os.path.join(reference_dir, "metrics.json"))
    metrics = read_json(os.path.join(run_dir, "metrics.json"))
    assert metrics["best_step"] == expected["best_step"]
    assert metrics["valid"] == expected["valid"]
    assert metrics["test"] == expected["test"]
    assert scalars(run_dir) == scalars(reference_dir)


@pytest.fixture(scope="module")
def reference_run(reviews_csv, tmp_path_factory):
    """An uninterrupted run of the long config; returns its output folder."""
    tmp_path = tmp_path_factory.mktemp("reference")
    config_path, run_dir = long_config(tmp_path, reviews_csv, "run")
    run_cli(config_path)
    return run_dir


# Kill and resume -------------------------------------------------------


def test_sigkill_resume_matches(reference_run, reviews_csv, tmp_path):
    config_path, run_dir = long_config(tmp_path, reviews_csv, "run")
    process = start_cli(config_path)
    # The second state replaces the first, so the kill can hit a replace.
    wait_for_state(process, run_dir, min_step=10)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    total = read_json(os.path.join(reference_run, "metrics.json"))["steps"]
    saved = read_json(os.path.join(run_dir, "last", "trainer_state.json"))
    assert process.returncode == -signal.SIGKILL
    assert saved["step"] < total
    assert not os.path.exists(os.path.join(run_dir, "metrics.json"))
    assert_checkpoints_load(run_dir)

    run_cli(config_path, "train.resume=true")
    with open(os.path.join(run_dir, "train.log"), encoding="utf-8") as f:
        log = f.read()
    assert f"resumed from step {saved['step']} of {total}" in log
    assert_checkpoints_load(run_dir)
    assert sorted(os.listdir(run_dir)) == sorted(
        ("best", "last") + RUN_FILES)
    assert_same_result(run_dir, reference_run)


def test_sigint_saves_and_resumes(reference_run, reviews_csv, tmp_path):
    config_path, run_dir = long_config(tmp_path, reviews_csv, "run")
    process = start_cli(config_path)
    wait_for_state(process, run_dir, min_step=5)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=SUBPROCESS_TIMEOUT)
    state = read_json(os.path.join(run_dir, "last", "trainer_state.json"))
    assert process.returncode == 130
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "interrupted"
    assert out == ""
    assert f"training interrupted after {state['step']} steps" in err
    assert f"the resumable state (step {state['step']})" in err
    assert_checkpoints_load(run_dir)

    run_cli(config_path, "train.resume=true")
    assert_same_result(run_dir, reference_run)


# In-process runs ---------------------------------------------------------

SHORT_TRAIN = {"max_steps": 4, "eval_steps": 2, "save_steps": 2}


@pytest.fixture(scope="module")
def short_run(reviews_csv, tmp_path_factory):
    """A 4-step run with states at steps 2 and 4; returns its raw config."""
    output_dir = tmp_path_factory.mktemp("short") / "run"
    raw = tiny_config(reviews_csv, output_dir, train=SHORT_TRAIN)
    train(build_config(raw))
    return raw


@pytest.fixture
def short_copy(short_run, tmp_path):
    """A copy of the short run in tmp_path/run; returns its raw config."""
    shutil.copytree(short_run["output"]["dir"], tmp_path / "run")
    return tiny_config(short_run["data"]["train_path"], tmp_path / "run",
                       train=SHORT_TRAIN)


def with_train(raw, **values):
    changed = dict(raw, train=dict(raw["train"], **values))
    return build_config(changed)


def test_mismatch_lists_keys(short_copy):
    config = with_train(short_copy, resume=True, seed=7, batch_size=8,
                        logging_steps=1)
    with pytest.raises(ConfigError) as info:
        Trainer(config)
    message = str(info.value)
    assert "train.seed (saved 42, now 7)" in message
    assert "train.batch_size (saved 16, now 8)" in message
    assert "logging_steps" not in message
    assert "config.yaml" in message


def test_mismatch_task_change(short_copy):
    short_copy["tasks"][1]["weight"] = 2.0
    short_copy["train"]["resume"] = True
    with pytest.raises(ConfigError, match=r"tasks\[1\]\.weight"):
        Trainer(build_config(short_copy))


def test_mismatch_fewer_steps(short_copy):
    with pytest.raises(ConfigError, match=r"train\.max_steps \(saved 4, now 3\)"):
        Trainer(with_train(short_copy, resume=True, max_steps=3))


def test_harmless_keys_accepted(short_copy):
    config = with_train(short_copy, resume=True, logging_steps=1,
                        num_threads=1, progress_bar="on", save_steps=3,
                        max_steps=6, epochs=2)
    trainer = Trainer(config)
    assert trainer.resume_dir == os.path.join(short_copy["output"]["dir"],
                                              "last")


def test_amp_off_resumes_auto_on_cpu(short_copy):
    # Both settings train in float32 on the CPU.
    trainer = Trainer(with_train(short_copy, resume=True, amp="off"))
    assert trainer.resume_dir == os.path.join(short_copy["output"]["dir"],
                                              "last")


def test_resume_finished_run_longer(short_copy):
    run_dir = short_copy["output"]["dir"]
    result = train(with_train(short_copy, resume=True, max_steps=6))
    state = read_json(os.path.join(run_dir, "last", "trainer_state.json"))
    with open(os.path.join(run_dir, "train.log"), encoding="utf-8") as f:
        log = f.read()
    assert result["steps"] == 6
    assert state["step"] == 6
    assert "learning rate schedule is stretched" in log


def test_resume_finished_run_same(short_copy):
    result = train(with_train(short_copy, resume=True))
    assert result["steps"] == 4


def test_resume_without_state(tmp_path, reviews_csv):
    raw = tiny_config(reviews_csv, tmp_path / "run", train={"resume": True})
    with pytest.raises(ConfigError) as info:
        Trainer(build_config(raw))
    assert str(tmp_path / "run") in str(info.value)
    assert "contains no resumable state" in str(info.value)


def test_resume_path_not_state(tmp_path, reviews_csv):
    raw = tiny_config(reviews_csv, tmp_path / "run",
                      train={"resume": str(tmp_path)})
    with pytest.raises(ConfigError, match="no resumable state found there"):
        Trainer(build_config(raw))


def test_resume_with_overwrite(short_copy):
    short_copy["output"]["overwrite"] = True
    with pytest.raises(ConfigError, match="set only one of them"):
        Trainer(with_train(short_copy, resume=True))


def test_last_only_needs_resume(short_copy):
    shutil.rmtree(os.path.join(short_copy["output"]["dir"], "best"))
    with pytest.raises(ConfigError) as info:
        Trainer(build_config(short_copy))
    assert "last" in str(info.value)
    assert "train.resume=true" in str(info.value)


def test_overwrite_removes_state(short_copy):
    short_copy["output"]["overwrite"] = True
    Trainer(build_config(short_copy))
    assert not os.path.exists(os.path.join(short_copy["output"]["dir"], "last"))


def test_resume_from_old_dir(short_copy):
    """A save killed between its renames leaves only last.old."""
    run_dir = short_copy["output"]["dir"]
    last = os.path.join(run_dir, "last")
    os.replace(last, last + ".old")
    os.makedirs(os.path.join(run_dir, ".last.tmp-killed"))
    trainer = Trainer(with_train(short_copy, resume=True))
    assert trainer.resume_dir == last
    assert sorted(n for n in os.listdir(run_dir) if "last" in n) == ["last"]


def test_resume_path_other_dir(short_run, tmp_path):
    source = os.path.join(short_run["output"]["dir"], "last")
    raw = tiny_config(short_run["data"]["train_path"], tmp_path / "fork",
                      train=dict(SHORT_TRAIN, resume=source, max_steps=6))
    result = train(build_config(raw))
    best = load_checkpoint(str(tmp_path / "fork" / "best"))[5]
    assert result["steps"] == 6
    assert best["best_step"] == result["best_step"]
    logged = scalars(str(tmp_path / "fork"))["train/lr"]
    assert [step for step, _ in logged] == [2, 4, 6]


def test_damaged_state(short_copy):
    path = os.path.join(short_copy["output"]["dir"], "last", "optimizer.pdopt")
    with open(path, "r+b") as f:
        f.truncate(100)
    with pytest.raises(ConfigError, match="damaged or incomplete"):
        train(with_train(short_copy, resume=True))


def test_changed_data(reviews, tmp_path):
    path = tmp_path / "data.csv"
    reviews.to_csv(path, index=False)
    raw = tiny_config(path, tmp_path / "run", train=dict(SHORT_TRAIN,
                                                         max_steps=2))
    train(build_config(raw))
    frame = reviews.copy()
    frame.loc[5, "review"] = "这条评论在中断后被改过了"
    frame.to_csv(path, index=False)
    with pytest.raises(UserError, match="the training data differs"):
        train(with_train(raw, resume=True))


# Failed saves ------------------------------------------------------------


def fail_second_state_save(monkeypatch, error):
    """Make writing the second resumable state raise `error` midway."""
    real_write = trainer_module.write_training_state
    calls = []

    def write(*args):
        calls.append(None)
        if len(calls) == 2:
            raise error
        return real_write(*args)

    monkeypatch.setattr(trainer_module, "write_training_state", write)


def fail_second_temp_dir(monkeypatch, error):
    """Make creating the second resumable state's directory raise `error`."""
    real_mkdtemp = tempfile.mkdtemp
    calls = []

    def mkdtemp(*args, **kwargs):
        if ".last.tmp-" in kwargs.get("prefix", ""):
            calls.append(None)
            if len(calls) == 2:
                raise error
        return real_mkdtemp(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)


@pytest.mark.parametrize("inject, error, text", [
    (fail_second_state_save, OSError(errno.ENOSPC, "No space left on device"),
     "No space left on device"),
    (fail_second_temp_dir, PermissionError(errno.EACCES, "Permission denied"),
     "Permission denied"),
])
def test_failed_save_keeps_state(reviews_csv, tmp_path, monkeypatch, inject,
                                 error, text):
    raw = tiny_config(reviews_csv, tmp_path / "run", train=SHORT_TRAIN)
    inject(monkeypatch, error)
    with pytest.raises(UserError) as info:
        train(build_config(raw))
    monkeypatch.undo()
    message = str(info.value)
    last = str(tmp_path / "run" / "last")
    assert f"cannot write the resumable training state to {last} at step 4" \
        in message
    assert text in message
    assert f"the previous resumable state (step 2) is kept in {last}" in message
    assert read_training_state(last)[3]["step"] == 2
    assert_checkpoints_load(str(tmp_path / "run"))
    assert [n for n in os.listdir(tmp_path / "run") if ".tmp-" in n] == []

    # The kept state still resumes to the end.
    result = train(with_train(raw, resume=True))
    assert result["steps"] == 4


# Helpers -----------------------------------------------------------------


def test_state_json_readable(short_run):
    path = os.path.join(short_run["output"]["dir"], "last",
                        "trainer_state.json")
    with open(path, encoding="utf-8") as f:
        state = json.load(f)
    assert state["step"] == 4
    assert state["batch_in_epoch"] == 4
    assert state["train_data"]["rows"] > 0
