//! Token shards: the on-disk format ([`format`]) and manifest ([`manifest`]), tokenization
//! ([`tokenize`], with the fast byte-level BPE encoder [`bpe`] and its pre-tokenizers
//! [`pretok`]), native input readers ([`input`]), the shard cutter with resume, append and
//! memory planning ([`sink`]), the streaming pipeline ([`pipeline`]) and the writer fed by a
//! caller ([`writer`]).
//!
//! See `docs/formats.md` for the file format and the manifest.

pub mod bpe;
pub mod format;
pub mod input;
pub mod manifest;
pub mod pipeline;
pub mod pretok;
pub mod sink;
#[cfg(test)]
pub(crate) mod test_util;
pub mod tokenize;
pub mod writer;

pub use format::{write_shard, Dtype, ShardMeta, ShardReader, ShardSummary, ShardWriter, Tokens};
pub use manifest::Manifest;
pub use pipeline::{shard_files, ShardConfig, ShardReport};
pub use sink::{ShardSink, SinkOptions};
pub use tokenize::{DtypeChoice, EncoderChoice, EosChoice, ShardTokenizer};
pub use writer::{FedOptions, FedSource, FedWriter};
