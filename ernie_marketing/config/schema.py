"""Typed config sections. Field types and defaults are the schema.

`loader.py` checks a YAML mapping against these classes; each class's
`validate` rejects values that have the right type but cannot work.
"""

import codecs
from dataclasses import dataclass, field
from typing import List, Literal, Optional, Union

from ..errors import ConfigError

TASK_TYPES = ("multiclass", "binary")
LabelValue = Union[int, str]
# NumPy's and Paddle's seeds are unsigned 32-bit integers.
MAX_SEED = 2**32 - 1


def _require(condition, path, value, allowed):
    if not condition:
        raise ConfigError(f"{path}={value!r} is invalid: expected {allowed}")


def _require_seed(path, value):
    _require(0 <= value <= MAX_SEED, path, value,
             f"an integer from 0 to {MAX_SEED}")


@dataclass
class DataConfig:
    """Data files, and the rule that turns each row into a text."""

    train_path: str
    valid_path: Optional[str] = None
    test_path: Optional[str] = None
    # File format; "auto" picks it from the extension.
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet"] = "auto"
    # Column separator for CSV-like files; "auto" sniffs it.
    sep: Optional[str] = None
    encoding: str = "utf-8"
    # Text is the given columns joined by `text_separator`, or `text_template`
    # formatted with the row's fields, e.g. "{title}: {review}".
    text_columns: List[str] = field(default_factory=list)
    text_template: Optional[str] = None
    text_separator: str = " "
    id_column: Optional[str] = None
    # Read at most this many rows, sampled stratified by the first task.
    max_rows: Optional[int] = None
    # Train/validation/test fractions used when only train_path is given.
    split: List[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    seed: int = 0
    drop_duplicates: bool = True
    drop_empty_text: bool = True
    # What to do with an evaluation label that training never saw:
    # "error" stops, "ignore" masks it for that task and counts it.
    unknown_label: Literal["error", "ignore"] = "error"

    def validate(self, path):
        has_columns = bool(self.text_columns)
        _require(
            has_columns != (self.text_template is not None),
            f"{path}.text_columns",
            self.text_columns,
            "exactly one of data.text_columns and data.text_template",
        )
        _require(
            self.max_rows is None or self.max_rows > 0,
            f"{path}.max_rows",
            self.max_rows,
            "a positive number of rows or null",
        )
        _require(
            len(self.split) == 3
            and all(0 <= f <= 1 for f in self.split)
            and abs(sum(self.split) - 1) < 1e-6
            and self.split[0] > 0,
            f"{path}.split",
            self.split,
            "three fractions [train, valid, test] that sum to 1",
        )
        _require_seed(f"{path}.seed", self.seed)
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            _require(False, f"{path}.encoding", self.encoding,
                     "a Python codec name such as utf-8, gbk or latin-1")
        if self.sep is not None:
            _require(
                self.sep == "auto" or len(self.sep) >= 1,
                f"{path}.sep",
                self.sep,
                'a separator such as ",", "\\t", ";" or "auto"',
            )


@dataclass
class TokenizerConfig:
    """Vocabulary source and maximum text length in tokens."""

    # A PaddleNLP model name or a directory; defaults to model.name_or_path.
    name_or_path: Optional[str] = None
    # A vocabulary file with one token per line or "token<TAB>id" lines.
    vocab_file: Optional[str] = None
    # Build a character vocabulary from the training text (for training
    # from scratch without downloads).
    build_vocab: bool = False
    vocab_min_freq: int = 1
    vocab_max_size: int = 20000
    max_length: int = 128
    do_lower_case: bool = True

    def validate(self, path):
        _require(
            self.max_length >= 3,
            f"{path}.max_length",
            self.max_length,
            "at least 3 tokens ([CLS], one token, [SEP])",
        )
        _require(
            self.vocab_min_freq >= 1,
            f"{path}.vocab_min_freq",
            self.vocab_min_freq,
            "an integer >= 1",
        )
        _require(
            self.vocab_max_size >= 10,
            f"{path}.vocab_max_size",
            self.vocab_max_size,
            "an integer >= 10",
        )
        sources = [self.name_or_path, self.vocab_file, self.build_vocab or None]
        _require(
            sum(s is not None for s in sources) <= 1,
            path,
            {"name_or_path": sources[0], "vocab_file": sources[1],
             "build_vocab": self.build_vocab},
            "at most one of name_or_path, vocab_file and build_vocab",
        )


@dataclass
class EncoderConfig:
    """ERNIE architecture used when training from scratch."""

    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    hidden_act: Literal["gelu", "relu"] = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 4

    def validate(self, path):
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings",
                     "type_vocab_size"):
            value = getattr(self, name)
            _require(value >= 1, f"{path}.{name}", value, "an integer >= 1")
        _require(
            self.hidden_size % self.num_attention_heads == 0,
            f"{path}.hidden_size",
            self.hidden_size,
            f"a multiple of num_attention_heads ({self.num_attention_heads})",
        )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            _require(0 <= value < 1, f"{path}.{name}", value, "0 <= p < 1")


@dataclass
class ModelConfig:
    """The shared encoder and how its output feeds the task heads."""

    # A PaddleNLP model name (e.g. ernie-3.0-medium-zh) or a local directory
    # with config.json and weights; null trains `encoder` from scratch.
    name_or_path: Optional[str] = None
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    pooling: Literal["cls", "mean"] = "cls"
    # A checkpoint directory to evaluate or export.
    checkpoint: Optional[str] = None

    def validate(self, path):
        self.encoder.validate(f"{path}.encoder")


@dataclass
class TaskConfig:
    """One prediction target and its head."""

    name: str
    type: Literal["multiclass", "binary"]
    label_column: str
    weight: float = 1.0
    # Width of an optional hidden layer in the head; 0 means a linear head.
    hidden_size: int = 0
    dropout: float = 0.1
    # The label that counts as positive for a binary task; needed only when
    # the two values are not 0/1, false/true or no/yes.
    positive_label: Optional[LabelValue] = None

    def validate(self, path):
        _require(
            self.name.isidentifier(),
            f"{path}.name",
            self.name,
            "a name of letters, digits and underscores",
        )
        _require(self.weight >= 0, f"{path}.weight", self.weight, "a weight >= 0")
        _require(
            self.hidden_size >= 0,
            f"{path}.hidden_size",
            self.hidden_size,
            "an integer >= 0",
        )
        _require(0 <= self.dropout < 1, f"{path}.dropout", self.dropout,
                 "0 <= p < 1")
        _require(
            self.positive_label is None or self.type == "binary",
            f"{path}.positive_label",
            self.positive_label,
            "null unless the task type is binary",
        )


@dataclass
class TrainConfig:
    """Optimisation, evaluation and stopping."""

    epochs: int = 3
    # Stop after this many optimizer steps, even before `epochs` are done.
    max_steps: Optional[int] = None
    batch_size: int = 32
    eval_batch_size: int = 64
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    # Evaluate every this many steps and at the end; 0 means once per epoch.
    eval_steps: int = 0
    logging_steps: int = 20
    # Model selection metric: "<task>.<metric>" or "mean" (the mean of each
    # task's first metric: macro_f1 for multiclass, roc_auc for binary).
    metric: str = "mean"
    # Evaluations without improvement before stopping; null never stops early.
    early_stopping_patience: Optional[int] = None
    seed: int = 42
    # Batches sorted together by length; larger means less padding.
    bucket_batches: int = 50
    # CPU threads for math; null uses every core.
    num_threads: Optional[int] = None
    progress_bar: Literal["auto", "on", "off"] = "auto"

    def validate(self, path):
        positive = ("epochs", "batch_size", "eval_batch_size", "logging_steps",
                    "bucket_batches")
        for name in positive:
            value = getattr(self, name)
            _require(value >= 1, f"{path}.{name}", value, "an integer >= 1")
        _require(
            self.max_steps is None or self.max_steps >= 1,
            f"{path}.max_steps",
            self.max_steps,
            "an integer >= 1 or null",
        )
        _require(self.learning_rate > 0, f"{path}.learning_rate",
                 self.learning_rate, "a rate > 0")
        _require(self.weight_decay >= 0, f"{path}.weight_decay",
                 self.weight_decay, "a value >= 0")
        _require(0 <= self.warmup_ratio < 1, f"{path}.warmup_ratio",
                 self.warmup_ratio, "0 <= ratio < 1")
        _require(self.max_grad_norm > 0, f"{path}.max_grad_norm",
                 self.max_grad_norm, "a norm > 0")
        _require(self.eval_steps >= 0, f"{path}.eval_steps", self.eval_steps,
                 "an integer >= 0")
        _require(
            self.early_stopping_patience is None
            or self.early_stopping_patience >= 1,
            f"{path}.early_stopping_patience",
            self.early_stopping_patience,
            "an integer >= 1 or null",
        )
        _require_seed(f"{path}.seed", self.seed)
        _require(
            self.num_threads is None or self.num_threads >= 1,
            f"{path}.num_threads",
            self.num_threads,
            "an integer >= 1 or null",
        )


@dataclass
class OutputConfig:
    """Output folder for checkpoints, metrics and VisualDL logs."""

    dir: str = "outputs/run"
    # Replace the checkpoints of an earlier run in `dir`.
    overwrite: bool = False


@dataclass
class Config:
    """A whole run: one section per concern."""

    data: DataConfig
    tasks: List[TaskConfig]
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def validate(self, path=""):
        self.data.validate("data")
        self.tokenizer.validate("tokenizer")
        self.model.validate("model")
        self.train.validate("train")
        _require(len(self.tasks) >= 1, "tasks", self.tasks,
                 "a list of at least one task")
        names = [task.name for task in self.tasks]
        for i, task in enumerate(self.tasks):
            task.validate(f"tasks[{i}]")
            _require(names.count(task.name) == 1, f"tasks[{i}].name", task.name,
                     "a name used by one task only")
        self._validate_metric()
        self._validate_text_source()

    def _validate_metric(self):
        metric = self.train.metric
        if metric == "mean":
            return
        task_name, _, metric_name = metric.partition(".")
        allowed = [f"{t.name}.{m}" for t in self.tasks for m in task_metrics(t.type)]
        _require(
            metric in allowed,
            "train.metric",
            metric,
            "'mean' or one of " + ", ".join(allowed),
        )

    def _validate_text_source(self):
        tok = self.tokenizer
        has_source = (
            tok.name_or_path or tok.vocab_file or tok.build_vocab
            or self.model.name_or_path or self.model.checkpoint
        )
        _require(
            bool(has_source),
            "tokenizer",
            None,
            "a vocabulary: set tokenizer.vocab_file, tokenizer.build_vocab=true,"
            " tokenizer.name_or_path or model.name_or_path",
        )

    def task(self, name):
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(name)


def task_metrics(task_type):
    """Return the metric names reported for a task type, selection metric first."""
    if task_type == "multiclass":
        return ("macro_f1", "accuracy")
    return ("roc_auc", "accuracy", "macro_f1")
