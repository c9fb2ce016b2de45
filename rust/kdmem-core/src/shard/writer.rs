//! [`FedWriter`]: a shard directory written from documents the caller feeds in batches,
//! either texts (tokenized here, in parallel) or ready token arrays (importers). Same
//! cutting, atomicity, resume, append and memory rules as `kdmem shard`
//! ([`crate::shard::sink`]); the Python `kdmem._core.ShardWriter` is a thin mirror of it.
//!
//! The caller identifies its source with a `config` string (for the resume rule: a rerun
//! with the same string resumes, skipping [`FedWriter::records_to_skip`] records) and feeds
//! records in order: [`FedWriter::add_texts`], [`FedWriter::add_tokens`] and
//! [`FedWriter::skip_records`] each count one record per document or skipped row.
//!
//! Costs: `add_texts` is O(total text) spread over the writer's threads, order kept;
//! `add_tokens` is O(tokens). Memory: the caller's batch plus its token ids, and the sink's
//! 2 MiB of write buffers.

use std::path::PathBuf;

use rayon::prelude::*;

use crate::control::Control;
use crate::error::{Error, Result};
use crate::shard::format::{Dtype, ShardMeta};
use crate::shard::manifest::{config_hash, parse_hash, Manifest};
use crate::shard::sink::{plan, ShardSink, SinkOptions};
use crate::shard::tokenize::{hex, DtypeChoice, EncoderChoice, EosChoice, ShardTokenizer};
use crate::threads;

/// Where a [`FedWriter`]'s documents and metadata come from.
#[derive(Debug, Clone)]
pub enum FedSource {
    /// Texts, tokenized with this `tokenizer.json` (the metadata comes from it).
    Texts {
        /// `tokenizer.json` or a directory holding one.
        tokenizer: PathBuf,
        /// EOS rule.
        eos: EosChoice,
        /// Encoder choice.
        encoder: EncoderChoice,
    },
    /// Token arrays, described by the caller.
    Tokens {
        /// Vocabulary size (0 = unknown).
        vocab_size: u32,
        /// Tokenizer hash as 64 hex digits (`None` = unknown).
        tokenizer_hash: Option<String>,
        /// EOS id the data uses, if any.
        eos_id: Option<u32>,
    },
}

/// Options of [`FedWriter::open`].
#[derive(Debug, Clone)]
pub struct FedOptions {
    /// Output directory.
    pub out: PathBuf,
    /// Identity of the source, for resume (e.g. input paths and sizes, as JSON).
    pub config: String,
    /// Texts or token arrays.
    pub source: FedSource,
    /// Token width (`Auto` needs a tokenizer or a vocabulary size).
    pub dtype: DtypeChoice,
    /// Tokens per shard (`None`: from the memory budget, at most 2^30).
    pub shard_tokens: Option<u64>,
    /// Memory budget in bytes (`None`: the machine's default).
    pub memory: Option<u64>,
    /// Replace a different earlier output.
    pub overwrite: bool,
    /// Add to the finished set in `out` as new shards.
    pub append: bool,
    /// Tokenizer threads.
    pub threads: Option<usize>,
}

impl FedOptions {
    /// Defaults for everything but the output, the source identity and the source.
    pub fn new(out: PathBuf, config: String, source: FedSource) -> Self {
        FedOptions {
            out,
            config,
            source,
            dtype: DtypeChoice::Auto,
            shard_tokens: None,
            memory: None,
            overwrite: false,
            append: false,
            threads: None,
        }
    }
}

/// A shard directory fed by the caller; see the module docs.
pub struct FedWriter {
    sink: ShardSink,
    tok: Option<ShardTokenizer>,
    threads: Option<usize>,
    /// Per-document cap of [`ShardTokenizer::encode_capped`] (the budget's default).
    max_doc_bytes: usize,
}

impl std::fmt::Debug for FedWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FedWriter")
            .field("sink", &self.sink)
            .finish()
    }
}

impl FedWriter {
    /// Open (or resume, or start appending to) `opts.out`.
    pub fn open(opts: FedOptions) -> Result<Self> {
        let n_threads = threads::resolve(opts.threads)?;
        let (tok, meta) = match &opts.source {
            FedSource::Texts {
                tokenizer,
                eos,
                encoder,
            } => {
                let t = ShardTokenizer::load_with(tokenizer, eos, *encoder)?;
                let meta = ShardMeta {
                    dtype: opts.dtype.resolve(t.vocab_size),
                    vocab_size: t.vocab_size,
                    eos_id: t.eos_id,
                    tokenizer_hash: t.hash,
                };
                (Some(t), meta)
            }
            FedSource::Tokens {
                vocab_size,
                tokenizer_hash,
                eos_id,
            } => {
                let dtype = match (opts.dtype, *vocab_size) {
                    (DtypeChoice::Fixed(d), _) => d,
                    (DtypeChoice::Auto, v) if v > 0 => opts.dtype.resolve(v),
                    _ => {
                        return Err(Error::InvalidArgument {
                            name: "dtype".into(),
                            value: "auto".into(),
                            fix: "without a tokenizer or vocab_size, pass dtype u16 or u32".into(),
                        })
                    }
                };
                let tokenizer_hash = match tokenizer_hash {
                    None => [0u8; 32],
                    Some(h) => parse_hash(h).ok_or_else(|| Error::InvalidArgument {
                        name: "tokenizer_hash".into(),
                        value: h.clone(),
                        fix: "pass 64 hex digits (kdmem.corpus.tokenizer_hash) or None for unknown"
                            .into(),
                    })?,
                };
                let meta = ShardMeta {
                    dtype,
                    vocab_size: *vocab_size,
                    eos_id: *eos_id,
                    tokenizer_hash,
                };
                (None, meta)
            }
        };
        let p = plan(opts.memory, opts.shard_tokens, meta.dtype, n_threads)?;
        let mut parts = vec![
            format!("tokenizer {}", hex(&meta.tokenizer_hash)),
            format!("dtype {}", meta.dtype.name()),
            format!("eos {:?}", meta.eos_id),
            format!("vocab_size {}", meta.vocab_size),
            format!("shard_tokens {}", p.shard_tokens),
        ];
        if opts.memory.is_some() {
            parts.push(p.hash_part());
        }
        parts.push(format!("source {}", opts.config));
        let mut so = SinkOptions::new(opts.out, meta, p.shard_tokens, config_hash(&parts));
        so.max_shard_tokens = p.max_shard_tokens;
        so.memory = p.memory;
        so.overwrite = opts.overwrite;
        so.append = opts.append;
        so.encoder = tok.as_ref().map(|t| t.encoder().to_string());
        Ok(FedWriter {
            sink: ShardSink::open(so)?,
            tok,
            threads: opts.threads,
            max_doc_bytes: crate::shard::pipeline::default_max_doc_bytes(p.memory) as usize,
        })
    }

    /// Input records already consumed by shards kept from a previous run: skip that many.
    pub fn records_to_skip(&self) -> u64 {
        self.sink.records_to_skip()
    }

    /// Whether there is nothing to add (a previous run finished this output, or this append
    /// is already in the set).
    pub fn is_complete(&self) -> bool {
        self.sink.is_complete()
    }

    /// Shards kept from a previous run.
    pub fn resumed_shards(&self) -> usize {
        self.sink.resumed_shards()
    }

    /// The shared metadata.
    pub fn meta(&self) -> &ShardMeta {
        self.sink.meta()
    }

    /// The tokenizer's encoder name, or `None` for a token writer.
    pub fn encoder(&self) -> Option<&'static str> {
        self.tok.as_ref().map(|t| t.encoder())
    }

    /// Tokenize and append one document per text (parallel, order kept); returns the tokens
    /// added (EOS included). `source` and `first_record` (1-based number of `texts[0]`) name
    /// records in errors. Checks `ctl` before writing.
    pub fn add_texts(
        &mut self,
        texts: &[&str],
        source: &str,
        first_record: u64,
        ctl: &Control,
    ) -> Result<u64> {
        let tok = self.tok.as_ref().ok_or_else(|| Error::InvalidArgument {
            name: "texts".into(),
            value: source.into(),
            fix: "this shard writer has no tokenizer; open it with one, or add token arrays".into(),
        })?;
        let pool = threads::pool(self.threads)?;
        let cap = self.max_doc_bytes;
        let ids: Vec<Result<(Vec<u32>, bool)>> = pool.install(|| {
            texts
                .par_iter()
                .enumerate()
                .with_min_len(8)
                .map(|(i, t)| {
                    let mut v = Vec::with_capacity(t.len().min(cap) / 3 + 1);
                    let split =
                        tok.encode_capped(t, cap, &mut v, source, first_record + i as u64)?;
                    Ok((v, split))
                })
                .collect()
        });
        ctl.check()?;
        let mut n_tok = 0u64;
        for (i, r) in ids.into_iter().enumerate() {
            let (v, split) = r?;
            if split {
                self.sink.note_split();
            }
            n_tok += v.len() as u64;
            self.sink.push_doc(&v, source, first_record + i as u64)?;
        }
        ctl.advance(texts.len() as u64, n_tok, 0);
        Ok(n_tok)
    }

    /// Count `n` input records that yield no document (`bad`: skipped as malformed).
    pub fn skip_records(&mut self, n: u64, bad: bool) -> Result<()> {
        for _ in 0..n {
            self.sink.skip_record(bad)?;
        }
        Ok(())
    }

    /// Append documents `tokens[offsets[i]..offsets[i+1]]` as they are (no EOS added), one
    /// record each. `offsets` starts at 0, does not decrease and ends at `tokens.len()`.
    pub fn add_tokens(&mut self, tokens: &[u32], offsets: &[u64], ctl: &Control) -> Result<()> {
        let n = tokens.len() as u64;
        if offsets.first().copied().unwrap_or(0) != 0
            || offsets.last().copied().unwrap_or(0) != n
            || offsets.windows(2).any(|w| w[0] > w[1])
        {
            return Err(Error::InvalidArgument {
                name: "offsets".into(),
                value: format!("{} entries", offsets.len()),
                fix: format!("offsets must start at 0, not decrease and end at len(tokens) = {n}"),
            });
        }
        let dtype = self.sink.meta().dtype;
        let mut buf = Vec::new();
        for (i, w) in offsets.windows(2).enumerate() {
            let doc = &tokens[w[0] as usize..w[1] as usize];
            match dtype {
                Dtype::U32 => self.sink.push_doc(doc, "token array document", i as u64)?,
                Dtype::U16 => {
                    buf.clear();
                    for &t in doc {
                        if t > u16::MAX as u32 {
                            return Err(Error::TokenOutOfRange {
                                token: t as u64,
                                max: u16::MAX as u64,
                                context: format!("a u16 shard (document {i} of this batch)"),
                                fix: "import with --dtype u32".into(),
                            });
                        }
                        buf.extend_from_slice(&(t as u16).to_le_bytes());
                    }
                    self.sink
                        .push_doc_bytes(&buf, &|| format!("{i} of this batch"))?;
                }
            }
            if i % 4096 == 0 {
                ctl.check()?;
            }
        }
        ctl.advance(offsets.len().saturating_sub(1) as u64, n, 0);
        Ok(())
    }

    /// Close the last shard and write (or, appending, commit) the final manifest. Call once;
    /// `inputs` describes the source in the empty-corpus error.
    pub fn finish(&mut self, inputs: &str) -> Result<Manifest> {
        self.sink.finish(inputs)
    }
}

#[cfg(test)]
mod tests;
