"""Predict every row of a table file and write the results to another."""

import codecs
import logging
import os
import time

from ..data.readers import read_table
from ..errors import ConfigError
from .predictor import (
    Predictor,
    frame_inputs,
    join_ids,
    read_export,
    resolve_settings,
)
from .writers import check_output_path, write_table

logger = logging.getLogger(__name__)


def predict_file(export_dir, input_path, output_path, sep=None,
                 encoding="utf-8", progress=False, **predictor_options):
    """Write predictions for each row of `input_path` to `output_path`.

    The input is read like training data (CSV/TSV, JSONL, Parquet, zipped
    CSV); the output format follows the extension of `output_path`. Rows keep
    the input order. `predictor_options` go to `Predictor`. Returns a summary
    with the row count and the speed.
    """
    check_output_path(output_path)
    if _same_file(input_path, output_path):
        raise ConfigError(f"--output {output_path} is the input file; choose "
                          "another name so the input is not overwritten")
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ConfigError(f"--encoding {encoding!r} is not a known text "
                          "encoding; use e.g. utf-8, gbk or latin-1") from None
    resolve_settings(**predictor_options)
    frame = read_table(input_path, sep=sep, encoding=encoding)
    # Check the columns before the model loads, so a bad file fails fast.
    texts, ids = frame_inputs(frame, read_export(export_dir)[1]["preprocess"])
    predictor = Predictor(export_dir, **predictor_options)
    start = time.perf_counter()
    predictions = predictor.predict_texts(texts, progress,
                                          *predictor.encode_features(frame))
    result = join_ids(ids, predictions)
    seconds = time.perf_counter() - start
    write_table(result, output_path)
    summary = {"rows": len(result), "seconds": round(seconds, 3),
               "texts_per_second": round(len(result) / max(seconds, 1e-9), 1),
               "output": output_path, "settings": predictor.describe()}
    logger.info("predicted %d rows of %s in %.1f s (%.1f texts/s) to %s",
                len(result), input_path, seconds, summary["texts_per_second"],
                output_path)
    return summary


def _same_file(first, second):
    return (os.path.exists(first) and os.path.exists(second)
            and os.path.samefile(first, second))
