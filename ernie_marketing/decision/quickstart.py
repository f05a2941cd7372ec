"""The quickstart: generate data, train, export, predict every offer, decide.

Everything runs offline: the data comes from the seeded generator in
synthetic.py, the ERNIE encoder is trained from scratch, and the
vocabulary is the official ERNIE 3.0 one when it sits at
../shared/ernie/ernie-3.0-base-zh/vocab.txt, else one built from the
training text. The generator also returns every customer's true expected
outcomes, so the summary compares the chosen policy with the best possible
policy under the same constraints.
"""

import logging
import os
import time
import unicodedata

import pandas as pd

from ..data.readers import read_table
from ..inference.writers import write_table
from ..runtime import visualdl_command
from . import synthetic
from .command import run_decide
from .config import load_decision_config
from .counterfactual import predict_actions

logger = logging.getLogger(__name__)

REPO_DIR = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
# NOTE: the configs are in the repository, not in the package. The defaults
# work for an editable install (`pip install -e .`); other installs must
# pass --config and --decision-config.
TRAIN_CONFIG = os.path.join(REPO_DIR, "configs", "quickstart.yaml")
DECISION_CONFIG = os.path.join(REPO_DIR, "configs", "decision",
                               "quickstart.yaml")


def run_quickstart(output_dir="outputs/quickstart", rows=12000, seed=0,
                   config_path=None, decision_path=None, overrides=()):
    """Run every step into `output_dir`; return a summary of where things are.

    An earlier quickstart in `output_dir` is replaced. `overrides` are
    `-o section.key=value` items for the training config.
    """
    start = time.perf_counter()
    output_dir = os.path.abspath(output_dir)
    config_path = config_path or TRAIN_CONFIG
    decision = load_decision_config(decision_path or DECISION_CONFIG)
    paths = synthetic.write_dataset(os.path.join(output_dir, "data"), rows,
                                    seed)
    logger.info("generated %d customers (seed %d) in %s", rows, seed,
                os.path.dirname(paths["train"]))
    config = _training_config(config_path, paths, output_dir, overrides)

    from ..engine.trainer import train
    from ..export import export_model

    trained = train(config)
    export_dir = export_model(os.path.join(config.output.dir, "best"),
                              os.path.join(output_dir, "export"), config)
    predictions = _predict_every_action(export_dir, paths["test"], decision)
    write_table(predictions, os.path.join(output_dir, "predictions.csv"))
    summary = run_decide(
        decision, predictions, os.path.join(output_dir, "decisions.csv"),
        os.path.join(output_dir, "report"),
        train=read_table(paths["train"]), truth=read_table(paths["truth"]),
        title="Quickstart: coupons for a generated shop")
    summary["visualdl"] = os.path.join(config.output.dir, "vdl")
    summary["test_metrics"] = trained.get("test")
    summary["budget_per_customer"] = (
        float("inf") if decision.budget is None
        else decision.budget / summary["customers"])
    summary["minutes"] = round((time.perf_counter() - start) / 60, 2)
    return summary


def _training_config(config_path, paths, output_dir, overrides):
    from ..config import load_config

    settings = [f"data.train_path={paths['train']}",
                f"data.valid_path={paths['valid']}",
                f"data.test_path={paths['test']}",
                f"output.dir={os.path.join(output_dir, 'run')}",
                "output.overwrite=true"]
    config = load_config(config_path, settings + list(overrides))
    vocab = config.tokenizer.vocab_file
    if vocab and not os.path.isabs(vocab) and not os.path.isfile(vocab):
        # Relative to the config file, as data paths are.
        candidate = os.path.join(os.path.dirname(os.path.abspath(config_path)),
                                 vocab)
        vocab = candidate if os.path.isfile(candidate) else vocab
    if vocab and not os.path.isfile(vocab):
        logger.info("vocabulary %s not found; building one from the "
                    "training text", vocab)
        config = load_config(config_path, settings + list(overrides) + [
            "tokenizer.vocab_file=null", "tokenizer.build_vocab=true"])
    else:
        config.tokenizer.vocab_file = vocab
    return config


def _predict_every_action(export_dir, test_path, decision):
    """Return the test rows with their predicted outcomes under every action."""
    from ..inference import Predictor

    test = read_table(test_path)
    predictor = Predictor(export_dir)
    predicted = predict_actions(predictor, test, decision.treatment_column,
                                decision.action_names,
                                [o.name for o in decision.outcomes])
    return pd.concat([test.reset_index(drop=True),
                      predicted.drop(columns=predicted.columns[0])], axis=1)


def format_summary(summary):
    """Return the lines the quickstart prints: where things are and the values."""
    lines = [
        f"finished in {summary['minutes']:.1f} minutes",
        f"VisualDL logs: {summary['visualdl']} (view with: "
        f"{visualdl_command()} --logdir {summary['visualdl']} "
        "--host 127.0.0.1)",
        f"report: {summary['report']}",
        f"decisions: {summary['decisions']}",
        "value per test customer in yuan (margin minus coupon costs): true "
        "from the generator's expected outcomes, IPW estimated from the "
        "randomized offers with its interval; cost is the model's expected "
        "coupon cost per customer (budget "
        f"{summary['budget_per_customer']:.3f}):",
    ]
    for policy in summary.get("policies", []):
        true_value = policy["true_value"]
        true_text = "n/a" if true_value is None else f"{true_value:7.3f}"
        lines.append(
            f"  {_pad(policy['policy'], 22)} true {true_text}   IPW "
            f"{policy['value']:7.3f} [{policy['low']:.3f}, "
            f"{policy['high']:.3f}]   cost {policy['predicted_cost']:.3f}")
    return "\n".join(lines)


def _pad(text, width):
    """Pad `text` to `width` terminal columns; CJK characters take two."""
    columns = sum(2 if unicodedata.east_asian_width(c) in "WF" else 1
                  for c in text)
    return text + " " * max(width - columns, 0)
