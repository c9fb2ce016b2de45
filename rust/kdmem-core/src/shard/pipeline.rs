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
//! (2 queued, 1 being read, 1 being tokenized), each `batch_bytes` of text (default 4 MiB,
//! smaller under a small `--memory`, see [`plan`]) plus its token ids (4 bytes per token),
//! the writers' two 1 MiB buffers, the tokenizer and a word cache per thread
//! (`shard::bpe`): about 4 x (4 MiB + 4 MiB) + 2 MiB + threads x 10 MiB. Measured
//! (`benches/bench_shard.py`, 32k BPE, 2 threads, whole `python` process): peak RSS 134 MB on
//! a 16.8 MB corpus (1x the in-flight text) and 156 MB on 168 MB (10x).
//!
//! **Shard size.** From the memory budget (`--memory`, default three quarters of the
//! machine's): shards whose suffix-array build fits it, at most 2^30 tokens ([`plan`]).
//!
//! **Append.** `--append` adds the inputs to a finished set as new shards
//! ([`crate::shard::sink`]).
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
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use rayon::prelude::*;

use crate::control::Control;
use crate::error::{Error, Result};
use crate::shard::format::ShardMeta;
use crate::shard::input::{self, LineReader, Parsed};
pub use crate::shard::manifest::{config_hash, shard_name, Manifest, ShardEntry, MANIFEST};
pub use crate::shard::sink::{
    plan, ShardPlan, ShardSink, SinkOptions, DEFAULT_BATCH_BYTES, DEFAULT_SHARD_TOKENS,
};
use crate::shard::tokenize::{hex, DtypeChoice, EncoderChoice, EosChoice, ShardTokenizer};
use crate::threads;

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
    /// Shard size budget in tokens (`None`: from `memory`, at most 2^30).
    pub shard_tokens: Option<u64>,
    /// Memory budget in bytes (`None`: [`crate::memory::default_budget`]).
    pub memory: Option<u64>,
    /// Replace an existing output.
    pub overwrite: bool,
    /// Add the inputs to the finished set in `out` as new shards.
    pub append: bool,
    /// Which encoder tokenizes (the ids are the same).
    pub encoder: EncoderChoice,
    /// Input bytes per batch (memory knob; never changes the output).
    pub batch_bytes: usize,
    /// Documents longer than this are tokenized in pieces of at most this many bytes
    /// ([`ShardTokenizer::encode_capped`]); `None`: [`default_max_doc_bytes`] of the budget.
    pub max_doc_bytes: Option<u64>,
}

/// The default per-document cap: 1/1024 of the memory budget, between 1 MiB and 64 MiB
/// (18 MiB under the default budget of a 24 GB machine). Tokenizing one piece takes up to
/// ~150 bytes per byte with HF `tokenizers` (less with kdmem's encoder), so a piece stays
/// within a fraction of the budget whatever the document.
pub fn default_max_doc_bytes(memory: u64) -> u64 {
    (memory / 1024).clamp(1 << 20, 64 << 20)
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
            shard_tokens: None,
            memory: None,
            overwrite: false,
            append: false,
            encoder: EncoderChoice::Auto,
            batch_bytes: DEFAULT_BATCH_BYTES,
            max_doc_bytes: None,
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
    /// The plan the run followed (shard sizes from the memory budget).
    pub plan: ShardPlan,
}

/// Shard `cfg.inputs` into `cfg.out`; see the module docs. Checks `ctl` between batches and
/// advances its counters (documents, tokens, on-disk input bytes; `total_bytes` = input size).
pub fn shard_files(cfg: &ShardConfig, ctl: &Control) -> Result<ShardReport> {
    if cfg.inputs.is_empty() {
        return Err(Error::EmptyCorpus {
            inputs: "no input paths".into(),
        });
    }
    let tok = ShardTokenizer::load_with(&cfg.tokenizer, &cfg.eos, cfg.encoder)?;
    let dtype = cfg.dtype.resolve(tok.vocab_size);
    let n_threads = threads::resolve(cfg.threads)?;
    let plan = plan(cfg.memory, cfg.shard_tokens, dtype, n_threads)?;
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
        format!("shard_tokens {}", plan.shard_tokens),
    ];
    if cfg.memory.is_some() {
        parts.push(plan.hash_part());
    }
    // Given explicitly, the cap is part of the identity (it can change ids at the cuts for
    // tokenizers other than byte-level BPE); the default follows the budget.
    if let Some(m) = cfg.max_doc_bytes {
        if m < 4 {
            return Err(Error::InvalidArgument {
                name: "max_doc_bytes".into(),
                value: m.to_string(),
                fix: "pass at least 4 bytes (e.g. 16MB)".into(),
            });
        }
        parts.push(format!("max_doc_bytes {m}"));
    }
    let max_doc = cfg
        .max_doc_bytes
        .unwrap_or_else(|| default_max_doc_bytes(plan.memory))
        .min(usize::MAX as u64) as usize;
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
    let mut so = SinkOptions::new(
        cfg.out.clone(),
        meta,
        plan.shard_tokens,
        config_hash(&parts),
    );
    so.max_shard_tokens = plan.max_shard_tokens;
    so.memory = plan.memory;
    so.overwrite = cfg.overwrite;
    so.append = cfg.append;
    so.encoder = Some(tok.encoder().to_string());
    let mut sink = ShardSink::open(so)?;
    let inputs_desc = describe_inputs(&cfg.inputs);
    if sink.is_complete() {
        let resumed = sink.resumed_shards();
        let m = sink.finish(&inputs_desc)?;
        ctl.advance(m.n_docs(), m.n_tokens(), total);
        return Ok(ShardReport {
            manifest: m,
            resumed_shards: resumed,
            plan,
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
    let batch_bytes = cfg.batch_bytes.min(plan.batch_bytes).max(1);
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
            let out: Vec<Result<Option<Encoded<'_>>>> = pool.install(|| {
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
                            // Longer than the cap: tokenized piece by piece when written.
                            Parsed::Doc(text) if text.len() > max_doc => {
                                Ok(Some(Encoded::Long(text)))
                            }
                            Parsed::Doc(text) => {
                                let mut ids = Vec::with_capacity(text.len() / 3 + 1);
                                tok.encode_into(&text, &mut ids, path, r.line)?;
                                Ok(Some(Encoded::Ids(ids)))
                            }
                        }
                    })
                    .collect()
            });
            let (mut docs, mut toks) = (0u64, 0u64);
            for (i, o) in out.into_iter().enumerate() {
                let r = batch.records[i];
                match o {
                    Ok(Some(Encoded::Ids(ids))) => {
                        sink.push_doc(&ids, &names[r.file as usize], r.line)?;
                        docs += 1;
                        toks += ids.len() as u64;
                    }
                    Ok(Some(Encoded::Long(text))) => {
                        // Two passes over the pieces, one piece's ids in memory at a time:
                        // count (the shard cut needs the length first), then write.
                        let path = &names[r.file as usize];
                        let mut buf = Vec::new();
                        let n =
                            tok.encode_pieces(&text, max_doc, &mut buf, path, r.line, &mut |_| {
                                Ok(())
                            })?;
                        sink.note_split();
                        sink.push_doc_parts(n, path, r.line, |emit| {
                            tok.encode_pieces(&text, max_doc, &mut buf, path, r.line, emit)
                                .map(|_| ())
                        })?;
                        docs += 1;
                        toks += n;
                    }
                    Ok(None) => sink.skip_record(false)?,
                    Err(Error::MalformedRecord { .. } | Error::InvalidUtf8 { .. })
                        if cfg.skip_bad =>
                    {
                        sink.skip_record(true)?
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
        plan,
    })
}

/// A record as the parallel phase leaves it: its token ids, or the text of a document longer
/// than `--max-doc-bytes`, tokenized piece by piece as it is written.
enum Encoded<'a> {
    Ids(Vec<u32>),
    Long(std::borrow::Cow<'a, str>),
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
