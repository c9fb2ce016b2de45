//! Suffix-array index over token shards: build one suffix array per *unit* (a group of small
//! shards, one shard, or a piece of a large one, chosen within a memory budget), then answer
//! exact `count`, `locate`, `longest_match` (matching statistics) and `ngram_overlap` queries
//! over all units.
//!
//! # Order and document awareness
//!
//! Each unit gets its own suffix array: the token positions of the unit sorted by the
//! *document-truncated* suffix starting there, i.e. `tokens[p..end(p))` followed by a sentinel
//! smaller than every token, where `end(p)` is the end of `p`'s document. A query never
//! contains the sentinel, so the positions where a query occurs form one contiguous range of
//! the array and **no reported match crosses a document boundary** (hence never a shard). Ties
//! (equal truncated suffixes) are broken by the text that follows, which makes the array
//! unique: results never depend on the thread count, the memory budget or the machine.
//!
//! # Files
//!
//! `shard-00000.kdt` (tokens) and `*.kdsa` unit files in the same directory ([`format`],
//! [`plan`]): suffix-array pages of 4,096 bytes (584 entries, each with a capped lcp and a
//! 16-bit hash of the next token) and two samples per page, which [`Index`] keeps in RAM
//! with a table of document starts.
//!
//! # Costs (n = tokens in a unit, N = tokens in the index, U = units, m = query length)
//!
//! | operation | time | memory / disk |
//! |---|---|---|
//! | build one unit | O(n), ~4-13 M tokens/s per core (`benches/bench_index.py`, `benches/bench_scale.py`) | 6.5 B/token (u16 shards), 8.5 B/token (u32) per unit built at once; within `--memory` |
//! | index on disk | | 7.14 B/token (pages + samples; + the shards themselves: 9.15 B/token for u16) |
//! | index in RAM | | 0.144 B/token of samples + 8 B/document (1.8% of the index and shards on 750-token documents) |
//! | `count` | per unit: O(log(n / 292)) RAM steps + 1 page + at most ~1 text read | O(1) |
//! | `locate(limit)` | `count` + O(occ) per unit | O(occ) |
//! | `longest_match` | O(m) lookups and narrowing binary searches per unit | O(m) |
//! | `ngram_overlap(n)` | `longest_match` capped at n | O(m) |
//!
//! Cold (nothing in the page cache): a `count` reads one page of the unit, the text at
//! about one position, and a second page when the occurrences cross a page; see
//! `benches/bench_scale.py`. [`AnyIndex`] opens this layout or an infini-gram index directory
//! ([`infini`]: u16 `tokenized.N`, `table.N`, `offset.N`, read-only) behind one API.

pub mod build;
pub mod dir;
pub mod format;
pub mod infini;
pub mod open;
pub mod plan;
pub mod search;
pub mod unit;

#[cfg(test)]
mod tests;

pub use build::{prepare, Prepared, Sorted, Source};
pub use dir::{
    build_dir, build_shards, index_path, shard_paths, verify_dir, BuildOptions, BuildReport, Index,
};
pub use format::Layout;
pub use infini::{is_infini_gram_dir, IgShard, InfiniGramIndex};
pub use open::{parse_tokenizer_hash, AnyIndex};
pub use plan::{Budget, Grouping, UnitSpec};
pub use search::{Corpus, Location, NgramOverlap, QueryShard};
pub use unit::UnitView;
