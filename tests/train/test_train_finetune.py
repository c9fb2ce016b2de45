"""Cross-entropy fine-tuning on tiny GPT-NeoX / OLMo-2 / Qwen-3 models: the loss falls, a
planted sequence gets memorized (greedy decoding, fp32, EOS neither stopped at nor
suppressed), and a resumed run ends with the same weights as an uninterrupted one."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from conftest import ARCHS, safetensors_equal

torch = pytest.importorskip("torch")

from kdmem.config import FinetuneConfig  # noqa: E402
from kdmem.errors import InvalidArgumentError  # noqa: E402
from kdmem.train.finetune import finetune  # noqa: E402

PREFIX = 8
QUIET = {"log": lambda _m: None}
# OLMo-2 (QK-norm, post-sublayer norms) learns more slowly at this tiny size
EPOCHS_TO_MEMORIZE = {"gpt_neox": 6, "olmo2": 16, "qwen3": 6}


def _cfg(env, out, arch="gpt_neox", **kw):
    base = dict(
        role="baseline",
        model=str(env.model(arch)),
        data=str(env.train),
        val_data=str(env.val),
        out=str(out),
        epochs=6,
        lr=2e-2,
        batch_size=8,
        warmup_steps=2,
    )
    return FinetuneConfig(**(base | kw))


def _greedy_suffix(model_dir, prefix: np.ndarray, n: int) -> np.ndarray:
    from kdmem.measure.generate import greedy_continuations
    from kdmem.models.load import load_model

    model = load_model(model_dir, dtype="float32")
    return greedy_continuations(model, prefix[None, :], n, batch_size=1)[0]


@pytest.mark.parametrize("arch", ARCHS)
def test_loss_falls_and_planted_sequence_is_memorized(env, tmp_path, arch) -> None:
    planted = env.planted
    before = _greedy_suffix(env.model(arch), planted[:PREFIX], len(planted) - PREFIX)
    assert not np.array_equal(before, planted[PREFIX:])
    epochs = EPOCHS_TO_MEMORIZE[arch]
    result = finetune(_cfg(env, tmp_path / "ft", arch, epochs=epochs), log=lambda _m: None)
    rows = result["metrics"]
    assert len(rows) == epochs and rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert {"val_loss", "val_ppl"} <= rows[0].keys()
    assert rows[-1]["val_ppl"] == pytest.approx(np.exp(rows[-1]["val_loss"]))
    on_disk = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert on_disk == rows
    after = _greedy_suffix(tmp_path / "ft", planted[:PREFIX], len(planted) - PREFIX)
    np.testing.assert_array_equal(after, planted[PREFIX:])
    assert not (tmp_path / "ft" / "checkpoint").exists()  # removed once the model is final


def test_resume_after_interrupt_gives_identical_weights(env, tmp_path) -> None:
    kw = dict(epochs=2, grad_accum=2, batch_size=4, checkpoint_every=3)
    full = finetune(_cfg(env, tmp_path / "a", **kw), log=lambda _m: None)
    cfg = _cfg(env, tmp_path / "b", **kw)
    with pytest.raises(KeyboardInterrupt):
        finetune(cfg, log=lambda _m: None, stop_after_step=7)  # last checkpoint: step 6
    state = json.loads((tmp_path / "b" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 6
    resumed = finetune(cfg, log=lambda _m: None)
    same, diff = safetensors_equal(tmp_path / "a", tmp_path / "b")
    assert same, diff
    assert resumed["model_hash"] == full["model_hash"]
    assert [r["train_loss"] for r in resumed["metrics"]] == [
        r["train_loss"] for r in full["metrics"]
    ]
    # a rerun of a finished job does nothing; a different config in the same dir is refused
    assert finetune(cfg, log=lambda _m: None)["model_hash"] == full["model_hash"]
    with pytest.raises(InvalidArgumentError, match="another config"):
        finetune(_cfg(env, tmp_path / "b", **(kw | {"lr": 1e-3})), log=lambda _m: None)


def test_seed_changes_data_order_only_through_the_seed(env, tmp_path) -> None:
    a = finetune(_cfg(env, tmp_path / "a", epochs=1, seed=1), log=lambda _m: None)
    b = finetune(_cfg(env, tmp_path / "b", epochs=1, seed=2), log=lambda _m: None)
    c = finetune(_cfg(env, tmp_path / "c", epochs=1, seed=1), log=lambda _m: None)
    assert a["model_hash"] == c["model_hash"] != b["model_hash"]


@pytest.mark.slow
def test_resume_after_sigkill_gives_identical_weights(env, tmp_path) -> None:
    import signal
    import subprocess
    import sys
    import time

    kw = dict(epochs=30, batch_size=8, checkpoint_every=1)  # long enough to be killed
    full = finetune(_cfg(env, tmp_path / "a", **kw), log=lambda _m: None)
    cfg = _cfg(env, tmp_path / "b", **kw)
    args = [sys.executable, "-m", "kdmem.train", "train", "--role", "baseline", "--model",
            cfg.model, "--data", cfg.data, "--val-data", str(cfg.val_data), "--out", cfg.out,
            "--epochs", "30", "--lr", str(cfg.lr), "--batch-size", "8", "--warmup-steps", "2",
            "--checkpoint-every", "1"]  # fmt: skip
    proc = subprocess.Popen(args)  # same thread count as this process: same float sums
    state = tmp_path / "b" / "checkpoint" / "state.json"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text())["step"] >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "b" / "kdmem.json").exists(), "the run finished before the kill"
    resumed = finetune(cfg, log=lambda _m: None)
    same, diff = safetensors_equal(tmp_path / "a", tmp_path / "b")
    assert same, diff
    assert resumed["model_hash"] == full["model_hash"]


def test_every_example_is_seen_every_epoch_with_a_smaller_last_step(env, tmp_path) -> None:
    """32 examples in global batches of 12: steps of 12, 12 and 8 examples, the last one's
    loss normalised by its own tokens; drop_last restores 2 full steps per epoch."""
    from kdmem.distributed import Dist
    from kdmem.train.schedule import micro_batches, step_examples, steps_per_epoch

    cfg = _cfg(env, tmp_path / "o", batch_size=6, grad_accum=2, epochs=2)
    order = np.arange(32)
    assert steps_per_epoch(32, cfg, Dist()) == 3
    assert [step_examples(32, s, 12) for s in range(3)] == [12, 12, 8]
    last = micro_batches(order, 2, 6, 2, Dist())
    assert [len(m) for m in last] == [6, 2]
    # two processes: rank 1's second micro-batch of the last step is empty
    two = [micro_batches(order, 2, 3, 2, Dist(rank=r, world_size=2)) for r in (0, 1)]
    assert sorted(np.concatenate([m for r in two for m in r]).tolist()) == list(range(24, 32))
    dropped = dataclasses.replace(cfg, drop_last=True)
    assert steps_per_epoch(32, dropped, Dist()) == 2
    r = finetune(cfg, **QUIET)
    assert [row["examples"] for row in r["metrics"]] == [32, 32]
    assert r["steps"] == 6
    r = finetune(dataclasses.replace(dropped, out=str(tmp_path / "d")), **QUIET)
    assert [row["examples"] for row in r["metrics"]] == [24, 24]


def test_the_smaller_last_step_matches_a_plain_pytorch_loop(env, tmp_path) -> None:
    """Oracle: one epoch of 8 examples in steps of 6 and 2, each step the mean token CE of
    its own examples (F.cross_entropy), plain AdamW; weights agree to 1e-5. eps = 1 keeps
    Adam's update proportional to the gradient (a tiny eps would turn float noise in
    near-zero gradients into full-size steps); normalising the last step by the full
    batch's tokens instead is off by ~1e-2 here."""
    import torch.nn.functional as F
    from safetensors.torch import load_file

    from kdmem.models.load import load_model
    from kdmem.train.schedule import epoch_order

    data = np.load(env.train)[:8]
    np.save(tmp_path / "d8.npy", data)
    kw = dict(data=str(tmp_path / "d8.npy"), val_data=None, epochs=1, lr=1.0, batch_size=6)
    kw |= dict(warmup_steps=0, schedule="constant", max_grad_norm=0.0, adam_eps=1.0)
    finetune(_cfg(env, tmp_path / "kd", **kw), **QUIET)
    model = load_model(env.model("gpt_neox"))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1.0, eps=1.0, weight_decay=0.0, foreach=False)
    order = epoch_order(8, 0, 0)
    for rows in (order[:6], order[6:]):
        ids = torch.from_numpy(data[rows])
        logits = model(ids).logits[:, :-1].float()
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)).backward()
        opt.step()
        opt.zero_grad()
    got = load_file(str(tmp_path / "kd" / "model.safetensors"))
    for name, p in model.state_dict().items():
        if name in got:  # (tied aliases are saved once)
            torch.testing.assert_close(got[name], p, atol=1e-5, rtol=1e-5, msg=name)


def test_seed_init_random_head_reinitialises_the_head_from_the_seed(env, tmp_path) -> None:
    """With pretrained weights a seed changes the data order only; seed_init = random_head
    also draws the lm-head from the seed (oracle: normal(0, initializer_range) from a
    torch.Generator seeded the same), and is refused for a tied head."""
    from kdmem.errors import InvalidArgumentError
    from kdmem.models.load import load_model, reinit_head

    base = load_model(env.model("gpt_neox"))
    a, b, a2 = (load_model(env.model("gpt_neox")) for _ in range(3))
    for m, seed in ((a, 1), (b, 2), (a2, 1)):
        reinit_head(m, seed)
    head = base.get_output_embeddings().weight
    std = base.config.initializer_range
    gen = torch.Generator().manual_seed(1)
    want = torch.randn(head.shape, generator=gen) * std
    torch.testing.assert_close(a.get_output_embeddings().weight, want)
    assert torch.equal(a.get_output_embeddings().weight, a2.get_output_embeddings().weight)
    assert not torch.equal(a.get_output_embeddings().weight, b.get_output_embeddings().weight)
    # everything but the head is the pretrained model
    for (name, p), q in zip(base.named_parameters(), a.parameters(), strict=True):
        if p is not head:
            assert torch.equal(p, q), name
    tied = load_model(env.model("gpt_neox"))
    tied.get_output_embeddings().weight = tied.get_input_embeddings().weight
    with pytest.raises(InvalidArgumentError, match="untied"):
        reinit_head(tied, 0)
    # the recipe applies it: a run differs from the plain pretrained start only in the head
    r = finetune(_cfg(env, tmp_path / "rh", epochs=1, seed_init="random_head"), **QUIET)
    assert r["config"]["seed_init"] == "random_head"


def test_snapshots_are_the_models_of_their_step_and_the_study_measures_them(env, tmp_path) -> None:
    """snapshot_every = 4 keeps the model after steps 4, 8, 12; with a constant lr the one
    after step 4 is exactly a 1-epoch (4-step) run's model (same data order). The study's
    steps stages measure each kept model on a fixed subset of D (oracle: measure_tokens)."""
    import shutil

    from kdmem.config import ExperimentConfig, from_dict
    from kdmem.corpus.examples import Examples, load_examples, write_examples
    from kdmem.measure import measure_tokens
    from kdmem.models.load import load_model, model_hash
    from kdmem.pipeline import StageContext
    from kdmem.rundir import Layout
    from kdmem.study import stages

    kw = dict(schedule="constant", warmup_steps=0, batch_size=8, val_data=None)
    long = finetune(_cfg(env, tmp_path / "long", epochs=3, snapshot_every=4, **kw), **QUIET)
    short = finetune(_cfg(env, tmp_path / "short", epochs=1, **kw), **QUIET)
    snaps = sorted(p.name for p in (tmp_path / "long" / "steps").iterdir())
    assert snaps == ["step-0000004", "step-0000008", "step-0000012"]
    assert model_hash(tmp_path / "long" / "steps" / "step-0000004") == short["model_hash"]
    assert model_hash(tmp_path / "long" / "steps" / "step-0000012") == long["model_hash"]

    run = tmp_path / "run"
    lay = Layout(run)
    shutil.copytree(tmp_path / "long", lay.model("baseline_seed0"))
    ids = np.arange(32, dtype=np.int64)
    write_examples(Examples(ids, np.load(env.train).astype(np.int64)), lay.study)
    cfg = from_dict(
        ExperimentConfig,
        {
            "run": {"name": "t", "device": "cpu"},
            "data": {"corpus": ["c"], "tokenizer": "t", "seq_len": 24, "prefix": 8, "suffix": 8},
            "models": {"teacher": "T", "student": "S"},
            "measure": {"every_steps": 4, "subset": 10},
        },
    )
    ctx = StageContext(run, None, "steps", lambda _m: None)
    stages.steps_subset_stage(cfg)(ctx)
    subset = load_examples(lay.steps_subset)
    assert len(subset) == 10 and set(subset.example_ids) <= set(ids.tolist())
    stages.steps_stage(cfg, "baseline_seed0")(ctx)
    summary = json.loads(lay.steps_summary("baseline_seed0").read_text())
    assert [r["step"] for r in summary["steps"]] == [4, 8, 12]
    for r, snap in zip(summary["steps"], snaps, strict=True):
        model = load_model(lay.model_snapshots("baseline_seed0") / snap)
        cols, _ = measure_tokens(model, subset.tokens[:, :16], 8)
        assert r["memorized"] == int(cols["memorized"].sum())
