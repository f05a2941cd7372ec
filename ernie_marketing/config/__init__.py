"""Typed run configuration loaded from YAML."""

from .loader import build_config, config_to_dict, load_config, save_config
from .schema import (
                     Config,
                     DataConfig,
                     EncoderConfig,
                     FeatureConfig,
                     ModelConfig,
                     OutputConfig,
                     TaskConfig,
                     TokenizerConfig,
                     TrainConfig,
                     lower_is_better,
                     mean_metric,
                     task_metrics,
)

__all__ = [
    "Config", "DataConfig", "EncoderConfig", "FeatureConfig", "ModelConfig",
    "OutputConfig", "TaskConfig", "TokenizerConfig", "TrainConfig",
    "build_config", "config_to_dict", "load_config", "lower_is_better",
    "mean_metric", "save_config", "task_metrics",
]
