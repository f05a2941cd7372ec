"""Write prediction tables as CSV, JSONL or Parquet, never half-written."""

import os

from ..errors import ConfigError

_FORMATS_BY_EXTENSION = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def output_format(path):
    """Return the table format for an output path from its extension."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in _FORMATS_BY_EXTENSION:
        allowed = ", ".join(sorted(_FORMATS_BY_EXTENSION))
        raise ConfigError(f"cannot tell the output format of {path} from its "
                          f"extension; use one of {allowed}")
    return _FORMATS_BY_EXTENSION[ext]


def check_output_path(path):
    """Raise ConfigError unless `path` can receive a table.

    A missing output folder is created, as train and export create theirs.
    """
    output_format(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the output folder {folder}: "
                              f"{exc.strerror}; choose another --output"
                              ) from None
    if os.path.isdir(path):
        raise ConfigError(f"output {path} is a directory; give a file name")
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"cannot write to the output folder {folder}: "
                          "permission denied; choose another --output")


def write_table(frame, path):
    """Write `frame` to `path` through a temporary file in the same folder.

    The rename replaces the file in one step, so a reader never sees a
    partial table and a failure leaves any earlier file in place.
    """
    check_output_path(path)
    fmt = output_format(path)
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.tmp-{os.getpid()}")
    try:
        if fmt == "csv":
            frame.to_csv(tmp, index=False, encoding="utf-8")
        elif fmt == "tsv":
            frame.to_csv(tmp, index=False, sep="\t", encoding="utf-8")
        elif fmt == "jsonl":
            frame.to_json(tmp, orient="records", lines=True, force_ascii=False)
        else:
            frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise ConfigError(f"cannot write the output {path}: "
                          f"{exc.strerror or exc}; "
                          "earlier contents are kept") from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(path):
    if os.path.exists(path):
        os.remove(path)
