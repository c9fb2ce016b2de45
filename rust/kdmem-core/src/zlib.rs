//! zlib entropy: the byte length of `zlib.compress(text.encode("utf-8"))` at level 6.
//!
//! The study's strongest single predictor of memorization (Borkar et al. 2026, after Carlini
//! et al. 2021) is the zlib-compressed size of an example's text. kdmem links classic zlib
//! statically (libz-sys, bundled sources) and calls `deflate` with exactly CPython's
//! parameters for `zlib.compress(data)`: level 6 (`Z_DEFAULT_COMPRESSION`), method
//! `Z_DEFLATED`, window bits 15 (zlib header + adler32 trailer), memLevel 8, default strategy.
//! Output sizes therefore equal CPython's whenever the host Python links the same classic zlib
//! (zlib-ng builds can differ; `kdmem doctor` warns about that).
//!
//! Cost: one deflate per text, O(len) time, ~268 KiB of zlib state per thread (reused with
//! `deflateReset`), output buffer of `deflateBound(len)` bytes per thread.

use std::cell::RefCell;
use std::ffi::CStr;
use std::mem::MaybeUninit;

use libz_sys as z;
use rayon::prelude::*;

use crate::control::Control;
use crate::error::Result;
use crate::threads;

/// CPython's `zlib.compress` default level.
pub const LEVEL: i32 = 6;
const WINDOW_BITS: i32 = 15;
const MEM_LEVEL: i32 = 8;

/// The version string of the zlib linked into this build (e.g. `"1.3.1"`).
pub fn linked_version() -> &'static str {
    // SAFETY: zlibVersion returns a pointer to a static NUL-terminated string.
    unsafe { CStr::from_ptr(z::zlibVersion()) }
        .to_str()
        .unwrap_or("unknown")
}

/// A reusable deflate stream configured like CPython's `zlib.compress(data)`.
struct Deflater {
    stream: Box<MaybeUninit<z::z_stream>>,
    out: Vec<u8>,
}

impl Deflater {
    fn new() -> Self {
        // zlib requires zalloc/zfree/opaque to be zero (Z_NULL) for default allocators; the
        // zeroed struct gives that. libz-sys declares the fn pointers non-nullable, so we
        // never materialise the struct as a Rust value: we only hand zlib its address.
        let mut stream: Box<MaybeUninit<z::z_stream>> = Box::new(MaybeUninit::zeroed());
        // SAFETY: the stream memory is zeroed (Z_NULL allocators) and lives in a Box that is
        // never moved while zlib holds pointers into it.
        let rc = unsafe {
            z::deflateInit2_(
                stream.as_mut_ptr(),
                LEVEL,
                z::Z_DEFLATED,
                WINDOW_BITS,
                MEM_LEVEL,
                z::Z_DEFAULT_STRATEGY,
                z::zlibVersion(),
                std::mem::size_of::<z::z_stream>() as i32,
            )
        };
        assert_eq!(rc, z::Z_OK, "deflateInit2 failed (out of memory?)");
        Deflater {
            stream,
            out: Vec::new(),
        }
    }

    /// Compressed size of `data` in bytes (header and trailer included).
    fn compressed_len(&mut self, data: &[u8]) -> usize {
        let s = self.stream.as_mut_ptr();
        // SAFETY: `s` was initialised by deflateInit2_ and is exclusively ours; the input and
        // output buffers outlive the deflate call; sizes fit u32 because we feed at most
        // u32::MAX bytes per call (the loop below handles longer inputs).
        unsafe {
            z::deflateReset(s);
            let bound = z::deflateBound(s, data.len().min(u32::MAX as usize) as z::uLong) as usize;
            if self.out.len() < bound.min(1 << 26) {
                self.out.resize(bound.min(1 << 26), 0);
            }
            let mut total = 0usize;
            let mut input = data;
            loop {
                let chunk = input.len().min(u32::MAX as usize);
                (*s).next_in = input.as_ptr() as *mut u8;
                (*s).avail_in = chunk as u32;
                let last = chunk == input.len();
                let flush = if last { z::Z_FINISH } else { z::Z_NO_FLUSH };
                loop {
                    (*s).next_out = self.out.as_mut_ptr();
                    (*s).avail_out = self.out.len() as u32;
                    let rc = z::deflate(s, flush);
                    total += self.out.len() - (*s).avail_out as usize;
                    if rc == z::Z_STREAM_END {
                        return total;
                    }
                    assert!(
                        rc == z::Z_OK || rc == z::Z_BUF_ERROR,
                        "deflate returned {rc}"
                    );
                    if (*s).avail_in == 0 && (!last || (*s).avail_out != 0) {
                        break;
                    }
                }
                input = &input[chunk..];
            }
        }
    }
}

impl Drop for Deflater {
    fn drop(&mut self) {
        // SAFETY: the stream was initialised by deflateInit2_.
        unsafe {
            z::deflateEnd(self.stream.as_mut_ptr());
        }
    }
}

thread_local! {
    static DEFLATER: RefCell<Option<Deflater>> = const { RefCell::new(None) };
}

/// `len(zlib.compress(data))` for one byte string, on the calling thread.
pub fn zlib_bytes(data: &[u8]) -> usize {
    DEFLATER.with(|d| {
        d.borrow_mut()
            .get_or_insert_with(Deflater::new)
            .compressed_len(data)
    })
}

/// [`zlib_bytes`] of every text, in parallel on the resolved pool; output in input order.
///
/// Identical for any thread count. Checks `ctl` for cancellation every 4096 texts.
pub fn zlib_bytes_many<T: AsRef<[u8]> + Sync>(
    texts: &[T],
    threads: Option<usize>,
    ctl: &Control,
) -> Result<Vec<i64>> {
    let pool = threads::pool(threads)?;
    let mut out = vec![0i64; texts.len()];
    pool.install(|| {
        out.par_chunks_mut(4096)
            .zip(texts.par_chunks(4096))
            .try_for_each(|(o, t)| {
                ctl.check()?;
                for (slot, text) in o.iter_mut().zip(t) {
                    *slot = zlib_bytes(text.as_ref()) as i64;
                }
                ctl.advance(
                    t.len() as u64,
                    0,
                    t.iter().map(|x| x.as_ref().len() as u64).sum(),
                );
                Ok(())
            })
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slow oracle: a fresh stream per call with zlib's one-shot `compress2`.
    fn oracle(data: &[u8]) -> usize {
        let mut dest_len = unsafe { z::compressBound(data.len() as z::uLong) };
        let mut out = vec![0u8; dest_len as usize];
        let rc = unsafe {
            z::compress2(
                out.as_mut_ptr(),
                &mut dest_len,
                data.as_ptr(),
                data.len() as z::uLong,
                LEVEL,
            )
        };
        assert_eq!(rc, z::Z_OK);
        dest_len as usize
    }

    #[test]
    fn empty_input_has_header_and_trailer() {
        // zlib.compress(b"") == b"x\x9c\x03\x00\x00\x00\x00\x01" (8 bytes).
        assert_eq!(zlib_bytes(b""), 8);
    }

    #[test]
    fn large_input_crosses_the_output_buffer() {
        let data: Vec<u8> = (0..5_000_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect();
        assert_eq!(zlib_bytes(&data), oracle(&data));
    }

    #[test]
    fn many_is_identical_for_any_thread_count() {
        let texts: Vec<String> = (0..10_000)
            .map(|i| "ab".repeat(i % 97) + &i.to_string())
            .collect();
        let one = zlib_bytes_many(&texts, Some(1), &Control::new()).unwrap();
        let two = zlib_bytes_many(&texts, Some(2), &Control::new()).unwrap();
        assert_eq!(one, two);
        for (t, n) in texts.iter().zip(&one) {
            assert_eq!(*n as usize, oracle(t.as_bytes()));
        }
    }

    #[test]
    fn cancelled_control_stops() {
        let ctl = Control::new();
        ctl.cancel();
        let texts = vec!["x"; 10];
        assert!(zlib_bytes_many(&texts, Some(1), &ctl).is_err());
    }

    proptest::proptest! {
        #[test]
        fn matches_one_shot_compress(data in proptest::collection::vec(proptest::num::u8::ANY, 0..20_000)) {
            proptest::prop_assert_eq!(zlib_bytes(&data), oracle(&data));
        }
    }
}
