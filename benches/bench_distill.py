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

On a GPU (issue 13's device check, ``benches/device_check.sh``): ``--device cuda`` measures
memory as ``torch.cuda.max_memory_allocated`` over the loop (reset when it starts) on both
sides, ``--preset pythia`` gives the student Pythia-1.4B's shapes and the teacher
Pythia-6.9B's (random weights, one 50,304-row vocabulary for both, built on the GPU), and
``--precision bf16`` trains with bf16 autocast over fp32 master weights on both sides (TRL:
``bf16=True``) with the teacher stored and run in bf16. ``--kdmem-procs N --teacher-shard fsdp``
runs the kdmem side under torchrun with FSDP2 over N GPUs (with one GPU, FSDP has nothing to
shard and the run says so). The kdmem row also prints the estimate of ``kdmem run --plan``
(``kdmem.launch.memory.train_bytes``) for the same settings beside the measured peak.

    python3 benches/bench_distill.py --device cuda --preset pythia --precision bf16 \
        --batch 8 --seq 256 --steps 12 --repeat 1
    .venv/bin/python benches/bench_distill.py --device cpu --preset tiny-gpu-shapes \
        --precision bf16 --steps 2 --repeat 1      # the same code paths, on CPU, tiny
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


PRESETS = {
    # student (hidden, layers, heads), teacher (hidden, layers, heads), vocab
    "pythia": ((2048, 24, 16), (4096, 32, 32), 50304),  # Pythia-1.4B / Pythia-6.9B shapes
    "tiny-gpu-shapes": ((64, 2, 4), (128, 2, 4), 1024),  # the same code paths, CPU-sized
}


def apply_preset(a: argparse.Namespace) -> None:
    if a.preset:
        (a.student_hidden, a.layers, a.student_heads), t, a.vocab = PRESETS[a.preset]
        a.teacher_hidden, a.teacher_layers, a.teacher_heads = t


def build(work: Path, a: argparse.Namespace) -> None:
    """WordLevel tokenizer of exactly ``vocab`` ids, teacher, student and the data."""
    import numpy as np
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from kdmem.models.load import save_model
    from kdmem.models.tiny import build_model, tiny_config

    vocab = {"<|endoftext|>": 0} | {f"t{i}": i for i in range(1, a.vocab)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    t_cfg = tiny_config("gpt_neox", a.vocab, hidden_size=a.teacher_hidden,
                        num_layers=a.teacher_layers or a.layers, num_heads=a.teacher_heads,
                        max_position_embeddings=max(512, a.seq))  # fmt: skip
    s_cfg = tiny_config("gpt_neox", a.vocab, hidden_size=a.student_hidden, num_layers=a.layers,
                        num_heads=a.student_heads, max_position_embeddings=max(512, a.seq))  # fmt: skip
    for c in (t_cfg, s_cfg):
        c._attn_implementation = "sdpa" if a.device == "cuda" else "eager"
    if a.device == "cuda":  # billions of parameters: initialise on the GPU, store bf16 teacher
        for name, cfg, seed, dtype in (("teacher", t_cfg, 1, torch.bfloat16 if a.precision ==
                                        "bf16" else torch.float32), ("student", s_cfg, 2,
                                                                     torch.float32)):  # fmt: skip
            torch.manual_seed(seed)
            with torch.device("cuda"):
                m = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
            m.eval()
            save_model(m, work / name, fast)
            del m
            torch.cuda.empty_cache()
    else:
        save_model(build_model(t_cfg, seed=1), work / "teacher", fast)
        save_model(build_model(s_cfg, seed=2), work / "student", fast)
    rng = np.random.default_rng(0)
    np.save(work / "data.npy", rng.integers(1, a.vocab, (a.steps * a.batch, a.seq)))


class CudaPeak:
    """``torch.cuda.max_memory_allocated`` between ``start()`` and ``stop()`` (bytes)."""

    def __init__(self) -> None:
        self.base = self.peak = 0

    def start(self) -> None:
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self.base = 0  # absolute: weights, optimizer state and activations all count

    def stop(self) -> None:
        import torch

        torch.cuda.synchronize()
        self.peak = torch.cuda.max_memory_allocated()


def _meter(a: argparse.Namespace) -> RssPeak | CudaPeak:
    return CudaPeak() if a.device == "cuda" else RssPeak()


def child_kdmem(work: Path, a: argparse.Namespace) -> dict[str, float]:
    import torch

    from kdmem.config import DistillConfig
    from kdmem.train.distill import distill

    torch.set_num_threads(a.threads)
    mem = _meter(a)
    box: dict[str, float] = {}

    def log(msg: str) -> None:
        if msg.startswith("soft student"):
            mem.start()
            box["t0"] = time.perf_counter()
        elif msg.startswith("epoch=1"):
            if a.device == "cuda":
                torch.cuda.synchronize()
            box["t1"] = time.perf_counter()
            mem.stop()

    sharded = a.teacher_shard != "none"
    cfg = DistillConfig(
        teacher=str(work / "teacher"), student=str(work / "student"), data=str(work / "data.npy"),
        out=str(work / "kdmem-out"), mode="soft", loss="fkl", temperature=1.0, alpha=0.0,
        epochs=1, lr=5e-5, schedule="cosine", batch_size=a.batch, max_grad_norm=1.0,
        chunk_size=a.chunk, device=None if a.device == "cuda" else "cpu", precision=a.precision,
        distributed="fsdp" if sharded else "ddp", teacher_shard=a.teacher_shard,
    )  # fmt: skip
    distill(cfg, log=log)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if int(os.environ.get("RANK", "0")) != 0:
        return {}  # rank 0 reports (its log is the one that runs)
    loop = box["t1"] - box["t0"]
    return {
        "loop_s": loop,
        "tokens_per_s": (a.steps // world) * world * a.batch * (a.seq - 1) / loop,
        "peak_mb": (mem.peak - mem.base) / 2**20,
        "hwm_mb": hwm() / 2**20,
        "plan_mb": plan_estimate(work, a, world) / 2**20,
    }


def plan_estimate(work: Path, a: argparse.Namespace, world: int) -> int:
    """What ``kdmem run --plan`` estimates for this run (bytes on one device)."""
    from kdmem.launch.memory import read_shape, train_bytes

    sharded = a.teacher_shard != "none"
    return train_bytes(
        read_shape(work / "student"), batch=a.batch, seq=a.seq, precision=a.precision,
        strategy="fsdp" if sharded else "ddp", world=world, chunk=a.chunk,
        teacher=read_shape(work / "teacher"), teacher_shard=a.teacher_shard,
    ).total  # fmt: skip


def child_trl(work: Path, a: argparse.Namespace) -> dict[str, float]:
    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    torch.set_num_threads(a.threads)
    tok = AutoTokenizer.from_pretrained(str(work / "student"))
    t_dtype = torch.bfloat16 if a.precision == "bf16" else torch.float32
    student = AutoModelForCausalLM.from_pretrained(str(work / "student"), dtype=torch.float32)
    teacher = AutoModelForCausalLM.from_pretrained(str(work / "teacher"), dtype=t_dtype)
    data = np.load(work / "data.npy")
    ds = Dataset.from_dict({"input_ids": [list(map(int, r)) for r in data]})

    def collate(rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        ids = torch.tensor([r["input_ids"] for r in rows])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}

    mem = _meter(a)
    box: dict[str, float] = {}

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
            mem.start()
            box["t0"] = time.perf_counter()

        def on_train_end(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
            if a.device == "cuda":
                torch.cuda.synchronize()
            box["t1"] = time.perf_counter()
            mem.stop()

    args = GKDConfig(
        output_dir=str(work / "trl-out"), per_device_train_batch_size=a.batch,
        max_steps=a.steps, learning_rate=5e-5, lr_scheduler_type="cosine", beta=0.0, lmbda=0.0,
        temperature=1.0, seq_kd=False, max_length=a.seq, report_to=[], save_strategy="no",
        logging_strategy="no", use_cpu=a.device == "cpu", bf16=a.precision == "bf16",
        fp16=False, disable_tqdm=True,
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
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="model shapes (overrides the size options)")  # fmt: skip
    p.add_argument("--teacher-layers", type=int, default=0, help="default: --layers")
    p.add_argument("--student-heads", type=int, default=4)
    p.add_argument("--teacher-heads", type=int, default=4)
    p.add_argument("--teacher-shard", choices=["none", "fsdp", "fsdp_offload"], default="none")
    p.add_argument("--kdmem-procs", type=int, default=1, help="kdmem side: processes (torchrun)")
    p.add_argument("--repeat", type=int, default=2, help="runs per side (best is shown)")
    p.add_argument("--child", choices=["kdmem", "trl"])
    p.add_argument("--work")
    a = p.parse_args()
    apply_preset(a)
    if a.child:
        fn = child_kdmem if a.child == "kdmem" else child_trl
        res = fn(Path(a.work), a)
        if res:
            print("RESULT " + json.dumps(res), flush=True)
        return
    if a.teacher_shard != "none" and a.kdmem_procs == 1:
        print("note: --teacher-shard with one process: FSDP has nothing to shard (world size 1)")
    with tempfile.TemporaryDirectory(prefix="bench-distill-") as tmp:
        work = Path(tmp)
        build(work, a)
        flags = [f"--{k.replace('_', '-')}={v}" for k, v in vars(a).items()
                 if k not in ("child", "work", "repeat", "preset") and v is not None]  # fmt: skip
        runs: dict[str, list[dict[str, float]]] = {"kdmem": [], "trl": []}
        for _ in range(a.repeat):  # interleaved, so background load hits both sides alike
            for side in ("kdmem", "trl"):
                shutil.rmtree(work / f"{side}-out", ignore_errors=True)
                cmd = [sys.executable, __file__, "--child", side, "--work", str(work), *flags]
                if side == "kdmem" and a.kdmem_procs > 1:
                    cmd[1:1] = ["-m", "torch.distributed.run", "--standalone",
                                "--nproc-per-node", str(a.kdmem_procs)]  # fmt: skip
                r = subprocess.run(cmd, capture_output=True, text=True, check=False)
                line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
                if r.returncode or not line:
                    sys.exit(f"{side} failed:\n{r.stderr[-4000:]}")
                runs[side].append(json.loads(line[0][7:]))
        # best of the repeats: the least disturbed run of each side
        results = {side: min(rs, key=lambda r: r["loop_s"]) for side, rs in runs.items()}
    print(
        f"soft KD, {a.device} {a.precision}, {a.threads} threads: student h={a.student_hidden} "
        f"x {a.layers} layers, teacher h={a.teacher_hidden} x {a.teacher_layers or a.layers} "
        f"layers, vocab {a.vocab}, batch {a.batch} x {a.seq} tokens, {a.steps} steps, kdmem on "
        f"{a.kdmem_procs} process(es), teacher_shard {a.teacher_shard}, best of {a.repeat}"
    )
    print(f"{'':8} {'tokens/s':>10} {'loop s':>8} {'peak MB (loop)':>15} {'HWM MB':>8}")
    for side, r in results.items():
        print(f"{side:8} {r['tokens_per_s']:10.0f} {r['loop_s']:8.2f} {r['peak_mb']:15.1f} "
              f"{r['hwm_mb']:8.1f}")  # fmt: skip
    k, t = results["kdmem"], results["trl"]
    print(
        f"plan estimate (kdmem run --plan) {k['plan_mb']:.1f} MB vs measured kdmem loop peak "
        f"{k['peak_mb']:.1f} MB: error {k['plan_mb'] / max(k['peak_mb'], 1e-9) - 1:+.1%}"
        + ("" if a.device == "cuda" else " (CPU: RSS delta, not tensor bytes; bench_plan.py)")
    )
    print(
        f"ratio kdmem/TRL: throughput {k['tokens_per_s'] / t['tokens_per_s']:.2f}x, "
        f"peak loop memory {k['peak_mb'] / max(t['peak_mb'], 1e-9):.2f}x, "
        f"process HWM {k['hwm_mb'] / t['hwm_mb']:.2f}x"
    )


if __name__ == "__main__":
    main()
