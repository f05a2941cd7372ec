"""Export of checkpoints to Paddle Inference directories."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import yaml
from _helpers_export import (
    dynamic_logits,
    max_gap,
    real_reviews,
    tiny_config,
)

from ernie_marketing.cli import main
from ernie_marketing.errors import ConfigError


def test_export_writes_self_contained_directory(exported):
    checkpoint, export_dir, _ = exported
    names = set(os.listdir(export_dir))
    for name in ("model.json", "model.pdiparams", "tasks.json", "config.yaml",
                 "export.json", "tokenizer"):
        assert name in names
    assert os.path.isfile(os.path.join(export_dir, "tokenizer", "vocab.txt"))
    with open(os.path.join(checkpoint, "tasks.json"), encoding="utf-8") as f:
        saved = json.load(f)
    with open(os.path.join(export_dir, "tasks.json"), encoding="utf-8") as f:
        exported_schema = json.load(f)
    assert exported_schema["tasks"] == saved["tasks"]
    assert exported_schema["preprocess"]["max_length"] == 64
    assert exported_schema["preprocess"]["text_columns"] == ["review"]
    with open(os.path.join(export_dir, "export.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    assert manifest["outputs"] == ["category", "sentiment"]
    assert manifest["inputs"] == ["input_ids", "token_type_ids"]


@pytest.mark.parametrize("onednn", [False, True], ids=["onednn_off", "onednn_on"])
def test_round_trip_matches_dynamic_graph(exported, onednn):
    from ernie_marketing.inference import Predictor

    checkpoint, export_dir, _ = exported
    predictor = Predictor(export_dir, device="cpu", onednn=onednn, batch_size=16)
    encoded = predictor.encode(real_reviews(200, seed=1)["review"].tolist())
    static = predictor.predict_logits(encoded)
    dynamic = dynamic_logits(checkpoint, encoded, batch_size=16)
    assert [s.shape for s in static] == [(200, 10), (200, 1)]
    assert max_gap(static, dynamic) < 1e-4
    # A model that was not trained would give near-constant logits.
    assert np.std(static[0]) > 1e-3


def test_export_cli_defaults_to_checkpoint_config(exported, tmp_path, capsys):
    checkpoint, _, _ = exported
    output = tmp_path / "exported"
    assert main(["export", "--checkpoint", checkpoint, "--output",
                 str(output)]) == 0
    with open(output / "config.yaml", encoding="utf-8") as f:
        exported_config = yaml.safe_load(f)
    with open(os.path.join(checkpoint, "config.yaml"), encoding="utf-8") as f:
        checkpoint_config = yaml.safe_load(f)
    assert exported_config == checkpoint_config
    printed = json.loads(capsys.readouterr().out)
    assert printed["export"] == str(output)


def test_export_tool_with_config_and_overrides(exported, tmp_path):
    checkpoint, _, csv_path = exported
    config_path = tmp_path / "config.yaml"
    with open(config_path, "w", encoding="utf-8") as f:
        yaml.safe_dump(tiny_config(csv_path, tmp_path / "unused"), f,
                       allow_unicode=True)
    output = tmp_path / "exported"
    script = os.path.join(os.path.dirname(__file__), "..", "tools",
                          "export_model.py")
    completed = subprocess.run(
        [sys.executable, script, "-c", str(config_path), "-o",
         f"model.checkpoint={checkpoint}", "data.id_column=id", "--output",
         str(output)], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    with open(output / "tasks.json", encoding="utf-8") as f:
        assert json.load(f)["preprocess"]["id_column"] == "id"


def test_export_without_checkpoint_fails(tmp_path, capsys):
    assert main(["export", "--output", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no checkpoint given")
    assert len(err.splitlines()) == 1


def test_export_missing_checkpoint_fails(tmp_path, capsys):
    missing = tmp_path / "nothing"
    assert main(["export", "--checkpoint", str(missing), "--output",
                 str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no checkpoint found")
    assert str(missing) in err
    assert not (tmp_path / "x").exists()


def test_failed_export_leaves_nothing(exported, tmp_path, monkeypatch):
    from ernie_marketing.export import exporter

    def fail(model, prefix):
        raise RuntimeError("tracing failed")

    monkeypatch.setattr(exporter, "save_static_model", fail)
    with pytest.raises(RuntimeError, match="tracing failed"):
        exporter.export_model(exported[0], str(tmp_path / "out"))
    assert os.listdir(tmp_path) == []


def test_export_replaces_earlier_export(exported, tmp_path):
    from ernie_marketing.export import export_model

    output = tmp_path / "out"
    export_model(exported[0], str(output), check=False)
    (output / "stale.txt").write_text("old", encoding="utf-8")
    export_model(exported[0], str(output), check=False)
    assert not (output / "stale.txt").exists()
    assert (output / "model.json").is_file()
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_export_keeps_unrelated_directory(exported, tmp_path):
    from ernie_marketing.export import export_model

    output = tmp_path / "notes"
    output.mkdir()
    (output / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ConfigError, match="exists and is not an export"):
        export_model(exported[0], str(output))
    assert (output / "keep.txt").read_text(encoding="utf-8") == "mine"


def test_export_into_checkpoint_is_rejected(exported):
    from ernie_marketing.export import export_model

    checkpoint = exported[0]
    with pytest.raises(ConfigError, match="overlaps the checkpoint"):
        export_model(checkpoint, checkpoint)
    with pytest.raises(ConfigError, match="overlaps the checkpoint"):
        export_model(checkpoint, os.path.join(checkpoint, "export"))
    assert os.path.isfile(os.path.join(checkpoint, "heads.pdparams"))


def test_resolve_export_config_rejects_bad_override(exported):
    from ernie_marketing.export import resolve_export_config

    with pytest.raises(ConfigError, match="data.no_such_key"):
        resolve_export_config(exported[0], None, ["data.no_such_key=1"])


# A Paddle 2 style program (.pdmodel) written with the PIR API off. The layer
# is small but has the inputs and outputs of a two-task export.
_LEGACY_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["FLAGS_enable_pir_api"] = "0"
    import numpy as np
    import paddle
    from paddle.static import InputSpec

    class Legacy(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.embedding = paddle.nn.Embedding(40000, 8)
            self.category = paddle.nn.Linear(8, 10)
            self.sentiment = paddle.nn.Linear(8, 1)

        def forward(self, input_ids, token_type_ids):
            hidden = self.embedding(input_ids) + self.embedding(token_type_ids)
            pooled = hidden.mean(axis=1)
            return self.category(pooled), self.sentiment(pooled)

    paddle.seed(0)
    layer = Legacy()
    layer.eval()
    ids = paddle.to_tensor(np.load(sys.argv[2]))
    expected = layer(ids, paddle.zeros_like(ids))
    np.savez(sys.argv[3], *[t.numpy() for t in expected])
    spec = [InputSpec([None, None], "int64", n)
            for n in ("input_ids", "token_type_ids")]
    static = paddle.jit.to_static(layer, input_spec=spec, full_graph=True)
    paddle.jit.save(static, sys.argv[1])
""")


def test_predictor_loads_legacy_pdmodel(exported, tmp_path):
    import shutil

    from ernie_marketing.inference import Predictor

    _, export_dir, _ = exported
    legacy_dir = tmp_path / "legacy"
    shutil.copytree(os.path.join(export_dir, "tokenizer"), legacy_dir / "tokenizer")
    shutil.copy(os.path.join(export_dir, "tasks.json"), legacy_dir)
    ids = np.array([[1, 300, 4000, 2], [1, 5, 2, 0]], dtype=np.int64)
    np.save(tmp_path / "ids.npy", ids)
    script = tmp_path / "legacy.py"
    script.write_text(_LEGACY_SCRIPT, encoding="utf-8")
    completed = subprocess.run(
        [sys.executable, str(script), str(legacy_dir / "model"),
         str(tmp_path / "ids.npy"), str(tmp_path / "expected.npz")],
        capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert (legacy_dir / "model.pdmodel").is_file()
    assert not (legacy_dir / "model.json").exists()

    predictor = Predictor(str(legacy_dir), device="cpu")
    outputs = predictor.run_batch(ids, np.zeros_like(ids))
    expected = np.load(tmp_path / "expected.npz")
    assert max_gap(outputs, [expected["arr_0"], expected["arr_1"]]) < 1e-5
