"""Vocabulary alignment across models that share a tokenizer, and token-range checks.

Models often pad the lm-head beyond the tokenizer (Qwen-3: 151,669 tokens in the tokenizer,
151,936 rows; other checkpoints 152,064); rows past the tokenizer can never be targets, so
logits are compared on the first ``tokenizer_size`` columns only.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from kdmem.errors import TokenizerMismatchError, TokenRangeError

__all__ = ["aligned_vocab", "check_token_range"]


def aligned_vocab(tokenizer_size: int, *lm_head_rows: int) -> int:
    """Number of logit columns to compare across models sharing one tokenizer.

    Raises ``TokenizerMismatchError`` when a head is *smaller* than the tokenizer (different
    vocabularies, not padding).
    """
    for rows in lm_head_rows:
        if rows < tokenizer_size:
            raise TokenizerMismatchError(
                f"tokenizer mismatch: a model has {rows} lm-head rows but the tokenizer has "
                f"{tokenizer_size} tokens; teacher and student must share one tokenizer"
            )
    return tokenizer_size


def check_token_range(tokens: npt.NDArray[np.integer], n_ids: int, what: str) -> None:
    """Every id of ``tokens`` lies in ``[0, n_ids)``; else one line naming the first bad id,
    ``what`` has ``n_ids`` (e.g. "model M (50304 lm-head rows)") and the fix."""
    if not tokens.size:
        return
    top, low = int(tokens.max()), int(tokens.min())
    if top >= n_ids or low < 0:
        bad = top if top >= n_ids else low
        raise TokenRangeError(
            f"token {bad} is out of range for {what}; the data was tokenized for a different "
            "model: re-shard it with this model's tokenizer"
        )
