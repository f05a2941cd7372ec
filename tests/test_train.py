"""Train then evaluate: checkpoints, logs, metrics and their reproduction.

Most tests share one tiny run on 300 real reviews (`trained_run`). A second
run checks that a seed reproduces it, and a third trains with labels missing.
"""

import dataclasses
import glob
import json
import math
import os
import shutil

import numpy as np
import paddle
import pytest
from conftest import SHOPPING_CATEGORIES, TrainedRun, tiny_config, write_yaml

from ernie_marketing.cli import main
from ernie_marketing.config import build_config
from ernie_marketing.engine.checkpoint import (
    load_checkpoint,
    load_saved_config,
    read_json,
    resolve_checkpoint,
    save_checkpoint,
)
from ernie_marketing.engine.evaluate_checkpoint import (
    evaluate_checkpoint,
    max_difference,
)
from ernie_marketing.engine.evaluation import NonFiniteOutputError, evaluate
from ernie_marketing.engine.trainer import Trainer, _is_improvement, train
from ernie_marketing.errors import ConfigError, DataError, UserError

MAX_STEPS = 8
TASKS = ("category", "sentiment")


def scalars(output_dir):
    """Return {tag: [(step, value), ...]} from the run's VisualDL log."""
    from visualdl import LogReader

    files = glob.glob(os.path.join(output_dir, "vdl", "vdlrecords.*.log"))
    assert len(files) == 1
    reader = LogReader(file_path=files[0])
    return {tag: [(r.id, r.value) for r in reader.get_data("scalar", tag)]
            for tag in reader.get_tags()["scalar"]}


def assert_metrics_close(fresh, saved, tol=1e-6):
    for split in ("valid", "test"):
        for task in TASKS:
            for name, value in saved[split][task].items():
                assert fresh[split][task][name] == pytest.approx(
                    value, abs=tol, nan_ok=True), (split, task, name)


# Checkpoint contents -----------------------------------------------------


@pytest.mark.parametrize("name", [
    "encoder/config.json", "encoder/model_state.pdparams", "encoder/vocab.txt",
    "heads.pdparams", "tasks.json", "config.yaml", "metrics.json"])
def test_best_checkpoint_files(trained_run, name):
    assert os.path.isfile(os.path.join(trained_run.best_dir, name))


def test_no_leftover_temp_dirs(trained_run):
    names = os.listdir(trained_run.output_dir)
    assert [n for n in names if ".tmp" in n or n.endswith(".old")] == []
    assert "best" in names


def test_tasks_json_labels(trained_run, reviews):
    schema = read_json(os.path.join(trained_run.best_dir, "tasks.json"))
    labels = {t["name"]: t["labels"] for t in schema["tasks"]}
    assert len(labels["category"]) == SHOPPING_CATEGORIES
    assert labels["category"] == sorted(reviews["cat"].unique())
    assert labels["sentiment"] == ["0", "1"]


def test_tasks_json_heads(trained_run):
    schema = read_json(os.path.join(trained_run.best_dir, "tasks.json"))
    outputs = {t["name"]: t["num_outputs"] for t in schema["tasks"]}
    assert outputs == {"category": SHOPPING_CATEGORIES, "sentiment": 1}
    assert schema["preprocess"]["max_length"] == 64


def test_encoder_config_sizes(trained_run):
    path = os.path.join(trained_run.best_dir, "encoder", "config.json")
    encoder_config = read_json(path)
    assert encoder_config["hidden_size"] == 32
    assert encoder_config["num_hidden_layers"] == 1


def test_resolved_config_saved(trained_run):
    for directory in (trained_run.output_dir, trained_run.best_dir):
        saved = load_saved_config(os.path.join(directory, "config.yaml"))
        assert saved == trained_run.config, directory


# Metrics -----------------------------------------------------------------


def test_metrics_both_tasks(trained_run):
    metrics = read_json(os.path.join(trained_run.best_dir, "metrics.json"))
    for split in ("valid", "test"):
        assert set(metrics[split]) == set(TASKS), split
    assert set(metrics["valid"]["category"]) == {"count", "macro_f1", "accuracy"}
    assert set(metrics["valid"]["sentiment"]) == {
        "count", "roc_auc", "log_loss", "ece", "accuracy", "macro_f1"}


def test_metrics_in_range(trained_run):
    metrics = read_json(os.path.join(trained_run.best_dir, "metrics.json"))
    for split in ("valid", "test"):
        for task in TASKS:
            accuracy = metrics[split][task]["accuracy"]
            assert 0.0 <= accuracy <= 1.0, (split, task)


def test_metrics_output_copy(trained_run):
    in_run = read_json(os.path.join(trained_run.output_dir, "metrics.json"))
    in_best = read_json(os.path.join(trained_run.best_dir, "metrics.json"))
    assert in_run == in_best
    assert trained_run.result["steps"] == MAX_STEPS


def test_max_rows_used(trained_run):
    rows = trained_run.result["data"]["rows"]
    assert sum(rows.values()) == 300
    assert trained_run.result["valid"]["category"]["count"] == rows["valid"]


def test_data_quirks_counted(trained_run):
    stats = trained_run.result["data"]
    assert stats["train"]["empty_text"] == 1
    assert stats["train"]["duplicate_text"] > 0
    assert stats["truncated"]["train"] > 0


# VisualDL log ------------------------------------------------------------


@pytest.fixture(scope="module")
def logged(trained_run):
    return scalars(trained_run.output_dir)


@pytest.mark.parametrize("tag", [
    "train/loss/category", "train/loss/sentiment", "train/loss/total",
    "train/lr", "eval/category/macro_f1", "eval/category/accuracy",
    "eval/sentiment/roc_auc", "eval/sentiment/accuracy"])
def test_vdl_tag_present(logged, tag):
    assert tag in logged


def test_vdl_values_finite(logged):
    for tag, points in logged.items():
        assert points, tag
        assert all(math.isfinite(v) for _, v in points), tag


def test_vdl_logging_steps(logged):
    assert [step for step, _ in logged["train/loss/total"]] == [2, 4, 6, 8]


def test_vdl_eval_steps(logged):
    assert [step for step, _ in logged["eval/category/macro_f1"]] == [4, 8]


def test_vdl_total_is_weighted_sum(logged):
    for (_, total), (_, cat), (_, sent) in zip(logged["train/loss/total"],
                                              logged["train/loss/category"],
                                              logged["train/loss/sentiment"]):
        assert total == pytest.approx(cat + sent, rel=1e-5)


# Re-evaluation -----------------------------------------------------------


def test_evaluate_checkpoint_matches(trained_run):
    results, saved = evaluate_checkpoint(trained_run.best_dir)
    assert_metrics_close(results, saved)
    assert max_difference(results, saved) <= 1e-6


def test_eval_cli_matches(trained_run, capsys):
    code = main(["eval", "--checkpoint", trained_run.best_dir])
    out = capsys.readouterr().out
    saved = read_json(os.path.join(trained_run.best_dir, "metrics.json"))
    assert code == 0
    assert_metrics_close(json.loads(out), saved)


def test_eval_cli_from_config(trained_run, capsys):
    code = main(["eval", "-c", os.path.join(trained_run.output_dir, "config.yaml")])
    out = capsys.readouterr().out
    saved = read_json(os.path.join(trained_run.best_dir, "metrics.json"))
    assert code == 0
    assert_metrics_close(json.loads(out), saved)


def test_eval_cli_no_checkpoint(tmp_path, capsys):
    code = main(["eval", "--checkpoint", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: no checkpoint found")


def test_load_checkpoint_eval_mode(trained_run):
    model, _, config, schema, vocabs, _ = load_checkpoint(trained_run.best_dir)
    assert not model.training
    assert vocabs["sentiment"].labels == ["0", "1"]
    assert config == trained_run.config


def eval_config(reviews_csv, tmp_path, tasks):
    """A config that evaluates the real review slice with `tasks` in that order."""
    specs = {"category": {"name": "category", "type": "multiclass",
                          "label_column": "cat"},
             "sentiment": {"name": "sentiment", "type": "binary",
                           "label_column": "label"}}
    raw = tiny_config(reviews_csv, tmp_path / "run",
                      data={"valid_path": reviews_csv, "test_path": reviews_csv},
                      tasks=[specs[name] for name in tasks])
    return build_config(raw)


def test_eval_tasks_reordered(trained_run, reviews_csv, tmp_path):
    same, _ = evaluate_checkpoint(
        trained_run.best_dir, eval_config(reviews_csv, tmp_path, TASKS))
    swapped, _ = evaluate_checkpoint(
        trained_run.best_dir, eval_config(reviews_csv, tmp_path, TASKS[::-1]))
    assert swapped["valid"]["category"] == same["valid"]["category"]
    assert swapped["valid"]["sentiment"] == same["valid"]["sentiment"]


def test_eval_reordered_same_split(trained_run):
    """The split is stratified by the checkpoint's first task, not the config's."""
    config = dataclasses.replace(trained_run.config,
                                 tasks=trained_run.config.tasks[::-1])
    results, saved = evaluate_checkpoint(trained_run.best_dir, config)
    assert_metrics_close(results, saved)


def test_eval_task_subset(trained_run, reviews_csv, tmp_path):
    both, _ = evaluate_checkpoint(
        trained_run.best_dir, eval_config(reviews_csv, tmp_path, TASKS))
    one, _ = evaluate_checkpoint(
        trained_run.best_dir, eval_config(reviews_csv, tmp_path, ["sentiment"]))
    assert list(one["valid"]) == ["sentiment"]
    assert one["valid"]["sentiment"] == both["valid"]["sentiment"]


def test_eval_unknown_task(trained_run, reviews_csv, tmp_path):
    config = eval_config(reviews_csv, tmp_path, TASKS)
    config.tasks[0].name = "kind"
    with pytest.raises(ConfigError) as info:
        evaluate_checkpoint(trained_run.best_dir, config)
    assert "tasks ['kind'] are not in checkpoint" in str(info.value)


def test_eval_no_rows(trained_run, reviews_csv, tmp_path):
    raw = tiny_config(reviews_csv, tmp_path / "run", data={"split": [1.0, 0, 0]})
    with pytest.raises(DataError, match="no rows to evaluate"):
        evaluate_checkpoint(trained_run.best_dir, build_config(raw))


def test_eval_nan_outputs_raise(trained_run, reviews):
    model, tokenizer, _, schema, _, _ = load_checkpoint(trained_run.best_dir)
    head = model.heads["sentiment"].layers[-1]
    head.weight.set_value(paddle.full_like(head.weight, float("nan")))
    encoded = [np.array([1, 100, 2]), np.array([1, 200, 300, 2])]
    labels = {"category": np.zeros(2, dtype=np.int64),
              "sentiment": np.zeros(2, dtype=np.int64)}
    with pytest.raises(NonFiniteOutputError, match="2 of 2 rows"):
        evaluate(model, encoded, labels, schema["tasks"], 8, 0)


def damage_tasks_json(path):
    with open(os.path.join(path, "tasks.json"), "w", encoding="utf-8") as f:
        f.write("{bad")


def damage_config(path):
    os.remove(os.path.join(path, "config.yaml"))


def damage_heads(path):
    heads = os.path.join(path, "heads.pdparams")
    with open(heads, "rb") as f:
        start = f.read(100)
    with open(heads, "wb") as f:
        f.write(start)


@pytest.mark.parametrize("damage", [damage_tasks_json, damage_config,
                                    damage_heads])
def test_damaged_checkpoint(trained_run, tmp_path, damage, capsys):
    path = str(tmp_path / "best")
    shutil.copytree(trained_run.best_dir, path)
    damage(path)
    code = main(["eval", "--checkpoint", path])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    assert f"error: checkpoint {path} is damaged" in err


# Atomic save -------------------------------------------------------------


@pytest.fixture
def checkpoint_copy(trained_run, tmp_path):
    path = str(tmp_path / "best")
    shutil.copytree(trained_run.best_dir, path)
    return path


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def test_crash_keeps_previous(checkpoint_copy, monkeypatch):
    model, tokenizer, config, schema, _, metrics = load_checkpoint(
        checkpoint_copy)
    weights = os.path.join(checkpoint_copy, "encoder", "model_state.pdparams")
    before = read_bytes(weights)
    # New weights, so that an encoder written in place would show.
    for param in model.parameters():
        param.set_value(param + 1.0)
    real_save = paddle.save

    def save_until_heads(obj, path, *args, **kwargs):
        if str(path).endswith("heads.pdparams"):
            raise OSError("No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(paddle, "save", save_until_heads)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(checkpoint_copy, model, tokenizer, config, schema,
                        {"step": 99})
    monkeypatch.undo()
    assert read_bytes(weights) == before
    assert read_json(os.path.join(checkpoint_copy, "metrics.json")) == metrics
    assert load_checkpoint(checkpoint_copy)[5] == metrics


def test_crash_leaves_no_partial(checkpoint_copy, monkeypatch):
    model, tokenizer, config, schema, _, _ = load_checkpoint(checkpoint_copy)
    heads = os.path.join(checkpoint_copy, "heads.pdparams")
    before = read_bytes(heads)

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(paddle, "save", fail)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(checkpoint_copy, model, tokenizer, config, schema, {})
    monkeypatch.undo()
    assert read_bytes(heads) == before
    assert os.listdir(os.path.dirname(checkpoint_copy)) == ["best"]


def test_save_replaces_whole(checkpoint_copy):
    model, tokenizer, config, schema, _, _ = load_checkpoint(checkpoint_copy)
    save_checkpoint(checkpoint_copy, model, tokenizer, config, schema,
                    {"step": 99})
    assert read_json(os.path.join(checkpoint_copy, "metrics.json")) == {
        "step": 99}
    assert os.listdir(os.path.dirname(checkpoint_copy)) == ["best"]


def test_crash_mid_rename_recovered(checkpoint_copy):
    old = checkpoint_copy + ".old"
    os.replace(checkpoint_copy, old)
    assert resolve_checkpoint(checkpoint_copy) == old


def test_run_dir_resolves_best(trained_run):
    assert resolve_checkpoint(trained_run.output_dir) == trained_run.best_dir


# Output directory --------------------------------------------------------


def test_rerun_without_overwrite(trained_run):
    with pytest.raises(ConfigError) as info:
        Trainer(trained_run.config)
    message = str(info.value)
    assert trained_run.best_dir in message
    assert "output.overwrite=true" in message


def test_rerun_with_overwrite(tmp_path):
    os.makedirs(tmp_path / "run" / "best")
    raw = tiny_config(tmp_path / "train.csv", tmp_path / "run",
                      output={"overwrite": True})
    trainer = Trainer(build_config(raw))
    assert trainer.output_dir == str(tmp_path / "run")


def test_rerun_with_old_checkpoint(tmp_path):
    """A save interrupted between its renames leaves only best.old to keep."""
    os.makedirs(tmp_path / "run" / "best.old")
    raw = tiny_config(tmp_path / "train.csv", tmp_path / "run")
    with pytest.raises(ConfigError, match="best.old"):
        Trainer(build_config(raw))


def test_output_dir_is_file(tmp_path):
    (tmp_path / "run").write_text("", encoding="utf-8")
    raw = tiny_config(tmp_path / "train.csv", tmp_path / "run")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        Trainer(build_config(raw))


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs Linux /proc")
def test_output_dir_not_writable(tmp_path):
    # Creating a file in /proc fails even for root.
    raw = tiny_config(tmp_path / "train.csv", "/proc")
    with pytest.raises(ConfigError, match="cannot write to output.dir='/proc'"):
        Trainer(build_config(raw))


# Reproducibility ---------------------------------------------------------


def test_seeded_run_reproducible(trained_run, shopping_zip, tmp_path, capsys):
    raw = tiny_config(shopping_zip, tmp_path / "again", data={"max_rows": 300})
    path = write_yaml(tmp_path / "config.yaml", raw)
    code = main(["train", "-c", path])
    summary = json.loads(capsys.readouterr().out)
    result = trained_run.result
    assert code == 0
    assert summary["best_step"] == result["best_step"]
    for split in ("valid", "test"):
        assert summary[split] == result[split], split


# Early stopping and reloading an earlier best checkpoint ---------------


@pytest.fixture(scope="module")
def early_stopped_run(reviews_csv, tmp_path_factory):
    """A run whose selection metric falls after the first evaluation.

    The metric is replaced by a fixed sequence, so the best checkpoint is the
    one from step 4 and patience 1 stops training at step 8 of 16.
    """
    from ernie_marketing.engine import trainer as trainer_module

    values = iter([0.9, 0.1, 0.05, 0.01])
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(trainer_module, "selection_value",
                        lambda *args: next(values))
    output_dir = tmp_path_factory.mktemp("early") / "run"
    raw = tiny_config(reviews_csv, output_dir,
                      train={"max_steps": 16, "early_stopping_patience": 1})
    try:
        result = train(build_config(raw))
    finally:
        monkeypatch.undo()
    return result, str(output_dir)


def test_early_stop_step(early_stopped_run):
    result, _ = early_stopped_run
    assert result["steps"] == 8
    assert result["best_step"] == 4


def test_early_stop_best_reloaded(early_stopped_run):
    """Final metrics must come from the step-4 weights, not the last ones."""
    result, output_dir = early_stopped_run
    results, _ = evaluate_checkpoint(os.path.join(output_dir, "best"))
    assert_metrics_close(results, result)


# Missing labels with a vocabulary built from the training text ---------


@pytest.fixture(scope="module")
def partly_labelled_run(reviews, tmp_path_factory):
    """A run where every third review has no sentiment label."""
    tmp_path = tmp_path_factory.mktemp("partly")
    frame = reviews.copy()
    frame["label"] = frame["label"].astype(object)
    frame.loc[frame.index % 3 == 0, "label"] = None
    path = tmp_path / "partly.csv"
    frame.to_csv(path, index=False)
    raw = tiny_config(path, tmp_path / "run", train={"max_steps": 4},
                      tokenizer={"build_vocab": True, "max_length": 64})
    del raw["tokenizer"]["vocab_file"]
    config = build_config(raw)
    output_dir = str(tmp_path / "run")
    return TrainedRun(config, train(config), output_dir,
                      os.path.join(output_dir, "best"))


def test_partly_labelled_counts(partly_labelled_run):
    result = partly_labelled_run.result
    valid = result["valid"]
    assert valid["category"]["count"] == result["data"]["rows"]["valid"]
    assert 0 < valid["sentiment"]["count"] < valid["category"]["count"]


def test_partly_labelled_losses(partly_labelled_run):
    logged = scalars(partly_labelled_run.output_dir)
    for task in TASKS:
        values = [v for _, v in logged[f"train/loss/{task}"]]
        assert all(math.isfinite(v) and v > 0 for v in values), task


def test_built_vocab_in_checkpoint(partly_labelled_run):
    best = partly_labelled_run.best_dir
    with open(os.path.join(best, "encoder", "vocab.txt"), encoding="utf-8") as f:
        tokens = f.read().splitlines()
    assert tokens[:5] == ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]"]
    assert len(tokens) < 5000


def test_built_vocab_eval_matches(partly_labelled_run):
    best = partly_labelled_run.best_dir
    results, saved = evaluate_checkpoint(best)
    assert_metrics_close(results, saved)


def test_built_vocab_encoder_size(partly_labelled_run):
    best = partly_labelled_run.best_dir
    encoder_config = read_json(os.path.join(best, "encoder", "config.json"))
    with open(os.path.join(best, "encoder", "vocab.txt"), encoding="utf-8") as f:
        n_tokens = len(f.read().splitlines())
    assert encoder_config["vocab_size"] == n_tokens
    assert np.isfinite(partly_labelled_run.result["selection_value"])


# Failures during training ----------------------------------------------


def fail_at_step(monkeypatch, step, failure):
    """Make training step `step` call `failure(total, task_losses)`."""
    from ernie_marketing.engine import trainer as trainer_module

    real_loss = trainer_module.multitask_loss
    calls = []

    def loss(*args):
        calls.append(None)
        total, task_losses = real_loss(*args)
        if len(calls) == step:
            return failure(total, task_losses)
        return total, task_losses

    monkeypatch.setattr(trainer_module, "multitask_loss", loss)


def nan_loss(total, task_losses):
    return total * float("nan"), task_losses


def interrupt(total, task_losses):
    raise KeyboardInterrupt


def run_cli(reviews_csv, tmp_path, capsys):
    """Train 8 steps with evaluations at steps 4 and 8; return (code, stderr)."""
    raw = tiny_config(reviews_csv, tmp_path / "run")
    code = main(["train", "-c", write_yaml(tmp_path / "config.yaml", raw)])
    return code, capsys.readouterr().err


def best_step(tmp_path):
    return load_checkpoint(str(tmp_path / "run" / "best"))[5]["step"]


def test_nan_loss_stops(reviews_csv, tmp_path, monkeypatch, capsys):
    fail_at_step(monkeypatch, 6, nan_loss)
    code, err = run_cli(reviews_csv, tmp_path, capsys)
    last = err.strip().splitlines()[-1]
    assert code == 2
    assert "Traceback" not in err
    assert last.startswith("error: training diverged at step 6")
    assert "best checkpoint (step 4) is kept" in last
    assert best_step(tmp_path) == 4


def test_interrupt_keeps_best(reviews_csv, tmp_path, monkeypatch, capsys):
    fail_at_step(monkeypatch, 6, interrupt)
    code, err = run_cli(reviews_csv, tmp_path, capsys)
    assert code == 130
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "interrupted"
    assert "training interrupted after 5 steps" in err
    # Raised inside step 6, so the state saved after step 4 is the last one.
    assert "the resumable state (step 4)" in err
    assert best_step(tmp_path) == 4
    assert sorted(os.listdir(tmp_path / "run")) == [
        "best", "config.yaml", "last", "tasks.json", "tokenizer", "train.log",
        "vdl"]


def test_save_error_keeps_best(reviews_csv, tmp_path, monkeypatch):
    from ernie_marketing.engine import trainer as trainer_module

    real_save = trainer_module.save_checkpoint
    saves = []

    def save_best_once(path, *args, **kwargs):
        # Saves of the resumable state (last/) go through unchanged.
        if os.path.basename(path) == "best":
            saves.append(None)
            if len(saves) > 1:
                raise OSError(28, "No space left on device")
        return real_save(path, *args, **kwargs)

    values = iter([0.1, 0.2])
    monkeypatch.setattr(trainer_module, "save_checkpoint", save_best_once)
    monkeypatch.setattr(trainer_module, "selection_value",
                        lambda *args: next(values))
    raw = tiny_config(reviews_csv, tmp_path / "run")
    with pytest.raises(UserError) as info:
        train(build_config(raw))
    assert "No space left on device" in str(info.value)
    assert "the previous best checkpoint is kept" in str(info.value)
    assert best_step(tmp_path) == 4


def test_nan_first_metric_replaced(reviews_csv, tmp_path, monkeypatch):
    from ernie_marketing.engine import trainer as trainer_module

    values = iter([float("nan"), 0.5])
    monkeypatch.setattr(trainer_module, "selection_value",
                        lambda *args: next(values))
    raw = tiny_config(reviews_csv, tmp_path / "run")
    result = train(build_config(raw))
    assert result["best_step"] == 8


@pytest.mark.parametrize("value, best, expected", [
    (0.5, None, True), (float("nan"), None, True), (0.5, float("nan"), True),
    (float("nan"), 0.5, False), (float("nan"), float("nan"), False),
    (0.4, 0.5, False), (0.6, 0.5, True),
])
def test_is_improvement(value, best, expected):
    assert _is_improvement(value, best) is expected
