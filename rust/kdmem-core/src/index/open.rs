//! Reader selection: one type that opens either index layout a directory may hold (kdmem's
//! own units, [`Index`], or an infini-gram index, [`InfiniGramIndex`]) behind one API, so
//! callers (the Python binding, tests) never dispatch on the layout themselves.

use std::path::Path;

use super::dir::Index;
use super::infini::{is_infini_gram_dir, InfiniGramIndex};
use super::search::{Location, NgramOverlap};
use crate::control::Control;
use crate::error::{Error, Result};

/// An opened index directory of either layout.
#[derive(Debug)]
pub enum AnyIndex {
    /// kdmem's `.kdt` shards and `.kdsa` units.
    Kdmem(Index),
    /// An infini-gram directory (`tokenized.N`, `table.N`, `offset.N`), read-only, u16.
    InfiniGram(InfiniGramIndex),
}

/// Evaluate `$body` with `$c` bound to the corpus view of either layout.
macro_rules! with_corpus {
    ($self:expr, |$c:ident| $body:expr) => {
        match $self {
            AnyIndex::Kdmem(i) => {
                let $c = i.corpus();
                $body
            }
            AnyIndex::InfiniGram(i) => {
                let $c = i.corpus();
                $body
            }
        }
    };
}

/// Parse 64 hex digits into a tokenizer hash.
pub fn parse_tokenizer_hash(hex: &str) -> Result<[u8; 32]> {
    let bad = || Error::InvalidArgument {
        name: "tokenizer_hash".into(),
        value: hex.chars().take(80).collect(),
        fix: "pass 64 hex digits, e.g. kdmem.corpus.tokenizer_hash(tokenizer)".into(),
    };
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut h = [0u8; 32];
    for (i, b) in h.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(h)
}

impl AnyIndex {
    /// Open `dir` as an infini-gram index if it holds `tokenized.0` and `table.0`, else as a
    /// kdmem index; `shards` opens a subset of a kdmem index ([`Index::open_shards`]).
    pub fn open(dir: impl AsRef<Path>, shards: Option<&[usize]>) -> Result<Self> {
        let dir = dir.as_ref();
        if is_infini_gram_dir(dir) {
            if shards.is_some() {
                return Err(Error::InvalidArgument {
                    name: "shards".into(),
                    value: dir.display().to_string(),
                    fix: "an infini-gram index opens whole; omit shards".into(),
                });
            }
            return InfiniGramIndex::open(dir).map(AnyIndex::InfiniGram);
        }
        match shards {
            Some(sel) => Index::open_shards(dir, sel),
            None => Index::open(dir),
        }
        .map(AnyIndex::Kdmem)
    }

    /// `"kdmem"` or `"infini-gram"`.
    pub fn format(&self) -> &'static str {
        match self {
            AnyIndex::Kdmem(_) => "kdmem",
            AnyIndex::InfiniGram(_) => "infini-gram",
        }
    }

    /// Shards opened.
    pub fn n_shards(&self) -> usize {
        match self {
            AnyIndex::Kdmem(i) => i.n_shards(),
            AnyIndex::InfiniGram(i) => i.n_shards(),
        }
    }

    /// Position in the directory of each opened shard, ascending.
    pub fn shard_ids(&self) -> Vec<usize> {
        match self {
            AnyIndex::Kdmem(i) => i.shard_ids().to_vec(),
            AnyIndex::InfiniGram(i) => (0..i.n_shards()).collect(),
        }
    }

    /// The search units as lists of shard positions (an infini-gram shard is its own unit).
    pub fn units(&self) -> Vec<Vec<usize>> {
        match self {
            AnyIndex::Kdmem(i) => i.units(),
            AnyIndex::InfiniGram(i) => (0..i.n_shards()).map(|k| vec![k]).collect(),
        }
    }

    /// Tokens of the opened shards.
    pub fn n_tokens(&self) -> u64 {
        match self {
            AnyIndex::Kdmem(i) => i.n_tokens(),
            AnyIndex::InfiniGram(i) => i.n_tokens(),
        }
    }

    /// Documents of the opened shards.
    pub fn n_docs(&self) -> u64 {
        match self {
            AnyIndex::Kdmem(i) => i.n_docs(),
            AnyIndex::InfiniGram(i) => i.n_docs(),
        }
    }

    /// Vocabulary size (0 = unknown; always for infini-gram).
    pub fn vocab_size(&self) -> u32 {
        match self {
            AnyIndex::Kdmem(i) => i.vocab_size(),
            AnyIndex::InfiniGram(_) => 0,
        }
    }

    /// Token width in bytes (infini-gram: 2).
    pub fn token_width(&self) -> u32 {
        match self {
            AnyIndex::Kdmem(i) => i.token_width(),
            AnyIndex::InfiniGram(_) => 2,
        }
    }

    /// Tokenizer hash of the shards (all zero = unknown; always for infini-gram).
    pub fn tokenizer_hash(&self) -> [u8; 32] {
        match self {
            AnyIndex::Kdmem(i) => i.tokenizer_hash(),
            AnyIndex::InfiniGram(_) => [0; 32],
        }
    }

    /// [`Error::TokenizerMismatch`] unless queries made with tokenizer `hash` may be asked;
    /// infini-gram indexes do not record their tokenizer, so they accept any.
    pub fn check_tokenizer(&self, hash: &[u8; 32]) -> Result<()> {
        match self {
            AnyIndex::Kdmem(i) => i.check_tokenizer(hash),
            AnyIndex::InfiniGram(_) => Ok(()),
        }
    }

    /// Bytes held in RAM beyond the memory maps (0 for infini-gram, which keeps nothing).
    pub fn ram_bytes(&self) -> u64 {
        match self {
            AnyIndex::Kdmem(i) => i.ram_bytes(),
            AnyIndex::InfiniGram(_) => 0,
        }
    }

    /// Bytes on disk of the files searched.
    pub fn disk_bytes(&self) -> u64 {
        match self {
            AnyIndex::Kdmem(i) => i.disk_bytes(),
            AnyIndex::InfiniGram(i) => i.disk_bytes(),
        }
    }

    /// The files searched.
    pub fn files(&self) -> Vec<std::path::PathBuf> {
        match self {
            AnyIndex::Kdmem(i) => i.files(),
            AnyIndex::InfiniGram(i) => i.files(),
        }
    }

    /// See [`super::Corpus::count`].
    pub fn count(&self, q: &[u32], threads: Option<usize>) -> Result<u64> {
        with_corpus!(self, |c| c.count(q, threads))
    }

    /// See [`super::Corpus::locate`].
    pub fn locate(&self, q: &[u32], limit: usize, threads: Option<usize>) -> Result<Vec<Location>> {
        with_corpus!(self, |c| c.locate(q, limit, threads))
    }

    /// See [`super::Corpus::longest_match`].
    pub fn longest_match(&self, q: &[u32], threads: Option<usize>) -> Result<Vec<u32>> {
        with_corpus!(self, |c| c.longest_match(q, threads))
    }

    /// See [`super::Corpus::ngram_overlap`].
    pub fn ngram_overlap(
        &self,
        q: &[u32],
        n: usize,
        threads: Option<usize>,
    ) -> Result<NgramOverlap> {
        with_corpus!(self, |c| c.ngram_overlap(q, n, threads))
    }

    /// See [`super::Corpus::count_many`].
    pub fn count_many(&self, qs: &[&[u32]], threads: Option<usize>) -> Result<Vec<u64>> {
        with_corpus!(self, |c| c.count_many(qs, threads))
    }

    /// See [`super::Corpus::locate_many`].
    pub fn locate_many(
        &self,
        qs: &[&[u32]],
        limit: usize,
        threads: Option<usize>,
    ) -> Result<Vec<Vec<Location>>> {
        with_corpus!(self, |c| c.locate_many(qs, limit, threads))
    }

    /// See [`super::Corpus::longest_match_many`].
    pub fn longest_match_many(
        &self,
        qs: &[&[u32]],
        threads: Option<usize>,
    ) -> Result<Vec<Vec<u32>>> {
        with_corpus!(self, |c| c.longest_match_many(qs, threads))
    }

    /// See [`super::Corpus::ngram_overlap_many`].
    pub fn ngram_overlap_many(
        &self,
        qs: &[&[u32]],
        n: usize,
        threads: Option<usize>,
    ) -> Result<Vec<NgramOverlap>> {
        with_corpus!(self, |c| c.ngram_overlap_many(qs, n, threads))
    }

    /// Recompute every checksum (kdmem); infini-gram files carry none (sizes were checked
    /// when opening), so this does nothing for them.
    pub fn verify(&self, threads: Option<usize>, ctl: &Control) -> Result<()> {
        match self {
            AnyIndex::Kdmem(i) => i.verify(threads, ctl),
            AnyIndex::InfiniGram(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_hashes_parse_or_name_the_fix() {
        let h = parse_tokenizer_hash(&"0a".repeat(32)).unwrap();
        assert_eq!(h, [10u8; 32]);
        for bad in ["0a", &"zz".repeat(32), &"é".repeat(64)] {
            let e = parse_tokenizer_hash(bad).unwrap_err();
            assert_eq!(e.kind(), "InvalidArgumentError");
            assert!(e.to_string().contains("64 hex digits"));
        }
    }

    #[test]
    fn a_directory_with_neither_layout_is_one_line() {
        let tmp = tempfile::tempdir().unwrap();
        let e = AnyIndex::open(tmp.path(), None).unwrap_err();
        assert_eq!(e.kind(), "InvalidArgumentError");
        assert!(e.to_string().contains("kdmem shard"), "{e}");
    }
}
