"""Structured inputs: the feature encoder, fusion layers, and a trained round trip.

The data are slices of the real Hillstrom e-mail campaign table. The round
trip trains a tiny ERNIE with numeric and categorical features, a chained
binary task and a regression task. It then exports the model and compares
the Paddle Inference predictor with the dynamic graph.
"""

import json
import logging
import os
import re

import numpy as np
import paddle
import pandas as pd
import pytest
from conftest import SHARED_DIR, VOCAB_FILE
from test_model import batch, tiny_model

from ernie_marketing.cli import main
from ernie_marketing.config import FeatureConfig, build_config
from ernie_marketing.data import FeatureEncoder, prepare_data
from ernie_marketing.data.features import MISSING_ID, UNSEEN_ID
from ernie_marketing.errors import DataError
from ernie_marketing.models import MultiTaskErnie

HILLSTROM_ZIP = os.path.join(SHARED_DIR, "data", "hillstrom", "hillstrom.csv.zip")
NUMERIC = ["recency", "history", "newbie"]
CATEGORICAL = ["channel", "zip_code", "segment"]


@pytest.fixture(scope="module")
def hillstrom():
    """600 real rows: 500 to fit on, 100 to transform."""
    frame = pd.read_csv(HILLSTROM_ZIP).sample(n=600, random_state=1)
    return frame.reset_index(drop=True)


def fit(frame, **settings):
    config = FeatureConfig(numeric=settings.pop("numeric", NUMERIC),
                           categorical=settings.pop("categorical", CATEGORICAL),
                           **settings)
    return FeatureEncoder.fit(config, frame)


# Encoder ---------------------------------------------------------------


def test_numeric_standardised(hillstrom):
    train = hillstrom.iloc[:500]
    encoder = fit(train)
    numeric, categorical = encoder.transform(hillstrom.iloc[500:])
    values = hillstrom.iloc[500:][NUMERIC].to_numpy(dtype=float)
    means = train[NUMERIC].mean().to_numpy()
    stds = train[NUMERIC].std(ddof=0).to_numpy()
    assert numeric.dtype == np.float32
    assert numeric.shape == (100, 3)  # no missing value, so no indicator
    np.testing.assert_allclose(numeric, (values - means) / stds, rtol=1e-5,
                               atol=1e-6)
    assert categorical.dtype == np.int64
    assert categorical.shape == (100, 3)


def test_missing_numeric_imputed_and_flagged(hillstrom):
    train = hillstrom.iloc[:500].copy()
    train["history"] = train["history"].astype(object)
    train.loc[train.index % 10 == 0, "history"] = None
    train.loc[1, "history"] = ""
    encoder = fit(train)
    assert encoder.indicators == ["history"]
    present = pd.to_numeric(train["history"], errors="coerce").dropna()
    assert encoder.means[1] == pytest.approx(present.mean())
    numeric, _ = encoder.transform(train)
    missing = pd.to_numeric(train["history"], errors="coerce").isna().to_numpy()
    assert numeric.shape == (500, 4)
    np.testing.assert_array_equal(numeric[:, 3], missing.astype(np.float32))
    assert (numeric[missing, 1] == 0.0).all()
    assert np.isfinite(numeric).all()


def test_missing_without_indicator_imputed(hillstrom, caplog):
    encoder = fit(hillstrom.iloc[:500])
    test = hillstrom.iloc[500:].copy()
    test["recency"] = test["recency"].astype(float)
    test.iloc[:4, test.columns.get_loc("recency")] = np.nan
    with caplog.at_level(logging.INFO, logger="ernie_marketing"):
        numeric, _ = encoder.transform(test, "test split")
    assert numeric.shape == (100, 3)
    assert (numeric[:4, 0] == 0.0).all()
    assert any("recency has 4 missing values" in r.message
               for r in caplog.records)


def test_constant_numeric_std_one(hillstrom):
    train = hillstrom.iloc[:500].assign(flag=7.0)
    encoder = fit(train, numeric=["flag"], categorical=[])
    assert encoder.stds == [1.0]
    numeric, categorical = encoder.transform(train)
    assert (numeric == 0.0).all()
    assert categorical is None


def test_text_in_numeric_column(hillstrom):
    train = hillstrom.iloc[:500].copy()
    train["history"] = train["history"].astype(object)
    train.loc[3, "history"] = "$120"
    train.loc[9, "history"] = "unknown"
    with pytest.raises(DataError) as info:
        fit(train)
    message = str(info.value)
    assert "numeric feature column 'history'" in message
    assert "2 values that are not numbers" in message
    assert "row 3 = '$120'" in message
    assert "row 9 = 'unknown'" in message
    assert "features.categorical" in message


def test_boolean_numeric_column(hillstrom):
    train = hillstrom.iloc[:10].assign(flag=[True, False] * 5)
    encoder = fit(train, numeric=["flag"], categorical=[])
    assert encoder.means == [0.5]


def test_categorical_ids(hillstrom):
    train = hillstrom.iloc[:500]
    encoder = fit(train)
    channels = encoder.vocabularies[0]
    counts = train["channel"].value_counts()
    assert channels == list(counts.index)  # most frequent first
    test = hillstrom.iloc[500:510].copy()
    test["channel"] = ["Web", "Fax", None, "", "Phone", "Web", "Multichannel",
                       "Fax", "Web", "Web"]
    _, categorical = encoder.transform(test)
    web = channels.index("Web") + 2
    assert categorical[:, 0].tolist() == [
        web, UNSEEN_ID, MISSING_ID, MISSING_ID, channels.index("Phone") + 2,
        web, channels.index("Multichannel") + 2, UNSEEN_ID, web, web]
    assert encoder.vocab_sizes[0] == len(channels) + 2


def test_unseen_values_counted(hillstrom, caplog):
    encoder = fit(hillstrom.iloc[:500])
    test = hillstrom.iloc[500:].copy()
    test.iloc[:3, test.columns.get_loc("zip_code")] = "Lunar"
    with caplog.at_level(logging.INFO, logger="ernie_marketing"):
        encoder.transform(test, "valid split")
    messages = [r.message for r in caplog.records]
    assert any("valid split: categorical feature zip_code has 3 values unseen"
               in m for m in messages)


def test_min_frequency_rare_values(hillstrom):
    train = hillstrom.iloc[:500].copy()
    train.loc[:2, "channel"] = "Fax"  # three rows
    encoder = fit(train, min_frequency=4)
    assert "Fax" not in encoder.vocabularies[0]
    _, categorical = encoder.transform(train)
    assert (categorical[:3, 0] == UNSEEN_ID).all()


def test_encoder_save_load(hillstrom, tmp_path):
    train = hillstrom.iloc[:500].copy()
    train.loc[::9, "history"] = np.nan
    encoder = fit(train)
    path = tmp_path / "features.json"
    encoder.save(path)
    loaded = FeatureEncoder.load(path)
    with open(path, encoding="utf-8") as f:
        state = json.load(f)
    assert state["unseen_id"] == UNSEEN_ID
    assert state["missing_id"] == MISSING_ID
    for before, after in zip(encoder.transform(hillstrom),
                             loaded.transform(hillstrom)):
        np.testing.assert_array_equal(before, after)


def test_missing_feature_column(hillstrom, tmp_path):
    path = tmp_path / "slice.csv"
    hillstrom.drop(columns=["zip_code"]).to_csv(path, index=False)
    config = build_config(feature_config(str(path), tmp_path / "run"))
    with pytest.raises(DataError) as info:
        prepare_data(config)
    message = str(info.value)
    assert "feature column(s) ['zip_code'] not found" in message
    assert "'channel'" in message  # the file's columns are listed


def test_template_renders_numbers(tmp_path):
    frame = pd.DataFrame({"channel": ["Web", "Phone", "Web"],
                          "recency": [10, None, 3], "history": [142.0, 29.99, None],
                          "visit": [1, 0, 1]})
    path = tmp_path / "records.csv"
    frame.to_csv(path, index=False)
    config = build_config({
        "data": {"train_path": str(path), "split": [1.0, 0, 0],
                 "text_template": "{channel} recency {recency} spent {history}"},
        "tokenizer": {"vocab_file": VOCAB_FILE},
        "tasks": [{"name": "visit", "type": "binary", "label_column": "visit"}]})
    texts = prepare_data(config).splits["train"].texts
    assert texts == ["Web recency 10 spent 142", "Phone recency  spent 29.99",
                     "Web recency 3 spent"]


# Fusion ----------------------------------------------------------------

SPECS = [{"name": "category", "num_outputs": 10},
         {"name": "sentiment", "num_outputs": 1}]


def fused_model(fusion, num_numeric=3, vocab_sizes=(5, 4)):
    paddle.seed(0)
    encoder = tiny_model().encoder
    spec = {"num_numeric": num_numeric, "vocab_sizes": list(vocab_sizes),
            "embedding_dim": 4, "fusion": fusion, "hidden_size": 24,
            "dropout": 0.0}
    model = MultiTaskErnie(encoder, SPECS, "cls", spec)
    model.eval()
    return model


def feature_batch(rows=4, num_numeric=3, seed=0):
    rng = np.random.default_rng(seed)
    numeric = paddle.to_tensor(rng.normal(size=(rows, num_numeric)).astype("float32"))
    categorical = paddle.to_tensor(np.stack(
        [np.arange(rows) % 5, np.arange(rows) % 4], axis=1).astype("int64"))
    return numeric, categorical


@pytest.mark.parametrize("fusion, head_input", [("concat", 24), ("gate", 32)])
def test_fusion_shapes(fusion, head_input):
    model = fused_model(fusion)
    category, sentiment = model(*batch(), *feature_batch())
    assert category.shape == [4, 10]
    assert sentiment.shape == [4, 1]
    assert model.heads["sentiment"].layers[-1].weight.shape == [head_input, 1]


@pytest.mark.parametrize("fusion", ["concat", "gate"])
def test_fusion_reads_features(fusion):
    model = fused_model(fusion)
    numeric, categorical = feature_batch()
    first = model(*batch(), numeric, categorical)[1].numpy()
    second = model(*batch(), numeric * 3.0, (categorical + 1) % 4)[1].numpy()
    assert np.abs(first - second).max() > 1e-4


def test_no_features_model_unchanged():
    model = tiny_model()
    assert model.fusion is None
    names = [name for name, _ in model.named_parameters()]
    assert not [n for n in names if n.startswith("fusion")]
    assert model.heads["category"].layers[-1].weight.shape == [32, 10]


@pytest.mark.parametrize("inputs, message", [
    ({}, "trained with numeric_features"),
    ({"numeric_features": "numeric"}, "trained with categorical_features"),
])
def test_fusion_inputs_required(inputs, message):
    model = fused_model("concat")
    numeric, _ = feature_batch()
    arguments = {k: numeric for k in inputs}
    with pytest.raises(ValueError, match=message):
        model(*batch(), **arguments)


def test_features_rejected_without_fusion():
    numeric, _ = feature_batch()
    with pytest.raises(ValueError, match="trained without numeric_features"):
        tiny_model()(*batch(), numeric_features=numeric)


def test_categorical_only_fusion():
    model = fused_model("gate", num_numeric=0)
    _, categorical = feature_batch()
    logits = model(*batch(), categorical_features=categorical)
    assert logits[0].shape == [4, 10]


# Training, evaluation, export and prediction ----------------------------


def feature_config(train_path, output_dir, **features):
    return {
        "data": {"train_path": train_path, "drop_duplicates": False,
                 "text_template": "{history_segment} {channel} {zip_code} "
                                  "recency {recency}"},
        "tokenizer": {"vocab_file": VOCAB_FILE, "max_length": 32},
        "model": {"encoder": {"hidden_size": 32, "num_hidden_layers": 1,
                              "num_attention_heads": 2,
                              "intermediate_size": 64,
                              "max_position_embeddings": 64}},
        "features": {"numeric": NUMERIC + ["mens", "womens"],
                     "categorical": CATEGORICAL, "embedding_dim": 4,
                     "hidden_size": 32, **features},
        "tasks": [
            {"name": "visit", "type": "binary", "label_column": "visit"},
            {"name": "conversion", "type": "binary",
             "label_column": "conversion", "parent": "visit"},
            {"name": "spend", "type": "regression", "label_column": "spend",
             "log1p": True, "loss": "huber"},
        ],
        "train": {"max_steps": 6, "batch_size": 32, "eval_batch_size": 64,
                  "learning_rate": 1e-3, "eval_steps": 3, "logging_steps": 3,
                  "seed": 3, "num_threads": 2, "progress_bar": "off"},
        "output": {"dir": str(output_dir)},
    }


@pytest.fixture(scope="module")
def feature_run(hillstrom, tmp_path_factory):
    """A tiny run with features on 600 real rows, and its export."""
    from ernie_marketing.engine.trainer import train
    from ernie_marketing.export import export_model

    root = tmp_path_factory.mktemp("features")
    frame = hillstrom.copy()
    frame["history"] = frame["history"].astype(object)
    frame.loc[frame.index % 11 == 0, "history"] = None
    path = root / "hillstrom.csv"
    frame.to_csv(path, index=False)
    config = build_config(feature_config(str(path), root / "run"))
    result = train(config)
    best = str(root / "run" / "best")
    export_dir = export_model(best, str(root / "export"))
    return {"config": config, "result": result, "best": best, "root": root,
            "export": export_dir, "csv": str(path), "frame": frame}


def test_run_metrics_per_task(feature_run):
    test = feature_run["result"]["test"]
    assert set(test) == {"visit", "conversion", "spend"}
    assert set(test["spend"]) == {"count", "rmse", "mae", "r2", "gini"}
    assert set(test["conversion"]) == {"count", "roc_auc", "log_loss", "ece",
                                       "accuracy", "macro_f1"}
    assert np.isfinite(test["spend"]["rmse"])


def test_run_logs_labelled_counts(feature_run):
    with open(os.path.join(feature_run["root"], "run", "train.log"),
              encoding="utf-8") as f:
        log = f.read()
    assert "loss visit=" in log
    assert "spend=" in log
    assert re.search(r"spend=[0-9.]+ \(n=\d+\)", log)


def test_checkpoint_has_features(feature_run):
    best = feature_run["best"]
    assert os.path.isfile(os.path.join(best, "features.json"))
    assert os.path.isfile(os.path.join(best, "fusion.pdparams"))
    with open(os.path.join(best, "tasks.json"), encoding="utf-8") as f:
        schema = json.load(f)
    assert schema["features"]["num_numeric"] == 6  # 5 columns, 1 indicator
    assert schema["features"]["vocab_sizes"] == [5, 5, 5]
    spend = schema["tasks"][2]
    assert spend["target"]["log1p"] is True
    assert spend["loss"] == "huber"
    assert schema["tasks"][1]["parent"] == "visit"


def test_eval_reproduces_metrics(feature_run):
    from ernie_marketing.engine.evaluate_checkpoint import (
        evaluate_checkpoint,
        max_difference,
    )

    results, saved = evaluate_checkpoint(feature_run["best"])
    assert max_difference(results, saved) < 1e-6


@pytest.fixture(scope="module")
def predictor(feature_run):
    from ernie_marketing.inference import Predictor

    return Predictor(feature_run["export"], device="cpu", batch_size=16)


def test_predictor_matches_dynamic_graph(feature_run, predictor):
    from ernie_marketing.engine.checkpoint import load_checkpoint
    from ernie_marketing.engine.evaluation import predict_logits
    from ernie_marketing.inference.predictor import frame_inputs

    frame = feature_run["frame"].iloc[:80]
    frame.loc[frame.index[:3], "channel"] = "Fax"  # unseen in training
    texts, _ = frame_inputs(frame, predictor.preprocess)
    encoded = predictor.encode(texts)
    numeric, categorical = predictor.encode_features(frame)
    static = predictor.predict_logits(encoded, numeric_features=numeric,
                                      categorical_features=categorical)
    model = load_checkpoint(feature_run["best"])[0]
    dynamic = predict_logits(model, encoded, 1, predictor.text_encoder.pad_id,
                             numeric, categorical)
    for task_static, task_dynamic in zip(static, dynamic):
        assert np.abs(task_static - task_dynamic).max() < 1e-4
    assert (categorical[:3, 0] == UNSEEN_ID).all()


def test_predict_frame_columns(feature_run, predictor):
    predictions = predictor.predict_frame(feature_run["frame"].iloc[:20])
    assert list(predictions.columns) == [
        "row_id", "visit", "visit_score", "conversion", "conversion_score",
        "conversion_conditional", "spend_value"]
    assert (predictions["conversion_score"] <= predictions["visit_score"]).all()
    np.testing.assert_allclose(
        predictions["conversion_score"],
        predictions["visit_score"] * predictions["conversion_conditional"])
    assert (predictions["spend_value"] >= -1.0).all()  # expm1 of any number


def test_predict_texts_needs_features(predictor):
    from ernie_marketing.errors import ConfigError

    with pytest.raises(ConfigError, match="reads numeric_features"):
        predictor.predict_texts(["2) $100 - $200 Web Urban recency 3"])


def test_infer_missing_feature_column(feature_run, tmp_path, capsys):
    path = tmp_path / "input.csv"
    feature_run["frame"].drop(columns=["segment"]).head(5).to_csv(path,
                                                                  index=False)
    code = main(["infer", "--model", feature_run["export"], "--input",
                 str(path), "--output", str(tmp_path / "out.csv")])
    err = capsys.readouterr().err
    assert code == 2
    assert "feature column(s) ['segment'] not found" in err


def test_categorical_only_gate_export(feature_run, tmp_path):
    from ernie_marketing.engine.trainer import train
    from ernie_marketing.export import export_model
    from ernie_marketing.inference import Predictor

    raw = feature_config(feature_run["csv"], tmp_path / "run", numeric=[],
                         fusion="gate")
    raw["train"].update(max_steps=2, eval_steps=2)
    train(build_config(raw))
    # export_model checks the static graph against the dynamic one.
    export_dir = export_model(str(tmp_path / "run" / "best"),
                              str(tmp_path / "export"))
    with open(os.path.join(export_dir, "export.json"), encoding="utf-8") as f:
        inputs = json.load(f)["inputs"]
    assert inputs == ["input_ids", "token_type_ids", "categorical_features"]
    predictions = Predictor(export_dir, device="cpu").predict_frame(
        feature_run["frame"].head(10))
    assert len(predictions) == 10
