"""Turn configured files into cleaned, split and label-encoded rows."""

import logging
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..config.schema import REGRESSION_TYPES, SET_TYPES
from ..errors import DataError
from .features import FeatureEncoder, check_columns
from .labels import build_label_encoder, labelled_rows, normalize_label
from .readers import detect_format, lacks_header, read_table
from .text import build_texts, separator_hint
from .transactions import customer_table

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "valid", "test")


@dataclass
class Split:
    """Rows of one split: ids, texts, labels per task and structured inputs."""

    name: str
    row_ids: np.ndarray
    texts: list
    # Task name -> labels as encoded by the task's label encoder (see
    # labels.py): MISSING or NaN where the row has no label for that task.
    labels: dict
    frame: pd.DataFrame = field(repr=False)
    # float32 [rows, numeric inputs] and int64 [rows, categorical columns],
    # or None when no such feature is configured.
    numeric_features: np.ndarray = field(default=None, repr=False)
    categorical_features: np.ndarray = field(default=None, repr=False)

    def __len__(self):
        return len(self.texts)


@dataclass
class PreparedData:
    splits: dict
    vocabs: dict  # task name -> label encoder (LabelVocab, ...)
    stats: dict
    features: FeatureEncoder = None  # None when no feature is configured


def prepare_data(config, splits=SPLIT_NAMES, vocabs=None, features=None):
    """Read, clean, split and encode the data described by `config.data`.

    Label encoders are built from the training split unless `vocabs` (task
    name -> encoder, e.g. from a checkpoint) is given; the same applies to the
    `FeatureEncoder` of `config.features` and `features`. Returns the
    requested splits; a split with no rows is left out. With
    data.streaming the training file is not read into memory, so the result
    has no train split (see `train_stream.py`).
    """
    data = config.data
    stats = {}
    if data.streaming and (vocabs is None or (
            features is None and config.features.columns)):
        # The training file is never loaded whole: a streamed pass fits the
        # label and feature encoders.
        from .train_stream import scan_training_file

        scan = scan_training_file(config)
        vocabs = vocabs or scan.vocabs
        features = features or scan.features
        stats.update(scan.stats)
    frames = _read_frames(config, stats)
    if "all" in frames:
        frames = split_frame(frames.pop("all"), config, stats)
    if vocabs is None:
        train = frames["train"]
        vocabs = {t.name: build_label_encoder(t, train[t.label_column],
                                              train["__row_id__"].to_numpy())
                  for t in config.tasks}
    if features is None and config.features.columns:
        train = frames["train"]
        features = FeatureEncoder.fit(config.features, train,
                                      train["__row_id__"].to_numpy())
    result = {}
    for name in splits:
        frame = frames.get(name)
        if frame is None or frame.empty:
            continue
        result[name] = _encode_split(name, frame, config, vocabs, stats)
        if features is not None:
            _add_features(result[name], features)
    for task in config.tasks:
        _log_task(task, vocabs[task.name])
    stats["rows"] = {name: len(s) for name, s in result.items()}
    logger.info("rows per split: %s (seed %d)", stats["rows"], data.seed)
    return PreparedData(result, vocabs, stats, features)


def _add_features(split, features):
    split.numeric_features, split.categorical_features = features.transform(
        split.frame, f"{split.name} split", split.row_ids)


def _log_task(task, encoder):
    if task.type in REGRESSION_TYPES:
        logger.info("task %s (%s): target mean %.4g, std %.4g%s", task.name,
                    task.type, encoder.mean, encoder.std,
                    " after log1p" if encoder.log1p else "")
        return
    logger.info("task %s (%s): %d labels %s", task.name, task.type,
                len(encoder), encoder.labels[:12])


def _read_frames(config, stats):
    data = config.data
    paths = {"train": data.train_path, "valid": data.valid_path,
             "test": data.test_path}
    frames = {}
    train_columns = None
    if data.streaming:
        from .train_stream import read_header

        train_columns = read_header(config)
        paths.pop("train")
    for name, path in paths.items():
        if path is None:
            continue
        check_data_path(name, path)
        frame = _read_source(path, data, train_columns)
        train_columns = train_columns or list(frame.columns)
        if data.transactions is not None:
            frame = customer_table(frame, data.transactions, path)
        frames[name] = clean_frame(frame, config, path, stats, name)
    if data.streaming:
        return frames
    if data.max_rows is not None and len(frames["train"]) > data.max_rows:
        frames["train"] = stratified_sample(
            frames["train"], config.tasks[0].label_column, data.max_rows,
            data.seed, config.tasks[0].type)
        logger.info("data.max_rows: kept a sample of %d rows, stratified by "
                    "%s", len(frames["train"]), config.tasks[0].label_column)
    if data.valid_path is None and data.test_path is None:
        frames["all"] = frames.pop("train")
    return frames


def check_data_path(split_name, path):
    """Raise DataError when the data.<split_name>_path file does not exist."""
    if not os.path.exists(path):
        raise DataError(f"data.{split_name}_path={path!r}: file not found; a "
                        "relative path is looked up from the working "
                        "directory, then from the config file's folder")


def _read_source(path, data, train_columns):
    """Read one data file; `train_columns` are the training file's columns.

    An evaluation file without a header row (see `lacks_header`) is read
    with the training file's column names, in the same order.
    """
    string_columns = ()
    if data.transactions is not None:
        # Read as text, so ids like "00001" keep their zeros and dates parse
        # with the configured format.
        string_columns = (data.transactions.customer_column,
                          data.transactions.date_column)
    names = None
    fmt = detect_format(path) if data.format == "auto" else data.format
    if train_columns is not None and fmt in ("csv", "tsv"):
        first = read_table(path, fmt, data.sep, data.encoding, nrows=1,
                           header=False)
        cells = first.iloc[0].astype(str).tolist()
        if lacks_header(cells, train_columns):
            logger.warning("%s has no header row (its first row is %s); "
                           "reading it with the training file's %d column "
                           "names", path, cells, len(train_columns))
            names = train_columns
    return read_table(path, fmt, data.sep, data.encoding,
                      string_columns=string_columns, names=names)


def clean_frame(frame, config, path, stats, split_name):
    """Check columns, build the `text` column, drop empty and duplicate texts."""
    data = config.data
    frame, counts = clean_rows(frame, config, path)
    stats[split_name] = counts
    logger.info(
        "%s: read %d rows from %s; removed byte-order marks or zero-width "
        "characters from %d texts; empty texts: %d %s; duplicate texts: %d %s",
        split_name, counts["rows_read"], path,
        counts["invisible_marks_removed"], counts["empty_text"],
        "dropped" if data.drop_empty_text else "kept",
        counts["duplicate_text"],
        "dropped" if data.drop_duplicates else "kept")
    if frame.empty:
        raise DataError(f"no rows left in {path} after dropping empty and "
                        "duplicate texts; check data.text_columns")
    return frame.reset_index(drop=True)


def clean_rows(frame, config, path, row_ids=None, drop_duplicates=None):
    """Return `frame` with `__row_id__` and `__text__` columns, and counts.

    Checks the label, feature and id columns, builds the texts and drops
    empty texts and duplicates as `config.data` sets; `drop_duplicates`
    overrides data.drop_duplicates. Row ids come from data.id_column, else
    from `row_ids` (default: 0, 1, ...). The kept rows keep their index.
    """
    data = config.data
    if drop_duplicates is None:
        drop_duplicates = data.drop_duplicates
    label_columns = [t.label_column for t in config.tasks]
    missing = [c for c in label_columns if c not in frame.columns]
    if missing:
        raise DataError(f"label column(s) {missing} not found in {path}; the "
                        f"file has columns {list(frame.columns)}; fix "
                        f"tasks[*].label_column{separator_hint(frame)}")
    check_columns(frame, config.features.columns, path)
    if data.id_column is not None and data.id_column not in frame.columns:
        raise DataError(f"data.id_column={data.id_column!r} not found in {path}; "
                        f"the file has columns {list(frame.columns)}")
    # Texts are built before the internal columns exist, so an error lists
    # only the file's own columns.
    texts, marks = build_texts(frame, data)
    frame = frame.copy()
    if data.id_column:
        frame["__row_id__"] = frame[data.id_column]
    else:
        frame["__row_id__"] = (np.arange(len(frame)) if row_ids is None
                               else row_ids)
    frame["__text__"] = texts
    counts = {"rows_read": len(frame), "invisible_marks_removed": marks}

    empty = frame["__text__"] == ""
    counts["empty_text"] = int(empty.sum())
    if data.drop_empty_text:
        frame = frame[~empty]
    # A row repeats an earlier one when its text and its feature values are
    # the same. Customers with the same text but other features are kept.
    duplicated = frame.duplicated(
        subset=["__text__"] + config.features.columns, keep="first")
    counts["duplicate_text"] = int(duplicated.sum())
    if drop_duplicates:
        frame = frame[~duplicated]
    counts["rows_kept"] = len(frame)
    return frame, counts


def stratified_sample(frame, column, n_rows, seed, task_type="multiclass"):
    """Return at most `n_rows` rows keeping each label's share of `column`.

    `task_type` sets how labels form groups, as in `_strata`.
    """
    if len(frame) <= n_rows:
        return frame
    groups = _strata(frame[column], task_type)
    sizes = _allocate(groups.value_counts().sort_index(), n_rows)
    rng = np.random.default_rng(seed)
    picked = []
    for label, size in sizes.items():
        index = np.flatnonzero(groups.to_numpy() == label)
        picked.append(rng.choice(index, size=size, replace=False))
    return frame.iloc[np.sort(np.concatenate(picked))].reset_index(drop=True)


def split_frame(frame, config, stats):
    """Split one table into train/valid/test, stratified by the first task."""
    data = config.data
    first = config.tasks[0]
    groups = _strata(frame[first.label_column], first.type).to_numpy()
    rng = np.random.default_rng(data.seed)
    assignment = np.empty(len(frame), dtype=object)
    for label in np.unique(groups):
        index = np.flatnonzero(groups == label)
        rng.shuffle(index)
        n_valid = int(round(len(index) * data.split[1]))
        n_test = int(round(len(index) * data.split[2]))
        if len(index) - n_valid - n_test < 1:
            n_valid = n_test = 0
        assignment[index[:n_valid]] = "valid"
        assignment[index[n_valid:n_valid + n_test]] = "test"
        assignment[index[n_valid + n_test:]] = "train"
    frames = {name: frame[assignment == name].reset_index(drop=True)
              for name in SPLIT_NAMES}
    if data.split[1] > 0 and frames["valid"].empty:
        raise DataError(f"the validation split is empty ({len(frame)} rows); "
                        "use more rows or a larger data.split[1]")
    return frames


def _encode_split(name, frame, config, vocabs, stats):
    row_ids = frame["__row_id__"].to_numpy()
    labels = {}
    for task in config.tasks:
        unknown = "error" if name == "train" else config.data.unknown_label
        try:
            labels[task.name], unknown_counts = vocabs[task.name].encode(
                frame[task.label_column].tolist(), unknown, row_ids)
        except DataError as exc:
            raise DataError(f"{name} split: {exc}") from None
        labelled = int(labelled_rows(labels[task.name]).sum())
        stats.setdefault("labelled", {}).setdefault(name, {})[task.name] = labelled
        if unknown_counts and labels[task.name].ndim == 2:
            # Multi-label and ranking rows keep their known values.
            logger.warning("%s split, task %s: %d label values never seen "
                           "in training %s dropped from their rows; rows "
                           "left with no known value are masked", name,
                           task.name, sum(unknown_counts.values()),
                           unknown_counts)
        elif unknown_counts:
            logger.warning("%s split, task %s: %d labels never seen in "
                           "training %s masked", name, task.name,
                           sum(unknown_counts.values()), unknown_counts)
        if labelled < len(frame):
            logger.info("%s split, task %s: %d of %d rows labelled; the rest "
                        "are masked for this task", name, task.name, labelled,
                        len(frame))
    _count_child_without_parent(name, config, labels, stats)
    return Split(name, row_ids, frame["__text__"].tolist(), labels, frame)


def _count_child_without_parent(name, config, labels, stats):
    """Count rows positive for a chained task but negative for its parent.

    Such rows (Ali-CCP has purchases without a click) keep their label as
    given: the chained task is trained on P(parent) x P(task | parent)
    against its own label, so they push both probabilities up.
    """
    for task in config.tasks:
        if task.parent is None:
            continue
        child, parent = labels[task.name], labels[task.parent]
        count = int(((child == 1) & (parent == 0)).sum())
        stats.setdefault("child_without_parent", {}).setdefault(
            name, {})[task.name] = count
        if count:
            logger.warning("%s split: %d rows have %s=1 but its parent %s=0; "
                           "their %s labels are kept as given", name, count,
                           task.name, task.parent, task.name)


def _strata(values, task_type="multiclass"):
    """Return stratification keys; missing labels form their own stratum.

    Class labels are their own keys. Numeric targets fall into five
    quantile bins (zero_inflated: zero or positive), and label sets into
    labelled or not, so that every key has enough rows to split.
    """
    keys = values.map(normalize_label)
    missing = keys.isna()
    if task_type in REGRESSION_TYPES:
        # Text that is not a number is reported later by the label encoder.
        numbers = pd.to_numeric(keys, errors="coerce")
        missing = numbers.isna()
        if task_type == "zero_inflated":
            keys = (numbers > 0).map({True: "positive", False: "zero"})
        elif (~missing).sum() > 0:
            ranks = numbers[~missing].rank(method="first")
            bins = pd.qcut(ranks, q=min(5, len(ranks)), labels=False)
            keys = pd.Series("", index=values.index, dtype=object)
            keys[~missing] = bins.astype(str)
    elif task_type in SET_TYPES:
        keys = pd.Series("labelled", index=values.index, dtype=object)
    return keys.astype(object).where(~missing, "\0missing")


def _allocate(counts, total):
    """Split `total` across groups in proportion to `counts` (largest remainder)."""
    exact = counts / counts.sum() * total
    sizes = np.floor(exact).astype(int)
    remainder = total - sizes.sum()
    order = (exact - sizes).sort_values(ascending=False).index[:remainder]
    sizes[order] += 1
    return sizes[sizes > 0]
