"""The memory plan of ``kdmem run --plan`` against the measured peak of kdmem's own recipes.

For each case, a fresh subprocess trains with the real recipe (``kdmem.train.finetune`` or
``kdmem.train.distill``, a few optimizer steps on random tokens) and measures the peak
memory of the training loop:

* on CPU, the peak of live tensor bytes seen by ``kdmem.measure.memory.TensorMeter``
  (every storage an aten op returns, until freed). Model weights loaded from safetensors are
  memory-mapped, which the meter cannot see, so the loaded models' parameters are copied
  into fresh tensors inside the meter right after loading (same bytes, now counted); the
  peak is reset when the loop starts, so model loading is excluded, as on a GPU where the
  weights are loaded on the host first.
* on CUDA (``--device cuda``), ``torch.cuda.max_memory_allocated`` over the loop.

The estimate is :func:`kdmem.launch.memory.train_bytes` on the model configs alone (the
same call ``kdmem run --plan`` makes). Prints one row per case with both and the relative
error ``estimate / measured - 1``.

    .venv/bin/python benches/bench_plan.py                       # tiny and ~100M cases, CPU
    .venv/bin/python benches/bench_plan.py --cases tiny          # the fast ones
    python3 benches/bench_plan.py --device cuda                  # on a GPU (device_check.sh)

Never run inside the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass(frozen=True)
class Case:
    name: str
    recipe: str  # finetune | soft
    arch: str
    vocab: int
    hidden: int
    layers: int
    heads: int
    batch: int
    seq: int
    precision: str = "fp32"
    intermediate: int | None = None
    teacher: dict[str, int] = field(default_factory=dict)  # hidden, layers, heads[, intermediate]
    group: str = "tiny"
    steps: int = 3
    chunk: int = 128


CASES = [
    Case("tiny gpt_neox CE fp32", "finetune", "gpt_neox", 512, 64, 2, 4, 8, 64),
    Case("tiny olmo2 CE bf16", "finetune", "olmo2", 512, 64, 2, 4, 8, 64, "bf16"),
    Case(
        "tiny qwen3 soft-KD fp32",
        "soft",
        "qwen3",
        512,
        64,
        2,
        4,
        8,
        64,
        teacher={"hidden": 96, "layers": 2, "heads": 4},
    ),
    Case(
        "113M gpt_neox CE fp32",
        "finetune",
        "gpt_neox",
        50304,
        640,
        10,
        10,
        4,
        256,
        group="100m",
        steps=2,
    ),
    Case(
        "108M qwen3 CE bf16",
        "finetune",
        "qwen3",
        50304,
        640,
        8,
        10,
        4,
        256,
        "bf16",
        intermediate=2048,
        group="100m",
        steps=2,
    ),
    Case(
        "113M gpt_neox soft-KD fp32, 162M teacher",
        "soft",
        "gpt_neox",
        50304,
        640,
        10,
        10,
        4,
        256,
        teacher={"hidden": 768, "layers": 12, "heads": 12},
        group="100m",
        steps=2,
    ),
]


def build(work: Path, c: Case) -> None:
    """WordLevel tokenizer of exactly ``vocab`` ids, the student (and teacher), the data."""
    import numpy as np
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from kdmem.models.load import save_model
    from kdmem.models.tiny import build_model, tiny_config

    vocab = {"<|endoftext|>": 0} | {f"t{i}": i for i in range(1, c.vocab)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )

    def model(hidden: int, layers: int, heads: int, inter: int | None, seed: int) -> Any:
        cfg = tiny_config(c.arch, c.vocab, hidden_size=hidden, num_layers=layers,
                          num_heads=heads, intermediate_size=inter,
                          max_position_embeddings=max(512, c.seq))  # fmt: skip
        cfg._attn_implementation = "sdpa"
        return build_model(cfg, seed=seed)

    save_model(model(c.hidden, c.layers, c.heads, c.intermediate, 2), work / "student", fast)
    if c.teacher:
        t = c.teacher
        save_model(
            model(t["hidden"], t["layers"], t["heads"], t.get("intermediate"), 1),
            work / "teacher",
            fast,
        )
    rng = np.random.default_rng(0)
    np.save(work / "data.npy", rng.integers(1, c.vocab, (c.steps * c.batch, c.seq)))


def estimate(work: Path, c: Case) -> dict[str, int]:
    from kdmem.launch.memory import read_shape, train_bytes

    b = train_bytes(
        read_shape(work / "student"),
        batch=c.batch,
        seq=c.seq,
        precision=c.precision,
        chunk=c.chunk,
        teacher=read_shape(work / "teacher") if c.teacher else None,
    )
    return b.asdict()


def child(work: Path, c: Case, device: str) -> dict[str, Any]:
    import importlib

    import torch

    from kdmem.config import DistillConfig, FinetuneConfig
    from kdmem.measure.memory import TensorMeter

    # the modules (kdmem.train re-exports functions of the same names)
    finetune_mod = importlib.import_module("kdmem.train.finetune")
    distill_mod = importlib.import_module("kdmem.train.distill")
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    meter = TensorMeter() if device == "cpu" else None
    box: dict[str, float] = {}

    def log(msg: str) -> None:
        if msg.startswith(("baseline:", "soft student")):  # the loop starts next
            if meter is not None:
                box["weights_at_start"] = meter.current_bytes
                meter.peak_bytes = meter.current_bytes
            else:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                box["weights_at_start"] = torch.cuda.memory_allocated()

    if meter is not None:
        real_load = finetune_mod.load_model

        def counted_load(*args: Any, **kw: Any) -> Any:
            """Copy memory-mapped weights into tensors the meter sees (same bytes)."""
            m = real_load(*args, **kw)
            with torch.no_grad():
                for p in m.parameters():
                    p.data = p.data.clone()
            return m

        finetune_mod.load_model = counted_load  # type: ignore[assignment]
        distill_mod.load_model = counted_load  # type: ignore[assignment]

    common = dict(data=str(work / "data.npy"), out=str(work / "out"), epochs=1, lr=1e-4,
                  batch_size=c.batch, seq_len=c.seq, precision=c.precision, chunk_size=c.chunk,
                  device=device, checkpoint_every=0)  # fmt: skip
    if c.recipe == "finetune":
        cfg: Any = FinetuneConfig(role="baseline", model=str(work / "student"), **common)
        run = finetune_mod.finetune
    else:
        cfg = DistillConfig(teacher=str(work / "teacher"), student=str(work / "student"),
                            mode="soft", **common)  # fmt: skip
        run = distill_mod.distill
    if meter is not None:
        with meter:
            run(cfg, log=log)
        peak = meter.peak_bytes
    else:
        run(cfg, log=log)
        peak = torch.cuda.max_memory_allocated()
    return {"measured": int(peak), "weights_at_start": int(box.get("weights_at_start", 0))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="tiny,100m", help="groups: tiny, 100m")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", type=int, default=None)
    p.add_argument("--work")
    a = p.parse_args()
    if a.child is not None:
        c = CASES[a.child]
        work = Path(a.work)
        out = child(work, c, a.device) | {"estimate": estimate(work, c)}
        print("RESULT " + json.dumps(out), flush=True)
        return
    groups = set(a.cases.split(","))
    rows = []
    for i, c in enumerate(CASES):
        if c.group not in groups:
            continue
        with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
            build(Path(tmp), c)
            env = dict(os.environ, BENCH_THREADS=str(a.threads))
            r = subprocess.run(
                [sys.executable, __file__, "--child", str(i), "--work", tmp, "--device",
                 a.device],
                capture_output=True, text=True, env=env, check=False,
            )  # fmt: skip
            line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
            if r.returncode or not line:
                sys.exit(f"{c.name} failed:\n{r.stderr[-4000:]}")
            res = json.loads(line[0][7:])
        est, meas = res["estimate"]["total"], res["measured"]
        rows.append((c, est, meas, res))
        print(
            f"{c.name:48s} estimate {est / 2**20:9.1f} MiB  measured {meas / 2**20:9.1f} MiB  "
            f"error {est / meas - 1:+6.1%}   (est. " + ", ".join(
                f"{k} {v / 2**20:.1f}" for k, v in res["estimate"].items() if k != "total"
            ) + ")",
            flush=True,
        )  # fmt: skip
    if rows:
        worst = max(abs(e / m - 1) for _, e, m, _ in rows)
        print(f"largest |error| over {len(rows)} case(s): {worst:.1%} ({a.device})")


if __name__ == "__main__":
    main()
