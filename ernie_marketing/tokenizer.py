"""Load PaddleNLP's ERNIE tokenizer and encode texts into token ids.

Vocabulary files come in two layouts: one token per line (PaddleNLP's
downloads, where the line number is the id) and `token<TAB>id` lines (the
ERNIE repository's files). Both load; the second is rewritten in the first
layout, because PaddleNLP's `ErnieTokenizer` reads only that.
"""

import collections
import logging
import os

import numpy as np

from .errors import ConfigError, DataError

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ("[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]")
VOCAB_NAME = "vocab.txt"


def load_tokenizer(config, work_dir, train_texts=None, word_counts=None):
    """Return an `ErnieTokenizer` from the source `config.tokenizer` names.

    `work_dir` receives a rewritten or built vocabulary file. A built
    vocabulary comes from `train_texts`, or from `word_counts` (a
    `WordCounts` of the training texts) when the texts are not in memory.
    """
    from paddlenlp.transformers import ErnieTokenizer

    tok = config.tokenizer
    os.makedirs(work_dir, exist_ok=True)
    if tok.build_vocab:
        out_path = os.path.join(work_dir, VOCAB_NAME)
        if word_counts is not None:
            vocab_file = write_vocab(word_counts, out_path, tok.vocab_min_freq,
                                     tok.vocab_max_size)
        elif train_texts:
            vocab_file = build_vocab(train_texts, out_path, tok.vocab_min_freq,
                                     tok.vocab_max_size, tok.do_lower_case)
        else:
            raise ConfigError("tokenizer.build_vocab=true needs training "
                              "texts")
        return ErnieTokenizer(vocab_file, do_lower_case=tok.do_lower_case)
    if tok.vocab_file is not None:
        vocab_file = standard_vocab_file(tok.vocab_file, work_dir)
        return ErnieTokenizer(vocab_file, do_lower_case=tok.do_lower_case)
    source = tok.name_or_path or config.model.name_or_path
    return from_pretrained(source, work_dir)


def from_pretrained(source, work_dir):
    """Load a tokenizer by PaddleNLP model name or from a local directory."""
    from paddlenlp.transformers import ErnieTokenizer

    if os.path.isdir(source):
        vocab_path = os.path.join(source, VOCAB_NAME)
        if not os.path.isfile(vocab_path):
            raise ConfigError(f"tokenizer directory {source} has no {VOCAB_NAME}")
        if read_vocab_layout(vocab_path) == "tab":
            vocab_file = standard_vocab_file(vocab_path, work_dir)
            return ErnieTokenizer(vocab_file)
        return ErnieTokenizer.from_pretrained(source)
    try:
        return ErnieTokenizer.from_pretrained(source)
    except Exception as exc:  # PaddleNLP raises several types for a bad name
        raise ConfigError(
            f"cannot load tokenizer {source!r}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}; give a local "
            "directory, a vocab file (tokenizer.vocab_file) or, offline, "
            "tokenizer.build_vocab=true") from None


def read_vocab_layout(path):
    """Return "tab" for `token<TAB>id` files and "lines" for one token per line."""
    return _vocab_layout(_read_vocab_lines(path))


def _vocab_layout(lines):
    head = [line.rstrip("\n") for line in lines[:50]]
    with_id = [line for line in head if "\t" in line]
    if with_id and len(with_id) == len([h for h in head if h]):
        if all(line.rsplit("\t", 1)[1].strip().isdigit() for line in with_id):
            return "tab"
    return "lines"


def standard_vocab_file(path, work_dir):
    """Return a one-token-per-line vocabulary for `path`, converting if needed."""
    if not os.path.isfile(path):
        raise ConfigError(f"tokenizer.vocab_file not found: {path}")
    lines = _read_vocab_lines(path)
    if _vocab_layout(lines) == "lines":
        # PaddleNLP strips only "\n", so a CRLF file fails this check too.
        _check_specials(path, [line.rstrip("\n") for line in lines])
        return path

    tokens = {}
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\n")
        if not line:
            continue
        token, _, token_id = line.rpartition("\t")
        if not token_id.strip().isdigit() or not token:
            raise DataError(f"{path} line {number}: {line!r} is not "
                            "'token<TAB>id'")
        token_id = int(token_id)
        if token_id in tokens:
            raise DataError(f"{path} line {number}: id {token_id} is used "
                            "twice")
        tokens[token_id] = token

    expected = set(range(len(tokens)))
    if set(tokens) != expected:
        gaps = sorted(expected - set(tokens))[:10]
        raise DataError(f"{path}: ids must run from 0 to {len(tokens) - 1} "
                        f"without gaps; missing {gaps}")
    _check_specials(path, tokens.values())
    os.makedirs(work_dir, exist_ok=True)
    out_path = os.path.join(work_dir, VOCAB_NAME)
    with open(out_path, "w", encoding="utf-8") as f:
        f.write("\n".join(tokens[i] for i in range(len(tokens))) + "\n")
    logger.info("rewrote %s (token<TAB>id, %d tokens) as %s", path,
                len(tokens), out_path)
    return out_path


class WordCounts:
    """Word frequencies of training texts, counted in file order.

    `update` may be called once per chunk of a streamed file: the counts and
    the order of first appearance, which breaks ties between equal counts,
    are those of one pass over all the texts.
    """

    def __init__(self, lower=True):
        from paddlenlp.transformers import BasicTokenizer

        self.basic = BasicTokenizer(do_lower_case=lower)
        self.words = collections.Counter()
        self.texts = 0

    def update(self, texts):
        for text in texts:
            self.words.update(self.basic.tokenize(text))
            self.texts += 1


def build_vocab(texts, out_path, min_freq=1, max_size=20000, lower=True):
    """Write a vocabulary of the training text's tokens, most frequent first.

    See `write_vocab` for the tokens kept.
    """
    word_counts = WordCounts(lower)
    word_counts.update(texts)
    return write_vocab(word_counts, out_path, min_freq, max_size)


def write_vocab(word_counts, out_path, min_freq=1, max_size=20000):
    """Write the vocabulary of a `WordCounts`, most frequent first.

    Chinese characters are tokens of their own. Other words are kept whole
    when frequent. Every non-Chinese character is also kept as a
    continuation piece (`##c`), so rarer words split into characters
    instead of becoming [UNK].
    """
    words = word_counts.words
    chars = collections.Counter()
    for word, count in words.items():
        if len(word) > 1:
            for ch in word:
                chars[ch] += count
    vocab = list(SPECIAL_TOKENS)
    seen = set(vocab)
    budget = max_size - len(vocab)
    pieces = [f"##{ch}" for ch, c in chars.most_common() if c >= min_freq]
    singles = [w for w, c in words.most_common() if len(w) == 1 and c >= min_freq]
    singles += [ch for ch, c in chars.most_common() if c >= min_freq]
    longer = [w for w, c in words.most_common() if len(w) > 1 and c >= min_freq]
    for token in singles + pieces + longer:
        if budget <= 0:
            break
        if token not in seen:
            vocab.append(token)
            seen.add(token)
            budget -= 1
    with open(out_path, "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    logger.info("built a vocabulary of %d tokens from %d training texts: %s",
                len(vocab), word_counts.texts, out_path)
    return out_path


def _read_vocab_lines(path):
    """Return the lines of a vocabulary file, rejecting non-UTF-8 or empty ones."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except UnicodeDecodeError:
        raise ConfigError(f"vocabulary file {path} is not UTF-8 text; give a "
                          "UTF-8 vocab.txt with one token per line or "
                          "token<TAB>id lines") from None
    if not any(line.strip() for line in lines):
        raise ConfigError(f"vocabulary file {path} is empty; give a vocab.txt "
                          "with one token per line")
    return lines


def _check_specials(path, tokens):
    present = set(tokens)
    missing = [t for t in SPECIAL_TOKENS if t not in present]
    if missing:
        raise DataError(f"{path} lacks the special tokens {missing}; an ERNIE "
                        f"vocabulary needs {list(SPECIAL_TOKENS)}")


class TextEncoder:
    """Turns texts into `[CLS] tokens [SEP]` ids, truncated to `max_length`."""

    def __init__(self, tokenizer, max_length):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.cls_id = tokenizer.convert_tokens_to_ids("[CLS]")
        self.sep_id = tokenizer.convert_tokens_to_ids("[SEP]")
        self.pad_id = tokenizer.convert_tokens_to_ids("[PAD]")

    @property
    def vocab_size(self):
        return max(self.tokenizer.vocab.idx_to_token) + 1

    def encode(self, texts):
        """Return a list of int64 id arrays and the number of truncated texts."""
        limit = self.max_length - 2
        encoded = []
        truncated = 0
        for text in texts:
            ids = self.tokenizer.convert_tokens_to_ids(
                self.tokenizer.tokenize(text))
            if len(ids) > limit:
                truncated += 1
                ids = ids[:limit]
            encoded.append(np.asarray([self.cls_id, *ids, self.sep_id],
                                      dtype=np.int64))
        return encoded, truncated
