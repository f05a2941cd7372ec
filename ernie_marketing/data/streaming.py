"""Read CSV/TSV, JSONL and Parquet tables chunk by chunk, sharded by rank.

`iter_table_chunks` never keeps the whole file in memory: CSV-like and JSONL files
go through pandas' `chunksize` readers and Parquet through pyarrow's
`iter_batches`, so memory grows with `chunk_rows`, not with the file.
Each process of a data-parallel run reads the whole byte stream but keeps
only its shard: row i of the file (counted from 0) belongs to rank
i % world_size.
"""

import csv
import logging
import os
import zipfile

import numpy as np
import pandas as pd

from ..errors import DataError
from .readers import _clean_column, _looks_binary, detect_format

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 50_000


def iter_table_chunks(path, format="auto", sep=None, encoding="utf-8",
                      chunk_rows=DEFAULT_CHUNK_ROWS, rank=0, world_size=1,
                      columns=None):
    """Yield DataFrames with this rank's rows of a table, in file order.

    Each frame's index contains the rows' positions in the file, so shards can
    be merged back in order. `columns` limits the columns returned (all when
    None) and must all exist. Column names lose surrounding spaces and a
    byte-order mark, as in `read_table`. A chunk whose rows all belong to
    other ranks is skipped.
    """
    _check_shard(chunk_rows, rank, world_size)
    _check_file(path)
    if format == "auto":
        format = detect_format(path)
    requested = None if columns is None else list(columns)
    offset = 0
    try:
        for frame in _raw_chunks(path, format, sep, encoding, chunk_rows,
                                 requested):
            frame.columns = [_clean_column(c) for c in frame.columns]
            if offset == 0:
                _check_columns(frame, requested, path)
            if requested is not None:
                frame = frame[requested]
            n_rows = len(frame)
            frame.index = pd.RangeIndex(offset, offset + n_rows)
            offset += n_rows
            if world_size > 1:
                frame = frame[frame.index % world_size == rank]
            if len(frame):
                yield frame
    except UnicodeDecodeError as exc:
        if format != "parquet" and _looks_binary(path):
            raise DataError(f"{path} looks like a binary file, not {format} "
                            "text; set data.format=parquet for a Parquet "
                            "file") from None
        raise DataError(f"{path} is not valid {encoding} text near data row "
                        f"{offset} (byte {exc.start} of that chunk); convert "
                        "it to UTF-8 or set data.encoding, e.g. gbk") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"data file {path} has no rows or columns") from None
    except (pd.errors.ParserError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc
        raise DataError(f"cannot parse {path} as {format} after data row "
                        f"{offset}: {first}") from None
    if offset == 0:
        raise DataError(f"data file {path} has a header but no rows")


def count_shard_rows(n_rows, rank, world_size):
    """Return how many of `n_rows` file rows belong to `rank`."""
    _check_shard(1, rank, world_size)
    return len(range(rank, n_rows, world_size))


def _check_shard(chunk_rows, rank, world_size):
    if not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1:
        raise ValueError(f"chunk_rows={chunk_rows!r} is invalid: expected an "
                         "integer >= 1")
    if not isinstance(world_size, (int, np.integer)) or world_size < 1:
        raise ValueError(f"world_size={world_size!r} is invalid: expected an "
                         "integer >= 1")
    if not isinstance(rank, (int, np.integer)) or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank!r} is invalid: expected an integer from "
                         f"0 to {world_size - 1} (world_size={world_size})")


def _check_file(path):
    if not os.path.exists(path):
        raise DataError(f"data file not found: {path}")
    if os.path.isdir(path):
        raise DataError(f"{path} is a directory; give the path of a file")
    if os.path.getsize(path) == 0:
        raise DataError(f"data file {path} is empty")


def _check_columns(frame, requested, path):
    names = list(frame.columns)
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        raise DataError(f"{path} has repeated column names {repeated} (after "
                        "removing surrounding spaces); rename the columns so "
                        "each name is used once")
    missing = [c for c in requested or () if c not in names]
    if missing:
        raise DataError(f"column(s) {missing} not found in {path}; the file "
                        f"has columns {names}")


def _raw_chunks(path, format, sep, encoding, chunk_rows, requested):
    if path.lower().endswith(".zip"):
        yield from _zip_chunks(path, format, sep, encoding, chunk_rows)
    elif format == "parquet":
        yield from _parquet_chunks(path, chunk_rows, requested)
    else:
        yield from _text_chunks(path, format, sep, encoding, chunk_rows)


def _zip_chunks(path, format, sep, encoding, chunk_rows):
    if format == "parquet":
        raise DataError(f"{path}: streaming a Parquet file inside a zip "
                        "archive is not supported; unzip it")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise DataError(f"{path} is not a valid zip archive") from None
    with archive:
        members = [m for m in archive.namelist()
                   if not m.endswith("/") and not m.startswith("__MACOSX")]
        if len(members) != 1:
            raise DataError(f"{path} must hold exactly one data file, found "
                            f"{len(members)}: {members[:10]}; unzip it")
        with archive.open(members[0]) as f:
            yield from _text_chunks(f, format, sep, encoding, chunk_rows)


def _parquet_chunks(path, chunk_rows, requested):
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid and OSError kinds
        raise DataError(f"cannot read {path} as Parquet: {exc}") from None
    names = None
    if requested is not None:
        # Parquet names are matched after the same cleaning as CSV headers.
        by_clean = {_clean_column(n): n for n in parquet.schema_arrow.names}
        names = [by_clean[c] for c in requested if c in by_clean]
    for batch in parquet.iter_batches(batch_size=chunk_rows, columns=names):
        yield batch.to_pandas()


def _text_chunks(source, format, sep, encoding, chunk_rows):
    if format == "jsonl":
        with pd.read_json(source, lines=True, encoding=encoding,
                          chunksize=chunk_rows, dtype=False) as reader:
            yield from reader
        return
    options = {"encoding": encoding, "chunksize": chunk_rows}
    # utf-8-sig drops a byte-order mark at the start of the file.
    if encoding.lower().replace("-", "") == "utf8":
        options["encoding"] = "utf-8-sig"
    # Every column is parsed, and the caller selects the requested ones,
    # because with `usecols` pandas silently drops the extra fields of a
    # malformed row (for example a text with an unquoted comma) that the
    # in-memory reader rejects.
    if sep is None:
        sep = "\t" if format == "tsv" else ","
    if sep == "auto":
        options.update(sep=None, engine="python")
    elif sep == "whitespace" or sep == r"\s+" or (sep.isspace()
                                                    and len(sep) > 1):
        options.update(sep=r"\s+")
    else:
        options.update(sep=sep, quoting=csv.QUOTE_MINIMAL)
    with pd.read_csv(source, **options) as reader:
        yield from reader
