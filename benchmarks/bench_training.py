"""Training throughput: Paddle dynamic graph against PyTorch + transformers, eager.

Every contender trains the same model on the same batches. The model is an
ERNIE encoder of one shape with a 10-class category head and a binary
sentiment head on the pooled [CLS] output, with dropout 0.1 everywhere.
The loss is the sum of both task losses, and the optimizer AdamW (learning
rate 5e-5, weight decay 0.01 except on biases and norms) with gradient
clipping to a global norm of 1.0. Weights are random, because no
pretrained weights can be downloaded here. Speed does not depend on them.

Data comes in two kinds, both from real reviews tokenized with the
package's `TextEncoder` and the ERNIE 3.0 vocabulary:

- `fixed`: the 32 longest sampled reviews cut to 128 tokens, one batch of
  32 x 128 tokens with no padding.
- `reviews`: `--review-batches` batches of an epoch drawn the way the
  trainer draws them (`bucketed_batches`: shuffled, sorted by length within
  buckets of 50 batches, padded to the longest row of each batch), picked
  at evenly spaced quantiles of their padded width.

Contenders:

- `paddle-default`: Paddle as installed, with its default of one CPU thread
  and no MKL setting.
- `paddle-2threads`: the same with 2 threads (same process, in turns).
- `paddle-2threads-mkl`: 2 threads with `MKL_DEBUG_CPU_TYPE=5` forced,
  without the package's CPU training speed-ups.
- `paddle-project`: what `tools/train.py` does on the CPU with
  `train.cpu_fast_kernels: auto`: threads and MKL settings chosen by
  `ernie_marketing.runtime` (every core, and `MKL_DEBUG_CPU_TYPE=5` on AMD
  processors), then `prepare_cpu_training`, which adds the CPU kernels of
  `ernie_marketing.models.cpu_kernels` and a malloc that keeps freed
  memory.
- `torch`: Hugging Face `transformers.ErnieModel` (its only attention
  implementation, eager) with `torch.optim.AdamW` defaults, 2 threads.
- `torch-keep-memory` (not run by default): the same with glibc malloc
  set by environment variables the way `paddle-project` sets it.

Each worker process stays up for the whole run, so the thread pools and
MKL settings of one cannot leak into another; only `paddle-default` and
`paddle-2threads`, which differ in the thread count alone, share one. The
contenders take turns: every round runs one timed pass per contender (one
`fixed` step, then the `reviews` batches), contender after contender, so a
change in machine load hits all of them alike. The table reports the
median over rounds, with the slowest and fastest round.

The PyTorch rows need `torch` and `transformers`. When the running Python
cannot import them, give another interpreter that can with
`--torch-python`; PaddleNLP 3.0.0b4 needs pinned versions to share one
environment with them (see benchmarks/bench_inference.py).

    python benchmarks/bench_training.py --archs mini,medium
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# The value from the caller's environment, before the package sets its own.
CALLER_MKL_CPU_TYPE = os.environ.get("MKL_DEBUG_CPU_TYPE")

SHARED = os.path.join(ROOT, "..", "shared")
DEFAULT_DATA = os.path.join(SHARED, "data", "online_shopping_10_cats",
                            "online_shopping_10_cats.zip")
DEFAULT_VOCAB = os.path.join(SHARED, "ernie", "ernie-3.0-base-zh", "vocab.txt")

# Encoder shapes of ernie-3.0-medium-zh and ernie-3.0-mini-zh, as in
# PaddleNLP 3.0.0b4's ernie/configuration.py. The embedding has one row per
# token of the ERNIE 3.0 vocab.txt (39,980; the released models have 40,000).
ARCHS = {
    "medium": {"hidden_size": 768, "num_hidden_layers": 6,
               "num_attention_heads": 12, "intermediate_size": 3072},
    "mini": {"hidden_size": 384, "num_hidden_layers": 6,
             "num_attention_heads": 12, "intermediate_size": 1536},
}
MAX_POSITIONS = 2048
TYPE_VOCAB_SIZE = 4
DROPOUT = 0.1
LEARNING_RATE = 5e-5
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0
NUM_CATEGORIES = 10

# Worker processes: framework, MKL_DEBUG_CPU_TYPE ("caller" keeps the
# caller's value, None removes it) and whether the package sets up the
# process the way the trainer does.
PROCESSES = {
    "paddle-stock": ("paddle", None, False),
    "paddle-mkl": ("paddle", "5", False),
    "paddle-project": ("paddle", "caller", True),
    "torch": ("torch", None, False),
    "torch-keep-memory": ("torch", None, False),
}
# Contender: (worker process, CPU threads). None keeps Paddle's default
# (FLAGS_paddle_num_threads) and "auto" is the package's choice (every
# core). Contenders that share a process take turns on one model.
CONTENDERS = {
    "paddle-default": ("paddle-stock", None),
    "paddle-2threads": ("paddle-stock", 2),
    "paddle-2threads-mkl": ("paddle-mkl", 2),
    "paddle-project": ("paddle-project", "auto"),
    "torch": ("torch", 2),
    "torch-keep-memory": ("torch-keep-memory", 2),
}
DEFAULT_CONTENDERS = ["paddle-default", "paddle-2threads", "paddle-2threads-mkl",
                      "paddle-project", "torch"]
LABELS = {
    "paddle-default": "Paddle dynamic graph, default settings",
    "paddle-2threads": "Paddle dynamic graph, 2 threads",
    "paddle-2threads-mkl": "Paddle dynamic graph, 2 threads, MKL_DEBUG_CPU_TYPE=5",
    "paddle-project": "Paddle dynamic graph, package settings + CPU kernels",
    "torch": "PyTorch eager + transformers",
    "torch-keep-memory": "PyTorch eager + transformers, malloc keeps freed "
                         "memory (MALLOC_MMAP_MAX_=0)",
}
# glibc malloc settings of the torch-keep-memory process: the same ones
# ernie_marketing.runtime.keep_freed_memory applies with mallopt.
KEEP_MEMORY_ENV = {"MALLOC_MMAP_MAX_": "0",
                   "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}
RESULT_PREFIX = "RESULT "


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_DATA,
                        help="review table with `review`, `cat` and `label` "
                        "columns")
    parser.add_argument("--vocab", default=DEFAULT_VOCAB, help="ERNIE vocab.txt")
    parser.add_argument("--archs", default="mini,medium",
                        help=f"comma-separated shapes from {sorted(ARCHS)}")
    parser.add_argument("--contenders", default=",".join(DEFAULT_CONTENDERS),
                        help=f"comma-separated subset of {list(CONTENDERS)}")
    parser.add_argument("--rounds", type=int, default=3,
                        help="timed passes per contender; the table shows "
                        "their median")
    parser.add_argument("--review-batches", type=int, default=8,
                        help="batches of real reviews per timed pass")
    parser.add_argument("--max-rows", type=int, default=4000,
                        help="reviews sampled (seed 0) to draw batches from")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128,
                        help="tokens per text, [CLS] and [SEP] included")
    parser.add_argument("--torch-python", default=None,
                        help="Python interpreter with torch and transformers "
                        "for the PyTorch rows (default: this one)")
    parser.add_argument("--work-dir", default=None,
                        help="where batches and worker logs go (default: a "
                        "temporary folder, removed afterwards)")
    parser.add_argument("--json", default=None,
                        help="also write the results to this JSON file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# Batches (parent process) ----------------------------------------------------


def prepare_batches(args, path):
    """Tokenize sampled reviews and save the fixed and review batches to `path`."""
    from paddlenlp.transformers import ErnieTokenizer

    from ernie_marketing.data.batching import pad_batch
    from ernie_marketing.data.readers import read_table
    from ernie_marketing.tokenizer import TextEncoder, standard_vocab_file

    frame = read_table(args.data).dropna(subset=["review"])
    frame = frame.sample(n=min(args.max_rows, len(frame)), random_state=0)
    categories = sorted(frame["cat"].unique())
    if len(categories) != NUM_CATEGORIES:
        raise ValueError(f"{args.data}: expected {NUM_CATEGORIES} categories "
                         f"in column `cat`, found {len(categories)}")
    category = frame["cat"].map(categories.index).to_numpy(np.int64)
    sentiment = frame["label"].to_numpy(np.int64)

    vocab_file = standard_vocab_file(args.vocab, os.path.dirname(path))
    encoder = TextEncoder(ErnieTokenizer(vocab_file), args.max_length)
    encoded, _ = encoder.encode(frame["review"].astype(str).tolist())
    lengths = np.array([len(ids) for ids in encoded])

    arrays = {"vocab_size": np.array(encoder.vocab_size)}
    longest = np.argsort(-lengths, kind="stable")[:args.batch_size]
    fixed = [ids[:args.max_length] for ids in (encoded[i] for i in longest)]
    _add_batch(arrays, "fixed", pad_batch(fixed, encoder.pad_id)[0],
               category[longest], sentiment[longest])
    for number, index in enumerate(_review_batches(lengths, args)):
        input_ids = pad_batch([encoded[i] for i in index], encoder.pad_id)[0]
        _add_batch(arrays, f"reviews{number}", input_ids, category[index],
                   sentiment[index])
    np.savez(path, **arrays)
    return {"pad_id": encoder.pad_id, "vocab_size": encoder.vocab_size}


def _review_batches(lengths, args):
    """Return `args.review_batches` batches of one epoch, spread over lengths.

    The epoch is drawn as the trainer draws it. Its batches are sorted by
    padded width and picked at evenly spaced quantiles, so a few batches
    cover the short and the long reviews in the epoch's proportions.
    """
    from ernie_marketing.data.batching import bucketed_batches

    epoch = bucketed_batches(lengths, args.batch_size, 50,
                             np.random.default_rng(0))
    epoch = [b for b in epoch if len(b) == args.batch_size]
    epoch.sort(key=lambda index: lengths[index].max())
    count = min(args.review_batches, len(epoch))
    return [epoch[int((i + 0.5) * len(epoch) / count)] for i in range(count)]


def _add_batch(arrays, name, input_ids, category, sentiment):
    arrays[f"{name}.input_ids"] = input_ids
    arrays[f"{name}.category"] = category
    arrays[f"{name}.sentiment"] = sentiment


def load_batches(path):
    """Return {"fixed": [batch], "reviews": [batches]}, each a dict of arrays."""
    data = np.load(path)
    batches = {"fixed": [], "reviews": []}
    names = sorted({key.split(".")[0] for key in data.files if "." in key},
                   key=lambda n: (n != "fixed", int(n[7:] or 0)))
    for name in names:
        batch = {field: data[f"{name}.{field}"]
                 for field in ("input_ids", "category", "sentiment")}
        batches["fixed" if name == "fixed" else "reviews"].append(batch)
    return batches, int(data["vocab_size"])


# Workers: one training loop per framework -------------------------------------


def paddle_trainer(job):
    """Return a function that trains the package's model on one batch."""
    if job["project_settings"]:
        import ernie_marketing  # noqa: F401  (chooses MKL settings)
    import paddle  # after the package, or alone for stock settings

    from ernie_marketing.config import EncoderConfig, ModelConfig
    from ernie_marketing.losses import multitask_loss
    from ernie_marketing.models import MultiTaskErnie, build_encoder
    from ernie_marketing.models.cpu_kernels import prepare_cpu_training
    from ernie_marketing.runtime import set_num_threads

    paddle.seed(0)
    encoder_config = EncoderConfig(
        **job["arch"], hidden_dropout_prob=DROPOUT,
        attention_probs_dropout_prob=DROPOUT,
        max_position_embeddings=MAX_POSITIONS, type_vocab_size=TYPE_VOCAB_SIZE)
    encoder = build_encoder(ModelConfig(encoder=encoder_config),
                            job["vocab_size"], job["max_length"])
    tasks = [{"name": "category", "type": "multiclass",
              "num_outputs": NUM_CATEGORIES, "dropout": DROPOUT},
             {"name": "sentiment", "type": "binary", "num_outputs": 1,
              "dropout": DROPOUT}]
    model = MultiTaskErnie(encoder, tasks, "cls")
    kernels = None
    if job["project_settings"]:
        kernels = prepare_cpu_training(model, "auto")
    model.train()
    no_decay = {p.name for n, p in model.named_parameters()
                if n.endswith("bias") or "norm" in n}
    optimizer = paddle.optimizer.AdamW(
        learning_rate=LEARNING_RATE, parameters=model.parameters(),
        weight_decay=WEIGHT_DECAY,
        apply_decay_param_fun=lambda name: name not in no_decay,
        grad_clip=paddle.nn.ClipGradByGlobalNorm(MAX_GRAD_NORM))

    def set_threads(threads):
        if threads == "auto":
            return set_num_threads(None)
        if threads is None:
            threads = paddle.get_flags("FLAGS_paddle_num_threads")[
                "FLAGS_paddle_num_threads"]
        return set_num_threads(threads)

    def step(batch):
        input_ids = paddle.to_tensor(batch["input_ids"])
        logits = model(input_ids, paddle.zeros_like(input_ids))
        labels = {"category": paddle.to_tensor(batch["category"]),
                  "sentiment": paddle.to_tensor(batch["sentiment"])}
        loss, _ = multitask_loss(tasks, [1.0, 1.0], logits, labels)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        return float(loss)

    info = {"framework": f"paddle {paddle.__version__}",
            "cpu_kernels": kernels,
            "mkl_debug_cpu_type": os.environ.get("MKL_DEBUG_CPU_TYPE")}
    return set_threads, step, info


def torch_trainer(job):
    """Return a function that trains transformers' ErnieModel on one batch."""
    import torch
    import transformers
    from transformers import ErnieConfig, ErnieModel

    torch.manual_seed(0)
    arch = job["arch"]
    config = ErnieConfig(
        vocab_size=job["vocab_size"], max_position_embeddings=MAX_POSITIONS,
        type_vocab_size=TYPE_VOCAB_SIZE, hidden_act="gelu",
        hidden_dropout_prob=DROPOUT, attention_probs_dropout_prob=DROPOUT,
        use_task_id=False, pad_token_id=0, **arch)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = ErnieModel(config)
            self.heads = torch.nn.ModuleList(
                torch.nn.Sequential(torch.nn.Dropout(DROPOUT),
                                    torch.nn.Linear(arch["hidden_size"], size))
                for size in (NUM_CATEGORIES, 1))

        def forward(self, input_ids):
            mask = (input_ids != 0).to(torch.float32)
            pooled = self.encoder(input_ids=input_ids,
                                  token_type_ids=torch.zeros_like(input_ids),
                                  attention_mask=mask).pooler_output
            return [head(pooled) for head in self.heads]

    model = Model().train()
    decay = [p for n, p in model.named_parameters()
             if not (n.endswith("bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters()
                if n.endswith("bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY},
         {"params": no_decay, "weight_decay": 0.0}], lr=LEARNING_RATE)

    def step(batch):
        input_ids = torch.from_numpy(batch["input_ids"])
        category, sentiment = model(input_ids)
        loss = (torch.nn.functional.cross_entropy(
                    category, torch.from_numpy(batch["category"]))
                + torch.nn.functional.binary_cross_entropy_with_logits(
                    sentiment[:, 0],
                    torch.from_numpy(batch["sentiment"]).to(torch.float32)))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad()
        return float(loss)

    def set_threads(threads):
        torch.set_num_threads(threads)
        return torch.get_num_threads()

    info = {"framework": f"torch {torch.__version__}, transformers "
                         f"{transformers.__version__}",
            "attention": config._attn_implementation,
            "malloc": {k: v for k, v in os.environ.items()
                       if k.startswith("MALLOC_")}}
    return set_threads, step, info


def run_worker(job_path):
    """Run one worker process: build the model, then run commands from stdin."""
    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    batches, _ = load_batches(job["batches"])
    build = torch_trainer if job["framework"] == "torch" else paddle_trainer
    set_threads, step, info = build(job)
    _reply(dict(info, ready=True))
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "exit":
            break
        threads = set_threads(command["threads"])
        selected = batches[command["data"]][:command.get("limit")]
        seconds = []
        for batch in selected:
            start = time.perf_counter()
            loss = step(batch)
            seconds.append(time.perf_counter() - start)
        _reply({"seconds": seconds, "loss": loss, "threads": threads,
                "samples": sum(len(b["input_ids"]) for b in selected),
                "tokens": sum(b["input_ids"].size for b in selected),
                "peak_rss_mib": resource.getrusage(
                    resource.RUSAGE_SELF).ru_maxrss / 1024})


def _reply(message):
    sys.stdout.write(RESULT_PREFIX + json.dumps(message) + "\n")
    sys.stdout.flush()


# Orchestration ---------------------------------------------------------------


class Worker:
    """One training process, driven over stdin and stdout."""

    def __init__(self, name, job, work_dir, python):
        self.name = name
        framework, mkl_cpu_type, project = PROCESSES[name]
        job = dict(job, framework=framework, project_settings=project)
        job_path = os.path.join(work_dir, f"{name}.json")
        with open(job_path, "w", encoding="utf-8") as f:
            json.dump(job, f)
        self.log_path = os.path.join(work_dir, f"{name}.log")
        self.log = open(self.log_path, "w", encoding="utf-8")
        self.process = subprocess.Popen(
            [python, os.path.abspath(__file__), "--worker", job_path],
            env=_worker_env(name, mkl_cpu_type), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.info = self._read()

    def train(self, data, threads, limit=None):
        self._send({"op": "train", "data": data, "threads": threads,
                    "limit": limit})
        return self._read()

    def close(self):
        if self.process.poll() is None:
            self._send({"op": "exit"})
            self.process.wait(timeout=60)
        self.log.close()

    def _send(self, command):
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def _read(self):
        for line in self.process.stdout:
            if line.startswith(RESULT_PREFIX):
                return json.loads(line[len(RESULT_PREFIX):])
        self.log.flush()
        with open(self.log_path, encoding="utf-8") as f:
            tail = "".join(f.readlines()[-15:])
        raise RuntimeError(f"{self.name} worker exited with code "
                           f"{self.process.wait()}:\n{tail}")


def _worker_env(process_name, mkl_cpu_type):
    """Environment of a worker: the caller's, with MKL_DEBUG_CPU_TYPE and the
    malloc settings that the process needs."""
    env = dict(os.environ, GLOG_minloglevel="2")
    env.pop("MKL_DEBUG_CPU_TYPE", None)
    if mkl_cpu_type == "caller":
        mkl_cpu_type = CALLER_MKL_CPU_TYPE
    if mkl_cpu_type is not None:
        env["MKL_DEBUG_CPU_TYPE"] = mkl_cpu_type
    if process_name == "torch-keep-memory":
        env.update(KEEP_MEMORY_ENV)
    return env


def measure_arch(arch_name, args, batches_path, vocab_size, work_dir):
    """Start the workers for one shape, time the contenders in turns."""
    job = {"arch": ARCHS[arch_name], "batches": batches_path,
           "vocab_size": vocab_size, "max_length": args.max_length}
    names = args.contenders.split(",")
    workers = {}
    try:
        for name in names:
            process = CONTENDERS[name][0]
            if process not in workers:
                python = (args.torch_python if process.startswith("torch")
                          else sys.executable)
                workers[process] = Worker(process, job, work_dir, python)
                _log(f"{arch_name}: {process} started, "
                     f"{workers[process].info}")
            # Warm-up: one step of each batch shape, not timed.
            _train(workers, name, "fixed")
            _train(workers, name, "reviews", limit=2)
        results = {(name, data): [] for name in names
                   for data in ("fixed", "reviews")}
        for number in range(args.rounds):
            for data in ("fixed", "reviews"):
                for name in names:
                    results[name, data].append(_train(workers, name, data))
            _log(f"{arch_name}: round {number + 1} of {args.rounds} done, "
                 f"load average {os.getloadavg()[0]:.2f}")
    finally:
        for worker in workers.values():
            worker.close()
    return [_summarize(arch_name, name, data, results[name, data],
                       workers[CONTENDERS[name][0]].info)
            for data in ("fixed", "reviews") for name in names]


def _train(workers, name, data, limit=None):
    process, threads = CONTENDERS[name]
    return workers[process].train(data, threads, limit)


def _summarize(arch_name, name, data, results, info):
    rates = [r["samples"] / sum(r["seconds"]) for r in results]
    return {"arch": arch_name, "data": data, "contender": name,
            "threads": results[0]["threads"], "info": info,
            "samples": results[0]["samples"],
            "tokens_per_sample": results[0]["tokens"] / results[0]["samples"],
            "samples_per_second": statistics.median(rates),
            "min": min(rates), "max": max(rates),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in results)}


def print_table(rows):
    """Print a Markdown table of median samples/s and ratios to PyTorch."""
    print("| shape | data | contender | threads | samples/s (median) "
          "| min-max | vs PyTorch | peak RSS MiB |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for row in rows:
        torch_row = next((r for r in rows if r["arch"] == row["arch"]
                          and r["data"] == row["data"]
                          and r["contender"] == "torch"), None)
        ratio = (f"{row['samples_per_second'] / torch_row['samples_per_second']:.2f}x"
                 if torch_row else "-")
        data = (f"{row['data']} ({row['samples']} rows, "
                f"{row['tokens_per_sample']:.0f} tokens/row)")
        print(f"| {row['arch']} | {data} | {LABELS[row['contender']]} | "
              f"{row['threads']} | {row['samples_per_second']:.2f} | "
              f"{row['min']:.2f}-{row['max']:.2f} | {ratio} | "
              f"{row['peak_rss_mib']:.0f} |")


def _log(message):
    print(message, file=sys.stderr, flush=True)


def _check_args(args):
    unknown = [a for a in args.archs.split(",") if a not in ARCHS]
    unknown += [c for c in args.contenders.split(",") if c not in CONTENDERS]
    if unknown:
        raise SystemExit(f"unknown shape or contender {unknown}; shapes: "
                         f"{sorted(ARCHS)}, contenders: {list(CONTENDERS)}")
    names = args.contenders.split(",")
    torch_names = [c for c in names if c.startswith("torch")]
    args.torch_python = args.torch_python or sys.executable
    if torch_names and not _torch_available(args.torch_python):
        _log(f"note: {', '.join(torch_names)} skipped because "
             f"{args.torch_python} cannot import torch and transformers; "
             "pass --torch-python with an interpreter that can")
        args.contenders = ",".join(c for c in names if c not in torch_names)


def _torch_available(python):
    check = subprocess.run([python, "-c", "import torch, transformers"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return check.returncode == 0


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        run_worker(args.worker)
        return 0
    _check_args(args)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="bench-training-")
    os.makedirs(work_dir, exist_ok=True)
    batches_path = os.path.join(work_dir, "batches.npz")
    load_start = os.getloadavg()
    vocab_size = prepare_batches(args, batches_path)["vocab_size"]
    rows = []
    for arch_name in args.archs.split(","):
        rows += measure_arch(arch_name, args, batches_path, vocab_size,
                             work_dir)
    print_table(rows)
    print(f"\nload average (1, 5, 15 min) at start {_loads(load_start)}, "
          f"at end {_loads(os.getloadavg())}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)
    if args.work_dir is None:
        import shutil

        shutil.rmtree(work_dir, ignore_errors=True)
    return 0


def _loads(values):
    return ", ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    sys.exit(main())
