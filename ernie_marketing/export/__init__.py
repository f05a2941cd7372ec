"""Export a checkpoint to a self-contained Paddle Inference directory."""

from .exporter import export_model, resolve_export_config

__all__ = ["export_model", "resolve_export_config"]
