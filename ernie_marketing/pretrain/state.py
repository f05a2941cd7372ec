"""The output folder of a pretraining run and its resumable state.

output.dir contains:
  model/        the result: a PaddleNLP model directory (config.json,
                model_state.pdparams of the base ErnieModel, tokenizer files,
                mlm_head.pdparams), written at the end
  last/         the resumable state: model.pdparams, optimizer.pdopt,
                random_state.pkl, trainer_state.json, config.yaml, and
                encoder/, a model directory of the latest weights
  config.yaml   the resolved config
  metrics.json  held-out MLM loss and accuracy, throughput, corpus counts
  pretrain.log  the log, appended to by each run
  vdl/          VisualDL records
"""

import logging
import os

from ..config import save_config
from ..engine import resume as engine_resume
from ..engine.checkpoint import (
    remove_temporary_copies,
    settle_old_copy,
    staged_dir,
)
from ..engine.resume import (
    MODEL_FILE,
    OPTIMIZER_FILE,
    RANDOM_FILE,
    STATE_FILE,
    write_training_state,
)
from ..errors import UserError
from .config import build_pretrain_config
from .model import write_model_files

logger = logging.getLogger(__name__)

MODEL_DIR = "model"
LAST_DIR = "last"
ENCODER_DIR = "encoder"
CONFIG_FILE = "config.yaml"
_STATE_FILES = (MODEL_FILE, OPTIMIZER_FILE, RANDOM_FILE, STATE_FILE, CONFIG_FILE)
# Config keys that may differ on resume: they change logging, evaluation,
# speed or file locations, not the weights.
HARMLESS_KEYS = frozenset({
    "train.logging_steps", "train.progress_bar", "train.num_threads",
    "train.save_steps", "train.eval_steps", "train.eval_batch_size",
    "train.resume", "output.dir", "output.overwrite",
})


def is_resumable(directory):
    return all(os.path.isfile(os.path.join(directory, name))
               for name in _STATE_FILES)


def find_resume_state(resume, output_dir):
    """Return the pretraining state directory that `train.resume` names."""
    return engine_resume.find_resume_state(resume, output_dir, is_resumable,
                                           _STATE_FILES)


def check_resume_config(state_dir, config):
    """Raise ConfigError when `config` would change the result of the saved run."""
    engine_resume.check_resume_config(state_dir, config,
                                      build_pretrain_config, HARMLESS_KEYS)


def prepare_output_dir(output, resume_dir=None):
    """Create output.dir, refusing to replace an earlier run's results.

    A folder with a model or state is reused only to resume the state in
    it or with output.overwrite, which deletes the old state. Partial saves
    of a killed run are cleaned up.
    """
    directory = engine_resume.prepare_output_dir(output, resume_dir,
                                                 (MODEL_DIR, LAST_DIR))
    settle_old_copy(os.path.join(directory, LAST_DIR), is_resumable)
    remove_temporary_copies(directory, (LAST_DIR, MODEL_DIR))
    return directory


def save_state(directory, model, optimizer, tokenizer, config, state):
    """Write the resumable state to `directory`, replacing the older one atomically.

    A failed write raises UserError and leaves the previous state in place.
    """
    try:
        with staged_dir(directory) as tmp:
            write_training_state(tmp, model, optimizer, state)
            save_config(config, os.path.join(tmp, CONFIG_FILE))
            write_model_files(os.path.join(tmp, ENCODER_DIR), model, tokenizer)
    except OSError as exc:
        previous = ("the previous state is kept" if is_resumable(directory)
                    else "no earlier state exists")
        raise UserError(f"cannot write the resumable state to {directory} at "
                        f"step {state['step']}: {exc.strerror or exc}; free "
                        f"disk space or choose another output.dir; {previous}"
                        ) from None
