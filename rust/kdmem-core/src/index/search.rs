//! Queries over suffix arrays: the search primitives (`Src`) shared by kdmem's units
//! ([`super::unit`]) and infini-gram shards ([`super::infini`]), and all units of an index
//! queried together ([`Corpus`]).
//!
//! Everything here works on borrowed slices (memory maps), so queries touch only the pages
//! they need. Comparisons respect documents: a suffix ends at the end of its document, where it
//! compares below every token (see the module docs of [`super`]). Binary searches keep the
//! longest common prefix with both bounds and skip it (Manber-Myers' "mlr" accelerant), so a
//! search costs O(m + log n) token comparisons on typical text and O(m log n) at worst.

use std::cmp::Ordering;
use std::ops::Range;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::threads;

/// One occurrence: shard index, global document id and token offset inside that document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// Index of the shard among the opened shards (file name order).
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

/// The suffix-array range of `q` (non-empty) by binary search with the "mlr" accelerant: one
/// search down to the first suffix that starts with `q`, then the two boundaries are searched
/// on either side of it only. O(m log n) token comparisons at worst, O(m + log n) typically.
pub(crate) fn binary_range<S: Src + ?Sized>(s: &S, q: &[u32]) -> Range<usize> {
    let (mut lo, mut hi) = (0, s.entries());
    let (mut lcp_lo, mut lcp_hi) = (0usize, 0usize);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let (ord, l) = s.cmp_suffix(s.pos(mid), q, lcp_lo.min(lcp_hi));
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
                let a = s.partition(q, lo, mid, false, lcp_lo, m);
                let b = s.partition(q, mid + 1, hi, true, m, lcp_hi);
                return a..b;
            }
        }
    }
    lo..lo
}

/// Sub-range of `r` (whose suffixes share `l` symbols) whose symbol at offset `l` is `c`, by
/// two binary searches on that symbol. O(log |r|) text reads.
pub(crate) fn binary_narrow<S: Src + ?Sized>(
    s: &S,
    r: Range<usize>,
    l: usize,
    c: u32,
) -> Range<usize> {
    let want = Some(c);
    let (mut lo, mut hi) = (r.start, r.end);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if s.at(s.pos(mid), l) < want {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let start = lo;
    hi = r.end;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if s.at(s.pos(mid), l) <= want {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    start..lo
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

    /// The suffix-array range of the suffixes that start with `q` inside their document (all
    /// entries for the empty query). Default: [`binary_range`].
    fn range(&self, q: &[u32]) -> Range<usize> {
        if q.is_empty() {
            return 0..self.entries();
        }
        binary_range(self, q)
    }

    /// Sub-range of `r` (whose suffixes share `l` symbols) whose symbol at offset `l` is `c`.
    /// Default: [`binary_narrow`].
    fn narrow(&self, r: Range<usize>, l: usize, c: u32) -> Range<usize> {
        binary_narrow(self, r, l, c)
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
                    l = self.cmp_suffix(self.pos(r.start), &q[i..i + limit], l).1;
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

/// What [`Corpus`] needs from one searchable unit of an index (a kdmem unit,
/// [`super::unit::UnitView`], or an infini-gram shard, [`super::infini`]). Positions are the
/// unit's own; ascending positions are in corpus order (shard, then offset).
pub trait QueryShard: Sync {
    /// Tokens in the unit (those of the selected shards only).
    fn n_tokens(&self) -> u64;
    /// Largest token id a query may contain (the dtype's range, minus reserved ids).
    fn max_query_token(&self) -> u64;
    /// Occurrences of `q` inside documents of this unit (`q` empty: every token position).
    fn count(&self, q: &[u32]) -> u64;
    /// Positions of the first `limit` occurrences, ascending.
    fn positions(&self, q: &[u32], limit: usize) -> Vec<u64>;
    /// `out[i] = max(out[i], min(cap, longest prefix of q[i..] occurring here))`.
    fn matching_stats_into(&self, q: &[u32], cap: usize, out: &mut [u32]);
    /// Shard (among the opened ones), global document id and token offset in that document of
    /// a position from [`QueryShard::positions`].
    fn locate_pos(&self, p: u64) -> (u32, u64, u64);
}

/// Shards from which cheap per-shard work (`count`, `locate`) of one query goes to the pool.
const PAR_CHEAP: usize = 8;

/// All units of an index, queried together; every method returns the same result for any
/// thread count (work is split per unit and per query and merged in order).
#[derive(Debug, Clone)]
pub struct Corpus<S> {
    /// The units, in shard order.
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
        for (s, pos) in self.shards.iter().zip(per) {
            for p in pos {
                if rows.len() == limit {
                    return rows;
                }
                let (shard, doc, offset) = s.locate_pos(p);
                rows.push(Location { shard, doc, offset });
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
