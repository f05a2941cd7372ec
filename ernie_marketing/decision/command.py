"""The `decide` step: files in, a decision file, a report and a summary out."""

import json
import logging
import os

import numpy as np

from ..data.readers import read_table
from ..errors import DataError
from ..inference.writers import check_output_path, write_table
from .pipeline import decide, decision_table, evaluate
from .report import check_report_target, write_report
from .tlearner import TLearner
from .values import ValueModel

logger = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"


def run_decide(config, predictions, output, report_dir, train=None, truth=None,
               title="Decisions"):
    """Decide for every row of `predictions` and write the results.

    `predictions` is a DataFrame with the `<outcome>@<action>` columns; when
    it also has the treatment column, the decisions are evaluated on it.
    `train` (a DataFrame of training rows) adds the T-learner baseline and
    `truth` (true expected outcomes in the predictions' layout) the true
    values. Returns a JSON-ready summary, also saved in the report folder.
    """
    check_output_path(output)
    # A bad report path found after the decision file is written would
    # leave a decision file without its report.
    check_report_target(report_dir)
    _check_columns(config, predictions)
    decision = decide(config, predictions)
    # Evaluate before writing anything, so bad evaluation columns leave no
    # decision file behind.
    evaluation = None
    if config.treatment_column in predictions.columns:
        baseline = _tlearner(config, decision.model, train, predictions)
        truth_array = _truth(config, decision.model, truth, predictions)
        evaluation = evaluate(config, decision, predictions, baseline,
                              truth_array)
    else:
        if train is not None or truth is not None:
            raise DataError(f"the predictions have no treatment column "
                            f"{config.treatment_column!r}, so nothing can be "
                            "evaluated; add the observed columns or drop "
                            "--train-data and --truth")
        logger.info("no treatment column %r in the predictions: writing "
                    "decisions without evaluation", config.treatment_column)
    write_table(decision_table(decision), output)
    logger.info("wrote the decisions to %s", output)
    page = write_report(report_dir, decision, evaluation, title)
    summary = _summary(decision, evaluation, output, page)
    with open(os.path.join(report_dir, SUMMARY_FILE), "w",
              encoding="utf-8") as f:
        json.dump(summary, f, ensure_ascii=False, indent=2)
    return summary


def _check_columns(config, predictions):
    """Raise DataError for a bad column before any work is done."""
    model = ValueModel(config)
    model.read_predictions(predictions)
    if config.treatment_column in predictions.columns:
        model.treatment_indices(predictions, config.treatment_column)
        model.observed_outcomes(predictions)
        missing = [c for c in config.segment_columns
                   if c not in predictions.columns]
        if missing:
            raise DataError(f"segment columns {missing} not found; the file "
                            f"has columns {list(predictions.columns)}; fix "
                            "decision.segment_columns")


def read_input(path, label):
    """Read a table for `decide`, naming the option it came from in errors."""
    try:
        return read_table(path)
    except DataError as exc:
        raise DataError(f"{label}: {exc}") from None


def _tlearner(config, model, train, predictions):
    if train is None:
        return None
    columns = config.baseline_numeric + config.baseline_categorical
    if not columns:
        raise DataError("--train-data is given but the decision config lists "
                        "no baseline columns; set decision.baseline_numeric "
                        "or decision.baseline_categorical")
    learner = TLearner(config.baseline_numeric, config.baseline_categorical)
    treatment = model.treatment_indices(train, config.treatment_column)
    learner.fit(train, treatment, model.observed_outcomes(train),
                model.priced_outcomes)
    return learner.predict(predictions, len(model.actions))


def _truth(config, model, truth, predictions):
    if truth is None:
        return None
    if config.id_column is not None:
        if config.id_column not in truth.columns:
            raise DataError(f"--truth has no id column {config.id_column!r}; "
                            f"it has columns {list(truth.columns)}")
        index = truth.set_index(config.id_column)
        missing = ~predictions[config.id_column].isin(index.index)
        if missing.any():
            raise DataError(f"--truth lacks {int(missing.sum())} customers of "
                            "the predictions, e.g. "
                            f"{predictions[config.id_column][missing].iloc[0]!r}")
        truth = index.loc[predictions[config.id_column]].reset_index()
    elif len(truth) != len(predictions):
        raise DataError(f"--truth has {len(truth)} rows but the predictions "
                        f"have {len(predictions)}; give the same customers in "
                        "the same order, or set decision.id_column")
    return model.read_predictions(truth)


def _summary(decision, evaluation, output, page):
    model = decision.model
    counts = decision.allocation.counts(len(model.actions))
    summary = {
        "customers": len(decision.value),
        "actions": {a: int(n) for a, n in zip(model.actions, counts)},
        "method": decision.allocation.method,
        "status": decision.allocation.status,
        "predicted_gain": round(decision.allocation.gain, 6),
        "expected_cost": round(decision.allocation.cost, 6),
        "decisions": output,
        "report": page,
    }
    if evaluation is not None:
        summary["evaluated_customers"] = evaluation.rows
        summary["policies"] = [_rounded(p.as_dict()) for p in evaluation.policies]
        uplift, qini = evaluation.curves["policy"]
        summary["auuc"] = round(uplift.area, 6)
        summary["qini"] = round(qini.area - qini.random_area, 6)
    return summary


def _rounded(record):
    return {k: (None if isinstance(v, float) and np.isnan(v)
                else round(v, 6) if isinstance(v, float) else v)
            for k, v in record.items()}

