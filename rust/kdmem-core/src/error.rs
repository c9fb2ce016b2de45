//! The structured error every fallible kdmem-core call returns.
//!
//! Each variant names the bad value (file, line, token, field) and says how to fix it, in one
//! line. The Python binding maps each variant to its own exception class through
//! [`Error::kind`]; `python/kdmem/errors.py` defines the classes with the same names.
//! Adding a variant means adding its class there and a test that raises it.

use std::path::{Path, PathBuf};

/// Result alias used across the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the core, each with the fix in its message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The OS refused a read or write (missing file, permissions, ...).
    #[error(
        "cannot {action} {path}: {source}; check that the path exists and that you may {action} it"
    )]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A write failed because the disk is full. Nothing partial is left under a final name.
    #[error("no space left on the device while writing {path}; free space (or point --out at a larger disk) and rerun: finished work is kept and resumed")]
    DiskFull { path: PathBuf },
    /// A record that cannot be parsed (bad JSON, not an object, ...).
    #[error("{path}:{line}: malformed record ({reason}); fix or remove that line, or pass --skip-bad to count and skip such records")]
    MalformedRecord {
        path: String,
        line: u64,
        reason: String,
    },
    /// A record without the requested text field (or with a non-string value in it).
    #[error("{path}:{line}: no string field {field:?} in the record (found: {found}); pass --text-field with the right name")]
    MissingField {
        path: String,
        line: u64,
        field: String,
        found: String,
    },
    /// Input bytes that are not valid UTF-8.
    #[error("{path}:{line}: invalid UTF-8 at byte {offset}; re-encode the file as UTF-8, or pass --skip-bad to count and skip such records")]
    InvalidUtf8 {
        path: String,
        line: u64,
        offset: u64,
    },
    /// A token id that does not fit the shard's dtype or exceeds the vocabulary.
    #[error("token id {token} is out of range for {context} (largest allowed {max}); {fix}")]
    TokenOutOfRange {
        token: u64,
        max: u64,
        context: String,
        fix: String,
    },
    /// The inputs produced no documents at all.
    #[error("empty corpus: {inputs} produced no documents; check the input paths, --text-field and --skip-bad")]
    EmptyCorpus { inputs: String },
    /// A kdmem file that fails its magic, size or checksum checks.
    #[error(
        "{path} is corrupt or truncated: {reason}; delete it and rerun the command that wrote it"
    )]
    Corrupt { path: PathBuf, reason: String },
    /// A kdmem file written by an incompatible format version.
    #[error("{path} has format version {found}, this kdmem reads version {supported}; rebuild it with this kdmem or install the kdmem that wrote it")]
    FormatVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    /// Data tokenized with a different tokenizer than the one expected.
    #[error(
        "tokenizer mismatch: {what} was made with tokenizer {found}, expected {expected}; {fix}"
    )]
    TokenizerMismatch {
        what: String,
        expected: String,
        found: String,
        fix: String,
    },
    /// A tokenizer file that cannot be loaded.
    #[error("cannot load tokenizer {path}: {reason}; pass the tokenizer.json of a Hugging Face fast tokenizer")]
    TokenizerLoad { path: PathBuf, reason: String },
    /// An argument outside its domain.
    #[error("invalid {name} = {value:?}: {fix}")]
    InvalidArgument {
        name: String,
        value: String,
        fix: String,
    },
    /// A suffix-array index that is missing, or was built from a shard that has since changed.
    #[error("index {path} {reason}; rebuild it with `kdmem index {dir}`")]
    StaleIndex {
        path: PathBuf,
        reason: String,
        dir: String,
    },
    /// A shard set whose `kdmem shard` run has not finished, or whose files disagree with
    /// its manifest (`shards.json`): never read as if it were the whole corpus.
    #[error("{dir} holds an unfinished shard set: {reason}; rerun the `kdmem shard` command that wrote it to finish it")]
    IncompleteShards { dir: String, reason: String },
    /// The caller cancelled the call (Ctrl-C). Maps to `KeyboardInterrupt` in Python.
    #[error("interrupted; rerun the same command to resume")]
    Cancelled,
}

impl Error {
    /// The Python exception class name for this variant (see `python/kdmem/errors.py`).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Io { .. } => "KdmemIOError",
            Error::DiskFull { .. } => "DiskFullError",
            Error::MalformedRecord { .. } => "MalformedRecordError",
            Error::MissingField { .. } => "MissingFieldError",
            Error::InvalidUtf8 { .. } => "InvalidUtf8Error",
            Error::TokenOutOfRange { .. } => "TokenRangeError",
            Error::EmptyCorpus { .. } => "EmptyCorpusError",
            Error::Corrupt { .. } => "CorruptFileError",
            Error::FormatVersion { .. } => "FormatVersionError",
            Error::TokenizerMismatch { .. } => "TokenizerMismatchError",
            Error::TokenizerLoad { .. } => "TokenizerLoadError",
            Error::InvalidArgument { .. } => "InvalidArgumentError",
            Error::StaleIndex { .. } => "StaleIndexError",
            Error::IncompleteShards { .. } => "IncompleteShardSetError",
            Error::Cancelled => "KeyboardInterrupt",
        }
    }

    /// Wrap an I/O error, turning ENOSPC into [`Error::DiskFull`].
    pub fn io(action: &'static str, path: impl AsRef<Path>, source: std::io::Error) -> Self {
        let path = path.as_ref().to_path_buf();
        if source.raw_os_error() == Some(28) || source.kind() == std::io::ErrorKind::StorageFull {
            Error::DiskFull { path }
        } else {
            Error::Io {
                action,
                path,
                source,
            }
        }
    }
}

/// One instance of every variant, for tests of the Python mapping (`kdmem._core._error_samples`).
///
/// The `match` in the loop is exhaustive on purpose: adding a variant without a sample here
/// fails to compile, so the Python test covers every variant.
#[doc(hidden)]
pub fn samples() -> Vec<Error> {
    let p = PathBuf::from("corpus/part-0.jsonl");
    let all = vec![
        Error::io(
            "read",
            &p,
            std::io::Error::from(std::io::ErrorKind::NotFound),
        ),
        Error::DiskFull { path: p.clone() },
        Error::MalformedRecord {
            path: p.display().to_string(),
            line: 7,
            reason: "expected value at column 1".into(),
        },
        Error::MissingField {
            path: p.display().to_string(),
            line: 3,
            field: "text".into(),
            found: "content, id".into(),
        },
        Error::InvalidUtf8 {
            path: p.display().to_string(),
            line: 9,
            offset: 12,
        },
        Error::TokenOutOfRange {
            token: 70000,
            max: 65535,
            context: "a u16 shard".into(),
            fix: "re-shard with --dtype u32".into(),
        },
        Error::EmptyCorpus {
            inputs: p.display().to_string(),
        },
        Error::Corrupt {
            path: p.clone(),
            reason: "data checksum 0x1 != header 0x2".into(),
        },
        Error::FormatVersion {
            path: p.clone(),
            found: 9,
            supported: 1,
        },
        Error::TokenizerMismatch {
            what: "queries".into(),
            expected: "0123456789ab".into(),
            found: "ba9876543210".into(),
            fix: "tokenize with the index's tokenizer".into(),
        },
        Error::TokenizerLoad {
            path: p.clone(),
            reason: "expected value".into(),
        },
        Error::InvalidArgument {
            name: "threads".into(),
            value: "0".into(),
            fix: "pass a positive thread count".into(),
        },
        Error::StaleIndex {
            path: p.clone(),
            reason: "was built from a different shard (checksum 0x1, shard has 0x2)".into(),
            dir: "corpus".into(),
        },
        Error::IncompleteShards {
            dir: p.display().to_string(),
            reason: "shards.json says complete: false (4 shard(s) finished)".into(),
        },
        Error::Cancelled,
    ];
    for e in &all {
        match e {
            Error::Io { .. }
            | Error::DiskFull { .. }
            | Error::MalformedRecord { .. }
            | Error::MissingField { .. }
            | Error::InvalidUtf8 { .. }
            | Error::TokenOutOfRange { .. }
            | Error::EmptyCorpus { .. }
            | Error::Corrupt { .. }
            | Error::FormatVersion { .. }
            | Error::TokenizerMismatch { .. }
            | Error::TokenizerLoad { .. }
            | Error::InvalidArgument { .. }
            | Error::StaleIndex { .. }
            | Error::IncompleteShards { .. }
            | Error::Cancelled => {}
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_becomes_disk_full() {
        let e = Error::io("write", "/x", std::io::Error::from_raw_os_error(28));
        assert_eq!(e.kind(), "DiskFullError");
        assert!(e.to_string().contains("/x"));
    }

    #[test]
    fn messages_are_one_line_and_name_the_value() {
        let e = Error::TokenOutOfRange {
            token: 70000,
            max: 65535,
            context: "a u16 shard".into(),
            fix: "re-shard with --dtype u32".into(),
        };
        let s = e.to_string();
        assert!(!s.contains('\n'));
        assert!(s.contains("70000") && s.contains("--dtype u32"));
    }
}
