"""Train on a file larger than memory: one scan, then streamed epochs.

With data.streaming the training file is read in chunks of data.chunk_rows
rows and never held whole:

1. `scan_training_file` reads the file once, and every process reads all
   of it. The scan fits the label encoders and the FeatureEncoder on the
   rows and counts the kept rows of each process's shard. It also hashes
   the texts, so that a resumed run can check that the file has not
   changed, and counts the words for tokenizer.build_vocab.
2. `TrainStream.epoch_batches` streams this process's shard again in each
   epoch (row i of the file belongs to rank i % world_size), shuffles and
   tokenizes one chunk at a time, and cuts length-bucketed batches as
   `bucketed_batches` does.

Rows are cleaned chunk by chunk with `clean_rows`, so empty texts are
dropped as in memory, but duplicate texts are kept: finding them needs the
whole file. data.max_rows keeps the file's first rows.
"""

import collections
import hashlib
import logging
import math
import os
from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from ..tokenizer import WordCounts
from .batching import TrainBatch, bucketed_batches
from .prepare import check_data_path, clean_rows
from .streamed_fit import FeatureStatistics, LabelStatistics
from .streaming import iter_table_chunks
from .text import text_source_columns

logger = logging.getLogger(__name__)


@dataclass
class TrainingScan:
    """Result of the scan of a streamed training file."""

    vocabs: dict  # task name -> label encoder
    features: object  # FeatureEncoder, or None without feature columns
    # Kept training rows of each rank's shard.
    rows_per_rank: list
    # Kept rows and the SHA-256 of their texts, in file order.
    fingerprint: dict
    stats: dict
    word_counts: WordCounts = None  # only with tokenizer.build_vocab
    # SHA-256 of the texts of each rank's shard, and the file's size and
    # modification time before the scan. Every streamed epoch checks
    # both, so a file replaced during training stops the run.
    shard_sha256: list = None
    file_stat: tuple = None


def read_header(config):
    """Return the training file's column names, reading its first row only."""
    data = config.data
    check_data_path("train", data.train_path)
    chunks = iter_table_chunks(data.train_path, data.format, data.sep,
                               data.encoding, chunk_rows=1)
    first = next(chunks)
    chunks.close()
    return list(first.columns)


def scan_training_file(config, world_size=1):
    """Read the whole training file once, chunk by chunk; return a
    `TrainingScan` for a run of `world_size` processes.

    Raises the errors of the in-memory path for missing columns, bad labels
    and bad feature values.
    """
    data = config.data
    check_data_path("train", data.train_path)
    file_stat = _file_stat(data.train_path)
    labels = {task.name: LabelStatistics(task) for task in config.tasks}
    features = (FeatureStatistics(config.features)
                if config.features.columns else None)
    word_counts = (WordCounts(config.tokenizer.do_lower_case)
                   if config.tokenizer.build_vocab else None)
    rows_per_rank = np.zeros(world_size, dtype=np.int64)
    digest = hashlib.sha256()
    shard_digests = [hashlib.sha256() for _ in range(world_size)]
    totals = collections.Counter()
    order_check = _SortedFileCheck(config.tasks[0])
    for _, frame, counts in training_chunks(config):
        totals.update(counts)
        order_check.add(frame)
        row_ids = frame["__row_id__"].to_numpy()
        for task in config.tasks:
            labels[task.name].add(frame[task.label_column], row_ids)
        if features is not None:
            features.add(frame, row_ids)
        ranks = frame.index.to_numpy() % world_size
        rows_per_rank += np.bincount(ranks, minlength=world_size)
        texts = frame["__text__"].tolist()
        for text, rank in zip(texts, ranks):
            encoded = text.encode("utf-8") + b"\0"
            digest.update(encoded)
            shard_digests[rank].update(encoded)
        if word_counts is not None:
            word_counts.update(texts)
    if totals["rows_kept"] == 0:
        raise DataError(f"no rows left in {data.train_path} after dropping "
                        "empty texts; check data.text_columns")

    vocabs = {name: stats.encoder() for name, stats in labels.items()}
    stats = {"train": dict(totals),
             "labelled": {"train": {name: stats.labelled
                                    for name, stats in labels.items()}}}
    _log_scan(config, totals)
    order_check.warn()
    return TrainingScan(
        vocabs, None if features is None else features.encoder(),
        rows_per_rank.tolist(),
        {"rows": int(totals["rows_kept"]), "sha256": digest.hexdigest()},
        stats, word_counts, [d.hexdigest() for d in shard_digests],
        file_stat)


def training_chunks(config, rank=0, world_size=1):
    """Yield (chunk number, cleaned frame, counts) for the training file.

    The chunk number is the file chunk's position (its first row // chunk
    rows). A frame has this rank's kept rows with their positions in the
    file as index, plus the `__row_id__` and `__text__` columns of
    `clean_rows`. The columns are checked on the first row, before the
    file is read, so a missing column gives the in-memory path's error.
    """
    data = config.data
    header = read_header(config)
    _check_columns(config, header)
    columns = [c for c in header if c in _used_columns(config)]
    for frame in iter_table_chunks(data.train_path, data.format, data.sep,
                                   data.encoding, data.chunk_rows, rank,
                                   world_size, columns):
        if data.max_rows is not None:
            if frame.index[0] >= data.max_rows:
                break
            frame = frame[frame.index < data.max_rows]
        cleaned, counts = clean_rows(frame, config, data.train_path,
                                     row_ids=frame.index.to_numpy(),
                                     drop_duplicates=False)
        yield int(frame.index[0]) // data.chunk_rows, cleaned, counts


class TrainStream:
    """This process's shard of a streamed training file, batch by batch.

    Every rank runs `steps_per_epoch` steps per epoch, the batch count of
    the smallest shard, because each step's gradient average needs every
    rank. Larger shards leave their last rows of the epoch out.
    """

    def __init__(self, config, scan, rank, world_size, text_encoder):
        self.config = config
        self.scan = scan
        self.rank = rank
        self.world_size = world_size
        self.text_encoder = text_encoder
        # Texts truncated to max_length so far in the current epoch.
        self.truncated = 0
        # Each rank's share of a global batch of train.batch_size rows.
        self.batch_rows = config.train.batch_size // world_size
        counts = scan.rows_per_rank
        self.steps_per_epoch = min(math.ceil(n / self.batch_rows)
                                   for n in counts)
        if self.steps_per_epoch == 0:
            empty = [r for r, n in enumerate(counts) if n == 0]
            raise DataError(f"the training shards of ranks {empty} have no "
                            f"rows (kept rows per rank: {counts}); use fewer "
                            "training processes or a larger training file")
        trained = sum(min(n, self.steps_per_epoch * self.batch_rows)
                      for n in counts)
        if trained < sum(counts):
            logger.warning(
                "streaming: kept training rows per rank %s; every rank runs "
                "the %d steps per epoch of the smallest shard, so the larger "
                "shards leave rows out of each epoch: %d in all", counts,
                self.steps_per_epoch, sum(counts) - trained)

    @property
    def rows(self):
        return self.scan.fingerprint["rows"]

    def epoch_batches(self, epoch, skip=0):
        """Yield this rank's batches of `epoch`, leaving out the first `skip`.

        A chunk's rows, with the rows carried over from earlier chunks, are
        shuffled by a generator seeded from (train.seed, epoch, chunk
        number). Whole batches go to `bucketed_batches` and the rest carry
        over, so all batches but the epoch's last are full. Skipped
        chunks are not tokenized, so a resumed run reaches its position
        after a read of the file. The rest of the file after the epoch's
        last batch is read too, because the shard's texts are checked
        against the scan's once the file has been read.
        """
        if skip >= self.steps_per_epoch:
            return
        path = self.config.data.train_path
        if (self.scan.file_stat is not None
                and _file_stat(path) != self.scan.file_stat):
            self._raise_changed(epoch, "its size or modification time "
                                "differs from the first pass's")
        seed = self.config.train.seed
        batches_done = 0  # batches of the epoch so far, yielded or skipped
        carry = None
        self.truncated = 0
        digest = hashlib.sha256()
        rows_read = 0
        for number, frame, _ in training_chunks(self.config, self.rank,
                                                self.world_size):
            texts = frame["__text__"].tolist()
            rows_read += len(texts)
            for text in texts:
                digest.update(text.encode("utf-8") + b"\0")
            if batches_done == self.steps_per_epoch:
                continue
            rows = self._chunk_rows(frame)
            pool = rows if carry is None else carry.concat(rows)
            rng = np.random.default_rng([seed, epoch, number])
            order = rng.permutation(len(pool))
            n_whole = len(pool) // self.batch_rows * self.batch_rows
            carry = pool.select(order[n_whole:])
            n_batches = n_whole // self.batch_rows
            # A pool smaller than a batch (chunk_rows < batch_size, or a
            # chunk of empty texts) has no whole batch and all carries over.
            if n_batches == 0 or batches_done + n_batches <= skip:
                batches_done += n_batches
                continue
            body = self._encode(pool.select(order[:n_whole]))
            for index in bucketed_batches(
                    [len(ids) for ids in body.input_ids], self.batch_rows,
                    self.config.train.bucket_batches, rng):
                if batches_done >= skip:
                    yield body.select(index)
                batches_done += 1
                if batches_done == self.steps_per_epoch:
                    break
        if carry is not None and len(carry) and (
                skip <= batches_done < self.steps_per_epoch):
            yield self._encode(carry)
        self._check_unchanged(epoch, rows_read, digest.hexdigest())
        self._log_epoch(epoch)

    def _check_unchanged(self, epoch, rows_read, sha256):
        """Raise DataError when this epoch read other texts than the scan."""
        expected = self.scan.shard_sha256
        if expected is None or expected[self.rank] == sha256:
            return
        self._raise_changed(
            epoch, f"the epoch read {rows_read} rows for process "
            f"{self.rank}, where the first pass read "
            f"{self.scan.rows_per_rank[self.rank]}, or other texts, so its "
            "steps trained on other rows")

    def _raise_changed(self, epoch, reason):
        raise DataError(
            f"the training file {self.config.data.train_path} changed during "
            f"training, found in epoch {epoch}: {reason}; restore the file "
            "and start a new run")

    def _chunk_rows(self, frame):
        """Return the encoded labels and features of a cleaned chunk."""
        row_ids = frame["__row_id__"].to_numpy()
        labels = {}
        for task in self.config.tasks:
            labels[task.name], _ = self.scan.vocabs[task.name].encode(
                frame[task.label_column].tolist(), "error", row_ids)
        numeric = categorical = None
        if self.scan.features is not None:
            numeric, categorical = self.scan.features.transform(
                frame, "train", row_ids)
        return _Rows(frame["__text__"].tolist(), labels, row_ids, numeric,
                     categorical)

    def _encode(self, rows):
        """Tokenize `rows`; return them as a TrainBatch whose filler is
        its first row."""
        input_ids, count = self.text_encoder.encode(rows.texts)
        self.truncated += count
        batch = TrainBatch(input_ids, rows.labels, rows.row_ids, rows.numeric,
                           rows.categorical)
        batch.filler = batch.select([0])
        return batch

    def _log_epoch(self, epoch):
        logger.info("streamed epoch %d of the training file: %d texts "
                    "truncated to %d tokens", epoch, self.truncated,
                    self.text_encoder.max_length)


@dataclass
class _Rows:
    """Cleaned training rows before tokenization."""

    texts: list
    labels: dict
    row_ids: np.ndarray
    numeric: np.ndarray = None
    categorical: np.ndarray = None

    def __len__(self):
        return len(self.texts)

    def select(self, positions):
        return _Rows([self.texts[i] for i in positions],
                     {name: values[positions]
                      for name, values in self.labels.items()},
                     self.row_ids[positions],
                     None if self.numeric is None else self.numeric[positions],
                     None if self.categorical is None
                     else self.categorical[positions])

    def concat(self, other):
        def join(first, second):
            return None if first is None else np.concatenate([first, second])

        return _Rows(self.texts + other.texts,
                     {name: np.concatenate([values, other.labels[name]])
                      for name, values in self.labels.items()},
                     np.concatenate([self.row_ids, other.row_ids]),
                     join(self.numeric, other.numeric),
                     join(self.categorical, other.categorical))


class _SortedFileCheck:
    """Counts the chunks whose first-task labels are all one value.

    Streaming shuffles only within a chunk, so a file sorted by label trains
    on one class at a time. A warning then asks the user to shuffle it.
    """

    def __init__(self, task):
        self.task = task
        self.enabled = task.type in ("multiclass", "binary")
        self.labels = set()
        self.chunks = 0
        self.single_label_chunks = 0

    def add(self, frame):
        if not self.enabled:
            return
        values = frame[self.task.label_column].dropna().astype(str)
        if len(values) < 2:
            return
        distinct = set(values.unique())
        self.labels.update(distinct)
        self.chunks += 1
        self.single_label_chunks += len(distinct) == 1

    def warn(self):
        if self.single_label_chunks and len(self.labels) > 1:
            logger.warning(
                "%d of %d chunks of the training file hold a single value of "
                "%s (task %r): the file looks sorted by it, and streaming "
                "shuffles only within a chunk, so training sees one class at "
                "a time; shuffle the file once before streaming it",
                self.single_label_chunks, self.chunks,
                self.task.label_column, self.task.name)


def _file_stat(path):
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns


def _check_columns(config, header):
    """Raise the in-memory path's error for a column the file lacks."""
    import pandas as pd

    clean_rows(pd.DataFrame(columns=header), config, config.data.train_path)


def _used_columns(config):
    data = config.data
    used = set(text_source_columns(data))
    used.update(task.label_column for task in config.tasks)
    used.update(config.features.columns)
    if data.id_column is not None:
        used.add(data.id_column)
    return used


def _log_scan(config, totals):
    data = config.data
    logger.info(
        "train (streamed in chunks of %d rows): read %d rows from %s; removed "
        "byte-order marks or zero-width characters from %d texts; empty "
        "texts: %d %s; duplicate texts within a chunk: %d kept (streaming "
        "does not drop duplicates); %d rows kept", data.chunk_rows,
        totals["rows_read"], data.train_path,
        totals["invisible_marks_removed"], totals["empty_text"],
        "dropped" if data.drop_empty_text else "kept",
        totals["duplicate_text"], totals["rows_kept"])
