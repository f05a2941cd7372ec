"""Write a config's train and test splits and T-learner predictions for `decide`.

The rows are read, cleaned and split by the package's `prepare_data`, so
they are the rows a model trained with the same config is scored on. The
script writes, into --output-dir:

- train.csv, test.csv: the original columns of each split;
- tlearner_test.csv: the test rows with one `<outcome>@<action>` column per
  outcome and action, predicted by the T-learner baseline (see
  `ernie_marketing.decision.tlearner`) fit on train.csv, for every outcome
  of the decision config.

Then `decide` evaluates the T-learner's decisions on the test split:

    python benchmarks/decision_splits.py -c configs/hillstrom.yaml \\
        -d configs/decision/hillstrom.yaml --output-dir outputs/hillstrom_decide
    python tools/decide.py -c configs/decision/hillstrom.yaml \\
        --predictions outputs/hillstrom_decide/tlearner_test.csv \\
        --output outputs/hillstrom_decide/decisions.csv
"""

import argparse
import logging
import os
import sys
import time

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ernie_marketing.config import load_config  # noqa: E402
from ernie_marketing.data import prepare_data  # noqa: E402
from ernie_marketing.decision.config import load_decision_config  # noqa: E402
from ernie_marketing.decision.tlearner import TLearner  # noqa: E402
from ernie_marketing.decision.values import ValueModel, column_name  # noqa: E402

logger = logging.getLogger("decision_splits")


def split_frames(config):
    """Return the original columns of the train and test splits."""
    data = prepare_data(config, splits=("train", "test"))
    frames = {}
    for name in ("train", "test"):
        frame = data.splits[name].frame
        frames[name] = frame[[c for c in frame.columns
                              if not c.startswith("__")]]
    return frames


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", required=True,
                        help="training config that defines the data and split")
    parser.add_argument("-d", "--decision", required=True,
                        help="decision config")
    parser.add_argument("--output-dir", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(args.config)
    decision = load_decision_config(args.decision)
    model = ValueModel(decision)
    os.makedirs(args.output_dir, exist_ok=True)

    frames = split_frames(config)
    for name, frame in frames.items():
        frame.to_csv(os.path.join(args.output_dir, f"{name}.csv"), index=False)

    # Fit one model per action and outcome on the training rows. Every
    # outcome is modelled, so `decide -o` may price any of them.
    start = time.perf_counter()
    train = frames["train"]
    observed = pd.DataFrame({
        o.name: pd.to_numeric(train[o.column or o.name], errors="raise")
        for o in decision.outcomes}).to_numpy(float)
    learner = TLearner(decision.baseline_numeric, decision.baseline_categorical)
    learner.fit(train, model.treatment_indices(train, decision.treatment_column),
                observed, range(len(model.outcomes)))
    predicted = learner.predict(frames["test"], len(model.actions))
    columns = {column_name(o, a): predicted[:, i, j]
               for i, a in enumerate(model.actions)
               for j, o in enumerate(model.outcomes)}
    result = pd.concat([frames["test"].reset_index(drop=True),
                        pd.DataFrame(columns)], axis=1)
    path = os.path.join(args.output_dir, "tlearner_test.csv")
    result.to_csv(path, index=False)
    logger.info("T-learner fit and predicted in %.1f s; wrote %s",
                time.perf_counter() - start, path)


if __name__ == "__main__":
    main()
