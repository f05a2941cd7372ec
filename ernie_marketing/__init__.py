"""Multi-task learning on a shared ERNIE encoder for marketing decisions."""

from .runtime import set_math_library_defaults

# Must run before Paddle is imported anywhere in the process.
set_math_library_defaults()

__version__ = "0.1.0"
