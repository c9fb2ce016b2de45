"""Soft-distillation throughput and peak memory: kdmem vs TRL's GKDTrainer, same run.

Both sides train the same tiny GPT-NeoX student (random init) against the same GPT-NeoX
teacher on the same random token sequences, on CPU, fp32, with AdamW, cosine schedule and
the same batch: kdmem ``distill(mode="soft", loss="fkl")`` and TRL ``GKDTrainer`` with
``beta=0`` (forward KL), ``lmbda=0`` (no on-policy student generation) and ``seq_kd=False``.
The temperature is 1 on both sides (TRL's GKD loss does not apply its temperature to the
divergence). Each side runs in a fresh subprocess; tokens/s counts predicted positions over
the training loop only (model loading excluded); peak memory is the peak resident set size
during the loop minus the resident set size when the loop starts (``/proc/self/status``
sampled every 2 ms), plus the process's absolute high-water mark.

    .venv/bin/python benches/bench_distill.py                 # defaults below
    .venv/bin/python benches/bench_distill.py --steps 20 --vocab 32768 --seq 512

Prints one row per side and the ratios kdmem / TRL (throughput: higher is better; memory:
lower is better). Never run inside the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class RssPeak:
    """Peak VmRSS (bytes) of this process between ``start()`` and ``stop()``."""

    def __init__(self) -> None:
        self.base = self.peak = 0
        self._run = False
        self._thread: threading.Thread | None = None

    @staticmethod
    def rss() -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def start(self) -> None:
        self.base = self.peak = self.rss()
        self._run = True
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while self._run:
            self.peak = max(self.peak, self.rss())
            time.sleep(0.002)

    def stop(self) -> None:
        self._run = False
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, self.rss())


def hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def build(work: Path, a: argparse.Namespace) -> None:
    """WordLevel tokenizer of exactly ``vocab`` ids, teacher, student and the data."""
    import numpy as np
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from kdmem.models.load import save_model
    from kdmem.models.tiny import build_model, tiny_config

    vocab = {"<|endoftext|>": 0} | {f"t{i}": i for i in range(1, a.vocab)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    teacher = build_model(
        tiny_config("gpt_neox", a.vocab, hidden_size=a.teacher_hidden, num_layers=a.layers,
                    num_heads=4, max_position_embeddings=max(512, a.seq)), seed=1)  # fmt: skip
    student = build_model(
        tiny_config("gpt_neox", a.vocab, hidden_size=a.student_hidden, num_layers=a.layers,
                    num_heads=4, max_position_embeddings=max(512, a.seq)), seed=2)  # fmt: skip
    save_model(teacher, work / "teacher", fast)
    save_model(student, work / "student", fast)
    rng = np.random.default_rng(0)
    np.save(work / "data.npy", rng.integers(1, a.vocab, (a.steps * a.batch, a.seq)))


def child_kdmem(work: Path, a: argparse.Namespace) -> dict[str, float]:
    import torch

    from kdmem.config import DistillConfig
    from kdmem.train.distill import distill

    torch.set_num_threads(a.threads)
    mem = RssPeak()
    box: dict[str, float] = {}

    def log(msg: str) -> None:
        if msg.startswith("soft student"):
            mem.start()
            box["t0"] = time.perf_counter()
        elif msg.startswith("epoch=1"):
            box["t1"] = time.perf_counter()
            mem.stop()

    cfg = DistillConfig(
        teacher=str(work / "teacher"), student=str(work / "student"), data=str(work / "data.npy"),
        out=str(work / "kdmem-out"), mode="soft", loss="fkl", temperature=1.0, alpha=0.0,
        epochs=1, lr=5e-5, schedule="cosine", batch_size=a.batch, max_grad_norm=1.0,
        chunk_size=a.chunk, device="cpu",
    )  # fmt: skip
    distill(cfg, log=log)
    loop = box["t1"] - box["t0"]
    return {
        "loop_s": loop,
        "tokens_per_s": a.steps * a.batch * (a.seq - 1) / loop,
        "peak_mb": (mem.peak - mem.base) / 2**20,
        "hwm_mb": hwm() / 2**20,
    }


def child_trl(work: Path, a: argparse.Namespace) -> dict[str, float]:
    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    torch.set_num_threads(a.threads)
    tok = AutoTokenizer.from_pretrained(str(work / "student"))
    student = AutoModelForCausalLM.from_pretrained(str(work / "student"), dtype=torch.float32)
    teacher = AutoModelForCausalLM.from_pretrained(str(work / "teacher"), dtype=torch.float32)
    data = np.load(work / "data.npy")
    ds = Dataset.from_dict({"input_ids": [list(map(int, r)) for r in data]})

    def collate(rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        ids = torch.tensor([r["input_ids"] for r in rows])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}

    mem = RssPeak()
    box: dict[str, float] = {}

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
            mem.start()
            box["t0"] = time.perf_counter()

        def on_train_end(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
            box["t1"] = time.perf_counter()
            mem.stop()

    args = GKDConfig(
        output_dir=str(work / "trl-out"), per_device_train_batch_size=a.batch,
        max_steps=a.steps, learning_rate=5e-5, lr_scheduler_type="cosine", beta=0.0, lmbda=0.0,
        temperature=1.0, seq_kd=False, max_length=a.seq, report_to=[], save_strategy="no",
        logging_strategy="no", use_cpu=True, bf16=False, fp16=False, disable_tqdm=True,
        dataloader_num_workers=0, max_grad_norm=1.0, seed=0,
    )  # fmt: skip
    trainer = GKDTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=ds,
        processing_class=tok, data_collator=collate, callbacks=[Clock()],
    )  # fmt: skip
    trainer.train()
    loop = box["t1"] - box["t0"]
    return {
        "loop_s": loop,
        "tokens_per_s": a.steps * a.batch * (a.seq - 1) / loop,
        "peak_mb": (mem.peak - mem.base) / 2**20,
        "hwm_mb": hwm() / 2**20,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--vocab", type=int, default=16384)
    p.add_argument("--student-hidden", type=int, default=128)
    p.add_argument("--teacher-hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--chunk", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=2, help="runs per side (best is shown)")
    p.add_argument("--child", choices=["kdmem", "trl"])
    p.add_argument("--work")
    a = p.parse_args()
    if a.child:
        fn = child_kdmem if a.child == "kdmem" else child_trl
        print("RESULT " + json.dumps(fn(Path(a.work), a)), flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="bench-distill-") as tmp:
        work = Path(tmp)
        build(work, a)
        flags = [f"--{k.replace('_', '-')}={v}" for k, v in vars(a).items()
                 if k not in ("child", "work", "repeat")]  # fmt: skip
        runs: dict[str, list[dict[str, float]]] = {"kdmem": [], "trl": []}
        for _ in range(a.repeat):  # interleaved, so background load hits both sides alike
            for side in ("kdmem", "trl"):
                shutil.rmtree(work / f"{side}-out", ignore_errors=True)
                r = subprocess.run(
                    [sys.executable, __file__, "--child", side, "--work", str(work), *flags],
                    capture_output=True, text=True, check=False,
                )  # fmt: skip
                line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
                if r.returncode or not line:
                    sys.exit(f"{side} failed:\n{r.stderr[-4000:]}")
                runs[side].append(json.loads(line[0][7:]))
        # best of the repeats: the least disturbed run of each side
        results = {side: min(rs, key=lambda r: r["loop_s"]) for side, rs in runs.items()}
    print(
        f"soft KD, CPU fp32, {a.threads} threads: student h={a.student_hidden}, teacher "
        f"h={a.teacher_hidden}, {a.layers} layers, vocab {a.vocab}, batch {a.batch} x {a.seq} "
        f"tokens, {a.steps} steps, best of {a.repeat}"
    )
    print(f"{'':8} {'tokens/s':>10} {'loop s':>8} {'peak MB (loop)':>15} {'HWM MB':>8}")
    for side, r in results.items():
        print(f"{side:8} {r['tokens_per_s']:10.0f} {r['loop_s']:8.2f} {r['peak_mb']:15.1f} "
              f"{r['hwm_mb']:8.1f}")  # fmt: skip
    k, t = results["kdmem"], results["trl"]
    print(
        f"ratio kdmem/TRL: throughput {k['tokens_per_s'] / t['tokens_per_s']:.2f}x, "
        f"peak loop memory {k['peak_mb'] / max(t['peak_mb'], 1e-9):.2f}x, "
        f"process HWM {k['hwm_mb'] / t['hwm_mb']:.2f}x"
    )


if __name__ == "__main__":
    main()
