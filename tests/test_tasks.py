"""Task types: label encoding, masked losses, chained tasks, predictions, metrics.

Losses are checked against NumPy on small hand-made arrays. Label encoders
and the data pipeline run on slices of the real Hillstrom and Ali-CCP data.
"""

import copy
import logging
import math
import os
import re

import numpy as np
import paddle
import pandas as pd
import pytest
from conftest import SHARED_DIR, VOCAB_FILE

from ernie_marketing.config import build_config, lower_is_better, task_metrics
from ernie_marketing.config.schema import TaskConfig
from ernie_marketing.data import MISSING, prepare_data
from ernie_marketing.data.labels import (
    LabelSetVocab,
    TargetScaler,
    label_encoder_from_schema,
    labelled_rows,
)
from ernie_marketing.engine.trainer import _is_improvement
from ernie_marketing.errors import ConfigError, DataError
from ernie_marketing.losses import masked_task_loss, multitask_loss
from ernie_marketing.metrics import (
    binary_scores,
    expected_calibration_error,
    normalized_gini,
    ranking_scores,
    regression_scores,
    selection_value,
    task_scores,
)
from ernie_marketing.predictions import predict_tasks, sigmoid

HILLSTROM_ZIP = os.path.join(SHARED_DIR, "data", "hillstrom", "hillstrom.csv.zip")
ALI_CCP_CSV = os.path.join(SHARED_DIR, "data", "ctr_samples",
                           "multitask_aitm__sample_data_train_train.csv")
NAN = float("nan")

TARGET = {"log1p": True, "mean": 1.5, "std": 2.0}
TASKS = [
    {"name": "category", "type": "multiclass"},
    {"name": "click", "type": "binary"},
    {"name": "buy", "type": "binary", "parent": "click"},
    {"name": "interests", "type": "multilabel"},
    {"name": "item", "type": "ranking", "top_k": [1, 2]},
    {"name": "sales", "type": "regression", "target": TARGET, "loss": "mse"},
    {"name": "spend", "type": "zero_inflated", "target": TARGET,
     "loss": "huber", "huber_delta": 0.5},
]
WIDTHS = {"category": 3, "click": 1, "buy": 1, "interests": 3, "item": 4,
          "sales": 1, "spend": 2}


def make_logits(rows=4, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return {name: (scale * rng.normal(size=(rows, width))).astype("float32")
            for name, width in WIDTHS.items()}


def make_labels():
    """Four rows; row 1 has no label for any task."""
    m = MISSING
    return {
        "category": np.array([2, m, 0, 1]),
        "click": np.array([1, m, 0, 1]),
        "buy": np.array([1, m, 0, 0]),
        "interests": np.array([[1, 0, 1], [m, m, m], [0, 0, 0], [0, 1, 0]],
                              dtype="float32"),
        "item": np.array([[0, 1, 0, 1], [m, m, m, m], [1, 0, 0, 0],
                          [0, 0, 1, 0]], dtype="float32"),
        "sales": np.array([3.0, NAN, 0.0, 12.5], dtype="float32"),
        "spend": np.array([0.0, NAN, 7.0, 20.0], dtype="float32"),
    }


def tensors(arrays, stop_gradient=True):
    return {name: paddle.to_tensor(value, stop_gradient=stop_gradient)
            for name, value in arrays.items()}


def task(name):
    return next(t for t in TASKS if t["name"] == name)


def numpy_bce(logit, y):
    p = sigmoid(logit)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def standardise(y):
    return (np.log1p(y) - TARGET["mean"]) / TARGET["std"]


# Losses against NumPy --------------------------------------------------

LABELLED = [0, 2, 3]


def reference_loss(name, logits, labels):
    """Return the NumPy loss of one task on the labelled rows 0, 2 and 3."""
    x, y = logits[name][LABELLED].astype(np.float64), labels[name][LABELLED]
    if name == "category":
        shifted = x - x.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return -log_p[np.arange(3), y].mean()
    if name == "click":
        return numpy_bce(x[:, 0], y).mean()
    if name == "interests":
        return numpy_bce(x, y).mean(axis=1).mean()
    if name == "item":
        shifted = x - x.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        target = y / y.sum(axis=1, keepdims=True)
        return -(target * log_p).sum(axis=1).mean()
    if name == "sales":
        return ((x[:, 0] - standardise(y)) ** 2).mean()
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["category", "click", "interests", "item",
                                  "sales"])
def test_loss_matches_numpy(name):
    logits, labels = make_logits(), make_labels()
    loss, count = masked_task_loss(task(name), paddle.to_tensor(logits[name]),
                                   paddle.to_tensor(labels[name]))
    assert float(count) == 3
    assert float(loss) == pytest.approx(reference_loss(name, logits, labels),
                                        rel=1e-5)


def huber(residual, delta):
    size = np.abs(residual)
    return np.where(size <= delta, 0.5 * residual ** 2,
                    delta * (size - 0.5 * delta))


def test_zero_inflated_loss_parts():
    logits, labels = make_logits(scale=2.0), make_labels()
    loss, count = masked_task_loss(task("spend"),
                                   paddle.to_tensor(logits["spend"]),
                                   paddle.to_tensor(labels["spend"]))
    x, y = logits["spend"][LABELLED], labels["spend"][LABELLED]
    occurrence = numpy_bce(x[:, 0], (y > 0).astype(float)).mean()
    positive = y > 0
    amount = huber(x[positive, 1] - standardise(y[positive]), 0.5).mean()
    assert float(count) == 3
    assert float(loss) == pytest.approx(occurrence + amount, rel=1e-5)


def test_huber_is_quadratic_then_linear():
    spec = {"type": "regression", "loss": "huber", "huber_delta": 1.0,
            "target": {"log1p": False, "mean": 0.0, "std": 1.0}}
    labels = paddle.to_tensor(np.zeros(2, dtype="float32"))
    logits = paddle.to_tensor(np.array([[0.5], [3.0]], dtype="float32"))
    loss, _ = masked_task_loss(spec, logits, labels)
    assert float(loss) == pytest.approx((0.125 + 2.5) / 2)


@pytest.mark.parametrize("name", list(WIDTHS))
def test_unlabelled_row_ignored(name):
    logits, labels = make_logits(), make_labels()
    before = multitask_loss(TASKS, [1.0] * len(TASKS),
                            list(tensors(logits).values()), tensors(labels))
    logits[name][1] = 40.0  # row 1 has no label for any task
    after = multitask_loss(TASKS, [1.0] * len(TASKS),
                           list(tensors(logits).values()), tensors(labels))
    assert float(after[0]) == pytest.approx(float(before[0]), rel=1e-6)


def test_all_missing_batch_zero_loss():
    logits = make_logits(scale=10.0)
    labels = {name: np.full_like(values, NAN if values.dtype.kind == "f"
                                 else MISSING)
              for name, values in make_labels().items()}
    for name in ("interests", "item"):
        labels[name] = np.full_like(labels[name], MISSING)
    inputs = tensors(logits, stop_gradient=False)
    total, task_losses = multitask_loss(TASKS, [1.0] * len(TASKS),
                                        list(inputs.values()), tensors(labels))
    total.backward()
    assert float(total) == 0.0
    for name, (loss, count) in task_losses.items():
        assert float(loss) == 0.0, name
        assert float(count) == 0.0, name
    for name, tensor in inputs.items():
        grad = tensor.grad
        assert grad is None or not np.any(grad.numpy()), name


def test_labelled_counts_per_task():
    _, task_losses = multitask_loss(
        TASKS, [1.0] * len(TASKS), list(tensors(make_logits()).values()),
        tensors(make_labels()))
    counts = {name: float(count) for name, (_, count) in task_losses.items()}
    assert counts == {name: 3.0 for name in WIDTHS}


@pytest.mark.parametrize("kind, labels", [
    ("multiclass", np.array([MISSING, MISSING])),
    ("binary", np.array([MISSING, MISSING])),
    ("multilabel", np.full((2, 3), MISSING, dtype=np.float32)),
    ("ranking", np.full((2, 3), MISSING, dtype=np.float32)),
    ("regression", np.array([NAN, NAN])),
    ("zero_inflated", np.array([NAN, NAN])),
])
def test_metrics_nan_without_labels(kind, labels):
    spec = {"name": "t", "type": kind, "labels": ["a", "b", "c"],
            "target": {"log1p": False, "mean": 0.0, "std": 1.0}}
    logits = np.zeros((2, {"binary": 1, "regression": 1,
                           "zero_inflated": 2}.get(kind, 3)), "float32")
    scores = task_scores(spec, predict_tasks([spec], [logits])["t"], labels)
    assert scores["count"] == 0
    assert list(scores)[1:] == list(task_metrics(kind))
    assert all(math.isnan(v) for k, v in scores.items() if k != "count")


# Chained (ESMM) tasks --------------------------------------------------


def esmm_loss(click_logits, buy_logits, buy_labels, click_weight=0.0):
    tasks = [task("click"), task("buy")]
    labels = {"click": paddle.to_tensor(np.full(len(buy_labels), MISSING)),
              "buy": paddle.to_tensor(buy_labels)}
    return multitask_loss(tasks, [click_weight, 1.0],
                          [click_logits, buy_logits], labels)


def test_esmm_loss_matches_product():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(2, 5, 1)).astype("float32")
    y = np.array([1, 0, 0, 1, MISSING])
    total, losses = esmm_loss(paddle.to_tensor(a), paddle.to_tensor(b), y)
    p = sigmoid(a[:4, 0]) * sigmoid(b[:4, 0])
    expected = -(y[:4] * np.log(p) + (1 - y[:4]) * np.log(1 - p)).mean()
    assert float(losses["buy"][0]) == pytest.approx(expected, rel=1e-5)
    assert float(losses["buy"][1]) == 4


def test_esmm_gradient_reaches_both_heads():
    rng = np.random.default_rng(4)
    a = paddle.to_tensor(rng.normal(size=(4, 1)).astype("float32"),
                         stop_gradient=False)
    b = paddle.to_tensor(rng.normal(size=(4, 1)).astype("float32"),
                         stop_gradient=False)
    total, _ = esmm_loss(a, b, np.array([1, 0, 1, 0]))
    total.backward()
    assert np.all(a.grad.numpy() != 0)
    assert np.all(b.grad.numpy() != 0)


def test_esmm_extreme_logits_finite():
    a = paddle.to_tensor(np.array([[60.0], [-60.0], [60.0], [-60.0]],
                                  dtype="float32"), stop_gradient=False)
    b = paddle.to_tensor(np.array([[60.0], [60.0], [-60.0], [-60.0]],
                                  dtype="float32"), stop_gradient=False)
    total, _ = esmm_loss(a, b, np.array([0, 1, 1, 0]))
    total.backward()
    assert math.isfinite(float(total))
    assert np.isfinite(a.grad.numpy()).all()
    assert np.isfinite(b.grad.numpy()).all()


def test_esmm_score_below_parent():
    logits = make_logits(rows=50, seed=5, scale=3.0)
    predictions = predict_tasks(TASKS, [logits[t["name"]] for t in TASKS])
    click, buy = predictions["click"]["score"], predictions["buy"]["score"]
    assert np.all(buy <= click)
    np.testing.assert_allclose(buy, click * predictions["buy"]["conditional"])
    np.testing.assert_allclose(predictions["buy"]["conditional"],
                               sigmoid(logits["buy"][:, 0]))


# Predictions -----------------------------------------------------------


def test_zero_inflated_prediction():
    logits = np.array([[0.0, 0.0], [2.0, 1.0], [-1.0, -5.0]], dtype="float32")
    prediction = predict_tasks([task("spend")], [logits])["spend"]
    amount = np.maximum(np.expm1(logits[:, 1] * 2.0 + 1.5), 0.0)
    probability = sigmoid(logits[:, 0])
    np.testing.assert_allclose(prediction["probability_positive"], probability)
    np.testing.assert_allclose(prediction["value"], probability * amount)
    assert prediction["value"][2] == 0.0  # a negative amount is cut at 0


def test_regression_prediction_inverts_target():
    y = np.array([0.0, 3.0, 12.5, 400.0])
    logits = standardise(y).astype("float32")[:, None]
    prediction = predict_tasks([task("sales")], [logits])["sales"]
    np.testing.assert_allclose(prediction["value"], y, rtol=1e-5)


# Metrics ---------------------------------------------------------------


def test_binary_log_loss_and_ece():
    y = np.array([1, 0, 1, 0])
    score = np.array([0.9, 0.1, 0.6, 0.7])
    scores = binary_scores(y, score)
    expected = -np.mean(np.log([0.9, 0.9, 0.6, 0.3]))
    assert scores["log_loss"] == pytest.approx(expected)
    # One row per bin: gaps 0.1, 0.1, 0.4, 0.7, each weighted by 1/4.
    assert scores["ece"] == pytest.approx(0.325)
    assert scores["roc_auc"] == pytest.approx(0.75)


def test_ece_perfectly_calibrated():
    score = np.repeat([0.25, 0.75], 4)
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    assert expected_calibration_error(y, score) == pytest.approx(0.0)


def test_multilabel_scores():
    spec = {"name": "t", "type": "multilabel", "labels": ["a", "b", "c"]}
    labels = np.array([[1, 0, 1], [MISSING] * 3, [0, 1, 0]], dtype="float32")
    probs = np.array([[0.9, 0.2, 0.4], [0.9, 0.9, 0.9], [0.1, 0.8, 0.6]])
    scores = task_scores(spec, {"probs": probs}, labels)
    # Row 0 predicts {a}, row 2 {b, c}: 2 true positives, 1 false positive,
    # 1 false negative.
    assert scores["count"] == 2
    assert scores["micro_f1"] == pytest.approx(2 / 3)
    assert scores["macro_f1"] == pytest.approx((1 + 1 + 0) / 3)


def test_regression_scores():
    y = np.array([0.0, 2.0, 4.0, 6.0])
    pred = np.array([1.0, 2.0, 3.0, 8.0])
    scores = regression_scores(y, pred)
    assert scores["rmse"] == pytest.approx(math.sqrt(6 / 4))
    assert scores["mae"] == pytest.approx(1.0)
    assert scores["r2"] == pytest.approx(1 - 6 / 20)
    assert scores["gini"] == pytest.approx(1.0)  # same order as y


def test_gini_constant_and_reversed():
    y = np.array([0.0, 0.0, 3.0, 10.0, 1.0])
    assert normalized_gini(y, np.full(5, 2.0)) == pytest.approx(0.0)
    assert normalized_gini(y, -y) == pytest.approx(-1.0)
    assert math.isnan(normalized_gini(np.zeros(5), y))


def test_ranking_scores():
    relevant = np.array([[0, 1, 0, 1], [1, 0, 0, 0]])
    scores = np.array([[0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]])
    result = ranking_scores(relevant, scores, [1, 2])
    # Row 0 ranks items 0, 1, 2, 3: hits at ranks 2 and 4. Row 1 ranks
    # item 0 last.
    assert result["recall@1"] == pytest.approx(0.0)
    assert result["recall@2"] == pytest.approx((0.5 + 0.0) / 2)
    ideal = 1 + 1 / math.log2(3)
    assert result["ndcg@2"] == pytest.approx((1 / math.log2(3) / ideal) / 2)


def test_selection_mean_uses_gini_for_regression():
    metrics = {"visit": {"roc_auc": 0.8}, "spend": {"rmse": 40.0, "gini": 0.4}}
    tasks = {"visit": "binary", "spend": "zero_inflated"}
    assert selection_value(metrics, "mean", tasks) == pytest.approx(0.6)


@pytest.mark.parametrize("metric, lower", [
    ("mean", False), ("spend.rmse", True), ("spend.mae", True),
    ("visit.log_loss", True), ("visit.ece", True), ("visit.roc_auc", False),
    ("spend.r2", False), ("item.ndcg@5", False)])
def test_lower_is_better(metric, lower):
    assert lower_is_better(metric) is lower


def test_improvement_lower_is_better():
    assert _is_improvement(3.0, 4.0, lower_is_better=True)
    assert not _is_improvement(5.0, 4.0, lower_is_better=True)
    assert not _is_improvement(NAN, 4.0, lower_is_better=True)


# Label encoders --------------------------------------------------------


def task_config(**fields):
    values = {"name": "t", "type": "regression", "label_column": "y"}
    values.update(fields)
    return TaskConfig(**values)


def test_label_sets_multi_hot():
    spec = task_config(type="multilabel")
    vocab = LabelSetVocab.build(spec, ["b|a", " c ", None, "a||b", ["c", "a"]])
    multi_hot, unknown = vocab.encode(["a|c", "", ["b"], "b|a"])
    assert vocab.labels == ["a", "b", "c"]
    assert unknown == {}
    np.testing.assert_array_equal(multi_hot, [[1, 0, 1], [MISSING] * 3,
                                              [0, 1, 0], [1, 1, 0]])
    assert labelled_rows(multi_hot).tolist() == [True, False, True, True]


def test_label_sets_unknown_value():
    vocab = LabelSetVocab.build(task_config(type="ranking"), ["i1", "i2|i3"])
    with pytest.raises(DataError) as info:
        vocab.encode(["i9", "i1"])
    assert "'i9': 1" in str(info.value)
    assert "data.unknown_label=ignore" in str(info.value)
    multi_hot, unknown = vocab.encode(["i9", "i1|i9"], unknown="ignore")
    assert unknown == {"i9": 2}
    np.testing.assert_array_equal(multi_hot, [[MISSING] * 3, [1, 0, 0]])


def test_ranking_needs_two_items():
    with pytest.raises(DataError, match="at least 2 candidate items"):
        LabelSetVocab.build(task_config(type="ranking"), ["i1", "i1"])


def test_target_text_value_rejected():
    values = ["1.5", "", "twelve", "3"]
    with pytest.raises(DataError) as info:
        TargetScaler.build(task_config(), values, row_ids=np.array([10, 11, 12, 13]))
    message = str(info.value)
    assert "column 'y'" in message
    assert "row 12 = 'twelve'" in message
    assert "1 values that are not numbers" in message


def test_target_negative_with_log1p():
    with pytest.raises(DataError) as info:
        TargetScaler.build(task_config(log1p=True), [1.0, -2.0, -0.5, 3.0])
    message = str(info.value)
    assert "2 negative values" in message
    assert "tasks.t.log1p=false" in message


def test_zero_inflated_negative_rejected():
    with pytest.raises(DataError, match="1 negative values"):
        TargetScaler.build(task_config(type="zero_inflated"), [0, 5, -1])


def test_zero_inflated_needs_positive():
    with pytest.raises(DataError, match="no value above 0"):
        TargetScaler.build(task_config(type="zero_inflated"), [0, 0, None])


@pytest.mark.parametrize("kind", ["multiclass", "binary", "multilabel",
                                  "ranking", "regression", "zero_inflated"])
def test_task_without_labels_rejected(tmp_path, kind):
    frame = pd.DataFrame({"text": ["a", "b", "c", "d"], "y": [None] * 4})
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    config = build_config({
        "data": {"train_path": str(path), "text_columns": ["text"],
                 "split": [1.0, 0, 0]},
        "tokenizer": {"vocab_file": VOCAB_FILE},
        "tasks": [{"name": "empty", "type": kind, "label_column": "y"}]})
    with pytest.raises(DataError) as info:
        prepare_data(config)
    assert "task 'empty'" in str(info.value)
    assert "no labels in the training split" in str(info.value)


def test_target_statistics():
    scaler = TargetScaler.build(task_config(type="zero_inflated", log1p=True),
                                [0.0, 3.0, None, 15.0, 0.0])
    logs = np.log1p([3.0, 15.0])
    assert scaler.mean == pytest.approx(logs.mean())
    assert scaler.std == pytest.approx(logs.std())
    np.testing.assert_allclose(scaler.inverse(scaler.transform([3.0, 15.0])),
                               [3.0, 15.0])


def test_inverse_clips_to_training_range():
    # A log1p model that extrapolates far must not predict exp(huge).
    scaler = TargetScaler.build(task_config(type="regression", log1p=True),
                                [0.0, 3.0, 15.0])
    far = scaler.transform([1e9])
    np.testing.assert_allclose(scaler.inverse(far), [15.0])
    np.testing.assert_allclose(scaler.inverse(scaler.transform([-0.5])), [0.0])
    restored = label_encoder_from_schema(
        {"name": "y", "type": "regression", "label_column": "y",
         **scaler.to_dict()})
    np.testing.assert_allclose(restored.inverse(far), [15.0])


def test_constant_target_std_one():
    scaler = TargetScaler.build(task_config(), [4, 4, 4])
    assert scaler.std == 1.0
    assert scaler.mean == 4.0


# Config ----------------------------------------------------------------


def base_config(**task_fields):
    tasks = [{"name": "visit", "type": "binary", "label_column": "visit"},
             {"name": "conversion", "type": "binary",
              "label_column": "conversion", "parent": "visit"},
             {"name": "spend", "type": "regression", "label_column": "spend"}]
    raw = {"data": {"train_path": HILLSTROM_ZIP, "text_columns": ["channel"]},
           "tokenizer": {"vocab_file": VOCAB_FILE}, "tasks": tasks}
    for index, fields in task_fields.items():
        raw["tasks"][int(index[1:])].update(fields)
    return raw


@pytest.mark.parametrize("fields, message", [
    ({"t1": {"parent": "spend"}}, "tasks[1].parent='spend'"),
    ({"t1": {"parent": "conversion"}}, "tasks[1].parent='conversion'"),
    ({"t1": {"parent": "nowhere"}}, "one of ['visit']"),
    ({"t0": {"parent": "conversion"}}, "visit -> conversion -> visit"),
    ({"t2": {"parent": "visit"}}, "null unless the task type is binary"),
    ({"t0": {"log1p": True}}, "tasks[0].log1p"),
    ({"t0": {"loss": "huber"}}, "tasks[0].loss"),
    ({"t2": {"huber_delta": 2.0}}, "unless loss is 'huber'"),
    ({"t2": {"loss": "huber", "huber_delta": 0}}, "a number > 0"),
    ({"t0": {"top_k": [3]}}, "tasks[0].top_k"),
    ({"t0": {"label_separator": ";"}}, "tasks[0].label_separator"),
])
def test_task_fields_checked(fields, message):
    with pytest.raises(ConfigError) as info:
        build_config(base_config(**fields))
    assert message in str(info.value)


def test_ranking_top_k_checked():
    raw = base_config(t2={"type": "ranking", "top_k": [5, 5]})
    with pytest.raises(ConfigError, match="distinct integers"):
        build_config(raw)
    raw = base_config(t2={"type": "ranking", "top_k": [3, 20]})
    config = build_config(raw)
    assert task_metrics("ranking", config.tasks[2].top_k) == (
        "ndcg@3", "ndcg@20", "recall@3", "recall@20")


@pytest.mark.parametrize("features, message", [
    ({"numeric": ["recency"], "categorical": ["recency"]}, "are in both"),
    ({"numeric": ["spend"]}, "label of task 'spend'"),
    ({"categorical": ["channel", "channel"]}, "['channel'] repeat"),
    ({"embedding_dim": 0}, "features.embedding_dim"),
    ({"fusion": "sum"}, "'concat', 'gate'"),
])
def test_feature_config_checked(features, message):
    raw = base_config()
    raw["features"] = features
    with pytest.raises(ConfigError) as info:
        build_config(raw)
    assert message in str(info.value)


def test_selection_metric_lists_new_metrics():
    raw = base_config()
    raw["train"] = {"metric": "spend.rmse"}
    assert build_config(raw).train.metric == "spend.rmse"
    raw["train"] = {"metric": "spend.roc_auc"}
    with pytest.raises(ConfigError, match="spend.gini"):
        build_config(raw)


# Real data through prepare_data ----------------------------------------


@pytest.fixture(scope="module")
def hillstrom_slice(tmp_path_factory):
    """800 real Hillstrom rows with an interests column derived from mens and
    womens and some spend values blanked."""
    frame = pd.read_csv(HILLSTROM_ZIP).sample(n=800, random_state=0)
    frame = frame.reset_index(drop=True)
    interests = [
        "|".join(name for name, flag in (("mens", m), ("womens", w)) if flag)
        for m, w in zip(frame["mens"], frame["womens"])]
    frame["interests"] = interests
    frame.loc[frame.index % 7 == 0, "spend"] = None
    path = tmp_path_factory.mktemp("hillstrom") / "slice.csv"
    frame.to_csv(path, index=False)
    return str(path), frame


def hillstrom_config(path, tasks, **data):
    raw = {"data": {"train_path": path, "drop_duplicates": False,
                    "text_template": "{history_segment} {channel} {zip_code}",
                    **data},
           "tokenizer": {"vocab_file": VOCAB_FILE}, "tasks": tasks}
    return build_config(copy.deepcopy(raw))


def test_prepare_all_task_types(hillstrom_slice):
    path, frame = hillstrom_slice
    tasks = [
        {"name": "visit", "type": "binary", "label_column": "visit"},
        {"name": "conversion", "type": "binary", "label_column": "conversion",
         "parent": "visit"},
        {"name": "spend", "type": "zero_inflated", "label_column": "spend",
         "log1p": True},
        {"name": "interests", "type": "multilabel", "label_column": "interests"},
        {"name": "offer", "type": "ranking", "label_column": "segment"},
    ]
    data = prepare_data(hillstrom_config(path, tasks))
    train = data.splits["train"]
    rows = train.frame
    assert train.labels["spend"].dtype == np.float32
    np.testing.assert_array_equal(np.isnan(train.labels["spend"]),
                                  rows["spend"].isna().to_numpy())
    assert data.vocabs["interests"].labels == ["mens", "womens"]
    no_interest = (rows["interests"].isna()).to_numpy()
    assert (train.labels["interests"][no_interest] == MISSING).all()
    assert data.vocabs["offer"].labels == sorted(frame["segment"].unique())
    assert (train.labels["offer"].sum(axis=1) == 1).all()
    spend = data.vocabs["spend"]
    positive = rows["spend"][rows["spend"] > 0]
    assert spend.mean == pytest.approx(np.log1p(positive).mean())
    labelled = data.stats["labelled"]["train"]
    assert labelled["spend"] == int(rows["spend"].notna().sum())
    assert labelled["visit"] == len(rows)


def test_regression_first_task_splits(hillstrom_slice):
    """A numeric first task stratifies by quantile bins, not by value."""
    path, _ = hillstrom_slice
    tasks = [{"name": "history", "type": "regression",
              "label_column": "history"}]
    data = prepare_data(hillstrom_config(path, tasks))
    assert data.stats["rows"] == {"train": 640, "valid": 80, "test": 80}


def test_regression_text_in_column(hillstrom_slice, tmp_path):
    _, frame = hillstrom_slice
    frame = frame.copy()
    frame["spend"] = frame["spend"].astype(object)
    frame.loc[5, "spend"] = "about 40"
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    tasks = [{"name": "spend", "type": "regression", "label_column": "spend"}]
    with pytest.raises(DataError) as info:
        prepare_data(hillstrom_config(str(path), tasks, split=[1.0, 0, 0]))
    assert "column 'spend'" in str(info.value)
    assert "row 5 = 'about 40'" in str(info.value)


def test_child_without_parent_counted(caplog):
    tasks = [{"name": "click", "type": "binary", "label_column": "click"},
             {"name": "purchase", "type": "binary", "label_column": "purchase",
              "parent": "click"}]
    frame = pd.read_csv(ALI_CCP_CSV)
    raw = {"data": {"train_path": ALI_CCP_CSV, "split": [1.0, 0, 0],
                    "drop_duplicates": False,
                    "text_template": "{101} {121} {122} {124}"},
           "tokenizer": {"vocab_file": VOCAB_FILE}, "tasks": tasks}
    with caplog.at_level(logging.WARNING, logger="ernie_marketing"):
        data = prepare_data(build_config(raw))
    expected = int(((frame["purchase"] == 1) & (frame["click"] == 0)).sum())
    assert expected > 0
    assert data.stats["child_without_parent"]["train"]["purchase"] == expected
    warnings = [r for r in caplog.records if "its parent click=0" in r.message]
    assert len(warnings) == 1
    purchase = data.splits["train"].labels["purchase"]
    assert int((purchase == 1).sum()) == int((frame["purchase"] == 1).sum())


# Training, evaluation and prediction for every task type ---------------


@pytest.fixture(scope="module")
def all_types_run(hillstrom_slice, tmp_path_factory):
    """A tiny text-only run with multilabel, ranking, zero_inflated and
    binary tasks on the Hillstrom slice, and its export."""
    from ernie_marketing.engine.trainer import train
    from ernie_marketing.export import export_model

    path, frame = hillstrom_slice
    root = tmp_path_factory.mktemp("all_types")
    raw = {
        "data": {"train_path": path, "drop_duplicates": False,
                 "text_template": "{history_segment} {channel} {zip_code}"},
        "tokenizer": {"vocab_file": VOCAB_FILE, "max_length": 24},
        "model": {"encoder": {"hidden_size": 32, "num_hidden_layers": 1,
                              "num_attention_heads": 2,
                              "intermediate_size": 64,
                              "max_position_embeddings": 32}},
        "tasks": [
            {"name": "visit", "type": "binary", "label_column": "visit"},
            {"name": "interests", "type": "multilabel",
             "label_column": "interests"},
            {"name": "offer", "type": "ranking", "label_column": "segment",
             "top_k": [1, 2]},
            {"name": "spend", "type": "zero_inflated", "label_column": "spend",
             "log1p": True},
        ],
        "train": {"max_steps": 4, "batch_size": 32, "eval_steps": 2,
                  "logging_steps": 2, "learning_rate": 1e-3, "seed": 1,
                  "num_threads": 2, "progress_bar": "off",
                  "metric": "spend.rmse"},
        "output": {"dir": str(root / "run")},
    }
    result = train(build_config(raw))
    best = str(root / "run" / "best")
    return result, best, export_model(best, str(root / "export")), frame


def test_all_types_metrics(all_types_run):
    result = all_types_run[0]
    valid = result["valid"]
    assert list(valid["interests"]) == ["count", "micro_f1", "macro_f1"]
    assert list(valid["offer"]) == ["count", "ndcg@1", "ndcg@2", "recall@1",
                                    "recall@2"]
    assert list(valid["spend"]) == ["count", "rmse", "mae", "r2", "gini"]
    assert valid["spend"]["count"] < result["data"]["rows"]["valid"]
    assert result["selection_value"] == pytest.approx(valid["spend"]["rmse"])


def test_all_types_selection_minimises_rmse(all_types_run):
    result, best, _, _ = all_types_run
    with open(os.path.join(os.path.dirname(best), "train.log"),
              encoding="utf-8") as f:
        log = f.read()
    rmse = {int(step): float(value) for step, value in re.findall(
        r"eval at step (\d+) on valid: .*?spend\[rmse=([0-9.]+)", log)}
    assert sorted(rmse) == [2, 4]
    assert result["best_step"] == min(rmse, key=rmse.get)


def test_all_types_eval_matches(all_types_run):
    from ernie_marketing.engine.evaluate_checkpoint import (
        evaluate_checkpoint,
        max_difference,
    )

    results, saved = evaluate_checkpoint(all_types_run[1])
    assert max_difference(results, saved) < 1e-6


def test_all_types_predictions(all_types_run):
    from ernie_marketing.inference import Predictor

    _, _, export_dir, frame = all_types_run
    predictions = Predictor(export_dir, device="cpu").predict_frame(
        frame.head(30))
    assert list(predictions.columns) == [
        "row_id", "visit", "visit_score", "interests_labels",
        "interests_prob_mens", "interests_prob_womens", "offer_top",
        "spend_value", "spend_probability_positive"]
    items = set(frame["segment"])
    for top in predictions["offer_top"]:
        ranked = top.split("|")
        assert len(ranked) == 2
        assert set(ranked) <= items
    for labels, mens, womens in zip(predictions["interests_labels"],
                                    predictions["interests_prob_mens"],
                                    predictions["interests_prob_womens"]):
        expected = [name for name, p in (("mens", mens), ("womens", womens))
                    if p >= 0.5]
        assert labels == "|".join(expected)
    assert (predictions["spend_value"] >= 0).all()


def test_multilabel_unknown_values_dropped(hillstrom_slice, tmp_path, caplog):
    """With unknown_label=ignore, unseen values leave a multi-label row and
    the warning states it. Only a row with no known value is masked."""
    _, frame = hillstrom_slice
    train_path, valid_path = tmp_path / "train.csv", tmp_path / "valid.csv"
    frame.iloc[:600].to_csv(train_path, index=False)
    valid = frame.iloc[600:].copy().reset_index(drop=True)
    valid.loc[0, "interests"] = "mens|kids"
    valid.loc[1, "interests"] = "kids"
    valid.to_csv(valid_path, index=False)
    tasks = [{"name": "interests", "type": "multilabel",
              "label_column": "interests"}]
    config = hillstrom_config(str(train_path), tasks,
                              valid_path=str(valid_path),
                              unknown_label="ignore")
    with caplog.at_level(logging.WARNING, logger="ernie_marketing"):
        data = prepare_data(config)
    labels = data.splits["valid"].labels["interests"]
    partly_known = data.splits["valid"].frame["interests"] == "mens|kids"
    np.testing.assert_array_equal(labels[partly_known.to_numpy()][0],
                                  [1.0, 0.0])
    dropped = data.splits["valid"].frame["interests"] == "kids"
    assert (labels[dropped.to_numpy()] == MISSING).all()
    warnings = [r.getMessage() for r in caplog.records
                if "never seen in training" in r.getMessage()]
    assert len(warnings) == 1
    assert "2 label values never seen in training {'kids': 2}" in warnings[0]
    assert "dropped from their rows" in warnings[0]
