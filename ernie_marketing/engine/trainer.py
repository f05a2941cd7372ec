"""Joint training of the shared encoder and task heads from a Config."""

import contextlib
import hashlib
import io
import logging
import math
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import paddle

from ..config import lower_is_better, save_config
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
    discard_dir,
    is_checkpoint,
    replace_dir,
    save_checkpoint,
    task_schema,
    write_json,
)
from .evaluation import NonFiniteOutputError, evaluate, feature_tensors
from .resume import (
    LAST_DIR,
    InterruptRequest,
    check_resume_config,
    find_resume_state,
    load_model_state,
    load_optimizer_state,
    read_training_state,
    restore_random_state,
    write_training_state,
)

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
        self.stopped_early = False
        # Step of the newest resumable state on disk; None before the first.
        self.saved_step = None
        self.resume_dir = None
        if config.train.resume:
            self.resume_dir = find_resume_state(
                config.train.resume, os.path.abspath(config.output.dir))
            check_resume_config(self.resume_dir, config)
        self.output_dir = _prepare_output_dir(config.output, self.resume_dir)
        if self.resume_dir is not None and not os.path.isdir(self.resume_dir):
            # _prepare_output_dir renamed a last.old left by a killed save.
            self.resume_dir = find_resume_state(config.train.resume,
                                                self.output_dir)
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
        self._setup_position()
        if self.resume_dir is not None:
            self._restore_state()
        with self._open_writer() as writer:
            self.writer = writer
            try:
                with InterruptRequest() as interrupt:
                    self.interrupt = interrupt
                    self._train_loop()
            except KeyboardInterrupt:
                logger.warning("training interrupted after %d steps; %s; %s",
                               self.step, self._kept_checkpoint(),
                               self._kept_state())
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
        self.schema = task_schema(config, self.data.vocabs, self.data.features)
        write_json(os.path.join(self.output_dir, "tasks.json"), self.schema)
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
                                    config.model.pooling,
                                    self.schema["features"])
        self.model.feature_encoder = self.data.features
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
        lengths = [len(ids) for ids in self.encoded["train"]]
        self.model.train()
        progress = _progress_bar(train_cfg.progress_bar, self.total_steps,
                                 self.step)
        stop = self.stopped_early or self.step >= self.total_steps
        while not stop:
            # The generator state before the draw is saved with each state,
            # so a resumed run draws this epoch's order again and skips the
            # batches it has already trained on.
            self.batch_order_state = self.rng.bit_generator.state
            batches = bucketed_batches(lengths, train_cfg.batch_size,
                                       train_cfg.bucket_batches, self.rng)
            for index in batches[self.batch_in_epoch:]:
                self.meter.add(*self._train_step(index), len(index))
                self.step += 1
                self.batch_in_epoch += 1
                if progress is not None:
                    progress.update(1)
                if self.step % train_cfg.logging_steps == 0:
                    self._log_train(self.meter)
                stop = self.step >= self.total_steps
                if self.step % self.eval_every == 0 or stop:
                    self.stopped_early = self._evaluate_and_select()
                    stop = stop or self.stopped_early
                if (self.step % self.save_every == 0 or stop
                        or self.interrupt.requested):
                    self._save_last()
                if self.interrupt.requested:
                    raise KeyboardInterrupt
                if stop:
                    break
            else:
                self.epoch += 1
                self.batch_in_epoch = 0
        if progress is not None:
            progress.close()

    def _train_step(self, index):
        split = self.data.splits["train"]
        input_ids, token_type_ids = pad_batch(
            [self.encoded["train"][i] for i in index], self.text_encoder.pad_id)
        labels = {name: paddle.to_tensor(values[index])
                  for name, values in split.labels.items()}
        logits = self.model(paddle.to_tensor(input_ids),
                            paddle.to_tensor(token_type_ids),
                            **feature_tensors(index, split.numeric_features,
                                              split.categorical_features))
        total, task_losses = multitask_loss(self.schema["tasks"],
                                            self.task_weights, logits, labels)
        if not math.isfinite(float(total)):
            # Raised before backward(), so the weights stay as they were.
            raise self._diverged(f"the training loss is {float(total)}",
                                 self.step + 1)
        total.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.clear_grad()
        return float(total), [(float(loss), int(count))
                              for loss, count in task_losses.values()]

    def _log_train(self, meter):
        total, task_losses, counts, rate = meter.flush()
        lr = self.optimizer.get_lr()
        for name, value in task_losses.items():
            # NaN when no row of the interval was labelled for the task.
            if value == value:
                self.writer.add_scalar(f"train/loss/{name}", value, self.step)
        self.writer.add_scalar("train/loss/total", total, self.step)
        self.writer.add_scalar("train/lr", lr, self.step)
        parts = " ".join(f"{n}={v:.4f} (n={counts[n]})"
                         for n, v in task_losses.items())
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
                                {t["name"]: t for t in self.schema["tasks"]})
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

        lower = lower_is_better(self.config.train.metric)
        if _is_improvement(value, self.best_value, lower):
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
                            self.text_encoder.pad_id, split.numeric_features,
                            split.categorical_features)
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

    def _kept_state(self):
        if self.saved_step is None:
            return "no resumable state was saved"
        last_dir = os.path.join(self.output_dir, LAST_DIR)
        return (f"the resumable state (step {self.saved_step}) is in "
                f"{last_dir}; continue with -o train.resume=true")

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

    # Resumable state -------------------------------------------------------

    def _setup_position(self):
        """Start the data position, batch-order generator and loss meter."""
        train_cfg = self.config.train
        self.save_every = train_cfg.save_steps or self.eval_every
        self.rng = np.random.default_rng(train_cfg.seed)
        self.epoch = 0
        self.batch_in_epoch = 0
        self.batch_order_state = self.rng.bit_generator.state
        self.meter = _LossMeter(self.config.tasks)
        self.vdl_position = None
        self.interrupt = InterruptRequest()

    def _save_last(self):
        """Save the resumable state to output.dir/last, replacing the older one."""
        if self.saved_step == self.step:
            return
        path = os.path.join(self.output_dir, LAST_DIR)
        self.writer.flush()
        state = {
            "step": self.step,
            "total_steps": self.total_steps,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "batch_order_rng": self.batch_order_state,
            "train_data": self._train_fingerprint(),
            "best_value": self.best_value,
            "best_step": self.best_step,
            "evals_without_gain": self.evals_without_gain,
            "warned_nan_metric": self.warned_nan_metric,
            "stopped_early": self.stopped_early,
            "loss_meter": self.meter.state(),
            "vdl_file": os.path.basename(self.writer.file_name),
            "vdl_size": os.path.getsize(self.writer.file_name),
        }

        def write_state(directory):
            write_training_state(directory, self.model, self.optimizer, state)

        try:
            save_checkpoint(path, self.model, self.tokenizer, self.config,
                            self.schema, {"step": self.step},
                            write_extra=write_state)
        except OSError as exc:
            previous = ("no earlier resumable state exists"
                        if self.saved_step is None else
                        f"the previous resumable state (step "
                        f"{self.saved_step}) is kept in {path}")
            raise UserError(f"cannot write the resumable training state to "
                            f"{path} at step {self.step}: "
                            f"{exc.strerror or exc}; free disk space or "
                            f"choose another output.dir; {previous}") from None
        self.saved_step = self.step
        logger.info("saved the resumable state (step %d) to %s", self.step,
                    path)

    def _train_fingerprint(self):
        """Return the row count and a hash of the training token ids."""
        if getattr(self, "_fingerprint", None) is None:
            digest = hashlib.sha256()
            for ids in self.encoded["train"]:
                digest.update(np.asarray(ids, dtype=np.int64).tobytes())
                digest.update(b"|")
            self._fingerprint = {"rows": len(self.encoded["train"]),
                                 "sha256": digest.hexdigest()}
        return self._fingerprint

    def _restore_state(self):
        directory = self.resume_dir
        model_state, optimizer_state, random_state, state = (
            read_training_state(directory))
        if state["train_data"] != self._train_fingerprint():
            raise UserError(
                f"cannot resume from {directory}: the training data differs "
                f"from the saved run's ({state['train_data']['rows']} rows "
                f"then, {self._train_fingerprint()['rows']} now, or other "
                "texts), so the saved data position is meaningless; restore "
                "the data files or start a new run")

        # Weights, optimizer moments, schedule and random generators.
        load_model_state(self.model, model_state, directory)
        load_optimizer_state(self.optimizer, self.model, optimizer_state,
                             directory)
        restore_random_state(random_state)

        # Data position, model selection and logging.
        self.step = self.saved_step = state["step"]
        self.epoch = state["epoch"]
        self.batch_in_epoch = state["batch_in_epoch"]
        self.rng.bit_generator.state = state["batch_order_rng"]
        self.best_value = state["best_value"]
        self.best_step = state["best_step"]
        self.evals_without_gain = state["evals_without_gain"]
        self.warned_nan_metric = state["warned_nan_metric"]
        self.stopped_early = state["stopped_early"]
        self.meter.restore(state["loss_meter"])
        self.vdl_position = (state["vdl_file"], state["vdl_size"])
        self._restore_best(directory)

        if state["total_steps"] != self.total_steps:
            logger.warning(
                "the run now ends at step %d instead of %d, so the learning "
                "rate schedule is stretched to the new end from step %d on",
                self.total_steps, state["total_steps"], self.step)
        logger.info("resumed from step %d of %d (epoch %d, batch %d of the "
                    "epoch) saved in %s", self.step, self.total_steps,
                    self.epoch, self.batch_in_epoch, directory)

    def _restore_best(self, state_dir):
        """Make output.dir/best the best checkpoint of the resumed run."""
        if self.best_step is None:
            return
        best = os.path.join(self.output_dir, BEST_DIR)
        source = os.path.join(os.path.dirname(state_dir), BEST_DIR)
        if os.path.dirname(state_dir) == self.output_dir:
            return
        if not is_checkpoint(source):
            raise UserError(
                f"cannot resume from {state_dir}: its best checkpoint (step "
                f"{self.best_step}) is not at {source}; copy the run's best/ "
                "directory beside the state")
        tmp = tempfile.mkdtemp(prefix=f".{BEST_DIR}.tmp-", dir=self.output_dir)
        os.rmdir(tmp)
        shutil.copytree(source, tmp)
        replace_dir(tmp, best)
        logger.info("copied the best checkpoint (step %d) from %s", self.best_step,
                    source)

    def _open_writer(self):
        """Open the VisualDL writer, continuing the resumed run's record file."""
        from visualdl import LogWriter

        logdir = os.path.join(self.output_dir, "vdl")
        file_name = ""
        if self.vdl_position is not None:
            name, size = self.vdl_position
            path = os.path.join(logdir, name)
            source = os.path.join(os.path.dirname(self.resume_dir), "vdl", name)
            if not os.path.exists(path) and os.path.isfile(source):
                # Resuming into another folder continues a copy of the log.
                os.makedirs(logdir, exist_ok=True)
                shutil.copyfile(source, path)
            if os.path.isfile(path) and os.path.getsize(path) >= size:
                # Records after the saved step are cut, because the resumed
                # run writes those steps again.
                os.truncate(path, size)
                file_name = name
            else:
                logger.warning("VisualDL record file %s is missing or shorter "
                               "than when the state was saved; the resumed "
                               "run writes a new one", path)
        # VisualDL prints a notice on stdout when it appends to a file.
        with contextlib.redirect_stdout(io.StringIO()):
            return LogWriter(logdir=logdir, file_name=file_name)

    # Final evaluation ------------------------------------------------------

    def _finish(self):
        best_dir = os.path.join(self.output_dir, BEST_DIR)
        if self.best_step != self.step:
            from .checkpoint import ENCODER_DIR, load_head_weights

            best_encoder = load_encoder(os.path.join(best_dir, ENCODER_DIR))
            self.model.encoder.set_state_dict(best_encoder.state_dict())
            load_head_weights(self.model, best_dir)
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
    """Averages losses and measures throughput between logging steps.

    A task's loss is averaged over its labelled rows: each batch's mean is
    weighted by the batch's labelled count for that task.
    """

    def __init__(self, tasks):
        self.names = [t.name for t in tasks]
        self._reset()

    def _reset(self):
        self.total = 0.0
        self.tasks = [0.0] * len(self.names)
        self.counts = [0] * len(self.names)
        self.batches = 0
        self.samples = 0
        self.start = time.perf_counter()

    def state(self):
        """Return the loss sums since the last flush."""
        return {"total": self.total, "tasks": list(self.tasks),
                "counts": list(self.counts), "batches": self.batches}

    def restore(self, state):
        """Continue the loss sums of `state`; throughput restarts from now."""
        self._reset()
        self.total = state["total"]
        self.tasks = list(state["tasks"])
        self.counts = list(state["counts"])
        self.batches = state["batches"]

    def add(self, total, task_losses, batch_rows):
        """Add one batch: the total loss and each task's (loss, labelled rows)."""
        self.total += total
        for j, (loss, count) in enumerate(task_losses):
            self.tasks[j] += loss * count
            self.counts[j] += count
        self.batches += 1
        self.samples += batch_rows

    def flush(self):
        n = max(self.batches, 1)
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        losses = {name: v / c if c else float("nan")
                  for name, v, c in zip(self.names, self.tasks, self.counts)}
        result = (self.total / n, losses, dict(zip(self.names, self.counts)),
                  self.samples / elapsed)
        self._reset()
        return result


def _prepare_output_dir(output, resume_dir=None):
    """Create output.dir, checking what an earlier run left in it.

    A folder with checkpoints is reused only to resume the state inside it
    (`resume_dir`) or with output.overwrite, which deletes its old
    resumable state so that a later resume cannot pick it up.
    """
    directory = os.path.abspath(output.dir)
    resuming_here = (resume_dir is not None
                     and os.path.dirname(resume_dir) == directory)
    if resuming_here and output.overwrite:
        raise ConfigError(f"train.resume continues the run in output.dir="
                          f"{output.dir!r}, but output.overwrite=true would "
                          "replace it; set only one of them")
    # A save interrupted between its two renames leaves only NAME.old.
    earlier = [os.path.join(directory, name + suffix)
               for name in (BEST_DIR, LAST_DIR) for suffix in ("", ".old")]
    for candidate in earlier:
        if (os.path.exists(candidate) and not output.overwrite
                and not resuming_here):
            raise ConfigError(f"output.dir={output.dir!r} already contains a "
                              f"checkpoint ({candidate}); choose another "
                              "output.dir, set train.resume=true to continue "
                              "that run, or set output.overwrite=true to "
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
    if output.overwrite:
        for name in (LAST_DIR, LAST_DIR + ".old"):
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
    if output.overwrite or resuming_here:
        _remove_partial_saves(directory)
    return directory


def _remove_partial_saves(directory):
    """Clean up after a save that was killed midway.

    A `NAME.old` copy is deleted when NAME is complete, and renamed back to
    NAME when it is the only copy. Temporary `.NAME.tmp-` directories, which
    only partial copies carry, are deleted.
    """
    for base in (BEST_DIR, LAST_DIR):
        path = os.path.join(directory, base)
        old = path + ".old"
        if not os.path.isdir(old):
            continue
        if is_checkpoint(path):
            discard_dir(old, path)
        elif not os.path.exists(path):
            os.replace(old, path)
            logger.warning("restored %s from %s, left by a save that was "
                           "interrupted", path, old)
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if (name.startswith((f".{BEST_DIR}.tmp-", f".{LAST_DIR}.tmp-"))
                and os.path.isdir(path)):
            shutil.rmtree(path)
            logger.info("removed %s, left by a save that was interrupted",
                        path)


def _is_improvement(value, best, lower_is_better=False):
    """Return True when `value` beats `best`; NaN never beats a number.

    With `lower_is_better` (an error metric such as rmse) smaller wins.
    """
    if best is None:
        return True
    if math.isnan(value):
        return False
    if math.isnan(best):
        return True
    return value < best if lower_is_better else value > best


def _progress_bar(mode, total, initial=0):
    if mode == "off" or (mode == "auto" and not sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step",
                dynamic_ncols=True)


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
