"""Checkpoints and the final model of a training run (no pickle anywhere).

Checkpoint layout (``OUT/checkpoint/``, replaced atomically as a directory):

* ``model.safetensors``  full (unsharded) student state dict
* ``optim.safetensors``  AdamW tensors as ``state.<param fqn>.<exp_avg|exp_avg_sq|step>``
* ``rng.safetensors``    torch CPU generator state (``torch_cpu``) and CUDA ones (``cuda.<i>``)
* ``state.json``         step, epoch, config hash, optimizer param-group scalars, metrics so far

A checkpoint resumes only under the same config hash and global batch; the final model is
written to ``OUT`` (safetensors + config + tokenizer), then ``metrics.json``, then
``kdmem.json`` with ``complete: true`` last.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, cast

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_state_dict,
)
from transformers import AutoModelForCausalLM

from kdmem import atomic
from kdmem.atomic import io_error, is_disk_full
from kdmem.config import OptimConfig, config_hash
from kdmem.distributed import Dist
from kdmem.errors import InvalidArgumentError
from kdmem.models.load import model_hash, save_model
from kdmem.train.process import is_fsdp

__all__ = [
    "CHECKPOINT",
    "METRICS",
    "check_global_batch",
    "check_resume",
    "load_checkpoint",
    "read_checkpoint_state",
    "save_checkpoint",
    "save_final",
    "save_snapshot",
    "snapshot_dir",
    "write_json_atomic",
]

CHECKPOINT = "checkpoint"
METRICS = "metrics.json"
STEPS = "steps"
STATE = "state.json"


def write_json_atomic(path: Path, obj: Any) -> None:
    """JSON to ``path`` atomically (sorted keys; NaN allowed for diverged metrics)."""
    atomic.write_json_atomic(path, obj, sort_keys=True, allow_nan=True)


def _full_state(
    model: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Any], dict[str, Any]]:

    return get_state_dict(
        model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


def save_checkpoint(
    out: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    dist: Dist,
) -> None:
    """Write ``OUT/checkpoint`` atomically (collective: every rank must call it)."""

    msd, osd = _full_state(model, optimizer)
    if dist.is_main:
        tmp = Path(tempfile.mkdtemp(prefix=f".{CHECKPOINT}.tmp-", dir=out))
        try:
            save_file({k: v.contiguous() for k, v in msd.items()}, str(tmp / "model.safetensors"))
            tensors = {
                f"state.{fqn}.{k}": v.detach().cpu().contiguous()
                for fqn, st in osd["state"].items()
                for k, v in st.items()
            }
            save_file(tensors, str(tmp / "optim.safetensors"))
            rng = {"torch_cpu": torch.get_rng_state()}
            if torch.cuda.is_available():
                for i, s in enumerate(torch.cuda.get_rng_state_all()):
                    rng[f"cuda.{i}"] = s
            save_file(rng, str(tmp / "rng.safetensors"))
            groups = [
                {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
                for g in osd["param_groups"]
            ]
            write_json_atomic(tmp / STATE, {**state, "param_groups": groups})
            final = out / CHECKPOINT
            old = out / f".{CHECKPOINT}.old"
            if old.exists():
                shutil.rmtree(old)
            if final.exists():
                final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if is_disk_full(e):  # one line, not a serializer's traceback
                raise io_error(
                    out / CHECKPOINT, OSError(errno.ENOSPC, "No space left on device")
                ) from None
            raise
    dist.barrier()


def read_checkpoint_state(out: Path) -> dict[str, Any] | None:
    """``state.json`` of ``OUT/checkpoint`` or None (also recovers an interrupted swap)."""
    final, old = out / CHECKPOINT, out / f".{CHECKPOINT}.old"
    for d in (final, old):  # the old one survives only an interrupted swap
        if (d / STATE).exists():
            state: dict[str, Any] = json.loads((d / STATE).read_text())
            return state | {"_dir": str(d)}
    return None


def load_checkpoint(
    state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer
) -> None:
    """Restore weights, AdamW state and RNG from the directory named in ``state['_dir']``
    (every rank reads the full tensors and keeps its own shard)."""

    d = Path(state["_dir"])
    msd = load_file(str(d / "model.safetensors"))
    flat = load_file(str(d / "optim.safetensors"))
    osd_state: dict[str, dict[str, torch.Tensor]] = {}
    for key, v in flat.items():
        fqn, k = key[len("state.") :].rsplit(".", 1)
        osd_state.setdefault(fqn, {})[k] = v
    groups = [
        {k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in state["param_groups"]
    ]
    set_state_dict(
        model,
        optimizer,
        model_state_dict=cast(dict[str, Any], msd),
        optim_state_dict=cast(dict[str, Any], {"state": osd_state, "param_groups": groups}),
        options=StateDictOptions(full_state_dict=True),
    )
    rng = load_file(str(d / "rng.safetensors"))
    torch.set_rng_state(rng["torch_cpu"])
    if torch.cuda.is_available():
        cuda = [rng[f"cuda.{i}"] for i in range(torch.cuda.device_count()) if f"cuda.{i}" in rng]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)


def check_global_batch(state: dict[str, Any], global_batch: int) -> None:
    """A checkpoint resumes only with the same global batch (steps index the data order)."""
    saved = int(state.get("global_batch", global_batch))
    if saved != global_batch:
        raise InvalidArgumentError(
            f"{state['_dir']} was written with a global batch of {saved} sequences, now "
            f"{global_batch}; resume with batch_size x grad_accum x processes = {saved}"
        )


def check_resume(
    out: Path, cfg: OptimConfig
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(finished, checkpoint_state)``: the ``kdmem.json`` of a complete run with the same
    config hash (then there is nothing to do), and the checkpoint to resume from, if any.
    A different config hash in ``OUT`` is an error, never silently overwritten."""
    h = config_hash(cfg)
    done = out / "kdmem.json"
    if done.exists():
        info = json.loads(done.read_text())
        if info.get("config_hash") == h and info.get("complete"):
            return info, None
        raise InvalidArgumentError(
            f"{out} already holds a model trained with another config (hash "
            f"{str(info.get('config_hash'))[:12]}); choose another --out or delete it"
        )
    st = read_checkpoint_state(out)
    if st is not None and st.get("config_hash") != h:
        raise InvalidArgumentError(
            f"{out / CHECKPOINT} was written by another config (hash "
            f"{str(st.get('config_hash'))[:12]}, now {h[:12]}); use the same options to resume "
            "or delete the checkpoint"
        )
    return None, st


def _save_lm(
    target: Path,
    lm: nn.Module,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    wrapped: nn.Module,
    dist: Dist,
) -> None:
    """Save the trained model as a loadable model directory at ``target`` (rank 0; FSDP
    shards gathered first, a collective)."""
    full = _full_state(wrapped, optimizer)[0] if is_fsdp(wrapped) else None
    if not dist.is_main:
        return
    if full is not None:  # FSDP: a fresh CPU model holding the gathered weights
        plain = AutoModelForCausalLM.from_config(lm.config)
        plain.load_state_dict({k.removeprefix("lm."): v for k, v in full.items()})
        plain.generation_config = lm.generation_config
        save_model(plain, target, tokenizer)
    else:
        save_model(lm, target, tokenizer)  # type: ignore[arg-type]


def snapshot_dir(out: Path, step: int) -> Path:
    """``OUT/steps/step-NNNNNNN``: the model after optimizer step ``step``."""
    return out / STEPS / f"step-{step:07d}"


def save_snapshot(
    out: Path,
    step: int,
    lm: nn.Module,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    wrapped: nn.Module,
    dist: Dist,
) -> None:
    """Keep the model after ``step`` as ``OUT/steps/step-NNNNNNN`` (a loadable model
    directory, written atomically; never overwritten), for memorization over training."""
    target = snapshot_dir(out, step)
    if target.exists():  # already kept before a resume: the same weights (resume is exact)
        dist.barrier()
        return
    _save_lm(target, lm, tokenizer, optimizer, wrapped, dist)
    dist.barrier()


def save_final(
    out: Path,
    lm: nn.Module,
    tokenizer: Any,
    info: dict[str, Any],
    metrics: list[dict[str, Any]],
    cfg: OptimConfig,
    optimizer: torch.optim.Optimizer,
    wrapped: nn.Module,
    dist: Dist,
) -> dict[str, Any]:
    """Write the trained model into ``OUT`` (safetensors + config + tokenizer), then
    ``metrics.json``, then ``kdmem.json`` (``complete: true``) last (collective)."""
    staging = out / ".final"
    if dist.is_main and staging.exists():
        shutil.rmtree(staging)
    _save_lm(staging, lm, tokenizer, optimizer, wrapped, dist)
    if dist.is_main:
        for f in sorted(staging.iterdir()):
            os.replace(f, out / f.name)
        staging.rmdir()
        write_json_atomic(out / METRICS, metrics)
        info = {**info, "config": dataclasses.asdict(cfg), "config_hash": config_hash(cfg)}
        info |= {"model_hash": model_hash(out), "complete": True, "metrics": metrics}
        write_json_atomic(out / "kdmem.json", info)
        if not cfg.keep_checkpoint:
            shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
    dist.barrier()
    return dict(json.loads((out / "kdmem.json").read_text()))
