//! kdmem-core: the CPU-heavy corpus work of kdmem, with no Python in sight.
//!
//! Modules mirror the Python package: [`zlib`] (zlib entropy), [`threads`] (the one thread
//! policy), [`memory`] (memory budgets and what indexing a shard costs), [`control`] (cancellation and progress counters shared with the caller) and
//! [`error`] (the structured error every fallible call returns).
//!
//! Every long-running entry point takes a [`control::Control`] so a caller can cancel it and
//! watch its progress; every result is identical for any thread count.

pub mod control;
pub mod error;
pub mod index;
pub mod memory;
pub mod shard;
pub mod threads;
pub mod zlib;

pub use control::Control;
pub use error::{Error, Result};
