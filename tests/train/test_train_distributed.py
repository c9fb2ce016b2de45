"""DDP and FSDP2: two CPU processes on gloo (torchrun) end with the same weights as one
process with the same global batch (2 x accumulation), up to float tolerance; for soft
distillation also with the teacher sharded by FSDP2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import make_model, safetensors_equal

torch = pytest.importorskip("torch")

from kdmem.config import DistillConfig, FinetuneConfig  # noqa: E402
from kdmem.train.distill import distill  # noqa: E402
from kdmem.train.finetune import finetune  # noqa: E402


def _torchrun(args: list[str], tmp_path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--standalone", "-m", "kdmem.train", *args, "--device", "cpu"]  # fmt: skip
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(env, tmp_path) -> None:
    common = dict(model=str(env.model("qwen3")), data=str(env.train), val_data=str(env.val),
                  epochs=2, lr=5e-3, batch_size=4, checkpoint_every=3)  # fmt: skip
    one = finetune(
        FinetuneConfig(role="baseline", out=str(tmp_path / "one"), grad_accum=2, **common),
        log=lambda _m: None,
    )
    _torchrun(["train", "--role", "baseline", "--model", common["model"], "--data",
               common["data"], "--val-data", common["val_data"], "--epochs", "2", "--lr", "5e-3",
               "--batch-size", "4", "--grad-accum", "1", "--checkpoint-every", "3",
               "--out", str(tmp_path / "two")], tmp_path)  # fmt: skip
    _, diff = safetensors_equal(tmp_path / "one", tmp_path / "two")
    assert diff < 1e-5, diff
    import json

    two = json.loads((tmp_path / "two" / "kdmem.json").read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    for a, b in zip(one["metrics"], two["metrics"], strict=True):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", [["--distributed", "ddp"],
                                      ["--distributed", "fsdp", "--teacher-shard", "fsdp"]])  # fmt: skip
def test_soft_distillation_two_processes_match_one(env, tmp_path, strategy) -> None:
    teacher = make_model(tmp_path, "teacher", "gpt_neox", env.tokenizer, hidden=48)
    student = str(env.model("gpt_neox"))
    cfg = DistillConfig(teacher=str(teacher), student=student, data=str(env.train),
                        out=str(tmp_path / "one"), epochs=1, lr=5e-3, batch_size=4,
                        grad_accum=2)  # fmt: skip
    distill(cfg, log=lambda _m: None)
    _torchrun(["distill", "--teacher", str(teacher), "--student", student, "--data",
               str(env.train), "--out", str(tmp_path / "two"), "--epochs", "1", "--lr", "5e-3",
               "--batch-size", "4", "--val-data", str(env.val), *strategy], tmp_path)  # fmt: skip
    _, diff = safetensors_equal(tmp_path / "one", tmp_path / "two")
    assert diff < 1e-5, diff
