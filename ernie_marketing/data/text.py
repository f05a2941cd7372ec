"""Build the model's input text from one or more columns of a row."""

import string

import numpy as np
import pandas as pd

from ..errors import DataError

# Characters that carry no meaning for the model: the byte-order mark that
# some editors put at the start of a file or field, and zero-width spaces.
_INVISIBLE = dict.fromkeys(map(ord, "\ufeff\u200b\u200c\u200d\u2060"), None)


class _ColumnFormatter(string.Formatter):
    """A `str.format` formatter whose field names are whole column names.

    `str.format` reads `{emp.var.rate}` as attribute access and `{101}` as
    a positional argument; here both name a column of the row.
    """

    def get_field(self, field_name, args, kwargs):
        return kwargs[field_name], field_name


_FORMATTER = _ColumnFormatter()


def template_fields(template):
    """Return the column names used by a `str.format`-style template.

    A field is the whole text between the braces up to an optional `!r`
    or `:spec`, so column names with dots or digits work.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise DataError(f"data.text_template={template!r} is invalid: {exc}; "
                        "write fields as {column} and braces as {{ }}") from None
    fields = []
    for _, name, _, _ in parsed:
        if name is None:
            continue
        if name == "":
            raise DataError(f"data.text_template={template!r} has an empty "
                            "field {}; name a column, e.g. {review}")
        fields.append(name)
    if not fields:
        raise DataError(f"data.text_template={template!r} uses no column, so "
                        "every row would get the same text; add a field such "
                        "as {review}")
    return fields


def text_source_columns(data_config):
    """Return the columns the text is built from."""
    if data_config.text_template is not None:
        return template_fields(data_config.text_template)
    return list(data_config.text_columns)


def build_texts(frame, data_config):
    """Return a Series of cleaned texts and the number of invisible marks removed.

    Missing values become empty strings, so a row with no text still gets a
    prediction; whether training keeps it is the caller's choice.
    """
    columns = text_source_columns(data_config)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"text column(s) {missing} not found; the file has "
                        f"columns {list(frame.columns)}; fix data.text_columns "
                        f"or data.text_template{separator_hint(frame)}")
    encoding = getattr(data_config, "encoding", "utf-8")
    parts = {c: frame[c].map(lambda v, c=c: _to_text(v, c, encoding))
             for c in columns}
    if data_config.text_template is not None:
        template = data_config.text_template
        rows = pd.DataFrame(parts, index=frame.index).to_dict("records")
        texts = pd.Series([_format_row(template, row) for row in rows],
                          index=frame.index, dtype=object)
    else:
        separator = data_config.text_separator
        joined = None
        for c in columns:
            joined = parts[c] if joined is None else _join(joined, parts[c],
                                                           separator)
        texts = joined.astype(object)
    has_marks = texts.map(lambda t: len(t.translate(_INVISIBLE)) != len(t))
    return texts.map(clean_text), int(has_marks.sum())


def separator_hint(frame):
    """Return advice on data.sep when a file was read as one column, else ""."""
    if len(frame.columns) != 1:
        return ""
    name = str(frame.columns[0])
    found = [sep for sep in (";", "\t", "|", ",") if sep in name]
    if not found:
        return ""
    return (f", or set data.sep={found[0]!r} (or data.sep=auto): the file was "
            "read as one column, so its separator is probably not the one "
            "configured")


def clean_text(text):
    """Remove invisible marks and surrounding whitespace."""
    return text.translate(_INVISIBLE).strip()


def _join(left, right, separator):
    both = (left != "") & (right != "")
    return left + both.map({True: separator, False: ""}) + right


def _format_row(template, row):
    try:
        return _FORMATTER.vformat(template, (), row)
    except KeyError as exc:
        raise DataError(f"data.text_template={template!r} uses the field "
                        f"{exc} inside a format spec; fields there are not "
                        "supported, write the spec as fixed text") from None
    except (ValueError, TypeError) as exc:
        raise DataError(f"data.text_template={template!r} cannot format a "
                        f"row: {exc}; fields are text, so number format specs "
                        "such as :d or :.2f do not apply") from None


def _to_text(value, column, encoding):
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, (float, np.floating)):
        # pandas reads an integer column with gaps as floats: 142.0 -> "142".
        if value != value:
            return ""
        if float(value).is_integer() and abs(value) < 1e15:
            return str(int(value))
        return str(float(value))
    if isinstance(value, (bytes, bytearray)):
        # Parquet binary columns arrive as bytes; str() would give "b'...'".
        try:
            return bytes(value).decode(encoding)
        except UnicodeDecodeError as exc:
            raise DataError(f"text column {column!r} contains bytes that are not "
                            f"valid {encoding} (byte {exc.start}); set "
                            "data.encoding to their encoding") from None
    return str(value)
