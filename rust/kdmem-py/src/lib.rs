//! `kdmem._core`: the private extension module. Conversions, GIL release and error mapping
//! only; every algorithm lives in `kdmem-core`. Mirrors the core's modules file for file.

use pyo3::prelude::*;

use crate::errors::IntoPyResult;

mod detach;
mod errors;
mod index;
mod shard;
mod zlib;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(zlib::zlib_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(zlib::zlib_version, m)?)?;
    m.add_function(wrap_pyfunction!(resolve_threads, m)?)?;
    m.add_class::<index::Index>()?;
    m.add_function(wrap_pyfunction!(index::build_index, m)?)?;
    m.add_function(wrap_pyfunction!(index::verify_index, m)?)?;
    m.add_function(wrap_pyfunction!(shard::shard_files, m)?)?;
    m.add_function(wrap_pyfunction!(shard::tokenizer_info, m)?)?;
    m.add_function(wrap_pyfunction!(shard::parse_size, m)?)?;
    m.add_function(wrap_pyfunction!(shard::default_memory, m)?)?;
    m.add_class::<shard::ShardWriter>()?;
    m.add_function(wrap_pyfunction!(_error_kinds, m)?)?;
    m.add_function(wrap_pyfunction!(_raise_error_sample, m)?)?;
    Ok(())
}

/// The thread count kdmem would use: `threads`, else `KDMEM_NUM_THREADS`, else all cores.
#[pyfunction]
#[pyo3(signature = (threads=None))]
fn resolve_threads(threads: Option<usize>) -> PyResult<usize> {
    kdmem_core::threads::resolve(threads).py_err()
}

/// Class names of one sample of every core error variant, in declaration order (tests only).
#[pyfunction]
fn _error_kinds() -> Vec<&'static str> {
    kdmem_core::error::samples()
        .iter()
        .map(|e| e.kind())
        .collect()
}

/// Raise the `i`-th sample core error through the normal mapping (tests only).
#[pyfunction]
fn _raise_error_sample(i: usize) -> PyResult<()> {
    let mut all = kdmem_core::error::samples();
    if i >= all.len() {
        return Err(pyo3::exceptions::PyIndexError::new_err(format!(
            "sample {i} out of range; there are {} variants",
            all.len()
        )));
    }
    Err(errors::to_py(all.swap_remove(i)))
}
