"""Read the pretraining corpus: documents from text files and table columns."""

import logging
import os
import types

import numpy as np

from ..data.readers import read_table
from ..data.text import build_texts, clean_text
from ..errors import DataError

logger = logging.getLogger(__name__)


def read_corpus(data_config):
    """Return (documents, stats): cleaned, non-empty texts of every file.

    Documents are cleaned as fine-tuning cleans texts (invisible marks and
    surrounding whitespace removed), so `exclude_texts_of` matches them
    exactly. Raises DataError when no document is left.
    """
    documents = []
    stats = {"files": {}}
    for i, corpus_file in enumerate(data_config.files):
        texts = read_documents(corpus_file, f"data.files[{i}]")
        stats["files"][corpus_file.path] = len(texts)
        logger.info("read %d documents from %s", len(texts), corpus_file.path)
        documents.extend(texts)
    stats["read"] = len(documents)

    if data_config.drop_duplicates:
        documents = list(dict.fromkeys(documents))
        stats["duplicates"] = stats["read"] - len(documents)
    if data_config.exclude_texts_of:
        documents, stats["excluded"] = _exclude_texts(
            documents, data_config.exclude_texts_of)
    if data_config.max_docs is not None and len(documents) > data_config.max_docs:
        rng = np.random.default_rng(data_config.seed)
        keep = np.sort(rng.choice(len(documents), data_config.max_docs,
                                  replace=False))
        documents = [documents[i] for i in keep]
    if not documents:
        files = ", ".join(f.path for f in data_config.files)
        raise DataError(f"the corpus is empty: no non-empty document is left "
                        f"in {files} (stats {stats}); check the files and "
                        "data.files[].text_column")
    stats["documents"] = len(documents)
    logger.info("corpus: %d documents (%s)", len(documents), stats)
    return documents, stats


def read_documents(corpus_file, where):
    """Return the non-empty cleaned documents of one corpus file."""
    fmt = corpus_file.resolved_format()
    if fmt == "text":
        return _read_text_file(corpus_file.path, corpus_file.encoding)
    frame = read_table(corpus_file.path, format=fmt, sep=corpus_file.sep,
                       encoding=corpus_file.encoding)
    column = corpus_file.text_column
    if column not in frame.columns:
        raise DataError(f"{where}.text_column={column!r} not found in "
                        f"{corpus_file.path}; the file has columns "
                        f"{list(frame.columns)}")
    # build_texts turns numbers, bytes and missing values into text the way
    # fine-tuning does.
    settings = types.SimpleNamespace(text_columns=[column], text_template=None,
                                     text_separator=" ",
                                     encoding=corpus_file.encoding)
    texts, _ = build_texts(frame, settings)
    return [text for text in texts if text]


def _read_text_file(path, encoding):
    if not os.path.exists(path):
        raise DataError(f"corpus file not found: {path}")
    if os.path.isdir(path):
        raise DataError(f"{path} is a directory; give the path of a file")
    # utf-8-sig drops a byte-order mark at the start of the file.
    if encoding.lower().replace("-", "") == "utf8":
        encoding = "utf-8-sig"
    try:
        with open(path, encoding=encoding) as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not valid {encoding} text (byte "
                        f"{exc.start}); convert it to UTF-8 or set the file's "
                        "encoding, e.g. gbk") from None
    documents = [clean_text(line) for line in lines]
    return [doc for doc in documents if doc]


def _exclude_texts(documents, config_path):
    """Drop documents that are validation or test texts of a fine-tuning config."""
    from ..config import load_config
    from ..data import prepare_data

    finetune = load_config(config_path)
    prepared = prepare_data(finetune, splits=("valid", "test"))
    held_out = set()
    for split in prepared.splits.values():
        held_out.update(split.texts)
    remaining = [doc for doc in documents if doc not in held_out]
    logger.info("left out %d documents that are validation or test texts of "
                "%s", len(documents) - len(remaining), config_path)
    return remaining, len(documents) - len(remaining)


def split_documents(documents, valid_docs, seed):
    """Return (training documents, held-out documents), a seeded random split."""
    if valid_docs == 0:
        return list(documents), []
    if valid_docs >= len(documents):
        raise DataError(f"data.valid_docs={valid_docs} leaves no training "
                        f"documents: the corpus has {len(documents)}; lower "
                        "data.valid_docs or set it to 0")
    order = np.random.default_rng(seed).permutation(len(documents))
    held_out = set(order[:valid_docs].tolist())
    train = [d for i, d in enumerate(documents) if i not in held_out]
    valid = [documents[i] for i in sorted(held_out)]
    return train, valid
