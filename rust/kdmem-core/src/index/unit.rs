//! Queries over one index unit: its shards' tokens (memory-mapped), its document table and
//! samples (in RAM) and its suffix-array pages (memory-mapped, [`super::format`]).
//!
//! # The lookup (`count`, the start of every search)
//!
//! A query `q` of `m` tokens is placed among the samples (one per segment of 292 entries, in
//! RAM) by a binary search on their first `sample_tokens` tokens; only a sample that agrees
//! with `q` on all of those is compared with the text. That leaves one segment whose first
//! entry `s_b` is below `q` (known exact common prefix `λ`) while the next sample is not; the
//! occurrences of `q` (a contiguous run of the suffix array) start in that segment or at the
//! next sample. The segment (half a page) is then read from its lcp and hash bytes:
//!
//! - `lcp[i] < λ`: the suffix leaves `q`'s branch upwards; nothing later matches (stop);
//! - `lcp[i] > λ`: same common prefix with `q` as the previous entry;
//! - `lcp[i] == λ`: the token after the prefix differs from the previous entry's; if its hash
//!   differs from `q[λ]`'s, the prefix with `q` stays `λ`, else it rises.
//!
//! The common prefix along a segment is unimodal (it rises up to `q`'s place and falls after
//! it), so `Typed::scan_fast` takes every possible rise for a real one and reads the text
//! only at the last: one read confirms the peak and whether it reaches `m`; a contradiction (a
//! hash collision) falls back to `Typed::scan`, which reads the text at every possible rise
//! (an *event*). When the next sample matches `q` too, the run goes on past the segment; the
//! last matching sample is found in RAM (sample lcps, or the sample keys when
//! `m <= sample_tokens`) and its segment is scanned for the end of the run. A stored lcp of
//! `lcp_cap` means "at least", so for `m > lcp_cap` saturated entries are events too.
//!
//! Cost: O(log(n / 292)) RAM comparisons + one page (one OS page: one read when cold) + at
//! most one text read, typically + a second page when the run crosses a segment. Every answer
//! equals the binary search of `Src::range`, which the property tests check along with a
//! naive scan. `narrow` (the step of matching statistics) uses the same bytes for ranges of up
//! to two pages and the samples' tokens to find the pages of larger ones.

use std::cmp::Ordering;
use std::ops::Range;

use super::format::{Keys, Layout, Pages, Samples};
use super::search::{QueryShard, Src};

/// Document starts of a unit, in RAM: `starts[d]` is the unit position of document `d`'s
/// first token, plus the unit length at the end. A coarse table over position buckets of
/// `2^shift` tokens (about one document each) makes [`DocTable::upper`] O(1) on typical text.
/// Bytes: 8 per document + 4 per bucket.
#[derive(Debug, Clone, Default)]
pub struct DocTable {
    starts: Vec<u64>,
    coarse: Vec<u32>,
    shift: u32,
}

impl DocTable {
    /// `starts`: the start of every document (empty ones included), non-decreasing, then
    /// the unit length `n` (so `n_docs + 1` entries).
    pub fn new(starts: Vec<u64>) -> Self {
        let n = *starts.last().unwrap_or(&0);
        let docs = (starts.len() as u64).saturating_sub(1).max(1);
        let shift = (n / docs).max(1).ilog2().min(40);
        let buckets = if n == 0 {
            0
        } else {
            ((n - 1) >> shift) as usize + 2
        };
        let coarse = (0..buckets)
            .map(|k| starts.partition_point(|&s| s <= (k as u64) << shift) as u32)
            .collect();
        DocTable {
            starts,
            coarse,
            shift,
        }
    }

    /// Index of the first document start greater than `pos` (`pos` < n): the document holding
    /// `pos` is the one before it, and its end is `starts[upper(pos)]`.
    #[inline(always)]
    pub fn upper(&self, pos: u64) -> usize {
        let k = (pos >> self.shift) as usize;
        let (lo, hi) = (self.coarse[k] as usize, self.coarse[k + 1] as usize);
        lo + self.starts[lo..hi].partition_point(|&s| s <= pos)
    }

    /// End (exclusive) of the document holding `pos`.
    #[inline(always)]
    pub fn end_of(&self, pos: u64) -> u64 {
        self.starts[self.upper(pos)]
    }

    /// Document holding `pos` (the last non-empty document starting at or before it).
    pub fn doc_of(&self, pos: u64) -> usize {
        self.upper(pos) - 1
    }

    /// Start of document `d`.
    pub fn start(&self, d: usize) -> u64 {
        self.starts[d]
    }

    /// Bytes held in RAM.
    pub fn ram_bytes(&self) -> usize {
        self.starts.len() * 8 + self.coarse.len() * 4
    }
}

/// One token slice of a unit: `len` tokens starting at unit position `base`, borrowed from a
/// shard's memory map that the owning [`super::dir::Index`] keeps alive.
#[derive(Debug, Clone, Copy)]
pub struct TextSlice {
    /// First token (u16 or u32, aligned).
    pub ptr: *const u8,
    /// Tokens.
    pub len: usize,
    /// Unit position of the first token.
    pub base: u64,
}

// SAFETY: a TextSlice points into an immutable, read-only memory map.
unsafe impl Send for TextSlice {}
// SAFETY: as above; nothing writes through the pointer.
unsafe impl Sync for TextSlice {}

/// The tokens of a unit: one slice per covered shard (or the piece's part of one shard).
#[derive(Debug, Clone, Copy)]
pub struct UnitText<'a, T> {
    slices: &'a [TextSlice],
    _t: std::marker::PhantomData<&'a [T]>,
}

impl<'a, T> UnitText<'a, T> {
    /// # Safety
    /// Every slice must point to `len` valid, aligned values of `T` that stay mapped and
    /// unchanged for `'a`, and the slices must be ascending by `base`, starting at 0.
    pub unsafe fn new(slices: &'a [TextSlice]) -> Self {
        UnitText {
            slices,
            _t: std::marker::PhantomData,
        }
    }

    /// The tokens from unit position `pos` to the end of its slice (a suffix never leaves
    /// its document, hence never its slice).
    #[inline(always)]
    fn from(&self, pos: u64) -> &'a [T] {
        let s = if self.slices.len() == 1 {
            0
        } else {
            self.slices.partition_point(|x| x.base <= pos) - 1
        };
        let sl = self.slices[s];
        // SAFETY: guaranteed by the constructor's contract.
        let all = unsafe { std::slice::from_raw_parts(sl.ptr.cast::<T>(), sl.len) };
        &all[(pos - sl.base) as usize..]
    }
}

/// Either token width.
#[derive(Debug, Clone)]
pub enum TextRef<'a> {
    /// u16 shards.
    U16(UnitText<'a, u16>),
    /// u32 shards.
    U32(UnitText<'a, u32>),
}

/// One covered shard as seen from a unit.
#[derive(Debug, Clone, Copy)]
pub struct ShardSlot {
    /// Unit position of the shard's first token in this unit.
    pub base_tok: u64,
    /// Unit document index of the shard's first document in this unit.
    pub base_doc: u64,
    /// Global id of that document.
    pub first_doc: u64,
    /// Position of the shard among the opened shards, if it is selected.
    pub sel: Option<u32>,
}

/// A unit as the query engine sees it (cheap to copy: borrows everything).
#[derive(Debug, Clone)]
pub struct UnitView<'a> {
    /// Tokens.
    pub text: TextRef<'a>,
    /// Document starts (RAM).
    pub docs: &'a DocTable,
    /// Suffix-array pages (map).
    pub pages: Pages<'a>,
    /// 4 or 8.
    pub ptr_width: u32,
    /// Samples (RAM).
    pub samples: &'a Samples,
    /// Layout the file was written with.
    pub layout: Layout,
    /// Covered shards, ascending by `base_tok`.
    pub shards: &'a [ShardSlot],
    /// For a unit only partly selected: the selected shards' position ranges (sorted,
    /// disjoint); results are filtered to them. `None`: the whole unit is selected.
    pub allowed: Option<&'a [Range<u64>]>,
    /// Largest token id a query may contain.
    pub max_token: u64,
}

trait Sym: Copy + Send + Sync {
    fn get(self) -> u32;
    /// The sampled tokens, stored at this width.
    fn keys(k: &Keys) -> &[Self];
}
impl Sym for u16 {
    #[inline(always)]
    fn get(self) -> u32 {
        u32::from(self)
    }
    fn keys(k: &Keys) -> &[u16] {
        match k {
            Keys::U16(v) => v,
            Keys::U32(_) => &[],
        }
    }
}
impl Sym for u32 {
    #[inline(always)]
    fn get(self) -> u32 {
        self
    }
    fn keys(k: &Keys) -> &[u32] {
        match k {
            Keys::U32(v) => v,
            Keys::U16(_) => &[],
        }
    }
}
trait Ptr: Copy {
    const W: usize;
    fn read(b: &[u8]) -> u64;
}
struct P4;
struct P8;
impl Ptr for P4 {
    const W: usize = 4;
    #[inline(always)]
    fn read(b: &[u8]) -> u64 {
        u64::from(u32::from_le_bytes(b[..4].try_into().expect("4 bytes")))
    }
}
impl Clone for P4 {
    fn clone(&self) -> Self {
        *self
    }
}
impl Copy for P4 {}
impl Ptr for P8 {
    const W: usize = 8;
    #[inline(always)]
    fn read(b: &[u8]) -> u64 {
        u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
    }
}
impl Clone for P8 {
    fn clone(&self) -> Self {
        *self
    }
}
impl Copy for P8 {}

/// Monomorphised view of a unit.
struct Typed<'a, T, P> {
    text: UnitText<'a, T>,
    docs: &'a DocTable,
    pages: Pages<'a>,
    samples: &'a Samples,
    keys: &'a [T],
    /// Entries per segment (one sample each).
    stride: usize,
    layout: Layout,
    _p: std::marker::PhantomData<P>,
}

/// Where a sample stands relative to the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rel {
    Below,
    Match,
    Above,
}

impl<T: Sym, P: Ptr> Typed<'_, T, P> {
    /// The stored tokens of sample `b`.
    #[inline(always)]
    fn key(&self, b: usize) -> &[T] {
        let k = self.samples.k;
        &self.keys[b * k..b * k + self.samples.len[b] as usize]
    }

    /// Sample `b` against `q`: its relation and exact common prefix (reads the text only when
    /// the stored key agrees with `q` on all its tokens and `q` is longer).
    fn sample_rel(&self, b: usize, q: &[u32]) -> (Rel, usize) {
        let key = self.key(b);
        let m = q.len();
        let lim = m.min(key.len());
        let mut j = 0;
        while j < lim && key[j].get() == q[j] {
            j += 1;
        }
        if j == m {
            return (Rel::Match, m);
        }
        if j < key.len() {
            return (
                if key[j].get() < q[j] {
                    Rel::Below
                } else {
                    Rel::Above
                },
                j,
            );
        }
        if key.len() < self.samples.k {
            // The sample's document ends here: it sorts below q.
            return (Rel::Below, j);
        }
        match self.cmp_suffix(self.samples.pos[b] as usize, q, j) {
            (Ordering::Equal, l) => (Rel::Match, l),
            (Ordering::Less, l) => (Rel::Below, l),
            (Ordering::Greater, l) => (Rel::Above, l),
        }
    }

    /// Scan the segment of entry `e0` (a sample, whose common prefix with `q` is `lambda`)
    /// from `e0 + 1`; returns the first entry matching `q` (if any) and the entry where the
    /// scan stopped: the end of the run, the first entry above `q`, or the end of the
    /// segment. A segment lies in one page.
    fn scan(&self, e0: usize, mut lambda: usize, q: &[u32]) -> (Option<usize>, usize) {
        let m = q.len();
        let cap = self.layout.lcp_cap as usize;
        let pp = self.pages.per_page;
        let page = self.pages.page(e0);
        let first_entry = page * pp;
        let seg_end = (e0 / self.stride + 1) * self.stride;
        let slots = (self.pages.n.min(seg_end) - first_entry).min(pp);
        let at = page * self.pages.page_bytes + pp * P::W;
        let lcps = &self.pages.bytes[at..at + slots];
        let hashes = &self.pages.bytes[at + pp..at + pp + 2 * slots];
        let hash = |slot: usize| u16::from_le_bytes([hashes[2 * slot], hashes[2 * slot + 1]]);
        let entry = |slot: usize| first_entry + slot;
        let mut first = (lambda == m).then_some(e0);
        let mut want = if lambda < m {
            self.layout.hash(q[lambda])
        } else {
            0
        };
        let mut slot = e0 - first_entry + 1;
        while slot < slots {
            if lambda == m {
                // In the run: it goes on while lcp >= m (a capped lcp needs the text if m > cap).
                let need = m.min(cap) as u8;
                match lcps[slot..]
                    .iter()
                    .position(|&l| l < need || (l as usize == cap && m > cap))
                {
                    None => return (first, entry(slots)),
                    Some(d) => slot += d,
                }
                let l = lcps[slot] as usize;
                if l == cap && self.cmp_suffix(self.pos(entry(slot)), q, cap).1 == m {
                    slot += 1;
                    continue;
                }
                return (first, entry(slot));
            }
            // Below the run: skip entries that share more than lambda with the previous one.
            let lam = lambda.min(255) as u8;
            match lcps[slot..].iter().position(|&l| l <= lam) {
                None => return (first, entry(slots)),
                Some(d) => slot += d,
            }
            let l = lcps[slot] as usize;
            if l == cap && lambda >= cap {
                let li = self.cmp_suffix(self.pos(entry(slot)), q, cap).1;
                if li < lambda {
                    return (first, entry(slot));
                }
                if li > lambda {
                    lambda = li;
                    if lambda == m {
                        first = Some(entry(slot));
                    } else {
                        want = self.layout.hash(q[lambda]);
                    }
                }
                slot += 1;
                continue;
            }
            if l < lambda {
                return (first, entry(slot));
            }
            let h = hash(slot);
            if h != 0 && h == want {
                let li = self.cmp_suffix(self.pos(entry(slot)), q, lambda).1;
                if li > lambda {
                    lambda = li;
                    if lambda == m {
                        first = Some(entry(slot));
                    } else {
                        want = self.layout.hash(q[lambda]);
                    }
                }
            }
            slot += 1;
        }
        (first, entry(slots))
    }

    /// The scan of [`Typed::scan`] for a sample below `q` (`lambda < m <= lcp_cap`), reading
    /// the text at most once: the common prefix with `q` along a segment rises to a peak (at
    /// `q`'s place) and falls after it, and it rises only at entries whose lcp with their
    /// predecessor equals the current common prefix and whose hash is `q`'s token there.
    /// Every such entry is taken to be a rise (the current prefix becomes at least its lcp +
    /// 1); the last one is then read: if its text confirms the rise, it is the peak, and it
    /// starts the run iff its common prefix is `m`. `None` (use the exact scan) if the text
    /// contradicts: a hash collision misled the guesses.
    fn scan_fast(&self, e0: usize, lambda: usize, q: &[u32]) -> Option<(Option<usize>, usize)> {
        let m = q.len();
        let cap = self.layout.lcp_cap as usize;
        if lambda >= m || m > cap {
            return None;
        }
        let pp = self.pages.per_page;
        let first_entry = self.pages.page(e0) * pp;
        let seg_end = (e0 / self.stride + 1) * self.stride;
        let slots = (self.pages.n.min(seg_end) - first_entry).min(pp);
        let at = (first_entry / pp) * self.pages.page_bytes + pp * P::W;
        let lcps = &self.pages.bytes[at..at + slots];
        let hashes = &self.pages.bytes[at + pp..at + pp + 2 * slots];
        let hash = |slot: usize| u16::from_le_bytes([hashes[2 * slot], hashes[2 * slot + 1]]);
        let mut want = [0u16; 256];
        for (w, &t) in want.iter_mut().zip(q) {
            *w = self.layout.hash(t);
        }
        // `floor`: a lower bound of the current common prefix (exact, `lambda`, until the
        // first guess); `low`: the least lcp since the last guess. A rise happens at an entry
        // whose lcp is the current common prefix, which no entry since the last rise is
        // below: so a guess needs `floor <= lcp <= low` (and `lcp == lambda` before any).
        let mut floor = lambda;
        let mut low = lambda;
        let mut last: Option<usize> = None;
        let mut stop = slots;
        for (slot, &l) in lcps.iter().enumerate().skip(e0 - first_entry + 1) {
            let l = l as usize;
            if l < floor {
                stop = slot;
                break;
            }
            if l <= low && l < m && hash(slot) == want[l] && want[l] != 0 {
                last = Some(slot);
                floor = l + 1;
                low = usize::MAX;
            } else {
                low = low.min(l);
            }
        }
        let Some(c) = last else {
            return Some((None, first_entry + stop));
        };
        let lc = lcps[c] as usize;
        let li = self.cmp_suffix(self.pos(first_entry + c), q, 0).1;
        if li <= lc {
            return None;
        }
        if li < m {
            return Some((None, first_entry + stop));
        }
        let mut end = c + 1;
        while end < slots && lcps[end] as usize >= m {
            end += 1;
        }
        Some((Some(first_entry + c), first_entry + end))
    }

    /// End of the run of matches that contains sample `f` (which matches `q`).
    fn run_end(&self, f: usize, q: &[u32]) -> usize {
        let m = q.len();
        let ns = self.samples.len();
        let cap = self.layout.lcp_cap as usize;
        let c = if m <= self.samples.k {
            // Keys decide exactly: binary search for the first sample above q.
            let (mut lo, mut hi) = (f + 1, ns);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if self.sample_rel(mid, q).0 == Rel::Match {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            lo - 1
        } else {
            let mut c = f;
            while c + 1 < ns {
                let l = self.samples.lcp[c + 1] as usize;
                let matches = if l < cap || m <= cap {
                    l >= m
                } else {
                    self.sample_rel(c + 1, q).0 == Rel::Match
                };
                if !matches {
                    break;
                }
                c += 1;
            }
            c
        };
        self.scan(c * self.stride, m, q).1
    }

    /// The suffix-array range of the suffixes starting with `q` (`q` non-empty); see the
    /// module docs.
    fn lookup(&self, q: &[u32]) -> Range<usize> {
        let ns = self.samples.len();
        if ns == 0 {
            return 0..0;
        }
        let pp = self.stride;
        let m = q.len();
        // First sample that is not below q; remember the relation of the probes at the edges.
        let (mut lo, mut hi) = (0usize, ns);
        let mut below_l = 0usize; // common prefix of sample lo - 1 (below) with q
        let mut at_hi: Option<(Rel, usize)> = None;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let r = self.sample_rel(mid, q);
            if r.0 == Rel::Below {
                lo = mid + 1;
                below_l = r.1;
            } else {
                hi = mid;
                at_hi = Some(r);
            }
        }
        let f = lo;
        let rel_f = if f == ns {
            Rel::Above
        } else {
            match at_hi {
                Some((rel, _)) => rel,
                None => self.sample_rel(f, q).0,
            }
        };
        if f == 0 {
            return match rel_f {
                Rel::Match => 0..self.run_end(0, q),
                _ => 0..0,
            };
        }
        let b = f - 1;
        let (first, stop) = self
            .scan_fast(b * pp, below_l, q)
            .unwrap_or_else(|| self.scan(b * pp, below_l, q));
        if rel_f == Rel::Match {
            let start = first.unwrap_or(f * pp);
            return start..self.run_end(f, q);
        }
        let _ = m;
        match first {
            Some(s) => s..stop,
            None => stop..stop,
        }
    }
}

impl<T: Sym, P: Ptr> Src for Typed<'_, T, P> {
    #[inline(always)]
    fn entries(&self) -> usize {
        self.pages.n
    }

    #[inline(always)]
    fn pos(&self, i: usize) -> usize {
        let (page, slot) = self.pages.slot(i);
        P::read(&self.pages.bytes[page + slot * P::W..]) as usize
    }

    #[inline(always)]
    fn at(&self, pos: usize, k: usize) -> Option<u32> {
        let p = pos as u64;
        if p + k as u64 >= self.docs.end_of(p) {
            None
        } else {
            Some(self.text.from(p)[k].get())
        }
    }

    #[inline]
    fn cmp_suffix(&self, pos: usize, q: &[u32], skip: usize) -> (Ordering, usize) {
        let p = pos as u64;
        let avail = (self.docs.end_of(p) - p) as usize;
        let s = self.text.from(p);
        let m = q.len();
        let lim = m.min(avail);
        let mut j = skip;
        while j < lim && s[j].get() == q[j] {
            j += 1;
        }
        if j == m {
            (Ordering::Equal, m)
        } else if j == avail {
            (Ordering::Less, j)
        } else {
            (s[j].get().cmp(&q[j]), j)
        }
    }

    fn range(&self, q: &[u32]) -> Range<usize> {
        if q.is_empty() {
            return 0..self.pages.n;
        }
        self.lookup(q)
    }

    /// Small ranges (at most two pages, `l` below the lcp cap): [`Typed::narrow_small`].
    /// Larger ones, while `l` is within the sampled tokens: the samples inside `r` (in RAM)
    /// give the symbol at `l` of every page's first entry, which leaves one window of a page
    /// at each end of the group for `narrow_small`. Otherwise binary search.
    fn narrow(&self, r: Range<usize>, l: usize, c: u32) -> Range<usize> {
        let pp = self.pages.per_page;
        let cap = self.layout.lcp_cap as usize;
        if r.len() <= 2 * pp && l < cap {
            return self.narrow_small(r, l, c);
        }
        if l >= self.samples.k || l >= cap {
            return super::search::binary_narrow(self, r, l, c);
        }
        // Samples b_lo..b_hi (exclusive) are entries of r.
        let pp = self.stride;
        let b_lo = r.start.div_ceil(pp);
        let b_hi = (r.end - 1) / pp + 1;
        let tok = |b: usize| self.key(b).get(l).map(|t| t.get());
        let want = Some(c);
        // First sample in [lo, hi) where `pred` fails (the predicates are monotone in b).
        let first = |mut lo: usize, mut hi: usize, pred: &dyn Fn(usize) -> bool| {
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if pred(mid) {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            lo
        };
        let bs = first(b_lo, b_hi, &|b| tok(b) < want);
        let be = first(bs, b_hi, &|b| tok(b) <= want);
        let low = |b: usize| if b > b_lo { (b - 1) * pp + 1 } else { r.start };
        let high = |b: usize| if b < b_hi { b * pp } else { r.end };
        if bs == be {
            return self.narrow_small(low(bs)..high(bs), l, c);
        }
        let s = self.narrow_small(low(bs)..bs * pp + 1, l, c).start;
        let e = self.narrow_small((be - 1) * pp..high(be), l, c).end;
        s..e
    }
}

impl<T: Sym, P: Ptr> Typed<'_, T, P> {
    /// For a range of at most two pages (and `l` below the lcp cap), one pass over its lcp
    /// and hash bytes: the group of suffixes with symbol `c` at offset `l` starts at an entry
    /// whose lcp is `l` (or at `r.start`) and whose hash is `c`'s, checked against the text,
    /// and ends at the next entry whose lcp is `l` (or at `r.end`).
    fn narrow_small(&self, r: Range<usize>, l: usize, c: u32) -> Range<usize> {
        let pp = self.pages.per_page;
        if r.is_empty() {
            return r;
        }
        let hc = self.layout.hash(c);
        let mut start = (self.at(self.pos(r.start), l) == Some(c)).then_some(r.start);
        let mut j = r.start + 1;
        while j < r.end {
            let page = self.pages.page(j);
            let first = page * pp;
            let hi = r.end.min(first + pp);
            let at = page * self.pages.page_bytes + pp * P::W;
            let lcps = &self.pages.bytes[at + (j - first)..at + (hi - first)];
            let hashes = &self.pages.bytes[at + pp + 2 * (j - first)..at + pp + 2 * (hi - first)];
            for (k, (&lc, h)) in lcps.iter().zip(hashes.chunks_exact(2)).enumerate() {
                let h = u16::from_le_bytes([h[0], h[1]]);
                if lc as usize != l {
                    continue;
                }
                let g = j + k;
                if let Some(s) = start {
                    return s..g;
                }
                if h != 0 && h == hc && self.at(self.pos(g), l) == Some(c) {
                    start = Some(g);
                }
            }
            j = hi;
        }
        match start {
            Some(s) => s..r.end,
            None => r.end..r.end,
        }
    }
}

macro_rules! typed {
    ($u:expr, |$v:ident| $body:expr) => {{
        let u = $u;
        macro_rules! inner {
            ($text:expr, $p:ty) => {{
                let $v = Typed::<_, $p> {
                    text: *$text,
                    docs: u.docs,
                    pages: u.pages,
                    samples: u.samples,
                    keys: Sym::keys(&u.samples.keys),
                    stride: u.pages.per_page / u.layout.samples_per_page.max(1) as usize,
                    layout: u.layout,
                    _p: std::marker::PhantomData,
                };
                $body
            }};
        }
        match (&u.text, u.ptr_width) {
            (TextRef::U16(t), 4) => inner!(t, P4),
            (TextRef::U16(t), _) => inner!(t, P8),
            (TextRef::U32(t), 4) => inner!(t, P4),
            (TextRef::U32(t), _) => inner!(t, P8),
        }
    }};
}

impl UnitView<'_> {
    /// Whether unit position `p` belongs to a selected shard.
    #[inline]
    fn allowed(&self, p: u64) -> bool {
        match self.allowed {
            None => true,
            Some(r) => {
                let k = r.partition_point(|x| x.end <= p);
                k < r.len() && r[k].start <= p
            }
        }
    }

    /// The suffix-array range of `q` (all of it for the empty query), ignoring the selection.
    pub fn range(&self, q: &[u32]) -> Range<usize> {
        typed!(self, |v| v.range(q))
    }

    /// The same range by plain binary search (the reference the lookup is tested against).
    pub fn range_by_binary_search(&self, q: &[u32]) -> Range<usize> {
        typed!(self, |v| {
            if q.is_empty() {
                0..v.entries()
            } else {
                super::search::binary_range(&v, q)
            }
        })
    }

    /// `narrow` by the page scan and by binary search (tests compare them).
    #[cfg(test)]
    pub(crate) fn narrow_both(
        &self,
        r: Range<usize>,
        l: usize,
        c: u32,
    ) -> (Range<usize>, Range<usize>) {
        typed!(self, |v| (
            v.narrow(r.clone(), l, c),
            super::search::binary_narrow(&v, r.clone(), l, c)
        ))
    }

    /// Text position of suffix-array entry `i`.
    pub fn entry(&self, i: usize) -> u64 {
        typed!(self, |v| v.pos(i) as u64)
    }

    fn exists_allowed(&self, q: &[u32]) -> bool {
        typed!(self, |v| {
            let r = v.range(q);
            r.into_iter().any(|i| self.allowed(v.pos(i) as u64))
        })
    }
}

impl QueryShard for UnitView<'_> {
    fn n_tokens(&self) -> u64 {
        match self.allowed {
            None => self.pages.n as u64,
            Some(r) => r.iter().map(|x| x.end - x.start).sum(),
        }
    }

    fn max_query_token(&self) -> u64 {
        self.max_token
    }

    fn count(&self, q: &[u32]) -> u64 {
        if q.is_empty() {
            return self.n_tokens();
        }
        typed!(self, |v| {
            let r = v.range(q);
            match self.allowed {
                None => r.len() as u64,
                Some(_) => r.filter(|&i| self.allowed(v.pos(i) as u64)).count() as u64,
            }
        })
    }

    fn positions(&self, q: &[u32], limit: usize) -> Vec<u64> {
        typed!(self, |v| {
            let r = v.range(q);
            let mut out: Vec<u64> = r
                .map(|i| v.pos(i) as u64)
                .filter(|&p| self.allowed(p))
                .collect();
            if out.len() > limit {
                if limit == 0 {
                    return Vec::new();
                }
                out.select_nth_unstable(limit - 1);
                out.truncate(limit);
            }
            out.sort_unstable();
            out
        })
    }

    fn matching_stats_into(&self, q: &[u32], cap: usize, out: &mut [u32]) {
        assert_eq!(out.len(), q.len(), "one output per query position");
        if self.allowed.is_none() {
            return typed!(self, |v| v.matching_stats(q, cap, out));
        }
        // Restricted to some shards of the unit: grow each match while an occurrence in a
        // selected shard remains (ms[i + 1] >= ms[i] - 1 holds there too).
        let m = q.len();
        let mut l = 0usize;
        for i in 0..m {
            let limit = cap.min(m - i);
            l = l.min(limit);
            while l < limit && self.exists_allowed(&q[i..i + l + 1]) {
                l += 1;
            }
            out[i] = out[i].max(l as u32);
            l = l.saturating_sub(1);
        }
    }

    fn locate_pos(&self, p: u64) -> (u32, u64, u64) {
        let d = self.docs.doc_of(p);
        let s = self.shards.partition_point(|x| x.base_tok <= p) - 1;
        let slot = &self.shards[s];
        (
            slot.sel.expect("positions are filtered to selected shards"),
            slot.first_doc + (d as u64 - slot.base_doc),
            p - self.docs.start(d),
        )
    }
}
