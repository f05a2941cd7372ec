"""Character TF-IDF + logistic regression baseline on a config's own split.

The data is read exactly as training reads it, with the same cleaning and
the same seeded stratified split. One logistic regression per task is fit
on character 1-2-gram TF-IDF features of the training split. Each task's
test metrics are printed in the same form as the model's metrics.json.

    python benchmarks/tfidf_baseline.py -c configs/online_shopping.yaml
"""

import argparse
import json
import os
import sys
import time

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ernie_marketing.config import load_config  # noqa: E402
from ernie_marketing.data import MISSING, prepare_data  # noqa: E402
from ernie_marketing.metrics import task_scores  # noqa: E402


def fit_task(features_train, features_eval, y_train, task_type, c_value):
    """Fit one task on its labelled rows; return eval probabilities."""
    keep = y_train != MISSING
    model = LogisticRegression(C=c_value, max_iter=2000)
    model.fit(features_train[keep], y_train[keep])
    probs = model.predict_proba(features_eval)
    return probs[:, 1] if task_type == "binary" else probs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("-o", "--override", nargs="*", default=[])
    parser.add_argument("--split", default="test", choices=["valid", "test"])
    parser.add_argument("--C", type=float, default=4.0,
                        help="inverse regularisation strength")
    args = parser.parse_args()

    config = load_config(args.config, args.override)
    data = prepare_data(config)
    train, held_out = data.splits["train"], data.splits[args.split]

    start = time.perf_counter()
    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 2),
                                 sublinear_tf=True)
    x_train = vectorizer.fit_transform(train.texts)
    x_eval = vectorizer.transform(held_out.texts)
    results = {}
    for j, task in enumerate(config.tasks):
        probs = fit_task(x_train, x_eval, train.labels[:, j], task.type, args.C)
        num_classes = len(data.vocabs[task.name])
        results[task.name] = task_scores(task.type, probs,
                                         held_out.labels[:, j], num_classes)
    elapsed = time.perf_counter() - start
    print(json.dumps({"split": args.split, "rows": data.stats["rows"],
                      "seconds": round(elapsed, 1), args.split: results},
                     ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
