"""Config schema: YAML to typed dataclasses, overrides and one-line errors."""

import os
import subprocess
import sys

import pytest
import yaml
from conftest import tiny_config

from ernie_marketing.cli import main
from ernie_marketing.config import (
    Config,
    EncoderConfig,
    TaskConfig,
    build_config,
    load_config,
    save_config,
)
from ernie_marketing.engine.checkpoint import load_saved_config
from ernie_marketing.errors import ConfigError

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def raw(tmp_path):
    """A valid config mapping whose data file exists."""
    train_path = tmp_path / "train.csv"
    train_path.write_text("cat,label,review\n书籍,1,好书\n", encoding="utf-8")
    return tiny_config(train_path, tmp_path / "run")


def config_error(raw):
    with pytest.raises(ConfigError) as info:
        build_config(raw)
    return str(info.value)


def test_load_yaml_typed_sections(make_config):
    path, _ = make_config()
    config = load_config(path)
    assert isinstance(config, Config)
    assert isinstance(config.model.encoder, EncoderConfig)
    assert isinstance(config.tasks[1], TaskConfig)
    assert config.tasks[1].type == "binary"
    assert config.model.encoder.hidden_size == 32
    assert config.train.learning_rate == 1e-3


def test_load_defaults_filled(make_config):
    path, _ = make_config()
    config = load_config(path)
    assert config.data.drop_duplicates is True
    assert config.data.unknown_label == "error"
    assert config.tasks[0].weight == 1.0
    assert config.model.pooling == "cls"


def test_exponent_float_in_yaml(make_config):
    path, _ = make_config(train={"learning_rate": "LR"})
    with open(path, encoding="utf-8") as f:
        text = f.read().replace("LR", "5e-5")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    assert load_config(path).train.learning_rate == 5e-5


def test_int_accepted_for_float(raw):
    raw["train"]["learning_rate"] = 1
    config = build_config(raw)
    assert isinstance(config.train.learning_rate, float)


def test_project_config_loads():
    config = load_config(os.path.join(REPO_DIR, "configs", "online_shopping.yaml"))
    assert [t.name for t in config.tasks] == ["category", "sentiment"]


# Overrides ---------------------------------------------------------------


def test_override_yaml_scalars(make_config):
    path, _ = make_config()
    config = load_config(path, ["train.max_steps=60", "data.max_rows=3000",
                                "data.drop_duplicates=false",
                                "train.learning_rate=2e-5",
                                "model.pooling=mean",
                                "data.valid_path=null"])
    assert config.train.max_steps == 60
    assert config.data.max_rows == 3000
    assert config.data.drop_duplicates is False
    assert config.train.learning_rate == 2e-5
    assert config.model.pooling == "mean"
    assert config.data.valid_path is None


def test_override_unquoted_on_off(make_config):
    """YAML reads on/off as booleans; switches that take "on"/"off" accept them."""
    path, _ = make_config()
    config = load_config(path, ["train.progress_bar=off",
                                "train.cpu_fast_kernels=on"])
    assert config.train.progress_bar == "off"
    assert config.train.cpu_fast_kernels == "on"


def test_override_task_by_name(make_config):
    path, _ = make_config()
    config = load_config(path, ["tasks.sentiment.weight=2"])
    assert config.task("sentiment").weight == 2.0
    assert config.task("category").weight == 1.0


def test_override_task_by_index(make_config):
    path, _ = make_config()
    config = load_config(path, ["tasks.0.weight=0.5"])
    assert config.tasks[0].weight == 0.5
    assert config.tasks[1].weight == 1.0


def test_override_list_value(make_config):
    path, _ = make_config()
    config = load_config(path, ["data.split=[0.7, 0.2, 0.1]"])
    assert config.data.split == [0.7, 0.2, 0.1]


def test_override_not_evaluated(make_config):
    path, _ = make_config()
    with pytest.raises(ConfigError) as info:
        load_config(path, ["train.batch_size=__import__('os').getpid()"])
    assert "train.batch_size" in str(info.value)


@pytest.mark.parametrize("item", ["train.max_steps", "=3", "tasks.7.weight=2",
                                  "tasks.price.weight=2"])
def test_override_malformed(make_config, item):
    path, _ = make_config()
    with pytest.raises(ConfigError) as info:
        load_config(path, [item])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("item", ["train.max_steps.x=3",
                                  "data.text_columns.0.x=1"])
def test_override_below_scalar(make_config, item):
    path, _ = make_config()
    with pytest.raises(ConfigError) as info:
        load_config(path, [item])
    assert f"override path {item.split('=')[0]} is invalid" in str(info.value)


@pytest.mark.parametrize("item", [".=5", "train..max_steps=5", "train.=5"])
def test_override_empty_key_part(make_config, item):
    path, _ = make_config()
    with pytest.raises(ConfigError, match="empty part"):
        load_config(path, [item])


def test_override_unknown_key(make_config):
    path, _ = make_config()
    with pytest.raises(ConfigError) as info:
        load_config(path, ["train.batch_sise=8"])
    assert "train.batch_sise" in str(info.value)


# Rejected values: each message is one line with the path and the value --


def test_unknown_key(raw):
    raw["train"]["lr"] = 0.1
    message = config_error(raw)
    assert "train.lr" in message
    assert "learning_rate" in message  # the allowed keys are listed
    assert "\n" not in message


def test_unknown_section(raw):
    raw["optimizer"] = {"name": "adam"}
    message = config_error(raw)
    assert "optimizer" in message
    assert "train" in message


def test_unknown_nested_key(raw):
    raw["model"]["encoder"]["layers"] = 2
    message = config_error(raw)
    assert "model.encoder.layers" in message
    assert "num_hidden_layers" in message


@pytest.mark.parametrize("value", ["32", True, 3.5, [32]])
def test_batch_size_wrong_type(raw, value):
    raw["train"]["batch_size"] = value
    message = config_error(raw)
    assert "train.batch_size" in message
    assert repr(value) in message
    assert "integer" in message
    assert "\n" not in message


def test_bool_wrong_type(raw):
    raw["data"]["drop_duplicates"] = "yes please"
    message = config_error(raw)
    assert "data.drop_duplicates" in message
    assert "true or false" in message


def test_literal_not_allowed(raw):
    raw["tasks"][0]["type"] = "survival"
    message = config_error(raw)
    assert "tasks[0].type" in message
    assert "'survival'" in message
    assert "'multiclass'" in message
    assert "'binary'" in message


def test_section_not_mapping(raw):
    raw["train"] = [1, 2]
    message = config_error(raw)
    assert "train=" in message
    assert "mapping" in message


def test_missing_train_path(raw):
    del raw["data"]["train_path"]
    message = config_error(raw)
    assert "data.train_path" in message
    assert "missing" in message
    assert "\n" not in message


def test_missing_label_column(raw):
    del raw["tasks"][0]["label_column"]
    message = config_error(raw)
    assert "tasks[0].label_column" in message
    assert "missing" in message


def test_missing_tasks(raw):
    del raw["tasks"]
    assert "tasks" in config_error(raw)


def test_empty_tasks(raw):
    raw["tasks"] = []
    message = config_error(raw)
    assert "tasks" in message
    assert "at least one" in message


def test_negative_learning_rate(raw):
    raw["train"]["learning_rate"] = -0.001
    message = config_error(raw)
    assert "train.learning_rate" in message
    assert "-0.001" in message
    assert "> 0" in message
    assert "\n" not in message


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_float_not_finite(raw, value):
    raw["train"]["learning_rate"] = value
    assert "expected a finite number" in config_error(raw)


@pytest.mark.parametrize("section, value", [
    ("data", -1), ("train", -1), ("train", 2**32), ("data", 10**14),
])
def test_seed_out_of_range(raw, section, value):
    raw[section]["seed"] = value
    message = config_error(raw)
    assert f"{section}.seed={value}" in message
    assert "4294967295" in message


def test_unknown_encoding(raw):
    raw["data"]["encoding"] = "klingon"
    assert "data.encoding='klingon' is invalid" in config_error(raw)


def test_template_mapping_quote_hint(raw):
    # `text_template: {review}` unquoted is a YAML mapping.
    raw["data"]["text_columns"] = []
    raw["data"]["text_template"] = {"review": None}
    assert "quote the value" in config_error(raw)


def test_boolean_label_quote_hint(raw):
    # `positive_label: yes` unquoted is the boolean true.
    raw["tasks"][1]["positive_label"] = True
    message = config_error(raw)
    assert "positive_label=True" in message
    assert "quote the value" in message


def test_split_not_summing_to_one(raw):
    raw["data"]["split"] = [0.8, 0.1, 0.2]
    message = config_error(raw)
    assert "data.split" in message
    assert "[0.8, 0.1, 0.2]" in message
    assert "sum to 1" in message


def test_split_wrong_length(raw):
    raw["data"]["split"] = [0.5, 0.5]
    assert "data.split" in config_error(raw)


def test_hidden_size_not_multiple(raw):
    raw["model"]["encoder"]["hidden_size"] = 30
    raw["model"]["encoder"]["num_attention_heads"] = 4
    message = config_error(raw)
    assert "model.encoder.hidden_size" in message
    assert "30" in message
    assert "multiple of num_attention_heads (4)" in message


def test_unknown_metric(raw):
    raw["train"]["metric"] = "category.auc"
    message = config_error(raw)
    assert "train.metric" in message
    assert "'category.auc'" in message
    assert "category.macro_f1" in message
    assert "sentiment.roc_auc" in message


def test_task_metric_accepted(raw):
    raw["train"]["metric"] = "sentiment.roc_auc"
    assert build_config(raw).train.metric == "sentiment.roc_auc"


@pytest.mark.parametrize("section, key, value", [
    ("train", "max_steps", 0),
    ("train", "epochs", 0),
    ("train", "warmup_ratio", 1.0),
    ("train", "early_stopping_patience", 0),
    ("data", "max_rows", 0),
    ("tokenizer", "max_length", 2),
    ("encoder", "hidden_dropout_prob", 1.0),
])
def test_impossible_value(raw, section, key, value):
    if section == "encoder":
        raw["model"]["encoder"][key] = value
        path = f"model.encoder.{key}"
    else:
        raw[section][key] = value
        path = f"{section}.{key}"
    message = config_error(raw)
    assert path in message
    assert repr(value) in message
    assert "\n" not in message


def test_duplicate_task_name(raw):
    raw["tasks"][1]["name"] = "category"
    message = config_error(raw)
    assert ".name='category'" in message
    assert "one task only" in message


def test_negative_task_weight(raw):
    raw["tasks"][1]["weight"] = -1
    assert "tasks[1].weight" in config_error(raw)


def test_text_source_required(raw):
    raw["data"]["text_columns"] = []
    message = config_error(raw)
    assert "data.text_columns" in message
    assert "text_template" in message


def test_vocabulary_required(raw):
    del raw["tokenizer"]["vocab_file"]
    message = config_error(raw)
    assert "tokenizer" in message
    assert "vocab_file" in message


def test_max_rows_and_max_steps(raw):
    raw["data"]["max_rows"] = 500
    raw["train"]["max_steps"] = 7
    config = build_config(raw)
    assert config.data.max_rows == 500
    assert config.train.max_steps == 7


def test_yaml_syntax_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  train_path: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert "not valid YAML" in str(info.value)


def test_config_file_not_found(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "absent.yaml"))
    assert "absent.yaml" in str(info.value)


def test_config_not_utf8(make_config, tmp_path):
    path, payload = make_config()
    text = yaml.safe_dump(payload, allow_unicode=True)
    gbk_path = tmp_path / "gbk.yaml"
    gbk_path.write_bytes(text.replace("category", "类别").encode("gbk"))
    with pytest.raises(ConfigError) as info:
        load_config(str(gbk_path))
    assert "gbk.yaml is not UTF-8" in str(info.value)


def test_config_binary_file(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00\x01garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(str(path))


def test_config_empty_file(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="empty.yaml is empty"):
        load_config(str(path))


def test_config_path_directory(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(str(tmp_path))


def test_config_repeated_key(make_config, tmp_path):
    path, _ = make_config()
    with open(path, encoding="utf-8") as f:
        text = f.read()
    repeated = tmp_path / "twice.yaml"
    repeated.write_text(text + "train:\n  max_steps: 1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(str(repeated))
    message = str(info.value)
    assert "key 'train'" in message
    assert "repeats" in message


def test_config_merge_key_allowed(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("base: &b\n  x: 1\n  y: 2\nother:\n  <<: *b\n  y: 3\n",
                    encoding="utf-8")
    from ernie_marketing.config.loader import _read_yaml

    assert _read_yaml(str(path))["other"] == {"x": 1, "y": 3}


# Saving --------------------------------------------------------------------


def test_save_round_trip(raw, tmp_path):
    config = build_config(raw)
    path = str(tmp_path / "saved.yaml")
    save_config(config, path)
    assert load_saved_config(path) == config


def test_saved_yaml_plain(raw, tmp_path):
    path = str(tmp_path / "saved.yaml")
    save_config(build_config(raw), path)
    with open(path, encoding="utf-8") as f:
        saved = yaml.safe_load(f)
    assert saved["tasks"][0]["name"] == "category"
    assert saved["model"]["encoder"]["hidden_size"] == 32


# Command line ------------------------------------------------------------


def test_cli_bad_value_exit_code(make_config, capsys):
    path, _ = make_config()
    code = main(["train", "-c", path, "-o", "train.learning_rate=-1"])
    assert code == 2


def test_cli_bad_value_one_line(make_config, capsys):
    path, _ = make_config()
    main(["train", "-c", path, "-o", "train.batch_size=\"32\""])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert "train.batch_size='32'" in lines[0]


def test_cli_script_no_traceback(make_config, tmp_path):
    path, _ = make_config(train={"batch_size": True})
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_DIR, "tools", "train.py"), "-c", path,
         "-o", "train.learning_rate=-0.5"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert "train.batch_size" in lines[0]


def test_cli_missing_config(tmp_path, capsys):
    code = main(["train", "-c", str(tmp_path / "absent.yaml")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: config file not found")


def test_cli_not_utf8_config_one_line(tmp_path, capsys):
    path = tmp_path / "gbk.yaml"
    path.write_bytes("data:\n  train_path: 评论.csv\n".encode("gbk"))
    code = main(["train", "-c", str(path)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1
    assert lines[0].startswith("error: ")


def test_unquoted_dates_stay_text(tmp_path):
    # YAML 1.1 would build a date from 1997-09-30 and fail with a traceback
    # on the impossible 1997-02-30.
    from ernie_marketing.config.loader import _apply_override

    raw = {"data": {}}
    _apply_override(raw, "data.cutoff=1997-02-30")
    assert raw["data"]["cutoff"] == "1997-02-30"
    _apply_override(raw, "data.cutoff=1997-09-30")
    assert raw["data"]["cutoff"] == "1997-09-30"
