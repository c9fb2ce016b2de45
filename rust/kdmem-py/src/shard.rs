//! Bindings for `kdmem_core::shard`: the native pipeline, the tokenizer hash and a writer fed
//! from Python (texts tokenized in Rust, or ready token arrays for importers).

use std::path::PathBuf;

use kdmem_core::shard::format::{Dtype, ShardMeta};
use kdmem_core::shard::pipeline::{self, config_hash, ShardConfig, ShardSink, SinkOptions};
use kdmem_core::shard::tokenize::{hex, DtypeChoice, EosChoice, ShardTokenizer};
use kdmem_core::Error;
use numpy::PyReadonlyArray1;
use pyo3::prelude::*;
use pyo3::types::PyString;
use rayon::prelude::*;

use crate::detach;
use crate::errors::IntoPyResult;

/// Shard native inputs; returns `(manifest_json, resumed_shards)`.
///
/// Defaults are spelled as literals so the signature shows them: 2^30 tokens per shard
/// (`pipeline::DEFAULT_SHARD_TOKENS`) and 4 MiB batches (`pipeline::DEFAULT_BATCH_BYTES`).
#[pyfunction]
#[pyo3(signature = (inputs, tokenizer, out, *, threads=None, dtype="auto", text_field="text",
                    eos="auto", skip_bad=false, shard_tokens=1073741824,
                    overwrite=false, batch_bytes=4194304, progress=None))]
#[allow(clippy::too_many_arguments)]
pub fn shard_files(
    py: Python<'_>,
    inputs: Vec<PathBuf>,
    tokenizer: PathBuf,
    out: PathBuf,
    threads: Option<usize>,
    dtype: &str,
    text_field: &str,
    eos: &str,
    skip_bad: bool,
    shard_tokens: u64,
    overwrite: bool,
    batch_bytes: usize,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<(String, usize)> {
    let mut cfg = ShardConfig::new(inputs, tokenizer, out);
    cfg.threads = threads;
    cfg.dtype = DtypeChoice::parse(dtype).py_err()?;
    cfg.text_field = text_field.to_string();
    cfg.eos = EosChoice::parse(eos);
    cfg.skip_bad = skip_bad;
    cfg.shard_tokens = shard_tokens;
    cfg.overwrite = overwrite;
    cfg.batch_bytes = batch_bytes;
    let rep = detach::run(py, progress.as_ref(), |ctl| {
        pipeline::shard_files(&cfg, ctl)
    })?;
    Ok((rep.manifest.to_json(), rep.resumed_shards))
}

/// `(tokenizer_hash_hex, vocab_size, eos_id)` of a tokenizer.json as the shard writer sees it.
#[pyfunction]
#[pyo3(signature = (path, eos="auto"))]
pub fn tokenizer_info(path: PathBuf, eos: &str) -> PyResult<(String, u32, Option<u32>)> {
    let t = ShardTokenizer::load(path, &EosChoice::parse(eos)).py_err()?;
    Ok((hex(&t.hash), t.vocab_size, t.eos_id))
}

fn parse_hash(h: Option<&str>) -> PyResult<[u8; 32]> {
    let mut out = [0u8; 32];
    if let Some(h) = h {
        let bad = || Error::InvalidArgument {
            name: "tokenizer_hash".into(),
            value: h.into(),
            fix: "pass 64 hex digits (kdmem.corpus.tokenizer_hash) or None for unknown".into(),
        };
        if h.len() != 64 {
            return Err(bad()).py_err();
        }
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&h[2 * i..2 * i + 2], 16)
                .map_err(|_| crate::errors::to_py(bad()))?;
        }
    }
    Ok(out)
}

/// A shard directory written from Python batches, with the same cutting, atomicity and
/// resume rules as `kdmem shard` (see `kdmem_core::shard::pipeline`).
#[pyclass(module = "kdmem._core")]
pub struct ShardWriter {
    sink: Option<ShardSink>,
    tok: Option<ShardTokenizer>,
    threads: Option<usize>,
}

impl ShardWriter {
    fn sink(&mut self) -> PyResult<&mut ShardSink> {
        self.sink.as_mut().ok_or_else(|| {
            pyo3::exceptions::PyValueError::new_err(
                "this ShardWriter is finished; open a new one to write more",
            )
        })
    }
}

#[pymethods]
impl ShardWriter {
    /// Open (or resume) `out`. With `tokenizer`, texts are tokenized by it and the metadata
    /// comes from it; without, only token arrays are accepted and `dtype` (or `vocab_size`),
    /// `tokenizer_hash` and `eos_id` describe them. `config` identifies the source for resume.
    #[new]
    #[pyo3(signature = (out, *, config, tokenizer=None, dtype="auto", eos="auto",
                        shard_tokens=1073741824, overwrite=false, threads=None,
                        vocab_size=0, tokenizer_hash=None, eos_id=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        out: PathBuf,
        config: &str,
        tokenizer: Option<PathBuf>,
        dtype: &str,
        eos: &str,
        shard_tokens: u64,
        overwrite: bool,
        threads: Option<usize>,
        vocab_size: u32,
        tokenizer_hash: Option<&str>,
        eos_id: Option<u32>,
    ) -> PyResult<Self> {
        let choice = DtypeChoice::parse(dtype).py_err()?;
        let (tok, meta) = match tokenizer {
            Some(p) => {
                let t = ShardTokenizer::load(p, &EosChoice::parse(eos)).py_err()?;
                let meta = ShardMeta {
                    dtype: choice.resolve(t.vocab_size),
                    vocab_size: t.vocab_size,
                    eos_id: t.eos_id,
                    tokenizer_hash: t.hash,
                };
                (Some(t), meta)
            }
            None => {
                let dtype = match (choice, vocab_size) {
                    (DtypeChoice::Fixed(d), _) => d,
                    (DtypeChoice::Auto, v) if v > 0 => choice.resolve(v),
                    _ => {
                        return Err(Error::InvalidArgument {
                            name: "dtype".into(),
                            value: "auto".into(),
                            fix: "without a tokenizer or vocab_size, pass dtype u16 or u32".into(),
                        })
                        .py_err()
                    }
                };
                let meta = ShardMeta {
                    dtype,
                    vocab_size,
                    eos_id,
                    tokenizer_hash: parse_hash(tokenizer_hash)?,
                };
                (None, meta)
            }
        };
        let parts = vec![
            format!("tokenizer {}", hex(&meta.tokenizer_hash)),
            format!("dtype {}", meta.dtype.name()),
            format!("eos {:?}", meta.eos_id),
            format!("vocab_size {}", meta.vocab_size),
            format!("shard_tokens {shard_tokens}"),
            format!("source {config}"),
        ];
        let sink = ShardSink::open(SinkOptions {
            out,
            meta,
            shard_tokens,
            config_hash: config_hash(&parts),
            overwrite,
        })
        .py_err()?;
        Ok(ShardWriter {
            sink: Some(sink),
            tok,
            threads,
        })
    }

    /// Input records already consumed by shards kept from a previous run: skip that many.
    #[getter]
    fn records_to_skip(&mut self) -> PyResult<u64> {
        Ok(self.sink()?.records_to_skip())
    }

    /// Whether a previous run already finished this output (nothing to add).
    #[getter]
    fn is_complete(&mut self) -> PyResult<bool> {
        Ok(self.sink()?.is_complete())
    }

    /// Shards kept from a previous run.
    #[getter]
    fn resumed_shards(&mut self) -> PyResult<usize> {
        Ok(self.sink()?.resumed_shards())
    }

    /// `"u16"` or `"u32"`.
    #[getter]
    fn dtype(&mut self) -> PyResult<&'static str> {
        Ok(self.sink()?.meta().dtype.name())
    }

    /// EOS id appended after each text document, or None.
    #[getter]
    fn eos_id(&mut self) -> PyResult<Option<u32>> {
        Ok(self.sink()?.meta().eos_id)
    }

    /// Tokenize and append one document per text (GIL released, parallel, order kept);
    /// returns the number of tokens added (EOS included). `source` and `first_record`
    /// (1-based number of `texts[0]`) name records in errors.
    #[pyo3(signature = (texts, source, first_record))]
    fn add_texts(
        &mut self,
        py: Python<'_>,
        texts: Vec<Bound<'_, PyString>>,
        source: &str,
        first_record: u64,
    ) -> PyResult<u64> {
        let views: Vec<&str> = texts.iter().map(|t| t.to_str()).collect::<PyResult<_>>()?;
        let threads = self.threads;
        let tok = self.tok.as_ref().ok_or_else(|| {
            pyo3::exceptions::PyValueError::new_err(
                "this ShardWriter has no tokenizer; pass tokenizer= or use add_tokens",
            )
        })?;
        let sink = self.sink.as_mut().ok_or_else(|| {
            pyo3::exceptions::PyValueError::new_err("this ShardWriter is finished")
        })?;
        detach::run(py, None, |ctl| {
            let pool = kdmem_core::threads::pool(threads)?;
            let ids: Vec<kdmem_core::Result<Vec<u32>>> = pool.install(|| {
                views
                    .par_iter()
                    .enumerate()
                    .with_min_len(8)
                    .map(|(i, t)| {
                        let mut v = Vec::with_capacity(t.len() / 3 + 1);
                        tok.encode_into(t, &mut v, source, first_record + i as u64)?;
                        Ok(v)
                    })
                    .collect()
            });
            let mut n_tok = 0u64;
            for (i, r) in ids.into_iter().enumerate() {
                let v = r?;
                n_tok += v.len() as u64;
                sink.push_doc(&v, source, first_record + i as u64)?;
            }
            ctl.advance(views.len() as u64, n_tok, 0);
            Ok(n_tok)
        })
    }

    /// Count `n` input records that yield no document (`bad`: skipped as malformed).
    #[pyo3(signature = (n, bad=false))]
    fn skip_records(&mut self, n: u64, bad: bool) -> PyResult<()> {
        let sink = self.sink()?;
        for _ in 0..n {
            sink.skip_record(bad);
        }
        Ok(())
    }

    /// Append documents `tokens[offsets[i]:offsets[i+1]]` as they are (no EOS added); one
    /// record each. `tokens`: uint32 1-D; `offsets`: uint64 1-D, starting at 0, non-decreasing,
    /// ending at `len(tokens)`.
    fn add_tokens(
        &mut self,
        py: Python<'_>,
        tokens: PyReadonlyArray1<'_, u32>,
        offsets: PyReadonlyArray1<'_, u64>,
    ) -> PyResult<()> {
        let tokens = tokens.as_slice()?;
        let offsets = offsets.as_slice()?;
        let n = tokens.len() as u64;
        if offsets.first().copied().unwrap_or(0) != 0
            || offsets.last().copied().unwrap_or(0) != n
            || offsets.windows(2).any(|w| w[0] > w[1])
        {
            return Err(Error::InvalidArgument {
                name: "offsets".into(),
                value: format!("{} entries", offsets.len()),
                fix: format!("offsets must start at 0, not decrease and end at len(tokens) = {n}"),
            })
            .py_err();
        }
        let sink = self.sink()?;
        let dtype = sink.meta().dtype;
        detach::run(py, None, |ctl| {
            let mut buf = Vec::new();
            for (i, w) in offsets.windows(2).enumerate() {
                let doc = &tokens[w[0] as usize..w[1] as usize];
                match dtype {
                    Dtype::U32 => sink.push_doc(doc, "token array document", i as u64)?,
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
                        sink.push_doc_bytes(&buf)?;
                    }
                }
            }
            ctl.advance(offsets.len().saturating_sub(1) as u64, n, 0);
            Ok(())
        })
    }

    /// Close the last shard and write the final manifest; returns the manifest JSON.
    /// `inputs` describes the source in the empty-corpus error.
    fn finish(&mut self, inputs: &str) -> PyResult<String> {
        let sink = self.sink.take().ok_or_else(|| {
            pyo3::exceptions::PyValueError::new_err("this ShardWriter is already finished")
        })?;
        Ok(sink.finish(inputs).py_err()?.to_json())
    }
}
