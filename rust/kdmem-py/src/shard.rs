//! Bindings for `kdmem_core::shard` and `kdmem_core::memory`: the native pipeline, the
//! tokenizer hash, sizes, and the writer fed from Python (`kdmem_core::shard::FedWriter`).

use std::path::PathBuf;

use kdmem_core::shard::pipeline::{self, ShardConfig};
use kdmem_core::shard::tokenize::{hex, DtypeChoice, EncoderChoice, EosChoice, ShardTokenizer};
use kdmem_core::shard::{FedOptions, FedSource, FedWriter};
use numpy::PyReadonlyArray1;
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::detach;
use crate::errors::IntoPyResult;

/// Shard native inputs; returns `(manifest_json, resumed_shards, shard_tokens, memory)`
/// (the last two: the plan the run followed).
///
/// `shard_tokens=None` and `memory=None` let the core choose (`kdmem_core::shard::sink::plan`);
/// 4 MiB batches is `pipeline::DEFAULT_BATCH_BYTES`, spelled as a literal for the signature.
#[pyfunction]
#[pyo3(signature = (inputs, tokenizer, out, *, threads=None, dtype="auto", text_field="text",
                    eos="auto", skip_bad=false, shard_tokens=None, memory=None,
                    overwrite=false, append=false, encoder="auto", batch_bytes=4194304,
                    max_doc_bytes=None, progress=None))]
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
    shard_tokens: Option<u64>,
    memory: Option<u64>,
    overwrite: bool,
    append: bool,
    encoder: &str,
    batch_bytes: usize,
    max_doc_bytes: Option<u64>,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<(String, usize, u64, u64)> {
    let mut cfg = ShardConfig::new(inputs, tokenizer, out);
    cfg.threads = threads;
    cfg.dtype = DtypeChoice::parse(dtype).py_err()?;
    cfg.text_field = text_field.to_string();
    cfg.eos = EosChoice::parse(eos);
    cfg.skip_bad = skip_bad;
    cfg.shard_tokens = shard_tokens;
    cfg.memory = memory;
    cfg.overwrite = overwrite;
    cfg.append = append;
    cfg.encoder = EncoderChoice::parse(encoder).py_err()?;
    cfg.batch_bytes = batch_bytes;
    cfg.max_doc_bytes = max_doc_bytes;
    let rep = detach::run(py, progress.as_ref(), |ctl| {
        pipeline::shard_files(&cfg, ctl)
    })?;
    Ok((
        rep.manifest.to_json(),
        rep.resumed_shards,
        rep.plan.shard_tokens,
        rep.plan.memory,
    ))
}

/// `(tokenizer_hash_hex, vocab_size, eos_id, encoder, encoder_note)` of a tokenizer.json as
/// the shard writer sees it.
#[pyfunction]
#[pyo3(signature = (path, eos="auto", encoder="auto"))]
pub fn tokenizer_info(
    path: PathBuf,
    eos: &str,
    encoder: &str,
) -> PyResult<(String, u32, Option<u32>, &'static str, String)> {
    let t = ShardTokenizer::load_with(
        path,
        &EosChoice::parse(eos),
        EncoderChoice::parse(encoder).py_err()?,
    )
    .py_err()?;
    Ok((
        hex(&t.hash),
        t.vocab_size,
        t.eos_id,
        t.encoder(),
        t.encoder_note().to_string(),
    ))
}

/// Bytes in a size such as `8GB`, `512MiB` or `1.5T` (`kdmem_core::memory::parse_size`).
#[pyfunction]
pub fn parse_size(text: &str) -> PyResult<u64> {
    kdmem_core::memory::parse_size(text).py_err()
}

/// The default memory budget in bytes (`kdmem_core::memory::default_budget`).
#[pyfunction]
pub fn default_memory() -> u64 {
    kdmem_core::memory::default_budget()
}

/// A shard directory written from Python batches (`kdmem_core::shard::FedWriter`): the same
/// cutting, atomicity, resume, append and memory rules as `kdmem shard`.
#[pyclass(module = "kdmem._core")]
pub struct ShardWriter {
    inner: FedWriter,
}

#[pymethods]
impl ShardWriter {
    /// Open (or resume, or start appending to) `out`. With `tokenizer`, texts are tokenized
    /// by it and the metadata comes from it; without, only token arrays are accepted and
    /// `dtype` (or `vocab_size`), `tokenizer_hash` and `eos_id` describe them. `config`
    /// identifies the source for resume.
    #[new]
    #[pyo3(signature = (out, *, config, tokenizer=None, dtype="auto", eos="auto",
                        shard_tokens=None, memory=None, overwrite=false, append=false,
                        encoder="auto", threads=None, vocab_size=0, tokenizer_hash=None,
                        eos_id=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        out: PathBuf,
        config: String,
        tokenizer: Option<PathBuf>,
        dtype: &str,
        eos: &str,
        shard_tokens: Option<u64>,
        memory: Option<u64>,
        overwrite: bool,
        append: bool,
        encoder: &str,
        threads: Option<usize>,
        vocab_size: u32,
        tokenizer_hash: Option<String>,
        eos_id: Option<u32>,
    ) -> PyResult<Self> {
        let source = match tokenizer {
            Some(tokenizer) => FedSource::Texts {
                tokenizer,
                eos: EosChoice::parse(eos),
                encoder: EncoderChoice::parse(encoder).py_err()?,
            },
            None => FedSource::Tokens {
                vocab_size,
                tokenizer_hash,
                eos_id,
            },
        };
        let mut opts = FedOptions::new(out, config, source);
        opts.dtype = DtypeChoice::parse(dtype).py_err()?;
        opts.shard_tokens = shard_tokens;
        opts.memory = memory;
        opts.overwrite = overwrite;
        opts.append = append;
        opts.threads = threads;
        // Opening verifies resumed shards (reads them): release the GIL.
        let inner = detach::run(py, None, |_| FedWriter::open(opts))?;
        Ok(ShardWriter { inner })
    }

    /// Input records already consumed by shards kept from a previous run: skip that many.
    #[getter]
    fn records_to_skip(&self) -> u64 {
        self.inner.records_to_skip()
    }

    /// Whether there is nothing to add (finished earlier, or an append already committed).
    #[getter]
    fn is_complete(&self) -> bool {
        self.inner.is_complete()
    }

    /// Shards kept from a previous run.
    #[getter]
    fn resumed_shards(&self) -> usize {
        self.inner.resumed_shards()
    }

    /// `"u16"` or `"u32"`.
    #[getter]
    fn dtype(&self) -> &'static str {
        self.inner.meta().dtype.name()
    }

    /// EOS id appended after each text document, or None.
    #[getter]
    fn eos_id(&self) -> Option<u32> {
        self.inner.meta().eos_id
    }

    /// `"kdmem-bpe"` or `"tokenizers"` for a text writer, None for a token writer.
    #[getter]
    fn encoder(&self) -> Option<&'static str> {
        self.inner.encoder()
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
        let inner = &mut self.inner;
        detach::run(py, None, |ctl| {
            inner.add_texts(&views, source, first_record, ctl)
        })
    }

    /// Count `n` input records that yield no document (`bad`: skipped as malformed).
    #[pyo3(signature = (n, bad=false))]
    fn skip_records(&mut self, n: u64, bad: bool) -> PyResult<()> {
        self.inner.skip_records(n, bad).py_err()
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
        let inner = &mut self.inner;
        detach::run(py, None, |ctl| inner.add_tokens(tokens, offsets, ctl))
    }

    /// Close the last shard and write (or commit) the final manifest; returns the manifest
    /// JSON. `inputs` describes the source in the empty-corpus error.
    fn finish(&mut self, py: Python<'_>, inputs: &str) -> PyResult<String> {
        let inner = &mut self.inner;
        detach::run(py, None, |_| inner.finish(inputs)).map(|m| m.to_json())
    }
}
