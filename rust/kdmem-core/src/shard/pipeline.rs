//! The streaming, parallel, deterministic and resumable sharding pipeline.
//!
//! ```text
//! reader thread ──(bounded channel, 2 batches of ~batch_bytes)──> main thread
//!   decompress, split lines                                       rayon: parse + tokenize
//!                                                                 (order-preserving collect)
//!                                                                 ShardSink: cut, write, publish
//! ```
//!
//! **Determinism.** Documents keep input order; a shard is closed right after the document
//! that brings it to at least `shard_tokens` tokens. Neither depends on `--threads` or batch
//! boundaries, so output is byte-identical for any thread count and across reruns.
//!
//! **Memory.** Bounded by the in-flight batches, not the corpus: at most 4 batches are alive
//! (2 queued, 1 being read, 1 being tokenized), each `batch_bytes` of text (default 4 MiB)
//! plus its token ids (4 bytes per token), and the writers' two 1 MiB buffers: about
//! 4 x (4 MiB + 4 MiB) + 2 MiB ≈ 34 MiB, plus the tokenizer itself. Measured
//! (`benches/bench_shard.py`, 32k BPE, 2 threads, whole `python` process): peak RSS 103 MB on
//! a 16.8 MB corpus (1x the in-flight text) and 114 MB on 168 MB (10x).
//!
//! **Threads.** `--threads` rayon workers parse and tokenize; one extra thread reads and
//! decompresses; the calling thread writes.
//!
//! **Resume.** Every finished shard is written under a temp name, fsynced and renamed, then
//! the manifest (`shards.json`, `complete: false`) is rewritten atomically with the shard and
//! the number of input records it consumed. A rerun with the same configuration (same
//! [`config_hash`]) verifies the listed shards (data CRC), skips their records without
//! tokenizing them and continues; the final output is byte-identical to an uninterrupted
//! run. Temp files of an interrupted run and shard files not yet in the manifest are removed.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use rayon::prelude::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::control::Control;
use crate::error::{Error, Result};
use crate::shard::format::{self, Dtype, ShardMeta, ShardReader, ShardWriter, TMP_SUFFIX};
use crate::shard::input::{self, LineReader, Parsed};
use crate::shard::tokenize::{hex, DtypeChoice, EosChoice, ShardTokenizer};
use crate::threads;

/// Manifest file name inside the output directory.
pub const MANIFEST: &str = "shards.json";
/// Default shard size budget in tokens (2^30).
pub const DEFAULT_SHARD_TOKENS: u64 = 1 << 30;
/// Default batch size in input bytes.
pub const DEFAULT_BATCH_BYTES: usize = 4 << 20;

/// Name of shard `k`.
pub fn shard_name(k: usize) -> String {
    format!("shard-{k:05}.kdt")
}

fn is_shard_name(name: &str) -> bool {
    name.len() == 15
        && name.starts_with("shard-")
        && name.ends_with(".kdt")
        && name[6..11].bytes().all(|b| b.is_ascii_digit())
}

/// SHA-256 (hex) of the configuration lines that determine the output bytes.
pub fn config_hash(parts: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(b"kdmem-shards v1\n");
    for p in parts {
        h.update(p.as_bytes());
        h.update(b"\n");
    }
    hex(&h.finalize())
}

/// One finished shard as listed in the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardEntry {
    /// File name inside the directory.
    pub name: String,
    /// Documents.
    pub n_docs: u64,
    /// Tokens.
    pub n_tokens: u64,
    /// Data CRC-32.
    pub checksum: u32,
    /// Global id of its first document.
    pub first_doc: u64,
    /// Input records consumed up to and including this shard's last document.
    pub records_consumed: u64,
    /// Records skipped as bad (`--skip-bad`) among those.
    pub skipped_bad: u64,
}

/// The `shards.json` manifest (see `docs/formats.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Shared shard metadata.
    pub meta: ShardMeta,
    /// Whether the run finished.
    pub complete: bool,
    /// [`config_hash`] of the run.
    pub config_hash: String,
    /// Finished shards in order.
    pub shards: Vec<ShardEntry>,
}

impl Manifest {
    /// Total documents.
    pub fn n_docs(&self) -> u64 {
        self.shards.iter().map(|s| s.n_docs).sum()
    }
    /// Total tokens.
    pub fn n_tokens(&self) -> u64 {
        self.shards.iter().map(|s| s.n_tokens).sum()
    }
    /// Total bad records skipped.
    pub fn skipped_bad(&self) -> u64 {
        self.shards.iter().map(|s| s.skipped_bad).sum()
    }
    /// Total input records consumed.
    pub fn records_consumed(&self) -> u64 {
        self.shards.iter().map(|s| s.records_consumed).sum()
    }

    /// The manifest as JSON text (keys in a fixed order, so it is byte-stable).
    pub fn to_json(&self) -> String {
        let shards: Vec<Value> = self
            .shards
            .iter()
            .map(|s| {
                json!({"name": s.name, "n_docs": s.n_docs, "n_tokens": s.n_tokens,
                       "checksum": s.checksum, "first_doc": s.first_doc,
                       "records_consumed": s.records_consumed, "skipped_bad": s.skipped_bad})
            })
            .collect();
        let v = json!({
            "format": "kdmem-shards", "version": format::VERSION, "dtype": self.meta.dtype.name(),
            "tokenizer_hash": hex(&self.meta.tokenizer_hash), "vocab_size": self.meta.vocab_size,
            "eos_id": self.meta.eos_id, "n_docs": self.n_docs(), "n_tokens": self.n_tokens(),
            "skipped_bad": self.skipped_bad(), "complete": self.complete,
            "config_hash": self.config_hash, "shards": shards,
        });
        serde_json::to_string_pretty(&v).expect("JSON values always serialise") + "\n"
    }

    /// Parse `shards.json`; errors name the file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
        let corrupt = |reason: &str| Error::Corrupt {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let v: Value =
            serde_json::from_str(&text).map_err(|e| corrupt(&format!("invalid JSON ({e})")))?;
        if v["format"] != "kdmem-shards" {
            return Err(corrupt("not a kdmem shard manifest"));
        }
        let version = v["version"].as_u64().unwrap_or(0) as u32;
        if version != format::VERSION {
            return Err(Error::FormatVersion {
                path: path.to_path_buf(),
                found: version,
                supported: format::VERSION,
            });
        }
        let dtype = match v["dtype"].as_str() {
            Some("u16") => Dtype::U16,
            Some("u32") => Dtype::U32,
            _ => return Err(corrupt("bad dtype")),
        };
        let th = v["tokenizer_hash"].as_str().unwrap_or("");
        let mut tokenizer_hash = [0u8; 32];
        if th.len() != 64 {
            return Err(corrupt("bad tokenizer_hash"));
        }
        for (i, b) in tokenizer_hash.iter_mut().enumerate() {
            *b = u8::from_str_radix(&th[2 * i..2 * i + 2], 16)
                .map_err(|_| corrupt("bad tokenizer_hash"))?;
        }
        let u = |x: &Value, k: &str| x[k].as_u64().ok_or_else(|| corrupt(&format!("bad {k}")));
        let mut shards = Vec::new();
        for s in v["shards"]
            .as_array()
            .ok_or_else(|| corrupt("no shards list"))?
        {
            shards.push(ShardEntry {
                name: s["name"]
                    .as_str()
                    .filter(|n| is_shard_name(n))
                    .ok_or_else(|| corrupt("bad shard name"))?
                    .to_string(),
                n_docs: u(s, "n_docs")?,
                n_tokens: u(s, "n_tokens")?,
                checksum: u(s, "checksum")? as u32,
                first_doc: u(s, "first_doc")?,
                records_consumed: u(s, "records_consumed")?,
                skipped_bad: s["skipped_bad"].as_u64().unwrap_or(0),
            });
        }
        Ok(Manifest {
            meta: ShardMeta {
                dtype,
                vocab_size: u(&v, "vocab_size")? as u32,
                eos_id: v["eos_id"].as_u64().map(|e| e as u32),
                tokenizer_hash,
            },
            complete: v["complete"].as_bool().unwrap_or(false),
            config_hash: v["config_hash"].as_str().unwrap_or("").to_string(),
            shards,
        })
    }

    /// Write atomically (temp file, fsync, rename).
    pub fn write(&self, dir: &Path) -> Result<()> {
        write_atomic(&dir.join(MANIFEST), self.to_json().as_bytes())
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = PathBuf::from(format!("{}{TMP_SUFFIX}", path.display()));
    let res = (|| {
        let mut f = fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        f.write_all(bytes)
            .map_err(|e| Error::io("write", &tmp, e))?;
        f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| Error::io("rename", &tmp, e))
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    format::sync_parent(path);
    res
}

/// Options of a [`ShardSink`].
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// Output directory (created if missing).
    pub out: PathBuf,
    /// Metadata written into every shard.
    pub meta: ShardMeta,
    /// Close a shard once it holds at least this many tokens.
    pub shard_tokens: u64,
    /// [`config_hash`] of everything that determines the output bytes.
    pub config_hash: String,
    /// Replace an existing output instead of resuming it.
    pub overwrite: bool,
}

/// Cuts a document stream into shards, publishes them atomically and keeps the manifest.
///
/// Shared by the native pipeline ([`shard_files`]) and the Python-fed writer
/// (`kdmem._core.ShardWriter`). Feed it records in input order: [`ShardSink::push_doc`] for a
/// record that is a document, [`ShardSink::skip_record`] for one that is not.
pub struct ShardSink {
    opts: SinkOptions,
    manifest: Manifest,
    resumed: usize,
    cur: Option<ShardWriter>,
    cur_records: u64,
    cur_bad: u64,
}

impl std::fmt::Debug for ShardSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardSink")
            .field("out", &self.opts.out)
            .field("shards", &self.manifest.shards.len())
            .finish()
    }
}

impl ShardSink {
    /// Prepare `opts.out`: remove stale temp files, then resume a matching partial run
    /// (verifying its shards), reuse a matching complete one, or fail on a different one
    /// unless `overwrite`.
    pub fn open(opts: SinkOptions) -> Result<Self> {
        if opts.shard_tokens == 0 {
            return Err(Error::InvalidArgument {
                name: "shard_tokens".into(),
                value: "0".into(),
                fix: "pass a positive token budget per shard (default 2^30)".into(),
            });
        }
        let out = opts.out.clone();
        fs::create_dir_all(&out).map_err(|e| Error::io("create", &out, e))?;
        let listing = |out: &Path| -> Result<Vec<String>> {
            let mut names = Vec::new();
            for e in fs::read_dir(out).map_err(|e| Error::io("list", out, e))? {
                let e = e.map_err(|e| Error::io("list", out, e))?;
                if let Some(n) = e.file_name().to_str() {
                    names.push(n.to_string());
                }
            }
            Ok(names)
        };
        for n in listing(&out)? {
            if n.ends_with(TMP_SUFFIX) && (n.starts_with("shard-") || n.starts_with(MANIFEST)) {
                let _ = fs::remove_file(out.join(&n));
            }
        }
        let mpath = out.join(MANIFEST);
        let mut manifest = Manifest {
            meta: opts.meta.clone(),
            complete: false,
            config_hash: opts.config_hash.clone(),
            shards: Vec::new(),
        };
        if mpath.exists() && !opts.overwrite {
            let old = Manifest::read(&mpath)?;
            if old.config_hash != opts.config_hash || old.meta != opts.meta {
                return Err(Error::InvalidArgument {
                    name: "out".into(),
                    value: out.display().to_string(),
                    fix: "it holds shards made with a different configuration (inputs, tokenizer, dtype, eos, text field, --skip-bad or --shard-tokens); pass a new --out, or --overwrite to replace them".into(),
                });
            }
            manifest.complete = old.complete;
            // Keep the longest prefix of listed shards that verifies; redo the rest.
            for s in old.shards {
                let ok = ShardReader::open(out.join(&s.name))
                    .and_then(|r| r.verify().map(|_| r))
                    .is_ok_and(|r| {
                        r.data_checksum() == s.checksum
                            && r.n_docs() == s.n_docs
                            && r.n_tokens() == s.n_tokens
                            && r.meta() == opts.meta
                    });
                if !ok {
                    manifest.complete = false;
                    break;
                }
                manifest.shards.push(s);
            }
        } else if mpath.exists() {
            fs::remove_file(&mpath).map_err(|e| Error::io("remove", &mpath, e))?;
        }
        // Shard files not (or no longer) listed are leftovers: remove them.
        let keep: std::collections::HashSet<&str> =
            manifest.shards.iter().map(|s| s.name.as_str()).collect();
        for n in listing(&out)? {
            if is_shard_name(&n) && !keep.contains(n.as_str()) {
                let p = out.join(&n);
                fs::remove_file(&p).map_err(|e| Error::io("remove", &p, e))?;
            }
        }
        let resumed = manifest.shards.len();
        Ok(ShardSink {
            opts,
            manifest,
            resumed,
            cur: None,
            cur_records: 0,
            cur_bad: 0,
        })
    }

    /// Whether a previous run already finished this exact output.
    pub fn is_complete(&self) -> bool {
        self.manifest.complete
    }

    /// Input records already consumed by the verified shards (skip them).
    pub fn records_to_skip(&self) -> u64 {
        self.manifest.records_consumed()
    }

    /// Shards kept from a previous run.
    pub fn resumed_shards(&self) -> usize {
        self.resumed
    }

    /// The shared metadata.
    pub fn meta(&self) -> &ShardMeta {
        &self.opts.meta
    }

    /// Documents written so far (finished shards plus the open one).
    pub fn n_docs(&self) -> u64 {
        self.manifest.n_docs() + self.cur.as_ref().map_or(0, |c| c.n_docs())
    }

    /// Count a record that yields no document (`bad`: skipped by `--skip-bad`).
    pub fn skip_record(&mut self, bad: bool) {
        self.cur_records += 1;
        self.cur_bad += bad as u64;
    }

    /// Append one document (one record); `path`/`line` name it in errors.
    pub fn push_doc(&mut self, ids: &[u32], path: &str, line: u64) -> Result<()> {
        // The record's name is formatted only on error: this runs once per document.
        self.push_with(|w| w.push_doc(ids, ""))
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

    /// Append one document given as little-endian bytes of the shard dtype (one record).
    pub fn push_doc_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.push_with(|w| w.push_doc_bytes(bytes))
    }

    fn push_with(&mut self, f: impl FnOnce(&mut ShardWriter) -> Result<()>) -> Result<()> {
        if self.cur.is_none() {
            let name = shard_name(self.manifest.shards.len());
            self.cur = Some(ShardWriter::create(
                self.opts.out.join(name),
                self.opts.meta.clone(),
            )?);
        }
        let w = self.cur.as_mut().expect("opened above");
        f(w)?;
        self.cur_records += 1;
        if w.n_tokens() >= self.opts.shard_tokens {
            self.close_shard()?;
        }
        Ok(())
    }

    fn close_shard(&mut self) -> Result<()> {
        let w = self.cur.take().expect("close_shard needs an open shard");
        let first_doc = self.manifest.n_docs();
        let s = w.finish()?;
        self.manifest.shards.push(ShardEntry {
            name: shard_name(self.manifest.shards.len()),
            n_docs: s.n_docs,
            n_tokens: s.n_tokens,
            checksum: s.checksum,
            first_doc,
            records_consumed: self.cur_records,
            skipped_bad: self.cur_bad,
        });
        self.cur_records = 0;
        self.cur_bad = 0;
        self.manifest.write(&self.opts.out)
    }

    /// Close the last shard and write the final manifest (`complete: true`).
    ///
    /// Errors with [`Error::EmptyCorpus`] (naming `inputs`) if no document was written.
    pub fn finish(mut self, inputs: &str) -> Result<Manifest> {
        if self.manifest.complete {
            return Ok(self.manifest);
        }
        if self.cur.is_some() {
            self.close_shard()?;
        } else if let Some(last) = self.manifest.shards.last_mut() {
            last.records_consumed += self.cur_records;
            last.skipped_bad += self.cur_bad;
        }
        if self.manifest.shards.is_empty() {
            return Err(Error::EmptyCorpus {
                inputs: inputs.to_string(),
            });
        }
        self.manifest.complete = true;
        self.manifest.write(&self.opts.out)?;
        Ok(self.manifest)
    }
}

/// Configuration of [`shard_files`] (the `kdmem shard` options).
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// Input files (see [`input`] for the formats), read in this order.
    pub inputs: Vec<PathBuf>,
    /// `tokenizer.json` or a directory holding one.
    pub tokenizer: PathBuf,
    /// Output directory.
    pub out: PathBuf,
    /// Worker threads (see [`threads::resolve`]); never changes the output.
    pub threads: Option<usize>,
    /// Token width.
    pub dtype: DtypeChoice,
    /// JSON field holding the text.
    pub text_field: String,
    /// EOS rule.
    pub eos: EosChoice,
    /// Count and skip malformed / non-UTF-8 records instead of failing.
    pub skip_bad: bool,
    /// Shard size budget in tokens.
    pub shard_tokens: u64,
    /// Replace an existing output.
    pub overwrite: bool,
    /// Input bytes per batch (memory knob; never changes the output).
    pub batch_bytes: usize,
}

impl ShardConfig {
    /// Defaults for everything but inputs, tokenizer and output.
    pub fn new(inputs: Vec<PathBuf>, tokenizer: PathBuf, out: PathBuf) -> Self {
        ShardConfig {
            inputs,
            tokenizer,
            out,
            threads: None,
            dtype: DtypeChoice::Auto,
            text_field: "text".into(),
            eos: EosChoice::Auto,
            skip_bad: false,
            shard_tokens: DEFAULT_SHARD_TOKENS,
            overwrite: false,
            batch_bytes: DEFAULT_BATCH_BYTES,
        }
    }
}

/// What a [`shard_files`] run did.
#[derive(Debug, Clone)]
pub struct ShardReport {
    /// The final manifest.
    pub manifest: Manifest,
    /// Shards reused from a previous run.
    pub resumed_shards: usize,
}

/// Shard `cfg.inputs` into `cfg.out`; see the module docs. Checks `ctl` between batches and
/// advances its counters (documents, tokens, on-disk input bytes; `total_bytes` = input size).
pub fn shard_files(cfg: &ShardConfig, ctl: &Control) -> Result<ShardReport> {
    if cfg.inputs.is_empty() {
        return Err(Error::EmptyCorpus {
            inputs: "no input paths".into(),
        });
    }
    let tok = ShardTokenizer::load(&cfg.tokenizer, &cfg.eos)?;
    let dtype = cfg.dtype.resolve(tok.vocab_size);
    let meta = ShardMeta {
        dtype,
        vocab_size: tok.vocab_size,
        eos_id: tok.eos_id,
        tokenizer_hash: tok.hash,
    };
    let mut parts = vec![
        format!("tokenizer {}", hex(&tok.hash)),
        format!("dtype {}", dtype.name()),
        format!("eos {:?}", tok.eos_id),
        format!("text_field {:?}", cfg.text_field),
        format!("skip_bad {}", cfg.skip_bad),
        format!("shard_tokens {}", cfg.shard_tokens),
    ];
    let mut total = 0u64;
    for p in &cfg.inputs {
        let md = fs::metadata(p).map_err(|e| Error::io("read", p, e))?;
        input::classify(p).ok_or_else(|| Error::InvalidArgument {
            name: "input".into(),
            value: p.display().to_string(),
            fix: "natively read inputs end in .jsonl, .json, .ndjson or .txt (optionally .gz or .zst); use kdmem.corpus.shard_corpus for .parquet and datasets".into(),
        })?;
        let abs = fs::canonicalize(p).map_err(|e| Error::io("read", p, e))?;
        parts.push(format!("input {} {}", abs.display(), md.len()));
        total += md.len();
    }
    ctl.total_bytes.store(total, Ordering::Relaxed);
    let mut sink = ShardSink::open(SinkOptions {
        out: cfg.out.clone(),
        meta,
        shard_tokens: cfg.shard_tokens,
        config_hash: config_hash(&parts),
        overwrite: cfg.overwrite,
    })?;
    let inputs_desc = describe_inputs(&cfg.inputs);
    if sink.is_complete() {
        let resumed = sink.resumed_shards();
        let m = sink.finish(&inputs_desc)?;
        ctl.advance(m.n_docs(), m.n_tokens(), total);
        return Ok(ShardReport {
            manifest: m,
            resumed_shards: resumed,
        });
    }
    let resumed = sink.resumed_shards();
    let skip = sink.records_to_skip();
    ctl.advance(sink.n_docs(), 0, 0);
    let pool = threads::pool(cfg.threads)?;
    let names: Vec<String> = cfg.inputs.iter().map(|p| p.display().to_string()).collect();
    let formats: Vec<input::Format> = cfg
        .inputs
        .iter()
        .map(|p| input::classify(p).expect("checked above").0)
        .collect();
    let mut reader = LineReader::new(&cfg.inputs, Arc::new(AtomicU64::new(0)))?;
    let batch_bytes = cfg.batch_bytes.max(1);
    let max_records = 1 << 16;

    std::thread::scope(|s| -> Result<()> {
        let (tx, rx) = mpsc::sync_channel::<Result<input::Batch>>(2);
        s.spawn(move || {
            if let Err(e) = reader.skip(skip) {
                let _ = tx.send(Err(e));
                return;
            }
            loop {
                if ctl.is_cancelled() {
                    return;
                }
                let b = reader.next_batch(batch_bytes, max_records);
                let end = matches!(&b, Ok(b) if b.records.is_empty());
                if tx.send(b).is_err() || end {
                    return;
                }
            }
        });
        let tok = &tok;
        for batch in rx.iter() {
            ctl.check()?;
            let batch = batch?;
            if batch.records.is_empty() {
                break;
            }
            // Parse and tokenize in parallel; collect keeps input order.
            let out: Vec<Result<Option<Vec<u32>>>> = pool.install(|| {
                (0..batch.records.len())
                    .into_par_iter()
                    .with_min_len(8)
                    .map(|i| {
                        let r = batch.records[i];
                        let path = &names[r.file as usize];
                        match input::parse_record(
                            batch.bytes(i),
                            formats[r.file as usize],
                            &cfg.text_field,
                            path,
                            r.line,
                        )? {
                            Parsed::Blank => Ok(None),
                            Parsed::Doc(text) => {
                                let mut ids = Vec::with_capacity(text.len() / 3 + 1);
                                tok.encode_into(&text, &mut ids, path, r.line)?;
                                Ok(Some(ids))
                            }
                        }
                    })
                    .collect()
            });
            let (mut docs, mut toks) = (0u64, 0u64);
            for (i, o) in out.into_iter().enumerate() {
                let r = batch.records[i];
                match o {
                    Ok(Some(ids)) => {
                        sink.push_doc(&ids, &names[r.file as usize], r.line)?;
                        docs += 1;
                        toks += ids.len() as u64;
                    }
                    Ok(None) => sink.skip_record(false),
                    Err(Error::MalformedRecord { .. } | Error::InvalidUtf8 { .. })
                        if cfg.skip_bad =>
                    {
                        sink.skip_record(true)
                    }
                    Err(e) => return Err(e),
                }
            }
            ctl.advance(docs, toks, 0);
            // Bytes count once their documents are written, so MB/s and the ETA follow the
            // tokenizer, not the reader running ahead.
            ctl.bytes.store(batch.disk_bytes, Ordering::Relaxed);
        }
        ctl.check()
    })?;
    let manifest = sink.finish(&inputs_desc)?;
    ctl.bytes.store(total, Ordering::Relaxed);
    Ok(ShardReport {
        manifest,
        resumed_shards: resumed,
    })
}

fn describe_inputs(inputs: &[PathBuf]) -> String {
    let mut s: Vec<String> = inputs
        .iter()
        .take(3)
        .map(|p| p.display().to_string())
        .collect();
    if inputs.len() > 3 {
        s.push(format!("and {} more", inputs.len() - 3));
    }
    s.join(", ")
}

#[cfg(test)]
mod tests;
