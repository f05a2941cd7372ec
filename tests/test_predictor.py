"""The Paddle Inference predictor, file prediction and the `infer` command."""

import json
import os

import numpy as np
import pandas as pd
import pytest
from _helpers_export import (
    EDGE_TEXTS,
    LONG_REVIEW_CHARS,
    dynamic_logits,
    max_gap,
    real_reviews,
)

from ernie_marketing.cli import main
from ernie_marketing.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def predictors(exported):
    """One CPU predictor per oneDNN setting, built once for the module."""
    from ernie_marketing.inference import Predictor

    return {onednn: Predictor(exported[1], device="cpu", onednn=onednn,
                              batch_size=8)
            for onednn in (False, True)}


@pytest.fixture(scope="module")
def edge_frame():
    """Real reviews with the edge cases and repeated rows mixed in."""
    reviews = real_reviews(40, seed=2)["review"].tolist()
    texts = reviews[:20] + EDGE_TEXTS + reviews[20:] + [reviews[0]] * 3
    texts += [EDGE_TEXTS[-1], None]
    return pd.DataFrame({"review": texts})


@pytest.mark.parametrize("onednn", [False, True], ids=["onednn_off", "onednn_on"])
def test_edge_cases_match_dynamic_graph(exported, predictors, edge_frame, onednn):
    predictor = predictors[onednn]
    texts = edge_frame["review"].fillna("").str.strip().tolist()
    encoded = predictor.encode(texts)
    assert len(EDGE_TEXTS[-1]) == LONG_REVIEW_CHARS
    assert max(len(ids) for ids in encoded) == 64  # the long review is cut
    assert min(len(ids) for ids in encoded) == 2  # [CLS] [SEP] of empty text
    static = predictor.predict_logits(encoded)
    alone = dynamic_logits(exported[0], encoded, batch_size=1)
    assert max_gap(static, alone) < 1e-4
    for task_logits in static:
        assert np.isfinite(task_logits).all()


@pytest.mark.parametrize("onednn", [False, True], ids=["onednn_off", "onednn_on"])
def test_row_does_not_depend_on_batch(predictors, onednn):
    predictor = predictors[onednn]
    short = "物流很快，包装完好"
    long_texts = ["送货很快。" * 200, "房间干净，服务周到。" * 100]
    alone = predictor.predict_logits(predictor.encode([short]))
    mixed = predictor.predict_logits(predictor.encode([short, *long_texts]))
    for task_alone, task_mixed in zip(alone, mixed):
        assert np.abs(task_alone[0] - task_mixed[0]).max() < 1e-4


def test_repeated_rows_get_identical_predictions(predictors, edge_frame):
    predictions = predictors[False].predict_frame(edge_frame)
    repeated = predictions.iloc[-5:-2].drop(columns="row_id")
    for i in range(1, len(repeated)):
        pd.testing.assert_series_equal(repeated.iloc[0], repeated.iloc[i],
                                       check_names=False)


def test_predict_frame_columns_and_order(predictors, edge_frame):
    predictor = predictors[True]
    predictions = predictor.predict_frame(edge_frame)
    categories = [t for t in predictor.tasks if t["name"] == "category"][0]
    prob_columns = [f"category_prob_{label}" for label in categories["labels"]]
    assert list(predictions.columns) == (["row_id", "category", *prob_columns,
                                          "sentiment", "sentiment_score"])
    assert predictions["row_id"].tolist() == list(range(len(edge_frame)))
    probs = predictions[prob_columns].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    best = np.asarray(categories["labels"])[probs.argmax(axis=1)]
    assert predictions["category"].tolist() == best.tolist()
    positive = predictions["sentiment_score"] >= 0.5
    assert (predictions["sentiment"][positive] == "1").all()
    assert (predictions["sentiment"][~positive] == "0").all()
    # Input order is kept although batches run shortest first.
    by_text = predictor.predict_texts(edge_frame["review"].fillna("").tolist())
    np.testing.assert_allclose(by_text["sentiment_score"],
                               predictions["sentiment_score"], atol=1e-6)


def test_id_column_from_export(exported, tmp_path):
    from ernie_marketing.export import export_model, resolve_export_config
    from ernie_marketing.inference import Predictor

    checkpoint, _, csv_path = exported
    _, config = resolve_export_config(checkpoint, None, ["data.id_column=id"])
    export_dir = export_model(checkpoint, str(tmp_path / "with_id"), config,
                              check=False)
    predictor = Predictor(export_dir, device="cpu")
    frame = pd.read_csv(csv_path).head(30)
    predictions = predictor.predict_frame(frame)
    assert predictions["id"].tolist() == frame["id"].tolist()
    with pytest.raises(DataError, match="id column 'id' not found"):
        predictor.predict_frame(frame.drop(columns="id"))


@pytest.mark.parametrize("input_name,output_name", [
    ("in.csv", "out.jsonl"), ("in.jsonl", "out.parquet"),
    ("in.parquet", "out.csv")])
def test_predict_file_formats(exported, predictors, tmp_path, input_name,
                              output_name):
    from ernie_marketing.inference import predict_file

    frame = real_reviews(60, seed=3)
    frame.loc[5, "review"] = ""  # an empty text still gets a prediction
    input_path = tmp_path / input_name
    _write(frame, input_path)
    output_path = tmp_path / output_name
    summary = predict_file(exported[1], str(input_path), str(output_path),
                           device="cpu", onednn=False)
    assert summary["rows"] == 60
    result = _read(output_path)
    assert result["row_id"].tolist() == list(range(60))
    expected = predictors[False].predict_texts(
        frame["review"].fillna("").tolist())
    np.testing.assert_allclose(result["sentiment_score"],
                               expected["sentiment_score"], atol=1e-6)
    assert result["category"].astype(str).tolist() == expected["category"].tolist()
    assert sorted(os.listdir(tmp_path)) == sorted([input_name, output_name])


def test_infer_cli_on_real_file(exported, tmp_path, capsys):
    _, export_dir, csv_path = exported
    output = tmp_path / "predictions.csv"
    code = main(["infer", "--model", export_dir, "--input", csv_path, "--output",
                 str(output), "--batch-size", "16", "--threads", "1", "--onednn",
                 "off", "--device", "cpu"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 300
    assert summary["settings"] == "CPU, threads=1, oneDNN off, fp32"
    result = pd.read_csv(output)
    assert len(result) == 300
    assert result["row_id"].tolist() == list(range(300))
    assert result["sentiment_score"].between(0, 1).all()


def test_existing_output_survives_failed_write(predictors, tmp_path, monkeypatch):
    from ernie_marketing.inference.writers import write_table

    output = tmp_path / "out.jsonl"
    output.write_text("earlier results\n", encoding="utf-8")

    def fail(self, path, **kwargs):
        with open(path, "w", encoding="utf-8") as f:
            f.write('{"row_id": 0')
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_json", fail)
    with pytest.raises(ConfigError, match="disk full"):
        write_table(pd.DataFrame({"a": [1]}), str(output))
    assert output.read_text(encoding="utf-8") == "earlier results\n"
    assert os.listdir(tmp_path) == ["out.jsonl"]


# (file name, contents, expected error text)
BAD_INPUTS = [
    ("missing_column.csv", "cat,label,text\n书籍,1,好\n".encode(),
     "add or rename those columns in the input file"),
    ("gbk.csv", "cat,label,review\n书籍,1,很好看的书\n".encode("gbk"),
     "is not valid utf-8 text"),
    ("empty.csv", b"", "is empty"),
    ("header_only.csv", b"cat,label,review\n", "has a header but no rows"),
    ("broken.jsonl", b'{"review": "ok"}\n{"review": \n', "cannot parse"),
]


@pytest.mark.parametrize("name,contents,message", BAD_INPUTS,
                         ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_is_one_line_error(exported, tmp_path, capsys, name, contents,
                                     message):
    input_path = tmp_path / name
    input_path.write_bytes(contents)
    output = tmp_path / "out.csv"
    code = main(["infer", "--model", exported[1], "--input", str(input_path),
                 "--output", str(output)])
    err = capsys.readouterr().err
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2
    assert len(error_lines) == 1
    assert message in error_lines[0]
    assert "Traceback" not in err
    assert not output.exists()


def test_bad_output_extension_fails_before_reading(exported, tmp_path):
    from ernie_marketing.inference import predict_file

    with pytest.raises(ConfigError, match="output format"):
        predict_file(exported[1], str(tmp_path / "missing.csv"),
                     str(tmp_path / "out.xlsx"))


def test_missing_output_folder_is_created(exported, tmp_path):
    from ernie_marketing.inference import predict_file

    input_path = tmp_path / "reviews.csv"
    input_path.write_text("review\n很好\n", encoding="utf-8")
    output = tmp_path / "new" / "folder" / "out.csv"
    predict_file(exported[1], str(input_path), str(output), device="cpu")
    assert len(pd.read_csv(output)) == 1


def test_output_folder_under_a_file_fails(exported, tmp_path):
    from ernie_marketing.inference import predict_file

    blocker = tmp_path / "taken"
    blocker.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot create the output folder"):
        predict_file(exported[1], str(tmp_path / "missing.csv"),
                     str(blocker / "out.csv"))


def test_output_equal_to_input_is_rejected(exported, tmp_path):
    from ernie_marketing.inference import predict_file

    input_path = tmp_path / "reviews.csv"
    input_path.write_text("review\n很好\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="is the input file"):
        predict_file(exported[1], str(input_path), str(input_path))
    assert input_path.read_text(encoding="utf-8") == "review\n很好\n"


def test_unknown_input_encoding_is_rejected(exported, tmp_path):
    from ernie_marketing.inference import predict_file

    input_path = tmp_path / "reviews.csv"
    input_path.write_text("review\n很好\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="klingon"):
        predict_file(exported[1], str(input_path), str(tmp_path / "out.csv"),
                     encoding="klingon")


@pytest.mark.parametrize("options,message", [
    ({"device": "tpu"}, "device='tpu' is invalid"),
    ({"device": "cpu", "tensorrt": True}, "tensorrt=true needs device=gpu"),
    ({"batch_size": 0}, "batch_size=0 is invalid"),
    ({"num_threads": 0}, "num_threads=0 is invalid"),
    ({"precision": "int4"}, "precision='int4' is invalid"),
    ({"precision": "bf16", "onednn": False}, "precision=bf16 needs oneDNN"),
])
def test_predictor_rejects_bad_settings(exported, options, message):
    from ernie_marketing.inference import Predictor

    with pytest.raises(ConfigError, match=message):
        Predictor(exported[1], **options)


def test_gpu_request_without_cuda_fails():
    import paddle

    from ernie_marketing.inference.predictor import resolve_settings

    if paddle.is_compiled_with_cuda():
        pytest.skip("this paddlepaddle build has CUDA")
    with pytest.raises(ConfigError, match="device=gpu needs a CUDA build"):
        resolve_settings(device="gpu")
    assert resolve_settings(device="auto").device == "cpu"


def test_predictor_rejects_non_export_dirs(tmp_path):
    from ernie_marketing.inference import Predictor

    with pytest.raises(ConfigError, match="export directory not found"):
        Predictor(str(tmp_path / "nothing"))
    with pytest.raises(ConfigError, match="is not an export"):
        Predictor(str(tmp_path))


def test_bf16_stays_close_to_fp32(exported, predictors):
    from ernie_marketing.inference import Predictor

    bf16 = Predictor(exported[1], device="cpu", precision="bf16")
    assert bf16.settings.onednn
    texts = real_reviews(50, seed=4)["review"].tolist()
    fp32 = predictors[True].predict_texts(texts)
    low = bf16.predict_texts(texts)
    gap = (fp32["sentiment_score"] - low["sentiment_score"]).abs().max()
    assert gap < 0.05


def test_missing_model_file_is_reported(exported, tmp_path):
    import shutil

    from ernie_marketing.inference import Predictor

    broken = tmp_path / "broken"
    shutil.copytree(exported[1], broken)
    os.remove(broken / "model.json")
    with pytest.raises(ConfigError, match="no inference model"):
        Predictor(str(broken), device="cpu")


def _write(frame, path):
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        frame.to_parquet(path, index=False)


def _read(path):
    suffix = path.suffix
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix == ".jsonl":
        return pd.read_json(path, lines=True, dtype=False)
    return pd.read_parquet(path)
