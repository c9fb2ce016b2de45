//! `kdmem._core`: the private extension module. Conversions, GIL release and error mapping
//! only; every algorithm lives in `kdmem-core`. Mirrors the core's modules file for file.

use pyo3::prelude::*;

use crate::errors::IntoPyResult;

mod detach;
mod errors;
mod zlib;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(zlib::zlib_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(zlib::zlib_version, m)?)?;
    m.add_function(wrap_pyfunction!(resolve_threads, m)?)?;
    Ok(())
}

/// The thread count kdmem would use: `threads`, else `KDMEM_NUM_THREADS`, else all cores.
#[pyfunction]
#[pyo3(signature = (threads=None))]
fn resolve_threads(threads: Option<usize>) -> PyResult<usize> {
    kdmem_core::threads::resolve(threads).py_err()
}
