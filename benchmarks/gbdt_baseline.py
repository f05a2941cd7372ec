"""Gradient-boosted trees on a config's structured features and split.

The data is read, cleaned and split by the package's `prepare_data`, so
the rows of each split are the ones the model trains and is scored on.
The inputs are the columns of `features.numeric` as floats and those of
`features.categorical` as pandas categories, so the trees split on sets of
categories. The text is not used. Per task, scikit-learn fits:

- binary, multiclass: HistGradientBoostingClassifier. A task chained on a
  parent (ESMM) is fit as a plain binary task on all its labelled rows.
- regression: HistGradientBoostingRegressor, on log(1 + y) when the task
  sets log1p.
- zero_inflated: a classifier for y > 0 times a regressor fit on the rows
  with y > 0, so the prediction is P(y > 0) x E[y | y > 0].

Each model stops early on the validation split (scikit-learn >= 1.7 takes
it as X_val, y_val). Metrics come from `ernie_marketing.metrics` and have
the names of the model's metrics.json.

    python benchmarks/gbdt_baseline.py -c configs/bank_marketing.yaml
"""

import argparse
import json
import logging
import os
import sys
import time

import numpy as np
import pandas as pd
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ernie_marketing.config import load_config  # noqa: E402
from ernie_marketing.data import prepare_data  # noqa: E402
from ernie_marketing.data.labels import (  # noqa: E402
    labelled_rows,
    normalize_label,
    parse_numbers,
)
from ernie_marketing.metrics import task_scores  # noqa: E402

logger = logging.getLogger("gbdt_baseline")

# HistGradientBoosting allows at most max_bins (255) categories per column;
# rarer training values beyond that many are treated as missing.
MAX_CATEGORIES = 255
SUPPORTED = ("binary", "multiclass", "regression", "zero_inflated")


def feature_frames(config, splits):
    """Return one DataFrame of model inputs per split name.

    Categories are the training split's values, most frequent first; a
    value never seen in training (or beyond MAX_CATEGORIES) is missing.
    """
    features = config.features
    if not features.columns:
        raise SystemExit("error: the config has no features.numeric or "
                         "features.categorical columns to fit trees on")
    train = splits["train"].frame
    categories = {}
    for column in features.categorical:
        counts = train[column].map(normalize_label).value_counts()
        if len(counts) > MAX_CATEGORIES:
            logger.warning("%s: %d categories; the %d most frequent are kept "
                           "and the rest are treated as missing", column,
                           len(counts), MAX_CATEGORIES)
        categories[column] = list(counts.index[:MAX_CATEGORIES])
    frames = {}
    for name, split in splits.items():
        columns = {}
        for column in features.numeric:
            columns[column] = parse_numbers(
                split.frame[column], f"{name} split, column {column!r}",
                split.row_ids)
        for column in features.categorical:
            keys = split.frame[column].map(normalize_label)
            known = keys.where(keys.isin(categories[column]))
            columns[column] = pd.Categorical(known,
                                             categories=categories[column])
        frames[name] = pd.DataFrame(columns)
    return frames


def make_model(kind, args):
    cls = (HistGradientBoostingClassifier if kind == "classifier"
           else HistGradientBoostingRegressor)
    return cls(learning_rate=args.learning_rate, max_iter=args.max_iter,
               early_stopping=True, n_iter_no_change=args.patience,
               random_state=args.seed, categorical_features="from_dtype")


def fit(kind, args, x_train, y_train, x_valid, y_valid):
    """Fit one model with early stopping on the validation rows given."""
    model = make_model(kind, args)
    if len(y_valid) and len(np.unique(y_valid)) > (kind == "classifier"):
        model.fit(x_train, y_train, X_val=x_valid, y_val=y_valid)
    else:
        # Without usable validation rows scikit-learn holds out 10% of the
        # training rows instead.
        logger.warning("no usable validation rows for this model; early "
                       "stopping on 10%% of the training rows")
        model.fit(x_train, y_train)
    return model


def fit_task(task, args, x, y, num_classes):
    """Fit the models of one task; return its test prediction and iterations.

    The prediction is a dict with the key that `task_scores` reads for the
    task's type.
    """
    train, valid = labelled_rows(y["train"]), labelled_rows(y["valid"])
    x_train, y_train = x["train"][train], y["train"][train]
    x_valid, y_valid = x["valid"][valid], y["valid"][valid]
    if task.type in ("binary", "multiclass"):
        model = fit("classifier", args, x_train, y_train, x_valid, y_valid)
        probs = class_probabilities(model, x["test"], num_classes)
        if task.type == "binary":
            return {"score": probs[:, 1]}, [model.n_iter_]
        return {"probs": probs}, [model.n_iter_]
    if task.type == "regression":
        model = fit("regressor", args, x_train, target(y_train, task),
                    x_valid, target(y_valid, task))
        return {"value": amount(model.predict(x["test"]), task)}, [
            model.n_iter_]
    # zero_inflated: P(y > 0) from a classifier, E[y | y > 0] from a
    # regressor fit on the positive rows only.
    gate = fit("classifier", args, x_train, (y_train > 0).astype(np.int64),
               x_valid, (y_valid > 0).astype(np.int64))
    positive, positive_valid = y_train > 0, y_valid > 0
    size = fit("regressor", args, x_train[positive],
               target(y_train[positive], task), x_valid[positive_valid],
               target(y_valid[positive_valid], task))
    p_positive = class_probabilities(gate, x["test"], 2)[:, 1]
    value = p_positive * amount(size.predict(x["test"]), task)
    return {"value": value}, [gate.n_iter_, size.n_iter_]


def class_probabilities(model, x, num_classes):
    """Return [rows, num_classes] probabilities, 0 for classes never fit."""
    probs = np.zeros((len(x), num_classes))
    probs[:, model.classes_.astype(np.int64)] = model.predict_proba(x)
    return probs


def target(values, task):
    return np.log1p(values) if task.log1p else values


def amount(predictions, task):
    # NOTE: expm1 of a predicted log1p is closer to a median amount than to
    # the mean. TargetScaler.inverse decodes the model's log1p targets the
    # same way, so both sides of the comparison share this bias.
    return np.expm1(predictions) if task.log1p else predictions


def run(config, args):
    """Return the per-task scores of the chosen split and the timings."""
    start = time.perf_counter()
    data = prepare_data(config)
    missing = [s for s in ("train", "valid", args.split)
               if s not in data.splits]
    if missing:
        raise SystemExit(f"error: the split(s) {missing} are empty; set "
                         "data.split or data.valid_path / data.test_path")

    # Models stop early on "valid" and are scored on "test", the split chosen.
    splits = {"train": data.splits["train"], "valid": data.splits["valid"],
              "test": data.splits[args.split]}
    x = feature_frames(config, splits)
    prepared = time.perf_counter() - start

    results, seconds, iterations = {}, {}, {}
    for task in config.tasks:
        if task.type not in SUPPORTED:
            logger.warning("task %s (%s) skipped: trees are fit for %s",
                           task.name, task.type, ", ".join(SUPPORTED))
            continue
        y = {name: np.asarray(split.labels[task.name])
             for name, split in splits.items()}
        task_start = time.perf_counter()
        prediction, iterations[task.name] = fit_task(
            task, args, x, y, len(data.vocabs[task.name]))
        seconds[task.name] = round(time.perf_counter() - task_start, 2)
        results[task.name] = task_scores({"type": task.type}, prediction,
                                         y["test"])

    return {"config": args.config, "split": args.split,
            "rows": data.stats["rows"],
            "features": {"numeric": config.features.numeric,
                         "categorical": config.features.categorical},
            "prepare_seconds": round(prepared, 1),
            "fit_seconds": seconds, "iterations": iterations,
            "wall_seconds": round(time.perf_counter() - start, 1),
            args.split: results}


def format_table(report, split):
    lines = [f"{'task':<14} {'metric':<10} {split:>10}"]
    for task, scores in report[split].items():
        for name, value in scores.items():
            cell = f"{value:>10d}" if name == "count" else f"{value:>10.4f}"
            lines.append(f"{task:<14} {name:<10} {cell}")
    lines.append(f"rows {report['rows']}, fit seconds "
                 f"{report['fit_seconds']}, iterations "
                 f"{report['iterations']}, wall {report['wall_seconds']} s")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("-o", "--override", nargs="*", default=[],
                        help="config overrides section.key=value")
    parser.add_argument("--split", default="test", choices=["valid", "test"],
                        help="split to score (default: test)")
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--max-iter", type=int, default=1000,
                        help="maximum boosting iterations per model")
    parser.add_argument("--patience", type=int, default=30,
                        help="iterations without validation improvement "
                        "before stopping")
    parser.add_argument("--seed", type=int, default=0,
                        help="random_state of every model")
    parser.add_argument("--json", metavar="PATH",
                        help="also write the report as JSON to PATH")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    config = load_config(args.config, args.override)
    report = run(config, args)
    print(format_table(report, args.split))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, ensure_ascii=False, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
