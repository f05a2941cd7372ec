"""Read tables from CSV/TSV, JSONL, Parquet and zipped CSV into pandas."""

import csv
import logging
import os
import zipfile

import pandas as pd

from ..errors import DataError

logger = logging.getLogger(__name__)

_FORMATS_BY_EXTENSION = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".txt": "csv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def detect_format(path):
    """Return the table format implied by a file name, looking inside `.zip`."""
    name = path[:-4] if path.lower().endswith(".zip") else path
    ext = os.path.splitext(name)[1].lower()
    if ext in _FORMATS_BY_EXTENSION:
        return _FORMATS_BY_EXTENSION[ext]
    if path.lower().endswith(".zip"):
        return "csv"
    raise DataError(f"cannot tell the format of {path} from its extension; set "
                    "data.format to csv, tsv, jsonl or parquet")


def read_table(path, format="auto", sep=None, encoding="utf-8", nrows=None):
    """Read a whole table. Text with a leading byte-order mark is handled.

    `sep` is the column separator for csv/tsv ("auto" sniffs it from the
    first lines); `nrows` limits the rows read from CSV-like files.
    """
    if not os.path.exists(path):
        raise DataError(f"data file not found: {path}")
    if os.path.isdir(path):
        raise DataError(f"{path} is a directory; give the path of a file")
    if os.path.getsize(path) == 0:
        raise DataError(f"data file {path} is empty")
    if format == "auto":
        format = detect_format(path)
    try:
        if path.lower().endswith(".zip"):
            frame = _read_zip(path, format, sep, encoding, nrows)
        else:
            frame = _read_file(path, format, sep, encoding, nrows)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not valid {encoding} text (byte "
                        f"{exc.start}); convert it to UTF-8 or set "
                        "data.encoding, e.g. gbk") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"data file {path} has no rows or columns") from None
    except (pd.errors.ParserError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc
        raise DataError(f"cannot parse {path} as {format}: {first}") from None
    frame.columns = [_clean_column(c) for c in frame.columns]
    if frame.empty:
        raise DataError(f"data file {path} has a header but no rows")
    return frame


def _read_zip(path, format, sep, encoding, nrows):
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise DataError(f"{path} is not a valid zip archive") from None
    with archive:
        members = [m for m in archive.namelist()
                   if not m.endswith("/") and not m.startswith("__MACOSX")]
        if len(members) != 1:
            raise DataError(f"{path} must hold exactly one data file, found "
                            f"{len(members)}: {members[:10]}; unzip it and "
                            "point data.train_path at the file")
        with archive.open(members[0]) as f:
            return _read_file(f, format, sep, encoding, nrows)


def _read_file(source, format, sep, encoding, nrows):
    if format == "parquet":
        frame = pd.read_parquet(source)
        return frame.head(nrows) if nrows else frame
    if format == "jsonl":
        frame = pd.read_json(source, lines=True, encoding=encoding,
                             nrows=nrows, dtype=False)
        return frame
    if sep is None:
        sep = "\t" if format == "tsv" else ","
    # utf-8-sig drops a byte-order mark at the start of the file.
    if encoding.lower().replace("-", "") == "utf8":
        encoding = "utf-8-sig"
    if sep == "auto":
        return pd.read_csv(source, sep=None, engine="python",
                           encoding=encoding, nrows=nrows)
    if sep.isspace() and len(sep) > 1 or sep == r"\s+":
        return pd.read_csv(source, sep=r"\s+", encoding=encoding, nrows=nrows)
    return pd.read_csv(source, sep=sep, encoding=encoding, nrows=nrows,
                       quoting=csv.QUOTE_MINIMAL)


def _clean_column(name):
    return str(name).lstrip("\ufeff").strip()
