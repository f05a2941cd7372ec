"""Joint training of the shared encoder and task heads from a Config."""

import contextlib
import hashlib
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
from ..data.batching import TrainBatch, bucketed_batches, pad_batch
from ..data.labels import labelled_rows
from ..data.train_stream import TrainStream, scan_training_file
from ..errors import UserError
from ..losses import multitask_loss
from ..metrics import selection_value
from ..models import MultiTaskErnie, build_encoder, load_encoder
from ..models.cpu_kernels import disable_cpu_kernels, prepare_cpu_training
from ..runtime import set_num_threads, set_seed, setup_logging, visualdl_command
from ..tokenizer import TextEncoder, load_tokenizer
from ..weighting import build_weighting
from .amp import MixedPrecision, resolve_amp
from .checkpoint import (
    METRICS_FILE,
    is_checkpoint,
    remove_temporary_copies,
    replace_dir,
    save_checkpoint,
    settle_old_copy,
    task_schema,
    write_json,
)
from .distributed import ProcessGroup
from .evaluation import NonFiniteOutputError, evaluate, feature_tensors
from .resume import (
    LAST_DIR,
    InterruptRequest,
    capture_random_state,
    check_resume_config,
    find_resume_state,
    load_model_state,
    load_optimizer_state,
    load_small_optimizer_state,
    open_vdl_writer,
    prepare_output_dir,
    read_training_state,
    restore_random_state,
    small_optimizer_state,
    write_training_state,
)

logger = logging.getLogger(__name__)

BEST_DIR = "best"
# When set to a directory, every process saves its final weights there as
# rank<N>.pdparams, before the best checkpoint is loaded; the tests compare
# the processes of a data-parallel run with it.
RANK_WEIGHTS_ENV = "ERNIE_MARKETING_RANK_WEIGHTS_DIR"


def train(config):
    """Train on `config`; return the final metrics (also in metrics.json)."""
    return Trainer(config).run()


class Trainer:
    """Owns one training run: data, model, optimizer, logs and checkpoints."""

    def __init__(self, config):
        self.config = config
        # The processes of a data-parallel run, or a group of one.
        self.group = ProcessGroup.from_environment(config.train.batch_size)
        self.step = 0
        self.best_value = None
        self.best_step = None
        self.evals_without_gain = 0
        self.warned_nan_metric = False
        self.stopped_early = False
        # Step of the newest resumable state on disk; None before the first.
        self.saved_step = None
        self.resume_dir = None
        # Checked before output.dir is touched: a setting this machine
        # cannot run must not cost the previous run's files.
        self.amp_dtype = resolve_amp(config.train.amp,
                                     config.train.loss_weighting.method)
        if self.group.is_main:
            self._open_output_dir()
            setup_logging(os.path.join(self.output_dir, "train.log"))
        # The other ranks look for the resumable state only after rank 0 has
        # cleaned up partial saves in output.dir.
        self.group.barrier()
        if not self.group.is_main:
            self.output_dir = os.path.abspath(config.output.dir)
            if config.train.resume:
                self.resume_dir = find_resume_state(config.train.resume,
                                                    self.output_dir)
            setup_logging(level=logging.WARNING)
        threads = set_num_threads(config.train.num_threads
                                  or self.group.default_num_threads())
        set_seed(config.train.seed)
        if self.group.is_main:
            save_config(config, os.path.join(self.output_dir, "config.yaml"))
        logger.info("output directory %s, %d CPU threads, paddle %s on %s",
                    self.output_dir, threads, paddle.__version__,
                    paddle.device.get_device())
        if self.group.distributed:
            logger.info("data parallel over %d processes: %d rows per "
                        "process of each global batch of %d",
                        self.group.world_size,
                        config.train.batch_size // self.group.world_size,
                        config.train.batch_size)

    def _open_output_dir(self):
        """Find the state to resume and check and prepare output.dir."""
        config = self.config
        if config.train.resume:
            self.resume_dir = find_resume_state(
                config.train.resume, os.path.abspath(config.output.dir))
            check_resume_config(self.resume_dir, config)
        self.output_dir = _prepare_output_dir(config.output, self.resume_dir)
        if self.resume_dir is not None and not os.path.isdir(self.resume_dir):
            # _prepare_output_dir renamed a last.old left by a killed save.
            self.resume_dir = find_resume_state(config.train.resume,
                                                self.output_dir)

    def run(self):
        self._setup_data()
        self._setup_model()
        self._setup_optimizer()
        self._setup_position()
        if self.resume_dir is not None:
            self._restore_state()
        # DataParallel copies rank 0's weights to the other ranks. Only the
        # training forward pass goes through it; evaluation and checkpoints
        # use self.model. The pooler is unused with mean pooling.
        self.train_model = self.group.wrap(
            self.model,
            find_unused_parameters=self.config.model.pooling == "mean")
        with self._open_writer() as writer:
            self.writer = writer
            try:
                with InterruptRequest(
                        terminate=self.group.distributed) as interrupt:
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
        scan = train_texts = word_counts = None
        if config.data.streaming:
            scan = self._scan_and_read()
            word_counts = scan.word_counts
        else:
            self.data = prepare_data(config)
            train_texts = self.data.splits["train"].texts
        if self.group.is_main:
            self.tokenizer = load_tokenizer(
                config, os.path.join(self.output_dir, "tokenizer"),
                train_texts, word_counts)
        else:
            with tempfile.TemporaryDirectory() as work_dir:
                self.tokenizer = load_tokenizer(config, work_dir, train_texts,
                                                word_counts)
        self.text_encoder = TextEncoder(self.tokenizer, config.tokenizer.max_length)
        self.train_stream = None
        if scan is not None:
            self.train_stream = TrainStream(config, scan, self.group.rank,
                                            self.group.world_size,
                                            self.text_encoder)
        self.encoded = {}
        for name, split in self.data.splits.items():
            self.encoded[name], truncated = self.text_encoder.encode(split.texts)
            self.data.stats.setdefault("truncated", {})[name] = truncated
            logger.info("%s: %d of %d texts truncated to %d tokens", name,
                        truncated, len(split), config.tokenizer.max_length)
        self._check_same_data()
        self.schema = task_schema(config, self.data.vocabs, self.data.features)
        if self.group.is_main:
            write_json(os.path.join(self.output_dir, "tasks.json"), self.schema)
        self.task_weights = [t.weight for t in config.tasks]
        if "valid" not in self.data.splits:
            logger.warning("no validation rows (data.split=%s, data.valid_path="
                           "%s): the best checkpoint is chosen on the training "
                           "split", config.data.split, config.data.valid_path)

    def _scan_and_read(self):
        """Scan the streamed training file, read the validation and test
        files whole with the encoders the scan fitted; return the scan."""
        config = self.config
        scan = scan_training_file(config, self.group.world_size)
        self.data = prepare_data(config, vocabs=scan.vocabs,
                                 features=scan.features)
        stats = self.data.stats
        stats["train"] = scan.stats["train"]
        stats.setdefault("labelled", {})["train"] = (
            scan.stats["labelled"]["train"])
        stats["rows"]["train"] = scan.fingerprint["rows"]
        return scan

    def _check_same_data(self):
        """Raise UserError unless every rank encoded the same training rows."""
        if not self.group.distributed:
            return
        fingerprints = self.group.gather_objects(self._train_fingerprint())
        if any(f != fingerprints[0] for f in fingerprints):
            rows = [f["rows"] for f in fingerprints]
            raise UserError(
                f"the training processes read different training data (rows "
                f"per rank: {rows}, or other texts or vocabularies); give "
                "every machine the same data files, config and vocabulary")

    def _setup_model(self):
        config = self.config
        encoder = build_encoder(config.model, self.text_encoder.vocab_size,
                                config.tokenizer.max_length)
        self.model = MultiTaskErnie(encoder, self.schema["tasks"],
                                    config.model.pooling,
                                    self.schema["features"],
                                    self.schema["sharing"])
        self.model.feature_encoder = self.data.features
        applied = prepare_cpu_training(self.model,
                                       config.train.cpu_fast_kernels)
        if applied:
            logger.info("CPU training kernels on %d linear and %d attention "
                        "layers; freed memory kept for reuse: %s",
                        applied["linear"], applied["attention"],
                        applied["keep_freed_memory"])
        if self.group.rank > 0:
            # Every rank built the same weights from train.seed; each of the
            # others now draws its own dropout masks.
            paddle.seed(config.train.seed + self.group.rank)
        n_params = sum(int(np.prod(p.shape)) for p in self.model.parameters())
        logger.info("model: %d parameters, heads %s", n_params,
                    {t["name"]: t["num_outputs"] for t in self.schema["tasks"]})

    def _setup_optimizer(self):
        from paddlenlp.transformers import LinearDecayWithWarmup

        train_cfg = self.config.train
        if self.train_stream is not None:
            n_rows = self.train_stream.rows
            self.steps_per_epoch = self.train_stream.steps_per_epoch
        else:
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
        self._setup_weighting()
        self.eval_every = train_cfg.eval_steps or self.steps_per_epoch
        logger.info("%d training rows, %d steps per epoch, %d steps in all, "
                    "evaluation every %d steps", n_rows, self.steps_per_epoch,
                    total, self.eval_every)

    def _setup_weighting(self):
        """Build the loss weighting and an optimizer for its parameters."""
        train_cfg = self.config.train
        method = train_cfg.loss_weighting.method
        # NOTE: the per-task backward passes of these two methods would each
        # start DataParallel's gradient averaging; they are not supported
        # across ranks yet.
        if self.group.distributed and method in ("gradnorm", "pcgrad"):
            raise UserError(
                f"train.loss_weighting.method={method!r} is not supported "
                "in data-parallel training; use fixed, uncertainty or dwa, "
                "or train in one process")
        self.weighting = build_weighting(
            train_cfg.loss_weighting, [t.name for t in self.config.tasks],
            self.task_weights, train_cfg.seed)
        self.weighting_optimizer = None
        if self.weighting.parameters():
            # Same schedule as the model, without weight decay or clipping.
            self.weighting_optimizer = paddle.optimizer.Adam(
                learning_rate=self.scheduler,
                parameters=self.weighting.parameters())
        self.shared_parameters = []
        if method in ("gradnorm", "pcgrad"):
            self.shared_parameters = self.model.shared_parameters()
            # NOTE: the CPU kernels' PyLayers crash (paddle 3.3.1) on the
            # repeated backward through a retained graph that these
            # methods run, one per task.
            if disable_cpu_kernels(self.model):
                logger.info("CPU training kernels turned off: loss "
                            "weighting %s runs one backward pass per task "
                            "through a retained graph", method)
        if method != "fixed":
            logger.info("loss weighting: %s", method)
        self.amp = MixedPrecision(self.amp_dtype)
        if self.amp.enabled:
            logger.info("precision: mixed, %s (train.amp=%s)", self.amp.dtype,
                        train_cfg.amp)
        elif train_cfg.amp == "auto" and not paddle.device.get_device(
                ).startswith("cpu"):
            logger.info("precision: float32, because loss weighting %s "
                        "runs its own backward passes", method)
        else:
            logger.info("precision: float32 (train.amp=%s)", train_cfg.amp)

    # Training ------------------------------------------------------------

    def _train_loop(self):
        train_cfg = self.config.train
        self.model.train()
        progress = _progress_bar(
            train_cfg.progress_bar if self.group.is_main else "off",
            self.total_steps, self.step)
        stop = self.stopped_early or self.step >= self.total_steps
        while not stop:
            for batch in self._epoch_batches():
                result = self._train_step(batch)
                if result is not None:
                    self.meter.add(*result)
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
                interrupted = self._interrupt_requested()
                if self.step % self.save_every == 0 or stop or interrupted:
                    self._save_last()
                if interrupted:
                    raise KeyboardInterrupt
                if stop:
                    break
            else:
                self.epoch += 1
                self.batch_in_epoch = 0
        if progress is not None:
            progress.close()

    def _epoch_batches(self):
        """Yield this rank's TrainBatch for each remaining step of the epoch."""
        if self.train_stream is not None:
            yield from self.train_stream.epoch_batches(self.epoch,
                                                       self.batch_in_epoch)
            return
        train_cfg = self.config.train
        split = self.data.splits["train"]
        lengths = [len(ids) for ids in self.encoded["train"]]
        # The generator state before the draw is saved with each state,
        # so a resumed run draws this epoch's order again and skips the
        # batches it has already trained on.
        self.batch_order_state = self.rng.bit_generator.state
        batches = bucketed_batches(lengths, train_cfg.batch_size,
                                   train_cfg.bucket_batches, self.rng)
        for index in batches[self.batch_in_epoch:]:
            # A rank whose shard of a short last batch is empty trains on
            # the batch's first row without labels.
            yield TrainBatch.from_rows(
                self.group.shard(index), self.encoded["train"], split.labels,
                split.row_ids, split.numeric_features,
                split.categorical_features, filler_row=index[0])

    def _train_step(self, batch):
        """Train on this rank's `batch`; return the losses, counts and rows.

        Each rank trains on its own rows, in train.accumulate_steps parts
        whose gradients add up before one update. The returned values are
        over the whole global batch, summed across ranks. Returns None
        when train.on_nonfinite_loss=skip dropped the batch.
        """
        parts = self.config.train.accumulate_steps
        divisor = None
        if parts > 1:
            divisor = self._global_divisors(batch)
        elif self.group.distributed:
            divisor = self.group.loss_divisor

        n_tasks = len(self.schema["tasks"])
        total_sum, task_sums, count_sums = 0.0, np.zeros(n_tasks), np.zeros(
            n_tasks)
        # The rows are sorted by length, so neighbours pad alike.
        for part, part_batch in enumerate(batch.parts(parts)):
            total, task_losses = self._forward_losses(part_batch, divisor,
                                                      parts)
            loss_tensors = [loss for loss, _ in task_losses.values()]
            total_sum += float(total)
            task_sums += [float(loss) for loss in loss_tensors]
            count_sums += [int(count) for _, count in task_losses.values()]
            if parts > 1:
                # Only the last part's backward pass averages the summed
                # gradients across ranks.
                with self._gradient_sync(part == parts - 1):
                    self._backward(total, loss_tensors)

        # One sum across ranks gives every rank the global losses and counts
        # and any rank's stop request, so all ranks stop at the same step.
        summed = self.group.sum([total_sum, *task_sums, *count_sums,
                                 float(len(batch)),
                                 float(self.interrupt.requested)])
        world_size = self.group.world_size
        global_total = summed[0] / world_size
        self.interrupt_agreed = bool(summed[-1])
        task_values = dict(zip(task_losses, summed[1:1 + n_tasks]))
        if not self._check_finite(global_total, task_values, batch):
            self._clear_gradients()
            self.scheduler.step()
            return None
        if parts == 1:
            self._backward(total, loss_tensors)
        self.amp.step(self.optimizer)
        if self.weighting_optimizer is not None:
            self.group.average_gradients(self.weighting.parameters())
            self.weighting_optimizer.step()
        self._clear_gradients()
        self.scheduler.step()
        return global_total, [
            (summed[1 + j] / world_size, int(summed[1 + n_tasks + j]))
            for j in range(n_tasks)], int(summed[-2])

    def _backward(self, total, loss_tensors):
        if self.amp.enabled:
            # resolve_amp allows only weightings whose backward pass is
            # total.backward(), which the loss scale then multiplies.
            self.amp.backward(total)
        else:
            self.weighting.backward(total, loss_tensors,
                                    self.shared_parameters)

    def _forward_losses(self, batch, divisor, parts):
        """Run the model on the rows of `batch`; return the weighted total
        loss and each task's (loss, labelled count).

        A last batch with fewer rows than ranks (or parts) leaves a rank or
        part none, but every rank must join each gradient average, so
        `TrainBatch.parts` gives such a part one row without labels: its
        loss and gradient are zero.
        """
        labels = batch.labels
        input_ids, token_type_ids = pad_batch(batch.input_ids,
                                              self.text_encoder.pad_id)
        with self.amp.autocast():
            logits = self.train_model(
                paddle.to_tensor(input_ids), paddle.to_tensor(token_type_ids),
                **feature_tensors(np.arange(len(batch)),
                                  batch.numeric_features,
                                  batch.categorical_features))
        if self.amp.enabled:
            # The losses are computed in float32 from half-precision logits.
            logits = [value.astype("float32") for value in logits]
        total, task_losses = multitask_loss(
            self.schema["tasks"], self.task_weights, logits,
            {name: paddle.to_tensor(values) for name, values in labels.items()},
            divisor)
        if self.config.train.loss_weighting.method != "fixed":
            loss_tensors = [loss for loss, _ in task_losses.values()]
            total = self.weighting.total_loss(loss_tensors, share=1.0 / parts)
        return total, task_losses

    def _global_divisors(self, batch):
        """Return each task's loss divisor for a batch trained in parts.

        The divisor is the task's labelled rows in the whole global batch
        (at least 1) over world_size, the same for every part, so the
        summed and rank-averaged gradient is that of the global batch mean.
        """
        counts = [float(labelled_rows(values).sum())
                  for values in batch.labels.values()]
        totals = self.group.sum(counts)
        return {name: max(total, 1.0) / self.group.world_size
                for name, total in zip(batch.labels, totals)}

    def _gradient_sync(self, sync):
        """Return a context in which backward() averages gradients across
        ranks only when `sync` is true."""
        if sync or not self.group.distributed:
            return contextlib.nullcontext()
        return self.train_model.no_sync()

    def _clear_gradients(self):
        self.optimizer.clear_grad()
        if self.weighting_optimizer is not None:
            self.weighting_optimizer.clear_grad()

    def _check_finite(self, total, task_values, batch):
        """Return True when every loss is a number; else skip or raise.

        Runs before backward(), so the weights and the checkpoints on disk
        stay as they were. `task_values` are the per-task losses summed
        across ranks, so every rank decides alike; `batch` is this rank's.
        """
        bad = [name for name, value in task_values.items()
               if not math.isfinite(value)]
        if not bad and math.isfinite(total):
            return True
        step = self.step + 1
        row_ids = batch.row_ids.tolist()
        listed_ids = row_ids if len(row_ids) <= 20 else row_ids[:20] + ["..."]
        losses = ", ".join(f"{name}={task_values[name]}" for name in bad)
        reason = (f"the training loss is {losses or total} (tasks "
                  f"{bad or 'none: the weighted total'}) on the batch with "
                  f"row ids {listed_ids}")
        if self.config.train.on_nonfinite_loss == "abort":
            raise self._diverged(reason, step)
        self.skipped_batches += 1
        logger.warning("step %d skipped (%d so far): %s; set "
                       "train.on_nonfinite_loss=abort to stop instead", step,
                       self.skipped_batches, reason)
        return False

    def _interrupt_requested(self):
        """Return True when the run must save and stop after this step.

        With several ranks, a request counts once any rank had it at the
        current step's loss sum, so that every rank saves the same step.
        """
        if self.group.distributed:
            return self.interrupt_agreed
        return self.interrupt.requested

    def _log_train(self, meter):
        total, task_losses, counts, rate = meter.flush()
        lr = self.optimizer.get_lr()
        for name, value in task_losses.items():
            # NaN when no row of the interval was labelled for the task.
            if value == value:
                self.writer.add_scalar(f"train/loss/{name}", value, self.step)
        self.writer.add_scalar("train/loss/total", total, self.step)
        self.writer.add_scalar("train/lr", lr, self.step)
        for name, weight in self.weighting.weights().items():
            self.writer.add_scalar(f"train/weight/{name}", weight, self.step)
        self.weighting.end_window(list(task_losses.values()))
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
        # Every rank scored the same gathered logits; rank 0's value decides
        # selection and early stopping on all of them.
        value = float(self.group.broadcast([value])[0])
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
                            split.categorical_features, self.group)
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
        if not self.group.is_main:
            return
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
        self.skipped_batches = 0
        self.vdl_position = None
        self.interrupt = InterruptRequest()
        self.interrupt_agreed = False

    def _save_last(self):
        """Save the resumable state to output.dir/last, replacing the older one."""
        if self.saved_step == self.step:
            return
        # Each rank draws its own dropout masks, so every rank's generators
        # are saved; rank 0 writes the files.
        random_states = self.group.gather_objects(capture_random_state())
        if self.group.is_main:
            self._write_last(random_states)
        self.saved_step = self.step

    def _write_last(self, random_states):
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
            "loss_weighting": self.weighting.state(),
            "amp": self.amp.state(),
            "loss_weighting_optimizer": (
                None if self.weighting_optimizer is None else
                small_optimizer_state(self.weighting_optimizer,
                                      self.weighting.parameters())),
            "skipped_batches": self.skipped_batches,
            "vdl_file": os.path.basename(self.writer.file_name),
            "vdl_size": os.path.getsize(self.writer.file_name),
            "world_size": self.group.world_size,
        }
        random_state = random_states[0]
        if self.group.distributed:
            random_state = dict(random_state, ranks=random_states)

        def write_state(directory):
            write_training_state(directory, self.model, self.optimizer, state,
                                 random_state)

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
        logger.info("saved the resumable state (step %d) to %s", self.step,
                    path)

    def _train_fingerprint(self):
        """Return the row count and a hash of the training token ids, or of
        the texts of a streamed training file."""
        if self.train_stream is not None:
            return self.train_stream.scan.fingerprint
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
        saved_world_size = state.get("world_size", 1)
        if (self.train_stream is not None
                and saved_world_size != self.group.world_size):
            # Each rank's shard and batches depend on the process count.
            raise UserError(
                f"cannot resume from {directory}: it was saved by "
                f"{saved_world_size} training processes and this run has "
                f"{self.group.world_size}, but a streamed training file is "
                "sharded by process; resume with the same number of "
                "processes")

        # Weights, optimizer moments, schedule and random generators.
        load_model_state(self.model, model_state, directory)
        load_optimizer_state(self.optimizer, self.model, optimizer_state,
                             directory)
        self._restore_random_state(random_state, state.get("world_size", 1))

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
        self.weighting.restore(state.get("loss_weighting", {}))
        self.amp.restore(state.get("amp", {}))
        if self.weighting_optimizer is not None:
            # States written before the moments were saved restart them
            # from zero.
            load_small_optimizer_state(
                self.weighting_optimizer, self.weighting.parameters(),
                state.get("loss_weighting_optimizer") or {})
        self.skipped_batches = state.get("skipped_batches", 0)
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

    def _restore_random_state(self, saved, saved_world_size):
        """Restore this rank's generators from a saved random state."""
        world_size, rank = self.group.world_size, self.group.rank
        if saved_world_size == world_size:
            restore_random_state(saved["ranks"][rank] if "ranks" in saved
                                 else saved)
            return
        logger.warning("the state was saved by %d training processes and "
                       "this run has %d, so dropout masks differ from those "
                       "of an uninterrupted run", saved_world_size, world_size)
        restore_random_state(saved)
        if rank > 0:
            paddle.seed(self.config.train.seed + rank)

    def _restore_best(self, state_dir):
        """Make output.dir/best the best checkpoint of the resumed run."""
        if self.best_step is None or not self.group.is_main:
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
        if not self.group.is_main:
            return _NullWriter()
        return open_vdl_writer(self.output_dir, self.vdl_position,
                               self.resume_dir)

    # Final evaluation ------------------------------------------------------

    def _finish(self):
        best_dir = os.path.join(self.output_dir, BEST_DIR)
        weights_dir = os.environ.get(RANK_WEIGHTS_ENV)
        if weights_dir:
            paddle.save(self.model.state_dict(), os.path.join(
                weights_dir, f"rank{self.group.rank}.pdparams"))
        if self.best_step != self.step:
            from .checkpoint import ENCODER_DIR, load_head_weights

            if self.group.is_main:
                best_encoder = load_encoder(os.path.join(best_dir, ENCODER_DIR))
                self.model.encoder.set_state_dict(best_encoder.state_dict())
                load_head_weights(self.model, best_dir)
            # Only rank 0 reads best/, so output.dir need not be shared.
            self.group.broadcast_parameters(self.model)
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
        if not self.group.is_main:
            return result
        write_json(os.path.join(best_dir, METRICS_FILE), result)
        write_json(os.path.join(self.output_dir, METRICS_FILE), result)
        logger.info("metrics written to %s; VisualDL logs: %s --logdir %s "
                    "--host 127.0.0.1", os.path.join(self.output_dir, METRICS_FILE),
                    visualdl_command(), os.path.join(self.output_dir, "vdl"))
        return result


class _NullWriter:
    """Stands in for the VisualDL LogWriter on ranks other than 0."""

    def add_scalar(self, *args, **kwargs):
        pass

    def flush(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False


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
    """Create output.dir and clean up the partial saves of a resumed run.

    See `prepare_output_dir` for which earlier results are rejected.
    """
    directory = prepare_output_dir(output, resume_dir, (BEST_DIR, LAST_DIR))
    resuming_here = (resume_dir is not None
                     and os.path.dirname(resume_dir) == directory)
    if output.overwrite or resuming_here:
        for name in (BEST_DIR, LAST_DIR):
            settle_old_copy(os.path.join(directory, name), is_checkpoint)
        remove_temporary_copies(directory, (BEST_DIR, LAST_DIR))
    return directory


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
