//! Queries over suffix arrays: one shard ([`ShardSa`]) and all shards ([`Corpus`]).
//!
//! Everything here works on borrowed slices (memory maps of `.kdt`/`.kdsa` files, or vectors in
//! tests), so opening is O(1) and queries touch only the pages they need.
//!
//! Comparisons respect documents: the suffix at `p` ends at the next set bit of the
//! document-start bitmap after `p`, where it compares below every token (see the module docs
//! of [`super`]). Binary searches keep the longest common prefix with both bounds and skip it
//! (Manber-Myers' "mlr" accelerant), so a search costs O(m + log n) token comparisons on
//! typical text and O(m log n) at worst.

use std::cmp::Ordering;
use std::ops::Range;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::shard::Tokens;
use crate::threads;

/// A suffix array borrowed from a file or a vector.
#[derive(Debug, Clone, Copy)]
pub enum Ptrs<'a> {
    /// 4-byte positions (shards of fewer than 2^32 tokens).
    U32(&'a [u32]),
    /// 8-byte positions.
    U64(&'a [u64]),
}

impl Ptrs<'_> {
    /// Number of entries (= tokens of the shard).
    pub fn len(&self) -> usize {
        match self {
            Ptrs::U32(p) => p.len(),
            Ptrs::U64(p) => p.len(),
        }
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One shard's tokens, document offsets, document-start bitmap and suffix array, borrowed.
///
/// Invariants (checked by the constructors of the owners, not here): `sa` is the
/// document-aware suffix array of `tokens` ([`super::build`]), `starts` has bit `offsets[i]`
/// set for every i and no other bit, and covers positions `0..=n`.
#[derive(Debug, Clone, Copy)]
pub struct ShardSa<'a> {
    /// Token ids.
    pub tokens: Tokens<'a>,
    /// The `n_docs + 1` document offsets.
    pub offsets: &'a [u64],
    /// Document-start bitmap, `n / 64 + 1` words.
    pub starts: &'a [u64],
    /// Suffix array.
    pub sa: Ptrs<'a>,
    /// Global id of the shard's first document (`shards.json` `first_doc`).
    pub first_doc: u64,
}

/// One occurrence: shard index, global document id and token offset inside that document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// Index of the shard in the index (file name order).
    pub shard: u32,
    /// Global document id (`first_doc` of the shard + document index in the shard).
    pub doc: u64,
    /// Token offset of the match inside the document.
    pub offset: u64,
}

/// Which n-grams of a query occur in the index.
#[derive(Debug, Clone, PartialEq)]
pub struct NgramOverlap {
    /// Start positions `i` of the n-grams `q[i..i+n]` that occur (ascending).
    pub positions: Vec<u32>,
    /// Number of n-grams in the query: `max(m - n + 1, 0)`.
    pub total: usize,
    /// `positions.len() / total`; NaN when the query has fewer than `n` tokens.
    pub fraction: f64,
}

trait Sym: Copy + Send + Sync {
    fn get(self) -> u32;
}
impl Sym for u16 {
    #[inline(always)]
    fn get(self) -> u32 {
        u32::from(self)
    }
}
impl Sym for u32 {
    #[inline(always)]
    fn get(self) -> u32 {
        self
    }
}
trait Ptr: Copy + Send + Sync {
    fn get(self) -> usize;
}
impl Ptr for u32 {
    #[inline(always)]
    fn get(self) -> usize {
        self as usize
    }
}
impl Ptr for u64 {
    #[inline(always)]
    fn get(self) -> usize {
        self as usize
    }
}

/// Monomorphised view of one shard.
struct View<'a, T, P> {
    tok: &'a [T],
    sa: &'a [P],
    starts: &'a [u64],
}

impl<T: Sym, P: Ptr> Src for View<'_, T, P> {
    #[inline(always)]
    fn entries(&self) -> usize {
        self.sa.len()
    }

    #[inline(always)]
    fn pos(&self, i: usize) -> usize {
        self.sa[i].get()
    }

    #[inline(always)]
    fn at(&self, pos: usize, k: usize) -> Option<u32> {
        // The bit at pos + k (k >= 1) marks the end of pos's document (bit n is always set).
        let p = pos + k;
        if k > 0 && (self.starts[p >> 6] >> (p & 63)) & 1 == 1 {
            None
        } else {
            Some(self.tok[p].get())
        }
    }

    /// Same result as the generic [`Src::cmp_suffix`], cheaper: the tokens are compared with
    /// `q` first, and the document-start bitmap is read once, over the compared stretch only
    /// (one or two words), instead of once per token. A comparison that fails at its first
    /// token with nothing known (`skip == 0`, the coarse steps of a binary search) never
    /// touches the bitmap, which saves a cache miss per step.
    #[inline]
    fn cmp_suffix(&self, pos: usize, q: &[u32], skip: usize) -> (Ordering, usize) {
        let m = q.len();
        let end = m.min(self.tok.len() - pos);
        // With a known common prefix the bitmap word is needed anyway: load it before the
        // tokens so that the two cache misses overlap (pos + skip <= n: the common prefix
        // lies inside pos's document).
        let first = skip.max(1);
        let word = if skip > 0 {
            self.starts[(pos + first) >> 6]
        } else {
            0
        };
        let mut j = skip;
        while j < end && self.tok[pos + j].get() == q[j] {
            j += 1;
        }
        // The suffix ends at the first document start in pos + [max(skip, 1), min(j, m - 1)]
        // if there is one; bit n is set, so running off the tokens (j = n - pos < m) is found
        // here too.
        if m > 0 && first <= j.min(m - 1) {
            let (a, b) = (pos + first, pos + j.min(m - 1));
            let hit = if skip > 0 && a >> 6 == b >> 6 {
                let w = word & (!0u64 << (a & 63)) & (!0u64 >> (63 - (b & 63)));
                (w != 0).then(|| (a & !63) + w.trailing_zeros() as usize)
            } else {
                first_set_bit(self.starts, a, b)
            };
            if let Some(e) = hit {
                return (Ordering::Less, e - pos);
            }
        }
        if j == m {
            (Ordering::Equal, m)
        } else {
            (self.tok[pos + j].get().cmp(&q[j]), j)
        }
    }
}

/// Position of the first set bit of `bits` in `a..=b` (`a <= b`), if any.
#[inline]
fn first_set_bit(bits: &[u64], a: usize, b: usize) -> Option<usize> {
    let last = b >> 6;
    let mut w = a >> 6;
    let mut word = bits[w] & (!0u64 << (a & 63));
    loop {
        if w == last {
            word &= !0u64 >> (63 - (b & 63));
        }
        if word != 0 {
            return Some((w << 6) + word.trailing_zeros() as usize);
        }
        if w == last {
            return None;
        }
        w += 1;
        word = bits[w];
    }
}

/// A suffix array over some text, seen through the three primitives the searches need. The
/// order of the array must be the lexicographic order of `at(pos, 0), at(pos, 1), ...` with
/// `None` (end of the suffix) below every symbol.
pub(crate) trait Src {
    /// Number of suffix-array entries.
    fn entries(&self) -> usize;
    /// Text position of entry `i`.
    fn pos(&self, i: usize) -> usize;
    /// Symbol `k` of the suffix at `pos`, or `None` once the suffix (its document) has ended;
    /// only called for `k` up to the first `None`.
    fn at(&self, pos: usize, k: usize) -> Option<u32>;

    /// Compare the suffix at `pos` with `q`, knowing that they agree on their first `skip`
    /// symbols. `Equal` means `q` is a prefix of it. Returns the order and the common prefix.
    #[inline]
    fn cmp_suffix(&self, pos: usize, q: &[u32], skip: usize) -> (Ordering, usize) {
        let mut k = skip;
        loop {
            if k == q.len() {
                return (Ordering::Equal, k);
            }
            match self.at(pos, k) {
                None => return (Ordering::Less, k),
                Some(t) if t != q[k] => return (t.cmp(&q[k]), k),
                Some(_) => k += 1,
            }
        }
    }

    /// First index in `[lo, hi)` whose suffix is not below `q` (`upper`: is above `q`), given
    /// the common prefix of `q` with the suffixes just outside the interval (`lcp_lo` at
    /// `lo - 1`, `lcp_hi` at `hi`; 0 when unknown).
    fn partition(
        &self,
        q: &[u32],
        mut lo: usize,
        mut hi: usize,
        upper: bool,
        mut lcp_lo: usize,
        mut lcp_hi: usize,
    ) -> usize {
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (ord, l) = self.cmp_suffix(self.pos(mid), q, lcp_lo.min(lcp_hi));
            let right = match ord {
                Ordering::Less => true,
                Ordering::Equal => upper,
                Ordering::Greater => false,
            };
            if right {
                lo = mid + 1;
                lcp_lo = l;
            } else {
                hi = mid;
                lcp_hi = l;
            }
        }
        lo
    }

    /// The suffix-array range of the suffixes that start with `q` inside their document.
    ///
    /// One search down to the first suffix that starts with `q`, then the two boundaries are
    /// searched on either side of it only.
    fn range(&self, q: &[u32]) -> Range<usize> {
        let (mut lo, mut hi) = (0, self.entries());
        if q.is_empty() {
            return lo..hi;
        }
        let (mut lcp_lo, mut lcp_hi) = (0usize, 0usize);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (ord, l) = self.cmp_suffix(self.pos(mid), q, lcp_lo.min(lcp_hi));
            match ord {
                Ordering::Less => {
                    lo = mid + 1;
                    lcp_lo = l;
                }
                Ordering::Greater => {
                    hi = mid;
                    lcp_hi = l;
                }
                Ordering::Equal => {
                    let m = q.len();
                    let a = self.partition(q, lo, mid, false, lcp_lo, m);
                    let b = self.partition(q, mid + 1, hi, true, m, lcp_hi);
                    return a..b;
                }
            }
        }
        lo..lo
    }

    /// Sub-range of `r` (whose suffixes share `l` symbols) whose symbol at offset `l` is `c`.
    fn narrow(&self, r: Range<usize>, l: usize, c: u32) -> Range<usize> {
        let want = Some(c);
        let (mut lo, mut hi) = (r.start, r.end);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.at(self.pos(mid), l) < want {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let start = lo;
        hi = r.end;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.at(self.pos(mid), l) <= want {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        start..lo
    }

    /// Matching statistics capped at `cap`: `out[i] = max(out[i], min(cap, longest prefix of
    /// q[i..] occurring here inside one document))`.
    ///
    /// Uses `ms[i+1] >= ms[i] - 1`: the search for position `i+1` starts from the known match
    /// of length `ms[i] - 1` and extends one symbol at a time by narrowing the range, so the
    /// total is O(m) range searches plus O(m) narrowing steps.
    fn matching_stats(&self, q: &[u32], cap: usize, out: &mut [u32]) {
        let n = self.entries();
        if n == 0 {
            return;
        }
        let m = q.len();
        let mut l = 0usize;
        for i in 0..m {
            let limit = cap.min(m - i);
            l = l.min(limit);
            let mut r = if l == 0 {
                0..n
            } else {
                self.range(&q[i..i + l])
            };
            debug_assert!(
                !r.is_empty(),
                "q[i..i+l] occurs: it is part of an earlier match"
            );
            while l < limit {
                if r.len() == 1 {
                    let p = self.pos(r.start);
                    while l < limit && self.at(p, l) == Some(q[i + l]) {
                        l += 1;
                    }
                    break;
                }
                let s = self.narrow(r.clone(), l, q[i + l]);
                if s.is_empty() {
                    break;
                }
                r = s;
                l += 1;
            }
            out[i] = out[i].max(l as u32);
            l = l.saturating_sub(1);
        }
    }

    /// Text positions of the first `limit` occurrences of `q` in position order.
    fn positions(&self, q: &[u32], limit: usize) -> Vec<u64> {
        let r = self.range(q);
        let mut v: Vec<u64> = r.map(|i| self.pos(i) as u64).collect();
        if v.len() > limit {
            if limit == 0 {
                return Vec::new();
            }
            v.select_nth_unstable(limit - 1);
            v.truncate(limit);
        }
        v.sort_unstable();
        v
    }
}

macro_rules! with_view {
    ($s:expr, |$v:ident| $body:expr) => {
        match ($s.tokens, $s.sa) {
            (Tokens::U16(tok), Ptrs::U32(sa)) => {
                let $v = View {
                    tok,
                    sa,
                    starts: $s.starts,
                };
                $body
            }
            (Tokens::U16(tok), Ptrs::U64(sa)) => {
                let $v = View {
                    tok,
                    sa,
                    starts: $s.starts,
                };
                $body
            }
            (Tokens::U32(tok), Ptrs::U32(sa)) => {
                let $v = View {
                    tok,
                    sa,
                    starts: $s.starts,
                };
                $body
            }
            (Tokens::U32(tok), Ptrs::U64(sa)) => {
                let $v = View {
                    tok,
                    sa,
                    starts: $s.starts,
                };
                $body
            }
        }
    };
}

/// What [`Corpus`] needs from one shard of an index (kdmem's own [`ShardSa`], or an
/// infini-gram shard, [`super::infini`]).
pub trait QueryShard: Sync {
    /// Tokens in the shard.
    fn n_tokens(&self) -> u64;
    /// Global id of the shard's first document.
    fn first_doc(&self) -> u64;
    /// Largest token id a query may contain (the dtype's range, minus reserved ids).
    fn max_query_token(&self) -> u64;
    /// Occurrences of `q` inside documents of this shard (`q` empty: every token position).
    fn count(&self, q: &[u32]) -> u64;
    /// Shard positions (any unit [`QueryShard::doc_of`] understands) of the first `limit`
    /// occurrences, ascending.
    fn positions(&self, q: &[u32], limit: usize) -> Vec<u64>;
    /// `out[i] = max(out[i], min(cap, longest prefix of q[i..] occurring here))`.
    fn matching_stats_into(&self, q: &[u32], cap: usize, out: &mut [u32]);
    /// Document index (in this shard) and token offset in it of a position from `positions`.
    fn doc_of(&self, p: u64) -> (u64, u64);
}

impl ShardSa<'_> {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the shard has no tokens.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

impl QueryShard for ShardSa<'_> {
    fn n_tokens(&self) -> u64 {
        self.tokens.len() as u64
    }

    fn first_doc(&self) -> u64 {
        self.first_doc
    }

    fn max_query_token(&self) -> u64 {
        match self.tokens {
            Tokens::U16(_) => u64::from(u16::MAX),
            Tokens::U32(_) => u64::from(u32::MAX),
        }
    }

    fn count(&self, q: &[u32]) -> u64 {
        with_view!(self, |v| v.range(q).len() as u64)
    }

    fn positions(&self, q: &[u32], limit: usize) -> Vec<u64> {
        with_view!(self, |v| v.positions(q, limit))
    }

    fn matching_stats_into(&self, q: &[u32], cap: usize, out: &mut [u32]) {
        assert_eq!(out.len(), q.len(), "one output per query position");
        with_view!(self, |v| v.matching_stats(q, cap, out))
    }

    fn doc_of(&self, p: u64) -> (u64, u64) {
        // The last document starting at or before p (skips empty documents).
        let d = self.offsets.partition_point(|&o| o <= p) - 1;
        (d as u64, p - self.offsets[d])
    }
}

/// Shards from which cheap per-shard work (`count`, `locate`) of one query goes to the pool.
const PAR_CHEAP: usize = 8;

/// All shards of an index, queried together; every method returns the same result for any
/// thread count (work is split per shard and per query and merged in order).
#[derive(Debug, Clone)]
pub struct Corpus<S> {
    /// The shards, in file name order.
    pub shards: Vec<S>,
    /// Tokens must be below this (0 = unknown: only the dtype's range is enforced).
    pub vocab_size: u32,
}

impl<S: QueryShard> Corpus<S> {
    /// Total tokens over all shards.
    pub fn n_tokens(&self) -> u64 {
        self.shards.iter().map(|s| s.n_tokens()).sum()
    }

    /// Largest token id a query may contain.
    fn max_token(&self) -> u64 {
        let dtype_max = self
            .shards
            .iter()
            .map(|s| s.max_query_token())
            .min()
            .unwrap_or(u64::from(u32::MAX));
        if self.vocab_size > 0 {
            dtype_max.min(u64::from(self.vocab_size) - 1)
        } else {
            dtype_max
        }
    }

    /// [`Error::TokenOutOfRange`] for the first query token beyond the vocabulary.
    pub fn check_query(&self, q: &[u32]) -> Result<()> {
        let max = self.max_token();
        if let Some(&t) = q.iter().find(|&&t| u64::from(t) > max) {
            let context = if self.vocab_size > 0 {
                format!("this index (vocabulary of {} tokens)", self.vocab_size)
            } else {
                format!("this index (token ids up to {max})")
            };
            return Err(Error::TokenOutOfRange {
                token: u64::from(t),
                max,
                context,
                fix: "tokenize queries with the tokenizer the shards were made with".into(),
            });
        }
        Ok(())
    }

    /// Map `f` over the shards in order; in parallel once there are at least `min_par`
    /// shards (a `count` per shard takes microseconds, less than handing work to the pool).
    fn par_shards<R: Send>(&self, min_par: usize, f: impl Fn(&S) -> R + Sync + Send) -> Vec<R> {
        if self.shards.len() < min_par.max(2) {
            self.shards.iter().map(f).collect()
        } else {
            self.shards.par_iter().map(f).collect()
        }
    }

    fn count_one(&self, q: &[u32]) -> u64 {
        self.par_shards(PAR_CHEAP, |s| s.count(q)).into_iter().sum()
    }

    fn locate_one(&self, q: &[u32], limit: usize) -> Vec<Location> {
        let per: Vec<Vec<u64>> = self.par_shards(PAR_CHEAP, |s| s.positions(q, limit));
        let mut rows = Vec::new();
        for (k, (s, pos)) in self.shards.iter().zip(per).enumerate() {
            for p in pos {
                if rows.len() == limit {
                    return rows;
                }
                let (d, off) = s.doc_of(p);
                rows.push(Location {
                    shard: k as u32,
                    doc: s.first_doc() + d,
                    offset: off,
                });
            }
        }
        rows
    }

    fn stats_one(&self, q: &[u32], cap: usize) -> Vec<u32> {
        let per = self.par_shards(2, |s| {
            let mut out = vec![0u32; q.len()];
            s.matching_stats_into(q, cap, &mut out);
            out
        });
        let mut out = vec![0u32; q.len()];
        for v in per {
            for (o, x) in out.iter_mut().zip(v) {
                *o = (*o).max(x);
            }
        }
        out
    }

    fn overlap_one(&self, q: &[u32], n: usize) -> NgramOverlap {
        let total = (q.len() + 1).saturating_sub(n);
        let ms = if total == 0 {
            Vec::new()
        } else {
            self.stats_one(q, n)
        };
        let positions: Vec<u32> = (0..total)
            .filter(|&i| ms[i] as usize >= n)
            .map(|i| i as u32)
            .collect();
        let fraction = if total == 0 {
            f64::NAN
        } else {
            positions.len() as f64 / total as f64
        };
        NgramOverlap {
            positions,
            total,
            fraction,
        }
    }

    fn check_n(n: usize) -> Result<()> {
        if n == 0 {
            return Err(Error::InvalidArgument {
                name: "n".into(),
                value: "0".into(),
                fix: "n-grams need n >= 1".into(),
            });
        }
        Ok(())
    }

    fn batch<R: Send>(
        &self,
        queries: &[&[u32]],
        threads: Option<usize>,
        f: impl Fn(&[u32]) -> R + Sync + Send,
    ) -> Result<Vec<R>> {
        for q in queries {
            self.check_query(q)?;
        }
        let pool = threads::pool(threads)?;
        Ok(pool.install(|| queries.par_iter().map(|q| f(q)).collect()))
    }

    fn single<R: Send>(
        &self,
        q: &[u32],
        threads: Option<usize>,
        min_par: usize,
        f: impl FnOnce(&[u32]) -> R + Send,
    ) -> Result<R> {
        self.check_query(q)?;
        if self.shards.len() < min_par.max(2) {
            return Ok(f(q));
        }
        Ok(threads::pool(threads)?.install(|| f(q)))
    }

    /// Occurrences of `q` over all shards, never across a document boundary. The empty query
    /// occurs at every token position (result: the total token count).
    pub fn count(&self, q: &[u32], threads: Option<usize>) -> Result<u64> {
        self.single(q, threads, PAR_CHEAP, |q| self.count_one(q))
    }

    /// The first `limit` occurrences of `q` in corpus order (shard, then position).
    pub fn locate(&self, q: &[u32], limit: usize, threads: Option<usize>) -> Result<Vec<Location>> {
        self.single(q, threads, PAR_CHEAP, |q| self.locate_one(q, limit))
    }

    /// Matching statistics: entry `i` is the length of the longest prefix of `q[i..]` that
    /// occurs inside one document of the index (0 when `q[i]` never occurs).
    pub fn longest_match(&self, q: &[u32], threads: Option<usize>) -> Result<Vec<u32>> {
        self.single(q, threads, 2, |q| self.stats_one(q, usize::MAX))
    }

    /// Which n-grams `q[i..i+n]` occur in the index; see [`NgramOverlap`].
    pub fn ngram_overlap(
        &self,
        q: &[u32],
        n: usize,
        threads: Option<usize>,
    ) -> Result<NgramOverlap> {
        Self::check_n(n)?;
        self.single(q, threads, 2, |q| self.overlap_one(q, n))
    }

    /// [`Corpus::count`] for many queries, in parallel over queries and shards.
    pub fn count_many(&self, queries: &[&[u32]], threads: Option<usize>) -> Result<Vec<u64>> {
        self.batch(queries, threads, |q| self.count_one(q))
    }

    /// [`Corpus::locate`] for many queries.
    pub fn locate_many(
        &self,
        queries: &[&[u32]],
        limit: usize,
        threads: Option<usize>,
    ) -> Result<Vec<Vec<Location>>> {
        self.batch(queries, threads, |q| self.locate_one(q, limit))
    }

    /// [`Corpus::longest_match`] for many queries.
    pub fn longest_match_many(
        &self,
        queries: &[&[u32]],
        threads: Option<usize>,
    ) -> Result<Vec<Vec<u32>>> {
        self.batch(queries, threads, |q| self.stats_one(q, usize::MAX))
    }

    /// [`Corpus::ngram_overlap`] for many queries.
    pub fn ngram_overlap_many(
        &self,
        queries: &[&[u32]],
        n: usize,
        threads: Option<usize>,
    ) -> Result<Vec<NgramOverlap>> {
        Self::check_n(n)?;
        self.batch(queries, threads, |q| self.overlap_one(q, n))
    }
}
