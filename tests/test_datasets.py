"""The shipped dataset configs on slices of the real data, and the GBDT baseline."""

import importlib.util
import os

import numpy as np
import pytest

from ernie_marketing.config import load_config
from ernie_marketing.data import normalize_label, prepare_data
from ernie_marketing.data.readers import lacks_header
from ernie_marketing.data.text import template_fields
from ernie_marketing.metrics import task_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(ROOT, "configs")
DATASETS = ["hillstrom", "bank_marketing", "cdnow", "ali_ccp"]
TASK_TYPES = {
    "hillstrom": {"visit": "binary", "conversion": "binary",
                  "spend": "zero_inflated"},
    "bank_marketing": {"y": "binary"},
    "cdnow": {"repurchase": "binary", "future_spend": "zero_inflated"},
    "ali_ccp": {"click": "binary", "purchase": "binary"},
}
PARENTS = {"hillstrom": {"conversion": "visit"}, "ali_ccp": {"purchase": "click"}}


def dataset_config(name, *overrides):
    return load_config(os.path.join(CONFIG_DIR, f"{name}.yaml"), overrides)


@pytest.fixture(scope="module")
def prepared():
    """Each dataset prepared once, on at most 1,000 training rows."""
    cache = {}

    def get(name):
        if name not in cache:
            config = dataset_config(name, "data.max_rows=1000")
            cache[name] = (config, prepare_data(config))
        return cache[name]

    return get


# Configs -------------------------------------------------------------------


@pytest.mark.parametrize("name", DATASETS)
def test_config_loads(name):
    config = dataset_config(name)
    assert {t.name: t.type for t in config.tasks} == TASK_TYPES[name]
    parents = {t.name: t.parent for t in config.tasks if t.parent}
    assert parents == PARENTS.get(name, {})
    assert os.path.isfile(config.data.train_path)
    assert config.tokenizer.vocab_file.endswith("ernie-3.0-base-zh/vocab.txt")
    assert config.model.name_or_path is None


@pytest.mark.parametrize("name", DATASETS)
def test_config_header_comment(name):
    with open(os.path.join(CONFIG_DIR, f"{name}.yaml"), encoding="utf-8") as f:
        header = f.read().split("\n\n")[0]
    assert header.startswith("# ")
    for task in TASK_TYPES[name]:
        assert task in header


def test_bank_never_uses_duration():
    config = dataset_config("bank_marketing")
    assert "duration" not in config.features.columns
    assert "duration" not in template_fields(config.data.text_template)


def test_hillstrom_treatment_is_input():
    config = dataset_config("hillstrom")
    assert "segment" in config.features.categorical
    assert "segment" in template_fields(config.data.text_template)


def test_cdnow_window_inside_data():
    transactions = dataset_config("cdnow").data.transactions
    end = np.datetime64(transactions.cutoff_date()) + np.timedelta64(
        7 * transactions.horizon_weeks, "D")
    assert end <= np.datetime64("1998-06-30")


# prepare_data on real slices ----------------------------------------------


@pytest.mark.parametrize("name", ["hillstrom", "bank_marketing", "cdnow"])
def test_prepare_split_sizes(prepared, name):
    _, data = prepared(name)
    rows = {split: len(data.splits[split]) for split in data.splits}
    assert rows == {"train": 800, "valid": 100, "test": 100}


@pytest.mark.parametrize("name", DATASETS)
def test_prepare_features_shapes(prepared, name):
    config, data = prepared(name)
    for split in data.splits.values():
        numeric = split.numeric_features
        categorical = split.categorical_features
        if config.features.numeric:
            assert numeric.shape[0] == len(split)
            assert np.isfinite(numeric).all()
        if config.features.categorical:
            assert categorical.shape == (len(split),
                                         len(config.features.categorical))


@pytest.mark.parametrize("name", DATASETS)
def test_prepare_labels_per_task(prepared, name):
    config, data = prepared(name)
    for split in data.splits.values():
        assert set(split.labels) == set(TASK_TYPES[name])
        for task in config.tasks:
            labels = np.asarray(split.labels[task.name])
            assert labels.shape == (len(split),)
            if task.type == "binary":
                assert set(np.unique(labels)) <= {0, 1}
            else:
                assert (labels >= 0).all()


def test_bank_template_dotted_fields(prepared):
    _, data = prepared("bank_marketing")
    split = data.splits["train"]
    frame = split.frame
    for i in range(3):
        text = split.texts[i]
        # Integral floats are written without ".0" (5191.0 -> "5191").
        value = {c: normalize_label(frame[c].iloc[i])
                 for c in ("emp.var.rate", "cons.price.idx", "nr.employed")}
        assert f"就业变化率{value['emp.var.rate']}，" in text
        assert f"物价指数{value['cons.price.idx']}，" in text
        assert text.endswith(f"就业人数{value['nr.employed']}")


def test_hillstrom_first_task_stratified(prepared):
    _, data = prepared("hillstrom")
    rates = [np.mean(data.splits[s].labels["visit"]) for s in data.splits]
    assert max(rates) - min(rates) < 0.02


def test_cdnow_ids_are_strings(prepared):
    _, data = prepared("cdnow")
    ids = data.splits["train"].row_ids
    assert all(isinstance(i, str) and len(i) == 5 for i in ids)
    assert data.splits["train"].texts[0].startswith("首次购买于1997年")


def test_ali_ccp_headerless_test_file(prepared):
    _, data = prepared("ali_ccp")
    assert len(data.splits["train"]) == 48
    test = data.splits["test"]
    assert len(test) == 50
    assert test.frame["101"].iloc[0] == 180467
    assert test.labels["click"].sum() > 0


@pytest.mark.parametrize("first_row, expected", [
    (["0", "0", "180467"], True),
    (["click", "purchase", "101"], False),
    (["0", "0"], False),
    (["0", "x", "1"], False),
])
def test_lacks_header(first_row, expected):
    assert lacks_header(first_row, ["click", "purchase", "101"]) is expected


def test_lacks_header_numeric_reference():
    assert not lacks_header(["1", "2"], ["101", "121"])


# GBDT baseline ---------------------------------------------------------------


def load_baseline():
    path = os.path.join(ROOT, "benchmarks", "gbdt_baseline.py")
    spec = importlib.util.spec_from_file_location("gbdt_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gbdt_baseline_metric_names(tmp_path):
    baseline = load_baseline()
    config_path = os.path.join(CONFIG_DIR, "cdnow.yaml")
    args = baseline.parse_args(["-c", config_path, "--max-iter", "20",
                                "-o", "data.max_rows=3000"])
    report = baseline.run(load_config(config_path, args.override), args)
    scores = report["test"]
    assert list(scores["repurchase"])[1:] == list(task_metrics("binary"))
    assert list(scores["future_spend"])[1:] == list(
        task_metrics("zero_inflated"))
    assert scores["repurchase"]["count"] == 300
    assert 0.5 < scores["repurchase"]["roc_auc"] <= 1.0
    assert scores["future_spend"]["rmse"] > 0


def test_gbdt_baseline_same_rows(prepared):
    baseline = load_baseline()
    config, data = prepared("cdnow")
    frames = baseline.feature_frames(config, data.splits)
    for name, split in data.splits.items():
        assert np.array_equal(frames[name]["recency_days"].to_numpy(),
                              split.frame["recency_days"].to_numpy())
    assert str(frames["train"]["first_purchase_month"].dtype) == "category"


def test_gbdt_baseline_unseen_category_missing(prepared):
    baseline = load_baseline()
    config, data = prepared("bank_marketing")
    test = data.splits["test"]
    test.frame.loc[0, "job"] = "astronaut"
    frames = baseline.feature_frames(config, data.splits)
    assert frames["test"]["job"].isna().iloc[0]
    assert not frames["test"]["job"].isna().iloc[1:].any()
