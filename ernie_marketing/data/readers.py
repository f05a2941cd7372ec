"""Read tables from CSV/TSV, JSONL, Parquet and zipped CSV into pandas."""

import collections
import csv
import json
import logging
import os
import zipfile

import pandas as pd

from ..errors import DataError, UserError

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


def read_table(path, format="auto", sep=None, encoding="utf-8", nrows=None,
               string_columns=(), names=None, header=True):
    """Read a whole table. Text with a leading byte-order mark is handled.

    `sep` is the column separator for csv/tsv: "auto" sniffs it from the
    first lines, and "whitespace" splits on runs of spaces and tabs with
    leading spaces ignored. `nrows` limits the rows read from CSV-like
    files. `string_columns` are read from CSV-like files as text, so ids
    such as "00001" keep their leading zeros. For a CSV-like file without
    a header row, `names` gives the column names, or `header=False` numbers
    the columns from 0.
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
            frame = _read_zip(path, format, sep, encoding, nrows,
                              (string_columns, names, header))
        else:
            frame = _read_file(path, format, sep, encoding, nrows,
                               (string_columns, names, header))
    except UserError:
        raise
    except UnicodeDecodeError as exc:
        if format != "parquet" and _looks_binary(path):
            raise DataError(f"{path} looks like a binary file, not {format} "
                            "text; give a CSV, TSV or JSONL text file, or set "
                            "data.format=parquet for a Parquet file") from None
        raise DataError(f"{path} is not valid {encoding} text (byte "
                        f"{exc.start}); convert it to UTF-8 or set "
                        "data.encoding, e.g. gbk") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"data file {path} has no rows or columns") from None
    except (pd.errors.ParserError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc
        where = ""
        if format == "jsonl" and not path.lower().endswith(".zip"):
            where = _first_invalid_json_line(path, encoding)
        raise DataError(f"cannot parse {path} as {format}: {where}{first}"
                        ) from None
    frame.columns = [_clean_column(c) for c in frame.columns]
    _check_column_names(frame, path)
    if frame.empty:
        raise DataError(f"data file {path} has a header but no rows")
    return frame


def _looks_binary(path):
    """Return True when the file's first 8 KiB contain a NUL byte."""
    with open(path, "rb") as f:
        return b"\0" in f.read(8192)


def _first_invalid_json_line(path, encoding):
    """Return a message prefix naming the first line that is not JSON, or ""."""
    first = True
    with open(path, encoding=encoding, errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            if first and line.lstrip().startswith("["):
                return ("the file is a JSON array, but JSON Lines needs one "
                        "object per line; convert it, e.g. with pandas "
                        "to_json(orient='records', lines=True); ")
            try:
                json.loads(line)
            except ValueError:
                return f"line {number} is not valid JSON ({line.strip()[:60]!r}); "
            first = False
    return ""


def _check_column_names(frame, path):
    """Reject repeated column names and warn about ones pandas renamed.

    Parquet and JSONL readers keep a repeated name, and so does stripping
    spaces from names, so `frame[name]` would return a table. The CSV reader
    renames the second `x` to `x.1` and the first one is used.
    """
    counts = collections.Counter(frame.columns)
    repeated = sorted(name for name, n in counts.items() if n > 1)
    if repeated:
        raise DataError(f"{path} has repeated column names {repeated} (after "
                        "removing surrounding spaces); rename the columns so "
                        "each name is used once")
    names = set(frame.columns)
    renamed = [c for c in frame.columns
               if "." in c and c.rsplit(".", 1)[1].isdigit()
               and c.rsplit(".", 1)[0] in names]
    if renamed:
        logger.warning("%s repeats column names; pandas renamed the repeats "
                       "to %s and the first column of each name is used",
                       path, renamed)


def _read_zip(path, format, sep, encoding, nrows, columns):
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
            return _read_file(f, format, sep, encoding, nrows, columns)


def _read_file(source, format, sep, encoding, nrows, columns=((), None, True)):
    """Read one file; `columns` is (string_columns, names, header) of read_table."""
    string_columns, names, header = columns
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
    # Columns absent from the file are ignored by read_csv's dtype.
    options = {"encoding": encoding, "nrows": nrows,
               "dtype": {name: str for name in string_columns} or None}
    if names is not None:
        options.update(header=None, names=list(names))
    elif not header:
        options.update(header=None)
    if sep == "auto":
        return pd.read_csv(source, sep=None, engine="python", **options)
    if sep == "whitespace" or sep.isspace() and len(sep) > 1 or sep == r"\s+":
        return pd.read_csv(source, sep=r"\s+", **options)
    return pd.read_csv(source, sep=sep, quoting=csv.QUOTE_MINIMAL, **options)


def lacks_header(first_row, reference_columns):
    """Return True when a file whose first line has the cells `first_row`
    looks like the table of `reference_columns` without its header row.

    That is: as many cells as reference columns, every cell a number, and
    at least one reference name that is not a number.
    """
    if len(first_row) != len(reference_columns):
        return False
    return (all(_is_number(c) for c in first_row)
            and not all(_is_number(c) for c in reference_columns))


def _is_number(text):
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def _clean_column(name):
    return str(name).lstrip("\ufeff").strip()
