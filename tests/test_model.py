"""Model and losses: head shapes, pooling, masked per-task loss, weights."""

import numpy as np
import paddle
import pytest

from ernie_marketing.config import EncoderConfig, ModelConfig
from ernie_marketing.data import MISSING
from ernie_marketing.errors import ConfigError
from ernie_marketing.losses import masked_task_loss, multitask_loss
from ernie_marketing.metrics import probabilities, selection_value, task_scores
from ernie_marketing.models import MultiTaskErnie, build_encoder, num_outputs

VOCAB_SIZE = 500
TASK_SPECS = [
    {"name": "category", "num_outputs": 10},
    {"name": "sentiment", "num_outputs": 1, "hidden_size": 16},
]


def tiny_model(pooling="cls", seed=0):
    paddle.seed(seed)
    model_config = ModelConfig(encoder=EncoderConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64))
    encoder = build_encoder(model_config, VOCAB_SIZE, max_length=32)
    model = MultiTaskErnie(encoder, TASK_SPECS, pooling)
    model.eval()
    return model


def batch(rows=4, width=9, seed=0):
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(5, VOCAB_SIZE, size=(rows, width))
    input_ids[:, 0] = 1
    input_ids[1, 5:] = 0  # the second row is padded after 5 tokens
    return paddle.to_tensor(input_ids), paddle.zeros([rows, width], "int64")


# Model -------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_forward_shapes(pooling):
    category, sentiment = tiny_model(pooling)(*batch())
    assert category.shape == [4, 10]
    assert sentiment.shape == [4, 1]


def test_forward_task_order():
    model = tiny_model()
    assert model.task_names == ["category", "sentiment"]
    assert list(model.heads.keys()) == ["category", "sentiment"]


def test_hidden_head_layers():
    model = tiny_model()
    linear = [layer for layer in model.heads["sentiment"].sublayers()
              if isinstance(layer, paddle.nn.Linear)]
    assert [tuple(layer.weight.shape) for layer in linear] == [(32, 16), (16, 1)]


def test_padding_ignored():
    """Extra padding after a row must not change that row's logits."""
    model = tiny_model("mean")
    input_ids, token_type_ids = batch()
    short = model(input_ids[:, :5], token_type_ids[:, :5])
    padded_ids = paddle.concat([input_ids[:, :5],
                                paddle.zeros([4, 4], "int64")], axis=1)
    padded = model(padded_ids, token_type_ids)
    for a, b in zip(short, padded):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)


def test_eval_deterministic():
    model = tiny_model()
    first = model(*batch())[0].numpy()
    second = model(*batch())[0].numpy()
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("task_type, labels, expected", [
    ("binary", 2, 1), ("multiclass", 7, 7), ("multilabel", 5, 5),
    ("ranking", 30, 30), ("regression", 0, 1), ("zero_inflated", 0, 2)])
def test_num_outputs(task_type, labels, expected):
    assert num_outputs(task_type, labels) == expected


def test_encoder_max_length_too_long():
    model_config = ModelConfig(encoder=EncoderConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64))
    with pytest.raises(ConfigError, match="max_position_embeddings=64"):
        build_encoder(model_config, VOCAB_SIZE, max_length=128)


# Masked loss -------------------------------------------------------------

TASKS = [{"name": "category", "type": "multiclass"},
         {"name": "sentiment", "type": "binary"}]


def logits_and_labels(seed=0):
    rng = np.random.default_rng(seed)
    category = paddle.to_tensor(rng.normal(size=(4, 10)).astype("float32"))
    sentiment = paddle.to_tensor(rng.normal(size=(4, 1)).astype("float32"))
    labels = {
        "category": paddle.to_tensor(np.array([3, MISSING, 7, 0])),
        "sentiment": paddle.to_tensor(np.array([1, 0, MISSING, 1])),
    }
    return [category, sentiment], labels


def test_loss_matches_cross_entropy():
    (category, _), labels = logits_and_labels()
    loss, count = masked_task_loss(TASKS[0], category, labels["category"])
    rows = [0, 2, 3]
    probs = probabilities("multiclass", category.numpy())[rows]
    expected = -np.log(probs[np.arange(3), labels["category"].numpy()[rows]]).mean()
    assert float(count) == 3
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_loss_matches_binary_cross_entropy():
    (_, sentiment), labels = logits_and_labels()
    loss, count = masked_task_loss(TASKS[1], sentiment, labels["sentiment"])
    rows = [0, 1, 3]
    p = probabilities("binary", sentiment.numpy())[rows]
    y = labels["sentiment"].numpy()[rows]
    expected = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()
    assert float(count) == 3
    assert float(loss) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("column, masked_row", [(0, 1), (1, 2)])
def test_masked_row_ignored(column, masked_row):
    logits, labels = logits_and_labels()
    task = TASKS[column]
    before, _ = masked_task_loss(task, logits[column], labels[task["name"]])
    changed = logits[column].numpy().copy()
    changed[masked_row] = 50.0 * (np.arange(changed.shape[1]) + 1)
    after, _ = masked_task_loss(task, paddle.to_tensor(changed),
                                labels[task["name"]])
    assert float(after) == float(before)


def test_masked_row_no_gradient():
    logits, labels = logits_and_labels()
    category = logits[0]
    category.stop_gradient = False
    loss, _ = masked_task_loss(TASKS[0], category, labels["category"])
    loss.backward()
    grad = category.grad.numpy()
    assert np.all(grad[1] == 0)
    assert np.any(grad[0] != 0)


def test_task_without_labels_zero():
    logits, labels = logits_and_labels()
    unlabelled = paddle.full([4], MISSING, "int64")
    loss, count = masked_task_loss(TASKS[1], logits[1], unlabelled)
    assert float(loss) == 0.0
    assert float(count) == 0.0


def test_total_without_one_task():
    logits, labels = logits_and_labels()
    labels["sentiment"] = paddle.full([4], MISSING, "int64")
    total, task_losses = multitask_loss(TASKS, [0.7, 2.0], logits, labels)
    assert float(task_losses["sentiment"][0]) == 0.0
    assert float(task_losses["sentiment"][1]) == 0.0
    expected = 0.7 * float(task_losses["category"][0])
    assert float(total) == pytest.approx(expected, rel=1e-6)


def test_total_weighted_sum():
    logits, labels = logits_and_labels()
    total, task_losses = multitask_loss(TASKS, [0.5, 3.0], logits, labels)
    expected = (0.5 * float(task_losses["category"][0])
                + 3.0 * float(task_losses["sentiment"][0]))
    assert float(total) == pytest.approx(expected, rel=1e-6)


def test_task_losses_unweighted():
    logits, labels = logits_and_labels()
    _, weighted = multitask_loss(TASKS, [0.5, 3.0], logits, labels)
    _, plain = multitask_loss(TASKS, [1.0, 1.0], logits, labels)
    assert float(weighted["sentiment"][0]) == float(plain["sentiment"][0])


def test_zero_weight_no_gradient():
    model = tiny_model()
    model.train()
    labels = {"category": paddle.to_tensor(np.array([1, 2, 3, 4])),
              "sentiment": paddle.to_tensor(np.array([0, 1, 0, 1]))}
    total, _ = multitask_loss(TASKS, [1.0, 0.0], model(*batch()), labels)
    total.backward()
    sentiment_grads = [p.grad for p in model.heads["sentiment"].parameters()]
    category_grads = [p.grad for p in model.heads["category"].parameters()]
    assert all(g is None or not np.any(g.numpy()) for g in sentiment_grads)
    assert any(g is not None and np.any(g.numpy()) for g in category_grads)


def test_unlabelled_task_trains_other():
    model = tiny_model()
    model.train()
    labels = {"category": paddle.to_tensor(np.array([1, 2, 3, 4])),
              "sentiment": paddle.full([4], MISSING, "int64")}
    total, _ = multitask_loss(TASKS, [1.0, 1.0], model(*batch()), labels)
    total.backward()
    sentiment_grads = [p.grad for p in model.heads["sentiment"].parameters()]
    category_grads = [p.grad for p in model.heads["category"].parameters()]
    encoder_grad = model.encoder.embeddings.word_embeddings.weight.grad
    assert all(g is None or not np.any(g.numpy()) for g in sentiment_grads)
    assert any(g is not None and np.any(g.numpy()) for g in category_grads)
    assert np.any(encoder_grad.numpy())


# Metrics -----------------------------------------------------------------


def test_scores_skip_masked_rows():
    probs = np.array([0.9, 0.2, 0.8, 0.1])
    labels = np.array([1, MISSING, 1, 0])
    scores = task_scores(TASKS[1], {"score": probs}, labels)
    assert scores["count"] == 3
    assert scores["accuracy"] == 1.0
    assert scores["roc_auc"] == 1.0


def test_scores_single_class_auc_nan():
    scores = task_scores(TASKS[1], {"score": np.array([0.9, 0.6])},
                         np.array([1, 1]))
    assert np.isnan(scores["roc_auc"])
    assert scores["accuracy"] == 1.0


def test_scores_no_labels():
    scores = task_scores(TASKS[0], {"probs": np.full((2, 3), 1 / 3)},
                         np.array([MISSING, MISSING]))
    assert scores["count"] == 0
    assert np.isnan(scores["macro_f1"])


def test_selection_mean():
    metrics = {"category": {"macro_f1": 0.4, "accuracy": 0.9},
               "sentiment": {"roc_auc": 0.8, "accuracy": 0.1}}
    value = selection_value(metrics, "mean",
                            {"category": "multiclass", "sentiment": "binary"})
    assert value == pytest.approx(0.6)


def test_selection_named_metric():
    metrics = {"category": {"macro_f1": 0.4, "accuracy": 0.9}}
    value = selection_value(metrics, "category.accuracy",
                            {"category": "multiclass"})
    assert value == 0.9
