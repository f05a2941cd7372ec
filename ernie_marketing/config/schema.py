"""Typed config sections. Field types and defaults are the schema.

`loader.py` checks a YAML mapping against these classes; each class's
`validate` rejects values that have the right type but cannot work.
"""

import codecs
import datetime
from dataclasses import dataclass, field
from typing import List, Literal, Optional, Union

from ..errors import ConfigError

TASK_TYPES = ("multiclass", "binary", "multilabel", "regression",
              "zero_inflated", "ranking")
# Task types whose labels are numbers rather than classes.
REGRESSION_TYPES = ("regression", "zero_inflated")
# Task types whose label is a set of values joined by `label_separator`.
SET_TYPES = ("multilabel", "ranking")
# Metrics where a smaller value is better: model selection minimises them.
LOWER_IS_BETTER = frozenset({"rmse", "mae", "log_loss", "ece"})
LabelValue = Union[int, str]
# NumPy's and Paddle's seeds are unsigned 32-bit integers.
MAX_SEED = 2**32 - 1


def require(condition, path, value, allowed):
    """Raise ConfigError naming the key `path` and `value` if `condition` is false."""
    if not condition:
        raise ConfigError(f"{path}={value!r} is invalid: expected {allowed}")


def require_seed(path, value):
    require(0 <= value <= MAX_SEED, path, value,
            f"an integer from 0 to {MAX_SEED}")


# The short names that the sections below use.
_require = require
_require_seed = require_seed


def validate_train_fields(train, path, positive):
    """Check the `train` fields that fine-tuning and pretraining share.

    `positive` names the integer fields that must be at least 1.
    """
    for name in positive:
        value = getattr(train, name)
        require(value >= 1, f"{path}.{name}", value, "an integer >= 1")
    require(train.max_steps is None or train.max_steps >= 1,
            f"{path}.max_steps", train.max_steps, "an integer >= 1 or null")
    require(train.learning_rate > 0, f"{path}.learning_rate",
            train.learning_rate, "a rate > 0")
    require(train.weight_decay >= 0, f"{path}.weight_decay",
            train.weight_decay, "a value >= 0")
    require(0 <= train.warmup_ratio < 1, f"{path}.warmup_ratio",
            train.warmup_ratio, "0 <= ratio < 1")
    require(train.max_grad_norm > 0, f"{path}.max_grad_norm",
            train.max_grad_norm, "a norm > 0")
    require(train.eval_steps >= 0, f"{path}.eval_steps", train.eval_steps,
            "an integer >= 0")
    require_seed(f"{path}.seed", train.seed)
    require(train.num_threads is None or train.num_threads >= 1,
            f"{path}.num_threads", train.num_threads, "an integer >= 1 or null")
    require(train.resume != "", f"{path}.resume", train.resume,
            "true, false or the path of a run folder or its last/ directory")


@dataclass
class TransactionsConfig:
    """Columns and dates that turn a transaction log into one row per customer.

    Transactions on or before `cutoff` are the history that gives the
    features; those in the `horizon_weeks` after it give the outcomes.
    """

    customer_column: str
    date_column: str
    amount_column: str
    # The last day of the history: "YYYY-MM-DD" or a date in `date_format`.
    cutoff: str
    # A `datetime.strptime` format of the date column, e.g. "%Y-%m-%d".
    date_format: str = "%Y%m%d"
    quantity_column: Optional[str] = None
    horizon_weeks: int = 26
    # "error" rejects negative amounts; "refund" counts them in the net spend
    # but not as purchases.
    negative_amount: Literal["error", "refund"] = "error"
    # The currency word in the history text, e.g. "美元" for US dollars.
    currency: str = "元"

    def cutoff_date(self):
        """Return `cutoff` as a `datetime.date`, or None when it cannot be parsed."""
        for fmt in ("%Y-%m-%d", self.date_format):
            try:
                return datetime.datetime.strptime(self.cutoff, fmt).date()
            except ValueError:
                continue
        return None

    def validate(self, path):
        _require(self.horizon_weeks >= 1, f"{path}.horizon_weeks",
                 self.horizon_weeks, "an integer >= 1")
        _require("%" in self.date_format, f"{path}.date_format",
                 self.date_format, "a strptime format such as '%Y%m%d'")
        _require(self.cutoff_date() is not None, f"{path}.cutoff", self.cutoff,
                 f"a date written as YYYY-MM-DD or as {self.date_format!r}")


@dataclass
class DataConfig:
    """Data files, and the rule that turns each row into a text."""

    train_path: str
    valid_path: Optional[str] = None
    test_path: Optional[str] = None
    # File format; "auto" picks it from the extension.
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet"] = "auto"
    # Column separator for CSV-like files; "auto" sniffs it and "whitespace"
    # splits on runs of spaces and tabs.
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
    # Read each file as a transaction log and derive one row per customer.
    transactions: Optional[TransactionsConfig] = None
    # Stream the training file in chunks of `chunk_rows` rows instead of
    # loading it; valid_path and test_path are still read whole. Streaming
    # keeps the training file's duplicate texts, and max_rows takes its
    # first rows instead of a stratified sample.
    streaming: bool = False
    chunk_rows: int = 50000

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
        if self.transactions is not None:
            self.transactions.validate(f"{path}.transactions")
        self._validate_streaming(path)

    def _validate_streaming(self, path):
        _require(
            isinstance(self.chunk_rows, int) and self.chunk_rows >= 1,
            f"{path}.chunk_rows",
            self.chunk_rows,
            "a positive number of rows per chunk, e.g. 50000",
        )
        if not self.streaming:
            return
        if self.valid_path is None:
            raise ConfigError(
                f"{path}.streaming=true needs {path}.valid_path: a streamed "
                "training file cannot be split at random; give "
                f"{path}.valid_path (and optionally {path}.test_path) or set "
                f"{path}.streaming=false")
        if self.transactions is not None:
            raise ConfigError(
                f"{path}.streaming=true cannot be used with "
                f"{path}.transactions: a customer's rows may lie in any "
                "chunk, so the customer table needs the whole log; set "
                f"{path}.streaming=false")


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
class SharingConfig:
    """Sharing of the encoder's (fused) representation among the task heads.

    "hard": every head reads the same representation. "mmoe": shared
    experts and one softmax gate per task. "ple": shared and task-owned
    experts in `num_levels` stacked extraction levels.
    """

    type: Literal["hard", "mmoe", "ple"] = "hard"
    # Shared experts of "mmoe".
    num_experts: int = 4
    # Output width of every expert; the task heads read this width.
    expert_hidden_size: int = 256
    # Shared experts and experts per task in each "ple" level.
    num_shared_experts: int = 2
    num_task_experts: int = 1
    num_levels: int = 2
    dropout: float = 0.1

    def validate(self, path):
        for name in ("num_experts", "expert_hidden_size", "num_shared_experts",
                     "num_task_experts", "num_levels"):
            value = getattr(self, name)
            _require(value >= 1, f"{path}.{name}", value, "an integer >= 1")
        _require(0 <= self.dropout < 1, f"{path}.dropout", self.dropout,
                 "0 <= p < 1")


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
    sharing: SharingConfig = field(default_factory=SharingConfig)

    def validate(self, path):
        self.encoder.validate(f"{path}.encoder")
        self.sharing.validate(f"{path}.sharing")


@dataclass
class TaskConfig:
    """One prediction target and its head."""

    name: str
    type: Literal[TASK_TYPES]
    label_column: str
    weight: float = 1.0
    # Width of an optional hidden layer in the head; 0 means a linear head.
    hidden_size: int = 0
    dropout: float = 0.1
    # The label that counts as positive for a binary task; needed only when
    # the two values are not 0/1, false/true or no/yes.
    positive_label: Optional[LabelValue] = None
    # ESMM chaining for a binary task: its output is P(parent) x P(this |
    # parent), trained on every row labelled for this task. The parent is
    # another binary task.
    parent: Optional[str] = None
    # Regression loss on the standardised target (regression, zero_inflated).
    loss: Literal["mse", "huber"] = "mse"
    huber_delta: float = 1.0
    # Train on log(1 + y) and predict exp(prediction) - 1 (regression,
    # zero_inflated); the targets must not be negative.
    log1p: bool = False
    # Separator of the values in one label cell, e.g. "books|music"
    # (multilabel, ranking).
    label_separator: str = "|"
    # Cut-offs of the ranking metrics ndcg@K and recall@K.
    top_k: List[int] = field(default_factory=lambda: [5, 10])

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
        _require(
            self.parent is None or self.type == "binary",
            f"{path}.parent",
            self.parent,
            "null unless the task type is binary",
        )
        self._validate_regression(path)
        self._validate_sets(path)

    def _validate_regression(self, path):
        regression = self.type in REGRESSION_TYPES
        kinds = "regression or zero_inflated"
        _require(self.loss == "mse" or regression, f"{path}.loss", self.loss,
                 f"'mse' (the default) unless the task type is {kinds}")
        _require(not self.log1p or regression, f"{path}.log1p", self.log1p,
                 f"false unless the task type is {kinds}")
        _require(self.huber_delta > 0, f"{path}.huber_delta",
                 self.huber_delta, "a number > 0")
        _require(
            self.huber_delta == 1.0 or self.loss == "huber",
            f"{path}.huber_delta",
            self.huber_delta,
            "1.0 (the default) unless loss is 'huber'",
        )

    def _validate_sets(self, path):
        _require(
            self.label_separator == "|" or self.type in SET_TYPES,
            f"{path}.label_separator",
            self.label_separator,
            "'|' (the default) unless the task type is multilabel or ranking",
        )
        _require(
            self.label_separator != "" and not self.label_separator.isspace(),
            f"{path}.label_separator",
            self.label_separator,
            "a non-blank separator such as '|' or ';'",
        )
        _require(
            self.top_k == [5, 10] or self.type == "ranking",
            f"{path}.top_k",
            self.top_k,
            "[5, 10] (the default) unless the task type is ranking",
        )
        _require(
            len(self.top_k) >= 1 and all(k >= 1 for k in self.top_k)
            and len(set(self.top_k)) == len(self.top_k),
            f"{path}.top_k",
            self.top_k,
            "a list of distinct integers >= 1, e.g. [5, 10]",
        )


@dataclass
class FeatureConfig:
    """Structured input columns fed to the model beside the text.

    Numeric columns are standardised with training statistics. Categorical
    columns are embedded, with one id for values unseen in training or seen
    fewer than `min_frequency` times, and one id for missing values.
    """

    numeric: List[str] = field(default_factory=list)
    categorical: List[str] = field(default_factory=list)
    # Width of each categorical column's embedding.
    embedding_dim: int = 16
    # Categories seen fewer times in training share the unseen-value id.
    min_frequency: int = 1
    # "concat": text, numeric and embeddings concatenated, then
    # Linear(hidden_size), GELU and dropout. "gate": a sigmoid gate from the
    # structured inputs scales the text representation, and a projection
    # of the structured inputs is added to it.
    fusion: Literal["concat", "gate"] = "concat"
    # Output width of the "concat" fusion layer; "gate" keeps the encoder's
    # hidden size.
    hidden_size: int = 256
    dropout: float = 0.1

    def validate(self, path):
        for name in ("embedding_dim", "min_frequency", "hidden_size"):
            value = getattr(self, name)
            _require(value >= 1, f"{path}.{name}", value, "an integer >= 1")
        _require(0 <= self.dropout < 1, f"{path}.dropout", self.dropout,
                 "0 <= p < 1")
        for name in ("numeric", "categorical"):
            columns = getattr(self, name)
            repeated = sorted({c for c in columns if columns.count(c) > 1})
            _require(not repeated, f"{path}.{name}", columns,
                     f"each column once; {repeated} repeat")
        both = sorted(set(self.numeric) & set(self.categorical))
        _require(not both, f"{path}.numeric", self.numeric,
                 f"columns that are not also in {path}.categorical; {both} "
                 "are in both")

    @property
    def columns(self):
        """All feature columns: numeric first, then categorical."""
        return list(self.numeric) + list(self.categorical)


@dataclass
class LossWeightingConfig:
    """Combination of the per-task losses into the loss to backward.

    "fixed" uses `tasks[].weight`; the other methods start from those
    weights (see ernie_marketing/weighting.py for each method).
    """

    method: Literal["fixed", "uncertainty", "dwa", "gradnorm",
                    "pcgrad"] = "fixed"
    # DWA softmax temperature T; a larger T gives more even weights.
    temperature: float = 2.0
    # GradNorm asymmetry alpha; a larger alpha pulls harder on tasks that
    # train slowly.
    alpha: float = 1.5
    # Step size of GradNorm's updates to the weights.
    gradnorm_learning_rate: float = 0.025

    def validate(self, path):
        _require(self.temperature > 0, f"{path}.temperature", self.temperature,
                 "a temperature > 0")
        _require(self.alpha >= 0, f"{path}.alpha", self.alpha, "alpha >= 0")
        _require(self.gradnorm_learning_rate > 0,
                 f"{path}.gradnorm_learning_rate",
                 self.gradnorm_learning_rate, "a step size > 0")


@dataclass
class TrainConfig:
    """Optimisation, evaluation and stopping."""

    epochs: int = 3
    # Stop after this many optimizer steps, even before `epochs` are done.
    max_steps: Optional[int] = None
    batch_size: int = 32
    # Train each batch in this many parts, adding their gradients before
    # one update: the same batch_size with less memory per forward pass.
    accumulate_steps: int = 1
    eval_batch_size: int = 64
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    # Evaluate every this many steps and at the end; 0 means once per epoch.
    eval_steps: int = 0
    logging_steps: int = 20
    # Model selection metric: "<task>.<metric>" or "mean" (the mean over
    # tasks of each task's first metric, gini for regression types; see
    # `mean_metric`). Metrics in LOWER_IS_BETTER are minimised.
    metric: str = "mean"
    # Evaluations without improvement before stopping; null never stops early.
    early_stopping_patience: Optional[int] = None
    seed: int = 42
    # Batches sorted together by length; larger means less padding.
    bucket_batches: int = 50
    # CPU threads for math; null uses every core.
    num_threads: Optional[int] = None
    progress_bar: Literal["auto", "on", "off"] = "auto"
    # Train the encoder's linear, attention and layer norm layers with the
    # CPU backward passes of models/cpu_kernels.py, and make malloc keep
    # freed memory. "auto" does both when training on the CPU.
    cpu_fast_kernels: Literal["auto", "on", "off"] = "auto"
    # Mixed precision on a GPU (engine/amp.py): "auto" is float16 with a
    # dynamic loss scale on a GPU and off on the CPU.
    amp: Literal["auto", "off", "float16", "bfloat16"] = "auto"
    # Save the resumable state (output.dir/last) every this many steps;
    # null uses the evaluation interval. It is also saved at the end and on
    # Ctrl-C.
    save_steps: Optional[int] = None
    # true resumes from output.dir/last; a path resumes from that state
    # directory (or from the `last` directory inside that run folder).
    resume: Union[bool, str] = False
    loss_weighting: LossWeightingConfig = field(
        default_factory=LossWeightingConfig)
    # A task loss that is NaN or infinite: "abort" stops the run, "skip"
    # drops the batch without an update. Either way the error or warning
    # names the task and the batch's row ids, and the batch changes no
    # weights or checkpoints.
    on_nonfinite_loss: Literal["abort", "skip"] = "abort"

    def validate(self, path):
        validate_train_fields(self, path, ("epochs", "batch_size",
                                           "eval_batch_size", "logging_steps",
                                           "bucket_batches"))
        self.loss_weighting.validate(f"{path}.loss_weighting")
        _require(
            self.early_stopping_patience is None
            or self.early_stopping_patience >= 1,
            f"{path}.early_stopping_patience",
            self.early_stopping_patience,
            "an integer >= 1 or null",
        )
        _require(
            self.save_steps is None or self.save_steps >= 1,
            f"{path}.save_steps",
            self.save_steps,
            "an integer >= 1 or null",
        )
        _require(
            1 <= self.accumulate_steps <= max(self.batch_size, 1),
            f"{path}.accumulate_steps",
            self.accumulate_steps,
            f"an integer from 1 to train.batch_size ({self.batch_size})",
        )
        _require(
            self.accumulate_steps == 1
            or self.loss_weighting.method not in ("gradnorm", "pcgrad"),
            f"{path}.accumulate_steps",
            self.accumulate_steps,
            f"1 with loss_weighting.method={self.loss_weighting.method!r}, "
            "which needs every task's gradient of the whole batch at once; "
            "use fixed, uncertainty or dwa to train in parts",
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
    features: FeatureConfig = field(default_factory=FeatureConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def validate(self, path=""):
        self.data.validate("data")
        self.tokenizer.validate("tokenizer")
        self.model.validate("model")
        self.train.validate("train")
        self.features.validate("features")
        _require(len(self.tasks) >= 1, "tasks", self.tasks,
                 "a list of at least one task")
        names = [task.name for task in self.tasks]
        for i, task in enumerate(self.tasks):
            task.validate(f"tasks[{i}]")
            _require(names.count(task.name) == 1, f"tasks[{i}].name", task.name,
                     "a name used by one task only")
        self._validate_parents()
        self._validate_feature_columns()
        self._validate_metric()
        self._validate_text_source()

    def _validate_parents(self):
        types = {task.name: task.type for task in self.tasks}
        for i, task in enumerate(self.tasks):
            if task.parent is None:
                continue
            binary = [name for name, kind in types.items()
                      if kind == "binary" and name != task.name]
            _require(types.get(task.parent) == "binary"
                     and task.parent != task.name,
                     f"tasks[{i}].parent", task.parent,
                     f"the name of another binary task, one of {binary}")
        for i, task in enumerate(self.tasks):
            # Follow the chain upwards; coming back to a task is a cycle.
            seen = [task.name]
            current = task.parent
            while current is not None:
                _require(current not in seen, f"tasks[{i}].parent", task.parent,
                         "a chain of parents without a cycle, but "
                         + " -> ".join(seen + [current]) + " is one")
                seen.append(current)
                current = self.task(current).parent

    def _validate_feature_columns(self):
        labels = {task.label_column: task.name for task in self.tasks}
        for name in ("numeric", "categorical"):
            for column in getattr(self.features, name):
                _require(column not in labels, f"features.{name}", column,
                         "a column that is not a label column, but it is the "
                         f"label of task {labels.get(column)!r}")

    def _validate_metric(self):
        metric = self.train.metric
        if metric == "mean":
            return
        allowed = [f"{t.name}.{m}" for t in self.tasks
                   for m in task_metrics(t.type, t.top_k)]
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


def task_metrics(task_type, top_k=(5, 10)):
    """Return the metric names reported for a task type, selection metric first.

    `top_k` sets the cut-offs of a ranking task's ndcg@K and recall@K.
    """
    if task_type == "multiclass":
        return ("macro_f1", "accuracy")
    if task_type == "binary":
        return ("roc_auc", "log_loss", "ece", "accuracy", "macro_f1")
    if task_type == "multilabel":
        return ("micro_f1", "macro_f1")
    if task_type in REGRESSION_TYPES:
        return ("rmse", "mae", "r2", "gini")
    if task_type == "ranking":
        return (tuple(f"ndcg@{k}" for k in top_k)
                + tuple(f"recall@{k}" for k in top_k))
    raise ValueError(f"unknown task type {task_type!r}; expected one of "
                     f"{TASK_TYPES}")


def mean_metric(task_type, top_k=(5, 10)):
    """Return the metric a task adds to the "mean" selection rule.

    This is the task's first metric, except for regression and
    zero_inflated tasks, because their first metric rmse is in the target's
    units. They add the normalized Gini, which is bounded ([-1, 1]) and,
    like the other first metrics, higher for a better model. So the mean is
    always maximised.
    """
    if task_type in REGRESSION_TYPES:
        return "gini"
    return task_metrics(task_type, top_k)[0]


def lower_is_better(metric):
    """Return True when model selection on `metric` minimises it.

    `metric` is a train.metric value: "mean" or "<task>.<metric>".
    """
    if metric == "mean":
        return False
    return metric.partition(".")[2] in LOWER_IS_BETTER


@dataclass
class OutcomeValueConfig:
    """One predicted outcome of an action and what a unit of it is worth."""

    name: str
    # Value of one unit of the outcome in money, e.g. 1.0 per unit of spend
    # and 0.0 for a visit that counts only through the spend it brings.
    value: float = 0.0
    # Column of the observed outcome in evaluation data; null means `name`.
    column: Optional[str] = None

    def validate(self, path):
        _require(bool(self.name) and "@" not in self.name, f"{path}.name",
                 self.name, "a non-empty outcome name without '@'")


@dataclass
class OutcomeCostConfig:
    """A cost an action incurs per unit of one outcome."""

    outcome: str
    # E.g. a coupon's face value per conversion, or a discount rate per
    # unit of spend.
    cost: float

    def validate(self, path):
        _require(self.cost >= 0, f"{path}.cost", self.cost, "a cost >= 0")


@dataclass
class ActionConfig:
    """One action a customer can get, such as an offer, and its costs."""

    name: str
    # Cost per customer who gets the action, e.g. the cost of sending it.
    cost: float = 0.0
    outcome_costs: List[OutcomeCostConfig] = field(default_factory=list)
    # Maximum number of customers who may get the action, or null for no
    # limit.
    capacity: Optional[int] = None
    # Share of customers randomly assigned this action in the evaluation
    # data; null estimates it from the data.
    propensity: Optional[float] = None

    def validate(self, path):
        _require(bool(self.name) and "@" not in self.name, f"{path}.name",
                 self.name, "a non-empty action name without '@'")
        _require(self.cost >= 0, f"{path}.cost", self.cost, "a cost >= 0")
        for i, item in enumerate(self.outcome_costs):
            item.validate(f"{path}.outcome_costs[{i}]")
        _require(self.capacity is None or self.capacity >= 0,
                 f"{path}.capacity", self.capacity,
                 "an integer >= 0 or null")
        _require(self.propensity is None or 0 < self.propensity <= 1,
                 f"{path}.propensity", self.propensity,
                 "a share 0 < p <= 1 or null")


@dataclass
class DecisionConfig:
    """Actions, outcome values and constraints that turn predictions into
    one action per customer.

    The expected value of action a for a customer is the sum over outcomes
    of prediction x (value - the action's cost per unit of that outcome),
    minus the action's fixed cost. The gain is that value minus the
    control action's value.
    """

    # Column with the action each customer actually got.
    treatment_column: str
    # The action that means "do nothing". It must cost nothing.
    control: str
    actions: List[ActionConfig]
    outcomes: List[OutcomeValueConfig]
    # Column copied to the decision file to identify customers. Without it,
    # rows are numbered from 0.
    id_column: Optional[str] = None
    # Maximum total expected cost of all actions, or null for no limit.
    budget: Optional[float] = None
    # Minimum return on cost: a customer gets action a only when its gain
    # is positive and at least min_return x the action's expected cost.
    min_return: float = 0.0
    # "auto" solves exactly with an integer program when at most
    # `milp_max_variables` customer x action pairs are eligible, else
    # greedily.
    method: Literal["auto", "greedy", "milp"] = "auto"
    milp_max_variables: int = 5000
    # Seconds the integer program may run. When it stops early, the better
    # of its best solution and the greedy one is kept.
    milp_time_limit: float = 30.0
    # Two-sided level of the confidence intervals.
    confidence: float = 0.95
    # Columns to summarise the decisions by in the report.
    segment_columns: List[str] = field(default_factory=list)
    # Structured columns of the two-model (T-learner) gradient-boosting
    # baseline, which runs when training data is given.
    baseline_numeric: List[str] = field(default_factory=list)
    baseline_categorical: List[str] = field(default_factory=list)
    # Budgets at which the report plots the value against the budget.
    budget_points: int = 20

    def validate(self, path="decision"):
        self._validate_names(path)
        for i, action in enumerate(self.actions):
            action.validate(f"{path}.actions[{i}]")
            outcomes = [o.name for o in self.outcomes]
            for j, item in enumerate(action.outcome_costs):
                _require(item.outcome in outcomes,
                         f"{path}.actions[{i}].outcome_costs[{j}].outcome",
                         item.outcome, f"one of the outcomes {outcomes}")
        for i, outcome in enumerate(self.outcomes):
            outcome.validate(f"{path}.outcomes[{i}]")
        control = self.action(self.control)
        _require(control.cost == 0 and not control.outcome_costs,
                 f"{path}.control", self.control,
                 "an action with cost 0 and no outcome_costs")
        _require(self.budget is None or self.budget >= 0, f"{path}.budget",
                 self.budget, "a budget >= 0 or null")
        _require(self.min_return >= 0, f"{path}.min_return", self.min_return,
                 "a return >= 0")
        _require(self.milp_max_variables >= 1, f"{path}.milp_max_variables",
                 self.milp_max_variables, "an integer >= 1")
        _require(self.milp_time_limit > 0, f"{path}.milp_time_limit",
                 self.milp_time_limit, "a number of seconds > 0")
        _require(0 < self.confidence < 1, f"{path}.confidence",
                 self.confidence, "a level 0 < level < 1, e.g. 0.95")
        _require(self.budget_points >= 2, f"{path}.budget_points",
                 self.budget_points, "an integer >= 2")
        self._validate_propensities(path)

    def _validate_names(self, path):
        names = [action.name for action in self.actions]
        _require(len(names) >= 2, f"{path}.actions", names,
                 "at least two actions: the control and one other")
        repeated = sorted({n for n in names if names.count(n) > 1})
        _require(not repeated, f"{path}.actions", names,
                 f"each action name once; {repeated} repeat")
        _require(self.control in names, f"{path}.control", self.control,
                 f"one of the action names {names}")
        outcomes = [o.name for o in self.outcomes]
        _require(len(outcomes) >= 1, f"{path}.outcomes", outcomes,
                 "a list of at least one outcome")
        repeated = sorted({n for n in outcomes if outcomes.count(n) > 1})
        _require(not repeated, f"{path}.outcomes", outcomes,
                 f"each outcome name once; {repeated} repeat")

    def _validate_propensities(self, path):
        shares = [a.propensity for a in self.actions
                  if a.propensity is not None]
        if not shares:
            return
        _require(len(shares) == len(self.actions), f"{path}.actions",
                 [a.propensity for a in self.actions],
                 "a propensity for every action or for none")
        _require(abs(sum(shares) - 1) < 1e-6, f"{path}.actions",
                 shares, "propensities that sum to 1")

    @property
    def action_names(self):
        return [action.name for action in self.actions]

    def action(self, name):
        for action in self.actions:
            if action.name == name:
                return action
        raise KeyError(name)
