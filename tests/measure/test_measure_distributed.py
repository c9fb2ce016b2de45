"""Sharding by example id under torch.distributed: 2 CPU processes on gloo write the same
table as 1 process (world size does not enter the results)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from tiny_memorizers import PREFIX, SUFFIX

from kdmem.distributed import Dist
from kdmem.measure.chunks import ChunkedRun

RUN = "import sys; from kdmem.cli import main; main(sys.argv[1:])"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch(world: int, args: list[str]) -> None:
    port = _free_port()
    procs = []
    for rank in range(world):
        env = dict(
            os.environ,
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(world),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            OMP_NUM_THREADS="1",
        )
        if world == 1:
            for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
                env.pop(k)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", RUN, *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out


@pytest.mark.slow  # ~50 s on 2 shared cores: 9 interpreter starts
def test_two_gloo_processes_equal_one(trained, data_npy, tmp_path) -> None:
    _, mdir, _ = trained["olmo2"]
    _, rdir, _ = trained["qwen3"]
    common = ["--model", str(mdir), "--data", str(data_npy), "--prefix", str(PREFIX)]
    common += ["--batch-size", "4", "--chunk-size", "7", "--device", "cpu"]
    m = ["measure", *common, "--suffix", str(SUFFIX), "--reference", str(rdir)]
    g = ["generate", *common, "--new-tokens", "12"]
    _launch(1, [*m, "--out", str(tmp_path / "one.parquet")])
    _launch(2, [*m, "--out", str(tmp_path / "two.parquet")])
    pair = [*m, "--reference-out"]  # pair mode: the reference's table from rank-sharded chunks
    _launch(2, [*pair, str(tmp_path / "ref2.parquet"), "--out", str(tmp_path / "pair2.parquet")])
    alone = ["measure", *common[2:], "--model", str(rdir), "--suffix", str(SUFFIX)]
    _launch(1, [*alone, "--out", str(tmp_path / "ref1.parquet")])
    _launch(1, [*g, "--out", str(tmp_path / "gen1")])
    _launch(2, [*g, "--out", str(tmp_path / "gen2")])
    for a, b in [
        ("one.parquet", "two.parquet"),
        ("two.parquet", "pair2.parquet"),
        ("ref1.parquet", "ref2.parquet"),
        ("gen1/generations.parquet", "gen2/generations.parquet"),
    ]:
        ta, tb = pq.read_table(tmp_path / a), pq.read_table(tmp_path / b)
        assert ta.num_rows == 48
        assert ta.replace_schema_metadata(None).equals(tb.replace_schema_metadata(None))
    meta = pq.read_schema(tmp_path / "two.parquet").metadata[b"kdmem"]
    assert b'"world_size": 2' in meta


def test_chunks_belong_to_ranks_by_position(tmp_path) -> None:
    """Chunk k = examples [k*C, (k+1)*C) in id order, owned by rank k % world: the same
    blocks for any world size, every block owned exactly once."""
    owned = []
    for rank in range(3):
        run = ChunkedRun(tmp_path / "x.parquet", "f", 23, 5, Dist(rank, 3))
        owned += run.my_chunks()
        assert [run.rows(k) for k in run.my_chunks()] == [
            slice(5 * k, min(23, 5 * k + 5)) for k in range(rank, 5, 3)
        ]
    assert sorted(owned) == list(range(5))
