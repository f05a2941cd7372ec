"""Bad inputs that once passed silently or with a misleading error.

Each now raises an error naming the value and the fix, or, for feature
values near the float64 limit, is standardised without overflow. A
prediction input far beyond the training values logs a warning. Feature
and label cases use slices of the real Hillstrom campaign table, and no
test trains a model.
"""

import logging
import os
import types

import numpy as np
import pandas as pd
import pytest

from ernie_marketing.config import FeatureConfig
from ernie_marketing.config.schema import TaskConfig, TransactionsConfig
from ernie_marketing.data import FeatureEncoder
from ernie_marketing.data import transactions as tx
from ernie_marketing.data.labels import LabelSetVocab, TargetScaler
from ernie_marketing.decision.command import run_decide
from ernie_marketing.decision.config import load_decision_config
from ernie_marketing.decision.counterfactual import predict_actions
from ernie_marketing.errors import ConfigError, DataError

SHARED_DIR = os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
HILLSTROM_ZIP = os.path.join(SHARED_DIR, "data", "hillstrom",
                             "hillstrom.csv.zip")
ACTIONS = ["No E-Mail", "Mens E-Mail", "Womens E-Mail"]
DECISION_CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs",
                               "decision", "hillstrom.yaml")


@pytest.fixture(scope="module")
def hillstrom():
    frame = pd.read_csv(HILLSTROM_ZIP).sample(n=300, random_state=3)
    return frame.reset_index(drop=True)


def fit(frame, numeric=("recency", "history"), categorical=("channel",)):
    config = FeatureConfig(numeric=list(numeric), categorical=list(categorical))
    return FeatureEncoder.fit(config, frame)


# Structured features ----------------------------------------------------


def test_huge_feature_values_keep_finite_std(hillstrom):
    train = hillstrom.copy()
    train.loc[5, "history"] = 1e300
    encoder = fit(train)
    history = encoder.numeric.index("history")
    assert np.isfinite(encoder.means[history])
    assert np.isfinite(encoder.stds[history])
    assert encoder.stds[history] > 0
    numeric, _ = encoder.transform(train, "train")
    assert np.isfinite(numeric).all()


def test_column_scaled_by_1e300_keeps_its_order(hillstrom):
    train = hillstrom.copy()
    train["history"] = train["history"] * 1e300
    encoder = fit(train)
    numeric, _ = encoder.transform(train, "train")
    column = numeric[:, encoder.numeric.index("history")]
    assert np.isfinite(column).all()
    # Standardising is monotonic, so the order of the rows survives.
    assert (np.argsort(column, kind="stable")
            == np.argsort(train["history"].to_numpy(), kind="stable")).all()


def test_float32_overflow_at_prediction_raises(hillstrom):
    encoder = fit(hillstrom)
    rows = hillstrom.head(10).copy()
    rows.loc[3, "history"] = 1e300
    with pytest.raises(DataError, match=r"'history'.*row 3 = 1e\+300"):
        encoder.transform(rows, "input")


def test_far_value_at_prediction_warns(hillstrom, caplog):
    encoder = fit(hillstrom)
    rows = hillstrom.head(10).copy()
    rows.loc[4, "history"] = 1e9
    with caplog.at_level(logging.WARNING, logger="ernie_marketing"):
        numeric, _ = encoder.transform(rows, "input")
    assert np.isfinite(numeric).all()
    warnings = [r.getMessage() for r in caplog.records
                if "training standard deviations" in r.getMessage()]
    assert len(warnings) == 1
    assert "numeric feature history has 1 values" in warnings[0]
    assert "row 4 = 1e+09" in warnings[0]


def test_training_values_never_warn_far(hillstrom, caplog):
    train = hillstrom.copy()
    train.loc[5, "history"] = 1e300
    encoder = fit(train)
    with caplog.at_level(logging.WARNING, logger="ernie_marketing"):
        encoder.transform(train, "valid")
    assert "training standard deviations" not in caplog.text


def test_categorical_all_missing_raises(hillstrom):
    train = hillstrom.copy()
    train["channel"] = np.nan
    with pytest.raises(DataError, match="'channel' is empty in the training"):
        fit(train)


def test_categorical_rare_values_still_fit(hillstrom):
    # Values below min_frequency leave an empty vocabulary, but the column
    # is not empty, so it still fits (every value gets the unseen id).
    config = FeatureConfig(numeric=[], categorical=["channel"],
                           min_frequency=10_000)
    encoder = FeatureEncoder.fit(config, hillstrom)
    assert encoder.vocabularies == [[]]


# Regression targets ------------------------------------------------------


@pytest.mark.parametrize("value", [1e39, 1e300])
def test_target_beyond_float32_raises(hillstrom, value):
    task = TaskConfig(name="spend", type="regression", label_column="spend")
    values = hillstrom["spend"].to_numpy(copy=True)
    values[7] = value
    with pytest.raises(DataError, match=r"float32 range.*row 7"):
        TargetScaler.build(task, values)


def test_target_near_float32_max_has_finite_std(hillstrom):
    task = TaskConfig(name="spend", type="regression", label_column="spend")
    values = hillstrom["spend"].to_numpy(copy=True)
    values[7] = 3e38
    scaler = TargetScaler.build(task, values)
    assert np.isfinite(scaler.std)
    assert scaler.std > 1e36


def test_ranking_top_k_over_items_warns(caplog):
    task = TaskConfig(name="items", type="ranking", label_column="items",
                      top_k=[2, 10])
    with caplog.at_level(logging.WARNING, logger="ernie_marketing.data.labels"):
        vocab = LabelSetVocab.build(task, ["i1|i2", "i3", "i2|i4", "i5"])
    assert len(vocab) == 5
    assert "top_k=[2, 10] reaches the 5 candidate items" in caplog.text


def test_ranking_top_k_below_items_quiet(caplog):
    task = TaskConfig(name="items", type="ranking", label_column="items",
                      top_k=[2])
    with caplog.at_level(logging.WARNING, logger="ernie_marketing.data.labels"):
        LabelSetVocab.build(task, ["i1|i2", "i3", "i2|i4", "i5"])
    assert "top_k" not in caplog.text


# Transactions ------------------------------------------------------------


def test_refunds_only_before_cutoff_raises():
    log = pd.DataFrame({
        "customer": ["1", "1", "2", "2"],
        "day": ["20200105", "20200210", "20200110", "20200215"],
        "amount": [-5.0, 20.0, -3.0, 12.0],
    })
    config = TransactionsConfig(customer_column="customer", date_column="day",
                                amount_column="amount", cutoff="2020-01-31",
                                horizon_weeks=2, negative_amount="refund")
    config.validate("data.transactions")
    with pytest.raises(DataError, match="no customer .* has a purchase on or "
                                        "before"):
        tx.customer_table(log, config, "log.txt")


# Counterfactual predictions ---------------------------------------------


def export_like_predictor(text_template, feature_columns):
    """Return an object with the export fields `predict_actions` checks first."""
    preprocess = {"max_length": 32, "text_columns": [],
                  "text_template": text_template, "text_separator": " ",
                  "id_column": None, "feature_columns": feature_columns}
    tasks = [{"name": "visit", "type": "binary"}]
    return types.SimpleNamespace(preprocess=preprocess, tasks=tasks)


def test_model_without_treatment_input_raises(hillstrom):
    predictor = export_like_predictor("渠道{channel}", ["recency", "channel"])
    with pytest.raises(ConfigError, match="does not take the treatment "
                                          "column 'segment'"):
        predict_actions(predictor, hillstrom, "segment", ACTIONS, ["visit"])


@pytest.mark.parametrize("template, features", [
    ("邮件{segment}", ["recency"]),
    ("渠道{channel}", ["recency", "segment"]),
])
def test_treatment_in_text_or_features_passes_check(hillstrom, template,
                                                    features):
    predictor = export_like_predictor(template, features)
    # The check passes, so the fake predictor's missing predict_frame is
    # the next thing to fail.
    with pytest.raises(AttributeError, match="predict_frame"):
        predict_actions(predictor, hillstrom, "segment", ACTIONS, ["visit"])


def test_report_path_is_file_writes_nothing(hillstrom, tmp_path):
    config = load_decision_config(DECISION_CONFIG)
    predictions = hillstrom.copy()
    # Observed rates per action stand in for model predictions.
    for outcome in ("visit", "conversion", "spend"):
        for action in ACTIONS:
            rows = hillstrom["segment"] == action
            predictions[f"{outcome}@{action}"] = hillstrom[outcome][rows].mean()
    report_file = tmp_path / "report"
    report_file.write_text("not a directory")
    output = tmp_path / "decisions.csv"
    with pytest.raises(ConfigError, match="is a file"):
        run_decide(config, predictions, str(output), str(report_file))
    assert not output.exists()


def test_metrics_json_is_strict(tmp_path):
    """A NaN metric (an AUC over one class) is written as null, not NaN."""
    import json

    from ernie_marketing.engine.checkpoint import write_json

    path = tmp_path / "metrics.json"
    write_json(str(path), {"auc": float("nan"), "loss": [1.5, float("inf")],
                           "n": np.float64(2.0)})

    def reject(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    with open(path, encoding="utf-8") as f:
        payload = json.load(f, parse_constant=reject)
    assert payload == {"auc": None, "loss": [1.5, None], "n": 2.0}
