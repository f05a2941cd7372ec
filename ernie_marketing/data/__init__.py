"""Reading, cleaning, splitting and batching of training data."""

from .features import FeatureEncoder
from .labels import (
    MISSING,
    LabelSetVocab,
    LabelVocab,
    TargetScaler,
    build_label_encoder,
    label_encoder_from_schema,
    labelled_rows,
    normalize_label,
)
from .prepare import PreparedData, Split, prepare_data
from .readers import read_table

__all__ = ["MISSING", "FeatureEncoder", "LabelSetVocab", "LabelVocab",
           "PreparedData", "Split", "TargetScaler", "build_label_encoder",
           "label_encoder_from_schema", "labelled_rows", "normalize_label",
           "prepare_data", "read_table"]
