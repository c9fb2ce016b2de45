//! [`ShardSink`]: cuts a document stream into shards, publishes them atomically, keeps the
//! manifest, resumes an interrupted run and appends to a finished set; and [`plan`], which
//! turns a memory budget into shard sizes.
//!
//! **Cutting.** A shard ends right after the document that brings it to at least
//! `shard_tokens` tokens, and also just before a document that would take it past
//! `max_shard_tokens` (the most tokens whose index build fits the memory budget). Both rules
//! depend only on the documents, never on threads or batches.
//!
//! **Resume.** Every finished shard is written under a temp name, fsynced and renamed, then
//! the manifest (`complete: false`) is rewritten atomically with the shard and the number of
//! input records it consumed. Reopening with the same configuration hash verifies the listed
//! shards (data CRC), keeps the longest prefix that verifies and reports how many records to
//! skip. Temp files and shard files not in the manifest are removed.
//!
//! **Append.** With `append`, the directory must hold a finished set with the same metadata
//! (tokenizer hash, dtype, EOS, vocabulary size); otherwise one error names both sides. New
//! shards are written to `DIR/.kdmem-append/` (numbered after the set's last shard, document
//! ids continuing), with its own manifest, so an interrupted append resumes like a run and
//! the set itself is never touched: readers (`kdmem.Index`, `open_shards`) see the old set.
//! [`ShardSink::finish`] commits: it renames the staged shards into `DIR` and then rewrites
//! `DIR/shards.json` in one atomic rename, with the new shards and an `appends` entry. A
//! commit interrupted between the two steps is completed by rerunning the append (until then
//! `kdmem.Index` reports the new shards as not indexed, and `open_shards` reads the old set).
//! Rerunning a committed append, or appending the inputs the set was made from, is a no-op.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::memory;
use crate::shard::format::{self, Dtype, ShardMeta, ShardReader, ShardWriter, TMP_SUFFIX};
use crate::shard::manifest::{
    config_hash, is_shard_name, shard_name, AppendEntry, Manifest, ShardEntry, MANIFEST,
};
use crate::shard::tokenize::hex;

/// Default shard size budget in tokens (2^30), used when the memory budget allows it.
pub const DEFAULT_SHARD_TOKENS: u64 = 1 << 30;
/// Default batch size in input bytes.
pub const DEFAULT_BATCH_BYTES: usize = 4 << 20;
/// Where an append stages its shards, inside the set's directory.
pub const APPEND_DIR: &str = ".kdmem-append";
/// Estimated fixed memory of a shard writer: the process, the tokenizer, the write buffers.
pub const WRITER_FIXED_BYTES: u64 = 96 << 20;
/// Estimated memory per tokenizer thread (its word cache, `shard::bpe::CACHE_WORDS`, and
/// scratch).
pub const WRITER_THREAD_BYTES: u64 = 16 << 20;
/// Batches of text alive at once in the native pipeline (2 queued, 1 read, 1 tokenized);
/// each holds its text and about as many bytes again of token ids.
pub const IN_FLIGHT_BATCHES: u64 = 4;
/// Smallest batch the plan shrinks to.
pub const MIN_BATCH_BYTES: usize = 64 << 10;

/// Shard sizes and buffers chosen from a memory budget by [`plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardPlan {
    /// The budget in bytes.
    pub memory: u64,
    /// Close a shard once it holds at least this many tokens.
    pub shard_tokens: u64,
    /// Never let a shard grow past this many tokens (its index build must fit `memory`).
    pub max_shard_tokens: u64,
    /// Input bytes per batch of the native pipeline.
    pub batch_bytes: usize,
}

impl ShardPlan {
    /// The configuration-hash line for the memory cap. Runs add it only when `--memory` is
    /// given: with the machine's default budget the cap is far above any real document
    /// (about 10^8 tokens per GB), so leaving it out keeps a run's identity the same across
    /// machines and the same as before `--memory` existed, for resume.
    pub fn hash_part(&self) -> String {
        format!("max_shard_tokens {}", self.max_shard_tokens)
    }
}

/// Choose shard sizes for a budget of `memory` bytes (default:
/// [`memory::default_budget`]): shards whose suffix-array build fits the budget
/// ([`memory::tokens_within`]), at most `shard_tokens` when given, else at most
/// [`DEFAULT_SHARD_TOKENS`]; batches small enough that `threads` tokenizer threads and the
/// in-flight batches stay within it. O(1).
///
/// Errors: a budget below the writer's own minimum, or an explicit `shard_tokens` whose
/// index would not fit an explicit `memory` (one line with the numbers and the fix).
pub fn plan(
    memory: Option<u64>,
    shard_tokens: Option<u64>,
    dtype: Dtype,
    threads: usize,
) -> Result<ShardPlan> {
    let budget = memory.unwrap_or_else(memory::default_budget);
    let shown = memory::format_size(budget);
    if shard_tokens == Some(0) {
        return Err(Error::InvalidArgument {
            name: "shard_tokens".into(),
            value: "0".into(),
            fix: "pass a positive token budget per shard (default 2^30)".into(),
        });
    }
    let batch_bytes = ((budget / 64) as usize).clamp(MIN_BATCH_BYTES, DEFAULT_BATCH_BYTES);
    let writer = WRITER_FIXED_BYTES
        + threads as u64 * WRITER_THREAD_BYTES
        + IN_FLIGHT_BATCHES * 2 * batch_bytes as u64;
    let fit = memory::tokens_within(budget, dtype);
    if budget < writer || fit == 0 {
        let need = writer.max(memory::index_bytes(1, dtype));
        return Err(Error::InvalidArgument {
            name: "memory".into(),
            value: shown,
            fix: format!(
                "the shard writer with {threads} thread(s) needs at least {}; pass --memory {} or more (or fewer --threads)",
                memory::format_size(need),
                memory::format_size_arg(need)
            ),
        });
    }
    let shard_tokens = match shard_tokens {
        Some(n) if memory.is_some() && n > fit => {
            let need = memory::index_bytes(n, dtype);
            return Err(Error::InvalidArgument {
                name: "shard_tokens".into(),
                value: n.to_string(),
                fix: format!(
                    "indexing a {} shard of {n} tokens needs {}, more than --memory {shown}; pass --shard-tokens {fit} or less, or --memory {} or more",
                    dtype.name(),
                    memory::format_size(need),
                    memory::format_size_arg(need)
                ),
            });
        }
        Some(n) => n,
        None => DEFAULT_SHARD_TOKENS.min(fit),
    };
    Ok(ShardPlan {
        memory: budget,
        shard_tokens,
        max_shard_tokens: fit.max(shard_tokens),
        batch_bytes,
    })
}

/// Options of a [`ShardSink`].
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// Output directory (created if missing); with `append`, the set to append to.
    pub out: PathBuf,
    /// Metadata written into every shard.
    pub meta: ShardMeta,
    /// Close a shard once it holds at least this many tokens.
    pub shard_tokens: u64,
    /// Close a shard before a document that would take it past this many tokens; a single
    /// document longer than this is an error naming the memory it needs.
    pub max_shard_tokens: u64,
    /// The budget `max_shard_tokens` came from, for that error (0 = none).
    pub memory: u64,
    /// [`config_hash`] of everything that determines the output bytes.
    pub config_hash: String,
    /// Replace an existing output instead of resuming it (with `append`: drop an unfinished
    /// append of other inputs; the set itself is never replaced).
    pub overwrite: bool,
    /// Add new shards to the finished set in `out` (see the module docs).
    pub append: bool,
    /// Encoder to record in the manifest (`None` for imported token arrays).
    pub encoder: Option<String>,
}

impl SinkOptions {
    /// Options with no memory limit, no append and no encoder recorded.
    pub fn new(out: PathBuf, meta: ShardMeta, shard_tokens: u64, config_hash: String) -> Self {
        SinkOptions {
            out,
            meta,
            shard_tokens,
            max_shard_tokens: u64::MAX,
            memory: 0,
            config_hash,
            overwrite: false,
            append: false,
            encoder: None,
        }
    }
}

/// The set an append adds to (present only while appending).
#[derive(Debug)]
struct Staging {
    /// The set's directory.
    dir: PathBuf,
    /// The set's manifest as opened.
    base: Manifest,
    /// The append's own configuration hash (recorded in `appends`).
    config_hash: String,
}

/// Cuts a document stream into shards, publishes them atomically and keeps the manifest;
/// see the module docs.
///
/// Shared by the native pipeline (`shard_files`) and [`crate::shard::writer::FedWriter`].
/// Feed it records in input order: [`ShardSink::push_doc`] for a record that is a document,
/// [`ShardSink::skip_record`] for one that is not.
pub struct ShardSink {
    opts: SinkOptions,
    /// The directory shards are written to (`out`, or the staging directory of an append).
    dir: PathBuf,
    manifest: Manifest,
    base_shard: usize,
    base_doc: u64,
    staging: Option<Staging>,
    /// An append already committed: nothing to do, `manifest` is the set's.
    done: bool,
    finished: bool,
    resumed: usize,
    cur: Option<ShardWriter>,
    cur_records: u64,
    cur_bad: u64,
    cur_split: u64,
    /// The next pushed document is one tokenized in pieces ([`Self::note_split`]).
    pending_split: bool,
}

impl std::fmt::Debug for ShardSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardSink")
            .field("out", &self.opts.out)
            .field("shards", &self.manifest.shards.len())
            .field("append", &self.staging.is_some())
            .finish()
    }
}

fn listing(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
        let e = e.map_err(|e| Error::io("list", dir, e))?;
        if let Some(n) = e.file_name().to_str() {
            names.push(n.to_string());
        }
    }
    Ok(names)
}

/// Whether `path` is the shard a manifest entry describes (header and offsets checks, plus
/// the data CRC when `verify`).
fn entry_matches(path: &Path, s: &ShardEntry, meta: &ShardMeta, verify: bool) -> bool {
    ShardReader::open(path)
        .and_then(|r| if verify { r.verify().map(|_| r) } else { Ok(r) })
        .is_ok_and(|r| {
            r.data_checksum() == s.checksum
                && r.n_docs() == s.n_docs
                && r.n_tokens() == s.n_tokens
                && &r.meta() == meta
        })
}

/// One-line error unless a set's metadata `have` accepts shards of metadata `want`.
fn check_same_meta(dir: &Path, have: &ShardMeta, want: &ShardMeta) -> Result<()> {
    if have.tokenizer_hash != want.tokenizer_hash {
        return Err(Error::TokenizerMismatch {
            what: format!("the shard set in {}", dir.display()),
            expected: hex(&want.tokenizer_hash),
            found: hex(&have.tokenizer_hash),
            fix: "append documents tokenized with the set's own tokenizer, or shard them into a new --out".into(),
        });
    }
    let what = if have.dtype != want.dtype {
        format!(
            "dtype {} (this append: {})",
            have.dtype.name(),
            want.dtype.name()
        )
    } else if have.eos_id != want.eos_id {
        format!("eos id {:?} (this append: {:?})", have.eos_id, want.eos_id)
    } else if have.vocab_size != want.vocab_size {
        format!(
            "vocab size {} (this append: {})",
            have.vocab_size, want.vocab_size
        )
    } else {
        return Ok(());
    };
    Err(Error::InvalidArgument {
        name: "append".into(),
        value: dir.display().to_string(),
        fix: format!(
            "the set there has {what}; append with the set's own settings (e.g. --dtype {} --eos {}), or shard into a new --out",
            have.dtype.name(),
            have.eos_id.map_or("none".to_string(), |e| e.to_string())
        ),
    })
}

impl ShardSink {
    /// Prepare the output: for a run, remove stale temp files, then resume a matching
    /// partial run (verifying its shards), reuse a matching complete one, or fail on a
    /// different one unless `overwrite`; for an append, see the module docs.
    pub fn open(opts: SinkOptions) -> Result<Self> {
        if opts.shard_tokens == 0 {
            return Err(Error::InvalidArgument {
                name: "shard_tokens".into(),
                value: "0".into(),
                fix: "pass a positive token budget per shard (default 2^30)".into(),
            });
        }
        if opts.append {
            return Self::open_append(opts);
        }
        let dir = opts.out.clone();
        Self::open_dir(opts, dir, 0, 0)
    }

    fn open_dir(opts: SinkOptions, dir: PathBuf, base_shard: usize, base_doc: u64) -> Result<Self> {
        fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        for n in listing(&dir)? {
            // Temps of an interrupted run (`NAME.tmp-PID`, or `NAME.tmp` from older kdmem):
            // the caller holds the directory, so none belongs to a live writer.
            let is_tmp = n.ends_with(TMP_SUFFIX) || n.contains(&format!("{TMP_SUFFIX}-"));
            if is_tmp && (n.starts_with("shard-") || n.starts_with(MANIFEST)) {
                let _ = fs::remove_file(dir.join(&n));
            }
        }
        let mpath = dir.join(MANIFEST);
        let mut manifest = Manifest::new(
            opts.meta.clone(),
            opts.config_hash.clone(),
            opts.encoder.clone(),
        );
        if mpath.exists() && !opts.overwrite {
            let old = Manifest::read(&mpath)?;
            if old.config_hash != opts.config_hash || old.meta != opts.meta {
                return Err(Error::InvalidArgument {
                    name: "out".into(),
                    value: dir.display().to_string(),
                    fix: if base_shard > 0 || opts.append {
                        "it holds an unfinished append of other inputs or options; rerun that append to finish it, or pass --overwrite to drop it (the shard set itself is kept)".into()
                    } else {
                        "it holds shards made with a different configuration (inputs, tokenizer, dtype, eos, text field, --skip-bad, --shard-tokens or --memory); pass a new --out, or --overwrite to replace them, or --append to add these inputs as new shards".into()
                    },
                });
            }
            manifest.complete = old.complete;
            manifest.encoder = old.encoder;
            manifest.appends = old.appends;
            // Keep the longest prefix of listed shards that verifies; redo the rest.
            for s in old.shards {
                if !entry_matches(&dir.join(&s.name), &s, &opts.meta, true) {
                    manifest.complete = false;
                    break;
                }
                manifest.shards.push(s);
            }
            if !manifest.complete {
                manifest.note_encoder(opts.encoder.as_deref());
            }
        } else if mpath.exists() {
            fs::remove_file(&mpath).map_err(|e| Error::io("remove", &mpath, e))?;
        }
        // Shard files not (or no longer) listed are leftovers: remove them.
        let keep: std::collections::HashSet<&str> =
            manifest.shards.iter().map(|s| s.name.as_str()).collect();
        for n in listing(&dir)? {
            if is_shard_name(&n) && !keep.contains(n.as_str()) {
                let p = dir.join(&n);
                fs::remove_file(&p).map_err(|e| Error::io("remove", &p, e))?;
            }
        }
        let resumed = manifest.shards.len();
        Ok(ShardSink {
            opts,
            dir,
            manifest,
            base_shard,
            base_doc,
            staging: None,
            done: false,
            finished: false,
            resumed,
            cur: None,
            cur_records: 0,
            cur_bad: 0,
            cur_split: 0,
            pending_split: false,
        })
    }

    fn open_append(opts: SinkOptions) -> Result<Self> {
        let dir = opts.out.clone();
        let mpath = dir.join(MANIFEST);
        if !mpath.exists() {
            return Err(Error::InvalidArgument {
                name: "out".into(),
                value: dir.display().to_string(),
                fix: "it holds no shard set to append to (no shards.json); run kdmem shard without --append first".into(),
            });
        }
        let base = Manifest::read(&mpath)?;
        if !base.complete {
            return Err(Error::InvalidArgument {
                name: "out".into(),
                value: dir.display().to_string(),
                fix: "its shard set is unfinished; rerun the command that wrote it (without --append) to finish it, then append".into(),
            });
        }
        check_same_meta(&dir, &base.meta, &opts.meta)?;
        let (base_shard, base_doc) = (base.shards.len(), base.n_docs());
        if base.config_hash == opts.config_hash
            || base
                .appends
                .iter()
                .any(|a| a.config_hash == opts.config_hash)
        {
            return Ok(ShardSink {
                dir: dir.clone(),
                opts,
                resumed: 0,
                manifest: base,
                base_shard,
                base_doc,
                staging: None,
                done: true,
                finished: false,
                cur: None,
                cur_records: 0,
                cur_bad: 0,
                cur_split: 0,
                pending_split: false,
            });
        }
        let staging_dir = dir.join(APPEND_DIR);
        let own_hash = opts.config_hash.clone();
        let mut staged = opts.clone();
        staged.append = false;
        staged.config_hash = config_hash(&[
            format!("append {own_hash}"),
            format!("to {} {base_shard} {base_doc}", base.config_hash),
        ]);
        // A commit interrupted after the manifest of the staged shards was finished: the
        // shards may already be partly moved, so skip verification and finish the commit.
        let staged_manifest = staging_dir.join(MANIFEST);
        let committing = staged_manifest.exists()
            && Manifest::read(&staged_manifest)
                .is_ok_and(|m| m.complete && m.config_hash == staged.config_hash);
        let mut sink = if committing {
            let m = Manifest::read(&staged_manifest)?;
            ShardSink {
                dir: staging_dir,
                resumed: m.shards.len(),
                manifest: m,
                opts: staged,
                base_shard,
                base_doc,
                staging: None,
                done: false,
                finished: false,
                cur: None,
                cur_records: 0,
                cur_bad: 0,
                cur_split: 0,
                pending_split: false,
            }
        } else {
            Self::open_dir(staged, staging_dir, base_shard, base_doc)?
        };
        sink.staging = Some(Staging {
            dir,
            base,
            config_hash: own_hash,
        });
        Ok(sink)
    }

    /// Whether there is nothing to feed: a previous run finished this exact output, or this
    /// append is already committed (call [`ShardSink::finish`] to get the manifest).
    pub fn is_complete(&self) -> bool {
        self.done || self.manifest.complete
    }

    /// Input records already consumed by the verified shards (skip them).
    pub fn records_to_skip(&self) -> u64 {
        if self.done {
            0
        } else {
            self.manifest.records_consumed()
        }
    }

    /// Shards kept from a previous run (of this append, when appending).
    pub fn resumed_shards(&self) -> usize {
        self.resumed
    }

    /// The shared metadata.
    pub fn meta(&self) -> &ShardMeta {
        &self.opts.meta
    }

    /// Documents written so far (finished shards plus the open one; an append counts only
    /// its own).
    pub fn n_docs(&self) -> u64 {
        if self.done {
            return 0;
        }
        self.manifest.n_docs() + self.cur.as_ref().map_or(0, |c| c.n_docs())
    }

    fn check_open(&self) -> Result<()> {
        if self.finished {
            return Err(Error::InvalidArgument {
                name: "writer".into(),
                value: self.opts.out.display().to_string(),
                fix: "this shard writer is finished; open a new one to write more".into(),
            });
        }
        Ok(())
    }

    /// Count a record that yields no document (`bad`: skipped by `--skip-bad`).
    pub fn skip_record(&mut self, bad: bool) -> Result<()> {
        self.check_open()?;
        self.cur_records += 1;
        self.cur_bad += bad as u64;
        Ok(())
    }

    /// Count the next document as one tokenized in pieces (`--max-doc-bytes`); call before
    /// its [`Self::push_doc`], so the count lands in the shard that holds it.
    pub fn note_split(&mut self) {
        self.pending_split = true;
    }

    /// Append one document of `n` tokens (one record) given in parts, in order (see
    /// [`ShardWriter::push_doc_parts`]): a document too long to hold its ids at once. `n`
    /// must be the total the parts give (it decides the shard cut before writing).
    pub fn push_doc_parts(
        &mut self,
        n: u64,
        path: &str,
        line: u64,
        parts: impl FnOnce(&mut dyn FnMut(&[u32]) -> Result<()>) -> Result<()>,
    ) -> Result<()> {
        self.check_fits(n, || format!("{path}:{line}"))?;
        let context = format!("{path}:{line}");
        self.push_with(n, |w| {
            let got = w.push_doc_parts(&context, parts)?;
            if got != n {
                return Err(Error::InvalidArgument {
                    name: "document".into(),
                    value: context.clone(),
                    fix: format!(
                        "its parts gave {got} tokens, not the {n} counted first; the tokenizer is not deterministic"
                    ),
                });
            }
            Ok(())
        })
    }

    /// Append one document (one record); `path`/`line` name it in errors. O(len).
    pub fn push_doc(&mut self, ids: &[u32], path: &str, line: u64) -> Result<()> {
        self.check_fits(ids.len() as u64, || format!("{path}:{line}"))?;
        // The record's name is formatted only on error: this runs once per document.
        self.push_with(ids.len() as u64, |w| w.push_doc(ids, ""))
            .map_err(|e| match e {
                Error::TokenOutOfRange {
                    token, max, fix, ..
                } => Error::TokenOutOfRange {
                    token,
                    max,
                    context: format!("a u16 shard ({path}:{line})"),
                    fix,
                },
                e => e,
            })
    }

    /// Append one document given as little-endian bytes of the shard dtype (one record);
    /// `name` names it in errors.
    pub fn push_doc_bytes(&mut self, bytes: &[u8], name: &dyn Fn() -> String) -> Result<()> {
        let n = (bytes.len() / self.opts.meta.dtype.width() as usize) as u64;
        self.check_fits(n, name)?;
        self.push_with(n, |w| w.push_doc_bytes(bytes))
    }

    fn check_fits(&self, n: u64, name: impl FnOnce() -> String) -> Result<()> {
        self.check_open()?;
        if self.done {
            return Err(Error::InvalidArgument {
                name: "append".into(),
                value: self.opts.out.display().to_string(),
                fix: "these inputs are already in the shard set; nothing to add".into(),
            });
        }
        if n > self.opts.max_shard_tokens {
            let need = memory::index_bytes(n, self.opts.meta.dtype);
            return Err(Error::InvalidArgument {
                name: "memory".into(),
                value: memory::format_size(self.opts.memory),
                fix: format!(
                    "document {} has {n} tokens and indexing a shard that holds it needs at least {}; pass --memory {} or more",
                    name(),
                    memory::format_size(need),
                    memory::format_size_arg(need)
                ),
            });
        }
        Ok(())
    }

    fn push_with(&mut self, n: u64, f: impl FnOnce(&mut ShardWriter) -> Result<()>) -> Result<()> {
        if let Some(w) = &self.cur {
            if w.n_tokens() > 0 && w.n_tokens() + n > self.opts.max_shard_tokens {
                self.close_shard()?;
            }
        }
        if self.cur.is_none() {
            let name = shard_name(self.base_shard + self.manifest.shards.len());
            self.cur = Some(ShardWriter::create(
                self.dir.join(name),
                self.opts.meta.clone(),
            )?);
        }
        let w = self.cur.as_mut().expect("opened above");
        f(w)?;
        self.cur_records += 1;
        // Counted in the shard that holds the document (it may close right below).
        self.cur_split += std::mem::take(&mut self.pending_split) as u64;
        if w.n_tokens() >= self.opts.shard_tokens {
            self.close_shard()?;
        }
        Ok(())
    }

    fn close_shard(&mut self) -> Result<()> {
        let w = self.cur.take().expect("close_shard needs an open shard");
        let first_doc = self.base_doc + self.manifest.n_docs();
        let s = w.finish()?;
        self.manifest.shards.push(ShardEntry {
            name: shard_name(self.base_shard + self.manifest.shards.len()),
            n_docs: s.n_docs,
            n_tokens: s.n_tokens,
            checksum: s.checksum,
            first_doc,
            records_consumed: self.cur_records,
            skipped_bad: self.cur_bad,
            long_docs_split: self.cur_split,
        });
        self.cur_records = 0;
        self.cur_bad = 0;
        self.cur_split = 0;
        self.manifest.write(&self.dir)
    }

    /// Close the last shard and write the final manifest (`complete: true`); when appending,
    /// commit the new shards to the set and return the set's manifest. Call once.
    ///
    /// Errors with `Error::EmptyCorpus` (naming `inputs`) if no document was written.
    pub fn finish(&mut self, inputs: &str) -> Result<Manifest> {
        self.check_open()?;
        self.finished = true;
        if self.done {
            return Ok(self.manifest.clone());
        }
        if !self.manifest.complete {
            if self.cur.is_some() {
                self.close_shard()?;
            } else if let Some(last) = self.manifest.shards.last_mut() {
                last.records_consumed += self.cur_records;
                last.skipped_bad += self.cur_bad;
                last.long_docs_split += self.cur_split;
            }
            if self.manifest.shards.is_empty() {
                return Err(Error::EmptyCorpus {
                    inputs: inputs.to_string(),
                });
            }
            self.manifest.complete = true;
            self.manifest.write(&self.dir)?;
        }
        match self.staging.take() {
            None => Ok(self.manifest.clone()),
            Some(st) => self.commit(st),
        }
    }

    /// Move the staged shards into the set, then publish the set's new manifest.
    fn commit(&mut self, st: Staging) -> Result<Manifest> {
        for (i, s) in self.manifest.shards.iter().enumerate() {
            #[cfg(test)]
            if tests::COMMIT_FAULT.with(|f| f.get()) == Some(i) {
                return Err(Error::Cancelled);
            }
            let _ = i;
            let (src, dst) = (self.dir.join(&s.name), st.dir.join(&s.name));
            if src.exists() {
                fs::rename(&src, &dst).map_err(|e| Error::io("rename", &src, e))?;
            } else if !entry_matches(&dst, s, &self.opts.meta, false) {
                return Err(Error::Corrupt {
                    path: src,
                    reason: format!(
                        "a staged shard of an interrupted append is missing; delete {} and rerun the append",
                        self.dir.display()
                    ),
                });
            }
        }
        format::sync_parent(&st.dir.join(MANIFEST));
        let mut m = st.base;
        m.appends.push(AppendEntry {
            config_hash: st.config_hash,
            first_shard: self.base_shard,
            n_shards: self.manifest.shards.len(),
        });
        m.shards.extend(self.manifest.shards.iter().cloned());
        m.note_encoder(self.opts.encoder.as_deref());
        crate::shard::manifest::write_atomic(&st.dir.join(MANIFEST), m.to_json().as_bytes())?;
        fs::remove_dir_all(&self.dir).map_err(|e| Error::io("remove", &self.dir, e))?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests;
