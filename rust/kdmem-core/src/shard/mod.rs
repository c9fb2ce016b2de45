//! Token shards: the on-disk format ([`format`]), tokenization ([`tokenize`]), native input
//! readers ([`input`]) and the streaming, resumable sharding pipeline ([`pipeline`]).
//!
//! See `docs/formats.md` for the file format and the manifest.

pub mod format;
pub mod input;
pub mod pipeline;
pub mod tokenize;

pub use format::{write_shard, Dtype, ShardMeta, ShardReader, ShardSummary, ShardWriter, Tokens};
pub use pipeline::{shard_files, Manifest, ShardConfig, ShardReport, ShardSink, SinkOptions};
pub use tokenize::{DtypeChoice, EosChoice, ShardTokenizer};
