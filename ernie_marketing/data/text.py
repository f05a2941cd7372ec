"""Build the model's input text from one or more columns of a row."""

import string

import pandas as pd

from ..errors import DataError

# Characters that carry no meaning for the model: the byte-order mark that
# some editors put at the start of a file or field, and zero-width spaces.
_INVISIBLE = dict.fromkeys(map(ord, "\ufeff\u200b\u200c\u200d\u2060"), None)


def template_fields(template):
    """Return the field names used by a `str.format` template."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise DataError(f"data.text_template={template!r} is invalid: {exc}; "
                        "write fields as {column} and braces as {{ }}") from None
    fields = []
    for _, name, _, _ in parsed:
        if name is None:
            continue
        if not name.isidentifier():
            raise DataError(f"data.text_template field {{{name}}} is invalid: "
                            "use a column name such as {review}")
        fields.append(name)
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
                        "or data.text_template")
    parts = {c: frame[c].map(_to_text) for c in columns}
    if data_config.text_template is not None:
        template = data_config.text_template
        rows = pd.DataFrame(parts, index=frame.index).to_dict("records")
        texts = pd.Series([template.format(**row) for row in rows],
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


def clean_text(text):
    """Remove invisible marks and surrounding whitespace."""
    return text.translate(_INVISIBLE).strip()


def _join(left, right, separator):
    both = (left != "") & (right != "")
    return left + both.map({True: separator, False: ""}) + right


def _to_text(value):
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if value is pd.NA:
        return ""
    return str(value)
