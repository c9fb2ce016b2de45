"""``kdmem shard`` split over tasks (kdmem.corpus.shard_tasks): slices of whole inputs, one
shard set per task, one merge. Oracle: one ``shard_corpus`` run over all the inputs gives the
same documents with the same global ids."""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from shard_helpers import CORPUS, bpe_tokenizer, docs, wide_tokenizer, write_jsonl

from kdmem.cli import run
from kdmem.corpus import open_shards, shard_corpus
from kdmem.corpus.shard_tasks import SLICE_FILE, input_slices, merge_tasks, part_dir, shard_task
from kdmem.errors import (
    IncompleteShardSetError,
    InvalidArgumentError,
    MissingStageInputError,
    TokenizerMismatchError,
)


def _inputs(d: Path, sizes: list[int]) -> list[str]:
    """Files of ``sizes[k]`` documents each, cut from CORPUS (45 documents) in order."""
    out, at = [], 0
    for k, n in enumerate(sizes):
        texts = [CORPUS[(at + j) % len(CORPUS)] + f" file {k}" for j in range(n)]
        at += n
        out.append(str(write_jsonl(d / f"in{k}.jsonl", texts)))
    return out


def _split_run(inputs: list[str], parts: Path, out: Path, tasks: int, **kw: object) -> None:
    for k in range(tasks):
        shard_task(inputs, bpe_tokenizer(), parts, k, tasks, **kw)  # type: ignore[arg-type]
    merge_tasks(inputs, bpe_tokenizer(), parts, out, tasks, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("tasks", [1, 2, 3, 7])
def test_slices_are_contiguous_whole_inputs_balanced_by_bytes(tmp_path: Path, tasks: int) -> None:
    rng = np.random.default_rng(tasks)
    sizes = [int(s) for s in rng.integers(0, 5000, 5)] + [0, 3]
    specs = []
    for k, n in enumerate(sizes):
        p = tmp_path / f"f{k}.jsonl"
        p.write_bytes(b"x" * n)
        specs.append(str(p))
    slices = input_slices(specs, tasks)
    assert len(slices) == tasks
    assert [s for sl in slices for s in sl] == specs  # in order, each input once
    # The definition, checked slowly with exact fractions: the middle byte of input i lies in
    # the byte range [k/T, (k+1)/T) of all bytes of the task k it went to.
    total, before = sum(sizes), 0
    where = {s: k for k, sl in enumerate(slices) for s in sl}
    for spec, n in zip(specs, sizes, strict=True):
        mid = Fraction(2 * before + n, 2 * total)
        k = where[spec]
        assert Fraction(k, tasks) <= mid and (mid < Fraction(k + 1, tasks) or k == tasks - 1)
        before += n


def test_one_input_a_hub_name_or_a_record_cap_go_to_one_task(tmp_path: Path) -> None:
    one = _inputs(tmp_path, [5])
    assert input_slices(one, 4) == [one, [], [], []]
    two = _inputs(tmp_path, [5, 5])
    assert input_slices(two, 4, max_documents=3) == [two, [], [], []]
    hub = ["hf:a", "hf:b", "hf:c", "hf:d"]  # no sizes: every input weighs the same
    assert input_slices(hub, 2) == [["hf:a", "hf:b"], ["hf:c", "hf:d"]]
    with pytest.raises(InvalidArgumentError, match="invalid tasks = 0"):
        input_slices(one, 0)


@pytest.mark.parametrize("tasks", [2, 3, 7])
def test_split_run_has_the_documents_and_ids_of_one_run(tmp_path: Path, tasks: int) -> None:
    inputs = _inputs(tmp_path, [9, 3, 14, 1, 11])
    one = shard_corpus(inputs, bpe_tokenizer(), tmp_path / "one", shard_tokens=60)
    parts, out = tmp_path / "parts", tmp_path / "merged"
    _split_run(inputs, parts, out, tasks, shard_tokens=60)
    assert docs(out) == docs(tmp_path / "one")  # verify=True: every data checksum too
    merged = open_shards(out)
    m = merged.manifest
    assert (m["n_docs"], m["n_tokens"]) == (one.n_docs, one.n_tokens)
    assert [s.first_doc for s in merged.shards] == list(
        np.cumsum([0] + [s.n_docs for s in merged.shards[:-1]])
    )
    # Every shard file is a part's file under a new number: linked, not copied.
    linked = [p for k in range(tasks) for p in sorted(part_dir(parts, k).glob("shard-*.kdt"))]
    assert [os.stat(p).st_ino for p in linked] == [os.stat(s.path).st_ino for s in merged.shards]
    assert sum(e["n_shards"] for e in m["merged_from"]) == len(merged.shards)


def test_merge_reruns_and_a_killed_task_is_rerun_safely(tmp_path: Path) -> None:
    inputs = _inputs(tmp_path, [6, 6, 6])
    parts, out = tmp_path / "parts", tmp_path / "merged"
    _split_run(inputs, parts, out, 3)
    manifest = (out / "shards.json").read_bytes()
    merge_tasks(inputs, bpe_tokenizer(), parts, out, 3)  # again: the same set
    assert (out / "shards.json").read_bytes() == manifest
    # Task 1 killed before it finished: no slice.json, its set unfinished.
    (part_dir(parts, 1) / SLICE_FILE).unlink()
    m1 = json.loads((part_dir(parts, 1) / "shards.json").read_text())
    m1["complete"] = False
    (part_dir(parts, 1) / "shards.json").write_text(json.dumps(m1))
    with pytest.raises(
        MissingStageInputError, match=r"task 1 has not finished; rerun shard task 1"
    ):
        merge_tasks(inputs, bpe_tokenizer(), parts, out, 3)
    shard_task(inputs, bpe_tokenizer(), parts, 1, 3)  # the rerun resumes its set
    merge_tasks(inputs, bpe_tokenizer(), parts, out, 3)
    assert docs(out) == docs(shard_corpus(inputs, bpe_tokenizer(), tmp_path / "one").out)


def test_merge_refuses_parts_of_other_inputs_options_or_tokenizer(tmp_path: Path) -> None:
    inputs = _inputs(tmp_path, [4, 4])
    parts, out = tmp_path / "parts", tmp_path / "merged"
    for k in range(2):
        shard_task(inputs, bpe_tokenizer(), parts, k, 2)
    with pytest.raises(IncompleteShardSetError, match=r"task-00001 holds the shards of inputs"):
        merge_tasks([*inputs[:1], str(tmp_path / "other.jsonl")], bpe_tokenizer(), parts, out, 2)
    with pytest.raises(IncompleteShardSetError, match=r"'dtype': 'u32'"):
        merge_tasks(inputs, bpe_tokenizer(), parts, out, 2, dtype="u32")
    with pytest.raises(TokenizerMismatchError, match=r"was tokenized with tokenizer [0-9a-f]{12}"):
        merge_tasks(inputs, wide_tokenizer(), parts, out, 2)
    assert not (out / "shards.json").exists()
    # A task whose inputs changed replaces its old set.
    write_jsonl(Path(inputs[1]), ["a changed document", "and another"])
    shard_task(inputs, bpe_tokenizer(), parts, 1, 2)
    merge_tasks(inputs, bpe_tokenizer(), parts, out, 2)
    assert docs(out) == docs(shard_corpus(inputs, bpe_tokenizer(), tmp_path / "one").out)


def test_cli_tasks_with_one_input_leave_the_others_nothing_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (inp,) = _inputs(tmp_path, [12])
    tok, parts, out = str(bpe_tokenizer()), str(tmp_path / "parts"), str(tmp_path / "merged")
    for k in range(3):
        assert run(["shard", inp, "--tokenizer", tok, "--tasks", "3", "--task", str(k),
                    "--partial-out", parts]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert printed.count("has no input") == 2 and "task 1 of 3 has no input" in printed
    assert sorted(p.name for p in Path(parts).iterdir()) == ["task-00000"]
    assert run(["shard", inp, "--tokenizer", tok, "--tasks", "3", "--merge", parts,
                "--out", out]) == 0  # fmt: skip
    assert docs(Path(out)) == docs(shard_corpus([inp], bpe_tokenizer(), tmp_path / "one").out)
    assert run(["shard", inp, "--tokenizer", tok, "--task", "0", "--out", out]) == 2
    assert "--task and --partial-out go together" in capsys.readouterr().err
