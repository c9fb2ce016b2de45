//! The one thread policy: `threads` argument, else `KDMEM_NUM_THREADS`, else all cores.
//!
//! Pools are cached per size so repeated calls (one per batch from Python) do not respawn
//! threads. Results never depend on the pool size: work is split into fixed-size, ordered
//! chunks and merged in input order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::error::{Error, Result};

/// Environment variable read when no explicit thread count is given.
pub const ENV_THREADS: &str = "KDMEM_NUM_THREADS";

/// Resolve the thread count: explicit value, else `KDMEM_NUM_THREADS`, else available cores.
///
/// `Some(0)` is rejected with [`Error::InvalidArgument`].
pub fn resolve(threads: Option<usize>) -> Result<usize> {
    match threads {
        Some(0) => Err(Error::InvalidArgument {
            name: "threads".into(),
            value: "0".into(),
            fix: "pass a positive thread count, or omit it to use every core".into(),
        }),
        Some(n) => Ok(n),
        None => match std::env::var(ENV_THREADS) {
            Ok(v) => match v.trim().parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(Error::InvalidArgument {
                    name: ENV_THREADS.into(),
                    value: v,
                    fix: "set it to a positive integer or unset it".into(),
                }),
            },
            Err(_) => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
        },
    }
}

/// A rayon pool with the resolved number of threads (cached per size).
pub fn pool(threads: Option<usize>) -> Result<Arc<ThreadPool>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<ThreadPool>>>> = OnceLock::new();
    let n = resolve(threads)?;
    let mut pools = POOLS
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(p) = pools.get(&n) {
        return Ok(Arc::clone(p));
    }
    let p = ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("kdmem-{i}"))
        .build()
        .map_err(|e| Error::InvalidArgument {
            name: "threads".into(),
            value: n.to_string(),
            fix: format!("the OS refused to start the threads ({e}); use fewer"),
        })?;
    let p = Arc::new(p);
    pools.insert(n, Arc::clone(&p));
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_threads_is_an_error() {
        assert!(matches!(
            resolve(Some(0)),
            Err(Error::InvalidArgument { .. })
        ));
    }

    #[test]
    fn explicit_count_wins_and_pools_are_cached() {
        assert_eq!(resolve(Some(3)).unwrap(), 3);
        let a = pool(Some(2)).unwrap();
        let b = pool(Some(2)).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.current_num_threads(), 2);
    }
}
