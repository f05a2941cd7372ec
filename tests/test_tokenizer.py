"""Tokenizer: both vocabulary layouts, built vocabularies and encoding."""

import os

import pytest
from conftest import ERNIE_UNK_ID, LONGEST_REVIEW_CHARS, tiny_config

from ernie_marketing.config import build_config
from ernie_marketing.errors import ConfigError, DataError
from ernie_marketing.tokenizer import (
    SPECIAL_TOKENS,
    TextEncoder,
    build_vocab,
    from_pretrained,
    load_tokenizer,
    read_vocab_layout,
    standard_vocab_file,
)

SAMPLE_TEXT = "这款手机很好用，电池耐用，物流也快！"


@pytest.fixture(scope="module")
def tab_ids(vocab_file):
    """token -> id as the token<TAB>id file states, first id of a token kept."""
    ids = {}
    with open(vocab_file, encoding="utf-8") as f:
        for line in f:
            token, _, token_id = line.rstrip("\n").rpartition("\t")
            ids.setdefault(token, int(token_id))
    return ids


@pytest.fixture(scope="module")
def lines_vocab(vocab_file, tmp_path_factory):
    """The same vocabulary in the one-token-per-line layout."""
    tokens = {}
    with open(vocab_file, encoding="utf-8") as f:
        for line in f:
            token, _, token_id = line.rstrip("\n").rpartition("\t")
            tokens[int(token_id)] = token
    path = tmp_path_factory.mktemp("lines") / "vocab.txt"
    path.write_text("\n".join(tokens[i] for i in range(len(tokens))) + "\n",
                    encoding="utf-8")
    return str(path)


def tokenizer_for(tmp_path, texts=None, **tokenizer):
    """Load the tokenizer that a config with these tokenizer keys names."""
    raw = tiny_config(tmp_path / "train.csv", tmp_path / "run")
    raw["tokenizer"] = {"max_length": 64, **tokenizer}
    return load_tokenizer(build_config(raw), str(tmp_path / "work"), texts)


# Vocabulary layouts ------------------------------------------------------


def test_layout_tab(vocab_file):
    assert read_vocab_layout(vocab_file) == "tab"


def test_layout_lines(lines_vocab):
    assert read_vocab_layout(lines_vocab) == "lines"


def test_tab_rewritten(vocab_file, tmp_path):
    path = standard_vocab_file(vocab_file, str(tmp_path))
    assert path == str(tmp_path / "vocab.txt")
    assert read_vocab_layout(path) == "lines"


def test_tab_rewritten_same_lines(vocab_file, lines_vocab, tmp_path):
    path = standard_vocab_file(vocab_file, str(tmp_path))
    with open(path, encoding="utf-8") as f:
        rewritten = f.read()
    with open(lines_vocab, encoding="utf-8") as f:
        expected = f.read()
    assert rewritten == expected


def test_lines_used_as_is(lines_vocab, tmp_path):
    assert standard_vocab_file(lines_vocab, str(tmp_path)) == lines_vocab


@pytest.mark.parametrize("token", ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]",
                                   "好", "手", "机", "，"])
def test_tab_ids_kept(vocab_file, tab_ids, tmp_path, token):
    tokenizer = tokenizer_for(tmp_path, vocab_file=vocab_file)
    assert tokenizer.convert_tokens_to_ids(token) == tab_ids[token]


def test_unk_id(vocab_file, tmp_path):
    tokenizer = tokenizer_for(tmp_path, vocab_file=vocab_file)
    assert tokenizer.convert_tokens_to_ids("[UNK]") == ERNIE_UNK_ID


def test_layouts_same_ids(vocab_file, lines_vocab, tmp_path):
    from_tab = tokenizer_for(tmp_path / "tab", vocab_file=vocab_file)
    from_lines = tokenizer_for(tmp_path / "lines", vocab_file=lines_vocab)
    tab_ids = from_tab.convert_tokens_to_ids(from_tab.tokenize(SAMPLE_TEXT))
    line_ids = from_lines.convert_tokens_to_ids(
        from_lines.tokenize(SAMPLE_TEXT))
    assert tab_ids == line_ids
    assert ERNIE_UNK_ID not in tab_ids


def test_vocab_size(vocab_file, tmp_path):
    tokenizer = tokenizer_for(tmp_path, vocab_file=vocab_file)
    assert TextEncoder(tokenizer, 64).vocab_size == ERNIE_UNK_ID + 1


def test_directory_tab_layout(vocab_file, tab_ids, tmp_path):
    source = tmp_path / "model"
    source.mkdir()
    os.symlink(vocab_file, source / "vocab.txt")
    tokenizer = from_pretrained(str(source), str(tmp_path / "work"))
    assert tokenizer.convert_tokens_to_ids("好") == tab_ids["好"]
    assert tokenizer.convert_tokens_to_ids("[UNK]") == ERNIE_UNK_ID


def test_directory_without_vocab(tmp_path):
    with pytest.raises(ConfigError, match="no vocab.txt"):
        from_pretrained(str(tmp_path), str(tmp_path / "work"))


def test_vocab_file_not_found(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        standard_vocab_file(str(tmp_path / "absent.txt"), str(tmp_path))


def test_vocab_not_utf8(vocab_file, tmp_path):
    path = tmp_path / "gbk_vocab.txt"
    with open(vocab_file, encoding="utf-8") as f:
        path.write_bytes(f.read().encode("gbk", errors="replace"))
    with pytest.raises(ConfigError, match="gbk_vocab.txt is not UTF-8"):
        standard_vocab_file(str(path), str(tmp_path / "work"))


def test_vocab_empty(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="empty.txt is empty"):
        standard_vocab_file(str(path), str(tmp_path / "work"))


def test_lines_missing_specials(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("hello\nworld\n[UNK]\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        standard_vocab_file(str(path), str(tmp_path / "work"))
    missing = "lacks the special tokens ['[PAD]', '[CLS]', '[SEP]', '[MASK]']"
    assert missing in str(info.value)


def test_vocab_error_through_config(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("hello\nworld\n", encoding="utf-8")
    with pytest.raises(DataError, match="lacks the special tokens"):
        tokenizer_for(tmp_path, vocab_file=str(path))


def write_tab_vocab(path, rows):
    path.write_text("\n".join(f"{t}\t{i}" for t, i in rows), encoding="utf-8")
    return str(path)


SPECIAL_ROWS = [(t, i) for i, t in enumerate(SPECIAL_TOKENS)]


def test_tab_id_gap(tmp_path):
    path = write_tab_vocab(tmp_path / "v.txt", SPECIAL_ROWS + [("好", 7)])
    with pytest.raises(DataError, match="without gaps"):
        standard_vocab_file(path, str(tmp_path / "work"))


def test_tab_id_twice(tmp_path):
    path = write_tab_vocab(tmp_path / "v.txt", SPECIAL_ROWS + [("好", 2)])
    with pytest.raises(DataError, match="id 2 is used twice"):
        standard_vocab_file(path, str(tmp_path / "work"))


def test_tab_missing_specials(tmp_path):
    rows = [("[PAD]", 0), ("[CLS]", 1), ("[SEP]", 2), ("好", 3)]
    path = write_tab_vocab(tmp_path / "v.txt", rows)
    with pytest.raises(DataError) as info:
        standard_vocab_file(path, str(tmp_path / "work"))
    assert "'[MASK]'" in str(info.value)
    assert "'[UNK]'" in str(info.value)


# Vocabulary built from training text -------------------------------------


@pytest.fixture(scope="module")
def review_texts(reviews):
    return [t.lstrip("\ufeff") for t in reviews["review"]]


def test_build_vocab_specials(review_texts, tmp_path):
    path = build_vocab(review_texts, str(tmp_path / "vocab.txt"))
    with open(path, encoding="utf-8") as f:
        head = [next(f).rstrip("\n") for _ in range(5)]
    assert head == ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]"]


def test_build_vocab_unique(review_texts, tmp_path):
    path = build_vocab(review_texts, str(tmp_path / "vocab.txt"))
    with open(path, encoding="utf-8") as f:
        tokens = f.read().splitlines()
    assert len(tokens) == len(set(tokens))


def test_build_vocab_max_size(review_texts, tmp_path):
    path = build_vocab(review_texts, str(tmp_path / "vocab.txt"), max_size=50)
    with open(path, encoding="utf-8") as f:
        assert len(f.read().splitlines()) == 50


def test_build_vocab_min_freq(tmp_path):
    path = build_vocab(["好好好差", "好"], str(tmp_path / "vocab.txt"),
                       min_freq=2)
    with open(path, encoding="utf-8") as f:
        tokens = f.read().splitlines()
    assert "好" in tokens
    assert "差" not in tokens


def test_build_vocab_tokenizer_ids(review_texts, tmp_path):
    tokenizer = tokenizer_for(tmp_path, build_vocab=True, texts=review_texts)
    ids = [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert ids == [0, 1, 2, 3, 4]


def test_build_vocab_saved(review_texts, tmp_path):
    tokenizer_for(tmp_path, build_vocab=True, texts=review_texts)
    assert os.path.isfile(tmp_path / "work" / "vocab.txt")


def test_build_vocab_covers_train(review_texts, tmp_path):
    tokenizer = tokenizer_for(tmp_path, build_vocab=True, texts=review_texts)
    encoder = TextEncoder(tokenizer, 512)
    encoded, _ = encoder.encode(review_texts[:50])
    unk = tokenizer.convert_tokens_to_ids("[UNK]")
    assert all(unk not in ids for ids in encoded)


def test_build_vocab_unseen_word(review_texts, tmp_path):
    tokenizer = tokenizer_for(tmp_path, build_vocab=True, texts=review_texts)
    ids = tokenizer.convert_tokens_to_ids(tokenizer.tokenize("鑫"))
    assert ids == [4]


def test_build_vocab_needs_texts(tmp_path):
    with pytest.raises(ConfigError, match="needs training texts"):
        tokenizer_for(tmp_path, build_vocab=True)


# Encoding ----------------------------------------------------------------


@pytest.fixture(scope="module")
def ernie_tokenizer(vocab_file, tmp_path_factory):
    work = tmp_path_factory.mktemp("ernie")
    return tokenizer_for(work, vocab_file=vocab_file)


def test_encode_cls_sep(ernie_tokenizer):
    encoded, truncated = TextEncoder(ernie_tokenizer, 64).encode([SAMPLE_TEXT])
    assert encoded[0][0] == 1
    assert encoded[0][-1] == 2
    assert len(encoded[0]) == len(SAMPLE_TEXT) + 2
    assert truncated == 0


def test_encode_truncates_longest(ernie_tokenizer, shopping_frame):
    longest = max(shopping_frame["review"].dropna(), key=len)
    encoder = TextEncoder(ernie_tokenizer, 128)
    encoded, truncated = encoder.encode([longest, SAMPLE_TEXT])
    assert len(longest) == LONGEST_REVIEW_CHARS
    assert truncated == 1
    assert len(encoded[0]) == 128
    assert encoded[0][-1] == 2
    assert len(encoded[1]) < 128


def test_encode_exact_limit(ernie_tokenizer):
    text = "好" * 62
    encoded, truncated = TextEncoder(ernie_tokenizer, 64).encode([text])
    assert len(encoded[0]) == 64
    assert truncated == 0


def test_encode_empty(ernie_tokenizer):
    encoded, truncated = TextEncoder(ernie_tokenizer, 64).encode([""])
    assert encoded[0].tolist() == [1, 2]
    assert truncated == 0


def test_encode_emoji(ernie_tokenizer, tab_ids):
    encoded, _ = TextEncoder(ernie_tokenizer, 64).encode(["😀👍🏻", "好评😀"])
    assert encoded[0][0] == 1
    assert encoded[0][-1] == 2
    assert ERNIE_UNK_ID in encoded[0]
    assert encoded[1][1:3].tolist() == [tab_ids["好"], tab_ids["评"]]


def test_encode_lower_case(ernie_tokenizer):
    encoder = TextEncoder(ernie_tokenizer, 64)
    upper, _ = encoder.encode(["IPHONE"])
    lower, _ = encoder.encode(["iphone"])
    assert upper[0].tolist() == lower[0].tolist()
