"""Counterfactual predictions from a real exported model, then `decide`.

A tiny ERNIE with structured features, the randomized Hillstrom treatment
`segment` among them, trains for a few steps on a slice of the real
campaign, is exported, and predicts every customer under every e-mail.
"""

import os

import numpy as np
import pandas as pd
import pytest

from ernie_marketing.cli import main
from ernie_marketing.decision.config import load_decision_config
from ernie_marketing.decision.counterfactual import predict_actions

SHARED_DIR = os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
HILLSTROM_ZIP = os.path.join(SHARED_DIR, "data", "hillstrom",
                             "hillstrom.csv.zip")
VOCAB_FILE = os.path.join(SHARED_DIR, "ernie", "ernie-3.0-base-zh", "vocab.txt")
DECISION_CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs",
                               "decision", "hillstrom.yaml")
ACTIONS = ["No E-Mail", "Mens E-Mail", "Womens E-Mail"]


def tiny_hillstrom_config(train_path, output_dir):
    return {
        "data": {"train_path": str(train_path),
                 "text_template": "渠道{channel}，地区{zip_code}，"
                                  "消费{history}美元",
                 "split": [0.8, 0.1, 0.1], "seed": 0,
                 "drop_duplicates": False},
        "features": {"numeric": ["recency", "history", "mens", "womens",
                                 "newbie"],
                     "categorical": ["zip_code", "channel", "segment"],
                     "embedding_dim": 4, "hidden_size": 32},
        "tokenizer": {"vocab_file": VOCAB_FILE, "max_length": 32},
        "model": {"encoder": {"hidden_size": 32, "num_hidden_layers": 1,
                              "num_attention_heads": 2,
                              "intermediate_size": 64,
                              "max_position_embeddings": 64},
                  "pooling": "mean"},
        "tasks": [
            {"name": "visit", "type": "binary", "label_column": "visit"},
            {"name": "conversion", "type": "binary",
             "label_column": "conversion", "parent": "visit"},
            {"name": "spend", "type": "zero_inflated", "label_column": "spend",
             "log1p": True},
        ],
        "train": {"epochs": 1, "max_steps": 4, "batch_size": 32,
                  "eval_batch_size": 128, "learning_rate": 1e-3,
                  "eval_steps": 4, "logging_steps": 2, "seed": 1,
                  "num_threads": 2, "progress_bar": "off"},
        "output": {"dir": str(output_dir)},
    }


@pytest.fixture(scope="module")
def hillstrom_export(tmp_path_factory):
    """Return (export dir, CSV of 600 real customers) for a tiny trained model."""
    from ernie_marketing.config import build_config
    from ernie_marketing.engine.trainer import train
    from ernie_marketing.export import export_model

    root = tmp_path_factory.mktemp("hillstrom_decide")
    frame = pd.read_csv(HILLSTROM_ZIP).sample(n=600, random_state=0)
    data_path = root / "customers.csv"
    frame.to_csv(data_path, index=False)
    config = build_config(tiny_hillstrom_config(data_path, root / "run"))
    train(config)
    export_dir = export_model(os.path.join(root, "run", "best"),
                              os.path.join(root, "export"), config)
    return export_dir, data_path


def test_predict_actions_with_real_predictor(hillstrom_export):
    from ernie_marketing.inference import Predictor

    export_dir, data_path = hillstrom_export
    frame = pd.read_csv(data_path)
    predictor = Predictor(export_dir, num_threads=2)
    predicted = predict_actions(predictor, frame, "segment", ACTIONS,
                                ["visit", "conversion", "spend"])
    assert len(predicted) == len(frame)
    assert predicted.columns[0] == "row_id"
    observed = predictor.predict_frame(frame)
    for action in ACTIONS:
        rows = (frame["segment"] == action).to_numpy()
        # Under its own e-mail a customer gets the plain prediction.
        np.testing.assert_allclose(
            predicted[f"visit@{action}"].to_numpy()[rows],
            observed["visit_score"].to_numpy()[rows], rtol=1e-5)
        np.testing.assert_allclose(
            predicted[f"spend@{action}"].to_numpy()[rows],
            observed["spend_value"].to_numpy()[rows], rtol=1e-5)
        assert (predicted[f"conversion@{action}"]
                <= predicted[f"visit@{action}"] + 1e-6).all()
        assert (predicted[f"spend@{action}"] >= 0).all()
    # The e-mail is an input, so it changes the predictions.
    changed = np.abs(predicted["visit@Mens E-Mail"]
                     - predicted["visit@No E-Mail"])
    assert changed.max() > 1e-6


def test_cli_decide_runs_the_model(hillstrom_export, tmp_path, capsys):
    export_dir, data_path = hillstrom_export
    config = load_decision_config(DECISION_CONFIG)
    output = tmp_path / "decisions.csv"
    code = main(["decide", "-c", DECISION_CONFIG, "--model", export_dir,
                 "--data", str(data_path), "--output", str(output),
                 "--budget", "12"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    decisions = pd.read_csv(output)
    assert len(decisions) == 600
    assert set(decisions["action"]) <= set(config.action_names)
    assert decisions["expected_cost"].sum() <= 12 + 1e-6
    assert (tmp_path / "report" / "index.html").is_file()
    assert '"policies"' in captured.out


def test_quickstart_runs_end_to_end(tmp_path, capsys):
    output = tmp_path / "quickstart"
    code = main(["quickstart", "--output", str(output), "--rows", "1000",
                 "--seed", "3", "-o", "train.max_steps=6", "train.eval_steps=6",
                 "train.num_threads=2", "model.encoder.num_hidden_layers=1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "VisualDL logs: " in captured.out
    assert "report: " in captured.out
    for policy in ("model", "best possible", "random, same budget",
                   "T-learner"):
        assert f"  {policy} " in captured.out
    assert os.listdir(output / "run" / "vdl")
    assert (output / "report" / "index.html").is_file()
    decisions = pd.read_csv(output / "decisions.csv")
    assert len(decisions) == 200
    assert set(decisions["action"]) <= {"不发券", "满减券", "折扣券"}


def test_quickstart_rejects_too_few_rows(capsys):
    code = main(["quickstart", "--rows", "50"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err == ("error: --rows 50 is too few: the quickstart needs "
                            "at least 1000 customers to train and evaluate\n")
