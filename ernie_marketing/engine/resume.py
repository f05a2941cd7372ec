"""Resumable training state: what the `last` checkpoint adds and how it loads.

The `last` directory is a full checkpoint (see checkpoint.py), so `eval` and
`export` accept it, plus the files needed to continue training exactly:
  model.pdparams      the whole model's state_dict, by structured name
  optimizer.pdopt     AdamW moments and the learning-rate scheduler state,
                      keyed by structured parameter name
  random_state.pkl    Python, NumPy and Paddle random generator states
  trainer_state.json  step, data position, best value, early-stopping
                      counter, loss meter and VisualDL log position
"""

import contextlib
import io
import logging
import math
import os
import pickle
import random
import shutil
import signal
import tempfile
import threading

import numpy as np
import paddle

from ..config import build_config, config_to_dict
from ..errors import ConfigError
from .checkpoint import CONFIG_FILE, is_checkpoint, load_saved_config, read_json

logger = logging.getLogger(__name__)

LAST_DIR = "last"
MODEL_FILE = "model.pdparams"
OPTIMIZER_FILE = "optimizer.pdopt"
RANDOM_FILE = "random_state.pkl"
STATE_FILE = "trainer_state.json"
STATE_VERSION = 1
_STATE_FILES = (MODEL_FILE, OPTIMIZER_FILE, RANDOM_FILE, STATE_FILE)

# Config keys that may differ on resume: they change logging, speed or file
# locations, not the weights. The thread count, the CPU kernels and the
# number of parts per batch can change the last bits of float sums, so exact
# replay also needs the same train.num_threads, train.cpu_fast_kernels and
# train.accumulate_steps.
HARMLESS_KEYS = frozenset({
    "train.logging_steps", "train.progress_bar", "train.num_threads",
    "train.cpu_fast_kernels", "train.accumulate_steps", "train.save_steps",
    "train.resume",
    "output.dir", "output.overwrite",
})
# Config keys that may grow on resume to train longer.
GROWABLE_KEYS = frozenset({"train.max_steps", "train.epochs"})
_ABSENT = object()


def is_resumable(directory):
    """Return True when `directory` is a checkpoint with the training state."""
    return is_checkpoint(directory) and all(
        os.path.isfile(os.path.join(directory, name)) for name in _STATE_FILES)


def find_resume_state(resume, output_dir, is_state=is_resumable,
                      state_files=_STATE_FILES):
    """Return the state directory named by `train.resume`.

    `resume` is True (the `last` state in `output_dir`) or a path: a state
    directory, or a run folder holding `last/`. A `last.old` directory left
    by a save killed between its two renames is used when `last` is absent.
    `is_state(directory)` returns True for a complete state, and
    `state_files` are the file names that the error message lists.
    """
    base = output_dir if resume is True else os.path.abspath(resume)
    candidates = [base, base + ".old"] if resume is not True else []
    candidates += [os.path.join(base, LAST_DIR),
                   os.path.join(base, LAST_DIR + ".old")]
    for candidate in candidates:
        if is_state(candidate):
            if candidate.endswith(".old"):
                logger.warning("resuming from %s: a save was interrupted "
                               "before it replaced %s", candidate,
                               candidate[:-len(".old")])
            return candidate
    if resume is True:
        raise ConfigError(
            f"train.resume=true but output.dir={output_dir} contains no "
            f"resumable state ({LAST_DIR}/ with {STATE_FILE}); start without "
            "train.resume, or set train.resume to a state directory")
    raise ConfigError(
        f"train.resume={resume!r}: no resumable state found there (expected "
        f"{', '.join(state_files)} in it or in its {LAST_DIR}/ directory); "
        "point train.resume at a run folder or its last/ directory")


def check_resume_config(state_dir, config, build=build_config,
                        harmless_keys=HARMLESS_KEYS):
    """Raise ConfigError when `config` changes the result of the saved run.

    Returns the saved config, which `build` reads from its mapping. Keys in
    `harmless_keys` may differ, and train.max_steps and train.epochs may grow.
    """
    import yaml

    try:
        saved = load_saved_config(os.path.join(state_dir, CONFIG_FILE), build)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot resume from {state_dir}: its {CONFIG_FILE} "
                          f"cannot be read ({exc}); point train.resume at "
                          "another state") from None
    old = _flatten(config_to_dict(saved))
    new = _flatten(config_to_dict(config))
    differing = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if before == after or key in harmless_keys:
            continue
        if key in GROWABLE_KEYS and _grows(before, after):
            continue
        if key == "train.amp" and _same_precision(saved, config):
            continue
        differing.append(f"{key} (saved {_show(before)}, now {_show(after)})")
    if differing:
        raise ConfigError(
            f"cannot resume from {state_dir}: the config differs from the "
            f"saved one in {', '.join(differing)}; resume with the saved "
            f"config ({os.path.join(state_dir, CONFIG_FILE)}) or start a new "
            "run in another output.dir")
    return saved


def _same_precision(saved, config):
    """Return True when both configs' train.amp train in one precision here,
    as auto and off do on the CPU."""
    from .amp import resolve_amp

    try:
        return (resolve_amp(saved.train.amp, saved.train.loss_weighting.method)
                == resolve_amp(config.train.amp,
                               config.train.loss_weighting.method))
    except ConfigError:
        return False


def _flatten(value, prefix=""):
    """Map dotted keys (`tasks[0].name`) to the leaves of a nested config."""
    if isinstance(value, dict):
        items = {}
        for key, child in value.items():
            items.update(_flatten(child, f"{prefix}.{key}" if prefix else key))
        return items
    if isinstance(value, list) and any(isinstance(v, dict) for v in value):
        items = {}
        for i, child in enumerate(value):
            items.update(_flatten(child, f"{prefix}[{i}]"))
        return items
    return {prefix: value}


def _grows(before, after):
    """Return True when a step or epoch limit is kept or raised; null is no limit."""
    if before is _ABSENT or after is _ABSENT:
        return False
    before = math.inf if before is None else before
    after = math.inf if after is None else after
    return after >= before


def _show(value):
    if value is _ABSENT:
        return "absent"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# Output folder and VisualDL log -------------------------------------------


def prepare_output_dir(output, resume_dir, result_names):
    """Create output.dir, checking what an earlier run left in it.

    A folder that contains one of `result_names` (or its `.old` copy) is
    reused only to resume the state inside it (`resume_dir`) or with
    output.overwrite, which deletes its old `last` state so that a later
    resume cannot pick it up. Returns the absolute path.
    """
    directory = os.path.abspath(output.dir)
    resuming_here = (resume_dir is not None
                     and os.path.dirname(resume_dir) == directory)
    if resuming_here and output.overwrite:
        raise ConfigError(f"train.resume continues the run in output.dir="
                          f"{output.dir!r}, but output.overwrite=true would "
                          "replace it; set only one of them")
    # A save interrupted between its two renames leaves only NAME.old.
    earlier = [os.path.join(directory, name + suffix)
               for name in result_names for suffix in ("", ".old")]
    for candidate in earlier:
        if (os.path.exists(candidate) and not output.overwrite
                and not resuming_here):
            raise ConfigError(f"output.dir={output.dir!r} already contains "
                              f"{candidate} from an earlier run; choose "
                              "another output.dir, set train.resume=true to "
                              "continue that run, or set "
                              "output.overwrite=true to replace it")
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ConfigError(f"output.dir={output.dir!r} is a file, not a "
                          "directory; choose another output.dir")
    try:
        os.makedirs(directory, exist_ok=True)
        # Probe with a real file, because os.access run as root ignores
        # permission bits and reports /proc as writable.
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot write to output.dir={output.dir!r}: "
                          f"{exc.strerror or exc}; choose a writable "
                          "directory") from None
    if output.overwrite:
        for name in (LAST_DIR, LAST_DIR + ".old"):
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
    return directory


def open_vdl_writer(output_dir, position=None, resume_dir=None):
    """Open a VisualDL LogWriter on `output_dir/vdl`.

    `position` is the (file name, size) of the record file that the resumed
    state in `resume_dir` saved. That file, copied from beside `resume_dir`
    when it is missing, is cut to the saved size and appended to. Without
    it, or when the file is shorter, the writer starts a new file.
    """
    from visualdl import LogWriter

    logdir = os.path.join(output_dir, "vdl")
    file_name = ""
    if position is not None:
        name, size = position
        path = os.path.join(logdir, name)
        source = os.path.join(os.path.dirname(resume_dir), "vdl", name)
        if not os.path.exists(path) and os.path.isfile(source):
            # Resuming into another folder continues a copy of the log.
            os.makedirs(logdir, exist_ok=True)
            shutil.copyfile(source, path)
        if os.path.isfile(path) and os.path.getsize(path) >= size:
            # Records after the saved step are cut, because the resumed
            # run writes those steps again.
            os.truncate(path, size)
            file_name = name
        else:
            logger.warning("VisualDL record file %s is missing or shorter "
                           "than when the state was saved; the resumed "
                           "run writes a new one", path)
    # VisualDL prints a notice on stdout when it appends to a file.
    with contextlib.redirect_stdout(io.StringIO()):
        return LogWriter(logdir=logdir, file_name=file_name)


# Random generators -------------------------------------------------------


def capture_random_state():
    """Return the states of Python's, NumPy's and Paddle's global generators."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "paddle": paddle.get_rng_state()}
    if paddle.is_compiled_with_cuda():
        state["paddle_cpu"] = paddle.get_rng_state("cpu")
    return state


def restore_random_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    paddle.set_rng_state(state["paddle"])
    if "paddle_cpu" in state:
        paddle.set_rng_state(state["paddle_cpu"], "cpu")


# Optimizer ---------------------------------------------------------------


def optimizer_state_by_structure(optimizer, model):
    """Return the optimizer state_dict keyed by structured parameter names.

    Paddle keys accumulators by the parameter's generated name (linear_3.w_0),
    which depends on how many layers the process built before, so a state
    saved by one process would not match the names in another.
    """
    names = {p.name: n for n, p in model.named_parameters()}
    return {_rename(key, names): value
            for key, value in optimizer.state_dict().items()}


def load_optimizer_state(optimizer, model, state, path):
    """Load a state from `optimizer_state_by_structure` into `optimizer`."""
    names = {n: p.name for n, p in model.named_parameters()}
    renamed = {}
    for key, value in state.items():
        structured, sep, suffix = key.partition("/")
        if key in ("LR_Scheduler", "master_weights"):
            renamed[key] = value
        elif sep and structured in names:
            renamed[f"{names[structured]}_{suffix}"] = value
        else:
            raise ConfigError(f"{path} contains optimizer state for {key!r}, "
                              "which is not a parameter of this model; the "
                              "state belongs to another model")
    optimizer.set_state_dict(renamed)


def small_optimizer_state(optimizer, parameters):
    """Return an optimizer's moments over a few parameters as JSON lists.

    For the learned loss weights, which live outside the model. Keys name
    the parameter by its position in `parameters`; the learning-rate
    schedule is left out because it is the model optimizer's.
    """
    names = {p.name: f"param{i}" for i, p in enumerate(parameters)}
    state = {}
    for key, value in optimizer.state_dict().items():
        if key in ("LR_Scheduler", "master_weights"):
            continue
        array = np.asarray(value.numpy())
        state[_rename(key, names)] = {"shape": list(array.shape),
                                      "values": array.ravel().tolist()}
    return state


def load_small_optimizer_state(optimizer, parameters, state):
    """Load a `small_optimizer_state` into `optimizer`."""
    names = {f"param{i}": p.name for i, p in enumerate(parameters)}
    renamed = {}
    for key, entry in state.items():
        position, _, suffix = key.partition("/")
        array = np.asarray(entry["values"], dtype="float32")
        renamed[f"{names[position]}_{suffix}"] = paddle.to_tensor(
            array.reshape(entry["shape"]))
    optimizer.set_state_dict(renamed)


def _rename(key, names):
    if key in ("LR_Scheduler", "master_weights"):
        return key
    # The longest match wins, so linear_1.w_0 is not taken for linear_1.w_01.
    matches = [name for name in names if key.startswith(name + "_")]
    if not matches:
        raise ValueError(f"optimizer state key {key!r} matches no parameter")
    name = max(matches, key=len)
    return f"{names[name]}/{key[len(name) + 1:]}"


# Saving and loading --------------------------------------------------------


def write_training_state(directory, model, optimizer, state,
                         random_state=None):
    """Write the resume files of one checkpoint into `directory`.

    `random_state` defaults to this process's `capture_random_state()`.
    """
    from .checkpoint import write_json

    paddle.save(model.state_dict(), os.path.join(directory, MODEL_FILE))
    paddle.save(optimizer_state_by_structure(optimizer, model),
                os.path.join(directory, OPTIMIZER_FILE))
    if random_state is None:
        random_state = capture_random_state()
    with open(os.path.join(directory, RANDOM_FILE), "wb") as f:
        pickle.dump(random_state, f, protocol=4)
    write_json(os.path.join(directory, STATE_FILE),
               dict(state, version=STATE_VERSION))


def read_training_state(directory):
    """Return (model state, optimizer state, random state, trainer state).

    A missing or unreadable file raises ConfigError naming the directory.
    """
    try:
        state = read_json(os.path.join(directory, STATE_FILE))
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"{STATE_FILE} has version "
                             f"{state.get('version')!r}, expected "
                             f"{STATE_VERSION}")
        model_state = paddle.load(os.path.join(directory, MODEL_FILE))
        optimizer_state = paddle.load(os.path.join(directory, OPTIMIZER_FILE))
        with open(os.path.join(directory, RANDOM_FILE), "rb") as f:
            random_state = pickle.load(f)
    except (OSError, ValueError, KeyError, EOFError, RuntimeError,
            pickle.UnpicklingError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(f"cannot resume from {directory}: the state is "
                          f"damaged or incomplete ({type(exc).__name__}: "
                          f"{detail}); point train.resume at another state or "
                          "train again") from None
    return model_state, optimizer_state, random_state, state


def load_model_state(model, model_state, directory):
    missing, unexpected = model.set_state_dict(model_state)
    if missing or unexpected:
        raise ConfigError(f"cannot resume from {directory}: its {MODEL_FILE} "
                          f"does not fit this model (missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]}); the state belongs to "
                          "another model")


# Ctrl-C --------------------------------------------------------------------


class InterruptRequest:
    """Turn the first SIGINT into a request to stop at the next step boundary.

    The training loop checks `requested` after each step, so the state it
    saves is never halfway through an optimizer update. A second SIGINT
    raises KeyboardInterrupt at once. With `terminate`, SIGTERM requests a
    stop too, and repeated SIGTERMs are ignored: paddle.distributed.launch
    turns a Ctrl-C into up to three SIGTERMs to each training process, then
    kills the ones still running after 30 seconds. The handlers are
    installed only in the main thread, because Python delivers signals
    there alone.
    """

    def __init__(self, terminate=False):
        self.requested = False
        self._signals = ((signal.SIGINT, signal.SIGTERM) if terminate
                         else (signal.SIGINT,))
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in self._signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}
        return False

    def _handle(self, signum, frame):
        if self.requested:
            if signum == signal.SIGTERM:
                return
            raise KeyboardInterrupt
        self.requested = True
        if signum == signal.SIGTERM:
            logger.warning("SIGTERM received: stopping after the current step "
                           "and saving the resumable state")
            return
        logger.warning("interrupt received: stopping after the current step "
                       "and saving the resumable state; press Ctrl-C again to "
                       "stop without saving")
