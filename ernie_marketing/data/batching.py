"""Length-bucketed batches with padding to the longest row of each batch."""

import numpy as np


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
