"""Process setup: math-library settings, threads, seeds and logging."""

import ctypes
import logging
import os
import platform
import random
import sys

import numpy as np

logger = logging.getLogger(__name__)


def cpu_vendor():
    """Return the CPU vendor string from /proc/cpuinfo, or "" where unknown."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def set_math_library_defaults():
    """Set environment defaults that must be in place before Paddle loads.

    Intel MKL takes a slow generic code path on AMD processors unless
    MKL_DEBUG_CPU_TYPE=5 selects its AVX2 kernels; on a 2-core AMD EPYC this
    made Paddle's float32 matmul 2.5x faster (measured with paddle 3.3.1).
    A value the user already set is kept.
    """
    if "paddle" in sys.modules:
        return
    if cpu_vendor() == "AuthenticAMD":
        os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")


# mallopt parameters from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_MALLOC_ENV_PREFIXES = ("MALLOC_", "GLIBC_TUNABLES")


def keep_freed_memory():
    """Make glibc's malloc keep freed memory for reuse; return whether it did.

    Paddle's CPU tensors take their memory from malloc. glibc serves large
    blocks (above a threshold that starts at 128 KiB and grows to at most
    32 MiB) with new mmap pages and unmaps them on free, so the kernel
    faults in and zeroes every large operator output again. With mmap off
    and trimming only above 2 GiB of free memory, freed blocks are reused.
    NOTE: one timing on a 2-core AMD EPYC (paddle 3.3.1), not kept as a
    benchmark, found an add of two [32, 128, 3072] float32 tensors about 5
    times faster and a training step of the ernie-3.0-medium-zh shape about
    13% faster; benchmarks/bench_training.py measures this setting only
    together with the CPU kernels. The process keeps most of its peak
    memory until it exits.

    Does nothing and returns False unless the C library is glibc, or when
    the environment already sets glibc malloc options.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(name.startswith(_MALLOC_ENV_PREFIXES) for name in os.environ):
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(_M_MMAP_MAX, 0)
                and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def set_num_threads(num_threads=None):
    """Use `num_threads` CPU threads for Paddle's math (default: every core)."""
    import paddle

    if num_threads is None:
        num_threads = len(os.sched_getaffinity(0)) if hasattr(
            os, "sched_getaffinity") else (os.cpu_count() or 1)
    paddle.base.core.set_num_threads(num_threads)
    return num_threads


def set_seed(seed):
    import paddle

    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)


def setup_logging(log_file=None, level=logging.INFO):
    """Send this package's log records to stderr and, if given, to a file.

    Handlers go on the package logger, so libraries that configure the
    root logger at import time (PaddleNLP does) neither duplicate nor
    reformat these lines.
    """
    package_logger = logging.getLogger("ernie_marketing")
    package_logger.setLevel(level)
    package_logger.propagate = False
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                  "%Y-%m-%d %H:%M:%S")
    for handler in list(package_logger.handlers):
        package_logger.removeHandler(handler)
        handler.close()
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(formatter)
    package_logger.addHandler(stream)
    _quiet_paddlenlp()
    if log_file:
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(formatter)
        package_logger.addHandler(file_handler)


def _quiet_paddlenlp():
    """Drop PaddleNLP's per-file "saved in ..." lines; warnings still show."""
    # Paddle sets the root logger to INFO, so `datasets` (imported by
    # PaddleNLP) would print "PyTorch version ... available" when torch is
    # installed, before it sets its own logger to WARNING.
    logging.getLogger("datasets").setLevel(logging.WARNING)
    try:
        from paddlenlp.utils.log import logger as paddlenlp_logger
    except ImportError:
        return
    paddlenlp_logger.set_level("WARNING")


def visualdl_command():
    """Return how to start VisualDL: the one beside this Python, if any."""
    beside = os.path.join(os.path.dirname(sys.executable), "visualdl")
    return beside if os.path.isfile(beside) else "visualdl"
