//! Index directories: build the units' suffix arrays ([`build_shards`], resumable, within a
//! memory budget), check them ([`verify_dir`]) and open them for queries ([`Index`]).
//!
//! An index directory is a shard directory (`kdmem shard` output): `*.kdt` shard files, taken
//! in file name order (the global id of a shard's first document is the number of documents
//! in the shards before it, = `first_doc` in `shards.json`), and `*.kdsa` unit files next to
//! them ([`super::plan`] says how shards are cut into units, [`super::format`] what a unit file
//! holds). Every unit records the identity (token and document counts, data checksum) of the
//! shards it covers; a unit whose shards changed is stale. The current units must cover every
//! shard exactly once; when several could, the one covering the most shards is used.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use rayon::prelude::*;

use super::build::{prepare, Source, UnitMeta};
use super::format::{self, CoveredShard, Layout, Pages, SaFile, SaHeader};
use super::plan::{self, Budget, Grouping, ShardStat, UnitSpec};
use super::search::Corpus;
use super::unit::{DocTable, ShardSlot, TextRef, TextSlice, UnitText, UnitView};
use crate::control::Control;
use crate::error::{Error, Result};
use crate::shard::{ShardReader, Tokens};
use crate::threads;

/// Extension of shard files.
pub const SHARD_EXT: &str = "kdt";
/// Extension of unit (suffix-array) files.
pub const INDEX_EXT: &str = "kdsa";

/// The unit file of a shard indexed alone: same name, extension `.kdsa`.
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

fn stems(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|p| {
            p.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect()
}

fn dir_name(dir: &Path) -> String {
    dir.display().to_string()
}

/// What [`build_shards`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BuildReport {
    /// Shards considered by this call.
    pub shards: usize,
    /// Shards whose suffix array was built by this call.
    pub built: usize,
    /// Shards skipped because a current unit already covers them.
    pub skipped: usize,
    /// Units written by this call.
    pub units: usize,
    /// Tokens in the units written by this call.
    pub tokens_built: u64,
    /// Wall time of the call in seconds.
    pub seconds: f64,
    /// The memory budget in bytes.
    pub memory: u64,
    /// Units sorted at once.
    pub concurrency: usize,
    /// Largest unit allowed by the budget, in tokens.
    pub max_unit: u64,
}

/// How to build: threads, memory budget, and (for tests) the file layout.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Worker threads (units sorted at once); default `KDMEM_NUM_THREADS` or every core.
    pub threads: Option<usize>,
    /// Memory budget in bytes; default three quarters of the machine's RAM.
    pub memory: Option<u64>,
    /// Page and sample layout (default: [`Layout::default`]).
    pub layout: Option<Layout>,
    /// Use the 64-bit libsais variants even for small units (tests).
    pub force_wide: bool,
    /// Which shards are grouped (default: [`Grouping::default`]).
    pub grouping: Option<Grouping>,
}

/// The identity facts of a shard (kept after its map is dropped).
#[derive(Debug, Clone)]
struct ShardFacts {
    path: PathBuf,
    n_tokens: u64,
    n_docs: u64,
    checksum: u32,
    width: u32,
    vocab_size: u32,
    tokenizer_hash: [u8; 32],
}

impl ShardFacts {
    fn of(r: &ShardReader) -> Self {
        ShardFacts {
            path: r.path().to_path_buf(),
            n_tokens: r.n_tokens(),
            n_docs: r.n_docs(),
            checksum: r.data_checksum(),
            width: r.dtype().width(),
            vocab_size: r.vocab_size(),
            tokenizer_hash: r.tokenizer_hash(),
        }
    }

    fn covered(&self) -> CoveredShard {
        CoveredShard {
            n_tokens: self.n_tokens,
            n_docs: self.n_docs,
            checksum: self.checksum,
        }
    }
}

/// Every `.kdsa` file of `dir` with its header (or the reason it cannot be read).
fn read_units(dir: &Path) -> Result<Vec<(PathBuf, Result<SaHeader>)>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io("read", dir, e))?;
    let mut v = Vec::new();
    for e in rd {
        let p = e.map_err(|e| Error::io("read", dir, e))?.path();
        if p.extension().is_some_and(|x| x == INDEX_EXT) {
            let h = format::read_header(&p);
            v.push((p, h));
        }
    }
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

/// Why `h` is not a current index of the shards it names, if it is not.
fn staleness(
    h: &SaHeader,
    shards: &[ShardFacts],
    offsets: impl Fn(usize) -> Option<Vec<u64>>,
) -> Option<String> {
    let first = h.first_shard as usize;
    let last = first + h.shards.len();
    if last > shards.len() {
        return Some(format!(
            "covers shards {first}..{} but the directory has {}",
            last - 1,
            shards.len()
        ));
    }
    for (j, c) in h.shards.iter().enumerate() {
        let s = &shards[first + j];
        if *c != s.covered() {
            return Some(format!(
                "was built from a different shard (checksum {:#010x}, {} tokens; {} now has \
                 {:#010x}, {} tokens): the shard changed after indexing",
                c.checksum,
                c.n_tokens,
                s.path.display(),
                s.checksum,
                s.n_tokens
            ));
        }
        if s.width != h.token_width
            || s.vocab_size != h.vocab_size
            || s.tokenizer_hash != h.tokenizer_hash
        {
            return Some(format!(
                "records another token width, vocabulary or tokenizer than {}",
                s.path.display()
            ));
        }
    }
    if h.pieces > 1 {
        let s = &shards[first];
        let end_doc = h.piece_doc + h.n_docs;
        let ok = end_doc <= s.n_docs
            && offsets(first).is_some_and(|o| {
                o[h.piece_doc as usize] == h.piece_token
                    && o[end_doc as usize] == h.piece_token + h.n_tokens
            });
        if !ok {
            return Some("is a piece that no longer matches its shard's documents".into());
        }
    } else {
        let (t, d) = h
            .shards
            .iter()
            .fold((0, 0), |a, c| (a.0 + c.n_tokens, a.1 + c.n_docs));
        if (t, d) != (h.n_tokens, h.n_docs) {
            return Some("token or document counts disagree with its shards".into());
        }
    }
    None
}

/// Choose, among current units, one tiling of the shards; returns the chosen indices into
/// `units` and, per shard, the chosen unit covering it.
fn tile(n: usize, units: &[(PathBuf, SaHeader)]) -> (Vec<usize>, Vec<Option<usize>>) {
    let mut chosen = Vec::new();
    let mut cover = vec![None; n];
    let mut k = 0;
    while k < n {
        let whole = units
            .iter()
            .enumerate()
            .filter(|(_, (_, h))| h.first_shard as usize == k && h.pieces == 1)
            .max_by_key(|(i, (_, h))| (h.shards.len(), std::cmp::Reverse(*i)));
        if let Some((i, (_, h))) = whole {
            chosen.push(i);
            for c in cover.iter_mut().skip(k).take(h.shards.len()) {
                *c = Some(i);
            }
            k += h.shards.len();
            continue;
        }
        // A complete, contiguous set of pieces of shard k (the smallest such set first).
        let mut sets: Vec<u32> = units
            .iter()
            .filter(|(_, h)| h.first_shard as usize == k && h.pieces > 1)
            .map(|(_, h)| h.pieces)
            .collect();
        sets.sort_unstable();
        sets.dedup();
        for p in sets {
            let mut parts: Vec<Option<usize>> = vec![None; p as usize];
            for (i, (_, h)) in units.iter().enumerate() {
                if h.first_shard as usize == k && h.pieces == p && parts[h.piece as usize].is_none()
                {
                    parts[h.piece as usize] = Some(i);
                }
            }
            let Some(parts) = parts.into_iter().collect::<Option<Vec<usize>>>() else {
                continue;
            };
            let contiguous = parts.windows(2).all(|w| {
                let (a, b) = (&units[w[0]].1, &units[w[1]].1);
                a.piece_token + a.n_tokens == b.piece_token && a.piece_doc + a.n_docs == b.piece_doc
            });
            let first = &units[parts[0]].1;
            let last = &units[*parts.last().expect("p > 1")].1;
            if contiguous
                && first.piece_token == 0
                && first.piece_doc == 0
                && last.piece_token + last.n_tokens == first.shards[0].n_tokens
                && last.piece_doc + last.n_docs == first.shards[0].n_docs
            {
                chosen.extend(&parts);
                cover[k] = Some(parts[0]);
                break;
            }
        }
        k += 1;
    }
    (chosen, cover)
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

/// Refuse a shard set that its manifest (`shards.json`, when present) does not describe as
/// finished and identical to the files on disk: an unfinished `kdmem shard` run, shard files
/// added or removed by hand, or a shard whose header disagrees with its entry. O(shards),
/// headers only (the data checksums are checked when a unit is built and by `--verify`).
fn check_manifest(dir: &Path, facts: &[ShardFacts]) -> Result<()> {
    let mpath = dir.join(crate::shard::manifest::MANIFEST);
    if !mpath.exists() {
        return Ok(()); // bare shard files (tests, hand-made sets): nothing to compare with
    }
    let m = crate::shard::manifest::Manifest::read(&mpath)?;
    let incomplete = |reason: String| Error::IncompleteShards {
        dir: dir_name(dir),
        reason,
    };
    if !m.complete {
        return Err(incomplete(format!(
            "shards.json says complete: false ({} shard(s) finished)",
            m.shards.len()
        )));
    }
    let on_disk: Vec<String> = facts
        .iter()
        .map(|f| {
            f.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let listed: Vec<&str> = m.shards.iter().map(|s| s.name.as_str()).collect();
    if on_disk
        .iter()
        .map(String::as_str)
        .ne(listed.iter().copied())
    {
        return Err(incomplete(format!(
            "its {} shard file(s) on disk are not the {} shards.json lists",
            on_disk.len(),
            listed.len()
        )));
    }
    for (f, e) in facts.iter().zip(&m.shards) {
        if (f.n_docs, f.n_tokens, f.checksum) != (e.n_docs, e.n_tokens, e.checksum) {
            return Err(Error::Corrupt {
                path: f.path.clone(),
                reason: format!("its header disagrees with its entry in {}", mpath.display()),
            });
        }
    }
    Ok(())
}

/// The state of a directory: shard facts, unit files, the current tiling.
struct DirState {
    paths: Vec<PathBuf>,
    facts: Vec<ShardFacts>,
    units: Vec<(PathBuf, Result<SaHeader>)>,
    current: Vec<(PathBuf, SaHeader)>,
    stale: Vec<(PathBuf, SaHeader, String)>,
    chosen: Vec<usize>,
    cover: Vec<Option<usize>>,
}

impl DirState {
    fn read(dir: &Path) -> Result<Self> {
        let paths = shard_paths(dir)?;
        let mut facts = Vec::with_capacity(paths.len());
        for p in &paths {
            facts.push(ShardFacts::of(&ShardReader::open(p)?));
        }
        check_manifest(dir, &facts)?;
        let units = read_units(dir)?;
        let offsets = |k: usize| {
            ShardReader::open(&paths[k])
                .ok()
                .map(|r| r.offsets().to_vec())
        };
        let mut current = Vec::new();
        let mut stale = Vec::new();
        for (p, h) in &units {
            if let Ok(h) = h {
                match staleness(h, &facts, offsets) {
                    None => current.push((p.clone(), h.clone())),
                    Some(why) => stale.push((p.clone(), h.clone(), why)),
                }
            }
        }
        let (chosen, cover) = tile(paths.len(), &current);
        Ok(DirState {
            paths,
            facts,
            units,
            current,
            stale,
            chosen,
            cover,
        })
    }

    /// The error for a selected shard no current unit covers.
    fn uncovered(&self, dir: &Path, k: usize) -> Error {
        for (p, h, why) in &self.stale {
            let first = h.first_shard as usize;
            if (first..first + h.shards.len()).contains(&k) {
                return Error::StaleIndex {
                    path: p.clone(),
                    reason: why.clone(),
                    dir: dir_name(dir),
                };
            }
        }
        let stem = stems(&self.paths[k..=k]).remove(0);
        for (p, h) in &self.units {
            if let Err(e) = h {
                let name = p.file_name().map(|s| s.to_string_lossy().into_owned());
                if name.is_some_and(|n| n.starts_with(&format!("{stem}."))) {
                    return clone_err(e);
                }
            }
        }
        Error::StaleIndex {
            path: index_path(&self.paths[k]),
            reason: "does not exist".into(),
            dir: dir_name(dir),
        }
    }
}

fn clone_err(e: &Error) -> Error {
    match e {
        Error::Corrupt { path, reason } => Error::Corrupt {
            path: path.clone(),
            reason: reason.clone(),
        },
        Error::StaleIndex { path, reason, dir } => Error::StaleIndex {
            path: path.clone(),
            reason: reason.clone(),
            dir: dir.clone(),
        },
        Error::FormatVersion {
            path,
            found,
            supported,
        } => Error::FormatVersion {
            path: path.clone(),
            found: *found,
            supported: *supported,
        },
        other => Error::InvalidArgument {
            name: "index".into(),
            value: String::new(),
            fix: other.to_string(),
        },
    }
}

/// Build the suffix arrays of every shard of `dir` that no current unit covers, with the
/// default memory budget; see [`build_shards`].
pub fn build_dir(dir: &Path, threads: Option<usize>, ctl: &Control) -> Result<BuildReport> {
    let opts = BuildOptions {
        threads,
        ..BuildOptions::default()
    };
    build_shards(dir, None, &opts, ctl)
}

/// Build the units of the shards numbered `shards` (positions in file name order; `None`:
/// every shard) that no current unit covers, planned within `opts`' memory budget
/// ([`super::plan`]); units of other shards are left alone, so per-shard calls (a Ray task
/// or a Slurm array element per shard) can run at once. Stale or superseded unit files of
/// the selected shards are removed. Finished units are kept, so an interrupted build resumes
/// where it stopped. Every shard to build is checked against its data checksum first (one
/// read, with plain reads that do not count as this process's memory). `ctl`
/// counts shards (`docs`) and tokens of finished units and is checked between units.
pub fn build_shards(
    dir: &Path,
    shards: Option<&[usize]>,
    opts: &BuildOptions,
    ctl: &Control,
) -> Result<BuildReport> {
    let t0 = Instant::now();
    let st = DirState::read(dir)?;
    let n = st.paths.len();
    let sel = select_shards(n, shards)?;
    let selected = |k: usize| sel.binary_search(&k).is_ok();
    let stems = stems(&st.paths);
    // Remove unit files of the selected shards that are not part of the tiling.
    let chosen: Vec<&PathBuf> = st.chosen.iter().map(|&i| &st.current[i].0).collect();
    for (p, h) in &st.units {
        if chosen.contains(&p) {
            continue;
        }
        let touches = match h {
            Ok(h) => {
                let first = h.first_shard as usize;
                (first..first + h.shards.len()).any(selected)
            }
            Err(_) => {
                let name = p
                    .file_name()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                sel.iter()
                    .any(|&k| name.starts_with(&format!("{}.", stems[k])))
            }
        };
        if touches {
            std::fs::remove_file(p).map_err(|e| Error::io("remove", p, e))?;
        }
    }
    let todo: Vec<usize> = sel
        .iter()
        .copied()
        .filter(|&k| st.cover[k].is_none())
        .collect();
    let budget = Budget {
        memory: opts.memory.unwrap_or_else(Budget::machine_memory),
        threads: threads::resolve(opts.threads)?,
    };
    // Offsets of the shards to plan (read once; splitting needs them).
    let readers: Vec<Option<ShardReader>> = (0..n)
        .map(|k| {
            if todo.binary_search(&k).is_ok() {
                ShardReader::open(&st.paths[k]).map(Some)
            } else {
                Ok(None)
            }
        })
        .collect::<Result<_>>()?;
    let stats: Vec<ShardStat<'_>> = (0..n)
        .map(|k| ShardStat {
            n_tokens: st.facts[k].n_tokens,
            token_width: st.facts[k].width,
            offsets: readers[k].as_ref().map_or(&[0u64][..], |r| r.offsets()),
            group_key: group_key(&st.facts[k]),
        })
        .collect();
    let plan = plan::plan(&stats, &todo, budget, opts.grouping.unwrap_or_default())?;
    drop(stats);
    let pool = threads::pool(Some(budget.threads))?;
    // Every shard's data checksum, once (pieces of a shard share it), before its units.
    let to_check: Vec<&ShardReader> = readers.iter().flatten().collect();
    let checked: Vec<Result<()>> = pool.install(|| {
        to_check
            .par_iter()
            .with_max_len(1)
            .map(|r| {
                ctl.check()?;
                r.verify()
            })
            .collect()
    });
    checked.into_iter().collect::<Result<()>>()?;
    drop(to_check);
    drop(readers);
    drop(pool);
    // Largest units first, each holding its share of the budget while it is sorted and
    // written, on at most `concurrency` threads (module docs of `plan`).
    let mut order: Vec<&UnitSpec> = plan.units.iter().collect();
    order.sort_by_key(|u| std::cmp::Reverse(u.n_tokens));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let gate = MemoryGate::new(plan.usable);
    let work = || -> Result<u64> {
        let mut tokens = 0u64;
        while !failed.load(AtomicOrdering::Relaxed) {
            let Some(&u) = order.get(next.fetch_add(1, AtomicOrdering::Relaxed)) else {
                break;
            };
            let step = (|| {
                ctl.check()?;
                let _held = gate.take(plan.unit_bytes(u));
                // Waiting for the budget may take a unit's sort: look again before starting.
                if failed.load(AtomicOrdering::Relaxed) {
                    return Ok(false);
                }
                ctl.check()?;
                let layout = opts
                    .layout
                    .unwrap_or_else(|| Layout::for_tokens(st.facts[u.first_shard].width));
                build_unit(dir, &st.facts, &stems, u, layout, opts.force_wide).map(|()| true)
            })();
            match step {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    failed.store(true, AtomicOrdering::Relaxed);
                    return Err(e);
                }
            }
            let done = if u.pieces > 1 {
                u64::from(u.piece + 1 == u.pieces)
            } else {
                u.n_shards as u64
            };
            ctl.advance(done, u.n_tokens, 0);
            tokens += u.n_tokens;
        }
        Ok(tokens)
    };
    let workers = plan.concurrency.min(order.len()).max(1);
    let results: Vec<Result<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers).map(|_| s.spawn(work)).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut report = BuildReport {
        shards: sel.len(),
        built: todo.len(),
        skipped: sel.len() - todo.len(),
        units: plan.units.len(),
        memory: budget.memory,
        concurrency: plan.concurrency,
        max_unit: plan.max_unit,
        ..BuildReport::default()
    };
    for r in results {
        report.tokens_built += r?;
    }
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// A counting semaphore over bytes of the build budget: [`MemoryGate::take`] waits until
/// that many bytes are free and holds them until the guard drops.
struct MemoryGate {
    free: Mutex<u64>,
    freed: Condvar,
}

struct Held<'a> {
    gate: &'a MemoryGate,
    bytes: u64,
}

impl MemoryGate {
    fn new(bytes: u64) -> Self {
        MemoryGate {
            free: Mutex::new(bytes),
            freed: Condvar::new(),
        }
    }

    /// Wait for `bytes` (at most the gate's total, which callers guarantee).
    fn take(&self, bytes: u64) -> Held<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free < bytes {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= bytes;
        Held { gate: self, bytes }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut free = self.gate.free.lock().unwrap_or_else(|p| p.into_inner());
        *free += self.bytes;
        self.gate.freed.notify_all();
    }
}

/// Shards group only with shards of the same width and tokenizer.
fn group_key(f: &ShardFacts) -> u64 {
    let mut h = u64::from(f.width) ^ (u64::from(f.vocab_size) << 8);
    for (i, b) in f.tokenizer_hash.iter().enumerate() {
        h ^= u64::from(*b) << ((i % 7) * 8 + 3);
        h = h.rotate_left(5);
    }
    h
}

fn build_unit(
    dir: &Path,
    facts: &[ShardFacts],
    stems: &[String],
    u: &UnitSpec,
    layout: Layout,
    force_wide: bool,
) -> Result<()> {
    let covered = &facts[u.first_shard..u.first_shard + u.n_shards];
    let sources: Vec<Source> = covered
        .iter()
        .map(|f| {
            if u.pieces > 1 {
                Source {
                    path: f.path.clone(),
                    tok_start: u.tokens.0,
                    tok_end: u.tokens.1,
                    doc_start: u.docs.0,
                    doc_end: u.docs.1,
                }
            } else {
                Source {
                    path: f.path.clone(),
                    tok_start: 0,
                    tok_end: f.n_tokens,
                    doc_start: 0,
                    doc_end: f.n_docs,
                }
            }
        })
        .collect();
    let first = &covered[0];
    let meta = UnitMeta {
        n_docs: if u.pieces > 1 {
            u.docs.1 - u.docs.0
        } else {
            covered.iter().map(|f| f.n_docs).sum()
        },
        token_width: first.width,
        vocab_size: first.vocab_size,
        tokenizer_hash: first.tokenizer_hash,
        first_shard: u.first_shard as u32,
        shards: covered.iter().map(ShardFacts::covered).collect(),
        piece: (u.piece, u.pieces),
        piece_start: if u.pieces > 1 {
            (u.tokens.0, u.docs.0)
        } else {
            (0, 0)
        },
    };
    let sorted = prepare(&sources, force_wide)?.sort()?;
    sorted.write(&dir.join(u.file_name(stems)), &meta, layout)?;
    Ok(())
}

/// Check every shard of `dir` and every unit end to end: both data checksums and that the
/// units record the shards' current identities. O(total bytes), parallel.
pub fn verify_dir(dir: &Path, threads: Option<usize>, ctl: &Control) -> Result<()> {
    let idx = Index::open(dir)?;
    idx.verify(threads, ctl)
}

/// Tell the OS that `len` bytes of a memory map at `ptr` are read at random: a fault then
/// reads one page, not a read-ahead window (queries read a few tokens at scattered places).
/// Best effort; nothing happens on platforms without `madvise`.
fn advise_random(ptr: *const u8, len: usize) {
    #[cfg(unix)]
    {
        const PAGE: usize = 4096;
        let start = ptr as usize & !(PAGE - 1);
        let end = ptr as usize + len;
        // SAFETY: the range lies inside a live read-only file mapping (rounded down to its
        // page); MADV_RANDOM only changes read-ahead, never the contents.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_RANDOM);
        }
    }
    #[cfg(not(unix))]
    let _ = (ptr, len);
}

/// One opened unit.
struct OpenUnit {
    file: SaFile,
    docs: DocTable,
    slots: Vec<ShardSlot>,
    allowed: Option<Vec<Range<u64>>>,
    text: Vec<TextSlice>,
    width: u32,
    /// Positions of the covered shards.
    covers: Range<usize>,
}

/// An opened index directory: the units covering the selected shards, memory-mapped, with
/// their samples and document tables in RAM ([`Index::ram_bytes`]).
///
/// Opening is O(shards + documents + samples); no suffix-array page or token is read until a
/// query touches it. Queries go through [`Index::corpus`].
pub struct Index {
    dir: PathBuf,
    shards: Vec<Option<ShardReader>>,
    sel: Vec<usize>,
    units: Vec<OpenUnit>,
    tokenizer_hash: [u8; 32],
    vocab_size: u32,
    n_tokens: u64,
    n_docs: u64,
    width: u32,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("dir", &self.dir)
            .field("shards", &self.sel.len())
            .field("units", &self.units.len())
            .finish()
    }
}

/// Hex form of a tokenizer hash as shown to users (first 12 digits).
fn short_hash(h: &[u8; 32]) -> String {
    h[..6].iter().map(|b| format!("{b:02x}")).collect()
}

impl Index {
    /// Open `dir`; errors if a shard has no current unit ([`Error::StaleIndex`]), a file is
    /// corrupt, or shards disagree on the tokenizer.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_shards_opt(dir.as_ref(), None)
    }

    /// Open only the shards numbered `shards` (positions in file name order) of `dir`: the
    /// view of one per-shard task of a distributed featurize/scan. Document ids stay global;
    /// `locate` reports shards by their position in this subset, [`Index::shard_ids`] maps
    /// them back. Queries answer for these shards alone: counts add over a partition of the
    /// shards, matching statistics take the elementwise max, locations concatenate in shard
    /// order. A unit that covers selected and unselected shards is searched whole and its
    /// results filtered (O(occurrences) extra per query): per-unit tasks
    /// ([`Index::units`]) avoid that.
    pub fn open_shards(dir: impl AsRef<Path>, shards: &[usize]) -> Result<Self> {
        Self::open_shards_opt(dir.as_ref(), Some(shards))
    }

    fn open_shards_opt(dir: &Path, sel: Option<&[usize]>) -> Result<Self> {
        let st = DirState::read(dir)?;
        let n = st.paths.len();
        let sel = select_shards(n, sel)?;
        let selected = |k: usize| sel.binary_search(&k).is_ok();
        for &k in &sel {
            if st.cover[k].is_none() {
                return Err(st.uncovered(dir, k));
            }
        }
        let (tokenizer_hash, vocab_size) =
            (st.facts[sel[0]].tokenizer_hash, st.facts[sel[0]].vocab_size);
        for &k in &sel[1..] {
            let s = &st.facts[k];
            if s.tokenizer_hash != tokenizer_hash || s.vocab_size != vocab_size {
                return Err(Error::TokenizerMismatch {
                    what: s.path.display().to_string(),
                    expected: format!("{} ({vocab_size} tokens)", short_hash(&tokenizer_hash)),
                    found: format!(
                        "{} ({} tokens)",
                        short_hash(&s.tokenizer_hash),
                        s.vocab_size
                    ),
                    fix: "keep one tokenizer per index directory".into(),
                });
            }
        }
        let mut first_doc = vec![0u64; n + 1];
        for k in 0..n {
            first_doc[k + 1] = first_doc[k] + st.facts[k].n_docs;
        }
        let sel_pos = |k: usize| sel.binary_search(&k).ok().map(|i| i as u32);
        // The chosen units touching the selection, in shard order.
        let mut use_units: Vec<&(PathBuf, SaHeader)> = st
            .chosen
            .iter()
            .map(|&i| &st.current[i])
            .filter(|(_, h)| {
                let f = h.first_shard as usize;
                (f..f + h.shards.len()).any(selected)
            })
            .collect();
        use_units.sort_by_key(|(_, h)| (h.first_shard, h.piece));
        let mut shards: Vec<Option<ShardReader>> = (0..n).map(|_| None).collect();
        for (_, h) in &use_units {
            let f = h.first_shard as usize;
            for k in f..f + h.shards.len() {
                if shards[k].is_none() {
                    shards[k] = Some(ShardReader::open(&st.paths[k])?);
                }
            }
        }
        let mut units = Vec::with_capacity(use_units.len());
        for (path, h) in use_units {
            let file = SaFile::open(path)?;
            let f = h.first_shard as usize;
            let covers = f..f + h.shards.len();
            let mut starts = Vec::with_capacity(h.n_docs as usize + 1);
            let mut slots = Vec::new();
            let mut text = Vec::new();
            let mut allowed: Vec<Range<u64>> = Vec::new();
            let mut base = 0u64;
            let mut all = true;
            for k in covers.clone() {
                let r = shards[k].as_ref().expect("opened above");
                let (tok, doc) = if h.pieces > 1 {
                    (
                        h.piece_token..h.piece_token + h.n_tokens,
                        h.piece_doc..h.piece_doc + h.n_docs,
                    )
                } else {
                    (0..r.n_tokens(), 0..r.n_docs())
                };
                let offs = r.offsets();
                slots.push(ShardSlot {
                    base_tok: base,
                    base_doc: starts.len() as u64,
                    first_doc: first_doc[k] + doc.start,
                    sel: sel_pos(k),
                });
                for d in doc.clone() {
                    starts.push(offs[d as usize] - tok.start + base);
                }
                let ptr = match r.tokens() {
                    Tokens::U16(t) => t[tok.start as usize..].as_ptr().cast::<u8>(),
                    Tokens::U32(t) => t[tok.start as usize..].as_ptr().cast::<u8>(),
                };
                let len_bytes = (tok.end - tok.start) as usize * h.token_width as usize;
                advise_random(ptr, len_bytes);
                text.push(TextSlice {
                    ptr,
                    len: (tok.end - tok.start) as usize,
                    base,
                });
                let len = tok.end - tok.start;
                if selected(k) {
                    match allowed.last_mut() {
                        Some(last) if last.end == base => last.end = base + len,
                        _ => allowed.push(base..base + len),
                    }
                } else {
                    all = false;
                }
                base += len;
            }
            starts.push(base);
            units.push(OpenUnit {
                docs: DocTable::new(starts),
                slots,
                allowed: (!all).then_some(allowed),
                text,
                width: h.token_width,
                covers,
                file,
            });
        }
        let n_tokens = sel.iter().map(|&k| st.facts[k].n_tokens).sum();
        let n_docs = sel.iter().map(|&k| st.facts[k].n_docs).sum();
        let width = sel.iter().map(|&k| st.facts[k].width).max().unwrap_or(2);
        Ok(Index {
            dir: dir.to_path_buf(),
            shards,
            sel,
            units,
            tokenizer_hash,
            vocab_size,
            n_tokens,
            n_docs,
            width,
        })
    }

    /// A query view over all units (cheap: borrows the maps; one allocation).
    pub fn corpus(&self) -> Corpus<UnitView<'_>> {
        Corpus {
            shards: self
                .units
                .iter()
                .map(|u| {
                    let h = u.file.header();
                    // SAFETY: the slices point into the shard maps owned by `self`, which
                    // outlive the returned views; they were built ascending from base 0.
                    let text = unsafe {
                        if u.width == 2 {
                            TextRef::U16(UnitText::new(&u.text))
                        } else {
                            TextRef::U32(UnitText::new(&u.text))
                        }
                    };
                    UnitView {
                        text,
                        docs: &u.docs,
                        pages: Pages::new(
                            u.file.pages(),
                            h.per_page(),
                            h.layout.page_bytes as usize,
                            h.n_tokens as usize,
                        ),
                        ptr_width: h.ptr_width,
                        samples: u.file.samples(),
                        layout: h.layout,
                        shards: &u.slots,
                        allowed: u.allowed.as_deref(),
                        max_token: if u.width == 2 {
                            u64::from(u16::MAX)
                        } else {
                            u64::from(u32::MAX)
                        },
                    }
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
        self.sel.len()
    }

    /// Position in the directory (file name order) of each opened shard, ascending.
    pub fn shard_ids(&self) -> &[usize] {
        &self.sel
    }

    /// The units searched, as the shard positions each covers (a piece of a shard covers
    /// just that shard, so pieces of one shard repeat it).
    pub fn units(&self) -> Vec<Vec<usize>> {
        self.units
            .iter()
            .map(|u| u.covers.clone().collect())
            .collect()
    }

    /// Number of units searched.
    pub fn n_units(&self) -> usize {
        self.units.len()
    }

    /// Bytes the index holds in RAM (samples and document tables), beyond the memory maps.
    pub fn ram_bytes(&self) -> u64 {
        self.units
            .iter()
            .map(|u| (u.file.samples().ram_bytes() + u.docs.ram_bytes()) as u64)
            .sum()
    }

    /// Bytes on disk of the unit files and the shard files they cover.
    pub fn disk_bytes(&self) -> u64 {
        let units: u64 = self.units.iter().map(|u| u.file.header().file_len()).sum();
        let shards: u64 = self
            .shards
            .iter()
            .flatten()
            .map(|s| std::fs::metadata(s.path()).map_or(0, |m| m.len()))
            .sum();
        units + shards
    }

    /// The unit files searched and the shard files they read.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self
            .units
            .iter()
            .map(|u| u.file.path().to_path_buf())
            .collect();
        v.extend(self.shards.iter().flatten().map(|s| s.path().to_path_buf()));
        v
    }

    /// Total tokens of the opened shards.
    pub fn n_tokens(&self) -> u64 {
        self.n_tokens
    }

    /// Total documents of the opened shards.
    pub fn n_docs(&self) -> u64 {
        self.n_docs
    }

    /// Token dtype width of the shards in bytes (2 or 4; the widest if they differ).
    pub fn token_width(&self) -> u32 {
        self.width
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
            what: "the query".into(),
            expected: format!(
                "{} (the index {})",
                short_hash(&self.tokenizer_hash),
                self.dir.display()
            ),
            found: short_hash(hash),
            fix: "tokenize queries with the tokenizer the index was built from".into(),
        })
    }

    /// End-to-end checksum verification of the opened units and the shards they cover.
    /// O(total bytes), parallel.
    pub fn verify(&self, threads: Option<usize>, ctl: &Control) -> Result<()> {
        let pool = threads::pool(threads)?;
        let shards: Vec<&ShardReader> = self.shards.iter().flatten().collect();
        pool.install(|| {
            let a: Result<()> = shards
                .par_iter()
                .with_max_len(1)
                .map(|s| {
                    ctl.check()?;
                    s.verify()?;
                    ctl.advance(1, s.n_tokens(), 0);
                    Ok(())
                })
                .collect();
            a?;
            self.units
                .par_iter()
                .with_max_len(1)
                .map(|u| {
                    ctl.check()?;
                    u.file.verify()
                })
                .collect()
        })
    }
}
