"""Chunked, rank-sharded reading of CSV, JSONL, Parquet and zipped CSV."""

import pandas as pd
import pytest
from conftest import SHOPPING_ROWS

from ernie_marketing.data.readers import read_table
from ernie_marketing.data.streaming import count_shard_rows, iter_table_chunks
from ernie_marketing.errors import DataError

CHUNK_ROWS = 37


@pytest.fixture(scope="module")
def table_files(reviews, tmp_path_factory):
    """The review slice as CSV, TSV, JSONL and Parquet; returns {format: path}."""
    folder = tmp_path_factory.mktemp("streaming")
    paths = {name: str(folder / f"reviews.{name}")
             for name in ("csv", "tsv", "jsonl", "parquet")}
    reviews.to_csv(paths["csv"], index=False)
    reviews.to_csv(paths["tsv"], index=False, sep="\t")
    reviews.to_json(paths["jsonl"], orient="records", lines=True,
                    force_ascii=False)
    reviews.to_parquet(paths["parquet"], index=False)
    return paths


def read_all(path, **kwargs):
    chunks = list(iter_table_chunks(path, chunk_rows=CHUNK_ROWS, **kwargs))
    return chunks, pd.concat(chunks)


@pytest.mark.parametrize("name", ["csv", "tsv", "jsonl", "parquet"])
def test_stream_equals_whole_read(table_files, name):
    path = table_files[name]
    chunks, streamed = read_all(path)
    whole = read_table(path)
    assert all(len(chunk) <= CHUNK_ROWS for chunk in chunks)
    assert len(chunks) == -(-len(whole) // CHUNK_ROWS)
    pd.testing.assert_frame_equal(streamed, whole, check_dtype=False)


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("name", ["csv", "parquet"])
def test_shards_partition_rows(table_files, name, world_size):
    whole = read_table(table_files[name])
    shards = [read_all(table_files[name], rank=rank,
                       world_size=world_size)[1]
              for rank in range(world_size)]
    for rank, shard in enumerate(shards):
        assert (shard.index % world_size == rank).all(), rank
        assert len(shard) == count_shard_rows(len(whole), rank, world_size)
    merged = pd.concat(shards).sort_index()
    pd.testing.assert_frame_equal(merged, whole, check_dtype=False)


def test_zip_stream_counts_rows(shopping_zip):
    rows = 0
    first = None
    for chunk in iter_table_chunks(shopping_zip, chunk_rows=20_000,
                                   columns=["cat", "review"]):
        first = chunk if first is None else first
        rows += len(chunk)
        assert list(chunk.columns) == ["cat", "review"]
    assert rows == SHOPPING_ROWS
    # The first review keeps the byte-order mark the file starts it with.
    assert first["review"].iloc[0].startswith("\ufeff")


def test_columns_selected(table_files):
    _, streamed = read_all(table_files["parquet"], columns=["review", "cat"])
    assert list(streamed.columns) == ["review", "cat"]


@pytest.mark.parametrize("name", ["csv", "parquet", "jsonl"])
def test_missing_column_error(table_files, name):
    with pytest.raises(DataError, match=r"column\(s\) \['title'\] not found"):
        read_all(table_files[name], columns=["review", "title"])


@pytest.mark.parametrize("rank, world_size", [(2, 2), (-1, 2), (0, 0)])
def test_bad_rank_error(table_files, rank, world_size):
    with pytest.raises(ValueError, match="is invalid"):
        read_all(table_files["csv"], rank=rank, world_size=world_size)


def test_header_only_error(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text("cat,label,review\n", encoding="utf-8")
    with pytest.raises(DataError, match="has a header but no rows"):
        read_all(str(path))


def test_empty_file_error(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="is empty"):
        read_all(str(path))


def test_bad_encoding_error(tmp_path):
    path = tmp_path / "gbk.csv"
    path.write_bytes("cat,review\n书籍,很好看\n".encode("gbk"))
    with pytest.raises(DataError, match="not valid utf-8 text"):
        read_all(str(path))


def test_stream_gbk_encoding(tmp_path):
    path = tmp_path / "gbk.csv"
    path.write_bytes("cat,review\n书籍,很好看\n".encode("gbk"))
    _, streamed = read_all(str(path), encoding="gbk")
    assert streamed["review"].tolist() == ["很好看"]
