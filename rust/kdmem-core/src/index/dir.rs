//! Index directories: build every shard's suffix array ([`build_dir`], resumable), check them
//! ([`verify_dir`]) and open them for queries ([`Index`]).
//!
//! An index directory is a shard directory (`kdmem shard` output): `shard-NNNNN.kdt` files,
//! each indexed by `shard-NNNNN.kdsa` next to it. Shards are taken in file name order; the
//! global id of a shard's first document is the number of documents in the shards before it
//! (= `first_doc` in `shards.json`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;

use super::build::{prepare, start_bits};
use super::format::{self, SaFile, ShardInfo};
use super::search::{Corpus, ShardSa};
use crate::control::Control;
use crate::error::{Error, Result};
use crate::shard::{ShardReader, Tokens};
use crate::threads;

/// Extension of shard files.
pub const SHARD_EXT: &str = "kdt";
/// Extension of suffix-array files.
pub const INDEX_EXT: &str = "kdsa";

/// The suffix-array file of a shard: same name, extension `.kdsa`.
pub fn index_path(shard: &Path) -> PathBuf {
    shard.with_extension(INDEX_EXT)
}

/// The shard files of `dir`, sorted by name.
pub fn shard_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io("read", dir, e))?;
    let mut v = Vec::new();
    for e in rd {
        let p = e.map_err(|e| Error::io("read", dir, e))?.path();
        if p.extension().is_some_and(|x| x == SHARD_EXT) {
            v.push(p);
        }
    }
    if v.is_empty() {
        return Err(Error::InvalidArgument {
            name: "SHARDS_DIR".into(),
            value: dir.display().to_string(),
            fix: "it holds no shard-*.kdt files; run `kdmem shard` first or pass the directory it wrote".into(),
        });
    }
    v.sort();
    Ok(v)
}

/// What [`build_dir`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BuildReport {
    /// Shards in the directory.
    pub shards: usize,
    /// Shards whose suffix array was built by this call.
    pub built: usize,
    /// Shards skipped because their suffix array was already complete and current.
    pub skipped: usize,
    /// Tokens in the shards built by this call.
    pub tokens_built: u64,
    /// Wall time of the call in seconds.
    pub seconds: f64,
}

fn dir_name(path: &Path) -> String {
    path.parent()
        .map_or_else(|| ".".into(), |d| d.display().to_string())
}

/// Whether `sa_path` is a complete index of `shard` (header checks only, O(1)).
fn is_current(shard: &ShardReader, sa_path: &Path) -> bool {
    match SaFile::open(sa_path) {
        Ok(f) => {
            let h = f.header();
            h.shard_checksum == shard.data_checksum()
                && h.n_tokens == shard.n_tokens()
                && h.n_docs == shard.n_docs()
        }
        Err(_) => false,
    }
}

/// Token ids must be below the shard's vocabulary size (when known).
fn check_vocab(shard: &ShardReader) -> Result<()> {
    let v = shard.vocab_size();
    if v == 0 {
        return Ok(());
    }
    let max = match shard.tokens() {
        Tokens::U16(t) => t.iter().copied().max().map(u32::from),
        Tokens::U32(t) => t.iter().copied().max(),
    };
    match max {
        Some(m) if m >= v => Err(Error::TokenOutOfRange {
            token: u64::from(m),
            max: u64::from(v) - 1,
            context: format!("{} (vocabulary of {v} tokens)", shard.path().display()),
            fix: "re-shard the corpus with the tokenizer it was made with".into(),
        }),
        _ => Ok(()),
    }
}

/// Build the suffix array of one shard unless a current one exists; returns the tokens built
/// (`None` if skipped). The shard's data checksum is verified first, so an index is never
/// built from corrupt data.
pub fn build_shard(shard_path: &Path, force_wide: bool) -> Result<Option<u64>> {
    let sa_path = index_path(shard_path);
    let shard = ShardReader::open(shard_path)?;
    if is_current(&shard, &sa_path) {
        return Ok(None);
    }
    shard.verify()?;
    check_vocab(&shard)?;
    let info = ShardInfo {
        n_docs: shard.n_docs(),
        checksum: shard.data_checksum(),
        token_width: shard.dtype().width(),
        vocab_size: shard.vocab_size(),
        tokenizer_hash: shard.tokenizer_hash(),
    };
    let n = shard.n_tokens();
    let prepared = prepare(shard.tokens(), shard.offsets(), force_wide);
    // The copy in `prepared` is all the sort needs: unmap the shard before the big allocation.
    drop(shard);
    let sorted = prepared.sort()?;
    format::write(&sa_path, &sorted, info)?;
    Ok(Some(n))
}

/// Build the suffix array of every shard of `dir` that lacks a current one.
///
/// Shards run in parallel on `threads` workers (one libsais sort each), so peak memory is
/// about `threads` x the largest shard x 6.4 B/token (u16) or 8.4 B/token (u32); finished
/// shards are kept, so an interrupted build resumes where it stopped. `ctl` counts documents
/// and tokens of finished shards and is checked between shards. Errors from the first
/// failing shard (in file order) are returned after the other shards finish.
pub fn build_dir(dir: &Path, threads: Option<usize>, ctl: &Control) -> Result<BuildReport> {
    build_dir_with(dir, threads, ctl, false)
}

#[doc(hidden)]
pub fn build_dir_with(
    dir: &Path,
    threads: Option<usize>,
    ctl: &Control,
    force_wide: bool,
) -> Result<BuildReport> {
    build_shards_with(dir, None, threads, ctl, force_wide)
}

/// [`build_dir`] restricted to the shards numbered `shards` (positions in file name order,
/// as in `shard-NNNNN.kdt`): one stateless per-shard task of a distributed build (a Ray task
/// or one Slurm array element). `None` builds every shard. Errors on an index out of range.
pub fn build_shards(
    dir: &Path,
    shards: Option<&[usize]>,
    threads: Option<usize>,
    ctl: &Control,
) -> Result<BuildReport> {
    build_shards_with(dir, shards, threads, ctl, false)
}

/// Shard numbers `shards` of a directory of `n` shards, ascending and deduplicated (all of
/// them for `None`).
fn select_shards(n: usize, shards: Option<&[usize]>) -> Result<Vec<usize>> {
    let Some(sel) = shards else {
        return Ok((0..n).collect());
    };
    let mut sel = sel.to_vec();
    sel.sort_unstable();
    sel.dedup();
    if let Some(&bad) = sel.iter().find(|&&k| k >= n) {
        return Err(Error::InvalidArgument {
            name: "shard".into(),
            value: bad.to_string(),
            fix: format!("the directory has {n} shards: pass a number below {n}"),
        });
    }
    if sel.is_empty() {
        return Err(Error::InvalidArgument {
            name: "shards".into(),
            value: "[]".into(),
            fix: "pass at least one shard number, or None for all shards".into(),
        });
    }
    Ok(sel)
}

fn build_shards_with(
    dir: &Path,
    shards: Option<&[usize]>,
    threads: Option<usize>,
    ctl: &Control,
    force_wide: bool,
) -> Result<BuildReport> {
    let t0 = Instant::now();
    let all = shard_paths(dir)?;
    let paths: Vec<&PathBuf> = select_shards(all.len(), shards)?
        .into_iter()
        .map(|k| &all[k])
        .collect();
    let pool = threads::pool(threads)?;
    let results: Vec<Result<Option<u64>>> = pool.install(|| {
        paths
            .par_iter()
            .with_max_len(1)
            .map(|p| {
                ctl.check()?;
                let r = build_shard(p, force_wide)?;
                ctl.advance(1, r.unwrap_or(0), 0);
                Ok(r)
            })
            .collect()
    });
    let mut report = BuildReport {
        shards: paths.len(),
        ..BuildReport::default()
    };
    for r in results {
        match r? {
            Some(n) => {
                report.built += 1;
                report.tokens_built += n;
            }
            None => report.skipped += 1,
        }
    }
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// Check every shard of `dir` and its suffix array end to end: both data checksums, the
/// shard checksum recorded in the index, and the document bitmap against the shard's
/// offsets. O(total bytes), parallel over shards.
pub fn verify_dir(dir: &Path, threads: Option<usize>, ctl: &Control) -> Result<()> {
    let paths = shard_paths(dir)?;
    let pool = threads::pool(threads)?;
    let results: Vec<Result<()>> = pool.install(|| {
        paths
            .par_iter()
            .with_max_len(1)
            .map(|p| {
                ctl.check()?;
                let shard = ShardReader::open(p)?;
                shard.verify()?;
                let sa = open_sa_for(&shard)?;
                sa.verify()?;
                if sa.starts() != start_bits(shard.n_tokens() as usize, shard.offsets()) {
                    return Err(Error::Corrupt {
                        path: sa.path().to_path_buf(),
                        reason: "document bitmap does not match the shard's offsets".into(),
                    });
                }
                ctl.advance(1, shard.n_tokens(), 0);
                Ok(())
            })
            .collect()
    });
    results.into_iter().collect()
}

/// Open the index of `shard` and check that it was built from this shard's current content.
fn open_sa_for(shard: &ShardReader) -> Result<SaFile> {
    let sa_path = index_path(shard.path());
    let dir = dir_name(shard.path());
    if !sa_path.exists() {
        return Err(Error::StaleIndex {
            path: sa_path,
            reason: "does not exist".into(),
            dir,
        });
    }
    let sa = SaFile::open(&sa_path)?;
    let h = sa.header();
    if h.shard_checksum != shard.data_checksum()
        || h.n_tokens != shard.n_tokens()
        || h.n_docs != shard.n_docs()
    {
        return Err(Error::StaleIndex {
            path: sa_path,
            reason: format!(
                "was built from a different shard (checksum {:#010x}, {} tokens; {} now has \
                 {:#010x}, {} tokens): the shard changed after indexing",
                h.shard_checksum,
                h.n_tokens,
                shard.path().display(),
                shard.data_checksum(),
                shard.n_tokens()
            ),
            dir,
        });
    }
    Ok(sa)
}

/// Hex form of a tokenizer hash as shown to users (first 12 digits).
fn short_hash(h: &[u8; 32]) -> String {
    h[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// An opened index directory: every shard and its suffix array, memory-mapped.
///
/// Opening is O(shards + documents) (header checks and the shard's offsets check); no token
/// or suffix-array page is read until a query touches it. Queries go through
/// [`Index::corpus`].
#[derive(Debug)]
pub struct Index {
    dir: PathBuf,
    shards: Vec<(ShardReader, SaFile, u64)>,
    shard_ids: Vec<usize>,
    tokenizer_hash: [u8; 32],
    vocab_size: u32,
}

impl Index {
    /// Open `dir`; errors if a shard lacks a current suffix array ([`Error::StaleIndex`]),
    /// a file is corrupt, or shards disagree on the tokenizer.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_shards_opt(dir.as_ref(), None)
    }

    /// Open only the shards numbered `shards` (positions in file name order) of `dir`: the
    /// view of one per-shard task of a distributed featurize/scan. Document ids stay global
    /// (every earlier shard's header is read for its document count, O(shards)); `locate`
    /// reports shards by their position in this subset, [`Index::shard_ids`] maps them back.
    /// Queries answer for these shards alone: counts add over a partition of the shards,
    /// matching statistics take the elementwise max, locations concatenate in shard order.
    pub fn open_shards(dir: impl AsRef<Path>, shards: &[usize]) -> Result<Self> {
        Self::open_shards_opt(dir.as_ref(), Some(shards))
    }

    fn open_shards_opt(dir: &Path, sel: Option<&[usize]>) -> Result<Self> {
        let dir = dir.to_path_buf();
        let paths = shard_paths(&dir)?;
        let sel = select_shards(paths.len(), sel)?;
        let mut want = vec![false; paths.len()];
        for &k in &sel {
            want[k] = true;
        }
        let mut shards = Vec::new();
        let mut shard_ids = Vec::new();
        let mut first_doc = 0u64;
        let last = sel.last().copied().unwrap_or(0);
        for (k, p) in paths.iter().enumerate().take(last + 1) {
            let shard = ShardReader::open(p)?;
            let n_docs = shard.n_docs();
            if want[k] {
                let sa = open_sa_for(&shard)?;
                shards.push((shard, sa, first_doc));
                shard_ids.push(k);
            }
            first_doc += n_docs;
        }
        let (first, _, _) = &shards[0];
        let (tokenizer_hash, vocab_size) = (first.tokenizer_hash(), first.vocab_size());
        for (s, _, _) in &shards[1..] {
            if s.tokenizer_hash() != tokenizer_hash || s.vocab_size() != vocab_size {
                return Err(Error::TokenizerMismatch {
                    what: s.path().display().to_string(),
                    expected: format!("{} ({vocab_size} tokens)", short_hash(&tokenizer_hash)),
                    found: format!(
                        "{} ({} tokens)",
                        short_hash(&s.tokenizer_hash()),
                        s.vocab_size()
                    ),
                    fix: "keep one tokenizer per index directory".into(),
                });
            }
        }
        Ok(Index {
            dir,
            shards,
            shard_ids,
            tokenizer_hash,
            vocab_size,
        })
    }

    /// A query view over all shards (cheap: borrows the maps).
    pub fn corpus(&self) -> Corpus<ShardSa<'_>> {
        Corpus {
            shards: self
                .shards
                .iter()
                .map(|(s, sa, first_doc)| ShardSa {
                    tokens: s.tokens(),
                    offsets: s.offsets(),
                    starts: sa.starts(),
                    sa: sa.ptrs(),
                    first_doc: *first_doc,
                })
                .collect(),
            vocab_size: self.vocab_size,
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of shards opened.
    pub fn n_shards(&self) -> usize {
        self.shards.len()
    }

    /// Position in the directory (file name order) of each opened shard, ascending.
    pub fn shard_ids(&self) -> &[usize] {
        &self.shard_ids
    }

    /// Total tokens.
    pub fn n_tokens(&self) -> u64 {
        self.shards.iter().map(|(s, _, _)| s.n_tokens()).sum()
    }

    /// Total documents.
    pub fn n_docs(&self) -> u64 {
        self.shards.iter().map(|(s, _, _)| s.n_docs()).sum()
    }

    /// Token dtype width of the shards in bytes (2 or 4; the widest if they differ).
    pub fn token_width(&self) -> u32 {
        self.shards
            .iter()
            .map(|(s, _, _)| s.dtype().width())
            .max()
            .unwrap_or(2)
    }

    /// Tokenizer hash of the shards (all zero = unknown).
    pub fn tokenizer_hash(&self) -> [u8; 32] {
        self.tokenizer_hash
    }

    /// Vocabulary size (0 = unknown).
    pub fn vocab_size(&self) -> u32 {
        self.vocab_size
    }

    /// [`Error::TokenizerMismatch`] unless queries made with tokenizer `hash` may be asked
    /// (equal hashes, or either side unknown = all zero).
    pub fn check_tokenizer(&self, hash: &[u8; 32]) -> Result<()> {
        let unknown = |h: &[u8; 32]| h.iter().all(|&b| b == 0);
        if unknown(hash) || unknown(&self.tokenizer_hash) || *hash == self.tokenizer_hash {
            return Ok(());
        }
        Err(Error::TokenizerMismatch {
            what: "the queries".into(),
            expected: format!(
                "{} (the index {})",
                short_hash(&self.tokenizer_hash),
                self.dir.display()
            ),
            found: short_hash(hash),
            fix: "tokenize queries with the tokenizer the index was built from".into(),
        })
    }

    /// End-to-end checksum verification of every shard and suffix array ([`verify_dir`]).
    pub fn verify(&self, threads: Option<usize>, ctl: &Control) -> Result<()> {
        verify_dir(&self.dir, threads, ctl)
    }
}
