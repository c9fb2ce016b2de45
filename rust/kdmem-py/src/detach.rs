//! Run a long core call with the GIL released, while the calling thread keeps watching
//! for Ctrl-C and drives an optional Python progress callback.
//!
//! The work runs on a scoped thread (so it may borrow data the caller holds); the calling
//! thread wakes every 100 ms, re-attaches, runs `check_signals` and the callback, and on
//! KeyboardInterrupt cancels the [`Control`] and waits for the worker to stop at its next
//! batch boundary. Nothing partial is published by the core on cancellation.

use std::sync::mpsc;
use std::time::Duration;

use kdmem_core::Control;
use pyo3::prelude::*;

use crate::errors::to_py;

/// Run `work` detached from the interpreter; see the module docs.
///
/// `progress`, when given, is called as `progress(docs, tokens, bytes, total_bytes)` on the
/// calling thread roughly ten times a second and once at the end.
pub fn run<T, F>(py: Python<'_>, progress: Option<&Bound<'_, PyAny>>, work: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce(&Control) -> kdmem_core::Result<T> + Send,
{
    let ctl = Control::new();
    let report = |py: Python<'_>, ctl: &Control| -> PyResult<()> {
        if let Some(cb) = progress {
            let (d, t, b, tb) = ctl.snapshot();
            cb.call1((d, t, b, tb))?;
        }
        let _ = py;
        Ok(())
    };
    let (result, interrupt) = std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel();
        // A Mutex makes the receiver Sync so the detached wait may borrow it.
        let rx = std::sync::Mutex::new(rx);
        let ctl_ref = &ctl;
        s.spawn(move || {
            let r = work(ctl_ref);
            let _ = tx.send(r);
        });
        let mut interrupt: Option<PyErr> = None;
        loop {
            let got = py.detach(|| {
                rx.lock()
                    .expect("receiver lock is never poisoned: only this thread takes it")
                    .recv_timeout(Duration::from_millis(100))
            });
            match got {
                Ok(r) => break (r, interrupt),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    break (Err(kdmem_core::Error::Cancelled), interrupt)
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if interrupt.is_none() {
                        if let Err(e) = py.check_signals().and_then(|_| report(py, &ctl)) {
                            ctl.cancel();
                            interrupt = Some(e);
                        }
                    }
                }
            }
        }
    });
    if let Some(e) = interrupt {
        return Err(e);
    }
    let value = result.map_err(to_py)?;
    report(py, &ctl)?;
    Ok(value)
}
