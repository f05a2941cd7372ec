"""The pretraining loop: masked language modelling with knowledge masking.

Batches and masks are a pure function of (seed, epoch, batch index), so a
resumed run draws exactly the batches and masks that the interrupted run
would have drawn. Dropout continues from the saved Paddle generator state.
"""

import hashlib
import json
import logging
import math
import os
import sys
import time

import numpy as np
import paddle
import paddle.nn.functional as F

from ..config import save_config
from ..data.batching import bucketed_batches, sorted_batches
from ..engine.checkpoint import write_json
from ..engine.distributed import launched_world_size
from ..engine.resume import (
    InterruptRequest,
    load_model_state,
    load_optimizer_state,
    open_vdl_writer,
    read_training_state,
    restore_random_state,
)
from ..errors import DataError, UserError
from ..runtime import set_num_threads, set_seed, setup_logging
from ..tokenizer import TextEncoder, load_tokenizer
from .corpus import read_corpus, split_documents
from .masking import KnowledgeMasker
from .model import build_mlm_model, save_model_dir
from .segmentation import CorpusEncoder, WordSegmenter
from .state import (
    LAST_DIR,
    MODEL_DIR,
    check_resume_config,
    find_resume_state,
    prepare_output_dir,
    save_state,
)

logger = logging.getLogger(__name__)

# Second entropy word of the evaluation masks' generator, so they differ
# from every training batch's masks (those use [seed, epoch, batch]).
_EVAL_STREAM = 7919


def pretrain(config):
    """Pretrain on `config` and return the summary written to metrics.json."""
    return Pretrainer(config).run()


class Pretrainer:
    """Owns one pretraining run: corpus, model, optimizer, logs and state."""

    def __init__(self, config):
        _check_single_process()
        self.config = config
        self.resume_dir = None
        if config.train.resume:
            self.resume_dir = find_resume_state(
                config.train.resume, os.path.abspath(config.output.dir))
            check_resume_config(self.resume_dir, config)
        self.output_dir = prepare_output_dir(config.output, self.resume_dir)
        if self.resume_dir is not None and not os.path.isdir(self.resume_dir):
            # prepare_output_dir renamed a last.old left by a killed save.
            self.resume_dir = find_resume_state(config.train.resume,
                                                self.output_dir)
        setup_logging(os.path.join(self.output_dir, "pretrain.log"))
        threads = set_num_threads(config.train.num_threads)
        set_seed(config.train.seed)
        save_config(config, os.path.join(self.output_dir, "config.yaml"))
        logger.info("output directory %s, %d CPU threads, paddle %s on %s",
                    self.output_dir, threads, paddle.__version__,
                    paddle.device.get_device())
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.saved_step = None
        self.vdl_position = None
        # (step, result) of the latest held-out evaluation.
        self.last_eval = None
        self.meter = _Meter()
        self.interrupt = InterruptRequest()

    def run(self):
        self._setup_data()
        self._setup_model()
        self._setup_optimizer()
        if self.resume_dir is not None:
            self._restore_state()
        with self._open_writer() as writer:
            self.writer = writer
            try:
                with InterruptRequest() as interrupt:
                    self.interrupt = interrupt
                    self._train_loop()
            except KeyboardInterrupt:
                saved = (f"the state of step {self.saved_step} is in "
                         f"{os.path.join(self.output_dir, LAST_DIR)}; continue "
                         "with -o train.resume=true" if self.saved_step
                         is not None else "no state was saved")
                logger.warning("pretraining interrupted after %d steps; %s",
                               self.step, saved)
                raise
            return self._finish()

    # Setup ---------------------------------------------------------------

    def _setup_data(self):
        config = self.config
        documents, self.stats = read_corpus(config.data)
        train_docs, valid_docs = split_documents(
            documents, config.data.valid_docs, config.data.seed)
        self.tokenizer = load_tokenizer(
            config, os.path.join(self.output_dir, "tokenizer"), train_docs)
        self.text_encoder = TextEncoder(self.tokenizer, config.tokenizer.max_length)

        # Tokenize, segment into words and cut long documents.
        started = time.perf_counter()
        encoder = CorpusEncoder(self.tokenizer, config.tokenizer.max_length,
                                WordSegmenter(config.masking.user_dict))
        self.train_sequences = _maskable(encoder.encode_all(train_docs))
        self.valid_sequences = _maskable(encoder.encode_all(valid_docs))
        if not self.train_sequences:
            raise DataError("no training document has a token that can be "
                            "masked (every token is [UNK] or the texts are "
                            "empty after tokenizing); check the corpus and "
                            "the vocabulary")
        self.stats["sequences"] = {"train": len(self.train_sequences),
                                   "valid": len(self.valid_sequences)}
        self.stats["train_tokens"] = int(sum(len(s) for s in
                                             self.train_sequences))
        self.stats["encode_seconds"] = round(time.perf_counter() - started, 1)
        logger.info("encoded %d training and %d held-out documents into %d "
                    "and %d sequences (%d training tokens) in %.0f s",
                    len(train_docs), len(valid_docs), len(self.train_sequences),
                    len(self.valid_sequences), self.stats["train_tokens"],
                    self.stats["encode_seconds"])

        tok = self.text_encoder
        mask_id = self.tokenizer.convert_tokens_to_ids("[MASK]")
        unk_id = self.tokenizer.convert_tokens_to_ids("[UNK]")
        special = {tok.pad_id, tok.cls_id, tok.sep_id, mask_id, unk_id}
        self.masker = KnowledgeMasker(config.masking, mask_id, special,
                                      tok.vocab_size)
        self.eval_batches = self._eval_batches()

    def _eval_batches(self):
        """Mask the held-out sequences once, with a fixed generator."""
        train_cfg = self.config.train
        rng = np.random.default_rng([train_cfg.seed, _EVAL_STREAM])
        lengths = [len(s) for s in self.valid_sequences]
        return [self.masker.mask_batch([self.valid_sequences[i] for i in index],
                                       rng, self.text_encoder.pad_id)
                for index in sorted_batches(lengths, train_cfg.eval_batch_size)]

    def _setup_model(self):
        config = self.config
        self.model = build_mlm_model(config.model, self.text_encoder.vocab_size,
                                     config.tokenizer.max_length)
        n_params = sum(int(np.prod(p.shape)) for p in self.model.parameters())
        logger.info("ErnieForMaskedLM: %d parameters, %d layers, hidden size "
                    "%d, vocabulary %d", n_params,
                    self.model.config.num_hidden_layers,
                    self.model.config.hidden_size, self.model.config.vocab_size)

    def _setup_optimizer(self):
        from paddlenlp.transformers import LinearDecayWithWarmup

        train_cfg = self.config.train
        self.steps_per_epoch = math.ceil(len(self.train_sequences)
                                         / train_cfg.batch_size)
        total = self.steps_per_epoch * train_cfg.epochs
        if train_cfg.max_steps is not None:
            total = min(total, train_cfg.max_steps)
        self.total_steps = total
        self.scheduler = LinearDecayWithWarmup(train_cfg.learning_rate, total,
                                               train_cfg.warmup_ratio)
        no_decay = {p.name for n, p in self.model.named_parameters()
                    if n.endswith("bias") or "norm" in n}
        self.optimizer = paddle.optimizer.AdamW(
            learning_rate=self.scheduler,
            parameters=self.model.parameters(),
            weight_decay=train_cfg.weight_decay,
            apply_decay_param_fun=lambda name: name not in no_decay,
            grad_clip=paddle.nn.ClipGradByGlobalNorm(train_cfg.max_grad_norm))
        self.eval_every = train_cfg.eval_steps or self.steps_per_epoch
        logger.info("%d steps per epoch, %d steps in all, evaluation every %d "
                    "steps, state saved every %d steps", self.steps_per_epoch,
                    total, self.eval_every, train_cfg.save_steps)

    # Training ------------------------------------------------------------

    def _epoch_batches(self, epoch):
        train_cfg = self.config.train
        rng = np.random.default_rng([train_cfg.seed, epoch])
        lengths = [len(s) for s in self.train_sequences]
        return bucketed_batches(lengths, train_cfg.batch_size,
                                train_cfg.bucket_batches, rng)

    def _train_loop(self):
        train_cfg = self.config.train
        self.model.train()
        progress = _progress_bar(train_cfg.progress_bar, self.total_steps,
                                 self.step)
        self.meter.start_clock()
        stop = self.step >= self.total_steps
        if self.step == 0:
            # The starting point: near ln(vocabulary size) for a new model.
            self._log_eval()
        while not stop:
            batches = self._epoch_batches(self.epoch)
            for index in batches[self.batch_in_epoch:]:
                rng = np.random.default_rng(
                    [train_cfg.seed, self.epoch, self.batch_in_epoch])
                batch = self.masker.mask_batch(
                    [self.train_sequences[i] for i in index], rng,
                    self.text_encoder.pad_id)
                self.meter.add(*self._train_step(batch), len(index))
                self.step += 1
                self.batch_in_epoch += 1
                if progress is not None:
                    progress.update(1)
                if self.step % train_cfg.logging_steps == 0:
                    self._log_train()
                stop = self.step >= self.total_steps
                if self.step % self.eval_every == 0 or stop:
                    self._log_eval()
                if (self.step % train_cfg.save_steps == 0 or stop
                        or self.interrupt.requested):
                    self._save_state()
                if self.interrupt.requested:
                    raise KeyboardInterrupt
                if stop:
                    break
            else:
                self.epoch += 1
                self.batch_in_epoch = 0
        if progress is not None:
            progress.close()

    def _train_step(self, batch):
        """Run one optimizer step and return (loss sum, correct, masked, tokens)."""
        logits = self._forward(batch)
        labels = paddle.to_tensor(batch.labels)
        loss = F.cross_entropy(logits, labels)
        value = float(loss)
        if not math.isfinite(value):
            raise UserError(f"the MLM loss is {value} at step {self.step + 1}; "
                            "lower train.learning_rate or "
                            "train.max_grad_norm and start again")
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.clear_grad()
        correct = int((logits.argmax(axis=-1) == labels).sum())
        masked = len(batch.labels)
        return value * masked, correct, masked, batch.num_tokens

    def _forward(self, batch):
        input_ids = paddle.to_tensor(batch.input_ids)
        pad = (input_ids == self.text_encoder.pad_id).astype("float32")
        # ErnieModel adds this to the attention scores before the softmax.
        attention_mask = (pad * -1e4).unsqueeze([1, 2])
        return self.model(input_ids, attention_mask=attention_mask,
                          masked_positions=paddle.to_tensor(
                              batch.masked_positions),
                          return_dict=False)

    def evaluate(self):
        """Return the held-out MLM loss (mean per masked token) and accuracy."""
        self.model.eval()
        loss_sum, correct, masked = 0.0, 0, 0
        with paddle.no_grad():
            for batch in self.eval_batches:
                logits = self._forward(batch)
                labels = paddle.to_tensor(batch.labels)
                loss_sum += float(F.cross_entropy(logits, labels,
                                                  reduction="sum"))
                correct += int((logits.argmax(axis=-1) == labels).sum())
                masked += len(batch.labels)
        self.model.train()
        return {"mlm_loss": loss_sum / masked, "mlm_accuracy": correct / masked,
                "masked_tokens": masked}

    # Logging -------------------------------------------------------------

    def _log_train(self):
        loss, accuracy, sequences_per_s, tokens_per_s = self.meter.flush()
        lr = self.scheduler.get_lr()
        logger.info("step %d/%d epoch %d: mlm_loss %.4f mlm_accuracy %.4f lr "
                    "%.2e, %.1f sequences/s, %.0f tokens/s", self.step,
                    self.total_steps, self.epoch + 1, loss, accuracy, lr,
                    sequences_per_s, tokens_per_s)
        self.writer.add_scalar("pretrain/mlm_loss", loss, self.step)
        self.writer.add_scalar("pretrain/mlm_accuracy", accuracy, self.step)
        self.writer.add_scalar("pretrain/learning_rate", lr, self.step)
        self.writer.add_scalar("pretrain/tokens_per_second", tokens_per_s,
                               self.step)

    def _log_eval(self):
        if not self.eval_batches:
            return
        # Evaluation time is not training time.
        self.meter.pause()
        result = self.evaluate()
        self.meter.resume()
        self.last_eval = (self.step, result)
        logger.info("step %d held-out: mlm_loss %.4f mlm_accuracy %.4f (%d "
                    "masked tokens)", self.step, result["mlm_loss"],
                    result["mlm_accuracy"], result["masked_tokens"])
        self.writer.add_scalar("pretrain/eval_mlm_loss", result["mlm_loss"],
                               self.step)
        self.writer.add_scalar("pretrain/eval_mlm_accuracy",
                               result["mlm_accuracy"], self.step)

    def _open_writer(self):
        """Open the VisualDL writer, continuing the resumed run's record file."""
        return open_vdl_writer(self.output_dir, self.vdl_position,
                               self.resume_dir)

    # State ---------------------------------------------------------------

    def _save_state(self):
        if self.saved_step == self.step:
            return
        self.writer.flush()
        state = {
            "step": self.step,
            "total_steps": self.total_steps,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "train_data": self._fingerprint(),
            "meter": self.meter.state(),
            "vdl_file": os.path.basename(self.writer.file_name),
            "vdl_size": os.path.getsize(self.writer.file_name),
        }
        path = os.path.join(self.output_dir, LAST_DIR)
        self.meter.pause()
        save_state(path, self.model, self.optimizer, self.tokenizer,
                   self.config, state)
        self.meter.resume()
        self.saved_step = self.step
        logger.info("saved the resumable state (step %d) to %s", self.step, path)

    def _fingerprint(self):
        """Return the sequence count and a hash of the training token ids."""
        if getattr(self, "_train_fingerprint", None) is None:
            digest = hashlib.sha256()
            for sequence in self.train_sequences:
                digest.update(sequence.input_ids.tobytes())
                digest.update(sequence.unit_starts.tobytes())
                digest.update(b"|")
            self._train_fingerprint = {"sequences": len(self.train_sequences),
                                       "sha256": digest.hexdigest()}
        return self._train_fingerprint

    def _restore_state(self):
        directory = self.resume_dir
        model_state, optimizer_state, random_state, state = (
            read_training_state(directory))
        if state["train_data"] != self._fingerprint():
            raise UserError(
                f"cannot resume from {directory}: the training sequences "
                f"differ from the saved run's ({state['train_data']['sequences']}"
                f" then, {self._fingerprint()['sequences']} now, or other "
                "texts), so the saved data position is meaningless; restore "
                "the corpus, tokenizer and masking.user_dict or start a new run")
        load_model_state(self.model, model_state, directory)
        load_optimizer_state(self.optimizer, self.model, optimizer_state,
                             directory)
        restore_random_state(random_state)
        self.step = self.saved_step = state["step"]
        self.epoch = state["epoch"]
        self.batch_in_epoch = state["batch_in_epoch"]
        self.meter.restore(state["meter"])
        self.vdl_position = (state["vdl_file"], state["vdl_size"])
        if state["total_steps"] != self.total_steps:
            logger.warning("the run now ends at step %d instead of %d, so the "
                           "learning rate schedule is stretched to the new "
                           "end from step %d on", self.total_steps,
                           state["total_steps"], self.step)
        logger.info("resumed from step %d of %d (epoch %d, batch %d of the "
                    "epoch) saved in %s", self.step, self.total_steps,
                    self.epoch + 1, self.batch_in_epoch, directory)

    # End -----------------------------------------------------------------

    def _finish(self):
        model_dir = os.path.join(self.output_dir, MODEL_DIR)
        save_model_dir(model_dir, self.model, self.tokenizer)
        if self.meter.sequences:
            self.meter.flush()
        summary = {"model_dir": model_dir, "steps": self.step,
                   "epochs": round(self.step / self.steps_per_epoch, 3),
                   "throughput": self.meter.throughput(),
                   "data": self.stats}
        if self.eval_batches:
            evaluated_now = (self.last_eval is not None
                             and self.last_eval[0] == self.step)
            summary["valid"] = (self.last_eval[1] if evaluated_now
                                else self.evaluate())
        write_json(os.path.join(self.output_dir, "metrics.json"), summary)
        logger.info("wrote the pretrained model to %s; fine-tune it with -o "
                    "model.name_or_path=%s tokenizer.vocab_file=null",
                    model_dir, model_dir)
        logger.info("summary: %s", json.dumps(summary["valid"]) if
                    "valid" in summary else "no held-out documents")
        return summary


def _check_single_process():
    """Raise UserError when paddle.distributed.launch started several processes.

    Pretraining has no data parallelism, so each process would train its
    own copy and write to the same output.dir.
    """
    world_size = launched_world_size()
    if world_size > 1:
        raise UserError(f"pretraining runs in one process, but "
                        f"paddle.distributed.launch started {world_size} "
                        "(PADDLE_TRAINERS_NUM); run `ernie-marketing "
                        "pretrain` without the launcher")


def _maskable(sequences):
    """Keep the sequences with at least one maskable token."""
    return [s for s in sequences if len(s.unit_starts)]


class _Meter:
    """Sums of the training loss, accuracy and throughput between log lines.

    The run totals (sequences, tokens, wall and CPU seconds) give the
    throughput in metrics.json. Time spent in evaluation and saving is not
    counted. CPU seconds are the process's, every thread included.
    """

    def __init__(self):
        self.totals = {"sequences": 0, "tokens": 0, "seconds": 0.0,
                       "cpu_seconds": 0.0}
        self._paused_at = None
        self._reset()

    def _reset(self):
        self.loss_sum, self.correct, self.masked = 0.0, 0, 0
        self.sequences, self.tokens = 0, 0
        self.start_clock()

    def start_clock(self):
        self._started = time.perf_counter()
        self._cpu_started = time.process_time()

    def add(self, loss_sum, correct, masked, tokens, sequences):
        self.loss_sum += loss_sum
        self.correct += correct
        self.masked += masked
        self.tokens += tokens
        self.sequences += sequences

    def pause(self):
        self._paused_at = (time.perf_counter(), time.process_time())

    def resume(self):
        if self._paused_at is not None:
            self._started += time.perf_counter() - self._paused_at[0]
            self._cpu_started += time.process_time() - self._paused_at[1]
            self._paused_at = None

    def flush(self):
        """Return (loss, accuracy, sequences/s, tokens/s) since the last flush."""
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        result = (self.loss_sum / max(self.masked, 1),
                  self.correct / max(self.masked, 1),
                  self.sequences / elapsed, self.tokens / elapsed)
        self.totals["sequences"] += self.sequences
        self.totals["tokens"] += self.tokens
        self.totals["seconds"] += elapsed
        self.totals["cpu_seconds"] += time.process_time() - self._cpu_started
        self._reset()
        return result

    def throughput(self):
        totals = self.totals
        if totals["seconds"] == 0:
            return {}
        return {"sequences_per_second": totals["sequences"] / totals["seconds"],
                "tokens_per_second": totals["tokens"] / totals["seconds"],
                "cpu_seconds_per_sequence": (totals["cpu_seconds"]
                                             / max(totals["sequences"], 1)),
                "timed_sequences": totals["sequences"],
                "timed_seconds": totals["seconds"]}

    def state(self):
        return {"loss_sum": self.loss_sum, "correct": self.correct,
                "masked": self.masked}

    def restore(self, state):
        self.loss_sum = state["loss_sum"]
        self.correct = state["correct"]
        self.masked = state["masked"]


def _progress_bar(mode, total, initial=0):
    if mode == "off" or (mode == "auto" and not sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="pretrain", unit="step",
                dynamic_ncols=True)
