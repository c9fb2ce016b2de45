"""Hugging Face causal LMs and tokenizers, offline-safe: the one home of everything that
touches model weights or a model's vocabulary.

* :mod:`kdmem.models.load` -- load (safetensors only, one-line errors), save atomically,
  hash weights, lm-head sizes.
* :mod:`kdmem.models.tokenizer` -- load and train tokenizers; a model's tokenizer, if any.
* :mod:`kdmem.models.vocab` -- vocabulary alignment across models, token-range checks.
* :mod:`kdmem.models.tiny` -- tiny GPT-NeoX / OLMo-2 / Qwen-3 configs for tests and the demo.

Tokenizer identity (the hash every command compares) lives in :mod:`kdmem.identity`, which
corpus code shares without needing torch. Process groups: :mod:`kdmem.distributed`.
"""

from __future__ import annotations

from kdmem import extras

extras.require("torch", "transformers", "safetensors", why="kdmem's model code")
