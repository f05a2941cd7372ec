"""Shared setup for the export and predictor tests.

One tiny ERNIE (2 layers, hidden size 64) is trained for a few steps on real
reviews and exported once per test session, and `trained_export` returns the
same directories to every test that requests them. Data is read in place
from ../shared and never copied into the repository.
"""

import os

import numpy as np
import pandas as pd

SHARED_DIR = os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", "..", "shared"))
REVIEWS_ZIP = os.path.join(SHARED_DIR, "data", "online_shopping_10_cats",
                           "online_shopping_10_cats.zip")
VOCAB_FILE = os.path.join(SHARED_DIR, "ernie", "ernie-3.0-base-zh", "vocab.txt")

LONG_REVIEW_CHARS = 3000
# Texts that stress tokenization and padding: empty and blank, emoji,
# traditional and full-width characters, and a review longer than max_length.
EDGE_TEXTS = [
    "",
    "   \t ",
    "😀😀👍 很好用！🎉",
    "這個手機螢幕很漂亮，電池續航也不錯",
    "ＡＢＣ１２３，全角字符测试！",
    "送货很快。" * (LONG_REVIEW_CHARS // 5),
]

_CACHE = {}


def real_reviews(n_rows, seed=0):
    """Return `n_rows` real reviews (columns cat, label, review), all categories."""
    frame = pd.read_csv(REVIEWS_ZIP, encoding="utf-8-sig")
    frame = frame.dropna(subset=["review"])
    return frame.sample(n=n_rows, random_state=seed).reset_index(drop=True)


def tiny_config(train_path, output_dir, **data):
    """Return a raw config dict for a 2-layer, hidden-64 ERNIE on cat and label."""
    return {
        "data": {"train_path": str(train_path), "text_columns": ["review"],
                 "split": [0.8, 0.1, 0.1], "seed": 0, **data},
        "tokenizer": {"vocab_file": VOCAB_FILE, "max_length": 64},
        "model": {"encoder": {"hidden_size": 64, "num_hidden_layers": 2,
                              "num_attention_heads": 2,
                              "intermediate_size": 128,
                              "max_position_embeddings": 128},
                  "pooling": "mean"},
        "tasks": [
            {"name": "category", "type": "multiclass", "label_column": "cat"},
            {"name": "sentiment", "type": "binary", "label_column": "label"},
        ],
        "train": {"epochs": 1, "max_steps": 6, "batch_size": 16,
                  "eval_batch_size": 64, "learning_rate": 1e-3, "eval_steps": 6,
                  "logging_steps": 3, "seed": 7, "num_threads": 2,
                  "progress_bar": "off"},
        "output": {"dir": str(output_dir)},
    }


def trained_export(tmp_path_factory):
    """Return (checkpoint dir, export dir, reviews CSV) for the session's model.

    The model trains on 300 real reviews with an added `id` column. Its
    config sets no `data.id_column`, so the export numbers output rows.
    """
    if "paths" not in _CACHE:
        import yaml

        from ernie_marketing.config import load_config
        from ernie_marketing.engine.trainer import train
        from ernie_marketing.export import export_model

        root = tmp_path_factory.mktemp("export_session")
        reviews = real_reviews(300)
        reviews.insert(0, "id", [f"r{i:04d}" for i in range(len(reviews))])
        csv_path = root / "reviews.csv"
        reviews.to_csv(csv_path, index=False)
        config_path = root / "config.yaml"
        with open(config_path, "w", encoding="utf-8") as f:
            yaml.safe_dump(tiny_config(csv_path, root / "run"), f,
                           allow_unicode=True)
        train(load_config(str(config_path)))
        checkpoint = str(root / "run" / "best")
        export_dir = export_model(checkpoint, str(root / "export"))
        _CACHE["paths"] = (checkpoint, export_dir, str(csv_path))
    return _CACHE["paths"]


def dynamic_logits(checkpoint, encoded, batch_size=1, pad_id=0):
    """Return the dynamic graph's logits; batch size 1 means no padding at all.

    [PAD] is id 0 in the ERNIE 3.0 vocabulary.
    """
    from ernie_marketing.engine.checkpoint import load_checkpoint
    from ernie_marketing.engine.evaluation import predict_logits

    model = _CACHE.get(("model", checkpoint))
    if model is None:
        model = load_checkpoint(checkpoint)[0]
        _CACHE[("model", checkpoint)] = model
    return predict_logits(model, encoded, batch_size, pad_id)


def max_gap(left, right):
    """Return the largest absolute difference over lists of arrays."""
    return max(float(np.abs(a - b).max()) for a, b in zip(left, right))
