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
    return parser


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
    from .engine.trainer import train

    result = train(_load(args))
    summary = {k: result[k] for k in ("best_step", "selection_metric",
                                      "selection_value")}
    for split in ("valid", "test"):
        if split in result:
            summary[split] = result[split]
    print(json.dumps(summary, ensure_ascii=False, indent=2))


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


def _quiet_libraries():
    """Keep Paddle's and PaddleNLP's import-time chatter off the console."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


if __name__ == "__main__":
    sys.exit(main())
