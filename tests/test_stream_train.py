"""Training on a streamed training file (data.streaming).

The data is the 401-review slice split by position: every tenth row from
the second on is validation, every tenth from the third on is test, and
the other 321 rows are training rows. Chunks of 50 rows make every epoch
cross several chunk boundaries with rows carried over.
"""

import json
import logging
import os
import re
import signal
import subprocess
import sys

import numpy as np
import paddle
import pandas as pd
import pytest
from conftest import max_weight_gap, tiny_config, write_yaml
from test_distributed import free_port_pair
from test_resume import (
    assert_checkpoints_load,
    assert_same_result,
    run_cli,
    start_cli,
    wait_for_state,
)

from ernie_marketing.config import build_config
from ernie_marketing.data import prepare_data
from ernie_marketing.data.train_stream import (
    TrainStream,
    scan_training_file,
    training_chunks,
)
from ernie_marketing.engine.checkpoint import read_json
from ernie_marketing.engine.trainer import RANK_WEIGHTS_ENV, train
from ernie_marketing.errors import ConfigError, DataError, UserError
from ernie_marketing.tokenizer import (
    TextEncoder,
    build_vocab,
    load_tokenizer,
    write_vocab,
)

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHUNK_ROWS = 50
TRAIN_ROWS = 321
STREAMING = {"streaming": True, "chunk_rows": CHUNK_ROWS}
# 321 rows in batches of 16: 21 steps per epoch, so 3 epochs cross two
# epoch boundaries; states are saved every 5 steps.
LONG_TRAIN = {"max_steps": None, "epochs": 3, "eval_steps": 10,
              "save_steps": 5, "logging_steps": 3, "num_threads": 2}


@pytest.fixture(scope="module")
def stream_files(reviews, tmp_path_factory):
    """Write the training rows as CSV and Parquet and the validation and
    test rows as CSV; returns {name: path}.

    The files add a numeric column `chars` (the review length, missing on
    every seventh row), a target `half` (half the length) and a categorical
    column `bucket` (length mod 4, missing on every fifth row) for the
    feature and target tests.
    """
    folder = tmp_path_factory.mktemp("stream_files")
    frame = reviews.copy()
    lengths = frame["review"].fillna("").str.len().astype(float)
    frame["chars"] = lengths.where(frame.index % 7 != 3)
    frame["half"] = lengths / 2
    frame["bucket"] = (lengths % 4).astype(int).astype(str).where(
        frame.index % 5 != 4)
    position = frame.index % 10
    parts = {"train": frame[(position != 1) & (position != 2)],
             "valid": frame[position == 1], "test": frame[position == 2]}
    assert len(parts["train"]) == TRAIN_ROWS
    paths = {}
    for name, part in parts.items():
        paths[name] = str(folder / f"{name}.csv")
        part.to_csv(paths[name], index=False)
    paths["parquet"] = str(folder / "train.parquet")
    parts["train"].to_parquet(paths["parquet"], index=False)
    return paths


def stream_config(stream_files, output_dir, train_path=None, **sections):
    """Return a tiny streaming config dict over `stream_files`."""
    data = dict(STREAMING, valid_path=stream_files["valid"],
                test_path=stream_files["test"])
    data.update(sections.pop("data", {}))
    raw = tiny_config(train_path or stream_files["train"], output_dir,
                      data=data, **sections)
    return raw


def copied_file_config(frame, stream_files, tmp_path, name="train.csv"):
    """Write `frame` as the training file `name`; return (path, config)."""
    path = tmp_path / name
    frame.to_csv(path, index=False)
    config = build_config(stream_config(stream_files, tmp_path / "run",
                                        train_path=str(path)))
    return path, config


def feature_config(stream_files, tmp_path, streaming):
    """Tasks of three encoder kinds plus both feature kinds."""
    tasks = [
        {"name": "category", "type": "multiclass", "label_column": "cat"},
        {"name": "sentiment", "type": "binary", "label_column": "label"},
        {"name": "length", "type": "regression", "label_column": "half",
         "log1p": True},
    ]
    raw = stream_config(
        stream_files, tmp_path / "run", tasks=tasks,
        data={"streaming": streaming, "drop_duplicates": False},
        features={"numeric": ["chars"], "categorical": ["bucket"]})
    return build_config(raw)


# Scan --------------------------------------------------------------------


def test_scan_matches_memory(stream_files, tmp_path):
    memory = prepare_data(feature_config(stream_files, tmp_path, False))
    scan = scan_training_file(feature_config(stream_files, tmp_path, True))
    assert scan.fingerprint["rows"] == len(memory.splits["train"])
    for name in ("category", "sentiment"):
        assert scan.vocabs[name].labels == memory.vocabs[name].labels
    streamed, whole = scan.vocabs["length"], memory.vocabs["length"]
    assert streamed.mean == pytest.approx(whole.mean, rel=1e-12)
    assert streamed.std == pytest.approx(whole.std, rel=1e-12)
    assert (streamed.low, streamed.high) == (whole.low, whole.high)
    assert scan.features.vocabularies == memory.features.vocabularies
    assert scan.features.indicators == memory.features.indicators
    np.testing.assert_allclose(scan.features.means, memory.features.means,
                               rtol=1e-12)
    np.testing.assert_allclose(scan.features.stds, memory.features.stds,
                               rtol=1e-12)


def test_scan_vocab_matches_memory(stream_files, tmp_path):
    raw = stream_config(stream_files, tmp_path / "run",
                        data={"drop_duplicates": False},
                        tokenizer={"vocab_file": None, "build_vocab": True})
    scan = scan_training_file(build_config(raw))
    raw["data"]["streaming"] = False
    memory = prepare_data(build_config(raw))
    streamed = write_vocab(scan.word_counts, str(tmp_path / "streamed.txt"))
    whole = build_vocab(memory.splits["train"].texts,
                        str(tmp_path / "whole.txt"))
    with open(streamed, encoding="utf-8") as f:
        streamed_tokens = f.read().splitlines()
    with open(whole, encoding="utf-8") as f:
        whole_tokens = f.read().splitlines()
    assert len(streamed_tokens) > 500
    assert streamed_tokens == whole_tokens


def test_scan_counts_rank_rows(stream_files, tmp_path):
    config = build_config(stream_config(stream_files, tmp_path / "run"))
    scan = scan_training_file(config, world_size=3)
    # No training text is empty, so row i of the file goes to rank i % 3.
    assert scan.fingerprint["rows"] == TRAIN_ROWS
    assert scan.rows_per_rank == [107, 107, 107]


@pytest.mark.parametrize("order, warned", [("sorted", True),
                                            ("shuffled", False)])
def test_sorted_file_warns(stream_files, tmp_path, caplog, order, warned):
    frame = pd.read_csv(stream_files["train"])
    if order == "sorted":
        frame = frame.sort_values("cat", kind="stable")
    else:
        frame = frame.sample(frac=1.0, random_state=0)
    _, config = copied_file_config(frame, stream_files, tmp_path,
                                   f"{order}.csv")
    with caplog.at_level(logging.WARNING):
        scan_training_file(config)
    assert ("the file looks sorted by it" in caplog.text) is warned


def test_max_rows_takes_first_rows(stream_files, tmp_path):
    raw = stream_config(stream_files, tmp_path / "run",
                        data={"max_rows": 120})
    scan = scan_training_file(build_config(raw))
    assert scan.stats["train"]["rows_read"] == 120


@pytest.mark.parametrize("column, field", [
    ("title", "label_column"),
    ("cat", "label_column"),
])
def test_label_errors_match_memory(stream_files, tmp_path, column, field):
    # "title" is missing; "cat" has 10 values, too many for a binary task.
    tasks = [{"name": "sentiment", "type": "binary", field: column}]
    raw = stream_config(stream_files, tmp_path / "run", tasks=tasks)
    with pytest.raises(DataError) as streamed:
        scan_training_file(build_config(raw))
    raw["data"]["streaming"] = False
    with pytest.raises(DataError) as whole:
        prepare_data(build_config(raw))
    assert str(streamed.value) == str(whole.value)


def test_bad_feature_error_matches(stream_files, tmp_path):
    raw = stream_config(stream_files, tmp_path / "run",
                        features={"numeric": ["review"]})
    with pytest.raises(DataError) as streamed:
        scan_training_file(build_config(raw))
    raw["data"]["streaming"] = False
    with pytest.raises(DataError) as whole:
        prepare_data(build_config(raw))
    # The scan counts the bad values of the first chunk that has any.
    streamed_message = re.sub(r"has \d+ values", "has N values",
                              str(streamed.value))
    whole_message = re.sub(r"has \d+ values", "has N values",
                           str(whole.value))
    assert "numeric feature column 'review'" in streamed_message
    assert streamed_message == whole_message


@pytest.mark.parametrize("column", ["label", "feature"])
def test_codes_read_as_numbers_rejected(stream_files, tmp_path, column):
    # Codes such as "007" are numbers in every chunk but the one with
    # "A12", so "007" and "7" once became two classes or categories.
    frame = pd.read_csv(stream_files["train"])
    frame["code"] = np.where(frame.index % 2 == 0, "007", "012")
    frame.loc[250, "code"] = "A12"
    path = tmp_path / "train.csv"
    frame.to_csv(path, index=False)
    sections = {"features": {"categorical": ["code"]}}
    if column == "label":
        sections = {"tasks": [{"name": "code", "type": "multiclass",
                               "label_column": "code"}]}
    raw = stream_config(stream_files, tmp_path / "run", train_path=str(path),
                        **sections)
    with pytest.raises(DataError, match="one number written two ways") as info:
        scan_training_file(build_config(raw))
    assert "['007', '7']" in str(info.value)
    assert "'code'" in str(info.value)


def test_row_with_extra_fields_rejected(stream_files, tmp_path):
    # A text with an unquoted comma gives its row one field too many. The
    # in-memory reader rejects the row, and streaming once kept the row
    # with its text cut at the comma.
    with open(stream_files["train"], encoding="utf-8") as f:
        lines = f.read().splitlines()
    lines[120] += ",trailing words"
    path = tmp_path / "train.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    raw = stream_config(stream_files, tmp_path / "run", train_path=str(path))
    with pytest.raises(DataError, match="Expected 6 fields") as streamed:
        scan_training_file(build_config(raw))
    assert "after data row 100" in str(streamed.value)
    raw["data"]["streaming"] = False
    with pytest.raises(DataError, match="Expected 6 fields"):
        prepare_data(build_config(raw))

# Config --------------------------------------------------------------------


@pytest.mark.parametrize("data, expected", [
    ({"valid_path": None}, "data.streaming=true needs data.valid_path"),
    ({"valid_path": None, "test_path": None},
     "data.streaming=true needs data.valid_path"),
    ({"chunk_rows": 0}, "data.chunk_rows=0 is invalid"),
    ({"chunk_rows": -5}, "data.chunk_rows=-5 is invalid"),
    ({"transactions": {"customer_column": "cat", "date_column": "label",
                       "amount_column": "chars", "cutoff": "2020-01-01"}},
     "cannot be used with data.transactions"),
])
def test_streaming_config_errors(stream_files, tmp_path, data, expected):
    raw = stream_config(stream_files, tmp_path / "run", data=data)
    with pytest.raises(ConfigError) as info:
        build_config(raw)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_chunk_rows_type_error(stream_files, tmp_path):
    raw = stream_config(stream_files, tmp_path / "run",
                        data={"chunk_rows": "many"})
    with pytest.raises(ConfigError, match="data.chunk_rows"):
        build_config(raw)


# Batches -------------------------------------------------------------------


def single_stream(config, text_encoder):
    """Return the TrainStream of a one-process run of `config`."""
    return TrainStream(config, scan_training_file(config), 0, 1, text_encoder)


def epoch_row_ids(stream, epoch, skip=0):
    return [batch.row_ids.tolist() for batch in stream.epoch_batches(epoch,
                                                                     skip)]


@pytest.fixture(scope="module")
def text_encoder(vocab_file, tmp_path_factory):
    config = build_config(tiny_config("unused.csv", "unused"))
    tokenizer = load_tokenizer(config, str(tmp_path_factory.mktemp("tok")))
    return TextEncoder(tokenizer, 64)


@pytest.mark.parametrize("rank", [0, 1])
def test_epoch_covers_shard(stream_files, text_encoder, tmp_path, rank):
    config = build_config(stream_config(stream_files, tmp_path / "run"))
    scan = scan_training_file(config, world_size=2)
    stream = TrainStream(config, scan, rank, 2, text_encoder)
    batches = epoch_row_ids(stream, 0)
    shard = [i for _, frame, _ in training_chunks(config, rank, 2)
             for i in frame.index]
    # Rank 0's shard has 161 rows and rank 1's 160: both run 20 steps of
    # 8 rows, so rank 0 leaves one row out.
    trained = sorted(sum(batches, []))
    assert len(set(trained)) == len(trained)
    assert set(trained) <= set(shard)
    assert len(trained) == 160
    assert len(shard) == 161 - rank
    assert len(batches) == stream.steps_per_epoch
    assert all(len(b) == 8 for b in batches[:-1])
    assert 1 <= len(batches[-1]) <= 8


def test_epochs_shuffle_and_skip(stream_files, text_encoder, tmp_path):
    config = build_config(stream_config(stream_files, tmp_path / "run"))
    stream = single_stream(config, text_encoder)
    first = epoch_row_ids(stream, 0)
    assert epoch_row_ids(stream, 0) == first
    assert epoch_row_ids(stream, 1) != first
    assert epoch_row_ids(stream, 0, skip=7) == first[7:]
    assert epoch_row_ids(stream, 0, skip=len(first)) == []


@pytest.mark.parametrize("change, reason", [
    ("shorter", "size or modification time"),
    ("same_size_and_time", "the epoch read 321 rows"),
])
def test_file_replaced_during_training(stream_files, text_encoder, tmp_path,
                                       change, reason):
    # Once, an epoch after the file was replaced trained on the new rows
    # without a word, with fewer steps than the schedule planned.
    frame = pd.read_csv(stream_files["train"])
    path, config = copied_file_config(frame, stream_files, tmp_path)
    stream = single_stream(config, text_encoder)
    assert len(epoch_row_ids(stream, 0)) == stream.steps_per_epoch
    stat = os.stat(path)
    if change == "shorter":
        frame = frame.head(200)
    else:
        # Two texts swap rows, and the file keeps its size and gets its
        # old modification time back, so only the texts' hash detects the change.
        texts = frame.loc[[250, 251], "review"].tolist()
        frame.loc[[250, 251], "review"] = texts[::-1]
    frame.to_csv(path, index=False)
    if change != "shorter":
        assert os.stat(path).st_size == stat.st_size
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(DataError, match=reason) as info:
        epoch_row_ids(stream, 1)
    assert "changed during training, found in epoch 1" in str(info.value)


@pytest.mark.parametrize("chunk_rows", [1, 10])
def test_chunks_smaller_than_batch(stream_files, text_encoder, tmp_path,
                                   chunk_rows):
    # Chunks of fewer rows than a batch of 16 carry all their rows over.
    raw = stream_config(stream_files, tmp_path / "run",
                        data={"chunk_rows": chunk_rows})
    config = build_config(raw)
    stream = single_stream(config, text_encoder)
    batches = epoch_row_ids(stream, 0)
    trained = sorted(sum(batches, []))
    assert len(batches) == stream.steps_per_epoch == 21
    assert len(trained) == TRAIN_ROWS
    assert len(set(trained)) == TRAIN_ROWS
    assert all(len(b) == 16 for b in batches[:-1])
    assert epoch_row_ids(stream, 0, skip=5) == batches[5:]


def test_chunk_of_empty_texts(stream_files, text_encoder, tmp_path):
    # Rows 100 to 199 have empty texts, so chunks 2 and 3 of 50 rows are
    # empty after cleaning.
    frame = pd.read_csv(stream_files["train"])
    frame.loc[100:199, "review"] = ""
    _, config = copied_file_config(frame, stream_files, tmp_path)
    stream = single_stream(config, text_encoder)
    batches = epoch_row_ids(stream, 0)
    assert len(sum(batches, [])) == TRAIN_ROWS - 100
    assert len(batches) == stream.steps_per_epoch


# Training ----------------------------------------------------------------


def final_weights(run_dir):
    return {k: np.asarray(v) for k, v in paddle.load(
        os.path.join(run_dir, "last", "model.pdparams")).items()}


def test_csv_and_parquet_train(stream_files, tmp_path):
    results = {}
    for name in ("train", "parquet"):
        raw = stream_config(stream_files, tmp_path / name,
                            train_path=stream_files[name],
                            train={"max_steps": 6, "eval_steps": 3})
        results[name] = train(build_config(raw))
        assert results[name]["steps"] == 6
        assert results[name]["data"]["rows"]["train"] == results[name][
            "data"]["train"]["rows_kept"]
        assert set(results[name]["valid"]) == {"category", "sentiment"}
    assert results["train"]["valid"] == results["parquet"]["valid"]
    gap = max_weight_gap(final_weights(tmp_path / "train"),
                         final_weights(tmp_path / "parquet"))
    assert gap == 0.0


def test_resume_rejects_changed_file(stream_files, tmp_path):
    path = tmp_path / "train.csv"
    frame = pd.read_csv(stream_files["train"])
    frame.to_csv(path, index=False)
    raw = stream_config(stream_files, tmp_path / "run", train_path=path,
                        train={"max_steps": 2, "eval_steps": 2})
    train(build_config(raw))
    frame.loc[5, "review"] = "完全不同的评论"
    frame.to_csv(path, index=False)
    raw["train"].update(max_steps=4, resume=True)
    with pytest.raises(UserError, match="the training data differs"):
        train(build_config(raw))


def test_resume_rejects_other_world_size(stream_files, tmp_path):
    raw = stream_config(stream_files, tmp_path / "run",
                        train={"max_steps": 2, "eval_steps": 2})
    train(build_config(raw))
    # Make the state look saved by a run of 2 processes.
    state_path = os.path.join(tmp_path, "run", "last", "trainer_state.json")
    state = read_json(state_path)
    state["world_size"] = 2
    with open(state_path, "w", encoding="utf-8") as f:
        json.dump(state, f)
    raw["train"].update(max_steps=4, resume=True)
    with pytest.raises(UserError) as info:
        train(build_config(raw))
    assert "saved by 2 training processes" in str(info.value)
    assert "resume with the same number of processes" in str(info.value)


def long_stream_config(stream_files, tmp_path, name):
    raw = stream_config(stream_files, tmp_path / name, train=LONG_TRAIN)
    return write_yaml(tmp_path / f"{name}.yaml", raw), str(tmp_path / name)


@pytest.fixture(scope="module")
def stream_reference(stream_files, tmp_path_factory):
    """An uninterrupted streaming run of the long config."""
    tmp_path = tmp_path_factory.mktemp("stream_reference")
    config_path, run_dir = long_stream_config(stream_files, tmp_path, "run")
    run_cli(config_path)
    return run_dir


def test_sigkill_resume_streaming(stream_reference, stream_files, tmp_path):
    config_path, run_dir = long_stream_config(stream_files, tmp_path, "run")
    process = start_cli(config_path)
    # Step 25 lies in the second epoch, past its first chunk.
    wait_for_state(process, run_dir, min_step=25)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    total = read_json(os.path.join(stream_reference, "metrics.json"))["steps"]
    saved = read_json(os.path.join(run_dir, "last", "trainer_state.json"))
    assert process.returncode == -signal.SIGKILL
    assert saved["step"] < total
    assert saved["epoch"] >= 1
    assert_checkpoints_load(run_dir)

    run_cli(config_path, "train.resume=true")
    with open(os.path.join(run_dir, "train.log"), encoding="utf-8") as f:
        log = f.read()
    assert f"resumed from step {saved['step']} of {total}" in log
    assert_same_result(run_dir, stream_reference)


# Data parallel ---------------------------------------------------------------


def test_two_ranks_end_identical(stream_files, tmp_path):
    raw = stream_config(stream_files, tmp_path / "run",
                        train={"max_steps": None, "epochs": 2,
                               "eval_steps": 10, "num_threads": 1})
    config_path = write_yaml(tmp_path / "config.yaml", raw)
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    env = dict(os.environ, **{RANK_WEIGHTS_ENV: str(weights_dir)})
    command = [sys.executable, "-m", "paddle.distributed.launch",
               "--nproc_per_node", "2", "--host", "127.0.0.1",
               "--ips", "127.0.0.1", "--start_port", str(free_port_pair()),
               "--log_dir", str(tmp_path / "launch"),
               "tools/train.py", "-c", config_path]
    done = subprocess.run(command, cwd=REPO_DIR, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    rank0 = final_weights_file(weights_dir / "rank0.pdparams")
    rank1 = final_weights_file(weights_dir / "rank1.pdparams")
    assert max_weight_gap(rank0, rank1) == 0.0
    with open(tmp_path / "run" / "train.log", encoding="utf-8") as f:
        log = f.read()
    steps = int(re.search(r"(\d+) steps per epoch", log).group(1))
    # The shards have 161 and 160 rows in batches of 8: both ranks run
    # 20 steps, and rank 0 leaves 1 row out of each epoch.
    assert steps == 20
    assert "leave rows out of each epoch: 1 in all" in log
    metrics = read_json(str(tmp_path / "run" / "metrics.json"))
    assert metrics["steps"] == 2 * steps


def final_weights_file(path):
    return {k: np.asarray(v) for k, v in paddle.load(str(path)).items()}
