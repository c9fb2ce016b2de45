//! Bindings for `kdmem_core::index`: build/verify an index directory and query it.
//!
//! Token arrays arrive as contiguous uint32 numpy arrays (the typed wrapper in
//! `python/kdmem/corpus/index.py` converts and range-checks any integer input); single queries
//! also take contiguous uint16 / int64 arrays as they are ([`Query`]). Single queries
//! release the GIL with `py.detach` (they take microseconds, so no watcher thread); batch
//! queries, builds and verification run through [`crate::detach::run`] (Ctrl-C, progress).

use std::borrow::Cow;
use std::path::PathBuf;

use kdmem_core::index::{self as core, Location, NgramOverlap};
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::detach;
use crate::errors::IntoPyResult;

type Rows<'py> = (
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i64>>,
);

fn slice<'a, T: numpy::Element>(a: &'a PyReadonlyArray1<'_, T>) -> PyResult<&'a [T]> {
    a.as_slice().map_err(|_| {
        pyo3::exceptions::PyValueError::new_err(
            "token array must be C-contiguous; pass np.ascontiguousarray(tokens)",
        )
    })
}

/// A single query as it arrives from the typed wrapper: a contiguous uint32 array (borrowed,
/// no copy), or uint16 / int64 (converted here, so a common numpy query costs no extra numpy
/// pass in Python; int64 ids are range-checked while converting).
enum Query<'py> {
    U32(PyReadonlyArray1<'py, u32>),
    I64(PyReadonlyArray1<'py, i64>),
    U16(PyReadonlyArray1<'py, u16>),
}

impl<'py> FromPyObject<'_, 'py> for Query<'py> {
    type Error = PyErr;

    // Plain type checks (no PyErr built for the dtypes that do not match).
    fn extract(ob: Borrowed<'_, 'py, PyAny>) -> PyResult<Self> {
        if ob.cast::<PyArray1<i64>>().is_ok() {
            return Ok(Query::I64(ob.extract()?));
        }
        if ob.cast::<PyArray1<u32>>().is_ok() {
            return Ok(Query::U32(ob.extract()?));
        }
        Ok(Query::U16(ob.extract()?))
    }
}

impl Query<'_> {
    fn tokens(&self) -> PyResult<Cow<'_, [u32]>> {
        match self {
            Query::U32(a) => slice(a).map(Cow::Borrowed),
            Query::U16(a) => Ok(Cow::Owned(
                slice(a)?.iter().map(|&t| u32::from(t)).collect(),
            )),
            Query::I64(a) => slice(a)?
                .iter()
                .map(|&t| u32::try_from(t).map_err(|_| token_range(t)))
                .collect::<PyResult<Vec<u32>>>()
                .map(Cow::Owned),
        }
    }
}

/// `kdmem.TokenRangeError` for a query id outside 0..2^32 (the wrapper's message).
fn token_range(t: i64) -> PyErr {
    let msg = format!(
        "token id {t} is out of range for a query (allowed 0..{}); pass token ids produced \
         by the index's tokenizer",
        u32::MAX
    );
    Python::attach(|py| {
        match py
            .import("kdmem.errors")
            .and_then(|m| m.getattr("TokenRangeError"))
            .and_then(|cls| cls.call1((msg.clone(),)))
        {
            Ok(exc) => PyErr::from_value(exc),
            Err(e) => e,
        }
    })
}

fn rows<'py>(py: Python<'py>, locs: Vec<Location>) -> Rows<'py> {
    let shard: Vec<i64> = locs.iter().map(|l| i64::from(l.shard)).collect();
    let doc: Vec<i64> = locs.iter().map(|l| l.doc as i64).collect();
    let off: Vec<i64> = locs.iter().map(|l| l.offset as i64).collect();
    (
        shard.into_pyarray(py),
        doc.into_pyarray(py),
        off.into_pyarray(py),
    )
}

type Overlap<'py> = (Bound<'py, PyArray1<u32>>, usize, f64);

fn overlap<'py>(py: Python<'py>, o: NgramOverlap) -> Overlap<'py> {
    (o.positions.into_pyarray(py), o.total, o.fraction)
}

/// An opened index directory: kdmem's own layout or an infini-gram one (the core's
/// [`core::AnyIndex`] chooses).
#[pyclass(frozen, module = "kdmem._core")]
pub struct Index {
    inner: core::AnyIndex,
}

#[pymethods]
impl Index {
    #[new]
    #[pyo3(signature = (dir, shards=None))]
    fn new(py: Python<'_>, dir: PathBuf, shards: Option<Vec<usize>>) -> PyResult<Self> {
        let inner = py
            .detach(|| core::AnyIndex::open(&dir, shards.as_deref()))
            .py_err()?;
        Ok(Index { inner })
    }

    /// `"kdmem"` or `"infini-gram"`.
    #[getter]
    fn format(&self) -> &'static str {
        self.inner.format()
    }

    #[getter]
    fn n_shards(&self) -> usize {
        self.inner.n_shards()
    }

    /// Position in the directory of each opened shard.
    #[getter]
    fn shard_ids(&self) -> Vec<usize> {
        self.inner.shard_ids()
    }

    /// The search units as lists of shard positions.
    #[getter]
    fn units(&self) -> Vec<Vec<usize>> {
        self.inner.units()
    }

    #[getter]
    fn n_tokens(&self) -> u64 {
        self.inner.n_tokens()
    }

    #[getter]
    fn n_docs(&self) -> u64 {
        self.inner.n_docs()
    }

    #[getter]
    fn vocab_size(&self) -> u32 {
        self.inner.vocab_size()
    }

    #[getter]
    fn token_width(&self) -> u32 {
        self.inner.token_width()
    }

    /// Bytes held in RAM beyond the memory maps.
    #[getter]
    fn ram_bytes(&self) -> u64 {
        self.inner.ram_bytes()
    }

    /// Bytes on disk of the files searched.
    #[getter]
    fn disk_bytes(&self) -> u64 {
        self.inner.disk_bytes()
    }

    /// The files searched.
    #[getter]
    fn files(&self) -> Vec<String> {
        self.inner
            .files()
            .iter()
            .map(|p| p.display().to_string())
            .collect()
    }

    /// Tokenizer hash of the shards, 64 hex digits (all zeros = unknown).
    #[getter]
    fn tokenizer_hash(&self) -> String {
        self.inner
            .tokenizer_hash()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Raise TokenizerMismatchError unless `hash` (64 hex digits) matches the index's.
    fn check_tokenizer(&self, hash: &str) -> PyResult<()> {
        let h = core::parse_tokenizer_hash(hash).py_err()?;
        self.inner.check_tokenizer(&h).py_err()
    }

    #[pyo3(signature = (tokens, threads=None))]
    fn count(&self, py: Python<'_>, tokens: Query<'_>, threads: Option<usize>) -> PyResult<u64> {
        let q = &*tokens.tokens()?;
        py.detach(|| self.inner.count(q, threads)).py_err()
    }

    #[pyo3(signature = (tokens, limit, threads=None))]
    fn locate<'py>(
        &self,
        py: Python<'py>,
        tokens: Query<'_>,
        limit: usize,
        threads: Option<usize>,
    ) -> PyResult<Rows<'py>> {
        let q = &*tokens.tokens()?;
        let locs = py
            .detach(|| self.inner.locate(q, limit, threads))
            .py_err()?;
        Ok(rows(py, locs))
    }

    #[pyo3(signature = (tokens, threads=None))]
    fn longest_match<'py>(
        &self,
        py: Python<'py>,
        tokens: Query<'_>,
        threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyArray1<u32>>> {
        let q = &*tokens.tokens()?;
        let v = py
            .detach(|| self.inner.longest_match(q, threads))
            .py_err()?;
        Ok(v.into_pyarray(py))
    }

    #[pyo3(signature = (tokens, n, threads=None))]
    fn ngram_overlap<'py>(
        &self,
        py: Python<'py>,
        tokens: Query<'_>,
        n: usize,
        threads: Option<usize>,
    ) -> PyResult<Overlap<'py>> {
        let q = &*tokens.tokens()?;
        let o = py
            .detach(|| self.inner.ngram_overlap(q, n, threads))
            .py_err()?;
        Ok(overlap(py, o))
    }

    #[pyo3(signature = (queries, threads=None))]
    fn count_many<'py>(
        &self,
        py: Python<'py>,
        queries: Vec<PyReadonlyArray1<'py, u32>>,
        threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyArray1<u64>>> {
        let qs = queries.iter().map(slice).collect::<PyResult<Vec<_>>>()?;
        let v = detach::run(py, None, |_| self.inner.count_many(&qs, threads))?;
        Ok(v.into_pyarray(py))
    }

    #[pyo3(signature = (queries, limit, threads=None))]
    fn locate_many<'py>(
        &self,
        py: Python<'py>,
        queries: Vec<PyReadonlyArray1<'py, u32>>,
        limit: usize,
        threads: Option<usize>,
    ) -> PyResult<Vec<Rows<'py>>> {
        let qs = queries.iter().map(slice).collect::<PyResult<Vec<_>>>()?;
        let v = detach::run(py, None, |_| self.inner.locate_many(&qs, limit, threads))?;
        Ok(v.into_iter().map(|l| rows(py, l)).collect())
    }

    #[pyo3(signature = (queries, threads=None))]
    fn longest_match_many<'py>(
        &self,
        py: Python<'py>,
        queries: Vec<PyReadonlyArray1<'py, u32>>,
        threads: Option<usize>,
    ) -> PyResult<Vec<Bound<'py, PyArray1<u32>>>> {
        let qs = queries.iter().map(slice).collect::<PyResult<Vec<_>>>()?;
        let v = detach::run(py, None, |_| self.inner.longest_match_many(&qs, threads))?;
        Ok(v.into_iter().map(|x| x.into_pyarray(py)).collect())
    }

    #[pyo3(signature = (queries, n, threads=None))]
    fn ngram_overlap_many<'py>(
        &self,
        py: Python<'py>,
        queries: Vec<PyReadonlyArray1<'py, u32>>,
        n: usize,
        threads: Option<usize>,
    ) -> PyResult<Vec<Overlap<'py>>> {
        let qs = queries.iter().map(slice).collect::<PyResult<Vec<_>>>()?;
        let v = detach::run(py, None, |_| self.inner.ngram_overlap_many(&qs, n, threads))?;
        Ok(v.into_iter().map(|o| overlap(py, o)).collect())
    }

    /// Recompute every checksum of the shards and suffix arrays.
    #[pyo3(signature = (threads=None, progress=None))]
    fn verify(
        &self,
        py: Python<'_>,
        threads: Option<usize>,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        detach::run(py, progress, |ctl| self.inner.verify(threads, ctl))
    }
}

/// Build the units of every shard in `dir` (or of the shards numbered `shards`) that no
/// current unit covers, within `memory` bytes; returns a dict
/// `{shards, built, skipped, units, tokens_built, seconds, memory, concurrency, max_unit}`.
#[pyfunction]
#[pyo3(signature = (dir, threads=None, progress=None, shards=None, memory=None))]
pub fn build_index<'py>(
    py: Python<'py>,
    dir: PathBuf,
    threads: Option<usize>,
    progress: Option<&Bound<'py, PyAny>>,
    shards: Option<Vec<usize>>,
    memory: Option<u64>,
) -> PyResult<Bound<'py, PyDict>> {
    let opts = core::BuildOptions {
        threads,
        memory,
        ..core::BuildOptions::default()
    };
    let r = detach::run(py, progress, |ctl| {
        core::build_shards(&dir, shards.as_deref(), &opts, ctl)
    })?;
    let d = PyDict::new(py);
    d.set_item("shards", r.shards)?;
    d.set_item("built", r.built)?;
    d.set_item("skipped", r.skipped)?;
    d.set_item("units", r.units)?;
    d.set_item("tokens_built", r.tokens_built)?;
    d.set_item("seconds", r.seconds)?;
    d.set_item("memory", r.memory)?;
    d.set_item("concurrency", r.concurrency)?;
    d.set_item("max_unit", r.max_unit)?;
    Ok(d)
}

/// Check every shard of `dir` and its suffix array end to end (checksums, shard identity).
#[pyfunction]
#[pyo3(signature = (dir, threads=None, progress=None))]
pub fn verify_index(
    py: Python<'_>,
    dir: PathBuf,
    threads: Option<usize>,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    detach::run(py, progress, |ctl| core::verify_dir(&dir, threads, ctl))
}
