"""Typed run configuration loaded from YAML."""

from .loader import build_config, config_to_dict, load_config, save_config
from .schema import (
                     Config,
                     DataConfig,
                     EncoderConfig,
                     ModelConfig,
                     OutputConfig,
                     TaskConfig,
                     TokenizerConfig,
                     TrainConfig,
                     task_metrics,
)

__all__ = [
    "Config", "DataConfig", "EncoderConfig", "ModelConfig", "OutputConfig",
    "TaskConfig", "TokenizerConfig", "TrainConfig", "build_config",
    "config_to_dict", "load_config", "save_config", "task_metrics",
]
