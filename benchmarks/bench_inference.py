"""End-to-end inference throughput: Paddle Inference vs dynamic graph vs PyTorch.

Every backend runs the same pipeline on the same reviews: tokenize with the
package's `TextEncoder`, sort by length into batches, pad, run the model,
and turn the logits into labels and probabilities with `decode_outputs`.
The models have random weights, because no pretrained weights can be
downloaded here, and one architecture per `--archs` entry. The PyTorch model
is Hugging Face `transformers.ErnieModel` loaded with the same weights. The
table's last column is each backend's largest logit difference from the
Paddle dynamic graph on the first rows.

Each measurement runs in its own process, so thread pools and math-library
settings of one backend cannot slow another. The PyTorch rows need `torch`
and `transformers`. A plain `pip install transformers` pulls a
huggingface_hub and tokenizers that PaddleNLP 3.0.0b4 cannot import, so pin
the tested versions:

    pip install -c constraints.txt torch==2.13.0 transformers==4.55.4
    python benchmarks/bench_inference.py --max-rows 500
"""

import argparse
import json
import os
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

# Encoder shapes of ernie-3.0-medium-zh and ernie-3.0-nano-zh, both with the
# 40,000-token ERNIE 3.0 vocabulary.
ARCHS = {
    "medium": {"hidden_size": 768, "num_hidden_layers": 6,
               "num_attention_heads": 12, "intermediate_size": 3072},
    "nano": {"hidden_size": 312, "num_hidden_layers": 4,
             "num_attention_heads": 12, "intermediate_size": 1248},
}
BACKENDS = ("inference", "dynamic", "torch")
# Paddle Inference settings: oneDNN off (Intel MKL kernels), oneDNN on, and
# oneDNN with bfloat16 matrix products.
INFERENCE_MODES = {"mkl": (False, "fp32"), "onednn": (True, "fp32"),
                   "onednn-bf16": (True, "bf16")}
PARITY_ROWS = 64


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_DATA,
                        help="review table with a `review` column")
    parser.add_argument("--vocab", default=DEFAULT_VOCAB, help="ERNIE vocab.txt")
    parser.add_argument("--max-rows", type=int, default=None,
                        help="use this many reviews, sampled with a fixed seed "
                        "(default: all)")
    parser.add_argument("--archs", default="medium,nano",
                        help=f"comma-separated shapes from {sorted(ARCHS)}")
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help=f"comma-separated subset of {list(BACKENDS)}")
    parser.add_argument("--modes", default=",".join(INFERENCE_MODES),
                        help="Paddle Inference settings to measure, "
                        f"comma-separated from {list(INFERENCE_MODES)}")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128,
                        help="tokens per text, [CLS] and [SEP] included")
    parser.add_argument("--threads", type=int, default=2,
                        help="CPU threads for every backend")
    parser.add_argument("--work-dir", default=None,
                        help="where models are written (default: a temporary "
                        "folder, removed afterwards)")
    parser.add_argument("--json", default=None,
                        help="also write the results to this JSON file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# Data ----------------------------------------------------------------------


def load_texts(path, max_rows):
    """Return the review texts as training builds them, all or a fixed sample."""
    import types

    from ernie_marketing.data.readers import read_table
    from ernie_marketing.data.text import build_texts

    frame = read_table(path)
    if max_rows is not None and max_rows < len(frame):
        frame = frame.sample(n=max_rows, random_state=0)
    settings = types.SimpleNamespace(text_columns=["review"], text_template=None,
                                     text_separator=" ")
    texts, _ = build_texts(frame, settings)
    return texts.tolist()


# Model preparation (Paddle) --------------------------------------------------


def prepare(job):
    """Build a random model of one shape: checkpoint, export and numpy weights."""
    import numpy as np
    import paddle
    from paddlenlp.transformers import ErnieTokenizer

    from ernie_marketing.config import build_config
    from ernie_marketing.data.labels import LabelVocab
    from ernie_marketing.engine.checkpoint import save_checkpoint, task_schema
    from ernie_marketing.export import export_model
    from ernie_marketing.models import MultiTaskErnie, build_encoder
    from ernie_marketing.tokenizer import standard_vocab_file

    paddle.seed(0)
    work = job["work_dir"]
    vocab_file = standard_vocab_file(job["vocab"], os.path.join(work, "vocab"))
    tokenizer = ErnieTokenizer(vocab_file)
    config = build_config({
        "data": {"train_path": job["data"], "text_columns": ["review"]},
        "tokenizer": {"vocab_file": job["vocab"],
                      "max_length": job["max_length"]},
        "model": {"encoder": dict(job["arch"], max_position_embeddings=2048),
                  "pooling": "mean"},
        "tasks": [{"name": "category", "type": "multiclass",
                   "label_column": "cat"},
                  {"name": "sentiment", "type": "binary",
                   "label_column": "label"}],
    })
    vocabs = {"category": LabelVocab("category", [f"c{i}" for i in range(10)]),
              "sentiment": LabelVocab("sentiment", ["0", "1"])}
    schema = task_schema(config, vocabs)
    vocab_size = max(tokenizer.vocab.idx_to_token) + 1
    model = MultiTaskErnie(build_encoder(config.model, vocab_size,
                                         job["max_length"]),
                           schema["tasks"], "mean")
    model.eval()
    checkpoint = os.path.join(work, "checkpoint")
    save_checkpoint(checkpoint, model, tokenizer, config, schema, {})
    export_model(checkpoint, os.path.join(work, "export"))
    weights = {name: value.numpy() for name, value in model.state_dict().items()}
    np.savez(os.path.join(work, "weights.npz"), **weights)
    return {"parameters": int(sum(w.size for w in weights.values()))}


# Workers: one pipeline per backend -----------------------------------------


def run_pipeline(texts, encode, infer_logits, tasks):
    """Time tokenize, infer and decode over `texts`; return the timings."""
    from ernie_marketing.inference import decode_outputs

    start = time.perf_counter()
    encoded, _ = encode(texts)
    tokenized = time.perf_counter()
    logits = infer_logits(encoded)
    inferred = time.perf_counter()
    decoded = decode_outputs(tasks, logits)
    end = time.perf_counter()
    assert len(decoded) == len(texts)
    return {"texts": len(texts), "seconds": end - start,
            "tokenize_seconds": tokenized - start,
            "infer_seconds": inferred - tokenized,
            "decode_seconds": end - inferred,
            "texts_per_second": len(texts) / (end - start)}, logits


def work_inference(job, texts):
    from ernie_marketing.inference import Predictor

    onednn, precision = INFERENCE_MODES[job["mode"]]
    predictor = Predictor(os.path.join(job["work_dir"], "export"), device="cpu",
                          num_threads=job["threads"], onednn=onednn,
                          precision=precision, batch_size=job["batch_size"])
    predictor.predict_texts(texts[:job["batch_size"]])  # warm-up
    encoder = predictor.text_encoder
    return run_pipeline(texts, encoder.encode, predictor.predict_logits,
                        predictor.tasks)


def work_dynamic(job, texts):
    from ernie_marketing.engine.checkpoint import load_checkpoint
    from ernie_marketing.engine.evaluation import predict_logits
    from ernie_marketing.runtime import set_num_threads
    from ernie_marketing.tokenizer import TextEncoder

    set_num_threads(job["threads"])
    model, tokenizer, _, schema, _, _ = load_checkpoint(
        os.path.join(job["work_dir"], "checkpoint"))
    encoder = TextEncoder(tokenizer, job["max_length"])

    def infer(encoded):
        return predict_logits(model, encoded, job["batch_size"], encoder.pad_id)

    infer(encoder.encode(texts[:job["batch_size"]])[0])  # warm-up
    return run_pipeline(texts, encoder.encode, infer, schema["tasks"])


def work_torch(job, texts):
    import numpy as np
    import torch
    from paddlenlp.transformers import ErnieTokenizer

    from ernie_marketing.data.batching import pad_batch, sorted_batches
    from ernie_marketing.engine.checkpoint import read_json
    from ernie_marketing.tokenizer import TextEncoder

    torch.set_num_threads(job["threads"])
    checkpoint = os.path.join(job["work_dir"], "checkpoint")
    schema = read_json(os.path.join(checkpoint, "tasks.json"))
    tokenizer = ErnieTokenizer.from_pretrained(os.path.join(checkpoint, "encoder"))
    encoder = TextEncoder(tokenizer, job["max_length"])
    model = build_torch_model(job, schema["tasks"])

    @torch.inference_mode()
    def infer(encoded):
        outputs = [np.zeros((len(encoded), t["num_outputs"]), np.float32)
                   for t in schema["tasks"]]
        for index in sorted_batches([len(e) for e in encoded], job["batch_size"]):
            input_ids, token_type_ids = pad_batch([encoded[i] for i in index],
                                                  encoder.pad_id)
            logits = model(torch.from_numpy(input_ids),
                           torch.from_numpy(token_type_ids))
            for out, task_logits in zip(outputs, logits):
                out[index] = task_logits.numpy()
        return outputs

    infer(encoder.encode(texts[:job["batch_size"]])[0])  # warm-up
    return run_pipeline(texts, encoder.encode, infer, schema["tasks"])


def build_torch_model(job, tasks):
    """Return HF `ErnieModel` plus mean pooling and heads, with Paddle's weights."""
    import numpy as np
    import torch
    from transformers import ErnieConfig, ErnieModel

    arch = job["arch"]
    weights = np.load(os.path.join(job["work_dir"], "weights.npz"))
    vocab_size = weights["encoder.embeddings.word_embeddings.weight"].shape[0]
    config = ErnieConfig(vocab_size=vocab_size, max_position_embeddings=2048,
                         type_vocab_size=4, use_task_id=False, layer_norm_eps=1e-12,
                         hidden_act="gelu", pad_token_id=0, **arch)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = ErnieModel(config, add_pooling_layer=False)
            self.heads = torch.nn.ModuleList(
                torch.nn.Linear(arch["hidden_size"], t["num_outputs"])
                for t in tasks)

        def forward(self, input_ids, token_type_ids):
            mask = (input_ids != 0).to(torch.float32)
            hidden = self.encoder(input_ids=input_ids,
                                  token_type_ids=token_type_ids,
                                  attention_mask=mask).last_hidden_state
            weights = mask.unsqueeze(-1)
            features = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
            return [head(features) for head in self.heads]

    model = Model()
    state = torch_state(weights, arch["num_hidden_layers"], tasks)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"weight mapping incomplete: missing {missing}, "
                           f"unexpected {unexpected}")
    return model.eval()


def torch_state(weights, num_layers, tasks):
    """Map Paddle `MultiTaskErnie` weights to the PyTorch model's names.

    Paddle stores a Linear weight as [in, out] and PyTorch as [out, in].
    """
    import torch

    def linear(src, dst):
        state[f"{dst}.weight"] = torch.from_numpy(weights[f"{src}.weight"].T.copy())
        state[f"{dst}.bias"] = torch.from_numpy(weights[f"{src}.bias"])

    def same(src, dst):
        state[dst] = torch.from_numpy(weights[src])

    state = {}
    for name in ("word_embeddings", "position_embeddings",
                 "token_type_embeddings"):
        same(f"encoder.embeddings.{name}.weight", f"encoder.embeddings.{name}.weight")
    for part in ("weight", "bias"):
        same(f"encoder.embeddings.layer_norm.{part}",
             f"encoder.embeddings.LayerNorm.{part}")
    for i in range(num_layers):
        src, dst = f"encoder.encoder.layers.{i}", f"encoder.encoder.layer.{i}"
        for paddle_name, torch_name in (("q_proj", "query"), ("k_proj", "key"),
                                        ("v_proj", "value")):
            linear(f"{src}.self_attn.{paddle_name}",
                   f"{dst}.attention.self.{torch_name}")
        linear(f"{src}.self_attn.out_proj", f"{dst}.attention.output.dense")
        linear(f"{src}.linear1", f"{dst}.intermediate.dense")
        linear(f"{src}.linear2", f"{dst}.output.dense")
        for part in ("weight", "bias"):
            same(f"{src}.norm1.{part}", f"{dst}.attention.output.LayerNorm.{part}")
            same(f"{src}.norm2.{part}", f"{dst}.output.LayerNorm.{part}")
    for j, task in enumerate(tasks):
        linear(f"heads.{task['name']}.layers.1", f"heads.{j}")
    return state


WORKERS = {"inference": work_inference, "dynamic": work_dynamic,
           "torch": work_torch}


def run_worker(name, job_path):
    """Entry of a worker process: measure one backend, write JSON results."""
    import numpy as np

    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    if name == "prepare":
        result = prepare(job)
    else:
        texts = load_texts(job["data"], job["max_rows"])
        result, logits = WORKERS[name](job, texts)
        np.savez(job["logits_path"],
                 *[x[:PARITY_ROWS] for x in logits])
        result["settings"] = job.get("settings", "")
    with open(job["result_path"], "w", encoding="utf-8") as f:
        json.dump(result, f)


# Orchestration -------------------------------------------------------------


def spawn(name, job, work_dir):
    """Run worker `name` on `job` in a fresh process; return its results."""
    job = dict(job, result_path=os.path.join(work_dir, f"{name}-{os.getpid()}-"
                                             f"{time.monotonic_ns()}.json"))
    job_path = job["result_path"] + ".job"
    with open(job_path, "w", encoding="utf-8") as f:
        json.dump(job, f)
    env = dict(os.environ, GLOG_minloglevel="2")
    command = [sys.executable, os.path.abspath(__file__), "--worker", name,
               "--job", job_path]
    completed = subprocess.run(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    if completed.returncode != 0:
        tail = "\n".join(completed.stdout.strip().splitlines()[-15:])
        raise RuntimeError(f"{name} worker failed:\n{tail}")
    with open(job["result_path"], encoding="utf-8") as f:
        return json.load(f)


def measure_arch(arch_name, args, work_root):
    """Prepare one architecture and time every requested backend on it."""
    work_dir = os.path.join(work_root, arch_name)
    os.makedirs(work_dir, exist_ok=True)
    base = {"arch": ARCHS[arch_name], "work_dir": work_dir, "data": args.data,
            "vocab": args.vocab, "max_rows": args.max_rows,
            "max_length": args.max_length, "threads": args.threads,
            "batch_size": args.batch_size}
    info = spawn("prepare", base, work_dir)
    print(f"{arch_name}: {info['parameters'] / 1e6:.1f}M parameters",
          file=sys.stderr)
    rows = []
    for backend in args.backends.split(","):
        modes = args.modes.split(",") if backend == "inference" else [None]
        for mode in modes:
            settings = _settings(backend, mode, args.threads)
            logits_path = os.path.join(work_dir, f"logits-{backend}-{mode}.npz")
            job = dict(base, mode=mode, settings=settings,
                       logits_path=logits_path)
            result = spawn(backend, job, work_dir)
            result.update(arch=arch_name, backend=backend, logits=logits_path)
            rows.append(result)
            print(f"  {settings}: {result['texts_per_second']:.1f} texts/s",
                  file=sys.stderr)
    _add_parity(rows)
    return rows


def _settings(backend, mode, threads):
    if backend == "inference":
        onednn, precision = INFERENCE_MODES[mode]
        return (f"Paddle Inference, oneDNN {'on' if onednn else 'off'}, "
                f"{precision}, {threads} threads")
    if backend == "dynamic":
        return f"Paddle dynamic graph, {threads} threads"
    return f"PyTorch eager + transformers, {threads} threads"


def _add_parity(rows):
    """Add each row's largest logit gap to the dynamic graph (or first row)."""
    import numpy as np

    reference = next((r for r in rows if r["backend"] == "dynamic"), rows[0])
    ref = np.load(reference["logits"])
    for row in rows:
        other = np.load(row["logits"])
        row["max_logit_gap"] = max(float(np.abs(ref[k] - other[k]).max())
                                   for k in ref.files)


def print_table(rows):
    """Print a Markdown table of throughput and ratios to PyTorch."""
    print("| shape | backend | texts | seconds | texts/s | tokenize share "
          "| vs PyTorch | max logit gap |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        torch_row = next((r for r in rows if r["arch"] == row["arch"]
                          and r["backend"] == "torch"), None)
        ratio = (f"{row['texts_per_second'] / torch_row['texts_per_second']:.2f}x"
                 if torch_row else "-")
        share = row["tokenize_seconds"] / row["seconds"]
        print(f"| {row['arch']} | {row['settings']} | {row['texts']} | "
              f"{row['seconds']:.1f} | {row['texts_per_second']:.1f} | "
              f"{share:.0%} | {ratio} | {row['max_logit_gap']:.1e} |")


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        run_worker(args.worker, args.job)
        return 0
    unknown = [a for a in args.archs.split(",") if a not in ARCHS]
    unknown += [b for b in args.backends.split(",") if b not in BACKENDS]
    unknown += [m for m in args.modes.split(",") if m not in INFERENCE_MODES]
    if unknown:
        raise SystemExit(f"unknown shape, backend or mode {unknown}; shapes: "
                         f"{sorted(ARCHS)}, backends: {list(BACKENDS)}, "
                         f"modes: {list(INFERENCE_MODES)}")
    work_root = args.work_dir or tempfile.mkdtemp(prefix="bench-inference-")
    rows = []
    for arch_name in args.archs.split(","):
        rows += measure_arch(arch_name, args, work_root)
    print_table(rows)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)
    if args.work_dir is None:
        import shutil

        shutil.rmtree(work_root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
