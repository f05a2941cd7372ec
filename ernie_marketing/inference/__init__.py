"""Prediction with exported models through Paddle Inference."""

from .postprocess import decode_outputs, output_columns
from .predict_file import predict_file
from .predictor import Predictor

__all__ = ["Predictor", "decode_outputs", "output_columns", "predict_file"]
