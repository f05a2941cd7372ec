"""Sharing architectures and loss weightings against single-task models.

For each dataset config, the script trains, with the same step budget and
each seed:

- one single-task model per task: the config with the other tasks at
  weight 0, so the rows, the split and the model's inputs stay those of
  the multi-task runs but only this task trains the encoder. A task
  chained on a parent, as in ESMM, loses the chain. The run selects its
  checkpoint on this task's metric;
- the multi-task model with each sharing type in `--sharing` (hard, mmoe,
  ple) under each loss weighting in `--weightings`.

Every multi-task run selects its best checkpoint by the mean of the
tasks' first metrics on the validation split (`train.metric: mean`). The
table reports
test metrics, per task the one `mean_metric` names: ROC AUC for binary,
the first metric for multiclass and the normalized Gini for regression
types. Each cell is the mean and standard deviation over seeds. The last
column is the average relative gain over the single-task models, the
Delta-m of LibMTL (Lin and Zhang, 2023):

    Delta-m = 100% / T * sum_t (M_t - S_t) / |S_t|

with M_t the run's test metric of task t and S_t the mean over seeds of
the single-task model's. All the metrics here are higher-is-better. The
table gives its mean and standard deviation over seeds.

Each run is a `tools/train.py` process with a generated config, so runs
share nothing but the files. Budget options (`--max-rows`, `--max-steps`)
apply to every run alike.

    python benchmarks/bench_multitask.py \
        --configs configs/online_shopping.yaml,configs/hillstrom.yaml \
        --seeds 0,1,2
"""

import argparse
import concurrent.futures
import copy
import json
import math
import os
import statistics
import subprocess
import sys
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ernie_marketing.config import build_config  # noqa: E402
from ernie_marketing.config.loader import read_config_mapping  # noqa: E402
from ernie_marketing.config.schema import mean_metric  # noqa: E402
from ernie_marketing.errors import ConfigError  # noqa: E402
from ernie_marketing.weighting import WEIGHTING_METHODS  # noqa: E402

SHARING_TYPES = ("hard", "mmoe", "ple")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs",
                        default="configs/online_shopping.yaml,"
                        "configs/hillstrom.yaml",
                        help="comma-separated dataset configs")
    parser.add_argument("--seeds", default="0,1,2",
                        help="comma-separated values of train.seed")
    parser.add_argument("--sharing", default=",".join(SHARING_TYPES),
                        help=f"comma-separated subset of {SHARING_TYPES}")
    parser.add_argument("--weightings", default=",".join(WEIGHTING_METHODS),
                        help=f"comma-separated subset of {WEIGHTING_METHODS}")

    # The budget, the same for every run.
    parser.add_argument("--max-rows", type=int, default=None,
                        help="data.max_rows of every run (default: the "
                        "config's)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="train.max_steps of every run (default: the "
                        "config's)")
    parser.add_argument("--eval-steps", type=int, default=None,
                        help="train.eval_steps of every run")
    parser.add_argument("--threads", type=int, default=None,
                        help="train.num_threads of every run")

    parser.add_argument("--jobs", type=int, default=1,
                        help="runs trained at the same time")
    parser.add_argument("--work-dir", default="outputs/bench_multitask",
                        help="configs, run folders and results.json go here; "
                        "a finished run found here with the same config is "
                        "not trained again")
    parser.add_argument("--markdown", default=None,
                        help="also write the table to this file")
    return parser.parse_args(argv)


# Run plans -----------------------------------------------------------------


def base_mapping(path, args):
    """Return the config mapping of `path` with the shared budget applied."""
    raw = read_config_mapping(path)
    raw.setdefault("train", {})
    raw["train"]["metric"] = "mean"
    raw["train"]["progress_bar"] = "off"
    if args.max_rows is not None:
        raw["data"]["max_rows"] = args.max_rows
    for key, value in (("max_steps", args.max_steps),
                       ("eval_steps", args.eval_steps),
                       ("num_threads", args.threads)):
        if value is not None:
            raw["train"][key] = value
    return raw


def plan_runs(config_path, args):
    """Return [(run name, config mapping, kind)], kind "single" or "multi"."""
    dataset = os.path.splitext(os.path.basename(config_path))[0]
    base = base_mapping(config_path, args)
    runs = []
    for seed in _ints(args.seeds):
        for task in base["tasks"]:
            raw = copy.deepcopy(base)
            for other in raw["tasks"]:
                other["weight"] = 0.0
            single = next(t for t in raw["tasks"] if t["name"] == task["name"])
            single.pop("parent", None)
            single["weight"] = 1.0
            raw["train"]["metric"] = f"{task['name']}.{task_metric(task)}"
            raw["train"]["seed"] = seed
            raw.get("model", {}).pop("sharing", None)
            raw["train"].pop("loss_weighting", None)
            runs.append((f"{dataset}/single-{task['name']}/seed{seed}", raw,
                         "single"))
        for sharing in _names(args.sharing, SHARING_TYPES, "--sharing"):
            for method in _names(args.weightings, WEIGHTING_METHODS,
                                 "--weightings"):
                raw = copy.deepcopy(base)
                raw.setdefault("model", {})["sharing"] = {"type": sharing}
                raw["train"]["loss_weighting"] = {"method": method}
                raw["train"]["seed"] = seed
                if method == "dwa" and args.max_steps:
                    # DWA moves its weights once per logging window, so a
                    # short budget needs short windows; logging_steps
                    # changes nothing else in a run.
                    raw["train"]["logging_steps"] = max(1,
                                                        args.max_steps // 10)
                runs.append((f"{dataset}/{sharing}-{method}/seed{seed}", raw,
                             "multi"))
    return dataset, base, runs


def _ints(text, option="--seeds"):
    values = [value.strip() for value in text.split(",") if value.strip()]
    if not values:
        raise SystemExit(f"error: {option} is empty; give comma-separated "
                         "integers such as 0,1,2")
    try:
        return [int(value) for value in values]
    except ValueError:
        raise SystemExit(f"error: {option}={text!r} is invalid; give "
                         "comma-separated integers such as 0,1,2") from None


def _names(text, allowed, option):
    names = [value.strip().lower() for value in text.split(",")
             if value.strip()]
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        raise SystemExit(f"error: {option}={text!r} is invalid; expected "
                         f"comma-separated values from {list(allowed)}")
    return names


# Running -------------------------------------------------------------------


def run_one(name, raw, work_dir):
    """Train one run unless the work folder contains its finished run with the
    same config; return its metrics and the training seconds."""
    run_dir = os.path.join(work_dir, name)
    metrics_path = os.path.join(run_dir, "metrics.json")
    config_path = run_dir + ".yaml"
    raw = copy.deepcopy(raw)
    raw["output"] = {"dir": run_dir, "overwrite": True}
    if os.path.isfile(metrics_path) and os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as f:
            finished = yaml.safe_load(f) == raw
        if finished:
            with open(metrics_path, encoding="utf-8") as f:
                return json.load(f), 0.0
    os.makedirs(os.path.dirname(run_dir), exist_ok=True)
    with open(config_path, "w", encoding="utf-8") as f:
        yaml.safe_dump(raw, f, allow_unicode=True, sort_keys=False)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "tools/train.py", "-c",
                           config_path], cwd=ROOT, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{name} failed (exit {done.returncode}):\n"
                         f"{done.stderr[-3000:]}")
    with open(metrics_path, encoding="utf-8") as f:
        return json.load(f), seconds


def task_metric(task):
    return mean_metric(task["type"], tuple(task.get("top_k", (5, 10))))


# Table ---------------------------------------------------------------------


def summarise(dataset, base, results):
    """Return table rows for one dataset from {run name: metrics}."""
    tasks = [(task["name"], task_metric(task)) for task in base["tasks"]]

    def test_value(metrics, task, metric):
        value = metrics["test"][task][metric]
        return float("nan") if value is None else float(value)

    single = {}
    for task, metric in tasks:
        values = [test_value(m, task, metric) for name, m in results.items()
                  if name.startswith(f"{dataset}/single-{task}/")]
        values = _finite(values)
        single[task] = statistics.mean(values) if values else float("nan")

    groups = {}
    for name, metrics in results.items():
        run_dataset, contender, _ = name.split("/")
        if run_dataset != dataset or contender.startswith("single-"):
            continue
        groups.setdefault(contender, []).append(metrics)

    rows = [[dataset, "single-task models"]
            + [_spread([test_value(m, task, metric)
                        for name, m in results.items()
                        if name.startswith(f"{dataset}/single-{task}/")])
               for task, metric in tasks] + ["0 (reference)"]]
    for contender, runs in groups.items():
        gains = []
        for metrics in runs:
            relative = [(test_value(metrics, task, metric) - single[task])
                        / abs(single[task]) for task, metric in tasks]
            gains.append(100.0 * sum(relative) / len(relative))
        rows.append([dataset, contender]
                    + [_spread([test_value(m, task, metric) for m in runs])
                       for task, metric in tasks]
                    + [_spread(gains, digits=2, unit="%")])
    header = (["dataset", "model"]
              + [f"{task} {metric}" for task, metric in tasks] + ["Delta-m"])
    return header, rows


def _finite(values):
    return [value for value in values if math.isfinite(value)]


def _spread(values, digits=4, unit=""):
    """Return "mean ± standard deviation (n=...)" over the finite values."""
    values = _finite(values)
    if not values:
        return "n/a"
    mean = statistics.mean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}{unit}"
    spread = statistics.stdev(values)
    return (f"{mean:.{digits}f}{unit} ± {spread:.{digits}f}{unit} "
            f"(n={len(values)})")


def markdown(header, rows):
    lines = ["| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |"
              for row in rows]
    return "\n".join(lines)


def check_plans(args):
    """Return the run plans, or exit with one line naming a bad option."""
    if args.jobs < 1:
        raise SystemExit(f"error: --jobs={args.jobs} is invalid; give 1 or "
                         "more")
    paths = [path.strip() for path in args.configs.split(",") if path.strip()]
    if not paths:
        raise SystemExit("error: --configs is empty; give config files")
    plans = []
    for path in paths:
        try:
            plan = plan_runs(path, args)
            for _, raw, _ in plan[2]:
                build_config(copy.deepcopy(raw))
        except ConfigError as exc:
            raise SystemExit(f"error: {path} with the budget options: {exc}"
                             ) from None
        plans.append(plan)
    return plans


def main(argv=None):
    args = parse_args(argv)
    plans = check_plans(args)
    work_dir = os.path.abspath(args.work_dir)
    os.makedirs(work_dir, exist_ok=True)
    runs = [(name, raw) for _, _, planned in plans for name, raw, _ in planned]
    # Seeds run in order across all datasets, so a stopped benchmark leaves
    # whole seeds finished.
    runs.sort(key=lambda run: run[0].rsplit("/seed", 1)[1])
    results, summary = {}, {}

    def train_run(item):
        name, raw = item
        return name, run_one(name, raw, work_dir)

    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        for number, (name, (metrics, seconds)) in enumerate(
                pool.map(train_run, runs), 1):
            results[name] = metrics
            summary[name] = {"test": metrics.get("test"), "seconds": seconds}
            print(f"[{number}/{len(runs)}] {name}: {seconds:.0f} s",
                  flush=True)
    tables = [markdown(*summarise(dataset, base, results))
              for dataset, base, _ in plans]
    with open(os.path.join(work_dir, "results.json"), "w",
              encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    text = "\n\n".join(tables)
    print(text)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
