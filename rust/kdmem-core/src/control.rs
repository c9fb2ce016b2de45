//! Cancellation and progress counters shared between a long-running call and its caller.
//!
//! The caller (the Python binding, or a test) owns a [`Control`]; the worker checks
//! [`Control::check`] at batch boundaries and bumps the counters as it goes. Counters are
//! advisory (for progress bars): they never influence results.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Cancellation flag plus monotone progress counters (documents, tokens, bytes, items).
#[derive(Debug, Default)]
pub struct Control {
    cancelled: AtomicBool,
    /// Documents (or examples) finished so far.
    pub docs: AtomicU64,
    /// Tokens written or scanned so far.
    pub tokens: AtomicU64,
    /// Input bytes consumed so far.
    pub bytes: AtomicU64,
    /// Total work expected in `bytes` units when known up front (0 = unknown), for ETAs.
    pub total_bytes: AtomicU64,
}

impl Control {
    /// A fresh control: not cancelled, all counters zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask the worker to stop at its next batch boundary.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    /// Whether [`Control::cancel`] has been called.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// `Err(Error::Cancelled)` once cancelled; workers call this between batches.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Add to the progress counters.
    pub fn advance(&self, docs: u64, tokens: u64, bytes: u64) {
        self.docs.fetch_add(docs, Ordering::Relaxed);
        self.tokens.fetch_add(tokens, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A snapshot `(docs, tokens, bytes, total_bytes)` of the counters.
    pub fn snapshot(&self) -> (u64, u64, u64, u64) {
        (
            self.docs.load(Ordering::Relaxed),
            self.tokens.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
            self.total_bytes.load(Ordering::Relaxed),
        )
    }
}
