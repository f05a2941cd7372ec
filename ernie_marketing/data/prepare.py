"""Turn configured files into cleaned, split and label-encoded rows."""

import logging
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import DataError
from .labels import MISSING, LabelVocab
from .readers import read_table
from .text import build_texts, separator_hint

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "valid", "test")


@dataclass
class Split:
    """Rows of one split: ids, texts and one label id column per task."""

    name: str
    row_ids: np.ndarray
    texts: list
    labels: np.ndarray  # [rows, tasks], MISSING where a task has no label
    frame: pd.DataFrame = field(repr=False)

    def __len__(self):
        return len(self.texts)


@dataclass
class PreparedData:
    splits: dict
    vocabs: dict  # task name -> LabelVocab
    stats: dict


def prepare_data(config, splits=SPLIT_NAMES, vocabs=None):
    """Read, clean, split and encode the data described by `config.data`.

    Label vocabularies are built from the training split unless `vocabs`
    (task name -> LabelVocab, e.g. from a checkpoint) is given. Returns the
    requested splits; a split with no rows is left out.
    """
    data = config.data
    stats = {}
    frames = _read_frames(config, stats)
    if "all" in frames:
        frames = split_frame(frames.pop("all"), config, stats)
    if vocabs is None:
        vocabs = {t.name: LabelVocab.build(t, frames["train"][t.label_column])
                  for t in config.tasks}
    result = {}
    for name in splits:
        frame = frames.get(name)
        if frame is None or frame.empty:
            continue
        result[name] = _encode_split(name, frame, config, vocabs, stats)
    for task in config.tasks:
        logger.info("task %s (%s): %d labels %s", task.name, task.type,
                    len(vocabs[task.name]), vocabs[task.name].labels[:12])
    stats["rows"] = {name: len(s) for name, s in result.items()}
    logger.info("rows per split: %s (seed %d)", stats["rows"], data.seed)
    return PreparedData(result, vocabs, stats)


def _read_frames(config, stats):
    data = config.data
    paths = {"train": data.train_path, "valid": data.valid_path,
             "test": data.test_path}
    frames = {}
    for name, path in paths.items():
        if path is None:
            continue
        if not os.path.exists(path):
            raise DataError(f"data.{name}_path={path!r}: file not found; a "
                            "relative path is looked up from the working "
                            "directory, then from the config file's folder")
        frame = read_table(path, data.format, data.sep, data.encoding)
        frames[name] = clean_frame(frame, config, path, stats, name)
    if data.max_rows is not None and len(frames["train"]) > data.max_rows:
        frames["train"] = stratified_sample(
            frames["train"], config.tasks[0].label_column, data.max_rows,
            data.seed)
        logger.info("data.max_rows: kept a sample of %d rows, stratified by "
                    "%s", len(frames["train"]), config.tasks[0].label_column)
    if data.valid_path is None and data.test_path is None:
        frames["all"] = frames.pop("train")
    return frames


def clean_frame(frame, config, path, stats, split_name):
    """Check columns, build the `text` column, drop empty and duplicate texts."""
    data = config.data
    label_columns = [t.label_column for t in config.tasks]
    missing = [c for c in label_columns if c not in frame.columns]
    if missing:
        raise DataError(f"label column(s) {missing} not found in {path}; the "
                        f"file has columns {list(frame.columns)}; fix "
                        f"tasks[*].label_column{separator_hint(frame)}")
    if data.id_column is not None and data.id_column not in frame.columns:
        raise DataError(f"data.id_column={data.id_column!r} not found in {path}; "
                        f"the file has columns {list(frame.columns)}")
    # Texts are built before the internal columns exist, so an error lists
    # only the file's own columns.
    texts, marks = build_texts(frame, data)
    frame = frame.copy()
    frame["__row_id__"] = (frame[data.id_column] if data.id_column
                           else np.arange(len(frame)))
    frame["__text__"] = texts
    counts = {"rows_read": len(frame), "invisible_marks_removed": marks}

    empty = frame["__text__"] == ""
    counts["empty_text"] = int(empty.sum())
    if data.drop_empty_text:
        frame = frame[~empty]
    duplicated = frame["__text__"].duplicated(keep="first")
    counts["duplicate_text"] = int(duplicated.sum())
    if data.drop_duplicates:
        frame = frame[~duplicated]
    counts["rows_kept"] = len(frame)
    stats[split_name] = counts
    logger.info(
        "%s: read %d rows from %s; removed byte-order marks or zero-width "
        "characters from %d texts; empty texts: %d %s; duplicate texts: %d %s",
        split_name, counts["rows_read"], path,
        marks, counts["empty_text"],
        "dropped" if data.drop_empty_text else "kept",
        counts["duplicate_text"],
        "dropped" if data.drop_duplicates else "kept")
    if frame.empty:
        raise DataError(f"no rows left in {path} after dropping empty and "
                        "duplicate texts; check data.text_columns")
    return frame.reset_index(drop=True)


def stratified_sample(frame, column, n_rows, seed):
    """Return at most `n_rows` rows keeping each label's share of `column`."""
    if len(frame) <= n_rows:
        return frame
    groups = _strata(frame[column])
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
    groups = _strata(frame[config.tasks[0].label_column]).to_numpy()
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
    labels = np.full((len(frame), len(config.tasks)), MISSING, dtype=np.int64)
    for j, task in enumerate(config.tasks):
        unknown = "error" if name == "train" else config.data.unknown_label
        try:
            labels[:, j], unknown_counts = vocabs[task.name].encode(
                frame[task.label_column].tolist(), unknown)
        except DataError as exc:
            raise DataError(f"{name} split: {exc}") from None
        labelled = int((labels[:, j] != MISSING).sum())
        stats.setdefault("labelled", {}).setdefault(name, {})[task.name] = labelled
        if unknown_counts:
            logger.warning("%s split, task %s: %d rows with labels never seen "
                           "in training %s masked", name, task.name,
                           sum(unknown_counts.values()), unknown_counts)
        if labelled < len(frame):
            logger.info("%s split, task %s: %d of %d rows labelled; the rest "
                        "are masked for this task", name, task.name, labelled,
                        len(frame))
    return Split(name, frame["__row_id__"].to_numpy(),
                 frame["__text__"].tolist(), labels, frame)


def _strata(values):
    """Return stratification keys; missing labels form their own stratum."""
    from .labels import normalize_label

    return values.map(lambda v: normalize_label(v) or "\0missing").astype(object)


def _allocate(counts, total):
    """Split `total` across groups in proportion to `counts` (largest remainder)."""
    exact = counts / counts.sum() * total
    sizes = np.floor(exact).astype(int)
    remainder = total - sizes.sum()
    order = (exact - sizes).sort_values(ascending=False).index[:remainder]
    sizes[order] += 1
    return sizes[sizes > 0]
