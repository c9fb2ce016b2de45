//! Map `kdmem_core::Error` variants onto the exception classes of `kdmem.errors`.
//!
//! The hierarchy lives in Python (one class per core variant, all under `KdmemError`) so it
//! is documented and importable without the extension; here we only look the class up by
//! the variant's [`kdmem_core::Error::kind`] name and instantiate it with the message.

use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError};
use pyo3::prelude::*;

/// Convert a core error into the matching `kdmem.errors` exception.
pub fn to_py(err: kdmem_core::Error) -> PyErr {
    if matches!(err, kdmem_core::Error::Cancelled) {
        return PyKeyboardInterrupt::new_err(err.to_string());
    }
    let kind = err.kind();
    let msg = err.to_string();
    Python::attach(|py| {
        match py
            .import("kdmem.errors")
            .and_then(|m| m.getattr(kind))
            .and_then(|cls| cls.call1((msg.clone(),)))
        {
            Ok(exc) => PyErr::from_value(exc),
            // Only reachable if kdmem.errors is broken; keep the message regardless.
            Err(_) => PyRuntimeError::new_err(format!("{kind}: {msg}")),
        }
    })
}

/// `Result` of the core mapped to a Python result.
pub trait IntoPyResult<T> {
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for kdmem_core::Result<T> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}
