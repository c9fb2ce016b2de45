"""Tiny configs of the study's architectures (GPT-NeoX = Pythia, OLMo-2, Qwen-3) for tests and
the demo, and seeded random initialisation from any config. Nothing is downloaded."""

from __future__ import annotations

from typing import Any, Literal

import torch
from transformers import (
    AutoModelForCausalLM,
    GPTNeoXConfig,
    Olmo2Config,
    PretrainedConfig,
    PreTrainedModel,
    Qwen3Config,
)

from kdmem.errors import InvalidArgumentError

__all__ = ["ARCHS", "Arch", "build_model", "tiny_config"]

Arch = Literal["gpt_neox", "olmo2", "qwen3"]
ARCHS: tuple[Arch, ...] = ("gpt_neox", "olmo2", "qwen3")


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
) -> PretrainedConfig:
    """A small config of one of the study's architectures (GPT-NeoX = Pythia, OLMo-2, Qwen-3).

    Sizes are in units of the config (hidden width, layers, heads); ``vocab_size`` is the
    number of lm-head rows. Attention is eager so results do not depend on kernels.
    """
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
    cfg: PretrainedConfig
    if arch == "gpt_neox":
        cfg = GPTNeoXConfig(**common, rotary_pct=0.25, use_parallel_residual=True)  # type: ignore[call-arg]
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


def build_model(config: PretrainedConfig, seed: int = 0) -> PreTrainedModel:
    """Randomly initialised causal LM from ``config``; init depends only on ``seed``."""
    torch.manual_seed(seed)
    model: PreTrainedModel = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    model.float()
    model.eval()
    return model
