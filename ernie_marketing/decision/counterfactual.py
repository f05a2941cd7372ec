"""Predict every customer's outcomes under every action.

A model that takes the action as an input (the treatment column, e.g.
Hillstrom's `segment`, as a feature or inside the text template) predicts
what would happen under another action when that column is overwritten.
"""

import logging
import types

import pandas as pd

from ..data.text import text_source_columns
from ..errors import ConfigError, DataError
from .values import column_name

logger = logging.getLogger(__name__)

# Suffix of the predictor output column that contains a task's expected
# outcome, by task type (see `inference.decode_outputs`). A binary task's
# expectation is its positive-class probability, and ESMM chaining already
# makes a child task's score P(parent) x P(child | parent). A zero_inflated
# value is P(y > 0) x E[y | y > 0].
OUTCOME_SUFFIX = {"binary": "_score", "regression": "_value",
                  "zero_inflated": "_value"}


def outcome_column(task):
    """Return the predictor output column with `task`'s expected outcome."""
    if task["type"] in OUTCOME_SUFFIX:
        return task["name"] + OUTCOME_SUFFIX[task["type"]]
    raise ConfigError(f"task {task['name']!r} has type {task['type']!r}, which "
                      "has no expected value to decide on; decision outcomes "
                      "must be binary, regression or zero_inflated tasks")


def predict_actions(predictor, frame, treatment_column, actions, outcomes,
                    id_column=None, progress=False):
    """Return a table with one `<outcome>@<action>` column per outcome and action.

    `predictor` has `tasks` (dicts with name and type) and
    `predict_frame(frame)`, like `inference.Predictor`. `outcomes` are task
    names. The first column is `id_column` from `frame`, or the row number.
    """
    if treatment_column not in frame.columns:
        raise DataError(f"treatment column {treatment_column!r} not found; the "
                        f"file has columns {list(frame.columns)}; the model "
                        "must take the action as an input")
    _check_treatment_input(predictor, treatment_column)
    tasks = {task["name"]: task for task in predictor.tasks}
    unknown = [o for o in outcomes if o not in tasks]
    if unknown:
        raise ConfigError(f"decision outcomes {unknown} are not tasks of the "
                          f"model, which has tasks {sorted(tasks)}; name the "
                          "outcomes after the model's tasks")
    columns = {}
    if id_column is not None:
        if id_column not in frame.columns:
            raise DataError(f"id column {id_column!r} not found; the file has "
                            f"columns {list(frame.columns)}")
        columns[id_column] = frame[id_column].to_numpy()
    else:
        columns["row_id"] = range(len(frame))
    for action in actions:
        counterfactual = frame.copy()
        counterfactual[treatment_column] = action
        predicted = predictor.predict_frame(counterfactual, progress=progress)
        for outcome in outcomes:
            source = outcome_column(tasks[outcome])
            columns[column_name(outcome, action)] = predicted[source].to_numpy()
        logger.info("predicted %d customers under action %r", len(frame),
                    action)
    return pd.DataFrame(columns)


def _check_treatment_input(predictor, treatment_column):
    """Raise ConfigError when the model reads the treatment column nowhere.

    Such a model predicts the same outcomes under every action, so every
    decision would rest on the action costs alone.
    """
    preprocess = getattr(predictor, "preprocess", None)
    if preprocess is None:
        return
    text_columns = text_source_columns(types.SimpleNamespace(
        text_template=preprocess.get("text_template"),
        text_columns=preprocess.get("text_columns", [])))
    inputs = text_columns + list(preprocess.get("feature_columns", []))
    if treatment_column not in inputs:
        raise ConfigError(f"the model does not take the treatment column "
                          f"{treatment_column!r} as an input: its text comes "
                          f"from {text_columns} and its features are "
                          f"{preprocess.get('feature_columns', [])}, so it "
                          "predicts the same outcomes under every action; "
                          "train with the treatment column in "
                          "features.categorical or data.text_template")
