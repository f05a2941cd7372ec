"""CPU training kernels: same outputs and gradients as the stock layers."""

import os

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from conftest import SHOPPING_ZIP, tiny_config

from ernie_marketing.config import EncoderConfig, ModelConfig, build_config
from ernie_marketing.models import MultiTaskErnie, build_encoder, cpu_kernels
from ernie_marketing.models.cpu_kernels import (
    disable_cpu_kernels,
    enable_cpu_kernels,
    use_cpu_kernels,
)

VOCAB_SIZE = 300
TASK_SPECS = [
    {"name": "category", "num_outputs": 10},
    {"name": "sentiment", "num_outputs": 1, "hidden_size": 16},
]


def tiny_model(pooling="cls"):
    paddle.seed(0)
    encoder = build_encoder(ModelConfig(encoder=EncoderConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64)), VOCAB_SIZE, 32)
    return MultiTaskErnie(encoder, TASK_SPECS, pooling)


def batch(rows=4, width=12):
    rng = np.random.default_rng(0)
    input_ids = rng.integers(5, VOCAB_SIZE, size=(rows, width))
    input_ids[1, 7:] = 0  # padding, so the attention mask matters
    return paddle.to_tensor(input_ids), paddle.zeros([rows, width], "int64")


def train_outputs(model):
    """Return the logits and every parameter gradient of one training pass.

    Dropout stays on; the generator is reseeded so both runs draw the same
    masks.
    """
    model.train()
    paddle.seed(123)
    logits = model(*batch())
    loss = sum((task_logits * task_logits).mean() for task_logits in logits)
    loss.backward()
    grads = {name: param.grad.numpy().copy()
             for name, param in model.named_parameters()
             if param.grad is not None}
    model.clear_gradients()
    return [x.numpy() for x in logits], grads


def assert_close_grads(expected, actual, rtol=1e-5):
    """Check each tensor within `rtol` of its own largest value.

    The floor of 1e-4 times the largest value over all tensors covers the
    attention key biases. Their gradient is zero in exact arithmetic,
    because softmax ignores a constant added to a whole row of scores, so
    only float noise of about 1e-10 is left to compare.
    """
    assert sorted(actual) == sorted(expected)
    overall = max(float(np.abs(value).max()) for value in expected.values())
    for name, value in expected.items():
        scale = max(float(np.abs(value).max()), 1e-4 * overall)
        gap = float(np.abs(actual[name] - value).max())
        assert gap <= rtol * scale, f"{name}: gap {gap} vs scale {scale}"


@pytest.fixture
def stock_dropout(monkeypatch):
    """Make the patched layers draw Paddle's own dropout masks, so the
    outputs of the other kernels can be compared with the stock layers'."""
    monkeypatch.setattr(cpu_kernels, "dropout", lambda x, p: F.dropout(
        x, p, training=True, mode="upscale_in_train"))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_training_pass_matches_stock(pooling, stock_dropout):
    model = tiny_model(pooling)
    stock_logits, stock_grads = train_outputs(model)
    counts = enable_cpu_kernels(model)
    logits, grads = train_outputs(model)
    assert counts == {"linear": 16, "attention": 2, "layer_norm": 5,
                      "dropout": 10}
    for expected, actual in zip(stock_logits, logits):
        np.testing.assert_array_equal(actual, expected)
    assert_close_grads(stock_grads, grads)


def test_kernels_run_only_in_training(monkeypatch):
    calls = []
    for layer_class in (cpu_kernels.LinearFunction, cpu_kernels.SplitHeads,
                        cpu_kernels.LayerNormFunction,
                        cpu_kernels.DropoutFunction):
        monkeypatch.setattr(layer_class, "backward",
                            _counting(layer_class, calls))
    model = tiny_model()
    enable_cpu_kernels(model)
    model.eval()
    model(*batch())
    assert calls == []
    train_outputs(model)
    assert calls.count("LinearFunction") == 16
    assert calls.count("SplitHeads") == 6
    assert calls.count("LayerNormFunction") == 5
    # Embeddings; attention weights and two residual branches per encoder
    # layer; 3 in the heads. The dropout after each encoder layer's
    # activation has probability 0 and takes F.dropout.
    assert calls.count("DropoutFunction") == 10


def _counting(layer_class, calls):
    backward = layer_class.backward

    def counted(ctx, grad):
        calls.append(layer_class.__name__)
        return backward(ctx, grad)

    return staticmethod(counted)


def test_frozen_parameters_get_no_gradient(stock_dropout):
    stock = tiny_model()
    for param in stock.encoder.embeddings.parameters():
        param.stop_gradient = True
    stock.encoder.encoder.layers[0].linear1.weight.stop_gradient = True
    _, expected = train_outputs(stock)
    enable_cpu_kernels(stock)
    _, actual = train_outputs(stock)
    assert "encoder.encoder.layers.0.linear1.weight" not in actual
    assert_close_grads(expected, actual)


def test_eval_and_no_grad_match_stock():
    model = tiny_model()
    model.eval()
    expected = [x.numpy() for x in model(*batch())]
    enable_cpu_kernels(model)
    for x, y in zip(expected, model(*batch())):
        np.testing.assert_array_equal(x, y)
    model.train()
    with paddle.no_grad():
        paddle.seed(1)
        patched = [x.numpy() for x in model(*batch())]
    disable_cpu_kernels(model)
    with paddle.no_grad():
        paddle.seed(1)
        stock = [x.numpy() for x in model(*batch())]
    for x, y in zip(stock, patched):
        np.testing.assert_array_equal(x, y)


def test_enable_twice_and_disable():
    model = tiny_model()
    enable_cpu_kernels(model)
    enable_cpu_kernels(model)
    linear = model.encoder.encoder.layers[0].linear1
    assert linear.forward.__func__.__name__ == "_linear_forward"
    disable_cpu_kernels(model)
    patched = [layer for layer in model.sublayers()
               if "forward" in layer.__dict__]
    assert patched == []


def test_cross_attention_and_weights():
    paddle.seed(0)
    attention = paddle.nn.MultiHeadAttention(16, 2, dropout=0.0)
    with_weights = paddle.nn.MultiHeadAttention(16, 2, need_weights=True)
    query = paddle.randn([2, 5, 16])
    memory = paddle.randn([2, 7, 16])
    query.stop_gradient = False
    expected = attention(query, memory, memory)
    expected.sum().backward()
    expected_grad = query.grad.numpy().copy()
    query.clear_gradient()
    enable_cpu_kernels(attention)
    enable_cpu_kernels(with_weights)
    actual = attention(query, memory, memory)
    actual.sum().backward()
    np.testing.assert_array_equal(actual.numpy(), expected.numpy())
    np.testing.assert_allclose(query.grad.numpy(), expected_grad, rtol=1e-5,
                               atol=1e-6)
    output, weights = with_weights(query, memory, memory)
    assert weights.shape == [2, 2, 5, 7]


def test_patched_model_exports(tmp_path):
    from ernie_marketing.export.exporter import save_static_model

    model = tiny_model()
    model.eval()
    input_ids, token_type_ids = batch()
    expected = [x.numpy() for x in model(input_ids, token_type_ids)]
    enable_cpu_kernels(model)
    model.train()
    train_outputs(model)
    prefix = str(tmp_path / "model")
    save_static_model(model, prefix)
    loaded = paddle.jit.load(prefix)
    loaded.eval()
    for x, y in zip(expected, loaded(input_ids, token_type_ids)):
        np.testing.assert_allclose(y.numpy(), x, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("setting, device, expected", [
    ("auto", "cpu", True),
    ("auto", "gpu:0", False),
    ("on", "gpu:0", True),
    ("off", "cpu", False),
])
def test_use_cpu_kernels_settings(setting, device, expected):
    assert use_cpu_kernels(setting, device) is expected


def test_use_cpu_kernels_invalid():
    with pytest.raises(ValueError, match="'fast'.*auto"):
        use_cpu_kernels("fast", "cpu")


def test_keep_freed_memory_respects_env(monkeypatch):
    from ernie_marketing.runtime import keep_freed_memory

    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert keep_freed_memory() is False


def test_config_rejects_invalid_setting(tmp_path):
    from ernie_marketing.errors import ConfigError

    raw = tiny_config(SHOPPING_ZIP, tmp_path / "run",
                      train={"cpu_fast_kernels": "fast"})
    with pytest.raises(ConfigError, match="cpu_fast_kernels"):
        build_config(raw)


def test_trainer_on_and_off_agree(tmp_path, stock_dropout):
    from ernie_marketing.engine.checkpoint import load_checkpoint
    from ernie_marketing.engine.trainer import train

    weights = {}
    for setting in ("on", "off"):
        output_dir = tmp_path / setting
        raw = tiny_config(SHOPPING_ZIP, output_dir, data={"max_rows": 120},
                          train={"max_steps": 3, "eval_steps": 3,
                                 "cpu_fast_kernels": setting})
        train(build_config(raw))
        with open(output_dir / "train.log", encoding="utf-8") as f:
            logged = "CPU training kernels on" in f.read()
        assert logged is (setting == "on")
        model = load_checkpoint(os.path.join(output_dir, "best"))[0]
        weights[setting] = {name: value.numpy()
                            for name, value in model.state_dict().items()}
    # AdamW turns the float noise in the key bias gradients into updates of
    # about 5e-8, hence the absolute tolerance. A wrong gradient moves
    # weights by about the learning rate, 1e-3.
    assert sorted(weights["on"]) == sorted(weights["off"])
    for name, expected in weights["off"].items():
        np.testing.assert_allclose(weights["on"][name], expected, rtol=1e-5,
                                   atol=1e-6, err_msg=name)


def test_dropout_rate_and_scale():
    paddle.seed(5)
    x = paddle.uniform([400, 2500], min=0.5, max=1.5)
    x.stop_gradient = False
    p = 0.1
    out = cpu_kernels.dropout(x, p)
    is_kept = out.numpy() != 0
    # Over 1e6 draws the dropped share's standard deviation is 3e-4.
    assert abs((1 - is_kept.mean()) - p) < 1.5e-3
    np.testing.assert_allclose(out.numpy()[is_kept], x.numpy()[is_kept] / (1 - p),
                               rtol=1e-6)
    grad = paddle.grad(out, x, paddle.full(x.shape, 3.0))[0].numpy()
    np.testing.assert_array_equal(grad != 0, is_kept)
    np.testing.assert_allclose(grad[is_kept], 3.0 / (1 - p), rtol=1e-6)


def test_dropout_follows_paddle_random_state():
    x = paddle.ones([64, 33])
    paddle.seed(7)
    first = cpu_kernels.dropout(x, 0.5).numpy()
    state = paddle.get_rng_state()
    second = cpu_kernels.dropout(x, 0.5).numpy()
    paddle.set_rng_state(state)
    again = cpu_kernels.dropout(x, 0.5).numpy()
    paddle.seed(7)
    reseeded = cpu_kernels.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(again, second)
    np.testing.assert_array_equal(reseeded, first)
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_dropout_edge_probabilities(p):
    x = paddle.randn([8, 5])
    expected = F.dropout(x, p, training=True).numpy()
    np.testing.assert_array_equal(cpu_kernels.dropout(x, p).numpy(), expected)


def test_dropout_layer_outside_training_is_stock():
    layer = paddle.nn.Dropout(0.3)
    enable_cpu_kernels(layer)
    x = paddle.randn([4, 6])
    layer.eval()
    np.testing.assert_array_equal(layer(x).numpy(), x.numpy())
    layer.train()
    with paddle.no_grad():
        paddle.seed(3)
        patched = layer(x).numpy()
        paddle.seed(3)
        stock = F.dropout(x, 0.3, training=True).numpy()
    np.testing.assert_array_equal(patched, stock)


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
def test_dropout_invalid_probability(p):
    # A negative p used to wrap the uint32 threshold and drop about 90%
    # of the elements, and p > 1 scaled the kept elements by 1 / (1 - p),
    # a negative factor.
    with pytest.raises(ValueError, match="dropout probability p="):
        cpu_kernels.dropout(paddle.ones([8, 5]), p)


def test_gradnorm_run_logs_kernels_off(tmp_path):
    # The run logs the kernels as on while it builds the model, so it must
    # also log that gradnorm turned them off.
    from ernie_marketing.engine.trainer import train

    raw = tiny_config(SHOPPING_ZIP, tmp_path / "run", data={"max_rows": 120},
                      train={"max_steps": 1, "eval_steps": 1,
                             "cpu_fast_kernels": "on",
                             "loss_weighting": {"method": "gradnorm"}})
    train(build_config(raw))
    with open(tmp_path / "run" / "train.log", encoding="utf-8") as f:
        log = f.read()
    assert "CPU training kernels on" in log
    assert "CPU training kernels turned off: loss weighting gradnorm" in log
