"""Shared fixtures: real data from ../shared, tiny ERNIE configs, one trained run.

Tests never copy the shared data into the repository. They read it in place
and write the small derived files they need (slices in other formats, tiny
configs, checkpoints) under pytest's `tmp_path`.
"""

import collections
import copy
import glob
import logging
import os

import pandas as pd
import pytest
import yaml

SHARED_DIR = os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
SHOPPING_ZIP = os.path.join(SHARED_DIR, "data", "online_shopping_10_cats",
                            "online_shopping_10_cats.zip")
VOCAB_FILE = os.path.join(SHARED_DIR, "ernie", "ernie-3.0-base-zh", "vocab.txt")

# Known facts about the ERNIE 3.0 vocabulary and the review data.
ERNIE_UNK_ID = 39979
SHOPPING_ROWS = 62774
SHOPPING_CATEGORIES = 10
LONGEST_REVIEW_CHARS = 2876


def pytest_configure(config):
    missing = [p for p in (SHOPPING_ZIP, VOCAB_FILE) if not os.path.isfile(p)]
    if missing:
        raise pytest.UsageError(f"shared test data not found: {missing}; the "
                                "tests expect ../shared beside the repository")


@pytest.fixture(scope="session")
def shopping_zip():
    return SHOPPING_ZIP


@pytest.fixture(scope="session")
def vocab_file():
    return VOCAB_FILE


@pytest.fixture(scope="session")
def shopping_frame():
    """The whole review table as pandas reads it, with no cleaning."""
    return pd.read_csv(SHOPPING_ZIP, encoding="utf-8")


@pytest.fixture(scope="session")
def reviews(shopping_frame):
    """A fixed slice of 401 real reviews: the first row, then 40 per category.

    The first row of the file (which starts with a byte-order mark) is
    included, so files written from the slice keep that quirk.
    """
    frame = shopping_frame.iloc[1:].dropna(subset=["review"])
    frame = frame.drop_duplicates(subset=["review"])
    sample = frame.groupby("cat", group_keys=False).sample(n=40, random_state=0)
    sample = pd.concat([shopping_frame.iloc[[0]], sample])
    return sample.sort_index().reset_index(drop=True)


# The tiny encoder and both task heads without dropout, for runs whose
# weights must match another run's: dropout masks of a split batch differ
# from those of the whole batch.
NO_DROPOUT_SECTIONS = {
    "model": {"encoder": {"hidden_size": 32, "num_hidden_layers": 1,
                          "num_attention_heads": 2, "intermediate_size": 64,
                          "max_position_embeddings": 128,
                          "hidden_dropout_prob": 0.0,
                          "attention_probs_dropout_prob": 0.0}},
    "tasks": [
        {"name": "category", "type": "multiclass", "label_column": "cat",
         "dropout": 0.0},
        {"name": "sentiment", "type": "binary", "label_column": "label",
         "dropout": 0.0},
    ],
}


def max_weight_gap(first, second):
    """Return the largest absolute difference between two weight dicts."""
    assert sorted(first) == sorted(second)
    return max(float(abs(first[k].astype("float64") - second[k]).max())
               for k in first)


def tiny_config(train_path, output_dir, **sections):
    """Return a config dict for a tiny ERNIE trained on `cat` and `label`.

    Each keyword is a section whose keys update the defaults, e.g.
    `train={"max_steps": 4}`.
    """
    config = {
        "data": {"train_path": str(train_path), "text_columns": ["review"],
                 "split": [0.8, 0.1, 0.1], "seed": 0},
        "tokenizer": {"vocab_file": VOCAB_FILE, "max_length": 64},
        "model": {"encoder": {"hidden_size": 32, "num_hidden_layers": 1,
                              "num_attention_heads": 2,
                              "intermediate_size": 64,
                              "max_position_embeddings": 128}},
        "tasks": [
            {"name": "category", "type": "multiclass", "label_column": "cat"},
            {"name": "sentiment", "type": "binary", "label_column": "label"},
        ],
        "train": {"epochs": 1, "max_steps": 8, "batch_size": 16,
                  "eval_batch_size": 64, "learning_rate": 1e-3,
                  "eval_steps": 4, "logging_steps": 2, "seed": 42,
                  "num_threads": 2, "progress_bar": "off"},
        "output": {"dir": str(output_dir)},
    }
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(config.get(section), dict):
            config[section].update(copy.deepcopy(values))
        else:
            config[section] = copy.deepcopy(values)
    return config


def write_yaml(path, payload):
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(payload, f, allow_unicode=True, sort_keys=False)
    return str(path)


def scalars(run_dir):
    """Return {tag: [(step, value)]} from the one VisualDL file in run_dir/vdl."""
    from visualdl import LogReader

    files = glob.glob(os.path.join(run_dir, "vdl", "vdlrecords.*.log"))
    assert len(files) == 1, files
    reader = LogReader(file_path=files[0])
    return {tag: [(r.id, r.value) for r in reader.get_data("scalar", tag)]
            for tag in reader.get_tags()["scalar"]}


@pytest.fixture
def make_config(tmp_path):
    """Write a tiny config to tmp_path/config.yaml; return (path, dict)."""

    def make(train_path=None, **sections):
        train_path = train_path or os.path.join(tmp_path, "train.csv")
        payload = tiny_config(train_path, tmp_path / "run", **sections)
        return write_yaml(tmp_path / "config.yaml", payload), payload

    return make


@pytest.fixture(scope="session")
def reviews_csv(reviews, tmp_path_factory):
    path = tmp_path_factory.mktemp("reviews") / "reviews.csv"
    reviews.to_csv(path, index=False)
    return str(path)


@pytest.fixture(scope="session")
def partial_labels_csv(reviews, tmp_path_factory):
    """The first 101 reviews of `reviews` with every third sentiment label
    removed, as a CSV file."""
    frame = reviews.head(101).copy()
    frame.loc[frame.index % 3 == 0, "label"] = None
    path = tmp_path_factory.mktemp("partial_labels") / "reviews.csv"
    frame.to_csv(path, index=False)
    return str(path)


TrainedRun = collections.namedtuple(
    "TrainedRun", ["config", "result", "output_dir", "best_dir"])


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One tiny run on 300 real reviews, shared by the training tests.

    The data comes straight from the real zip, sampled with data.max_rows.
    """
    from ernie_marketing.config import build_config
    from ernie_marketing.engine.trainer import train

    output_dir = tmp_path_factory.mktemp("trained") / "run"
    raw = tiny_config(SHOPPING_ZIP, output_dir, data={"max_rows": 300})
    config = build_config(raw)
    result = train(config)
    return TrainedRun(config, result, str(output_dir),
                      os.path.join(output_dir, "best"))


@pytest.fixture(autouse=True)
def restore_package_logging():
    """Undo `setup_logging` after each test.

    The trainer and the CLI attach a handler to the package logger that
    keeps a reference to the current `sys.stderr`, and pytest closes that
    stream after the test.
    """
    package_logger = logging.getLogger("ernie_marketing")
    handlers = list(package_logger.handlers)
    propagate = package_logger.propagate
    level = package_logger.level
    yield
    for handler in list(package_logger.handlers):
        if handler not in handlers:
            package_logger.removeHandler(handler)
            handler.close()
    package_logger.propagate = propagate
    package_logger.setLevel(level)


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """Return the tiny model trained and exported once for all export tests."""
    from _helpers_export import trained_export

    return trained_export(tmp_path_factory)
