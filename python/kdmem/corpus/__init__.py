"""Corpora as token shards: shard text (:func:`shard_corpus`), import tokenized data
(:mod:`kdmem.corpus.importers`), read shards with numpy alone (:func:`open_shards`), index
and scan them (:mod:`kdmem.corpus.index`, :mod:`~kdmem.corpus.featurize`,
:mod:`~kdmem.corpus.scan`), fan the work out per shard (:mod:`kdmem.corpus.fanout`), and
draw the study set (:mod:`kdmem.corpus.examples`).

Importing this package does not load the Rust extension; only writing does.
"""

from __future__ import annotations

from kdmem.corpus.shard import ShardResult, shard_corpus
from kdmem.corpus.shards import Shard, ShardSet, open_shards

__all__ = ["Shard", "ShardResult", "ShardSet", "open_shards", "shard_corpus"]
