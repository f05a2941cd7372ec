"""Reading, cleaning, splitting and batching of training data."""

from .labels import MISSING, LabelVocab, normalize_label
from .prepare import PreparedData, Split, prepare_data
from .readers import read_table

__all__ = ["MISSING", "LabelVocab", "PreparedData", "Split", "normalize_label",
           "prepare_data", "read_table"]
