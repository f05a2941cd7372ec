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
    return parser


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
        logger.info("largest difference from the metrics saved with the "
                    "checkpoint: %.2e", max_difference(results, saved))


def _quiet_libraries():
    """Keep Paddle's and PaddleNLP's import-time chatter off the console."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


if __name__ == "__main__":
    sys.exit(main())
