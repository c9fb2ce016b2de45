"""Corpora as token shards: shard text (:func:`shard_corpus`), import tokenized data
(:mod:`kdmem.corpus.importers`), and read shards with numpy alone (:func:`open_shards`).

Importing this package does not load the Rust extension; only writing does.
"""

from __future__ import annotations

from kdmem.corpus.shard import ShardResult, shard_corpus
from kdmem.corpus.shards import Shard, ShardSet, open_shards
from kdmem.corpus.tokenizer import tokenizer_hash

__all__ = ["Shard", "ShardResult", "ShardSet", "open_shards", "shard_corpus", "tokenizer_hash"]
