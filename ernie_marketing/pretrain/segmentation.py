"""Turn documents into token sequences with word units for knowledge masking.

A word unit is the run of tokens that covers one word of the jieba
segmentation. Words are mapped onto tokens through character offsets, so a
word split into several tokens (`iphone`, `##13`) is one unit, and a token
that spans several words (rare, e.g. a WordPiece across a jieba boundary)
joins them into one unit.
"""

import logging
import unicodedata
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass
class Sequence:
    """One model input: `[CLS] tokens [SEP]` with its word units.

    Units are listed in order as token positions [start, end) in `input_ids`
    (so position 0 is [CLS]). Only maskable units are listed: tokens that
    are [UNK] or could not be located in the text belong to no unit.
    `joinable` marks units with a letter or digit, which may be part of a
    phrase; punctuation and symbols may not.
    """

    input_ids: np.ndarray
    unit_starts: np.ndarray
    unit_ends: np.ndarray
    joinable: np.ndarray

    def __len__(self):
        return len(self.input_ids)


def token_offsets(text, tokens, do_lower_case=True, strip_accents=None):
    """Return each token's (start, end) character span in `text`, or None.

    The text is normalised as PaddleNLP's BasicTokenizer normalises it
    (lower case, accents stripped, control characters dropped), keeping a
    map back to the original characters, and each token is searched after
    the previous one. [UNK] and tokens that are not found get None.
    Matches `tokenizer.get_offset_mapping` on located tokens, at a fraction
    of its cost.
    """
    normalized = []
    origin = []
    for i, ch in enumerate(text):
        if do_lower_case:
            ch = ch.lower()
        if (do_lower_case and strip_accents is not False) or strip_accents:
            ch = "".join(c for c in unicodedata.normalize("NFD", ch)
                         if unicodedata.category(c) != "Mn")
        for c in ch:
            if ord(c) == 0 or ord(c) == 0xFFFD or _is_control(c):
                continue
            normalized.append(c)
            origin.append(i)
    normalized = "".join(normalized)

    offsets = []
    cursor = 0
    for token in tokens:
        piece = token[2:] if token.startswith("##") else token
        start = -1 if token == "[UNK]" else normalized.find(piece, cursor)
        if start < 0 or not piece:
            offsets.append(None)
            continue
        end = start + len(piece)
        offsets.append((origin[start], origin[end - 1] + 1))
        cursor = end
    return offsets


def _is_control(ch):
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch) in ("Cc", "Cf")


class WordSegmenter:
    """jieba word segmentation, with an optional user dictionary.

    Each segmenter has its own `jieba.Tokenizer`, so a user dictionary does
    not change jieba's global default segmenter.
    """

    def __init__(self, user_dict=None):
        import jieba

        jieba.setLogLevel(logging.WARNING)
        self._tokenizer = jieba.Tokenizer()
        self._tokenizer.initialize()
        if user_dict is not None:
            try:
                self._tokenizer.load_userdict(user_dict)
            except OSError as exc:
                raise ConfigError(f"masking.user_dict={user_dict!r} cannot be "
                                  f"read: {exc.strerror or exc}; give a jieba "
                                  "dictionary file") from None
            except ValueError as exc:
                raise ConfigError(f"masking.user_dict={user_dict!r} is not a "
                                  f"jieba dictionary: {exc}; write one 'word "
                                  "[frequency] [tag]' per line") from None

    def words(self, text):
        """Return the words of `text` as (word, start, end) character spans.

        The spans cover the whole text, spaces and punctuation included.
        """
        return list(self._tokenizer.tokenize(text))

    def word_index(self, text):
        """Return an int array giving the index of the word each character is in."""
        index = np.empty(len(text), dtype=np.int32)
        for number, (_, start, end) in enumerate(self.words(text)):
            index[start:end] = number
        return index


class CorpusEncoder:
    """Tokenize documents into `Sequence`s of at most `max_length` tokens.

    A document longer than `max_length - 2` tokens is cut into several
    sequences, at a unit boundary where one fits, so no text is dropped.
    """

    def __init__(self, tokenizer, max_length, segmenter):
        self.tokenizer = tokenizer
        self.limit = max_length - 2
        self.segmenter = segmenter
        self.cls_id = tokenizer.convert_tokens_to_ids("[CLS]")
        self.sep_id = tokenizer.convert_tokens_to_ids("[SEP]")
        self.unk_id = tokenizer.convert_tokens_to_ids("[UNK]")
        basic = tokenizer.basic_tokenizer
        self._normalization = (basic.do_lower_case,
                               getattr(basic, "strip_accents", None))

    def encode(self, text):
        """Return the sequences of one document (none for an empty one)."""
        tokens = self.tokenizer.tokenize(text)
        if not tokens:
            return []
        ids = self.tokenizer.convert_tokens_to_ids(tokens)
        offsets = token_offsets(text, tokens, *self._normalization)
        words = self.segmenter.word_index(text)
        units = _word_units(text, ids, offsets, words, self.unk_id)
        return [self._sequence(ids, units, start, end)
                for start, end in _chunks(units, len(ids), self.limit)]

    def encode_all(self, documents):
        sequences = []
        for text in documents:
            sequences.extend(self.encode(text))
        return sequences

    def _sequence(self, ids, units, start, end):
        inside = [u for u in units if start <= u[0] and u[1] <= end]
        # Positions count from the chunk's start, plus 1 for [CLS].
        starts = np.asarray([u[0] - start + 1 for u in inside], dtype=np.int32)
        ends = np.asarray([u[1] - start + 1 for u in inside], dtype=np.int32)
        joinable = np.asarray([u[2] for u in inside], dtype=bool)
        input_ids = np.asarray([self.cls_id, *ids[start:end], self.sep_id],
                               dtype=np.int64)
        return Sequence(input_ids, starts, ends, joinable)


def _word_units(text, ids, offsets, words, unk_id):
    """Return the maskable units as (start, end, joinable) token ranges."""
    units = []
    start = None
    last_word = -1
    for i, (token_id, span) in enumerate(zip(ids, offsets)):
        if span is None or token_id == unk_id:
            if start is not None:
                units.append((start, i))
            start, last_word = None, -1
            continue
        first, last = int(words[span[0]]), int(words[span[1] - 1])
        if start is None or first > last_word:
            if start is not None:
                units.append((start, i))
            start = i
        last_word = max(last_word, last)
    if start is not None:
        units.append((start, len(ids)))

    result = []
    for begin, end in units:
        chars = text[offsets[begin][0]:offsets[end - 1][1]]
        result.append((begin, end, any(ch.isalnum() for ch in chars)))
    return result


def _chunks(units, n_tokens, limit):
    """Return [start, end) token ranges of at most `limit` tokens.

    Cuts fall on unit boundaries when the current chunk already contains a
    unit. A single unit longer than `limit` is cut inside, and its tokens
    then belong to no unit.
    """
    if n_tokens <= limit:
        return [(0, n_tokens)]
    boundaries = sorted({u[0] for u in units} | {u[1] for u in units}
                        | {0, n_tokens})
    chunks = []
    start = 0
    while n_tokens - start > limit:
        cut = max((b for b in boundaries if start < b <= start + limit),
                  default=start + limit)
        chunks.append((start, cut))
        start = cut
    chunks.append((start, n_tokens))
    return chunks
