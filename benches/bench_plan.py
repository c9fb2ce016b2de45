"""The memory plan of ``kdmem run --plan`` against the measured peak of kdmem's own recipes.

For each case, the models are built once and fresh subprocesses train with the real recipe
(``kdmem.train.finetune`` or ``kdmem.train.distill``, a few optimizer steps on random
tokens), each measuring the peak memory of the training loop one way. The window opens
when the loop starts (model loading excluded, as on a GPU where the weights are loaded on
the host first) and closes after the last step's epoch line (before the end-of-epoch
checkpoint). Model weights loaded from safetensors are memory-mapped, so on CPU the loaded
parameters are copied into fresh tensors right after loading (same bytes, now allocated as
a GPU run would hold them).

* ``bytes`` (CPU, one run): the peak of live tensor bytes seen by
  ``kdmem.measure.memory.TensorMeter`` (every storage an aten op returns, until freed),
  and the peak of bytes held by PyTorch's CPU allocator, ``AllocatorMeter`` (the
  profiler's allocation and free events: also kernel workspaces and temporaries freed
  inside an op, exact request sizes; the CPU counterpart of
  ``torch.cuda.max_memory_allocated``).
* ``rss`` (CPU, a run of its own): the process's peak resident set (``VmHWM``, reset
  with ``/proc/self/clear_refs`` when the loop starts) minus its RSS before any model was
  loaded. It counts everything the loop touches: the allocator's blocks, memory that
  bypasses it (BLAS packing buffers, Python objects, modules imported while loading),
  and what glibc's malloc keeps after a free (small blocks stay in its arenas;
  blocks over the mmap threshold go back to the kernel), but not allocated pages that
  were never written.
* ``cuda`` (``--device cuda``): ``torch.cuda.max_memory_allocated`` over the loop, and
  ``max_memory_reserved`` (the caching allocator's segments).

The estimate is :func:`kdmem.launch.memory.train_bytes` on the model configs alone (the
same call ``kdmem run --plan`` makes). Prints one row per case with the estimate, each
measured peak and the relative error ``estimate / measured - 1`` against each.

    .venv/bin/python benches/bench_plan.py                       # tiny and ~100M cases, CPU
    .venv/bin/python benches/bench_plan.py --cases tiny          # the fast ones
    python3 benches/bench_plan.py --device cuda                  # on a GPU (device_check.sh)

Never run inside the test suite as a benchmark; tests/test_launch.py runs its tiny cases
(``--measure bytes``) to check the estimate against the allocator's peak.
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


def _status_kib(field: str) -> int:
    """A ``kB`` line of /proc/self/status (VmRSS, VmHWM) in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status (needs Linux)")


def child(work: Path, c: Case, device: str, measure: str, threads: int = 2) -> dict[str, Any]:
    """Train ``c`` with kdmem's recipe and measure the loop's peak (bytes). ``measure``:
    ``bytes`` (CPU: live tensor bytes and the allocator's peak, one run), ``rss`` (CPU: the
    process's peak RSS, a run of its own so no meter's bookkeeping is in it) or ``cuda``;
    ``threads``: torch's intra-op threads meanwhile."""
    import importlib

    import torch

    from kdmem.config import DistillConfig, FinetuneConfig
    from kdmem.measure.memory import AllocatorMeter, TensorMeter

    # the modules (kdmem.train re-exports functions of the same names)
    finetune_mod = importlib.import_module("kdmem.train.finetune")
    distill_mod = importlib.import_module("kdmem.train.distill")
    tensors = TensorMeter() if measure == "bytes" else None
    allocator = AllocatorMeter() if measure == "bytes" else None
    rss_base_kib = _status_kib("VmRSS") if measure == "rss" else 0  # before any model exists
    box: dict[str, float] = {}

    def log(msg: str) -> None:
        if msg.startswith(("baseline:", "soft student")):  # the loop starts next
            if tensors is not None and allocator is not None:
                tensors.peak_bytes = tensors.current_bytes
                allocator.reset_peak()  # its live bytes then are known when it exits
            elif measure == "rss":
                with open("/proc/self/clear_refs", "w") as f:  # VmHWM := VmRSS now
                    f.write("5")
                box["live_at_start"] = (_status_kib("VmRSS") - rss_base_kib) * 1024
            else:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                box["live_at_start"] = torch.cuda.memory_allocated()
        elif msg.startswith("epoch=") and "end" not in box:
            # The loop's last step is done (and validation): stop the window before the
            # end-of-epoch checkpoint, whose host copies a GPU run would not count either.
            box["end"] = 1
            if tensors is not None and allocator is not None:
                box["tensors"] = tensors.peak_bytes
                allocator.stop_peak()
            elif measure == "rss":
                box["rss"] = (_status_kib("VmHWM") - rss_base_kib) * 1024
            else:
                torch.cuda.synchronize()
                box["allocator"] = torch.cuda.max_memory_allocated()
                box["reserved"] = torch.cuda.max_memory_reserved()

    real_loads = (finetune_mod.load_model, distill_mod.load_model)
    real_load = real_loads[0]
    if device == "cpu":

        def counted_load(*args: Any, **kw: Any) -> Any:
            """Copy memory-mapped weights into allocator tensors (same bytes), which the
            meters see and which a GPU run would hold in device memory."""
            m = real_load(*args, **kw)
            with torch.no_grad():
                for p in m.parameters():
                    p.data = p.data.clone()
            return m

        finetune_mod.load_model = counted_load  # type: ignore[assignment]
        distill_mod.load_model = counted_load  # type: ignore[assignment]

    common = dict(data=str(work / "data.npy"), out=str(work / f"out-{measure}"), epochs=1,
                  lr=1e-4, batch_size=c.batch, seq_len=c.seq, precision=c.precision,
                  chunk_size=c.chunk, device=device, checkpoint_every=0)  # fmt: skip
    if c.recipe == "finetune":
        cfg: Any = FinetuneConfig(role="baseline", model=str(work / "student"), **common)
        run = finetune_mod.finetune
    else:
        cfg = DistillConfig(teacher=str(work / "teacher"), student=str(work / "student"),
                            mode="soft", **common)  # fmt: skip
        run = distill_mod.distill
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if tensors is not None and allocator is not None:
            with allocator, tensors:
                run(cfg, log=log)
            box["allocator"] = allocator.peak_bytes
            box["live_at_start"] = allocator.bytes_at_reset  # weights, buffers
            box["allocator_events"] = allocator.events
        else:
            run(cfg, log=log)
    finally:  # leave the process as it was (tests call this in-process)
        torch.set_num_threads(threads_before)
        finetune_mod.load_model, distill_mod.load_model = real_loads
    if "end" not in box:
        raise RuntimeError("the recipe logged no epoch line: the measured window never closed")
    box.pop("end")
    return {k: int(v) for k, v in box.items()}


COLUMNS = {  # measured figure -> its header
    "tensors": "live tensors",
    "allocator": "allocator",
    "rss": "peak RSS",
    "reserved": "reserved",
}


def run_case(i: int, c: Case, device: str, measures: list[str], threads: int) -> dict[str, Any]:
    """Build case ``i`` once, then one fresh subprocess per measure; the merged figures."""
    out: dict[str, Any] = {"case": c.name, "group": c.group}
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
        build(Path(tmp), c)
        for measure in measures:
            r = subprocess.run(
                [sys.executable, __file__, "--child", str(i), "--work", tmp, "--device",
                 device, "--measure", measure, "--threads", str(threads)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
            if r.returncode or not line:
                sys.exit(f"{c.name} ({measure}) failed:\n{r.stderr[-4000:]}")
            res = json.loads(line[0][7:])
            out["estimate"] = res.pop("estimate")
            for k, v in res.items():
                out[k if k in COLUMNS else f"{measure}.{k}"] = v
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="tiny,100m", help="groups: tiny, 100m")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--measure", default="bytes,rss",
                   help="CPU: bytes (live tensors + allocator), rss; CUDA: always cuda")  # fmt: skip
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument("--child", type=int, default=None)
    p.add_argument("--work")
    a = p.parse_args()
    if a.child is not None:
        c = CASES[a.child]
        work = Path(a.work)
        res = child(work, c, a.device, a.measure, a.threads) | {"estimate": estimate(work, c)}
        print("RESULT " + json.dumps(res), flush=True)
        return
    measures = ["cuda"] if a.device != "cpu" else a.measure.split(",")
    groups = set(a.cases.split(","))
    rows = []
    mib = 2**20
    for i, c in enumerate(CASES):
        if c.group not in groups:
            continue
        row = run_case(i, c, a.device, measures, a.threads)
        rows.append(row)
        est = row["estimate"]["total"]
        cols = "  ".join(
            f"{head} {row[k] / mib:8.1f} MiB ({est / row[k] - 1:+6.1%})"
            for k, head in COLUMNS.items()
            if k in row
        )
        parts = ", ".join(f"{k} {v / mib:.1f}" for k, v in row["estimate"].items() if k != "total")
        print(f"{c.name:42s} estimate {est / mib:8.1f} MiB  vs  {cols}   (est. {parts})",
              flush=True)  # fmt: skip
    if not rows:
        return
    for k, head in COLUMNS.items():
        errs = [r["estimate"]["total"] / r[k] - 1 for r in rows if k in r]
        if errs:
            print(f"estimate vs {head}: error {min(errs):+.1%} to {max(errs):+.1%}, largest "
                  f"|error| {max(abs(e) for e in errs):.1%} over {len(errs)} case(s) ({a.device}, "
                  f"{a.threads} thread(s))")  # fmt: skip
    if a.json:
        tmp = Path(a.json + ".tmp")
        tmp.write_text(json.dumps(rows, indent=1))
        tmp.replace(a.json)


if __name__ == "__main__":
    main()
