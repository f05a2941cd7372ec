"""The shared-encoder multi-task model."""

from .multitask import (
                        MultiTaskErnie,
                        TaskHead,
                        build_encoder,
                        load_encoder,
                        num_outputs,
)

__all__ = ["MultiTaskErnie", "TaskHead", "build_encoder", "load_encoder",
           "num_outputs"]
