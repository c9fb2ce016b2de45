//! Suffix sorting of one shard with libsais, document-aware.
//!
//! [`sort`] copies the shard into `t' = doc_0+1, 0, doc_1+1, 0, ...` (every token shifted up
//! by one, a `0` after every non-empty document), suffix-sorts `t'` with libsais and keeps the
//! positions that are not separators, mapped back to shard coordinates
//! (`p = p' - separators before p'`, O(1) each with a rank directory of 2 words per 64
//! positions). Because `0` sorts below every shifted token and the query alphabet never
//! contains it, the order restricted to shard positions is the order of document-truncated
//! suffixes with a smallest sentinel; ties are broken by the following text, which makes the
//! result unique (independent of threads and machine).
//!
//! libsais variant by input (n' = n + non-empty documents):
//!
//! | tokens | `t'` | suffix array while sorting | peak bytes per token |
//! |---|---|---|---|
//! | u16, max id <= 65534, n' < 2^31 | u16 (libsais16) | i32 | 2 + 4 + 0.375 = 6.4 |
//! | u32 (or u16 with id 65535), n' < 2^31 | i32 (libsais_int, alphabet max+2) | i32 | 4 + 4 + 0.375 = 8.4 |
//! | u16, n' >= 2^31 | u16 (libsais16x64) | i64 | 2 + 8 + 0.375 = 10.4 |
//! | u32, n' >= 2^31 | i64 (libsais64) | i64 | 8 + 8 + 0.375 = 16.4 |
//!
//! (0.25 B/token of rank directory and 0.125 B/token of document-start bitmap included; the
//! shard's own pages are not touched after the copy.) Time: O(n'), single-threaded per shard;
//! [`super::build_dir`] runs shards in parallel.

use libsais::suffix_array::AlphabetSize;
use libsais::{LibsaisError, SuffixArrayConstruction};

use crate::error::{Error, Result};
use crate::shard::Tokens;

/// Text positions at or above this use the 64-bit libsais variants (libsais needs a little
/// scratch space above the text length in 32-bit mode).
const I32_LIMIT: usize = i32::MAX as usize - 8192;

/// The suffix array of one shard, still in libsais' output buffer; see the module docs.
pub struct SortedShard {
    n: usize,
    raw: Raw,
    /// Leading entries of `raw` that are separator positions (always sorted first).
    seps: usize,
    /// Per 64 positions of `t'`: [separator bits, separators in all earlier words].
    rank: Vec<[u64; 2]>,
    /// Document-start bitmap over shard positions `0..=n` (bit `offsets[i]` set for every i).
    pub starts: Vec<u64>,
}

enum Raw {
    I32(Vec<i32>),
    I64(Vec<i64>),
}

/// The suffix array as stored: u32 entries while the shard has fewer than 2^32 tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PtrVec {
    /// 4-byte positions.
    U32(Vec<u32>),
    /// 8-byte positions.
    U64(Vec<u64>),
}

/// Pointer width in bytes for a shard of `n` tokens: 4 when `n < 2^32`, else 8.
pub fn ptr_width(n: u64) -> u32 {
    if n < (1u64 << 32) {
        4
    } else {
        8
    }
}

/// Document-start bitmap over positions `0..=n`: `(n + 64) / 64` words, bit `offsets[i]` set.
pub fn start_bits(n: usize, offsets: &[u64]) -> Vec<u64> {
    let mut bits = vec![0u64; n / 64 + 1];
    for &o in offsets {
        let o = o as usize;
        bits[o >> 6] |= 1 << (o & 63);
    }
    bits
}

impl SortedShard {
    /// Number of shard positions (= tokens).
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether the shard has no tokens.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Bytes per stored position: 4 or 8 (see [`ptr_width`]).
    pub fn ptr_width(&self) -> u32 {
        ptr_width(self.n as u64)
    }

    #[inline]
    fn to_shard(&self, p: u64) -> u64 {
        let p = p as usize;
        let [bits, before] = self.rank[p >> 6];
        let mask = (1u64 << (p & 63)) - 1;
        p as u64 - before - u64::from((bits & mask).count_ones())
    }

    /// Call `f` on consecutive chunks (at most `chunk` entries) of the suffix array in shard
    /// coordinates; used to stream it to disk without a second n-sized buffer.
    pub fn for_each_chunk(
        &self,
        chunk: usize,
        mut f: impl FnMut(&[u64]) -> Result<()>,
    ) -> Result<()> {
        let mut buf = Vec::with_capacity(chunk.min(self.n).max(1));
        macro_rules! go {
            ($v:expr) => {
                for part in $v[self.seps..].chunks(chunk.max(1)) {
                    buf.clear();
                    buf.extend(part.iter().map(|&p| self.to_shard(p as u64)));
                    f(&buf)?;
                }
            };
        }
        match &self.raw {
            Raw::I32(v) => go!(v),
            Raw::I64(v) => go!(v),
        }
        Ok(())
    }

    /// The suffix array in shard coordinates, converted in place (no second buffer).
    pub fn into_ptrs(self) -> PtrVec {
        let (n, seps) = (self.n, self.seps);
        let wide = self.ptr_width() == 8;
        let conv = |p: u64| {
            let p = p as usize;
            let [bits, before] = self.rank[p >> 6];
            p as u64 - before - u64::from((bits & ((1u64 << (p & 63)) - 1)).count_ones())
        };
        match self.raw {
            Raw::I32(mut v) => {
                for j in 0..n {
                    v[j] = conv(v[j + seps] as u64) as i32;
                }
                v.truncate(n);
                PtrVec::U32(v.into_iter().map(|x| x as u32).collect())
            }
            Raw::I64(mut v) => {
                for j in 0..n {
                    v[j] = conv(v[j + seps] as u64) as i64;
                }
                v.truncate(n);
                if wide {
                    PtrVec::U64(v.into_iter().map(|x| x as u64).collect())
                } else {
                    PtrVec::U32(v.into_iter().map(|x| x as u32).collect())
                }
            }
        }
    }
}

fn sais_err(e: LibsaisError, n: usize) -> Error {
    Error::InvalidArgument {
        name: "shard".into(),
        value: format!("{n} tokens"),
        fix: format!(
            "libsais failed ({e:?}): suffix sorting needs ~6-8 bytes per token per concurrent \
             shard; build with fewer --threads or re-shard with a smaller --shard-tokens"
        ),
    }
}

/// Copy the documents into `t'` (shifted by `map`, a `sep` after each non-empty document) and
/// build the rank directory of separator positions.
fn transform<T: Copy, U: Copy>(
    tok: &[T],
    offsets: &[u64],
    map: impl Fn(T) -> U,
    sep: U,
) -> (Vec<U>, Vec<[u64; 2]>, usize) {
    let nonempty = offsets.windows(2).filter(|w| w[1] > w[0]).count();
    let total = tok.len() + nonempty;
    let mut t = Vec::with_capacity(total);
    let mut rank = vec![[0u64; 2]; total / 64 + 1];
    for w in offsets.windows(2) {
        let (a, b) = (w[0] as usize, w[1] as usize);
        if a == b {
            continue;
        }
        t.extend(tok[a..b].iter().map(|&x| map(x)));
        let p = t.len();
        rank[p >> 6][0] |= 1 << (p & 63);
        t.push(sep);
    }
    let mut before = 0u64;
    for r in rank.iter_mut() {
        r[1] = before;
        before += u64::from(r[0].count_ones());
    }
    (t, rank, nonempty)
}

/// The transformed copy `t'` of a shard, ready for libsais; the shard itself is no longer
/// needed once this exists (drop its memory map to keep the build's peak memory low).
pub struct Prepared {
    n: usize,
    text: Text,
    rank: Vec<[u64; 2]>,
    seps: usize,
    starts: Vec<u64>,
    /// Alphabet size of `t'` (max token + 2).
    k: usize,
}

enum Text {
    Empty,
    U16 { t: Vec<u16>, wide: bool },
    I32(Vec<i32>),
    I64(Vec<i64>),
}

/// Copy one shard (tokens + `n_docs + 1` document offsets) into `t'`; see the module docs.
///
/// `force_wide` selects the 64-bit libsais variants even for small shards (tests use it to
/// cover the code path taken by shards of 2^31 tokens and more).
pub fn prepare(tokens: Tokens<'_>, offsets: &[u64], force_wide: bool) -> Prepared {
    let n = tokens.len();
    debug_assert!(offsets.first() == Some(&0) && offsets.last() == Some(&(n as u64)));
    let starts = start_bits(n, offsets);
    let max = match tokens {
        Tokens::U16(t) => t.iter().copied().max().map_or(0, u32::from),
        Tokens::U32(t) => t.iter().copied().max().unwrap_or(0),
    };
    let k = max as usize + 2; // alphabet of t': separator 0, tokens 1..=max+1
    if n == 0 {
        return Prepared {
            n,
            text: Text::Empty,
            rank: vec![[0, 0]],
            seps: 0,
            starts,
            k,
        };
    }
    let nonempty_upper = offsets.len().saturating_sub(1).min(n);
    let wide = force_wide || n + nonempty_upper >= I32_LIMIT || k >= I32_LIMIT;
    let small16 = matches!(tokens, Tokens::U16(_)) && max <= 65534;
    let (text, rank, seps) = match (tokens, small16, wide) {
        (Tokens::U16(t), true, _) => {
            let (t, rank, seps) = transform(t, offsets, |x| x + 1, 0u16);
            (Text::U16 { t, wide }, rank, seps)
        }
        (Tokens::U16(t), false, false) => {
            let (t, r, s) = transform(t, offsets, |x| i32::from(x) + 1, 0i32);
            (Text::I32(t), r, s)
        }
        (Tokens::U32(t), _, false) => {
            let (t, r, s) = transform(t, offsets, |x| x as i32 + 1, 0i32);
            (Text::I32(t), r, s)
        }
        (Tokens::U16(t), false, true) => {
            let (t, r, s) = transform(t, offsets, |x| i64::from(x) + 1, 0i64);
            (Text::I64(t), r, s)
        }
        (Tokens::U32(t), _, true) => {
            let (t, r, s) = transform(t, offsets, |x| i64::from(x) + 1, 0i64);
            (Text::I64(t), r, s)
        }
    };
    Prepared {
        n,
        text,
        rank,
        seps,
        starts,
        k,
    }
}

impl Prepared {
    /// Run libsais (single-threaded, O(n')); `t'` is freed before returning. Errors only when
    /// libsais fails (out of memory).
    pub fn sort(self) -> Result<SortedShard> {
        let (n, k) = (self.n, self.k);
        let raw = match self.text {
            Text::Empty => Raw::I32(Vec::new()),
            Text::U16 { t, wide: false } => Raw::I32(
                SuffixArrayConstruction::for_text(&t[..])
                    .in_owned_buffer32()
                    .single_threaded()
                    .run()
                    .map_err(|e| sais_err(e, n))?
                    .into_vec(),
            ),
            Text::U16 { t, wide: true } => Raw::I64(
                SuffixArrayConstruction::for_text(&t[..])
                    .in_owned_buffer64()
                    .single_threaded()
                    .run()
                    .map_err(|e| sais_err(e, n))?
                    .into_vec(),
            ),
            Text::I32(mut t) => {
                let mut c = SuffixArrayConstruction::for_text_mut(&mut t[..])
                    .in_owned_buffer32()
                    .single_threaded();
                // SAFETY: every value of t' lies in 0..=max+1 < k (tokens shifted by one,
                // separators 0); k < i32::MAX because the 32-bit variant was chosen.
                unsafe {
                    c = c.with_alphabet_size(AlphabetSize::new(k as i32));
                }
                Raw::I32(c.run().map_err(|e| sais_err(e, n))?.into_vec())
            }
            Text::I64(mut t) => {
                let mut c = SuffixArrayConstruction::for_text_mut(&mut t[..])
                    .in_owned_buffer64()
                    .single_threaded();
                // SAFETY: every value of t' lies in 0..=max+1 < k, all non-negative.
                unsafe {
                    c = c.with_alphabet_size(AlphabetSize::new(k as i64));
                }
                Raw::I64(c.run().map_err(|e| sais_err(e, n))?.into_vec())
            }
        };
        Ok(SortedShard {
            n,
            raw,
            seps: self.seps,
            rank: self.rank,
            starts: self.starts,
        })
    }
}

/// [`prepare`] then [`Prepared::sort`]: the suffix array of one in-memory shard.
pub fn sort(tokens: Tokens<'_>, offsets: &[u64], force_wide: bool) -> Result<SortedShard> {
    prepare(tokens, offsets, force_wide).sort()
}
