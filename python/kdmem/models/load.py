"""Load, save and identify Hugging Face causal LMs, offline-safe and without pickle.

Hub ids and local directories load with safetensors only; every failure is one kdmem line
naming the model and the fix. :func:`save_model` replaces a directory atomically;
:func:`model_hash` identifies weights (the study's manifests and measure tables record it).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, cast

import torch
from huggingface_hub import snapshot_download
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from kdmem.atomic import io_error, is_disk_full
from kdmem.errors import InvalidArgumentError, KdmemIOError

__all__ = [
    "DTYPES",
    "check_model_arg",
    "head_of",
    "head_rows",
    "lm_head_rows",
    "load_model",
    "model_hash",
    "reinit_head",
    "save_model",
    "weights_hash",
]

DTYPES = ("float32", "bfloat16", "float16")


def check_model_arg(id_or_dir: str | os.PathLike[str], what: str = "--model") -> None:
    """A path-like ``--model``/``--teacher``/``--student`` must exist (else transformers
    would try it as a hub id and fail with a long traceback)."""
    s = str(id_or_dir)
    looks_like_path = Path(s).is_absolute() or s.startswith((".", "~")) or s.count("/") > 1
    if looks_like_path and not Path(s).expanduser().exists():
        raise KdmemIOError(f"{what} {s}: no such directory; pass a model dir or hub id")


def load_model(
    id_or_dir: str | os.PathLike[str],
    *,
    dtype: str = "float32",
    device: str | None = None,
    attn_implementation: str | None = None,
    what: str = "--model",
) -> PreTrainedModel:
    """Load a causal LM from a hub id or a local directory, safetensors only, in eval mode.

    Raises ``KdmemIOError`` naming the model when it does not exist, holds no
    ``*.safetensors`` weights or cannot be read; ``InvalidArgumentError`` for a dtype
    outside :data:`DTYPES`. The "Loading weights" bar shows only on a terminal.
    """
    check_model_arg(id_or_dir, what)
    if dtype not in DTYPES:
        raise InvalidArgumentError(f"invalid dtype = {dtype!r}: use {', '.join(DTYPES)}")
    path = Path(id_or_dir)
    if path.exists() and not any(path.glob("*.safetensors")):
        raise KdmemIOError(
            f"no *.safetensors weights in {path}; save the model with "
            "save_pretrained(..., safe_serialization=True) (kdmem never loads pickle weights)"
        )
    kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype), "use_safetensors": True}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    bar_was_on = hf_logging.is_progress_bar_enabled()
    if not sys.stderr.isatty():  # "Loading weights" bars would fill logs and test output
        hf_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(str(id_or_dir), **kwargs)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise KdmemIOError(
            f"cannot load model {id_or_dir}: {first}; pass a local directory with "
            "config.json and *.safetensors, or a hub id already in the local cache"
        ) from None
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    if device:
        cast(nn.Module, model).to(device)  # in place
    model.eval()
    assert isinstance(model, PreTrainedModel)
    return model


def save_model(
    model: PreTrainedModel,
    out_dir: str | os.PathLike[str],
    tokenizer: PreTrainedTokenizerBase | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save weights (safetensors), config and tokenizer atomically into ``out_dir``.

    Written to a temporary sibling directory first and renamed, so ``out_dir`` is either
    absent, the old complete model, or the new complete model. ``extra`` is stored as
    ``kdmem.json`` next to the weights.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        if extra is not None:
            (tmp / "kdmem.json").write_text(json.dumps(extra, indent=2, sort_keys=True))
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            if old.exists():
                shutil.rmtree(old)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(e):  # one line, not a serializer's traceback
            raise io_error(out, OSError(errno.ENOSPC, "No space left on device")) from None
        raise
    return out


def model_hash(model_or_dir: nn.Module | str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of the weights: of the ``*.safetensors`` files of a directory, or of the
    state dict tensors (names, dtypes, shapes, bytes, in name order) of an in-memory model.
    The two are different hashes; compare like with like."""
    h = hashlib.sha256()
    if isinstance(model_or_dir, (str, os.PathLike)):
        files = sorted(Path(model_or_dir).glob("*.safetensors"))
        if not files:
            raise KdmemIOError(f"no *.safetensors weights in {model_or_dir}; nothing to hash")
        for f in files:
            h.update(f.name.encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
        return h.hexdigest()
    for name, t in sorted(model_or_dir.state_dict().items()):
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return h.hexdigest()


def weights_hash(id_or_dir: str | os.PathLike[str], model: nn.Module) -> str:
    """:func:`model_hash` of the ``*.safetensors`` files (local dir or cached hub snapshot);
    ``"state:" +`` the in-memory state dict's hash when the files cannot be found."""
    p = Path(id_or_dir)
    if p.is_dir():
        return model_hash(p)
    try:
        snap = snapshot_download(
            str(id_or_dir), local_files_only=True, allow_patterns=["*.safetensors", "*.json"]
        )
        return model_hash(snap)
    except Exception:  # the hub cache layout is not ours; fall back to hashing tensors
        return "state:" + model_hash(model)


def head_of(model: nn.Module) -> nn.Linear:
    """The lm-head (``[V, H]`` Linear) of a Hugging Face causal LM."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if not isinstance(head, nn.Linear):
        raise InvalidArgumentError(f"{type(model).__name__} has no linear lm-head")
    return head


def reinit_head(model: nn.Module, seed: int) -> None:
    """Re-initialise the lm-head in place from ``seed``: normal(0, ``initializer_range``)
    weights (the architecture's own init scale), zero bias. Refused for a head tied to the
    input embeddings (it would reset them too)."""
    head = head_of(model)
    get_emb = getattr(model, "get_input_embeddings", None)
    emb = get_emb() if callable(get_emb) else None
    if emb is not None and getattr(emb, "weight", None) is head.weight:
        raise InvalidArgumentError(
            f"{type(model).__name__} ties its lm-head to the input embeddings; "
            "seed_init = 'random_head' needs an untied head: use seed_init = 'none'"
        )
    std = float(getattr(getattr(model, "config", None), "initializer_range", 0.02))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        w = torch.randn(head.weight.shape, generator=gen, dtype=torch.float32) * std
        head.weight.copy_(w.to(head.weight.dtype))
        if head.bias is not None:
            head.bias.zero_()


def lm_head_rows(model: nn.Module) -> int:
    """Rows of a loaded model's lm-head (its logit columns)."""
    return int(head_of(model).weight.shape[0])


def head_rows(id_or_dir: str | os.PathLike[str]) -> int:
    """lm-head rows (``vocab_size`` of the config) of a model, without loading weights."""
    cfg = AutoConfig.from_pretrained(str(id_or_dir))
    return int(cfg.get_text_config().vocab_size)
