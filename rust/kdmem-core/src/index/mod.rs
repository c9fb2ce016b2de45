//! Suffix-array index over token shards: build one suffix array per shard, then answer exact
//! `count`, `locate`, `longest_match` (matching statistics) and `ngram_overlap` queries over
//! all shards in parallel.
//!
//! # Order and document awareness
//!
//! Each shard gets its own suffix array (no cross-shard merge): the token positions of the
//! shard sorted by the *document-truncated* suffix starting there, i.e. `tokens[p..end(p))`
//! followed by a sentinel smaller than every token, where `end(p)` is the end of `p`'s
//! document. A query never contains the sentinel, so the positions where a query occurs form
//! one contiguous range of the array and **no reported match crosses a document boundary**.
//! Ties (equal truncated suffixes, e.g. two documents ending alike) are broken by the text
//! that follows, which makes the array unique for a given shard: results never depend on the
//! thread count or on the machine.
//!
//! The sort runs libsais (SA-IS, Grebnov) on a transformed copy of the shard, `t' = doc_0+1,
//! 0, doc_1+1, 0, ...` (every token shifted up by one, a `0` after every non-empty document),
//! and maps positions of `t'` back to shard positions with a rank structure. See [`build`].
//!
//! # Files
//!
//! `shard-00000.kdt` is indexed by `shard-00000.kdsa` in the same directory ([`format`]):
//! a 128-byte header (magic, version, pointer width, counts, the CRC-32 of the shard it
//! indexes, its own CRC-32), a document-start bitmap (1 bit per token) and the suffix array
//! (4 bytes per token while the shard has fewer than 2^32 tokens, else 8).
//!
//! # Costs (n = tokens in a shard, N = tokens in the index, m = query length)
//!
//! | operation | time | memory |
//! |---|---|---|
//! | build one shard | O(n), ~4-13 M tokens/s per core (measured: `benches/bench_index.py`) | 6.4 B/token (u16 shards), 8.4 B/token (u32), per concurrent shard |
//! | index on disk | | 4.125 B/token (+ the shard itself) |
//! | `count` | O(m log N) per shard, typically O(m + log N) | O(1) |
//! | `locate(limit)` | `count` + O(occ) per shard | O(occ) |
//! | `longest_match` | O(m log N) binary searches per shard (each O(1 + matched tokens)) | O(m) |
//! | `ngram_overlap(n)` | `longest_match` capped at n | O(m) |
//!
//! [`infini`] opens an infini-gram index directory (u16 `tokenized.N`, `table.N`, `offset.N`)
//! read-only behind the same [`Corpus`] queries.

pub mod build;
pub mod dir;
pub mod format;
pub mod infini;
pub mod search;

#[cfg(test)]
mod tests;

pub use build::{prepare, sort, PtrVec, SortedShard};
pub use dir::{build_dir, build_shard, build_shards, index_path, verify_dir, BuildReport, Index};
pub use infini::{is_infini_gram_dir, IgShard, InfiniGramIndex};
pub use search::{Corpus, Location, NgramOverlap, Ptrs, QueryShard, ShardSa};
