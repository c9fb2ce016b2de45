"""``kdmem measure`` / ``kdmem generate`` end to end: schema, metadata, resume, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from tiny_memorizers import PREFIX, SUFFIX

from kdmem.atomic import write_parquet_atomic
from kdmem.cli import main
from kdmem.corpus.examples import Examples, load_examples, write_examples
from kdmem.identity import tokenizer_hash
from kdmem.measure import chunks as measure_chunks
from kdmem.measure import extract as measure_extract
from kdmem.measure import greedy_continuations, measure_tokens
from kdmem.models.load import model_hash

SCHEMA = {
    "example_id": "int64",
    "memorized": "bool",
    "first_mismatch": "int32",
    "suffix_logprob": "double",
    "seq_logprob": "double",
    "ppl_window": "double",
    "ppl_suffix": "double",
    "mink_logprob": "double",
    "entropy_last_k": "double",
    "tie_gap": "double",
    "tf_match_frac": "double",
}


def _patch_writes(monkeypatch, write) -> None:
    """Route every Parquet write of a measure run (chunks, reference table, final table)
    through ``write(path, table)``."""
    for mod in (measure_chunks, measure_extract):
        monkeypatch.setattr(mod, "write_parquet_atomic", write)


def _measure(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(
        main, ["measure", "--prefix", str(PREFIX), "--suffix", str(SUFFIX), *args]
    )
    return r.exit_code, r.output


def _meta(p: Path) -> dict:
    return json.loads(pq.read_schema(p).metadata[b"kdmem"])


def test_measure_cli_schema_metadata_and_verify(trained, data_npy, study_set, tmp_path) -> None:
    model, mdir, _ = trained["gpt_neox"]
    _, rdir, _ = trained["olmo2"]
    out = tmp_path / "measure" / "teacher.parquet"
    args = ["--model", str(mdir), "--data", str(data_npy), "--out", str(out)]
    args += ["--reference", str(rdir), "--reverse-kl", "--attn-implementation", "eager"]
    code, msg = _measure(*args, "--batch-size", "16", "--verify-generate", "5")
    assert code == 0, msg
    assert "24 of 48 memorized" in msg
    t = pq.read_table(out)
    want = dict(SCHEMA, kl_to_reference="double", kl_reference_to_model="double")
    assert {f.name: str(f.type) for f in t.schema} == want
    np.testing.assert_array_equal(t.column("example_id").to_numpy(), study_set.ids)
    cols, _ = measure_tokens(model, study_set.tokens, PREFIX)
    np.testing.assert_array_equal(t.column("memorized").to_numpy(), cols["memorized"])
    meta = _meta(out)
    assert meta["model_hash"] == model_hash(mdir)
    assert meta["reference_hash"] == model_hash(rdir)
    assert (meta["dtype"], meta["batch_size"], meta["prefix"], meta["suffix"]) == (
        "float32",
        16,
        PREFIX,
        SUFFIX,
    )
    assert meta["attn_implementation"] == "eager"
    assert meta["role"] == "teacher"
    v = meta["verify"]
    assert v["n_checked"] >= 5 and v["n_flips"] == 0 and v["flip_rate"] == 0.0
    assert v["spot_checks"] == []  # --spot-checks defaults to 0 on the command line
    assert not list(out.parent.glob(".*")), "temporary files left behind"
    # A rerun with the same inputs is a no-op.
    mtime = out.stat().st_mtime_ns
    assert _measure(*args)[0] == 0
    assert out.stat().st_mtime_ns == mtime


def test_partial_score_and_spot_checks(trained, data_npy, study_set, tmp_path) -> None:
    """--partial adds match_frac (the decoded partial score; for the reference too in pair
    mode); --spot-checks keeps decoded suffixes of memorized examples, equal to the truth."""
    from kdmem.measure.generate import decoded_match_frac

    model, mdir, _ = trained["gpt_neox"]
    _, rdir, _ = trained["qwen3"]
    out, ref_out = tmp_path / "teacher.parquet", tmp_path / "baseline.parquet"
    args = ["--model", str(mdir), "--data", str(data_npy), "--out", str(out), "--partial"]
    args += ["--reference", str(rdir), "--reference-out", str(ref_out), "--spot-checks", "3"]
    code, msg = _measure(*args, "--chunk-size", "20")
    assert code == 0, msg
    t = pq.read_table(out)
    cols, _ = measure_tokens(model, study_set.tokens, PREFIX)
    want = decoded_match_frac(model, study_set.tokens, PREFIX, cols["memorized"])
    np.testing.assert_array_equal(t.column("match_frac").to_numpy(), want)
    assert "match_frac" in pq.read_schema(ref_out).names
    spots = _meta(out)["verify"]["spot_checks"]
    assert len(spots) == 3 and all(s["match"] for s in spots)
    row = {int(i): r for r, i in enumerate(study_set.ids)}
    for s in spots:
        assert s["decoded"] == study_set.tokens[row[s["example_id"]], PREFIX:].tolist()


def test_pair_mode_writes_the_reference_table_a_separate_run_writes(
    trained, data_npy, tmp_path, monkeypatch
) -> None:
    _, tdir, _ = trained["qwen3"]
    _, bdir, _ = trained["gpt_neox"]
    data = ["--data", str(data_npy), "--chunk-size", "10", "--verify-generate", "3"]
    alone = tmp_path / "alone" / "baseline.parquet"
    assert _measure("--model", str(bdir), "--out", str(alone), *data)[0] == 0
    single = tmp_path / "single" / "teacher.parquet"
    code, _ = _measure("--model", str(tdir), "--reference", str(bdir), "--out", str(single), *data)
    assert code == 0
    out, ref_out = tmp_path / "teacher.parquet", tmp_path / "baseline_seed0.parquet"
    pair = ["--model", str(tdir), "--reference", str(bdir), "--out", str(out)]
    pair += ["--reference-out", str(ref_out), *data]
    real = write_parquet_atomic
    calls = {"n": 0}

    def dying(path, table):  # killed after two chunks: the rerun resumes the pair
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real(path, table)

    _patch_writes(monkeypatch, dying)
    assert _measure(*pair)[0] == 130
    assert not out.exists() and not ref_out.exists()
    _patch_writes(monkeypatch, real)
    code, msg = _measure(*pair)
    assert code == 0, msg
    assert f"{ref_out}: 24 of 48 memorized" in msg
    # The teacher's table is the one a run with --reference alone writes ...
    a, b = pq.read_table(single), pq.read_table(out)
    assert a.replace_schema_metadata(None).equals(b.replace_schema_metadata(None))
    # ... and the baseline's is the one measuring it on its own writes (same values, schema).
    a, b = pq.read_table(alone), pq.read_table(ref_out)
    assert {f.name: str(f.type) for f in b.schema} == SCHEMA
    for name in SCHEMA:
        x, y = a.column(name).to_numpy(), b.column(name).to_numpy()
        if name in ("example_id", "memorized", "first_mismatch"):
            np.testing.assert_array_equal(x, y, err_msg=name)
        else:
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7, err_msg=name)
    ma, mb = _meta(alone), _meta(ref_out)
    assert mb["model_hash"] == ma["model_hash"] == model_hash(bdir)
    assert mb["role"] == "baseline_seed0" and mb["reference"] is None
    assert mb["measured_with"] == str(tdir)
    assert mb["lm_head_rows"] == ma["lm_head_rows"] and mb["n_memorized"] == ma["n_memorized"]
    assert mb["verify"]["n_flips"] == 0 and mb["verify"]["n_checked"] >= 3
    assert _meta(out)["reference_hash"] == model_hash(bdir)
    # Rerun: nothing to do. A lost reference table is rebuilt by the same command.
    mtime = out.stat().st_mtime_ns
    assert _measure(*pair)[0] == 0 and out.stat().st_mtime_ns == mtime
    ref_out.unlink()
    assert _measure(*pair)[0] == 0
    assert pq.read_table(ref_out).equals(b)


def test_measure_resumes_after_a_kill(trained, data_npy, tmp_path, monkeypatch) -> None:
    _, mdir, _ = trained["qwen3"]
    clean = tmp_path / "clean.parquet"
    assert (
        _measure(
            "--model", str(mdir), "--data", str(data_npy), "--out", str(clean), "--chunk-size", "10"
        )[0]
        == 0
    )
    out = tmp_path / "resumed.parquet"
    real = write_parquet_atomic
    calls = {"n": 0}

    def dying(path, table):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real(path, table)

    _patch_writes(monkeypatch, dying)
    code, msg = _measure(
        "--model", str(mdir), "--data", str(data_npy), "--out", str(out), "--chunk-size", "10"
    )
    assert code == 130 and "resume" in msg
    assert not out.exists()
    assert len(list((tmp_path / ".resumed.parquet.parts").glob("chunk-*.parquet"))) == 2
    _patch_writes(monkeypatch, real)
    done = []
    import kdmem.measure.extract as ex

    real_mt = ex.measure_tokens

    def counting(model, tokens, *a, **k):
        done.append(len(tokens))
        return real_mt(model, tokens, *a, **k)

    monkeypatch.setattr(ex, "measure_tokens", counting)
    assert (
        _measure(
            "--model", str(mdir), "--data", str(data_npy), "--out", str(out), "--chunk-size", "10"
        )[0]
        == 0
    )
    assert done == [10, 10, 8]  # chunks 2, 3, 4 only
    a, b = pq.read_table(clean), pq.read_table(out)
    assert a.replace_schema_metadata(None).equals(b.replace_schema_metadata(None))
    assert not (tmp_path / ".resumed.parquet.parts").exists()


def test_short_examples_counted_or_strict(trained, study_set, tmp_path) -> None:
    _, mdir, _ = trained["olmo2"]
    import pyarrow as pa

    seqs = [list(r) for r in study_set.tokens[:6]] + [list(study_set.tokens[6, :20])]
    data = tmp_path / "short.parquet"
    pq.write_table(pa.table({"example_id": list(range(7)), "input_ids": seqs}), data)
    out = tmp_path / "m.parquet"
    code, msg = _measure("--model", str(mdir), "--data", str(data), "--out", str(out))
    assert code == 0, msg
    assert "skipped 1 examples" in msg
    assert _meta(out)["n_short"] == 1 and pq.read_table(out).num_rows == 6
    code, msg = _measure("--model", str(mdir), "--data", str(data), "--out", str(out), "--strict")
    assert code == 2
    assert msg.strip().count("\n") == 0 and "example 6 has 20 tokens" in msg


def test_bad_inputs_give_one_line_errors(trained, study_set, data_npy, tmp_path) -> None:
    _, mdir, _ = trained["gpt_neox"]
    out = str(tmp_path / "m.parquet")
    empty = tmp_path / "noweights"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    pair_onto_out = ["--model", str(mdir), "--data", str(data_npy), "--reference", str(mdir)]
    pair_onto_out += ["--reference-out", out]
    cases = [
        (["--model", str(empty), "--data", str(data_npy)], "no *.safetensors"),
        (["--model", str(tmp_path / "absent"), "--data", str(data_npy)], "no such directory"),
        (["--model", str(mdir), "--data", str(tmp_path / "nope.parquet")], "no such file"),
        (["--model", str(mdir), "--data", str(data_npy), "--reverse-kl"], "needs --reference"),
        (
            ["--model", str(mdir), "--data", str(data_npy), "--reference-out", out + "x"],
            "--reference-out needs --reference",
        ),
        (pair_onto_out, "is the --out file"),
    ]
    big = tmp_path / "big.parquet"
    write_examples(Examples(study_set.ids, study_set.tokens + 1000), big)
    cases.append((["--model", str(mdir), "--data", str(big)], "out of range"))
    for args, needle in cases:
        code, msg = _measure(*args, "--out", out)
        assert code == 2, (args, msg)
        assert needle in msg and msg.startswith("kdmem: error:") and msg.count("\n") == 1, msg


def test_tokenizer_mismatch(trained, study_set, tmp_path) -> None:
    from kdmem.models.load import save_model
    from kdmem.models.tokenizer import train_tokenizer

    model, _, _ = trained["gpt_neox"]
    tokdir = train_tokenizer(["hello world"] * 10, 300, tmp_path / "tok")
    from kdmem.models.tokenizer import load_tokenizer

    tok = load_tokenizer(tokdir)
    mdir = save_model(model, tmp_path / "with_tok", tokenizer=tok)
    data = tmp_path / "d.parquet"
    write_examples(Examples(study_set.ids, study_set.tokens, "ab" * 32), data)
    code, msg = _measure(
        "--model", str(mdir), "--data", str(data), "--out", str(tmp_path / "m.parquet")
    )
    assert code == 2 and "tokenizer mismatch" in msg and "abababababab" in msg, msg
    # Same tokenizer hash: accepted.
    write_examples(Examples(study_set.ids, study_set.tokens, tokenizer_hash(tok)), data)
    code, msg = _measure(
        "--model", str(mdir), "--data", str(data), "--out", str(tmp_path / "m.parquet")
    )
    assert code == 0, msg
    assert _meta(tmp_path / "m.parquet")["tokenizer_check"] == "ok"


def test_tokenizer_hash_follows_formats_doc(tmp_path) -> None:
    import hashlib

    from kdmem.models.tokenizer import load_tokenizer, train_tokenizer

    tok = load_tokenizer(train_tokenizer(["abc abd"] * 5, 260, tmp_path / "t"))
    vocab = tok.get_vocab()
    text = "".join(f"{i}\t{t}\n" for t, i in sorted(vocab.items(), key=lambda kv: kv[1]))
    assert tokenizer_hash(tok) == hashlib.sha256(text.encode()).hexdigest()


def test_nan_logits(trained, study_set, tmp_path) -> None:
    import torch

    from kdmem.errors import NonFiniteLogitsError
    from kdmem.models.load import save_model
    from kdmem.models.tiny import build_model, tiny_config

    m = build_model(tiny_config("qwen3", 96, hidden_size=32, num_layers=1))
    with torch.no_grad():
        m.get_output_embeddings().weight[3, 0] = float("nan")
    with pytest.raises(
        NonFiniteLogitsError, match="NaN/inf logits on example id 100 from the model"
    ):
        measure_tokens(m, study_set.tokens, PREFIX, example_ids=study_set.ids)
    # Non-finite values in one lm-head row of the reference give non-finite logits in
    # that column at every position; they are caught through the KL.
    good = build_model(tiny_config("qwen3", 96, hidden_size=32, num_layers=1), seed=1)
    for bad in (float("nan"), float("inf"), float("-inf")):
        ref = build_model(tiny_config("qwen3", 96, hidden_size=32, num_layers=1), seed=2)
        with torch.no_grad():
            ref.get_output_embeddings().weight[3, :] = bad
        for pair in (False, True):  # pair mode checks the reference's own logits too
            with pytest.raises(NonFiniteLogitsError, match="from the reference model"):
                measure_tokens(
                    good,
                    study_set.tokens,
                    PREFIX,
                    reference=ref,
                    reference_scores=pair,
                    example_ids=study_set.ids,
                )
    d = save_model(m, tmp_path / "nan")
    data = tmp_path / "d.parquet"
    write_examples(Examples(study_set.ids, study_set.tokens), data)
    code, msg = _measure(
        "--model", str(d), "--data", str(data), "--out", str(tmp_path / "m.parquet")
    )
    assert code == 2 and "NaN/inf logits" in msg and "--dtype float32" in msg


def test_generate_cli(trained, data_npy, study_set, tmp_path) -> None:
    model, mdir, _ = trained["gpt_neox"]
    out = tmp_path / "gen"
    args = [
        "generate",
        "--model",
        str(mdir),
        "--data",
        str(data_npy),
        "--prefix",
        str(PREFIX),
        "--new-tokens",
        "20",
        "--out",
        str(out),
        "--batch-size",
        "8",
        "--chunk-size",
        "20",
    ]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    f = out / "generations.parquet"
    t = pq.read_table(f)
    assert {x.name: str(x.type) for x in t.schema} == {
        "example_id": "int64",
        "input_ids": "list<element: int64>",
    }
    meta = _meta(f)
    assert meta["teacher_hash"] == model_hash(mdir)
    assert (meta["prefix"], meta["new_tokens"]) == (PREFIX, 20)
    ex = load_examples(f)
    np.testing.assert_array_equal(ex.example_ids, study_set.ids)
    assert ex.tokens.shape == (48, PREFIX + 20)
    np.testing.assert_array_equal(ex.tokens[:, :PREFIX], study_set.tokens[:, :PREFIX])
    cont = greedy_continuations(model, study_set.tokens[:, :PREFIX], 20)
    np.testing.assert_array_equal(ex.tokens[:, PREFIX:], cont)
    # Memorized suffixes (EOS included) come out verbatim: hard-distillation data keeps them.
    np.testing.assert_array_equal(
        ex.tokens[:24, PREFIX : PREFIX + SUFFIX], study_set.tokens[:24, PREFIX:]
    )
    mtime = f.stat().st_mtime_ns
    assert CliRunner().invoke(main, args).exit_code == 0
    assert f.stat().st_mtime_ns == mtime


def test_measure_reads_shard_directories_and_checks_their_tokenizer(
    trained, study_set, tmp_path
) -> None:
    import_npy = pytest.importorskip("kdmem.corpus.importers").import_npy
    from kdmem.models.load import save_model
    from kdmem.models.tokenizer import load_tokenizer, train_tokenizer

    model, _, _ = trained["qwen3"]
    tok = load_tokenizer(train_tokenizer(["hello world"] * 10, 300, tmp_path / "tok"))
    mdir = save_model(model, tmp_path / "m", tokenizer=tok)
    flat = tmp_path / "t.npy"
    offs = tmp_path / "o.npy"
    w = PREFIX + SUFFIX
    np.save(flat, study_set.tokens.reshape(-1))
    np.save(offs, np.arange(0, study_set.tokens.size + 1, w, dtype=np.int64))
    good, bad = tmp_path / "good", tmp_path / "bad"
    import_npy([flat], good, offsets=offs, tokenizer_hash=tokenizer_hash(tok), vocab_size=96)
    import_npy([flat], bad, offsets=offs, tokenizer_hash="cd" * 32, vocab_size=96)
    out = tmp_path / "m.parquet"
    code, msg = _measure("--model", str(mdir), "--data", str(good), "--out", str(out))
    assert code == 0, msg
    t = pq.read_table(out)
    np.testing.assert_array_equal(t.column("example_id").to_numpy(), np.arange(48))
    cols, _ = measure_tokens(model, study_set.tokens, PREFIX)
    np.testing.assert_array_equal(t.column("first_mismatch").to_numpy(), cols["first_mismatch"])
    assert _meta(out)["tokenizer_check"] == "ok"
    code, msg = _measure("--model", str(mdir), "--data", str(bad), "--out", str(out))
    assert code == 2 and "tokenizer mismatch" in msg and "cdcdcdcdcdcd" in msg


def test_measure_on_a_full_disk_fails_in_one_line_and_finishes_identically(
    trained, data_npy, tmp_path
) -> None:
    """measure writing to a full disk (a real 1 MB tmpfs, where permitted): one line naming
    the file, no table published; after space is freed the rerun equals a roomy run."""
    from tests.full_disk import full_tmpfs

    _, mdir, _ = trained["gpt_neox"]
    args = ["--model", str(mdir), "--data", str(data_npy), "--chunk-size", "10"]
    with full_tmpfs(tmp_path) as (mnt, filler):
        code, msg = _measure(*args, "--out", str(mnt / "m.parquet"))
        err = msg.strip().splitlines()[-1]  # (after the tokenizer-less model's warning)
        assert code != 0 and "no space left" in err.lower() and str(mnt) in err, msg
        assert sum("error" in line for line in msg.splitlines()) == 1
        assert not (mnt / "m.parquet").exists()
        filler.unlink()
        assert _measure(*args, "--out", str(mnt / "m.parquet"))[0] == 0
        assert _measure(*args, "--out", str(tmp_path / "ref.parquet"))[0] == 0
        a, b = pq.read_table(mnt / "m.parquet"), pq.read_table(tmp_path / "ref.parquet")
        assert a.replace_schema_metadata(None).equals(b.replace_schema_metadata(None))


def test_a_model_without_tokenizer_warns_and_records_the_skipped_check(
    trained, data_npy, tmp_path
) -> None:
    """measure cannot compare tokenizers when the model ships none: it says so on stderr and
    records tokenizer_check = "skipped" in the table's metadata."""
    _, mdir, _ = trained["gpt_neox"]
    bare = tmp_path / "bare"
    shutil.copytree(mdir, bare, ignore=shutil.ignore_patterns("tokenizer*", "special_tokens*"))
    out = tmp_path / "m.parquet"
    code, msg = _measure("--model", str(bare), "--data", str(data_npy), "--out", str(out))
    assert code == 0, msg
    assert "tokenizers not compared" in msg
    assert _meta(out)["tokenizer_check"] == "skipped"
