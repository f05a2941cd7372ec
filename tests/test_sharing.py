"""MMoE and PLE sharing: gates, outputs, config, checkpoints and export."""

import numpy as np
import paddle
import pytest
import yaml
from _helpers_export import dynamic_logits, max_gap, real_reviews, tiny_config

from ernie_marketing.config import EncoderConfig, ModelConfig, build_config
from ernie_marketing.errors import ConfigError
from ernie_marketing.models import MultiTaskErnie, build_encoder
from ernie_marketing.models.sharing import PLE, MMoE

VOCAB_SIZE = 300
TASK_SPECS = [
    {"name": "category", "num_outputs": 10},
    {"name": "sentiment", "num_outputs": 1},
    {"name": "spend", "num_outputs": 2},
]
MMOE_SPEC = {"type": "mmoe", "num_experts": 3, "expert_hidden_size": 24,
             "dropout": 0.1}
PLE_SPEC = {"type": "ple", "num_shared_experts": 2, "num_task_experts": 2,
            "expert_hidden_size": 24, "num_levels": 2, "dropout": 0.1}


def tiny_model(sharing_spec=None, seed=0):
    paddle.seed(seed)
    model_config = ModelConfig(encoder=EncoderConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64))
    encoder = build_encoder(model_config, VOCAB_SIZE, max_length=32)
    model = MultiTaskErnie(encoder, TASK_SPECS, "cls",
                           sharing_spec=sharing_spec)
    model.eval()
    return model


def token_batch(rows=5, width=8, seed=0):
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(5, VOCAB_SIZE, size=(rows, width))
    input_ids[:, 0] = 1
    return paddle.to_tensor(input_ids), paddle.zeros([rows, width], "int64")


@pytest.mark.parametrize("layer", [
    MMoE(16, 3, num_experts=4, expert_hidden_size=8),
    PLE(16, 3, num_shared_experts=2, num_task_experts=1,
        expert_hidden_size=8, num_levels=3),
], ids=["mmoe", "ple"])
def test_gate_weights_sum_to_one(layer):
    paddle.seed(1)
    inputs = paddle.randn([6, 16]) * 5.0
    gates = layer.gate_weights(inputs)
    assert len(gates) >= 3
    for weights in gates:
        values = weights.numpy()
        assert (values >= 0).all()
        np.testing.assert_allclose(values.sum(axis=-1), 1.0, atol=1e-6)


def test_ple_gate_count_and_widths():
    layer = PLE(16, 2, num_shared_experts=3, num_task_experts=2,
                expert_hidden_size=8, num_levels=2)
    gates = layer.gate_weights(paddle.randn([4, 16]))
    # Level 1: two task gates and the shared gate; level 2: two task gates.
    assert [g.shape[-1] for g in gates] == [5, 5, 7, 5, 5]


def test_mmoe_gates_differ_between_tasks():
    layer = MMoE(16, 2, num_experts=4, expert_hidden_size=8)
    first, second = layer.gate_weights(paddle.randn([4, 16]))
    assert float((first - second).abs().max()) > 1e-4


@pytest.mark.parametrize("spec", [MMOE_SPEC, PLE_SPEC], ids=["mmoe", "ple"])
def test_sharing_model_output_shapes(spec):
    model = tiny_model(spec)
    outputs = model(*token_batch())
    assert [tuple(o.shape) for o in outputs] == [(5, 10), (5, 1), (5, 2)]
    head_input = model.heads["category"].layers[-1].weight.shape[0]
    assert head_input == 24


def test_hard_sharing_matches_no_spec():
    plain = tiny_model(None)
    hard = tiny_model({"type": "hard"})
    assert hard.sharing is None
    inputs = token_batch()
    for left, right in zip(plain(*inputs), hard(*inputs)):
        assert np.array_equal(left.numpy(), right.numpy())


def _raw_config(tmp_path, sharing):
    raw = tiny_config(tmp_path / "data.csv", tmp_path / "run")
    raw["model"]["sharing"] = sharing
    return raw


@pytest.mark.parametrize("key,value", [("num_experts", 0), ("num_levels", 0),
                                       ("expert_hidden_size", -1),
                                       ("dropout", 1.0)])
def test_sharing_config_rejects_bad_values(tmp_path, key, value):
    raw = _raw_config(tmp_path, {"type": "mmoe", key: value})
    with pytest.raises(ConfigError, match=f"model.sharing.{key}"):
        build_config(raw)


def test_sharing_config_rejects_unknown_type(tmp_path):
    raw = _raw_config(tmp_path, {"type": "cross_stitch"})
    with pytest.raises(ConfigError, match="model.sharing.type"):
        build_config(raw)


@pytest.fixture(scope="module")
def reviews_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("sharing_data") / "reviews.csv"
    real_reviews(200).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("sharing", [
    {"type": "mmoe", "num_experts": 3, "expert_hidden_size": 32},
    {"type": "ple", "num_shared_experts": 2, "num_task_experts": 1,
     "expert_hidden_size": 32, "num_levels": 2},
], ids=["mmoe", "ple"])
def test_sharing_train_export_round_trip(tmp_path, reviews_csv, sharing):
    from ernie_marketing.config import load_config
    from ernie_marketing.engine.checkpoint import load_checkpoint
    from ernie_marketing.engine.trainer import train
    from ernie_marketing.export import export_model
    from ernie_marketing.inference import Predictor

    raw = tiny_config(reviews_csv, tmp_path / "run")
    raw["model"]["sharing"] = sharing
    raw["train"]["max_steps"] = 4
    raw["train"]["eval_steps"] = 4
    config_path = tmp_path / "config.yaml"
    with open(config_path, "w", encoding="utf-8") as f:
        yaml.safe_dump(raw, f, allow_unicode=True)
    train(load_config(str(config_path)))
    checkpoint = str(tmp_path / "run" / "best")
    model = load_checkpoint(checkpoint)[0]
    expected = MMoE if sharing["type"] == "mmoe" else PLE
    assert isinstance(model.sharing, expected)

    # export_model itself checks the static graph on a few texts; compare
    # again on real reviews through the Predictor.
    export_dir = export_model(checkpoint, str(tmp_path / "export"))
    predictor = Predictor(export_dir, device="cpu", batch_size=16)
    encoded = predictor.encode(real_reviews(40, seed=3)["review"].tolist())
    static = predictor.predict_logits(encoded)
    dynamic = dynamic_logits(checkpoint, encoded, batch_size=16)
    assert [s.shape for s in static] == [(40, 10), (40, 1)]
    assert max_gap(static, dynamic) < 1e-4
