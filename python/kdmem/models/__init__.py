"""Load, build and save Hugging Face causal LMs and tokenizers, offline-safe.

Everything that touches model weights goes through here: hub ids and local directories load
with safetensors only (never pickle); tiny GPT-NeoX, OLMo-2 and Qwen-3 models are built from
configs for tests and the demo; ``model_hash`` identifies weights; ``aligned_vocab`` handles
lm-heads padded beyond the tokenizer (e.g. Qwen's 151,936 tokenizer vs a 152,064-row head).

torch and transformers are imported lazily by the functions that need them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kdmem.errors import InvalidArgumentError, KdmemIOError, TokenizerMismatchError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

Arch = Literal["gpt_neox", "olmo2", "qwen3"]
ARCHS: tuple[Arch, ...] = ("gpt_neox", "olmo2", "qwen3")
EOS_TOKEN = "<|endoftext|>"


def tiny_config(
    arch: Arch,
    vocab_size: int,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 512,
    eos_token_id: int = 0,
) -> Any:
    """A small config of one of the study's architectures (GPT-NeoX = Pythia, OLMo-2, Qwen-3).

    Sizes are in units of the config (hidden width, layers, heads); ``vocab_size`` is the
    number of lm-head rows. Attention is eager so results do not depend on kernels.
    """
    from transformers import GPTNeoXConfig, Olmo2Config, Qwen3Config

    inter = intermediate_size or 4 * hidden_size
    common: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=inter,
        max_position_embeddings=max_position_embeddings,
        eos_token_id=eos_token_id,
        bos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
        tie_word_embeddings=False,
    )
    if arch == "gpt_neox":
        cfg = GPTNeoXConfig(**common, rotary_pct=0.25, use_parallel_residual=True)
    elif arch == "olmo2":
        cfg = Olmo2Config(**common, num_key_value_heads=num_heads)
    elif arch == "qwen3":
        cfg = Qwen3Config(
            **common, num_key_value_heads=max(1, num_heads // 2), head_dim=hidden_size // num_heads
        )
    else:
        raise InvalidArgumentError(f"invalid arch = {arch!r}: choose one of {', '.join(ARCHS)}")
    cfg._attn_implementation = "eager"
    return cfg


def build_model(config: Any, seed: int = 0) -> PreTrainedModel:
    """Randomly initialised causal LM from ``config``; init depends only on ``seed``."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    return model.float().eval()


def load_model(
    id_or_dir: str | os.PathLike[str],
    *,
    dtype: str = "float32",
    device: str | None = None,
    attn_implementation: str | None = None,
) -> PreTrainedModel:
    """Load a causal LM from a hub id or a local directory, safetensors only.

    Raises ``KdmemIOError`` naming the directory when no ``*.safetensors`` weights are there.
    """
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(id_or_dir)
    if path.exists() and not any(path.glob("*.safetensors")):
        raise KdmemIOError(
            f"no *.safetensors weights in {path}; save the model with "
            "save_pretrained(..., safe_serialization=True) (kdmem never loads pickle weights)"
        )
    try:
        torch_dtype = getattr(torch, dtype)
    except AttributeError:
        raise InvalidArgumentError(
            f"invalid dtype = {dtype!r}: use float32, bfloat16 or float16"
        ) from None
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "use_safetensors": True}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForCausalLM.from_pretrained(str(id_or_dir), **kwargs)
    if device:
        model = model.to(device)
    return model.eval()


def load_tokenizer(id_or_dir: str | os.PathLike[str]) -> PreTrainedTokenizerFast:
    """Fast tokenizer of a hub id or local directory (a ``tokenizer.json`` file also works)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    p = Path(id_or_dir)
    if p.is_file() and p.suffix == ".json":
        return PreTrainedTokenizerFast(tokenizer_file=str(p), eos_token=EOS_TOKEN)
    tok = AutoTokenizer.from_pretrained(str(id_or_dir), use_fast=True)
    return tok


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | os.PathLike[str]) -> Path:
    """Train a byte-level BPE tokenizer locally (no downloads) and save it HF-style.

    Writes ``tokenizer.json`` plus ``tokenizer_config.json`` into ``out_dir`` with
    ``<|endoftext|>`` as id 0 (EOS, BOS and PAD, as in GPT-NeoX); returns ``out_dir``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN, pad_token=EOS_TOKEN
    )
    fast.save_pretrained(str(out))
    return out


def save_model(
    model: PreTrainedModel,
    out_dir: str | os.PathLike[str],
    tokenizer: PreTrainedTokenizerFast | None = None,
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
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def model_hash(model_or_dir: PreTrainedModel | str | os.PathLike[str]) -> str:
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
        h.update(t.detach().cpu().contiguous().view(-1).view(dtype=_u8()).numpy().tobytes())
    return h.hexdigest()


def _u8() -> torch.dtype:
    import torch

    return torch.uint8


def aligned_vocab(tokenizer_size: int, *lm_head_rows: int) -> int:
    """Number of logit columns to compare across models sharing one tokenizer.

    Models often pad the lm-head beyond the tokenizer (Qwen-3: 151,669 tokens in the
    tokenizer, 151,936 rows; other checkpoints 152,064); rows past the tokenizer can never be
    targets, so logits are sliced to ``tokenizer_size``. Raises ``TokenizerMismatchError``
    when a head is *smaller* than the tokenizer (different vocabularies, not padding).
    """
    for rows in lm_head_rows:
        if rows < tokenizer_size:
            raise TokenizerMismatchError(
                f"tokenizer mismatch: a model has {rows} lm-head rows but the tokenizer has "
                f"{tokenizer_size} tokens; teacher and student must share one tokenizer"
            )
    return tokenizer_size
