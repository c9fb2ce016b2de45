//! Suffix sorting of one index unit with libsais, document-aware, and writing its `.kdsa`.
//!
//! [`prepare`] streams the unit's tokens from its shard files (plain reads, no memory map, so
//! the shard's pages never count toward the process's resident memory; one pass) into
//! `t' = doc_0+1, 0, doc_1+1, 0, ...` (every token shifted up by one, a `0` after every
//! non-empty document); [`Prepared::sort`] suffix-sorts `t'` with libsais and keeps `t'`;
//! [`Sorted::write`] streams the suffix array to disk page by page, converting positions of
//! `t'` back to unit positions (`p = p' - separators before p'`, O(1) with `Rank`) and
//! computing each entry's capped lcp with its predecessor and the
//! hash of the token after it from `t'` (a `0` ends a suffix, so lcps stop at document ends).
//! Because `0` sorts below every shifted token and queries never contain it, the order
//! restricted to unit positions is the order of document-truncated suffixes with a smallest
//! sentinel; ties are broken by the following text, which makes the result unique
//! (independent of threads and machine).
//!
//! libsais variant by input (n' = n + non-empty documents), and the peak memory of a build:
//!
//! | tokens | `t'` | suffix array while sorting | peak bytes per token |
//! |---|---|---|---|
//! | u16, max id <= 65534, n' < 2^31 | u16 (libsais16) | i32 | 2 + 4 + 0.25 = 6.25 |
//! | u32 (or u16 with id 65535), n' < 2^31 | i32 (libsais_int) | i32 | 4 + 4 + 0.25 = 8.25 |
//! | u16, n' >= 2^31 | u16 (libsais16x64) | i64 | 2 + 8 + 0.25 = 10.25 |
//! | u32, n' >= 2^31 | i64 (libsais64) | i64 | 8 + 8 + 0.25 = 16.25 |
//!
//! plus the samples (0.15 B/token) and 2 MiB of buffers; [`bytes_per_token`] rounds these up
//! for the memory planner. Time: O(n') for the sort (single-threaded per unit; units run in
//! parallel) and O(n * average capped lcp) for the write pass, whose random reads of `t'` are
//! prefetched 16 entries ahead.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use libsais::suffix_array::AlphabetSize;
use libsais::{LibsaisError, SuffixArrayConstruction};

use super::format::{CoveredShard, Layout, SaHeader, SaWriter, Samples};
use crate::error::{Error, Result};
use crate::shard::{Dtype, ShardReader, Tokens};

/// Text positions at or above this use the 64-bit libsais variants (libsais needs a little
/// scratch space above the text length in 32-bit mode).
pub(crate) const I32_LIMIT: usize = i32::MAX as usize - 8192;

/// Peak build memory per token of a unit (rounded up from the table in the module docs).
pub fn bytes_per_token(token_width: u32, wide: bool) -> f64 {
    match (token_width, wide) {
        (2, false) => crate::memory::INDEX_BYTES_PER_TOKEN_U16,
        (_, false) => crate::memory::INDEX_BYTES_PER_TOKEN_U32,
        (2, true) => 10.5,
        (_, true) => 16.5,
    }
}

/// Pointer width in bytes for a unit of `n` tokens: 4 when `n < 2^32`, else 8.
pub fn ptr_width(n: u64) -> u32 {
    if n < (1u64 << 32) {
        4
    } else {
        8
    }
}

fn sais_err(e: LibsaisError, n: usize) -> Error {
    Error::InvalidArgument {
        name: "unit".into(),
        value: format!("{n} tokens"),
        fix: format!(
            "libsais failed ({e:?}): suffix sorting needs ~6.5-8.5 bytes per token per unit \
             built at once; pass a smaller --memory budget than the machine can give, or fewer \
             --threads"
        ),
    }
}

/// Part of one shard that goes into a unit: tokens `[tok_start, tok_end)` made of the
/// documents `[doc_start, doc_end)`.
#[derive(Debug, Clone)]
pub struct Source {
    /// The `.kdt` file.
    pub path: PathBuf,
    /// First token.
    pub tok_start: u64,
    /// One past the last token.
    pub tok_end: u64,
    /// First document.
    pub doc_start: u64,
    /// One past the last document.
    pub doc_end: u64,
}

/// The transformed copy `t'` of a unit, ready for libsais.
pub struct Prepared {
    n: usize,
    text: Text,
    rank: Rank,
    seps: usize,
    /// Alphabet size of `t'` (max token + 2).
    k: usize,
}

enum Text {
    Empty,
    U16 { t: Vec<u16>, wide: bool },
    I32(Vec<i32>),
    I64(Vec<i64>),
}

/// Read tokens `[a, b)` of a shard file in chunks, calling `f` on each chunk.
fn stream_tokens(
    path: &Path,
    dtype: Dtype,
    a: u64,
    b: u64,
    mut f: impl FnMut(Tokens<'_>),
) -> Result<()> {
    const CHUNK: usize = 1 << 19;
    let w = u64::from(dtype.width());
    let mut file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    file.seek(SeekFrom::Start(128 + a * w))
        .map_err(|e| Error::io("read", path, e))?;
    let mut bytes = vec![0u8; CHUNK * w as usize];
    let mut left = b - a;
    while left > 0 {
        let take = (left as usize).min(CHUNK);
        let buf = &mut bytes[..take * w as usize];
        file.read_exact(buf)
            .map_err(|e| Error::io("read", path, e))?;
        match dtype {
            Dtype::U16 => {
                let v: Vec<u16> = buf
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect();
                f(Tokens::U16(&v));
            }
            Dtype::U32 => {
                let v: Vec<u32> = buf
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect();
                f(Tokens::U32(&v));
            }
        }
        left -= take as u64;
    }
    Ok(())
}

/// Maps positions of `t'` to unit positions: `p = p' - (separators before p')`.
///
/// Two forms, whichever is smaller: the separators' positions with a coarse table over
/// buckets of about one document (8 bytes per document + 4 per bucket: 0.02 B/token on
/// 750-token documents, so it stays in cache), or a rank directory (2 words per 64 positions,
/// 0.25 B/token) when documents average fewer than ~48 tokens. Both answer in O(1).
pub(crate) enum Rank {
    Seps {
        pos: Vec<u64>,
        coarse: Vec<u32>,
        shift: u32,
    },
    Bits(Vec<[u64; 2]>),
}

impl Rank {
    fn new(seps: Vec<u64>, total: usize) -> Self {
        let n = seps.len();
        if n * 12 > total / 4 {
            let mut bits = vec![[0u64; 2]; total / 64 + 1];
            for &p in &seps {
                bits[(p >> 6) as usize][0] |= 1 << (p & 63);
            }
            let mut before = 0u64;
            for r in bits.iter_mut() {
                r[1] = before;
                before += u64::from(r[0].count_ones());
            }
            return Rank::Bits(bits);
        }
        let shift = (total / n.max(1)).max(1).ilog2().min(40);
        let buckets = (total >> shift) + 2;
        let coarse = (0..buckets)
            .map(|k| seps.partition_point(|&s| s < (k as u64) << shift) as u32)
            .collect();
        Rank::Seps {
            pos: seps,
            coarse,
            shift,
        }
    }

    /// Unit position of the token at `t'` position `p`.
    #[inline(always)]
    fn to_unit(&self, p: usize) -> u64 {
        match self {
            Rank::Seps { pos, coarse, shift } => {
                let k = p >> shift;
                let (lo, hi) = (coarse[k] as usize, coarse[k + 1] as usize);
                let before = lo + pos[lo..hi].partition_point(|&s| s < p as u64);
                (p - before) as u64
            }
            Rank::Bits(bits) => {
                let [w, before] = bits[p >> 6];
                p as u64 - before - u64::from((w & ((1u64 << (p & 63)) - 1)).count_ones())
            }
        }
    }

    #[inline(always)]
    fn prefetch(&self, p: usize) {
        if let Rank::Bits(bits) = self {
            prefetch(bits, p >> 6);
        }
    }
}

/// Ask for transparent huge pages on a large buffer before it is first written (on Linux with
/// THP in `madvise` mode): the sort and the write pass read `t'` and the suffix array at
/// random, and 2 MiB pages spare most TLB misses on arrays of gigabytes. Best effort.
fn advise_huge<T>(v: &[T]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = (v.as_ptr() as usize).div_ceil(HUGE) * HUGE;
        let end = (v.as_ptr() as usize + std::mem::size_of_val(v)) / HUGE * HUGE;
        if end > start + 4 * HUGE {
            // SAFETY: the range lies inside the buffer's allocation; MADV_HUGEPAGE changes
            // only how the kernel backs it, never its contents.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}

/// A zeroed vector of `n` values backed by huge pages where the OS allows (see
/// [`advise_huge`]); `vec![0; n]` maps fresh zero pages, so advising before the first write
/// takes effect.
fn huge_zeroed<T: Copy + Default>(n: usize) -> Vec<T> {
    let v = vec![T::default(); n];
    advise_huge(&v);
    v
}

/// Copies tokens into `t'` and records the separators.
struct Filler<U> {
    t: Vec<U>,
    seps: Vec<u64>,
}

impl<U: Copy> Filler<U> {
    fn push(&mut self, x: U) {
        self.t.push(x);
    }
    fn sep(&mut self, sep: U) {
        self.seps.push(self.t.len() as u64);
        self.t.push(sep);
    }
}

/// Fill `t'` from the sources: tokens mapped by `map`, `sep` after every non-empty document.
/// Returns the text, the separators and the largest token of each source (None: empty);
/// `map` returns None for a token it cannot represent, which stops the fill (the caller
/// retries with a wider type).
#[allow(clippy::type_complexity)]
fn fill<U: Copy>(
    sources: &[(Source, Dtype, Vec<u64>)],
    total: usize,
    map: impl Fn(u32) -> Option<U>,
    sep: U,
) -> Result<Option<(Vec<U>, Rank, Vec<Option<u32>>)>> {
    let mut f = Filler {
        t: Vec::with_capacity(total),
        seps: Vec::new(),
    };
    advise_huge(f.t.spare_capacity_mut());
    let mut maxes = Vec::with_capacity(sources.len());
    let mut overflow = false;
    for (src, dtype, ends) in sources {
        // `ends`: end positions (in the shard) of the non-empty documents, ascending.
        let mut next = 0usize;
        let mut p = src.tok_start;
        let mut max: Option<u32> = None;
        stream_tokens(&src.path, *dtype, src.tok_start, src.tok_end, |chunk| {
            if overflow {
                return;
            }
            for i in 0..chunk.len() {
                let x = chunk.get(i);
                max = max.max(Some(x));
                let Some(u) = map(x) else {
                    overflow = true;
                    return;
                };
                f.push(u);
                p += 1;
                if next < ends.len() && ends[next] == p {
                    f.sep(sep);
                    next += 1;
                }
            }
        })?;
        if overflow {
            return Ok(None);
        }
        maxes.push(max);
    }
    let rank = Rank::new(f.seps, total);
    Ok(Some((f.t, rank, maxes)))
}

/// Read the unit's documents into `t'` (one pass over the token bytes of each source; the
/// shards' checksums are the caller's to verify first, see [`ShardReader::verify`]) and
/// check them against the vocabulary; see the module docs. `force_wide` selects the 64-bit
/// libsais variants even for small units (tests use it to cover that path).
pub fn prepare(sources: &[Source], force_wide: bool) -> Result<Prepared> {
    let mut with_ends = Vec::new();
    let mut n = 0usize;
    let mut nonempty = 0usize;
    let mut any_u32 = false;
    let mut vocab = Vec::new();
    for src in sources {
        let shard = ShardReader::open(&src.path)?;
        let offs = &shard.offsets()[src.doc_start as usize..=src.doc_end as usize];
        let ends: Vec<u64> = offs
            .windows(2)
            .filter(|w| w[1] > w[0])
            .map(|w| w[1])
            .collect();
        let dtype = shard.dtype();
        any_u32 |= dtype == Dtype::U32;
        vocab.push(shard.vocab_size());
        n += (src.tok_end - src.tok_start) as usize;
        nonempty += ends.len();
        with_ends.push((src.clone(), dtype, ends));
    }
    if n == 0 {
        return Ok(Prepared {
            n,
            text: Text::Empty,
            rank: Rank::Bits(vec![[0, 0]]),
            seps: 0,
            k: 2,
        });
    }
    let total = n + nonempty;
    let wide = force_wide || total >= I32_LIMIT;
    // The narrowest text type that holds every token + 1; a token that does not fit (id
    // 65535 in a u16 shard, or an id of 2^31 or more) restarts the fill one type wider.
    let mut filled = None;
    if !any_u32 {
        filled = fill(
            &with_ends,
            total,
            |x| (x < 65535).then(|| x as u16 + 1),
            0u16,
        )?
        .map(|(t, r, m)| (Text::U16 { t, wide }, r, m));
    }
    if filled.is_none() && !wide {
        filled = fill(
            &with_ends,
            total,
            |x| ((x as usize) < I32_LIMIT - 2).then(|| x as i32 + 1),
            0i32,
        )?
        .map(|(t, r, m)| (Text::I32(t), r, m));
    }
    let (text, rank, maxes) = match filled {
        Some(x) => x,
        None => fill(&with_ends, total, |x| Some(i64::from(x) + 1), 0i64)?
            .map(|(t, r, m)| (Text::I64(t), r, m))
            .expect("i64 holds every u32 token"),
    };
    let mut max = 0u32;
    for ((src, _, _), (m, &v)) in with_ends.iter().zip(maxes.iter().zip(&vocab)) {
        if let Some(m) = *m {
            if v > 0 && m >= v {
                return Err(Error::TokenOutOfRange {
                    token: u64::from(m),
                    max: u64::from(v) - 1,
                    context: format!("{} (vocabulary of {v} tokens)", src.path.display()),
                    fix: "re-shard the corpus with the tokenizer it was made with".into(),
                });
            }
            max = max.max(m);
        }
    }
    Ok(Prepared {
        n,
        text,
        rank,
        seps: nonempty,
        k: max as usize + 2, // alphabet of t': separator 0, tokens 1..=max+1
    })
}

/// A sorted unit: `t'`, libsais' output and the rank directory.
pub struct Sorted {
    n: usize,
    text: Text,
    raw: Raw,
    seps: usize,
    rank: Rank,
}

enum Raw {
    I32(Vec<i32>),
    I64(Vec<i64>),
}

impl Prepared {
    /// Run libsais (single-threaded, O(n')); errors only when libsais fails (out of memory).
    pub fn sort(self) -> Result<Sorted> {
        let (n, k) = (self.n, self.k);
        let mut text = self.text;
        let total = match &text {
            Text::Empty => 0,
            Text::U16 { t, .. } => t.len(),
            Text::I32(t) => t.len(),
            Text::I64(t) => t.len(),
        };
        // libsais writes into our buffers (huge pages where possible); it needs a little
        // room beyond the text in 32-bit mode for speed.
        let raw = match &mut text {
            Text::Empty => Raw::I32(Vec::new()),
            Text::U16 { t, wide: false } => {
                let mut sa = huge_zeroed::<i32>(total + 8192);
                SuffixArrayConstruction::for_text(&t[..])
                    .in_borrowed_buffer(&mut sa[..])
                    .single_threaded()
                    .run()
                    .map_err(|e| sais_err(e, n))?;
                sa.truncate(total);
                Raw::I32(sa)
            }
            Text::U16 { t, wide: true } => {
                let mut sa = huge_zeroed::<i64>(total);
                SuffixArrayConstruction::for_text(&t[..])
                    .in_borrowed_buffer(&mut sa[..])
                    .single_threaded()
                    .run()
                    .map_err(|e| sais_err(e, n))?;
                Raw::I64(sa)
            }
            Text::I32(t) => {
                let mut sa = huge_zeroed::<i32>(total + 8192);
                let mut c = SuffixArrayConstruction::for_text_mut(&mut t[..])
                    .in_borrowed_buffer(&mut sa[..])
                    .single_threaded();
                // SAFETY: every value of t' lies in 0..=max+1 < k (tokens shifted by one,
                // separators 0); k < i32::MAX because the 32-bit variant was chosen. libsais
                // restores the text after the construction.
                unsafe {
                    c = c.with_alphabet_size(AlphabetSize::new(k as i32));
                }
                c.run().map_err(|e| sais_err(e, n))?;
                sa.truncate(total);
                Raw::I32(sa)
            }
            Text::I64(t) => {
                let mut sa = huge_zeroed::<i64>(total);
                let mut c = SuffixArrayConstruction::for_text_mut(&mut t[..])
                    .in_borrowed_buffer(&mut sa[..])
                    .single_threaded();
                // SAFETY: every value of t' lies in 0..=max+1 < k, all non-negative.
                unsafe {
                    c = c.with_alphabet_size(AlphabetSize::new(k as i64));
                }
                c.run().map_err(|e| sais_err(e, n))?;
                Raw::I64(sa)
            }
        };
        Ok(Sorted {
            n,
            text,
            raw,
            seps: self.seps,
            rank: self.rank,
        })
    }
}

/// What the writer records about the unit besides its suffix array.
#[derive(Debug, Clone)]
pub struct UnitMeta {
    /// Documents of the unit.
    pub n_docs: u64,
    /// 2 or 4.
    pub token_width: u32,
    /// Vocabulary size (0 = unknown).
    pub vocab_size: u32,
    /// Tokenizer hash.
    pub tokenizer_hash: [u8; 32],
    /// Position of the first covered shard.
    pub first_shard: u32,
    /// The covered shards' identities.
    pub shards: Vec<CoveredShard>,
    /// Piece index and count (0, 1 for whole shards).
    pub piece: (u32, u32),
    /// First token and document of the piece in its shard.
    pub piece_start: (u64, u64),
}

#[inline(always)]
fn prefetch<T>(s: &[T], i: usize) {
    #[cfg(target_arch = "x86_64")]
    if i < s.len() {
        // SAFETY: the pointer is in bounds; prefetching has no architectural effect.
        unsafe {
            core::arch::x86_64::_mm_prefetch(
                s.as_ptr().add(i).cast::<i8>(),
                core::arch::x86_64::_MM_HINT_T0,
            )
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (s, i);
}

trait Sym: Copy {
    fn v(self) -> i64;

    /// Common prefix of the suffixes of `t` at `a` and `b` (`a != b`, both at token
    /// positions), stopping at the first 0 (document end) and at `cap`.
    #[inline(always)]
    fn lcp(t: &[Self], a: usize, b: usize, cap: usize) -> usize {
        let mut l = 0;
        while l < cap && t[a + l].v() == t[b + l].v() && t[b + l].v() != 0 {
            l += 1;
        }
        l
    }
}
impl Sym for u16 {
    #[inline(always)]
    fn v(self) -> i64 {
        i64::from(self)
    }

    /// Four tokens per step: the first lane where the two words differ or `b`'s is 0.
    #[inline(always)]
    fn lcp(t: &[u16], a: usize, b: usize, cap: usize) -> usize {
        const LO: u64 = 0x0001_0001_0001_0001;
        const HI: u64 = 0x8000_8000_8000_8000;
        let word = |i: usize| {
            let s = &t[i..i + 4];
            u64::from(s[0]) | u64::from(s[1]) << 16 | u64::from(s[2]) << 32 | u64::from(s[3]) << 48
        };
        let mut l = 0;
        while l + 4 <= cap && a.max(b) + l + 4 <= t.len() {
            let (x, y) = (word(a + l), word(b + l));
            // Lanes of y that are 0 (false positives only above a true zero lane).
            let zero = y.wrapping_sub(LO) & !y & HI;
            let stop = (x ^ y) | zero;
            if stop != 0 {
                return l + (stop.trailing_zeros() / 16) as usize;
            }
            l += 4;
        }
        while l < cap && t[a + l] == t[b + l] && t[b + l] != 0 {
            l += 1;
        }
        l
    }
}
impl Sym for i32 {
    #[inline(always)]
    fn v(self) -> i64 {
        i64::from(self)
    }
}
impl Sym for i64 {
    #[inline(always)]
    fn v(self) -> i64 {
        self
    }
}

/// Walk the suffix array in order, calling `f(i, unit position, lcp, hash, t' position)`.
fn walk<E: Sym, R: Sym>(
    t: &[E],
    raw: &[R],
    seps: usize,
    rank: &Rank,
    layout: &Layout,
    mut f: impl FnMut(usize, u64, u8, u16, usize) -> Result<()>,
) -> Result<()> {
    // Far enough ahead for the misses of many entries to overlap (measured best on a busy
    // 2-core VM: 2x faster than 16).
    const AHEAD: usize = 64;
    let cap = layout.lcp_cap as usize;
    let sa = &raw[seps..];
    let mut prev = 0usize;
    for (i, &r) in sa.iter().enumerate() {
        if let Some(&ahead) = sa.get(i + AHEAD) {
            let a = ahead.v() as usize;
            // The suffix's first two cache lines (the mean capped lcp on code is ~27 tokens).
            prefetch(t, a);
            prefetch(t, a + 64 / std::mem::size_of::<E>());
            rank.prefetch(a);
        }
        let p = r.v() as usize;
        let pos = rank.to_unit(p);
        let mut l = 0usize;
        if i > 0 {
            // t' holds a 0 after every document and never at a suffix start, so the loop stops
            // at the shorter suffix's end before it could run off t'.
            l = E::lcp(t, prev, p, cap);
        }
        let hash = if l < cap {
            let x = t[p + l].v();
            if x == 0 {
                0
            } else {
                layout.hash((x - 1) as u32)
            }
        } else {
            0
        };
        f(i, pos, l as u8, hash, p)?;
        prev = p;
    }
    Ok(())
}

impl Sorted {
    /// Number of unit positions (= tokens).
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether the unit has no tokens.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Write the unit's `.kdsa` to `path` atomically (pages, samples, header); returns the
    /// header written. Streams: memory beyond the sort's is one page and the samples.
    pub fn write(&self, path: &Path, meta: &UnitMeta, layout: Layout) -> Result<SaHeader> {
        let pw = ptr_width(self.n as u64);
        let header = SaHeader {
            ptr_width: pw,
            n_tokens: self.n as u64,
            n_docs: meta.n_docs,
            token_width: meta.token_width,
            vocab_size: meta.vocab_size,
            tokenizer_hash: meta.tokenizer_hash,
            first_shard: meta.first_shard,
            shards: meta.shards.clone(),
            piece: meta.piece.0,
            pieces: meta.piece.1,
            piece_token: meta.piece_start.0,
            piece_doc: meta.piece_start.1,
            layout,
            data_checksum: 0,
        };
        let per_page = header.per_page();
        let stride = header.stride();
        let pb = layout.page_bytes as usize;
        let k = layout.sample_tokens as usize;
        let n_samples = header.n_samples() as usize;
        let token_width = header.token_width;
        let mut w = SaWriter::create(path, header)?;
        let mut samples = Samples::new(k, token_width, n_samples);
        let mut key = Vec::with_capacity(k);
        let mut page = vec![0u8; pb];
        let mut run_min = u8::MAX;
        let n = self.n;
        macro_rules! go {
            ($t:expr, $raw:expr) => {{
                let t = $t;
                walk(
                    t,
                    $raw,
                    self.seps,
                    &self.rank,
                    &layout,
                    |i, pos, lcp, hash, p| {
                        let slot = i % per_page;
                        if i % stride == 0 {
                            key.clear();
                            while key.len() < k && t[p + key.len()].v() != 0 {
                                key.push((t[p + key.len()].v() - 1) as u32);
                            }
                            samples.push(pos, if i == 0 { 0 } else { run_min.min(lcp) }, &key);
                            run_min = u8::MAX;
                        } else {
                            run_min = run_min.min(lcp);
                        }
                        if pw == 4 {
                            page[slot * 4..slot * 4 + 4]
                                .copy_from_slice(&(pos as u32).to_le_bytes());
                        } else {
                            page[slot * 8..slot * 8 + 8].copy_from_slice(&pos.to_le_bytes());
                        }
                        let base = per_page * pw as usize;
                        page[base + slot] = lcp;
                        let h = base + per_page + 2 * slot;
                        page[h..h + 2].copy_from_slice(&hash.to_le_bytes());
                        if slot == per_page - 1 || i == n - 1 {
                            w.page(&page)?;
                            page.fill(0);
                        }
                        Ok(())
                    },
                )
            }};
        }
        match (&self.text, &self.raw) {
            (Text::Empty, _) => Ok(()),
            (Text::U16 { t, .. }, Raw::I32(r)) => go!(&t[..], &r[..]),
            (Text::U16 { t, .. }, Raw::I64(r)) => go!(&t[..], &r[..]),
            (Text::I32(t), Raw::I32(r)) => go!(&t[..], &r[..]),
            (Text::I64(t), Raw::I64(r)) => go!(&t[..], &r[..]),
            _ => unreachable!("the text and suffix-array widths are chosen together"),
        }?;
        w.finish(&samples)
    }

    /// The suffix array in unit positions (tests and small inputs; allocates 8 B/token).
    pub fn positions(&self) -> Vec<u64> {
        let mut out = Vec::with_capacity(self.n);
        let layout = Layout::default();
        let mut push = |_, pos, _, _, _| {
            out.push(pos);
            Ok(())
        };
        let r = match (&self.text, &self.raw) {
            (Text::Empty, _) => Ok(()),
            (Text::U16 { t, .. }, Raw::I32(r)) => {
                walk(t, r, self.seps, &self.rank, &layout, &mut push)
            }
            (Text::U16 { t, .. }, Raw::I64(r)) => {
                walk(t, r, self.seps, &self.rank, &layout, &mut push)
            }
            (Text::I32(t), Raw::I32(r)) => walk(t, r, self.seps, &self.rank, &layout, &mut push),
            (Text::I64(t), Raw::I64(r)) => walk(t, r, self.seps, &self.rank, &layout, &mut push),
            _ => unreachable!("the text and suffix-array widths are chosen together"),
        };
        r.expect("collecting cannot fail");
        out
    }
}
