"""Pretraining throughput of a config, and how many epochs fit in a time budget.

Runs the real pretraining loop (`ernie_marketing.pretrain.pretrain`) of the
config for `--steps` steps on a seeded random sample of `--max-docs`
documents, without evaluation or saves in between, in a temporary output
folder. It prints sequences/s and tokens/s of the training steps (tokens
count [CLS] and [SEP], not padding), the documents/s of tokenizing and
segmenting with jieba, the CPU seconds per sequence of all threads, and,
from the sample's sequences per document, an estimate of the full
corpus's epoch time and of the epochs that fit in `--budget-minutes`.

    .venv/bin/python benchmarks/pretrain_throughput.py
    .venv/bin/python benchmarks/pretrain_throughput.py --steps 100 --threads 2
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import ernie_marketing  # noqa: E402,F401  (sets math-library defaults first)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", default=os.path.join(
        ROOT, "configs", "pretrain_online_shopping.yaml"))
    parser.add_argument("--max-docs", type=int, default=4000,
                        help="documents sampled for the measurement")
    parser.add_argument("--steps", type=int, default=60,
                        help="training steps timed (default: 60)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for math (default: every core)")
    parser.add_argument("--budget-minutes", type=float, default=60.0,
                        help="time budget for the epoch estimate")
    args = parser.parse_args()

    from ernie_marketing.pretrain import load_pretrain_config, pretrain
    from ernie_marketing.runtime import setup_logging

    setup_logging()
    full = load_pretrain_config(args.config)
    output_dir = tempfile.mkdtemp(prefix="pretrain-throughput-")
    overrides = [f"data.max_docs={args.max_docs}", "data.valid_docs=0",
                 f"train.max_steps={args.steps}", "train.epochs=1000",
                 f"train.save_steps={args.steps}",
                 f"train.logging_steps={max(args.steps // 6, 1)}",
                 "train.progress_bar='off'", f"output.dir={output_dir}",
                 f"train.num_threads={args.threads or 'null'}"]
    config = load_pretrain_config(args.config, overrides)
    try:
        started = time.perf_counter()
        summary = pretrain(config)
        wall = time.perf_counter() - started
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)

    data = summary["data"]
    speed = summary["throughput"]
    # Documents the full config trains on: after duplicates and excluded
    # texts, before max_docs, less the held-out ones.
    full_docs = (data["read"] - data.get("duplicates", 0)
                 - data.get("excluded", 0))
    if full.data.max_docs is not None:
        full_docs = min(full_docs, full.data.max_docs)
    full_docs -= full.data.valid_docs
    sequences_per_doc = data["sequences"]["train"] / data["documents"]
    full_sequences = full_docs * sequences_per_doc
    epoch_seconds = full_sequences / speed["sequences_per_second"]
    steps_per_epoch = full_sequences / full.train.batch_size
    report = {
        "config": os.path.relpath(args.config, ROOT),
        "sample_documents": data["documents"],
        "sample_sequences": data["sequences"]["train"],
        "tokens_per_sequence": data["train_tokens"] / data["sequences"]["train"],
        "encode_documents_per_second": data["documents"]
        / max(data["encode_seconds"], 1e-9),
        "timed_steps": summary["steps"],
        "sequences_per_second": speed["sequences_per_second"],
        "tokens_per_second": speed["tokens_per_second"],
        "cpu_seconds_per_sequence": speed["cpu_seconds_per_sequence"],
        "wall_seconds_with_setup": wall,
        "full_training_documents": full_docs,
        "full_training_sequences_estimate": round(full_sequences),
        "steps_per_epoch_estimate": round(steps_per_epoch),
        "epoch_minutes_estimate": epoch_seconds / 60,
        "epochs_in_budget_estimate": args.budget_minutes * 60 / epoch_seconds,
        # CPU time of the training steps, every thread included, which
        # depends less on other processes than the wall time does.
        "epoch_cpu_minutes_estimate": full_sequences
        * speed["cpu_seconds_per_sequence"] / 60,
        "budget_minutes": args.budget_minutes,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
