"""Length-bucketed batches with padding to the longest row of each batch."""

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .labels import unlabelled_rows


def bucketed_batches(lengths, batch_size, bucket_batches, rng):
    """Return a list of index arrays for one shuffled training epoch.

    Rows are shuffled, cut into buckets of `bucket_batches` batches, sorted by
    length inside a bucket and cut into batches; the batch order is then
    shuffled. Rows of similar length share a batch, so padding stays small
    while every epoch still gets a different mix.
    """
    lengths = np.asarray(lengths)
    order = rng.permutation(len(lengths))
    bucket = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), bucket):
        chunk = order[start:start + bucket]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size]
                    for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def sorted_batches(lengths, batch_size):
    """Return index arrays over rows sorted by length, for evaluation."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def pad_batch(sequences, pad_id):
    """Stack id arrays into `input_ids` and `token_type_ids` of equal length."""
    width = max(len(s) for s in sequences)
    input_ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    for i, seq in enumerate(sequences):
        input_ids[i, :len(seq)] = seq
    token_type_ids = np.zeros_like(input_ids)
    return input_ids, token_type_ids


@dataclass
class TrainBatch:
    """One process's rows of a training batch, ready for the model.

    `input_ids` has one int64 id array per row, and `labels` maps task
    names to the rows' encoded labels. The feature arrays have one row per
    batch row, or are None when no such feature is configured. `filler` is
    a one-row batch that `parts` uses, without its labels, for a part with
    no rows, because every process must run each step's forward and
    backward passes.
    """

    input_ids: list
    labels: dict
    row_ids: np.ndarray
    numeric_features: Optional[np.ndarray] = None
    categorical_features: Optional[np.ndarray] = None
    filler: Optional["TrainBatch"] = field(default=None, repr=False)

    def __len__(self):
        return len(self.input_ids)

    @classmethod
    def from_rows(cls, rows, input_ids, labels, row_ids, numeric_features=None,
                  categorical_features=None, filler_row=None):
        """Return the batch of positions `rows` of in-memory split arrays.

        `filler_row` (default: the first of `rows`) is the position of the
        row that replaces an empty part.
        """
        arrays = (input_ids, labels, np.asarray(row_ids), numeric_features,
                  categorical_features)
        rows = np.asarray(rows, dtype=np.int64)
        batch = cls(*arrays).select(rows)
        if filler_row is None and len(rows):
            filler_row = rows[0]
        if filler_row is not None:
            batch.filler = cls(*arrays).select([filler_row])
        return batch

    def select(self, positions):
        """Return the rows at `positions` of this batch, with its filler."""
        positions = np.asarray(positions, dtype=np.int64)
        return TrainBatch([self.input_ids[i] for i in positions],
                          {name: values[positions]
                           for name, values in self.labels.items()},
                          self.row_ids[positions],
                          _take(self.numeric_features, positions),
                          _take(self.categorical_features, positions),
                          self.filler)

    def parts(self, count):
        """Split the batch into `count` parts of consecutive rows.

        A part without rows is the filler row with its labels removed, so
        its loss and gradient are zero.
        """
        parts = []
        for positions in np.array_split(np.arange(len(self)), count):
            part = self.select(positions)
            if len(part) == 0:
                part = self.filler.select([0])
                part.labels = {name: unlabelled_rows(values, 1)
                               for name, values in part.labels.items()}
            parts.append(part)
        return parts


def _take(array, rows):
    return None if array is None else array[rows]
