"""The `ernie-marketing` command; the scripts under tools/ call it too."""

import argparse
import json
import logging
import os
import sys

from .errors import UserError

logger = logging.getLogger(__name__)


def main(argv=None):
    """Run one subcommand; a user error ends with one line and exit code 2."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    _quiet_libraries()
    from .runtime import setup_logging

    setup_logging()
    try:
        return args.handler(args) or 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _build_parser():
    parser = argparse.ArgumentParser(
        prog="ernie-marketing",
        description="Multi-task ERNIE models for marketing data.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    train = commands.add_parser("train", help="train a model from a config")
    _add_config_args(train, required=True)
    train.set_defaults(handler=_run_train)

    pretrain = commands.add_parser(
        "pretrain", help="continue or start ERNIE pretraining on unlabeled "
        "text (masked language modelling with knowledge masking)")
    _add_config_args(pretrain, required=True)
    pretrain.set_defaults(handler=_run_pretrain)

    evaluate = commands.add_parser(
        "eval", help="re-evaluate a checkpoint on the validation and test splits")
    _add_config_args(evaluate, required=False)
    evaluate.add_argument("--checkpoint", help="checkpoint directory (default: "
                          "model.checkpoint, else OUTPUT_DIR/best)")
    evaluate.set_defaults(handler=_run_eval)

    export = commands.add_parser(
        "export", help="export a checkpoint for Paddle Inference")
    _add_config_args(export, required=False)
    export.add_argument("--checkpoint", help="checkpoint directory (default: "
                        "model.checkpoint, else output.dir/best of the "
                        "config); its config.yaml is used when -c is absent")
    export.add_argument("--output", required=True, metavar="EXPORT_DIR",
                        help="directory to write the exported model to")
    export.set_defaults(handler=_run_export)

    infer = commands.add_parser(
        "infer", help="predict a CSV/JSONL/Parquet file with an exported model")
    _add_infer_args(infer)
    infer.set_defaults(handler=_run_infer)

    decide = commands.add_parser(
        "decide", help="choose an action per customer from predicted outcomes "
        "and write a decision file and an HTML report")
    _add_decide_args(decide)
    decide.set_defaults(handler=_run_decide)

    quickstart = commands.add_parser(
        "quickstart", help="generate a Chinese shop dataset, train a small "
        "ERNIE on it, predict every offer, decide and report, offline")
    _add_quickstart_args(quickstart)
    quickstart.set_defaults(handler=_run_quickstart)
    return parser


def _add_quickstart_args(parser):
    parser.add_argument("--output", default="outputs/quickstart", metavar="DIR",
                        help="folder for the data, model, decisions and "
                        "report; an earlier quickstart there is replaced "
                        "(default: outputs/quickstart)")
    parser.add_argument("--rows", type=int, default=12000,
                        help="customers to generate, at least 1000 "
                        "(default: 12000)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the data generator (default: 0)")
    parser.add_argument("--config", help="training config (default: "
                        "configs/quickstart.yaml of the repository)")
    parser.add_argument("--decision-config", help="decision config (default: "
                        "configs/decision/quickstart.yaml of the repository)")
    parser.add_argument("-o", "--override", action="append", default=[],
                        nargs="+", metavar="KEY=VALUE",
                        help="override a training config value, e.g. -o "
                        "train.epochs=1")


def _add_decide_args(parser):
    parser.add_argument("-c", "--config", required=True,
                        help="decision config (actions, costs, outcome "
                        "values, constraints), e.g. "
                        "configs/decision/hillstrom.yaml")
    parser.add_argument("-o", "--override", action="append", default=[],
                        nargs="+", metavar="KEY=VALUE",
                        help="override a decision config value, e.g. -o "
                        "decision.budget=500 decision.actions.1.capacity=100 "
                        "(values are parsed as YAML)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--predictions",
                        help="table with one <outcome>@<action> column per "
                        "outcome and action; with the observed treatment and "
                        "outcome columns the decisions are also evaluated")
    source.add_argument("--model", metavar="EXPORT_DIR",
                        help="exported model that takes the treatment as an "
                        "input; predicts --data under every action")
    parser.add_argument("--data", help="customers to predict with --model")
    parser.add_argument("--output", required=True,
                        help="decision file; .csv, .tsv, .jsonl or .parquet "
                        "sets the format")
    parser.add_argument("--report", metavar="DIR",
                        help="report directory (default: report/ beside "
                        "--output)")
    parser.add_argument("--budget", type=float, default=None,
                        help="maximum total expected cost, in the units of the "
                        "costs (default: decision.budget)")
    parser.add_argument("--train-data",
                        help="training rows with the treatment and outcomes; "
                        "adds the T-learner gradient-boosting baseline")
    parser.add_argument("--truth",
                        help="true expected outcomes in the predictions' "
                        "layout, e.g. from the quickstart data generator")


def _add_infer_args(parser):
    parser.add_argument("--model", required=True, metavar="EXPORT_DIR",
                        help="directory written by `ernie-marketing export`")
    parser.add_argument("--input", required=True,
                        help="CSV/TSV, JSONL, Parquet or zipped CSV file")
    parser.add_argument("--output", required=True,
                        help="output file; .csv, .tsv, .jsonl or .parquet sets "
                        "the format")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="texts per batch (default: 32)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for math (default: every core)")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"),
                        default="auto", help="auto picks the GPU when Paddle "
                        "was built with CUDA and one is visible")
    parser.add_argument("--onednn", choices=("on", "off"), default=None,
                        help="use oneDNN kernels on the CPU (default: on)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="bf16 runs matrix products in bfloat16 through "
                        "oneDNN: faster on CPUs with bfloat16 instructions, "
                        "less exact (default: fp32)")
    parser.add_argument("--tensorrt", action="store_true",
                        help="run through TensorRT (GPU only)")
    parser.add_argument("--sep", default=None,
                        help="column separator of a CSV-like input (default: "
                        "by extension; auto sniffs it)")
    parser.add_argument("--encoding", default="utf-8",
                        help="text encoding of the input (default: utf-8)")


def _add_config_args(parser, required):
    parser.add_argument("-c", "--config", required=required,
                        help="YAML config file")
    parser.add_argument("-o", "--override", action="append", default=[],
                        nargs="+", metavar="KEY=VALUE",
                        help="override a config value, e.g. -o train.max_steps=60 "
                        "data.max_rows=3000 (values are parsed as YAML)")


def _overrides(args):
    return [item for group in args.override for item in group]


def _load(args):
    from .config import load_config

    return load_config(args.config, _overrides(args))


def _run_train(args):
    from .engine.distributed import launched_rank
    from .engine.trainer import train

    result = train(_load(args))
    if launched_rank() != 0:
        return  # rank 0 prints the summary of a data-parallel run
    summary = {k: result[k] for k in ("best_step", "selection_metric",
                                      "selection_value")}
    for split in ("valid", "test"):
        if split in result:
            summary[split] = result[split]
    print(json.dumps(summary, ensure_ascii=False, indent=2))


def _run_pretrain(args):
    from .pretrain import load_pretrain_config, pretrain

    config = load_pretrain_config(args.config, _overrides(args))
    print(json.dumps(pretrain(config), ensure_ascii=False, indent=2))


def _run_eval(args):
    from .engine.evaluate_checkpoint import evaluate_checkpoint, max_difference

    config = _load(args) if args.config else None
    if args.config is None and _overrides(args):
        raise UserError("-o overrides need a config; pass -c CONFIG")
    checkpoint = args.checkpoint
    if checkpoint is None and config is not None:
        checkpoint = config.model.checkpoint or os.path.join(config.output.dir,
                                                             "best")
    if checkpoint is None:
        raise UserError("no checkpoint given: pass --checkpoint DIR or -c CONFIG "
                        "with model.checkpoint")
    results, saved = evaluate_checkpoint(checkpoint, config)
    print(json.dumps(results, ensure_ascii=False, indent=2))
    if any(split in saved for split in results):
        gap = max_difference(results, saved)
        if gap is None:
            logger.warning("the evaluated splits have other row counts than "
                           "the ones saved with the checkpoint, so the data "
                           "differs; to reproduce the saved metrics, run eval "
                           "with --checkpoint alone or repeat the training "
                           "data overrides")
        else:
            logger.info("largest difference from the metrics saved with the "
                        "checkpoint: %.2e", gap)


def _run_export(args):
    from .export import export_model, resolve_export_config

    checkpoint = args.checkpoint
    if checkpoint is None and args.config is not None:
        config = _load(args)
        checkpoint = config.model.checkpoint or os.path.join(config.output.dir,
                                                             "best")
    if checkpoint is None:
        raise UserError("no checkpoint given: pass --checkpoint DIR or -c CONFIG "
                        "with model.checkpoint")
    checkpoint, config = resolve_export_config(checkpoint, args.config,
                                               _overrides(args))
    path = export_model(checkpoint, args.output, config)
    print(json.dumps({"export": path, "checkpoint": checkpoint}, indent=2))


def _run_infer(args):
    from .inference import predict_file

    onednn = None if args.onednn is None else args.onednn == "on"
    summary = predict_file(
        args.model, args.input, args.output, sep=args.sep,
        encoding=args.encoding, progress=True, device=args.device,
        num_threads=args.threads, onednn=onednn, precision=args.precision,
        tensorrt=args.tensorrt, batch_size=args.batch_size)
    print(json.dumps(summary, ensure_ascii=False, indent=2))


def _run_decide(args):
    from .decision.command import read_input, run_decide
    from .decision.config import load_decision_config
    from .inference.writers import check_output_path

    overrides = _overrides(args)
    if args.budget is not None:
        overrides.append(f"decision.budget={args.budget!r}")
    config = load_decision_config(args.config, overrides)
    check_output_path(args.output)
    if args.model is not None:
        if args.data is None:
            raise UserError("--model needs --data, the customers to predict")
        predictions = _predict_actions(args.model, read_input(args.data,
                                                              "--data"), config)
    else:
        if args.data is not None:
            raise UserError("--data goes with --model; a --predictions file "
                            "must contain the observed columns itself")
        predictions = read_input(args.predictions, "--predictions")
    train = read_input(args.train_data, "--train-data") if args.train_data \
        else None
    truth = read_input(args.truth, "--truth") if args.truth else None
    report = args.report or os.path.join(
        os.path.dirname(os.path.abspath(args.output)), "report")
    summary = run_decide(config, predictions, args.output, report, train, truth)
    print(json.dumps(summary, ensure_ascii=False, indent=2))


def _run_quickstart(args):
    from .decision.quickstart import format_summary, run_quickstart

    if args.rows < 1000:
        raise UserError(f"--rows {args.rows} is too few: the quickstart needs "
                        "at least 1000 customers to train and evaluate")
    if not 0 <= args.seed < 2**32:
        raise UserError(f"--seed {args.seed} is invalid: expected an integer "
                        f"from 0 to {2**32 - 1}")
    summary = run_quickstart(args.output, args.rows, args.seed, args.config,
                             args.decision_config, _overrides(args))
    print(format_summary(summary))


def _predict_actions(export_dir, frame, config):
    """Return `frame` with every outcome predicted under every action."""
    import pandas as pd

    from .decision.counterfactual import predict_actions
    from .inference import Predictor

    predictor = Predictor(export_dir)
    predicted = predict_actions(predictor, frame, config.treatment_column,
                                config.action_names,
                                [o.name for o in config.outcomes])
    return pd.concat([frame.reset_index(drop=True),
                      predicted.drop(columns=predicted.columns[0])], axis=1)


def _quiet_libraries():
    """Keep Paddle's and PaddleNLP's import-time chatter off the console."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


if __name__ == "__main__":
    sys.exit(main())
