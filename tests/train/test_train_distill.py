"""Soft, hard and argmax distillation on tiny models: the soft student's KL to the teacher
falls (every architecture), hard-mode data are exactly the teacher's greedy continuations,
argmax targets are the teacher's argmax, padded lm-head rows are ignored, resume is exact."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import ARCHS, make_model, safetensors_equal

torch = pytest.importorskip("torch")

from kdmem.config import DistillConfig  # noqa: E402
from kdmem.corpus.examples import load_examples  # noqa: E402
from kdmem.models.load import load_model  # noqa: E402
from kdmem.train.distill import distill, teacher_argmax  # noqa: E402

QUIET = {"log": lambda _m: None}


def _cfg(env, teacher, student, out, **kw):
    base = dict(
        teacher=str(teacher),
        student=str(student),
        data=str(env.train),
        val_data=str(env.val),
        out=str(out),
        epochs=2,
        lr=1e-2,
        batch_size=8,
    )
    return DistillConfig(**(base | kw))


@pytest.fixture(scope="module")
def teachers(env):
    """A wider teacher per architecture (random weights: any fixed model is a teacher)."""
    return {a: make_model(env.root, f"teacher-{a}", a, env.tokenizer, hidden=48) for a in ARCHS}


def _val_kl(teacher_dir, student_dir, tokens: np.ndarray) -> float:
    from kdmem.train import losses

    t, s = load_model(teacher_dir), load_model(student_dir)
    ids = torch.from_numpy(tokens)
    with torch.no_grad():
        d = losses.divergence(s(ids).logits[:, :-1], t(ids).logits[:, :-1], "fkl")
    return float(d.mean())


@pytest.mark.parametrize("arch", ARCHS)
def test_soft_student_kl_to_teacher_falls(env, teachers, tmp_path, arch) -> None:
    val = np.load(env.val)
    before = _val_kl(teachers[arch], env.model(arch), val)
    r = distill(_cfg(env, teachers[arch], env.model(arch), tmp_path / "soft"), **QUIET)
    after = _val_kl(teachers[arch], tmp_path / "soft", val)
    assert after < 0.8 * before
    rows = r["metrics"]
    assert rows[-1]["train_kl"] < rows[0]["train_kl"]
    assert rows[-1]["val_kl"] == pytest.approx(after, rel=1e-4)  # logged KL is the exact KL
    assert r["teacher_hash"] and r["role"] == "soft_student"


@pytest.mark.parametrize("loss", [pytest.param("rkl", marks=pytest.mark.slow), "jsd"])
def test_other_divergences_also_pull_the_student_to_the_teacher(env, teachers, tmp_path, loss):
    before = _val_kl(teachers["qwen3"], env.model("qwen3"), np.load(env.val))
    cfg = _cfg(env, teachers["qwen3"], env.model("qwen3"), tmp_path / loss, loss=loss)
    distill(cfg, **QUIET)
    assert _val_kl(teachers["qwen3"], tmp_path / loss, np.load(env.val)) < before


def test_hard_mode_trains_on_the_teachers_greedy_continuations(env, teachers, tmp_path) -> None:
    teacher = teachers["gpt_neox"]
    cfg = _cfg(
        env, teacher, env.model("gpt_neox"), tmp_path / "hard", mode="hard", prefix_len=6,
        gen_len=20, generations_dir=str(tmp_path / "gens"),
    )  # fmt: skip
    r = distill(cfg, **QUIET)
    assert r["metrics"][-1]["train_loss"] < r["metrics"][0]["train_loss"]
    (gen,) = (tmp_path / "gens").glob(f"{r['teacher_hash'][:16]}-p6-n20/generations.parquet")
    ex = load_examples(gen)
    data = np.load(env.train)
    assert ex.tokens.shape == (len(data), 20)
    np.testing.assert_array_equal(ex.tokens[:, :6], data[:, :6])
    # oracle: greedy iff the teacher's argmax under teacher forcing reproduces every new token
    model = load_model(teacher)
    with torch.no_grad():
        logits = model(torch.from_numpy(ex.tokens)).logits
    np.testing.assert_array_equal(logits[:, 5:-1].argmax(-1).numpy(), ex.tokens[:, 6:])
    # the cache is reused: a second student does not regenerate
    mtime = gen.stat().st_mtime_ns
    distill(_cfg(env, teacher, env.model("gpt_neox"), tmp_path / "hard2", mode="hard",
                 prefix_len=6, gen_len=20, generations_dir=str(tmp_path / "gens"), epochs=1),
            **QUIET)  # fmt: skip
    assert gen.stat().st_mtime_ns == mtime


def test_argmax_mode_targets_are_the_teachers_argmax(env, teachers, tmp_path) -> None:
    teacher = load_model(teachers["olmo2"])
    ids = torch.from_numpy(np.load(env.train)[:4])
    with torch.no_grad():
        want = teacher(ids).logits[:, :-1].argmax(-1)
    from kdmem.train.student import TeacherTrunk

    got = teacher_argmax(*TeacherTrunk(teacher, env.vocab)(ids), chunk_size=5)
    torch.testing.assert_close(got, want)
    cfg = _cfg(env, teachers["olmo2"], env.model("olmo2"), tmp_path / "am", mode="argmax")
    r = distill(cfg, **QUIET)
    assert r["metrics"][-1]["train_loss"] < r["metrics"][0]["train_loss"]


def test_padded_head_rows_are_ignored(env, tmp_path) -> None:
    """Teacher and student heads padded to different sizes beyond the tokenizer."""
    v = env.vocab
    teacher = make_model(tmp_path, "t-pad", "qwen3", env.tokenizer, rows=v + 13)
    student = make_model(tmp_path, "s-pad", "qwen3", env.tokenizer, rows=v + 3)
    r = distill(_cfg(env, teacher, student, tmp_path / "out", epochs=1), **QUIET)
    assert r["vocab"] == v
    before, after = load_model(student), load_model(tmp_path / "out")
    w0, w1 = before.lm_head.weight, after.lm_head.weight
    assert torch.equal(w0[v:], w1[v:])  # padded rows: no gradient, no update
    assert not torch.equal(w0[:v], w1[:v])


def test_soft_resume_after_interrupt_gives_identical_weights(env, teachers, tmp_path) -> None:
    kw = dict(checkpoint_every=3, grad_accum=2, batch_size=4, temperature=2.0)
    t, s = teachers["gpt_neox"], env.model("gpt_neox")
    distill(_cfg(env, t, s, tmp_path / "a", **kw), **QUIET)
    cfg = _cfg(env, t, s, tmp_path / "b", **kw)
    with pytest.raises(KeyboardInterrupt):
        distill(cfg, stop_after_step=5, **QUIET)
    distill(cfg, **QUIET)
    same, diff = safetensors_equal(tmp_path / "a", tmp_path / "b")
    assert same, diff


def test_teacher_argmax_is_fp32_under_bf16_autocast() -> None:
    """Two logits 2^-10 apart: bf16 (8 mantissa bits) merges them, fp32 does not. The
    argmax labels must be the fp32 ones however the caller's autocast is set."""
    hidden = torch.tensor([[[1.0, 1.0]]])  # [B=1, S=1, H=2]
    weight = torch.tensor([[1.0, 0.0], [1.0, 2.0**-10]])  # logits 1.0 and 1 + 2^-10
    assert (hidden @ weight.T).argmax(-1).item() == 1  # the fp32 oracle
    bf16 = (hidden.bfloat16() @ weight.bfloat16().T).float()
    assert bf16[0, 0, 0] == bf16[0, 0, 1]  # the near-tie bf16 would get wrong
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = teacher_argmax(hidden, weight, chunk_size=1)
    assert got.tolist() == [[1]]
