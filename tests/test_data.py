"""Data: readers, text building, label vocabularies, splits and quirks."""

import os
import zipfile

import numpy as np
import pandas as pd
import pytest
from conftest import (
    LONGEST_REVIEW_CHARS,
    SHARED_DIR,
    SHOPPING_CATEGORIES,
    SHOPPING_ROWS,
    tiny_config,
)

from ernie_marketing.config import build_config
from ernie_marketing.data import MISSING, LabelVocab, prepare_data, read_table
from ernie_marketing.data.batching import (
    bucketed_batches,
    pad_batch,
    sorted_batches,
)
from ernie_marketing.data.labels import normalize_label
from ernie_marketing.data.prepare import stratified_sample
from ernie_marketing.errors import DataError

INVISIBLE = "\ufeff\u200b\u200c\u200d\u2060"
# Semicolon-separated bank marketing table; only its first rows are read.
BANK_CSV = os.path.join(SHARED_DIR, "data", "bank_marketing",
                        "bank-additional-full.csv")


def make_config(train_path, tmp_path, **data):
    return build_config(tiny_config(train_path, tmp_path / "run", data=data))


def row_of(split, row_id):
    return int(np.flatnonzero(split.row_ids == row_id)[0])


# Readers -----------------------------------------------------------------


def write_zip(frame, path, member="reviews.csv"):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(member, frame.to_csv(index=False))
    return str(path)


WRITERS = {
    "csv": lambda df, p: df.to_csv(p / "r.csv", index=False),
    "tsv": lambda df, p: df.to_csv(p / "r.tsv", index=False, sep="\t"),
    "jsonl": lambda df, p: df.to_json(p / "r.jsonl", orient="records",
                                      lines=True, force_ascii=False),
    "parquet": lambda df, p: df.to_parquet(p / "r.parquet", index=False),
    "zip": lambda df, p: write_zip(df, p / "r.csv.zip"),
}
FILE_NAMES = {"csv": "r.csv", "tsv": "r.tsv", "jsonl": "r.jsonl",
              "parquet": "r.parquet", "zip": "r.csv.zip"}


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_reader_round_trip(reviews, tmp_path, kind):
    WRITERS[kind](reviews, tmp_path)
    frame = read_table(str(tmp_path / FILE_NAMES[kind]))
    assert list(frame.columns) == ["cat", "label", "review"]
    assert len(frame) == len(reviews)
    assert frame["review"].tolist() == reviews["review"].tolist()
    assert frame["cat"].tolist() == reviews["cat"].tolist()
    assert frame["label"].astype(int).tolist() == reviews["label"].tolist()


@pytest.mark.parametrize("sep", [";", "auto"])
def test_reader_semicolon(reviews, tmp_path, sep):
    path = tmp_path / "r.csv"
    reviews.to_csv(path, index=False, sep=";")
    frame = read_table(str(path), sep=sep)
    assert list(frame.columns) == ["cat", "label", "review"]
    assert frame["review"].tolist() == reviews["review"].tolist()


def test_reader_tsv_auto_sep(reviews, tmp_path):
    path = tmp_path / "r.txt"
    reviews.to_csv(path, index=False, sep="\t")
    frame = read_table(str(path), sep="auto")
    assert list(frame.columns) == ["cat", "label", "review"]


def test_reader_explicit_format(reviews, tmp_path):
    path = tmp_path / "reviews.data"
    reviews.to_json(path, orient="records", lines=True, force_ascii=False)
    frame = read_table(str(path), format="jsonl")
    assert frame["review"].tolist() == reviews["review"].tolist()


def test_reader_real_zip(shopping_zip):
    frame = read_table(shopping_zip)
    assert list(frame.columns) == ["cat", "label", "review"]
    assert len(frame) == SHOPPING_ROWS
    assert frame["cat"].nunique() == SHOPPING_CATEGORIES


def test_reader_bom_header(reviews, tmp_path):
    path = tmp_path / "bom.csv"
    reviews.to_csv(path, index=False, encoding="utf-8-sig")
    frame = read_table(str(path))
    assert list(frame.columns) == ["cat", "label", "review"]


def test_reader_zip_two_members(reviews, tmp_path):
    path = tmp_path / "two.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.csv", reviews.to_csv(index=False))
        archive.writestr("b.csv", reviews.to_csv(index=False))
    with pytest.raises(DataError, match="exactly one data file"):
        read_table(str(path))


def test_reader_zip_error_not_wrapped(reviews, tmp_path):
    path = tmp_path / "two.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.csv", reviews.to_csv(index=False))
        archive.writestr("b.csv", reviews.to_csv(index=False))
    with pytest.raises(DataError) as info:
        read_table(str(path))
    assert not str(info.value).startswith("cannot parse")


def test_reader_binary_named_csv(tmp_path):
    path = tmp_path / "random.csv"
    path.write_bytes(bytes(range(256)) * 20)
    with pytest.raises(DataError) as info:
        read_table(str(path))
    assert "looks like a binary file" in str(info.value)


def test_reader_parquet_named_csv(reviews, tmp_path):
    path = tmp_path / "r.parquet"
    reviews.to_parquet(path, index=False)
    with pytest.raises(DataError, match="data.format=parquet"):
        read_table(str(path), format="csv")


def test_reader_jsonl_broken_line(reviews, tmp_path):
    lines = reviews.to_json(orient="records", lines=True,
                            force_ascii=False).splitlines()
    lines[6] = lines[6][:-5]
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_table(str(path))
    assert "line 7 is not valid JSON" in str(info.value)


def test_reader_json_array(reviews, tmp_path):
    path = tmp_path / "array.json"
    reviews.to_json(path, orient="records", force_ascii=False, indent=1)
    with pytest.raises(DataError, match="is a JSON array"):
        read_table(str(path))


def test_reader_repeated_column_csv(reviews, tmp_path):
    path = tmp_path / "spaced.csv"
    reviews.assign(**{" label": reviews["label"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"repeated column names \['label'\]"):
        read_table(str(path))


def test_reader_repeated_key_jsonl(reviews, tmp_path):
    path = tmp_path / "spaced.jsonl"
    frame = reviews.assign(**{"label ": reviews["label"]})
    frame.to_json(path, orient="records", lines=True, force_ascii=False)
    with pytest.raises(DataError, match=r"repeated column names \['label'\]"):
        read_table(str(path))


def test_reader_csv_renamed_repeat_warns(reviews, tmp_path, caplog):
    path = tmp_path / "twice.csv"
    path.write_text(reviews.to_csv(index=False).replace(
        "cat,label,review", "cat,label,label", 1), encoding="utf-8")
    with caplog.at_level("WARNING", logger="ernie_marketing"):
        frame = read_table(str(path))
    assert list(frame.columns) == ["cat", "label", "label.1"]
    assert "label.1" in caplog.text


def test_reader_bad_zip(tmp_path):
    path = tmp_path / "broken.zip"
    path.write_bytes(b"not a zip archive")
    with pytest.raises(DataError, match="not a valid zip"):
        read_table(str(path))


def test_reader_unknown_extension(reviews, tmp_path):
    path = tmp_path / "r.xlsx"
    path.write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match="data.format"):
        read_table(str(path))


def test_reader_file_not_found(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_table(str(tmp_path / "absent.csv"))


def test_reader_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        read_table(str(path))


def test_reader_header_only(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text("cat,label,review\n", encoding="utf-8")
    with pytest.raises(DataError, match="no rows"):
        read_table(str(path))


def test_reader_not_utf8(reviews, tmp_path):
    path = tmp_path / "gbk.csv"
    reviews.iloc[1:].to_csv(path, index=False, encoding="gbk", errors="replace")
    with pytest.raises(DataError) as info:
        read_table(str(path))
    message = str(info.value)
    assert "not valid utf-8" in message
    assert "data.encoding" in message
    assert "\n" not in message


def test_reader_gbk_encoding(reviews, tmp_path):
    path = tmp_path / "gbk.csv"
    rows = reviews.iloc[1:6]
    rows.to_csv(path, index=False, encoding="gbk")
    frame = read_table(str(path), encoding="gbk")
    assert frame["review"].tolist() == rows["review"].tolist()


def test_prepare_not_utf8(reviews, tmp_path):
    path = tmp_path / "gbk.csv"
    reviews.iloc[1:].to_csv(path, index=False, encoding="gbk", errors="replace")
    with pytest.raises(DataError, match="gbk.csv is not valid utf-8"):
        prepare_data(make_config(path, tmp_path))


# Text --------------------------------------------------------------------


def test_text_one_column(reviews_csv, reviews, tmp_path):
    data = prepare_data(make_config(reviews_csv, tmp_path, split=[1.0, 0, 0]))
    split = data.splits["train"]
    i = row_of(split, 5)
    assert split.texts[i] == reviews["review"][5].strip()


def test_text_several_columns(reviews_csv, reviews, tmp_path):
    config = make_config(reviews_csv, tmp_path, split=[1.0, 0, 0],
                         text_columns=["cat", "review"], text_separator=" | ")
    split = prepare_data(config).splits["train"]
    i = row_of(split, 5)
    assert split.texts[i] == f"{reviews['cat'][5]} | {reviews['review'][5].strip()}"


def test_text_template(reviews_csv, reviews, tmp_path):
    config = make_config(reviews_csv, tmp_path, split=[1.0, 0, 0],
                         text_columns=[], text_template="类别{cat}：{review}")
    split = prepare_data(config).splits["train"]
    i = row_of(split, 5)
    expected = f"类别{reviews['cat'][5]}：{reviews['review'][5]}".strip()
    assert split.texts[i] == expected


def test_text_template_unknown_field(reviews_csv, tmp_path):
    config = make_config(reviews_csv, tmp_path, text_columns=[],
                         text_template="{title}: {review}")
    with pytest.raises(DataError) as info:
        prepare_data(config)
    assert "['title']" in str(info.value)
    assert "review" in str(info.value)


def test_text_template_invalid(reviews_csv, tmp_path):
    config = make_config(reviews_csv, tmp_path, text_columns=[],
                         text_template="{review")
    with pytest.raises(DataError, match="data.text_template"):
        prepare_data(config)


def test_text_template_format_spec(reviews_csv, tmp_path):
    config = make_config(reviews_csv, tmp_path, text_columns=[],
                         text_template="{review:d}")
    with pytest.raises(DataError) as info:
        prepare_data(config)
    assert "cannot format a row" in str(info.value)


def test_text_template_without_field(reviews_csv, tmp_path):
    config = make_config(reviews_csv, tmp_path, text_columns=[],
                         text_template="same for all")
    with pytest.raises(DataError, match="uses no column"):
        prepare_data(config)


def test_text_template_dotted_field_is_column(reviews_csv, tmp_path):
    config = make_config(reviews_csv, tmp_path, text_columns=[],
                         text_template="{emp.var.rate}: {review}")
    with pytest.raises(DataError) as info:
        prepare_data(config)
    assert "['emp.var.rate'] not found" in str(info.value)


def test_text_template_empty_field(reviews_csv, tmp_path):
    config = make_config(reviews_csv, tmp_path, text_columns=[],
                         text_template="{} {review}")
    with pytest.raises(DataError, match="empty field"):
        prepare_data(config)


def test_text_parquet_bytes_decoded(reviews, tmp_path):
    frame = reviews.assign(review=reviews["review"].map(str.encode))
    path = tmp_path / "bytes.parquet"
    frame.to_parquet(path, index=False)
    split = prepare_data(make_config(path, tmp_path, split=[1.0, 0, 0])
                         ).splits["train"]
    assert split.texts[row_of(split, 5)] == reviews["review"][5].strip()


def test_text_bytes_wrong_encoding(reviews, tmp_path):
    frame = reviews.assign(review=reviews["review"].map(
        lambda t: t.encode("gbk", errors="replace")))
    path = tmp_path / "gbk_bytes.parquet"
    frame.to_parquet(path, index=False)
    with pytest.raises(DataError, match="not valid utf-8"):
        prepare_data(make_config(path, tmp_path))


def test_separator_hint_real_bank_file(tmp_path):
    bank = pd.read_csv(BANK_CSV, sep=";", nrows=50)
    path = tmp_path / "bank.csv"
    bank.to_csv(path, sep=";", index=False)
    raw = tiny_config(path, tmp_path / "run")
    raw["data"]["text_columns"] = ["job"]
    raw["tasks"] = [{"name": "subscribed", "type": "binary",
                     "label_column": "y"}]
    with pytest.raises(DataError) as info:
        prepare_data(build_config(raw))
    assert "data.sep=';'" in str(info.value)


def test_text_missing_column(reviews_csv, tmp_path):
    config = make_config(reviews_csv, tmp_path, text_columns=["title"])
    with pytest.raises(DataError) as info:
        prepare_data(config)
    message = str(info.value)
    assert "['title']" in message
    assert "['cat', 'label', 'review']" in message


def test_label_column_missing(reviews_csv, tmp_path):
    raw = tiny_config(reviews_csv, tmp_path / "run")
    raw["tasks"][1]["label_column"] = "sentiment"
    with pytest.raises(DataError) as info:
        prepare_data(build_config(raw))
    message = str(info.value)
    assert "['sentiment']" in message
    assert "['cat', 'label', 'review']" in message
    assert "label_column" in message


def test_id_column_row_ids(reviews, tmp_path):
    frame = reviews.assign(review_id=[f"r{i}" for i in range(len(reviews))])
    path = tmp_path / "ids.csv"
    frame.to_csv(path, index=False)
    split = prepare_data(make_config(path, tmp_path, id_column="review_id",
                                     split=[1.0, 0, 0])).splits["train"]
    assert sorted(split.row_ids.tolist()) == sorted(frame["review_id"])


def test_id_column_missing(reviews_csv, tmp_path):
    with pytest.raises(DataError, match="data.id_column='review_id'"):
        prepare_data(make_config(reviews_csv, tmp_path, id_column="review_id"))


def test_all_texts_empty(tmp_path):
    path = tmp_path / "blank.csv"
    pd.DataFrame({"cat": ["a", "b"], "label": [0, 1], "review": [" ", None]}
                 ).to_csv(path, index=False)
    with pytest.raises(DataError, match="no rows left"):
        prepare_data(make_config(path, tmp_path))


# Label vocabularies and masking ------------------------------------------


def test_label_vocab_from_train(reviews_csv, reviews, tmp_path):
    data = prepare_data(make_config(reviews_csv, tmp_path))
    train = data.splits["train"].frame
    assert data.vocabs["category"].labels == sorted(train["cat"].unique())
    assert data.vocabs["sentiment"].labels == ["0", "1"]


def test_label_ids_match_vocab(reviews_csv, tmp_path):
    data = prepare_data(make_config(reviews_csv, tmp_path))
    split = data.splits["train"]
    vocab = data.vocabs["category"]
    decoded = [vocab.labels[i] for i in split.labels["category"]]
    assert decoded == split.frame["cat"].tolist()


@pytest.fixture
def partly_labelled(reviews, tmp_path):
    """The review slice with the sentiment label blank on every third row."""
    frame = reviews.copy()
    frame["label"] = frame["label"].astype(object)
    frame.loc[frame.index % 3 == 0, "label"] = None
    path = tmp_path / "partly.csv"
    frame.to_csv(path, index=False)
    return str(path), frame


def test_missing_label_masked(partly_labelled, tmp_path):
    path, frame = partly_labelled
    split = prepare_data(make_config(path, tmp_path, split=[1.0, 0, 0])
                         ).splits["train"]
    unlabelled = frame["label"].isna().to_numpy()[split.row_ids]
    assert (split.labels["sentiment"][unlabelled] == MISSING).all()
    assert (split.labels["sentiment"][~unlabelled] != MISSING).all()
    assert (split.labels["category"] != MISSING).all()


def test_missing_label_counted(partly_labelled, tmp_path):
    path, frame = partly_labelled
    data = prepare_data(make_config(path, tmp_path, split=[1.0, 0, 0]))
    labelled = data.stats["labelled"]["train"]
    assert labelled["sentiment"] == int(frame["label"].notna().sum())
    assert labelled["category"] == len(frame)


def test_float_labels_normalized(partly_labelled, tmp_path):
    path, _ = partly_labelled
    data = prepare_data(make_config(path, tmp_path))
    assert data.vocabs["sentiment"].labels == ["0", "1"]


@pytest.fixture
def eval_with_new_category(reviews, tmp_path):
    """Train on the slice; validate on rows that include one new category."""
    train_path = tmp_path / "train.csv"
    valid_path = tmp_path / "valid.csv"
    shuffled = reviews.sample(frac=1.0, random_state=0)
    shuffled.iloc[:300].to_csv(train_path, index=False)
    valid = shuffled.iloc[300:].copy()
    valid.iloc[:3, valid.columns.get_loc("cat")] = "玩具"
    valid.to_csv(valid_path, index=False)
    return str(train_path), str(valid_path)


def test_unknown_label_error(eval_with_new_category, tmp_path):
    train_path, valid_path = eval_with_new_category
    config = make_config(train_path, tmp_path, valid_path=valid_path)
    with pytest.raises(DataError) as info:
        prepare_data(config)
    message = str(info.value)
    assert "valid split" in message
    assert "'玩具': 3" in message
    assert "'书籍'" in message  # the training labels are listed
    assert "data.unknown_label=ignore" in message


def test_unknown_label_ignored(eval_with_new_category, tmp_path):
    train_path, valid_path = eval_with_new_category
    config = make_config(train_path, tmp_path, valid_path=valid_path,
                         unknown_label="ignore")
    valid = prepare_data(config).splits["valid"]
    new = (valid.frame["cat"] == "玩具").to_numpy()
    assert (valid.labels["category"][new] == MISSING).all()
    assert (valid.labels["category"][~new] != MISSING).all()
    assert (valid.labels["sentiment"] != MISSING).all()


def test_binary_positive_label(tmp_path):
    task = build_config(tiny_config(tmp_path / "x.csv", tmp_path)).tasks[1]
    vocab = LabelVocab.build(task, ["yes", "no", "yes", None])
    assert vocab.labels == ["no", "yes"]


def test_binary_positive_unknown(tmp_path):
    task = build_config(tiny_config(tmp_path / "x.csv", tmp_path)).tasks[1]
    with pytest.raises(DataError, match="positive_label"):
        LabelVocab.build(task, ["good", "bad"])


def test_binary_three_values(tmp_path):
    task = build_config(tiny_config(tmp_path / "x.csv", tmp_path)).tasks[1]
    with pytest.raises(DataError, match="multiclass"):
        LabelVocab.build(task, ["0", "1", "2"])


@pytest.mark.parametrize("value, expected", [
    (1.0, "1"), (np.float64(0.0), "0"), (float("nan"), None), (None, None),
    (" 书籍 ", "书籍"), ("", None), (True, "true"), (2.5, "2.5"),
    (b"1", "1"),
])
def test_normalize_label(value, expected):
    assert normalize_label(value) == expected


# Splits and sampling -----------------------------------------------------


def split_ids(data):
    return {name: sorted(s.row_ids.tolist()) for name, s in data.splits.items()}


def test_split_deterministic(reviews_csv, tmp_path):
    first = prepare_data(make_config(reviews_csv, tmp_path, seed=3))
    second = prepare_data(make_config(reviews_csv, tmp_path, seed=3))
    assert split_ids(first) == split_ids(second)


def test_split_seed_changes(reviews_csv, tmp_path):
    first = prepare_data(make_config(reviews_csv, tmp_path, seed=3))
    second = prepare_data(make_config(reviews_csv, tmp_path, seed=4))
    assert split_ids(first)["valid"] != split_ids(second)["valid"]


def test_split_disjoint_complete(reviews_csv, reviews, tmp_path):
    data = prepare_data(make_config(reviews_csv, tmp_path))
    ids = split_ids(data)
    together = ids["train"] + ids["valid"] + ids["test"]
    assert sorted(together) == list(range(len(reviews)))


def test_split_stratified(reviews_csv, reviews, tmp_path):
    data = prepare_data(make_config(reviews_csv, tmp_path))
    per_category = reviews["cat"].value_counts()
    for name, share in (("valid", 0.1), ("test", 0.1), ("train", 0.8)):
        counts = data.splits[name].frame["cat"].value_counts()
        for cat, total in per_category.items():
            assert abs(counts.get(cat, 0) - total * share) <= 1, (name, cat)


def test_split_empty_valid(tmp_path, reviews):
    path = tmp_path / "few.csv"
    reviews.iloc[:4].to_csv(path, index=False)
    with pytest.raises(DataError, match="validation split is empty"):
        prepare_data(make_config(path, tmp_path))


def test_max_rows_stratified(shopping_zip, shopping_frame, tmp_path):
    config = make_config(shopping_zip, tmp_path, max_rows=1000,
                         split=[1.0, 0, 0])
    train = prepare_data(config).splits["train"]
    shares = shopping_frame["cat"].value_counts(normalize=True)
    counts = train.frame["cat"].value_counts()
    assert len(train) == 1000
    for cat, share in shares.items():
        assert abs(counts[cat] - 1000 * share) <= 1.5, cat


def test_max_rows_seeded(reviews_csv, tmp_path):
    first = prepare_data(make_config(reviews_csv, tmp_path, max_rows=100))
    second = prepare_data(make_config(reviews_csv, tmp_path, max_rows=100))
    assert split_ids(first) == split_ids(second)


def test_stratified_sample_small_frame(reviews):
    assert len(stratified_sample(reviews, "cat", 10_000, 0)) == len(reviews)


# Quirks of the real review file ------------------------------------------


@pytest.fixture(scope="module")
def real_data(tmp_path_factory):
    """The whole review file, cleaned and split as a training run does."""
    from conftest import SHOPPING_ZIP

    tmp_path = tmp_path_factory.mktemp("real")
    return prepare_data(make_config(SHOPPING_ZIP, tmp_path))


def expected_duplicates(shopping_frame):
    texts = shopping_frame["review"].fillna("").map(
        lambda t: t.translate(dict.fromkeys(map(ord, INVISIBLE))).strip())
    return int(texts[texts != ""].duplicated().sum())


def all_texts(data):
    return [t for s in data.splits.values() for t in s.texts]


def test_real_bom_raw(shopping_frame):
    assert shopping_frame["review"][0].startswith("\ufeff")


def test_real_bom_stripped(real_data):
    split = next(s for s in real_data.splits.values() if 0 in s.row_ids)
    text = split.texts[row_of(split, 0)]
    assert not text.startswith("\ufeff")
    assert text.startswith("做父母一定要有刘墉这样的心态")


def test_real_no_invisible_marks(real_data):
    marked = [t for t in all_texts(real_data) if any(c in t for c in INVISIBLE)]
    assert marked == []


def test_real_empty_dropped(real_data):
    assert real_data.stats["train"]["empty_text"] == 1
    assert "" not in all_texts(real_data)


def test_real_duplicates_dropped(real_data, shopping_frame):
    texts = all_texts(real_data)
    assert real_data.stats["train"]["duplicate_text"] == expected_duplicates(
        shopping_frame)
    assert len(set(texts)) == len(texts)


def test_real_rows_kept(real_data, shopping_frame):
    stats = real_data.stats["train"]
    expected = SHOPPING_ROWS - 1 - expected_duplicates(shopping_frame)
    assert stats["rows_read"] == SHOPPING_ROWS
    assert stats["rows_kept"] == expected
    assert sum(real_data.stats["rows"].values()) == expected


def test_real_long_review_kept(real_data):
    longest = max(len(t) for t in all_texts(real_data))
    assert longest == LONGEST_REVIEW_CHARS


def test_real_duplicates_kept(shopping_zip, shopping_frame, tmp_path):
    config = make_config(shopping_zip, tmp_path, drop_duplicates=False,
                         split=[1.0, 0, 0])
    data = prepare_data(config)
    assert data.stats["train"]["duplicate_text"] == expected_duplicates(
        shopping_frame)
    assert len(data.splits["train"]) == SHOPPING_ROWS - 1


# Batching ----------------------------------------------------------------


def test_bucketed_batches_cover_rows():
    lengths = np.random.default_rng(0).integers(3, 60, size=103)
    batches = bucketed_batches(lengths, 8, 4, np.random.default_rng(1))
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(103))
    assert max(len(b) for b in batches) == 8


def test_bucketed_batches_seeded():
    lengths = np.arange(50) % 7
    first = bucketed_batches(lengths, 4, 2, np.random.default_rng(5))
    second = bucketed_batches(lengths, 4, 2, np.random.default_rng(5))
    assert [b.tolist() for b in first] == [b.tolist() for b in second]


def test_sorted_batches_by_length():
    lengths = [5, 2, 9, 2, 7]
    batches = sorted_batches(lengths, 2)
    order = np.concatenate(batches)
    assert [lengths[i] for i in order] == sorted(lengths)


def test_pad_batch():
    input_ids, token_type_ids = pad_batch(
        [np.array([1, 5, 2]), np.array([1, 2])], pad_id=0)
    assert input_ids.tolist() == [[1, 5, 2], [1, 2, 0]]
    assert token_type_ids.shape == (2, 3)
    assert input_ids.dtype == np.int64
