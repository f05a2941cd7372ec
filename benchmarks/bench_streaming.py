"""Streaming reads of a multi-million-row table: peak memory and rows/s.

Builds a CSV and a Parquet file of `--rows` rows (default 5,000,000) in a
temporary folder by repeating the 62,774 real reviews of
online_shopping_10_cats, then measures these stages on each file:

  read      `iter_table_chunks` over the whole file
  shard     the same, keeping rank 0 of 2
  text      read and `build_texts` over the whole file
  tokenize  read, `build_texts` and the ERNIE tokenizer (`TextEncoder`) on
            the first `--tokenize-rows` rows, because PaddleNLP's Python
            tokenizer is slow (about 1,600 reviews/s on one core)
  whole     `read_table`, which loads the whole file at once, for contrast
  train     streaming training (data.streaming) of a tiny ERNIE for
            `--train-steps` steps of 32 rows: the scan of the whole file,
            then training, which tokenizes one chunk at a time. It runs
            only when --stages lists it.

The shard stage's rows and rows/s count the rows rank 0 keeps. The train
stage prints two rows: "train: scan" (rows scanned) and "train: steps"
(rows trained, over the time from the scan's end to the run's end, which
includes tokenizing whole chunks, one validation pass and the checkpoints).

Each stage runs in a fresh process, so `ru_maxrss` is that stage's peak
resident memory; "after imports" is the process's peak before reading. The
files are deleted at the end unless --keep is given.

    .venv/bin/python benchmarks/bench_streaming.py
    .venv/bin/python benchmarks/bench_streaming.py --rows 1000000 --stages read text
    .venv/bin/python benchmarks/bench_streaming.py --stages train
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import ernie_marketing  # noqa: E402,F401  (sets math-library defaults first)

SHARED = os.path.join(ROOT, "..", "shared")
DEFAULT_DATA = os.path.join(SHARED, "data", "online_shopping_10_cats",
                            "online_shopping_10_cats.zip")
DEFAULT_VOCAB = os.path.join(SHARED, "ernie", "ernie-3.0-base-zh", "vocab.txt")
STAGES = ("read", "shard", "text", "tokenize", "whole", "train")
# The train stage loads Paddle and takes minutes, so it runs only on request.
DEFAULT_STAGES = STAGES[:-1]
TRAIN_BATCH_SIZE = 32
FORMATS = ("csv", "parquet")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_DATA,
                        help="review table to repeat (cat, label, review)")
    parser.add_argument("--vocab", default=DEFAULT_VOCAB, help="ERNIE vocab.txt")
    parser.add_argument("--rows", type=int, default=5_000_000,
                        help="rows of the generated files (default: 5000000)")
    parser.add_argument("--chunk-rows", type=int, default=50_000,
                        help="rows per chunk read (default: 50000)")
    parser.add_argument("--tokenize-rows", type=int, default=100_000,
                        help="rows tokenized in the tokenize stage; 0 means "
                        "all (default: 100000)")
    parser.add_argument("--max-length", type=int, default=128,
                        help="tokens per text after truncation (default: 128)")
    parser.add_argument("--train-steps", type=int, default=500,
                        help="training steps of the train stage "
                        "(default: 500)")
    parser.add_argument("--stages", nargs="+", choices=STAGES,
                        default=DEFAULT_STAGES,
                        help="stages to run (default: all but train)")
    parser.add_argument("--formats", nargs="+", choices=FORMATS,
                        default=FORMATS)
    parser.add_argument("--workdir", default=None,
                        help="parent of the new folder for the generated "
                        "files (default: the system's temporary folder)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the generated files instead of deleting "
                        "their folder at the end")
    # Internal: run one stage in this process and print its result as JSON.
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def peak_rss_mib():
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# Building the files --------------------------------------------------------


def build_files(source, rows, workdir, formats):
    """Write `rows` rows of repeated reviews as CSV and Parquet; return paths."""
    import pandas as pd

    frame = pd.read_csv(source, encoding="utf-8")
    frame["review"] = frame["review"].fillna("")
    # The train stage validates on every 100th review.
    paths = {"valid": os.path.join(workdir, "valid.csv")}
    frame.iloc[::100].to_csv(paths["valid"], index=False)
    if "csv" in formats:
        paths["csv"] = os.path.join(workdir, "reviews.csv")
        _write_csv(frame, rows, paths["csv"])
    if "parquet" in formats:
        paths["parquet"] = os.path.join(workdir, "reviews.parquet")
        _write_parquet(frame, rows, paths["parquet"])
    return paths


def _write_csv(frame, rows, path):
    block = frame.to_csv(index=False, header=False)
    with open(path, "w", encoding="utf-8") as f:
        f.write(",".join(frame.columns) + "\n")
        written = 0
        while written + len(frame) <= rows:
            f.write(block)
            written += len(frame)
        if written < rows:
            f.write(frame.iloc[:rows - written].to_csv(index=False,
                                                       header=False))


def _write_parquet(frame, rows, path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    with pq.ParquetWriter(path, table.schema) as writer:
        written = 0
        while written < rows:
            part = table.slice(0, min(len(frame), rows - written))
            writer.write_table(part)
            written += len(part)


# One stage -----------------------------------------------------------------


def run_stage(args):
    """Run `args.stage` on `args.path`; return its measurements."""
    from ernie_marketing.config import DataConfig
    from ernie_marketing.data.readers import read_table
    from ernie_marketing.data.streaming import iter_table_chunks
    from ernie_marketing.data.text import build_texts

    if args.stage == "train":
        return run_train_stage(args)
    data_config = DataConfig(train_path=args.path, text_columns=["review"])
    encoder = _text_encoder(args) if args.stage == "tokenize" else None
    limit = args.tokenize_rows if args.stage == "tokenize" else 0
    rank, world_size = (0, 2) if args.stage == "shard" else (0, 1)
    import_rss = peak_rss_mib()

    start = time.perf_counter()
    rows = 0
    if args.stage == "whole":
        rows = len(read_table(args.path))
    else:
        for chunk in iter_table_chunks(args.path, chunk_rows=args.chunk_rows,
                                       rank=rank, world_size=world_size):
            if limit:
                chunk = chunk.iloc[:limit - rows]
            if args.stage in ("text", "tokenize"):
                texts, _ = build_texts(chunk, data_config)
                if encoder is not None:
                    encoder.encode(texts.tolist())
            rows += len(chunk)
            if limit and rows >= limit:
                break
    seconds = time.perf_counter() - start
    return {"rows": rows, "seconds": seconds, "import_rss_mib": import_rss,
            "peak_rss_mib": peak_rss_mib()}


def run_train_stage(args):
    """Train a tiny ERNIE on the streamed file; time the scan separately."""
    from ernie_marketing.config import build_config
    from ernie_marketing.engine import trainer

    workdir = os.path.dirname(args.path)
    name = os.path.splitext(os.path.basename(args.path))[0]
    raw = {
        "data": {"train_path": args.path,
                 "valid_path": os.path.join(workdir, "valid.csv"),
                 "text_columns": ["review"], "streaming": True,
                 "chunk_rows": args.chunk_rows},
        "tokenizer": {"vocab_file": args.vocab,
                      "max_length": args.max_length},
        "model": {"encoder": {"hidden_size": 32, "num_hidden_layers": 1,
                              "num_attention_heads": 2,
                              "intermediate_size": 64,
                              "max_position_embeddings": 512}},
        "tasks": [
            {"name": "category", "type": "multiclass", "label_column": "cat"},
            {"name": "sentiment", "type": "binary", "label_column": "label"},
        ],
        "train": {"epochs": 1, "max_steps": args.train_steps,
                  "batch_size": TRAIN_BATCH_SIZE,
                  "eval_steps": args.train_steps, "progress_bar": "off"},
        "output": {"dir": os.path.join(workdir, f"run-{name}"),
                   "overwrite": True},
    }
    config = build_config(raw)
    import_rss = peak_rss_mib()
    scan_result = {}
    scan = trainer.scan_training_file

    def timed_scan(*scan_args, **kwargs):
        begin = time.perf_counter()
        found = scan(*scan_args, **kwargs)
        scan_result.update(rows=found.stats["train"]["rows_read"],
                           seconds=time.perf_counter() - begin,
                           peak_rss_mib=peak_rss_mib())
        scan_result["end"] = time.perf_counter()
        return found

    # The trainer looks the scan up in its own module.
    trainer.scan_training_file = timed_scan
    trainer.train(config)
    end = time.perf_counter()
    return {"import_rss_mib": import_rss, "scan": scan_result,
            "rows": args.train_steps * TRAIN_BATCH_SIZE,
            "seconds": end - scan_result.pop("end"),
            "peak_rss_mib": peak_rss_mib()}


def _text_encoder(args):
    from paddlenlp.transformers import ErnieTokenizer

    from ernie_marketing.tokenizer import TextEncoder, standard_vocab_file

    vocab = standard_vocab_file(args.vocab, os.path.dirname(args.path))
    return TextEncoder(ErnieTokenizer(vocab), args.max_length)


def measure(args, stage, path):
    """Run one stage in a fresh process; return its measurements."""
    command = [sys.executable, os.path.abspath(__file__), "--stage", stage,
               "--path", path, "--chunk-rows", str(args.chunk_rows),
               "--tokenize-rows", str(args.tokenize_rows),
               "--max-length", str(args.max_length), "--vocab", args.vocab,
               "--train-steps", str(args.train_steps)]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if not lines or not lines[-1].startswith("{"):
        raise RuntimeError(f"stage {stage} on {path} failed with exit code "
                           f"{done.returncode}:\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1])
    # NOTE: with pyarrow 17.0.0 and pandas 3.0.6, a process that converted
    # a Parquet file of a million rows or more to pandas in one piece may
    # abort at interpreter exit (exit code 134). Its work is done by then,
    # so the measurement it printed is kept.
    result["exit_code"] = done.returncode
    return result


def main(argv=None):
    args = parse_args(argv)
    if args.stage:
        print(json.dumps(run_stage(args)))
        return 0
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="bench_streaming-", dir=args.workdir)
    try:
        start = time.perf_counter()
        paths = build_files(args.data, args.rows, workdir, args.formats)
        for name, path in paths.items():
            if name == "valid":
                continue
            print(f"built {path}: {args.rows} rows, "
                  f"{os.path.getsize(path) / 2**20:.0f} MiB in "
                  f"{time.perf_counter() - start:.0f} s", file=sys.stderr)
        results = []
        for name, path in paths.items():
            if name == "valid":
                continue
            for stage in args.stages:
                result = measure(args, stage, path)
                results.append((name, stage, result))
                print(f"{name} {stage}: {result}", file=sys.stderr)
        print_table(results, args)
    finally:
        if args.keep:
            print(f"kept the generated files in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def print_row(name, stage, r, mark):
    rate = r["rows"] / r["seconds"] if r["seconds"] > 0 else float("nan")
    print(f"| {name} | {stage}{mark} | {r['rows']:,} | {r['seconds']:.1f} "
          f"| {rate:,.0f} | {r['import_rss_mib']:.0f} | "
          f"{r['peak_rss_mib']:.0f} |")


def print_table(results, args):
    print(f"\n{args.rows} rows, chunks of {args.chunk_rows} rows; peak "
          "resident memory from getrusage(RUSAGE_SELF).ru_maxrss\n")
    print("| format | stage | rows | seconds | rows/s | MiB after imports "
          "| peak MiB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, stage, r in results:
        mark = " (a)" if r["exit_code"] != 0 else ""
        if stage == "train":
            print_row(name, "train: scan", dict(r["scan"], import_rss_mib=r[
                "import_rss_mib"]), mark)
            stage = "train: steps"
        print_row(name, stage, r, mark)
    if any(r["exit_code"] != 0 for _, _, r in results):
        print("\n(a) the process finished the stage, then aborted at exit; "
              "see the NOTE in measure()")


if __name__ == "__main__":
    sys.exit(main())
