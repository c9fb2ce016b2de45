"""kdmem.data: study sets as Parquet/.npy, read without a Python int per token."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kdmem.corpus.examples import load_examples, write_examples
from kdmem.errors import MalformedRecordError


def test_parquet_round_trip_sorted_and_cut(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ids = np.array([9, 2, 7, 4], dtype=np.int64)
    rows = [rng.integers(0, 1000, size=n).tolist() for n in (12, 10, 3, 11)]
    # Two row groups, int32 ids, unsorted example ids; the 3-token row is short.
    t = pa.table({"example_id": ids, "input_ids": pa.array(rows, pa.list_(pa.int32()))})
    pq.write_table(t, tmp_path / "d.parquet", row_group_size=2)
    ex = load_examples(tmp_path / "d.parquet", 10)
    assert ex.example_ids.tolist() == [2, 4, 9] and ex.n_short == 1
    want = {int(i): r[:10] for i, r in zip(ids, rows, strict=True)}
    assert ex.tokens.tolist() == [want[2], want[4], want[9]]
    write_examples(ex, tmp_path / "again.parquet")
    again = load_examples(tmp_path / "again.parquet")
    np.testing.assert_array_equal(again.tokens, ex.tokens)
    np.testing.assert_array_equal(again.example_ids, ex.example_ids)


@pytest.mark.parametrize(
    ("column", "message"),
    [
        (pa.array([[1.5, 2.0]], pa.list_(pa.float64())), "list of integers"),
        (pa.array(["a b"]), "list of integers"),
        (pa.array([[1, 2], None], pa.list_(pa.int64())), "null in row 1"),
        (pa.array([[1, 2], [3, None]]), "row 1 holds a null token id"),
    ],
)
def test_malformed_input_ids(tmp_path: Path, column: pa.Array, message: str) -> None:
    t = pa.table({"example_id": np.arange(len(column)), "input_ids": column})
    pq.write_table(t, tmp_path / "bad.parquet")
    with pytest.raises(MalformedRecordError, match=message):
        load_examples(tmp_path / "bad.parquet")
