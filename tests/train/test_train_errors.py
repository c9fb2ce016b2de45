"""Bad input ends in one-line kdmem errors: tokenizer mismatch, vocabularies that differ
beyond padding, data shorter than the sequence length, NaN loss (last good checkpoint
kept), out of memory (batch-size advice); configs reject unknown keys and wrong types."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import _texts, make_model

torch = pytest.importorskip("torch")

from kdmem.cli import main  # noqa: E402
from kdmem.config import DistillConfig, FinetuneConfig, config_from_dict  # noqa: E402
from kdmem.errors import (  # noqa: E402
    InvalidArgumentError,
    NonFiniteLossError,
    TokenizerMismatchError,
    TrainingOutOfMemoryError,
)
from kdmem.train import losses as L  # noqa: E402
from kdmem.train.distill import distill  # noqa: E402
from kdmem.train.finetune import finetune  # noqa: E402

QUIET = {"log": lambda _m: None}


def _ft(env, out, **kw):
    base = dict(role="teacher", model=str(env.model("gpt_neox")), data=str(env.train),
                out=str(out), epochs=1, lr=1e-3, batch_size=8)  # fmt: skip
    return FinetuneConfig(**(base | kw))


def _one_line(e: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


def test_teacher_student_tokenizer_mismatch(env, tmp_path) -> None:
    from kdmem.models.tokenizer import train_tokenizer

    other = train_tokenizer(_texts(1)[:50], 280, tmp_path / "tok2")
    student = make_model(tmp_path, "s-other", "gpt_neox", other)
    cfg = DistillConfig(teacher=str(env.model("qwen3")), student=str(student),
                        data=str(env.train), out=str(tmp_path / "o"))  # fmt: skip
    with pytest.raises(TokenizerMismatchError) as e:
        distill(cfg, **QUIET)
    assert "share one tokenizer" in _one_line(e)


def test_vocabularies_that_differ_beyond_padding(env, tmp_path) -> None:
    small = make_model(tmp_path, "s-small", "qwen3", env.tokenizer, rows=env.vocab - 10)
    cfg = DistillConfig(teacher=str(env.model("qwen3")), student=str(small),
                        data=str(env.train), out=str(tmp_path / "o"))  # fmt: skip
    with pytest.raises(TokenizerMismatchError) as e:
        distill(cfg, **QUIET)
    assert f"{env.vocab - 10} lm-head rows" in _one_line(e)


def test_data_shorter_than_the_sequence_length(env, tmp_path) -> None:
    with pytest.raises(InvalidArgumentError) as e:
        finetune(_ft(env, tmp_path / "o", seq_len=64), **QUIET)
    assert "--seq-len 64" in _one_line(e)


def test_token_ids_outside_the_tokenizer(env, tmp_path) -> None:
    np.save(tmp_path / "bad.npy", np.full((8, 24), env.vocab + 5))
    with pytest.raises(Exception, match="outside the tokenizer") as e:
        finetune(_ft(env, tmp_path / "o", data=str(tmp_path / "bad.npy")), **QUIET)
    _one_line(e)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(env, tmp_path, monkeypatch) -> None:
    real = L.chunked_ce_loss
    calls = {"n": 0}

    def poisoned(*a, **kw):
        calls["n"] += 1
        t = real(*a, **kw)
        if calls["n"] == 3:  # the third micro-batch = optimizer step 3
            return L.KdTerms(t.loss * float("nan"), t.kl, t.ce, t.tokens)
        return t

    monkeypatch.setattr(L, "chunked_ce_loss", poisoned)
    out = tmp_path / "o"
    with pytest.raises(NonFiniteLossError) as e:
        finetune(_ft(env, out, checkpoint_every=2), **QUIET)
    msg = _one_line(e)
    assert "at step 3" in msg and "last good checkpoint: step 2" in msg
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2
    from safetensors.torch import load_file

    weights = load_file(str(out / "checkpoint" / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_out_of_memory_suggests_batch_size_and_accumulation(env, tmp_path, monkeypatch) -> None:
    def oom(*a, **kw):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(L, "chunked_ce_loss", oom)
    with pytest.raises(TrainingOutOfMemoryError) as e:
        finetune(_ft(env, tmp_path / "o", grad_accum=1), **QUIET)
    assert "--batch-size 4 --grad-accum 2" in _one_line(e)


def test_configs_reject_unknown_keys_wrong_types_and_missing_keys() -> None:
    ok = {"role": "baseline", "model": "m", "data": "d", "out": "o"}
    cfg = config_from_dict(FinetuneConfig, ok | {"lr": 1, "epochs": 2})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    with pytest.raises(InvalidArgumentError, match="unknown FinetuneConfig key"):
        config_from_dict(FinetuneConfig, ok | {"learning_rate": 1e-4})
    with pytest.raises(InvalidArgumentError, match="epochs"):
        config_from_dict(FinetuneConfig, ok | {"epochs": "3"})
    with pytest.raises(InvalidArgumentError, match="choose one of"):
        config_from_dict(DistillConfig, {"teacher": "t", "student": "s", "data": "d",
                                         "out": "o", "mode": "softest"})  # fmt: skip
    with pytest.raises(InvalidArgumentError, match="--model"):
        config_from_dict(FinetuneConfig, {"role": "teacher", "data": "d", "out": "o"})
    with pytest.raises(InvalidArgumentError, match="temperature"):
        config_from_dict(DistillConfig, {"teacher": "t", "student": "s", "data": "d",
                                         "out": "o", "temperature": 0})  # fmt: skip
    with pytest.raises(AttributeError):
        cfg.lr = 2.0  # type: ignore[misc]  # frozen


def test_cli_train_runs_from_a_toml_config_and_reports_errors_in_one_line(env, tmp_path) -> None:
    toml = tmp_path / "ft.toml"
    toml.write_text(
        f'role = "baseline"\nmodel = "{env.model("qwen3")}"\ndata = "{env.train}"\n'
        f'out = "{tmp_path / "o"}"\nepochs = 1\nbatch_size = 8\n'
    )
    r = CliRunner().invoke(main, ["train", "--config", str(toml), "--lr", "1e-3"])
    assert r.exit_code == 0, r.output
    info = json.loads((tmp_path / "o" / "kdmem.json").read_text())
    assert info["config"]["lr"] == 1e-3 and info["complete"]
    r = CliRunner().invoke(main, ["train", "--config", str(toml), "--out", str(tmp_path / "p"),
                                  "--seq-len", "99"])  # fmt: skip
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.startswith("kdmem: error:")]
    assert len(lines) == 1 and "--seq-len 99" in lines[0]
    r = CliRunner().invoke(main, ["distill", "--teacher", "t", "--student", "s", "--data", "d",
                                  "--out", "o", "--mode", "soft", "--bogus", "1"])  # fmt: skip
    assert r.exit_code == 2 and "bogus" in r.output


def test_missing_model_directory(env, tmp_path) -> None:
    with pytest.raises(Exception, match="no such directory") as e:
        finetune(_ft(env, tmp_path / "o", model=str(tmp_path / "nope")), **QUIET)
    _one_line(e)


def test_training_a_checkpoint_that_ships_no_tokenizer(env, tmp_path) -> None:
    """A model dir with config + weights only: training works on token ids checked against
    its lm-head rows; ids beyond them are one line naming the rows; loading its tokenizer
    where one is truly needed is one line naming the missing file."""
    from kdmem.errors import KdmemIOError, TokenRangeError
    from kdmem.models.load import load_model, save_model
    from kdmem.models.tokenizer import load_tokenizer

    bare = tmp_path / "bare"
    save_model(load_model(env.model("gpt_neox")), bare)  # no tokenizer saved
    assert not (bare / "tokenizer.json").exists()
    runner = CliRunner()
    args = ["train", "--role", "baseline", "--model", str(bare), "--data", str(env.train)]
    r = runner.invoke(main, [*args, "--out", str(tmp_path / "o"), "--epochs", "1"])
    assert r.exit_code == 0, r.output
    info = json.loads((tmp_path / "o" / "kdmem.json").read_text())
    assert info["tokenizer_check"] == "skipped" and info["vocab"] == env.vocab
    wide = np.load(env.train)
    wide[0, 3] = env.vocab + 5  # beyond the lm-head rows
    np.save(tmp_path / "wide.npy", wide)
    with pytest.raises(TokenRangeError) as e:
        finetune(_ft(env, tmp_path / "w", model=str(bare), data=str(tmp_path / "wide.npy")))
    assert f"{env.vocab} lm-head rows (it ships no tokenizer)" in _one_line(e)
    with pytest.raises(KdmemIOError) as e2:
        load_tokenizer(bare)
    assert "tokenizer.json" in _one_line(e2)
    # distillation: the teacher's tokenizer vouches for the bare student's rows
    cfg = DistillConfig(teacher=str(env.model("gpt_neox")), student=str(bare), epochs=1,
                        data=str(env.train), out=str(tmp_path / "d"))  # fmt: skip
    assert distill(cfg, **QUIET)["vocab"] == env.vocab


def test_training_on_a_full_disk_fails_in_one_line_and_resumes(env, tmp_path) -> None:
    """Training into a full disk (a real 1 MB tmpfs, where permitted): one line naming the
    output (DiskFullError), no model published; after space is freed the same call finishes
    with the weights of a roomy run."""
    from tests.full_disk import full_tmpfs

    from conftest import safetensors_equal
    from kdmem.errors import DiskFullError

    with full_tmpfs(tmp_path) as (mnt, filler):
        with pytest.raises(DiskFullError) as e:
            finetune(_ft(env, mnt / "t"), **QUIET)
        assert str(mnt) in _one_line(e) and "no space left" in str(e.value)
        assert not (mnt / "t" / "model.safetensors").exists()
        filler.unlink()
        finetune(_ft(env, mnt / "t"), **QUIET)
        finetune(_ft(env, tmp_path / "ref"), **QUIET)
        same, diff = safetensors_equal(mnt / "t", tmp_path / "ref")
        assert same, diff
