"""Joint training of the shared encoder and task heads from a Config."""

import logging
import math
import os
import sys
import tempfile
import time

import numpy as np
import paddle

from ..config import save_config
from ..data import prepare_data
from ..data.batching import bucketed_batches, pad_batch
from ..errors import ConfigError, UserError
from ..losses import multitask_loss
from ..metrics import selection_value
from ..models import MultiTaskErnie, build_encoder, load_encoder
from ..runtime import set_num_threads, set_seed, setup_logging
from ..tokenizer import TextEncoder, load_tokenizer
from .checkpoint import (
    METRICS_FILE,
    is_checkpoint,
    save_checkpoint,
    task_schema,
    write_json,
)
from .evaluation import NonFiniteOutputError, evaluate

logger = logging.getLogger(__name__)

BEST_DIR = "best"


def train(config):
    """Train on `config`; return the final metrics (also in metrics.json)."""
    return Trainer(config).run()


class Trainer:
    """Owns one training run: data, model, optimizer, logs and checkpoints."""

    def __init__(self, config):
        self.config = config
        self.step = 0
        self.best_value = None
        self.best_step = None
        self.evals_without_gain = 0
        self.warned_nan_metric = False
        self.output_dir = _prepare_output_dir(config.output)
        setup_logging(os.path.join(self.output_dir, "train.log"))
        threads = set_num_threads(config.train.num_threads)
        set_seed(config.train.seed)
        save_config(config, os.path.join(self.output_dir, "config.yaml"))
        logger.info("output directory %s, %d CPU threads, paddle %s on %s",
                    self.output_dir, threads, paddle.__version__,
                    paddle.device.get_device())

    def run(self):
        self._setup_data()
        self._setup_model()
        self._setup_optimizer()
        from visualdl import LogWriter

        with LogWriter(logdir=os.path.join(self.output_dir, "vdl")) as writer:
            self.writer = writer
            try:
                self._train_loop()
            except KeyboardInterrupt:
                logger.warning("training interrupted after %d steps; %s",
                               self.step, self._kept_checkpoint())
                raise
            return self._finish()

    # Setup ---------------------------------------------------------------

    def _setup_data(self):
        config = self.config
        self.data = prepare_data(config)
        train_texts = self.data.splits["train"].texts
        self.tokenizer = load_tokenizer(
            config, os.path.join(self.output_dir, "tokenizer"), train_texts)
        self.text_encoder = TextEncoder(self.tokenizer, config.tokenizer.max_length)
        self.encoded = {}
        for name, split in self.data.splits.items():
            self.encoded[name], truncated = self.text_encoder.encode(split.texts)
            self.data.stats.setdefault("truncated", {})[name] = truncated
            logger.info("%s: %d of %d texts truncated to %d tokens", name,
                        truncated, len(split), config.tokenizer.max_length)
        self.schema = task_schema(config, self.data.vocabs)
        write_json(os.path.join(self.output_dir, "tasks.json"), self.schema)
        self.task_types = [t.type for t in config.tasks]
        self.task_weights = [t.weight for t in config.tasks]
        if "valid" not in self.data.splits:
            logger.warning("no validation rows (data.split=%s, data.valid_path="
                           "%s): the best checkpoint is chosen on the training "
                           "split", config.data.split, config.data.valid_path)

    def _setup_model(self):
        config = self.config
        encoder = build_encoder(config.model, self.text_encoder.vocab_size,
                                config.tokenizer.max_length)
        self.model = MultiTaskErnie(encoder, self.schema["tasks"],
                                    config.model.pooling)
        n_params = sum(int(np.prod(p.shape)) for p in self.model.parameters())
        logger.info("model: %d parameters, heads %s", n_params,
                    {t["name"]: t["num_outputs"] for t in self.schema["tasks"]})

    def _setup_optimizer(self):
        from paddlenlp.transformers import LinearDecayWithWarmup

        train_cfg = self.config.train
        n_rows = len(self.data.splits["train"])
        self.steps_per_epoch = math.ceil(n_rows / train_cfg.batch_size)
        total = self.steps_per_epoch * train_cfg.epochs
        if train_cfg.max_steps is not None:
            total = min(total, train_cfg.max_steps)
        self.total_steps = total
        self.scheduler = LinearDecayWithWarmup(
            train_cfg.learning_rate, total, train_cfg.warmup_ratio)
        no_decay = {p.name for n, p in self.model.named_parameters()
                    if n.endswith("bias") or "norm" in n}
        self.optimizer = paddle.optimizer.AdamW(
            learning_rate=self.scheduler,
            parameters=self.model.parameters(),
            weight_decay=train_cfg.weight_decay,
            apply_decay_param_fun=lambda name: name not in no_decay,
            grad_clip=paddle.nn.ClipGradByGlobalNorm(train_cfg.max_grad_norm))
        self.eval_every = train_cfg.eval_steps or self.steps_per_epoch
        logger.info("%d training rows, %d steps per epoch, %d steps in all, "
                    "evaluation every %d steps", n_rows, self.steps_per_epoch,
                    total, self.eval_every)

    # Training ------------------------------------------------------------

    def _train_loop(self):
        train_cfg = self.config.train
        rng = np.random.default_rng(train_cfg.seed)
        lengths = [len(ids) for ids in self.encoded["train"]]
        self.model.train()
        progress = _progress_bar(train_cfg.progress_bar, self.total_steps)
        meter = _LossMeter(self.config.tasks)
        stop = False
        while not stop:
            for index in bucketed_batches(lengths, train_cfg.batch_size,
                                          train_cfg.bucket_batches, rng):
                meter.add(*self._train_step(index), len(index))
                self.step += 1
                if progress is not None:
                    progress.update(1)
                if self.step % train_cfg.logging_steps == 0:
                    self._log_train(meter)
                stop = self.step >= self.total_steps
                if self.step % self.eval_every == 0 or stop:
                    stop = self._evaluate_and_select() or stop
                if stop:
                    break
        if progress is not None:
            progress.close()

    def _train_step(self, index):
        split = self.data.splits["train"]
        input_ids, token_type_ids = pad_batch(
            [self.encoded["train"][i] for i in index], self.text_encoder.pad_id)
        labels = paddle.to_tensor(split.labels[index])
        logits = self.model(paddle.to_tensor(input_ids),
                            paddle.to_tensor(token_type_ids))
        total, task_losses = multitask_loss(self.task_types, self.task_weights,
                                            logits, labels)
        if not math.isfinite(float(total)):
            # Raised before backward(), so the weights stay as they were.
            raise self._diverged(f"the training loss is {float(total)}",
                                 self.step + 1)
        total.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.clear_grad()
        return float(total), [float(loss) for loss in task_losses]

    def _log_train(self, meter):
        total, task_losses, rate = meter.flush()
        lr = self.optimizer.get_lr()
        for name, value in task_losses.items():
            self.writer.add_scalar(f"train/loss/{name}", value, self.step)
        self.writer.add_scalar("train/loss/total", total, self.step)
        self.writer.add_scalar("train/lr", lr, self.step)
        parts = " ".join(f"{n}={v:.4f}" for n, v in task_losses.items())
        logger.info("step %d/%d: loss %s total=%.4f lr=%.2e %.1f samples/s",
                    self.step, self.total_steps, parts, total, lr, rate)

    def _evaluate_and_select(self):
        """Evaluate on the validation split, keep the best; return True to stop."""
        split_name = "valid" if "valid" in self.data.splits else "train"
        metrics = self._evaluate(split_name)
        for task, scores in metrics.items():
            for name, value in scores.items():
                if name != "count" and value == value:
                    self.writer.add_scalar(f"eval/{task}/{name}", value, self.step)
        value = selection_value(metrics, self.config.train.metric,
                                {t.name: t.type for t in self.config.tasks})
        self.writer.add_scalar("eval/selection_metric", value, self.step)
        logger.info("eval at step %d on %s: %s; %s=%.4f", self.step, split_name,
                    _format_metrics(metrics), self.config.train.metric, value)
        if math.isnan(value) and not self.warned_nan_metric:
            self.warned_nan_metric = True
            logger.warning("%s is NaN at step %d on the %s split (ROC AUC is "
                           "NaN when the labelled rows have one class), so it "
                           "cannot choose a checkpoint until it is a number; "
                           "set train.metric to another metric",
                           self.config.train.metric, self.step, split_name)

        if _is_improvement(value, self.best_value):
            self.best_value, self.best_step = value, self.step
            self.evals_without_gain = 0
            self._save_best(split_name, metrics)
            return False
        self.evals_without_gain += 1
        patience = self.config.train.early_stopping_patience
        if patience is not None and self.evals_without_gain >= patience:
            logger.info("early stopping at step %d: no gain in %s for %d "
                        "evaluations (best %.4f at step %d)", self.step,
                        self.config.train.metric, patience, self.best_value,
                        self.best_step)
            return True
        return False

    def _evaluate(self, split_name):
        split = self.data.splits[split_name]
        try:
            return evaluate(self.model, self.encoded[split_name], split.labels,
                            self.schema["tasks"],
                            self.config.train.eval_batch_size,
                            self.text_encoder.pad_id)
        except NonFiniteOutputError as exc:
            raise self._diverged(str(exc), self.step) from None

    def _diverged(self, reason, step):
        """Return the error for a run whose loss or outputs stopped being numbers."""
        train_cfg = self.config.train
        return UserError(
            f"training diverged at step {step}: {reason}; lower "
            f"train.learning_rate={train_cfg.learning_rate:g} or "
            f"train.max_grad_norm={train_cfg.max_grad_norm:g}, or check the "
            f"data; {self._kept_checkpoint()}")

    def _kept_checkpoint(self):
        if self.best_step is None:
            return "no checkpoint was saved"
        best_dir = os.path.join(self.output_dir, BEST_DIR)
        return f"the best checkpoint (step {self.best_step}) is kept in {best_dir}"

    def _save_best(self, split_name, metrics):
        payload = {"step": self.step, "selection_metric": self.config.train.metric,
                   "selection_value": self.best_value, split_name: metrics}
        path = os.path.join(self.output_dir, BEST_DIR)
        try:
            save_checkpoint(path, self.model, self.tokenizer, self.config,
                            self.schema, payload)
        except OSError as exc:
            previous = ("the previous best checkpoint is kept"
                        if is_checkpoint(path) else "no checkpoint was saved")
            raise UserError(f"cannot write the checkpoint to {path}: "
                            f"{exc.strerror or exc}; free disk space or choose "
                            f"another output.dir; {previous}") from None
        logger.info("saved best checkpoint (step %d) to %s", self.step, path)

    # Final evaluation ------------------------------------------------------

    def _finish(self):
        best_dir = os.path.join(self.output_dir, BEST_DIR)
        if self.best_step != self.step:
            from .checkpoint import ENCODER_DIR, HEADS_FILE

            best_encoder = load_encoder(os.path.join(best_dir, ENCODER_DIR))
            self.model.encoder.set_state_dict(best_encoder.state_dict())
            self.model.heads.set_state_dict(
                paddle.load(os.path.join(best_dir, HEADS_FILE)))
        result = {"best_step": self.best_step, "steps": self.step,
                  "selection_metric": self.config.train.metric,
                  "selection_value": self.best_value,
                  "data": _json_safe(self.data.stats)}
        for name in self.data.splits:
            if name != "train":
                result[name] = self._evaluate(name)
                logger.info("best checkpoint on %s: %s", name,
                            _format_metrics(result[name]))
                for task, scores in result[name].items():
                    for metric, value in scores.items():
                        if metric != "count" and value == value:
                            self.writer.add_scalar(f"{name}/{task}/{metric}",
                                                   value, self.best_step)
        write_json(os.path.join(best_dir, METRICS_FILE), result)
        write_json(os.path.join(self.output_dir, METRICS_FILE), result)
        logger.info("metrics written to %s; VisualDL logs: visualdl --logdir %s",
                    os.path.join(self.output_dir, METRICS_FILE),
                    os.path.join(self.output_dir, "vdl"))
        return result


class _LossMeter:
    """Averages losses and measures throughput between logging steps."""

    def __init__(self, tasks):
        self.names = [t.name for t in tasks]
        self._reset()

    def _reset(self):
        self.total = 0.0
        self.tasks = [0.0] * len(self.names)
        self.batches = 0
        self.samples = 0
        self.start = time.perf_counter()

    def add(self, total, task_losses, batch_rows):
        self.total += total
        self.tasks = [a + b for a, b in zip(self.tasks, task_losses)]
        self.batches += 1
        self.samples += batch_rows

    def flush(self):
        n = max(self.batches, 1)
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        result = (self.total / n,
                  {name: v / n for name, v in zip(self.names, self.tasks)},
                  self.samples / elapsed)
        self._reset()
        return result


def _prepare_output_dir(output):
    directory = os.path.abspath(output.dir)
    best = os.path.join(directory, BEST_DIR)
    # A save interrupted between its two renames leaves only best.old.
    for candidate in (best, best + ".old"):
        if os.path.exists(candidate) and not output.overwrite:
            raise ConfigError(f"output.dir={output.dir!r} already contains a "
                              f"checkpoint ({candidate}); choose another "
                              "output.dir or set output.overwrite=true to "
                              "replace it")
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ConfigError(f"output.dir={output.dir!r} is a file, not a "
                          "directory; choose another output.dir")
    try:
        os.makedirs(directory, exist_ok=True)
        # Probe with a real file, because os.access run as root ignores
        # permission bits and reports /proc as writable.
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot write to output.dir={output.dir!r}: "
                          f"{exc.strerror or exc}; choose a writable "
                          "directory") from None
    return directory


def _is_improvement(value, best):
    """Return True when `value` beats `best`; NaN never beats a number."""
    if best is None:
        return True
    if math.isnan(value):
        return False
    return math.isnan(best) or value > best


def _progress_bar(mode, total):
    if mode == "off" or (mode == "auto" and not sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="train", unit="step", dynamic_ncols=True)


def _format_metrics(metrics):
    parts = []
    for task, scores in metrics.items():
        inner = " ".join(f"{k}={v:.4f}" for k, v in scores.items() if k != "count")
        parts.append(f"{task}[{inner}]")
    return " ".join(parts)


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (np.integer,)):
        return int(value)
    return value
