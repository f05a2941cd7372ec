"""Pretraining: word units, knowledge masking, the MLM loop, resume, errors.

The masking tests run on 401 real reviews of online_shopping_10_cats with
the official ERNIE 3.0 vocabulary and jieba. The training tests use a
1-layer ERNIE with hidden size 32.
"""

import copy
import os
import signal
import subprocess
import sys
import time

import numpy as np
import paddle
import pytest
from conftest import VOCAB_FILE, scalars, tiny_config, write_yaml

from ernie_marketing.cli import main
from ernie_marketing.config import build_config
from ernie_marketing.pretrain import build_pretrain_config, pretrain
from ernie_marketing.pretrain.config import MaskingConfig
from ernie_marketing.pretrain.masking import CHAR, PHRASE, WORD, KnowledgeMasker
from ernie_marketing.pretrain.segmentation import (
    CorpusEncoder,
    WordSegmenter,
    token_offsets,
)
from ernie_marketing.pretrain.trainer import Pretrainer
from ernie_marketing.tokenizer import standard_vocab_file

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBPROCESS_TIMEOUT = 600
MAX_LENGTH = 64
TINY_TRAIN = {"epochs": 1, "max_steps": 6, "batch_size": 16,
              "eval_batch_size": 64, "learning_rate": 1e-3, "eval_steps": 3,
              "logging_steps": 2, "save_steps": 3, "seed": 42,
              "num_threads": 2, "progress_bar": "off"}


def pretrain_config(corpus, output_dir, **sections):
    """Return a raw config for a tiny ERNIE pretrained on `corpus`."""
    raw = {
        "data": {"files": [{"path": str(corpus), "text_column": "review"}],
                 "valid_docs": 40, "seed": 0},
        "tokenizer": {"vocab_file": VOCAB_FILE, "max_length": MAX_LENGTH},
        "model": {"encoder": {"hidden_size": 32, "num_hidden_layers": 1,
                              "num_attention_heads": 2,
                              "intermediate_size": 64,
                              "max_position_embeddings": 128}},
        "train": dict(TINY_TRAIN),
        "output": {"dir": str(output_dir)},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(copy.deepcopy(values))
    return raw


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from paddlenlp.transformers import ErnieTokenizer

    work_dir = tmp_path_factory.mktemp("vocab")
    return ErnieTokenizer(standard_vocab_file(VOCAB_FILE, str(work_dir)))


@pytest.fixture(scope="module")
def segmenter():
    return WordSegmenter()


@pytest.fixture(scope="module")
def review_texts(reviews):
    texts = [str(t).lstrip("\ufeff").strip() for t in reviews["review"]
             if isinstance(t, str)]
    return [t for t in texts if t]


@pytest.fixture(scope="module")
def sequences(tokenizer, segmenter, review_texts):
    encoder = CorpusEncoder(tokenizer, MAX_LENGTH, segmenter)
    return [s for s in encoder.encode_all(review_texts) if len(s.unit_starts)]


def make_masker(tokenizer, **masking):
    ids = tokenizer.convert_tokens_to_ids
    special = [ids(t) for t in ("[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]")]
    vocab_size = max(tokenizer.vocab.idx_to_token) + 1
    return KnowledgeMasker(MaskingConfig(**masking), ids("[MASK]"), special,
                           vocab_size)


def masked_sets(masker, sequences, seed=0):
    """Return each sequence's masked positions as a set, and the spans."""
    rng = np.random.default_rng(seed)
    results = [masker.mask(s, rng) for s in sequences]
    return [set(r.positions.tolist()) for r in results], results


# Word units ------------------------------------------------------------


def test_offsets_match_paddlenlp(tokenizer, review_texts):
    compared = 0
    for text in review_texts[:150]:
        tokens = tokenizer.tokenize(text)
        expected = tokenizer.get_offset_mapping(text)
        found = token_offsets(text, tokens)
        for token, mine, theirs in zip(tokens, found, expected):
            if token == "[UNK]":
                assert mine is None
                continue
            assert mine == tuple(theirs), (text, token)
            compared += 1
    assert compared > 5000


def test_units_follow_jieba_words(tokenizer, segmenter, review_texts):
    """Tokens of one jieba word share a unit, and units are jieba words."""
    encoder = CorpusEncoder(tokenizer, 10000, segmenter)
    units_total = units_equal_word = multi_token_words = 0
    for text in review_texts:
        tokens = tokenizer.tokenize(text)
        offsets = token_offsets(text, tokens)
        (sequence,) = encoder.encode(text)
        # Unit -> character span, through the offsets of its tokens.
        unit_spans = {(offsets[s - 1][0], offsets[e - 2][1])
                      for s, e in zip(sequence.unit_starts, sequence.unit_ends)}
        unit_of_token = {}
        for number, (s, e) in enumerate(zip(sequence.unit_starts,
                                            sequence.unit_ends)):
            for position in range(s, e):
                unit_of_token[position - 1] = number
        words = segmenter.words(text)
        assert sum(end - start for _, start, end in words) == len(text)
        for word, start, end in words:
            inside = [i for i, span in enumerate(offsets) if span is not None
                      and start <= span[0] and span[1] <= end]
            if len(inside) >= 2 and all(i in unit_of_token for i in inside):
                multi_token_words += 1
                assert len({unit_of_token[i] for i in inside}) == 1, (text, word)
        units_total += len(unit_spans)
        word_spans = {(start, end) for _, start, end in words}
        units_equal_word += len(unit_spans & word_spans)
    assert multi_token_words > 1000
    assert units_equal_word / units_total > 0.99


def test_long_review_split_at_units(tokenizer, segmenter, review_texts):
    longest = max(review_texts, key=len)
    encoder = CorpusEncoder(tokenizer, MAX_LENGTH, segmenter)
    chunks = encoder.encode(longest)
    n_tokens = len(tokenizer.tokenize(longest))
    assert n_tokens > 3 * MAX_LENGTH
    assert len(chunks) >= n_tokens / (MAX_LENGTH - 2)
    assert sum(len(c) - 2 for c in chunks) == n_tokens
    # No cut falls inside a unit, so every unit of the whole review survives.
    (whole,) = CorpusEncoder(tokenizer, 10000, segmenter).encode(longest)
    unit_tokens = sum(int((c.unit_ends - c.unit_starts).sum()) for c in chunks)
    assert unit_tokens == int((whole.unit_ends - whole.unit_starts).sum())
    for chunk in chunks:
        assert len(chunk) <= MAX_LENGTH
        assert chunk.input_ids[0] == tokenizer.convert_tokens_to_ids("[CLS]")
        assert chunk.input_ids[-1] == tokenizer.convert_tokens_to_ids("[SEP]")


# Masking ---------------------------------------------------------------


def test_word_masking_whole_words(tokenizer, sequences):
    masker = make_masker(tokenizer, char_ratio=0.0, word_ratio=1.0,
                         phrase_ratio=0.0)
    masked, _ = masked_sets(masker, sequences)
    whole_multi_token = 0
    for positions, sequence in zip(masked, sequences):
        for start, end in zip(sequence.unit_starts, sequence.unit_ends):
            hit = sum(p in positions for p in range(start, end))
            assert hit in (0, end - start)
            if hit and end - start >= 2:
                whole_multi_token += 1
    assert whole_multi_token > 300


def test_word_masking_real_sentence(tokenizer, segmenter):
    text = "这款手机的屏幕很清晰，电池也耐用，物流速度快"
    (sequence,) = CorpusEncoder(tokenizer, MAX_LENGTH, segmenter).encode(text)
    tokens = ["[CLS]", *tokenizer.tokenize(text), "[SEP]"]
    units = ["".join(tokens[s:e]) for s, e in zip(sequence.unit_starts,
                                                   sequence.unit_ends)]
    for word in ("手机", "屏幕", "清晰", "电池", "耐用", "物流", "速度"):
        assert word in units
    masker = make_masker(tokenizer, char_ratio=0.0, word_ratio=1.0,
                         phrase_ratio=0.0)
    masked_words = 0
    for seed in range(200):
        positions = set(masker.mask(sequence, np.random.default_rng(seed))
                        .positions.tolist())
        for start, end in zip(sequence.unit_starts, sequence.unit_ends):
            hit = sum(p in positions for p in range(start, end))
            assert hit in (0, end - start)
            masked_words += hit == end - start and end - start == 2
    assert masked_words > 100


def test_phrase_masking_spans_words(tokenizer, sequences):
    masker = make_masker(tokenizer, char_ratio=0.0, word_ratio=0.0,
                         phrase_ratio=1.0, max_phrase_words=3)
    _, results = masked_sets(masker, sequences)
    kinds = [kind for r in results for _, _, kind in r.spans]
    assert kinds.count(PHRASE) / len(kinds) > 0.8
    for result, sequence in zip(results, sequences):
        starts = set(sequence.unit_starts.tolist())
        ends = set(sequence.unit_ends.tolist())
        for start, end, kind in result.spans:
            assert start in starts
            assert end in ends
            if kind == PHRASE:
                inner = [s for s in starts if start < s < end]
                assert 1 <= len(inner) <= 2


@pytest.mark.parametrize("rate, ratios", [
    (0.15, (0.3, 0.5, 0.2)),
    (0.15, (0.0, 1.0, 0.0)),
    (0.15, (0.0, 0.0, 1.0)),
    (0.3, (0.3, 0.5, 0.2)),
    (0.05, (1.0, 0.0, 0.0)),
])
def test_mask_rate_as_configured(tokenizer, sequences, rate, ratios):
    masker = make_masker(tokenizer, mask_rate=rate, char_ratio=ratios[0],
                         word_ratio=ratios[1], phrase_ratio=ratios[2])
    masked = maskable = 0
    for seed in range(5):
        positions, _ = masked_sets(masker, sequences, seed)
        masked += sum(len(p) for p in positions)
        maskable += sum(int((s.unit_ends - s.unit_starts).sum())
                        for s in sequences)
    assert abs(masked / maskable - rate) < 0.005


def test_unit_kind_proportions(tokenizer, sequences):
    masker = make_masker(tokenizer, char_ratio=0.3, word_ratio=0.5,
                         phrase_ratio=0.2)
    kinds = []
    for seed in range(3):
        _, results = masked_sets(masker, sequences, seed)
        kinds += [kind for r in results for _, _, kind in r.spans]
    shares = {kind: kinds.count(kind) / len(kinds) for kind in (CHAR, WORD,
                                                                PHRASE)}
    # A phrase that does not fit falls back to a word, so phrases come out
    # a little below their share and words above.
    assert abs(shares[CHAR] - 0.3) < 0.05
    assert 0.45 < shares[WORD] < 0.62
    assert 0.1 < shares[PHRASE] <= 0.22


def test_replacement_80_10_10(tokenizer, sequences):
    masker = make_masker(tokenizer)
    mask_id = tokenizer.convert_tokens_to_ids("[MASK]")
    counts = {"mask": 0, "keep": 0, "random": 0}
    rng = np.random.default_rng(0)
    for _ in range(5):
        for sequence in sequences:
            result = masker.mask(sequence, rng)
            replaced = result.input_ids[result.positions]
            counts["mask"] += int((replaced == mask_id).sum())
            counts["keep"] += int((replaced == result.labels).sum())
            counts["random"] += int(((replaced != mask_id)
                                     & (replaced != result.labels)).sum())
    total = sum(counts.values())
    assert total > 10000
    assert abs(counts["mask"] / total - 0.8) < 0.02
    assert abs(counts["keep"] / total - 0.1) < 0.015
    assert abs(counts["random"] / total - 0.1) < 0.015


def test_special_tokens_never_masked(tokenizer, segmenter, review_texts):
    ids = tokenizer.convert_tokens_to_ids
    special = {ids(t) for t in ("[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]")}
    # Emoji and full-width letters are [UNK] in the ERNIE vocabulary.
    texts = [f"{t}😀ＡＢＣ" for t in review_texts[:120]]
    encoder = CorpusEncoder(tokenizer, MAX_LENGTH, segmenter)
    batch_sequences = [s for s in encoder.encode_all(texts) if len(s.unit_starts)]
    masker = make_masker(tokenizer, mask_rate=0.5)
    pad_id = ids("[PAD]")
    unk_seen = 0
    for seed in range(10):
        rng = np.random.default_rng(seed)
        for start in range(0, len(batch_sequences), 16):
            chunk = batch_sequences[start:start + 16]
            batch = masker.mask_batch(chunk, rng, pad_id)
            assert not set(batch.labels.tolist()) & special
            width = batch.input_ids.shape[1]
            for position in batch.masked_positions:
                row, column = divmod(int(position), width)
                assert 0 < column < len(chunk[row]) - 1
            unk_seen += sum(int((s.input_ids == ids("[UNK]")).sum())
                            for s in chunk)
    assert unk_seen > 0


# Training --------------------------------------------------------------


@pytest.fixture(scope="module")
def pretrained(reviews_csv, tmp_path_factory):
    """Run 6 steps of a tiny model on the real review slice, once per module."""
    output_dir = tmp_path_factory.mktemp("pretrained") / "run"
    config = build_pretrain_config(pretrain_config(reviews_csv, output_dir))
    result = pretrain(config)
    return str(output_dir), result


def test_loss_falls_on_repeated_corpus(review_texts, tmp_path):
    short = [text for text in review_texts if len(text) < 40][:16]
    corpus = tmp_path / "repeated.txt"
    corpus.write_text("\n".join(short * 20), encoding="utf-8")
    raw = pretrain_config(corpus, tmp_path / "run", train={
        "epochs": 5, "max_steps": 24, "learning_rate": 1e-2, "eval_steps": 8,
        "warmup_ratio": 0.0, "logging_steps": 4, "save_steps": 24})
    # The held-out copies repeat training texts, so their loss falls too.
    raw["data"] = {"files": [{"path": str(corpus)}], "valid_docs": 16,
                   "drop_duplicates": False}
    result = pretrain(build_pretrain_config(raw))
    logged = scalars(str(tmp_path / "run"))
    evals = [value for _, value in logged["pretrain/eval_mlm_loss"]]
    train_losses = [value for _, value in logged["pretrain/mlm_loss"]]
    assert [step for step, _ in logged["pretrain/eval_mlm_loss"]] == [
        0, 8, 16, 24]
    assert evals[-1] < evals[0] - 1.0
    assert train_losses[-1] < train_losses[0] - 0.5
    assert [step for step, _ in logged["pretrain/mlm_accuracy"]] == list(
        range(4, 25, 4))
    assert result["valid"]["mlm_loss"] == pytest.approx(evals[-1], rel=1e-5)


def test_model_dir_loads(pretrained):
    from paddlenlp.transformers import ErnieModel, ErnieTokenizer

    run_dir, result = pretrained
    model_dir = os.path.join(run_dir, "model")
    assert result["model_dir"] == model_dir
    for name in ("config.json", "model_state.pdparams", "vocab.txt",
                 "tokenizer_config.json", "mlm_head.pdparams"):
        assert os.path.isfile(os.path.join(model_dir, name)), name
    encoder = ErnieModel.from_pretrained(model_dir)
    saved = paddle.load(os.path.join(run_dir, "last", "model.pdparams"))
    for name, value in encoder.state_dict().items():
        np.testing.assert_array_equal(value.numpy(),
                                      saved[f"ernie.{name}"].numpy())
    tokenizer = ErnieTokenizer.from_pretrained(model_dir)
    assert tokenizer.tokenize("手机很好用") == ["手", "机", "很", "好", "用"]
    assert encoder.config.hidden_size == 32


def test_finetuning_loads_model_dir(pretrained, reviews_csv, tmp_path):
    from paddlenlp.transformers import ErnieModel

    from ernie_marketing.engine.trainer import train
    from ernie_marketing.models import build_encoder

    run_dir, _ = pretrained
    model_dir = os.path.join(run_dir, "model")
    raw = tiny_config(reviews_csv, tmp_path / "finetune",
                      tokenizer={"vocab_file": None},
                      model={"name_or_path": model_dir},
                      train={"max_steps": 2, "eval_steps": 2})
    config = build_config(raw)
    encoder = build_encoder(config.model, 39980, config.tokenizer.max_length)
    reference = ErnieModel.from_pretrained(model_dir).state_dict()
    for name, value in encoder.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), reference[name].numpy())
    result = train(config)
    assert result["steps"] == 2
    vocab = os.path.join(tmp_path, "finetune", "best", "encoder", "vocab.txt")
    with open(vocab, encoding="utf-8") as f:
        assert len(f.read().splitlines()) == 39980


def test_continue_from_model_dir(pretrained, reviews_csv, tmp_path):
    """model.name_or_path=DIR restores the encoder and the MLM head."""
    from ernie_marketing.pretrain.model import build_mlm_model, mlm_head_state

    run_dir, _ = pretrained
    model_dir = os.path.join(run_dir, "model")
    config = build_pretrain_config(pretrain_config(
        reviews_csv, tmp_path / "more", tokenizer={"vocab_file": None},
        model={"name_or_path": model_dir}, train={"max_steps": 2}))
    model = build_mlm_model(config.model, 39980, MAX_LENGTH)
    assert (model.cls.predictions.decoder.weight
            is model.ernie.embeddings.word_embeddings.weight)
    head = paddle.load(os.path.join(model_dir, "mlm_head.pdparams"))
    for name, value in mlm_head_state(model).items():
        np.testing.assert_array_equal(value.numpy(), head[name].numpy())
    result = pretrain(config)
    assert result["steps"] == 2


def test_resume_matches_uninterrupted(pretrained, reviews_csv, tmp_path,
                                      monkeypatch):
    reference_dir, _ = pretrained
    raw = pretrain_config(reviews_csv, tmp_path / "run")
    original = Pretrainer._train_step

    def interrupt_at_step_4(self, batch):
        result = original(self, batch)
        if self.step == 3:
            self.interrupt.requested = True
        return result

    monkeypatch.setattr(Pretrainer, "_train_step", interrupt_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        pretrain(build_pretrain_config(raw))
    monkeypatch.setattr(Pretrainer, "_train_step", original)
    state_file = tmp_path / "run" / "last" / "trainer_state.json"
    assert '"step": 4' in state_file.read_text()
    assert not (tmp_path / "run" / "model").exists()

    raw["train"]["resume"] = True
    result = pretrain(build_pretrain_config(raw))
    assert result["steps"] == TINY_TRAIN["max_steps"]
    resumed = paddle.load(str(tmp_path / "run" / "last" / "model.pdparams"))
    reference = paddle.load(os.path.join(reference_dir, "last",
                                         "model.pdparams"))
    assert sorted(resumed) == sorted(reference)
    for name in reference:
        np.testing.assert_array_equal(resumed[name].numpy(),
                                      reference[name].numpy())
    logged = scalars(str(tmp_path / "run"))
    assert [s for s, _ in logged["pretrain/mlm_loss"]] == [2, 4, 6]
    assert logged["pretrain/mlm_loss"] == scalars(reference_dir)[
        "pretrain/mlm_loss"]


def test_resume_rejects_changed_config(pretrained, reviews_csv, tmp_path):
    raw = pretrain_config(reviews_csv, tmp_path / "run",
                          train={"resume": os.path.join(pretrained[0], "last")},
                          masking={"mask_rate": 0.2})
    with pytest.raises(ValueError, match=r"masking\.mask_rate \(saved 0\.15, "
                                         r"now 0\.2\)"):
        pretrain(build_pretrain_config(raw))


def test_existing_output_rejected(pretrained, reviews_csv):
    raw = pretrain_config(reviews_csv, pretrained[0])
    with pytest.raises(ValueError, match="already contains"):
        pretrain(build_pretrain_config(raw))


def test_sigint_saves_and_exits_130(reviews_csv, tmp_path):
    raw = pretrain_config(reviews_csv, tmp_path / "run",
                          train={"epochs": 100, "max_steps": 2000,
                                 "logging_steps": 1,
                                 "save_steps": 1000, "eval_steps": 1000})
    config_path = write_yaml(tmp_path / "config.yaml", raw)
    process = subprocess.Popen(
        [sys.executable, "tools/pretrain.py", "-c", config_path], cwd=REPO_DIR,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "run" / "pretrain.log"
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        if log.exists() and "step 2/2000" in log.read_text(encoding="utf-8"):
            break
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()[1][-2000:]
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=SUBPROCESS_TIMEOUT)
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "interrupted"
    assert out == ""
    state = (tmp_path / "run" / "last" / "trainer_state.json").read_text()
    assert '"step": ' in state
    assert "pretraining interrupted after" in err


# Bad inputs ------------------------------------------------------------


def run_cli_error(capsys, config_path, *overrides):
    """Run the pretrain command and return its one error line."""
    argv = ["pretrain", "-c", config_path]
    if overrides:
        argv += ["-o", *overrides]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture
def bad_input_config(reviews_csv, tmp_path):
    raw = pretrain_config(reviews_csv, tmp_path / "run")
    return write_yaml(tmp_path / "config.yaml", raw)


def test_missing_corpus_file(capsys, bad_input_config, tmp_path):
    missing = tmp_path / "absent.csv"
    line = run_cli_error(capsys, bad_input_config,
                         f"data.files.0.path={missing}")
    assert f"not found: {missing}" in line
    line = run_cli_error(capsys, bad_input_config,
                         f"data.files.0.path={tmp_path / 'absent.txt'}",
                         "data.files.0.text_column=null")
    assert "corpus file not found" in line


def test_empty_corpus(capsys, bad_input_config, tmp_path):
    empty = tmp_path / "blank.txt"
    empty.write_text("\n  \n\ufeff\n", encoding="utf-8")
    line = run_cli_error(capsys, bad_input_config, f"data.files.0.path={empty}",
                         "data.files.0.text_column=null")
    assert "the corpus is empty" in line


@pytest.mark.parametrize("rate", ["0", "1", "1.5", "-0.1"])
def test_mask_rate_out_of_range(capsys, bad_input_config, rate):
    line = run_cli_error(capsys, bad_input_config, f"masking.mask_rate={rate}")
    assert "masking.mask_rate=" in line
    assert "0 < mask_rate < 1" in line


def test_unknown_text_column(capsys, bad_input_config):
    line = run_cli_error(capsys, bad_input_config,
                         "data.files.0.text_column=body")
    assert "data.files[0].text_column='body' not found" in line
    assert "'review'" in line


def test_table_needs_text_column(capsys, bad_input_config):
    line = run_cli_error(capsys, bad_input_config,
                         "data.files.0.text_column=null")
    assert "data.files[0].text_column=None is invalid" in line


def test_ratios_must_sum_to_one(capsys, bad_input_config):
    line = run_cli_error(capsys, bad_input_config, "masking.char_ratio=0.5")
    assert "sum to 1.2" in line


def test_too_many_valid_docs(capsys, bad_input_config):
    line = run_cli_error(capsys, bad_input_config, "data.valid_docs=100000")
    assert "data.valid_docs=100000 leaves no training documents" in line


def test_launcher_processes_rejected(capsys, bad_input_config, tmp_path,
                                     monkeypatch):
    # paddle.distributed.launch sets PADDLE_TRAINERS_NUM in each process.
    monkeypatch.setenv("PADDLE_TRAINERS_NUM", "2")
    line = run_cli_error(capsys, bad_input_config)
    assert "paddle.distributed.launch started 2" in line
    assert "without the launcher" in line
    assert not (tmp_path / "run").exists()
