"""Typed config of a pretraining run, loaded like the fine-tuning config.

The YAML file has the sections `data`, `tokenizer`, `masking`, `model`,
`train` and `output`. It is read with the project's loader, so unknown
keys, wrong types and `-o section.key=value` overrides behave as in
`ernie-marketing train`. `tokenizer` and `model.encoder` are the
fine-tuning sections, so a pretrained encoder has the shape a fine-tuning
config describes.
"""

import os
from dataclasses import dataclass, field
from typing import List, Literal, Optional, Union

from ..config.loader import build_dataclass, read_config_mapping, resolve_path
from ..config.schema import (
    EncoderConfig,
    TokenizerConfig,
    require,
    require_seed,
    validate_train_fields,
)

# Extensions read as plain text (one document per line) when format is auto.
TEXT_EXTENSIONS = (".txt", ".text")


@dataclass
class CorpusFileConfig:
    """One corpus file: plain text with one document per line, or a table."""

    path: str
    # "text" reads one document per line. A table format reads the column
    # `text_column`. "auto" reads .txt and .text files as text and picks a
    # table format from other extensions (.csv, .tsv, .jsonl, .parquet,
    # also inside a .zip).
    format: Literal["auto", "text", "csv", "tsv", "jsonl", "parquet"] = "auto"
    text_column: Optional[str] = None
    # Column separator of a CSV-like table, or "auto" to sniff it.
    sep: Optional[str] = None
    encoding: str = "utf-8"

    def resolved_format(self):
        """Return "text" or the table format this file is read with."""
        if self.format != "auto":
            return self.format
        name = self.path[:-4] if self.path.lower().endswith(".zip") else self.path
        if name.lower().endswith(TEXT_EXTENSIONS):
            return "text"
        from ..data.readers import detect_format

        return detect_format(self.path)

    def validate(self, path):
        require(self.path != "", f"{path}.path", self.path, "a file path")
        if self.format == "text" or (self.format == "auto" and self.path.lower()
                                     .endswith(TEXT_EXTENSIONS)):
            require(self.text_column is None, f"{path}.text_column",
                    self.text_column,
                    "null for a plain text file, which has no columns")
        else:
            require(self.text_column is not None, f"{path}.text_column",
                    self.text_column,
                    "the name of the column that holds the text, e.g. "
                    "review, because the file is read as a table")


@dataclass
class PretrainDataConfig:
    """Corpus files and the documents held out for evaluation."""

    files: List[CorpusFileConfig]
    # Documents held out to measure the MLM loss and accuracy. 0 turns the
    # evaluation off.
    valid_docs: int = 1000
    # Use a seeded random sample of at most this many documents.
    max_docs: Optional[int] = None
    drop_duplicates: bool = True
    # A fine-tuning config whose validation and test texts are left out of
    # the corpus, so the encoder is never trained on the texts that
    # fine-tuning is scored on.
    exclude_texts_of: Optional[str] = None
    seed: int = 0

    def validate(self, path):
        require(len(self.files) >= 1, f"{path}.files", self.files,
                "a list of at least one file, e.g. [{path: reviews.txt}]")
        for i, corpus_file in enumerate(self.files):
            corpus_file.validate(f"{path}.files[{i}]")
        require(self.valid_docs >= 0, f"{path}.valid_docs", self.valid_docs,
                "an integer >= 0")
        require(self.max_docs is None or self.max_docs >= 1,
                f"{path}.max_docs", self.max_docs, "an integer >= 1 or null")
        require_seed(f"{path}.seed", self.seed)


@dataclass
class MaskingConfig:
    """Knowledge masking: which spans are masked and how they are replaced.

    Masking units come from a Chinese word segmentation (jieba): a single
    token, a whole word, or a phrase of adjacent words. Each unit is drawn
    as a character, word or phrase with the given probabilities until
    `mask_rate` of the tokens that are not special tokens or [UNK] are
    covered. Each masked token is then replaced with [MASK]
    (`mask_token_ratio`), a random token (`random_token_ratio`), or kept.
    """

    mask_rate: float = 0.15
    char_ratio: float = 0.3
    word_ratio: float = 0.5
    phrase_ratio: float = 0.2
    # Words per phrase: 2 up to this many.
    max_phrase_words: int = 3
    mask_token_ratio: float = 0.8
    random_token_ratio: float = 0.1
    # A jieba user dictionary (one "word [frequency] [tag]" per line) of
    # domain words, brands or entities that should be masked whole.
    user_dict: Optional[str] = None

    def validate(self, path):
        require(0 < self.mask_rate < 1, f"{path}.mask_rate", self.mask_rate,
                "a rate with 0 < mask_rate < 1, e.g. 0.15")
        ratios = ("char_ratio", "word_ratio", "phrase_ratio")
        for name in ratios:
            value = getattr(self, name)
            require(0 <= value <= 1, f"{path}.{name}", value, "0 <= ratio <= 1")
        total = sum(getattr(self, name) for name in ratios)
        require(abs(total - 1) < 1e-6, f"{path}.char_ratio", self.char_ratio,
                f"char_ratio + word_ratio + phrase_ratio = 1, but they sum "
                f"to {total:g}")
        require(self.max_phrase_words >= 2, f"{path}.max_phrase_words",
                self.max_phrase_words, "an integer >= 2")
        for name in ("mask_token_ratio", "random_token_ratio"):
            value = getattr(self, name)
            require(0 <= value <= 1, f"{path}.{name}", value, "0 <= ratio <= 1")
        replaced = self.mask_token_ratio + self.random_token_ratio
        require(replaced <= 1 + 1e-9, f"{path}.random_token_ratio",
                self.random_token_ratio,
                f"mask_token_ratio + random_token_ratio <= 1, but they sum "
                f"to {replaced:g}")


@dataclass
class PretrainModelConfig:
    """The model to pretrain: new from `encoder`, or loaded and continued."""

    # A PaddleNLP model name or a model directory (such as the `model/`
    # folder of an earlier pretraining run). null builds `encoder` new.
    name_or_path: Optional[str] = None
    encoder: EncoderConfig = field(default_factory=EncoderConfig)

    def validate(self, path):
        self.encoder.validate(f"{path}.encoder")


@dataclass
class PretrainTrainConfig:
    """Optimisation, evaluation, logging and checkpoints."""

    epochs: int = 1
    # Stop after this many optimizer steps, even before `epochs` are done.
    max_steps: Optional[int] = None
    batch_size: int = 64
    eval_batch_size: int = 128
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    max_grad_norm: float = 1.0
    # Evaluate on the held-out documents every this many steps, at the start
    # and at the end. 0 means once per epoch.
    eval_steps: int = 0
    logging_steps: int = 50
    # Save the resumable state (output.dir/last) every this many steps, at
    # the end and on Ctrl-C.
    save_steps: int = 500
    # Batches sorted together by length. A larger value means less padding.
    bucket_batches: int = 50
    seed: int = 42
    # CPU threads for math, or null for every core.
    num_threads: Optional[int] = None
    progress_bar: Literal["auto", "on", "off"] = "auto"
    # true resumes from output.dir/last; a path resumes from that state
    # directory or from the `last` directory inside that run folder.
    resume: Union[bool, str] = False

    def validate(self, path):
        validate_train_fields(self, path, ("epochs", "batch_size",
                                           "eval_batch_size", "logging_steps",
                                           "save_steps", "bucket_batches"))


@dataclass
class PretrainOutputConfig:
    """Output folder for the model directory, state and logs."""

    dir: str = "outputs/pretrain"
    # Replace the model and the resumable state of an earlier run in `dir`.
    overwrite: bool = False


@dataclass
class PretrainConfig:
    """A whole pretraining run: one section per concern."""

    data: PretrainDataConfig
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    model: PretrainModelConfig = field(default_factory=PretrainModelConfig)
    train: PretrainTrainConfig = field(default_factory=PretrainTrainConfig)
    output: PretrainOutputConfig = field(default_factory=PretrainOutputConfig)

    def validate(self, path=""):
        self.data.validate("data")
        self.tokenizer.validate("tokenizer")
        self.masking.validate("masking")
        self.model.validate("model")
        self.train.validate("train")


def load_pretrain_config(path, overrides=()):
    """Read a pretraining YAML file, apply `section.key=value` overrides, validate."""
    config = build_pretrain_config(read_config_mapping(path, overrides))
    _resolve_paths(config, os.path.dirname(os.path.abspath(path)))
    return config


def build_pretrain_config(raw):
    """Check a plain mapping against the schema and return a PretrainConfig."""
    config = build_dataclass(PretrainConfig, raw)
    config.validate()
    return config


def _resolve_paths(config, base_dir):
    """Resolve relative input paths as the fine-tuning loader does."""
    for corpus_file in config.data.files:
        corpus_file.path = resolve_path(corpus_file.path, base_dir)
    data = config.data
    data.exclude_texts_of = resolve_path(data.exclude_texts_of, base_dir)
    config.masking.user_dict = resolve_path(config.masking.user_dict, base_dir)
    config.tokenizer.vocab_file = resolve_path(config.tokenizer.vocab_file,
                                               base_dir)
