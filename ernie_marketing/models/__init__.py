"""The shared-encoder multi-task model."""

from .fusion import FeatureFusion
from .multitask import (
                        MultiTaskErnie,
                        TaskHead,
                        build_encoder,
                        load_encoder,
                        num_outputs,
)

__all__ = ["FeatureFusion", "MultiTaskErnie", "TaskHead", "build_encoder",
           "load_encoder", "num_outputs"]
