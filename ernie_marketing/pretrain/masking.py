"""Knowledge masking: choose character, word and phrase spans, then replace them.

ERNIE (Sun et al., 2019, "ERNIE: Enhanced Representation through Knowledge
Integration") masks whole words, phrases and entities instead of single
characters, so the model must predict units that carry meaning. Here the
units come from `segmentation.py`: a character is one token, a word is one
unit, and a phrase is 2 to `max_phrase_words` adjacent units that contain a
letter or digit.
"""

from dataclasses import dataclass

import numpy as np

CHAR, WORD, PHRASE = "char", "word", "phrase"
KINDS = (CHAR, WORD, PHRASE)
# Random draws before the sampler falls back to scanning every candidate.
_REJECTION_TRIES = 8


@dataclass
class MaskedSequence:
    """A sequence after masking, with the positions and ids to predict."""

    input_ids: np.ndarray
    positions: np.ndarray
    labels: np.ndarray
    # The chosen spans as (start, end, kind) token ranges.
    spans: list


@dataclass
class MaskedBatch:
    """Padded inputs and the flattened positions and labels of masked tokens."""

    input_ids: np.ndarray  # int64 [batch, width]
    masked_positions: np.ndarray  # int64 [masked]: row * width + position
    labels: np.ndarray  # int64 [masked]: the original token ids
    num_tokens: int  # tokens that are not padding, [CLS] and [SEP] included


class KnowledgeMasker:
    """Masks `masking.mask_rate` of a sequence's maskable tokens.

    The number of tokens to mask is rate x maskable tokens, rounded up or
    down at random so that its mean is exact. Units are drawn until that
    number is reached. A drawn unit larger than what is left is taken with
    probability left / size, and masking stops either way. This keeps the
    expected count at the target without cutting a word.
    """

    def __init__(self, masking, mask_id, special_ids, vocab_size):
        self.rate = masking.mask_rate
        self.kind_cumulative = np.cumsum([masking.char_ratio, masking.word_ratio,
                                          masking.phrase_ratio])
        self.max_phrase_words = masking.max_phrase_words
        self.mask_token_ratio = masking.mask_token_ratio
        self.random_token_ratio = masking.random_token_ratio
        self.mask_id = mask_id
        self.random_ids = np.setdiff1d(np.arange(vocab_size), list(special_ids))

    def choose_spans(self, sequence, rng):
        """Return the spans to mask as (start, end, kind) token ranges."""
        units = _Units(sequence)
        if not units.starts:
            return []
        target = int(self.rate * units.num_tokens + rng.random())
        spans = []
        masked = 0
        attempts = 0
        while masked < target and attempts < 10 * len(units.starts) + 10:
            attempts += 1
            span = self._draw_span(units, rng)
            if span is None:
                continue
            start, end, _ = span
            remaining = target - masked
            if end - start > remaining:
                if rng.random() < remaining / (end - start):
                    spans.append(span)
                break
            units.cover(start, end)
            spans.append(span)
            masked += end - start
        return spans

    def mask(self, sequence, rng):
        """Return a MaskedSequence with the 80/10/10 replacement applied."""
        spans = self.choose_spans(sequence, rng)
        positions = np.asarray(sorted(p for start, end, _ in spans
                                      for p in range(start, end)),
                               dtype=np.int64)
        input_ids = sequence.input_ids.copy()
        labels = input_ids[positions]
        draw = rng.random(len(positions))
        to_mask = positions[draw < self.mask_token_ratio]
        random_limit = self.mask_token_ratio + self.random_token_ratio
        to_random = positions[(draw >= self.mask_token_ratio)
                              & (draw < random_limit)]
        input_ids[to_mask] = self.mask_id
        input_ids[to_random] = rng.choice(self.random_ids, len(to_random))
        return MaskedSequence(input_ids, positions, labels, spans)

    def mask_batch(self, sequences, rng, pad_id):
        """Mask and pad `sequences` into one MaskedBatch.

        A batch in which no token was chosen (possible only with very short
        sequences) gets one unit masked with [MASK], so every batch has a
        loss.
        """
        width = max(len(s) for s in sequences)
        input_ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
        positions, labels = [], []
        for row, sequence in enumerate(sequences):
            masked = self.mask(sequence, rng)
            input_ids[row, :len(sequence)] = masked.input_ids
            positions.append(masked.positions + row * width)
            labels.append(masked.labels)
        positions = np.concatenate(positions)
        labels = np.concatenate(labels)
        if len(positions) == 0:
            positions, labels = self._mask_one_unit(sequences, input_ids, rng)
        num_tokens = sum(len(s) for s in sequences)
        return MaskedBatch(input_ids, positions, labels, num_tokens)

    def _mask_one_unit(self, sequences, input_ids, rng):
        rows = [i for i, s in enumerate(sequences) if len(s.unit_starts)]
        if not rows:
            raise ValueError("no sequence in the batch has a maskable token")
        row = rows[rng.integers(len(rows))]
        sequence = sequences[row]
        unit = rng.integers(len(sequence.unit_starts))
        span = np.arange(sequence.unit_starts[unit], sequence.unit_ends[unit])
        labels = sequence.input_ids[span]
        input_ids[row, span] = self.mask_id
        return span + row * input_ids.shape[1], labels

    def _draw_span(self, units, rng):
        """Draw a span of a random kind, falling back when it has no candidate.

        A phrase falls back to a word and a word to a character.
        """
        kind = int(np.searchsorted(self.kind_cumulative, rng.random(),
                                   side="right"))
        kind = min(kind, len(KINDS) - 1)
        if kind == 2:
            span = units.draw_phrase(rng, self.max_phrase_words)
            if span is not None:
                return (*span, PHRASE)
            kind = 1
        if kind == 1:
            span = units.draw_word(rng)
            if span is not None:
                return (*span, WORD)
        span = units.draw_char(rng)
        return None if span is None else (*span, CHAR)


class _Units:
    """The maskable units of one sequence and which tokens are already covered."""

    def __init__(self, sequence):
        self.starts = sequence.unit_starts.tolist()
        self.ends = sequence.unit_ends.tolist()
        self.joinable = sequence.joinable.tolist()
        self.positions = [p for s, e in zip(self.starts, self.ends)
                          for p in range(s, e)]
        self.num_tokens = len(self.positions)
        self.covered = [False] * len(sequence)

    def cover(self, start, end):
        self.covered[start:end] = [True] * (end - start)

    def draw_char(self, rng):
        position = self._draw(self.positions, lambda p: not self.covered[p], rng)
        return None if position is None else (position, position + 1)

    def draw_word(self, rng):
        index = self._draw(range(len(self.starts)), self._is_free, rng)
        return None if index is None else (self.starts[index], self.ends[index])

    def draw_phrase(self, rng, max_words):
        """Draw 2 to `max_words` adjacent joinable free units, or None."""
        length = int(rng.integers(2, max_words + 1))
        n = len(self.starts)
        for _ in range(_REJECTION_TRIES):
            first = int(rng.integers(n))
            last = first
            while (last + 1 < n and last + 1 - first < length
                   and self._joins(last, last + 1)):
                last += 1
            if last > first and self._is_free(first):
                return self.starts[first], self.ends[last]
        return None

    def _is_free(self, index):
        return not any(self.covered[self.starts[index]:self.ends[index]])

    def _joins(self, left, right):
        """Return True when unit `right` continues a phrase ending in unit `left`."""
        return (self.ends[left] == self.starts[right] and self.joinable[left]
                and self.joinable[right] and self._is_free(right))

    @staticmethod
    def _draw(candidates, accept, rng):
        """Draw a random accepted candidate: a few tries, then a full scan."""
        for _ in range(_REJECTION_TRIES):
            candidate = candidates[int(rng.integers(len(candidates)))]
            if accept(candidate):
                return candidate
        accepted = [c for c in candidates if accept(c)]
        if not accepted:
            return None
        return accepted[int(rng.integers(len(accepted)))]
