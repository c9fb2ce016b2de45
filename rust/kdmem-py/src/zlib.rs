//! Bindings for `kdmem_core::zlib`.

use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::detach;

/// `len(zlib.compress(t.encode("utf-8")))` for every text, in parallel; int64 array.
#[pyfunction]
#[pyo3(signature = (texts, threads=None))]
pub fn zlib_bytes<'py>(
    py: Python<'py>,
    texts: Vec<Bound<'py, PyAny>>,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray1<i64>>> {
    // Borrow the UTF-8 buffers of str objects (and bytes as they are) without copying.
    let mut views: Vec<&[u8]> = Vec::with_capacity(texts.len());
    for t in &texts {
        if let Ok(s) = t.cast::<PyString>() {
            views.push(s.to_str()?.as_bytes());
        } else if let Ok(b) = t.cast::<PyBytes>() {
            views.push(b.as_bytes());
        } else {
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "zlib_bytes expects str or bytes items, got {}; decode token ids to text first",
                t.get_type().name()?
            )));
        }
    }
    let out = detach::run(py, None, |ctl| {
        kdmem_core::zlib::zlib_bytes_many(&views, threads, ctl)
    })?;
    Ok(out.into_pyarray(py))
}

/// Version string of the zlib statically linked into the extension.
#[pyfunction]
pub fn zlib_version() -> &'static str {
    kdmem_core::zlib::linked_version()
}
