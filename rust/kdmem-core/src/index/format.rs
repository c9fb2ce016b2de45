//! The suffix-array file of one index *unit*, format version 2 (`docs/formats.md`).
//!
//! A unit is a contiguous token range of the shard sequence (several whole shards, one whole
//! shard, or a document-aligned piece of one shard, see [`super::plan`]); its positions run
//! over the unit's tokens in shard order. The file has four parts:
//!
//! | offset | size | part |
//! |---|---|---|
//! | 0 | 256 | header (fields below) |
//! | 256 | 24 * n_shards | shard table: per covered shard `u64 n_tokens, u64 n_docs, u32 data checksum, u32 0` |
//! | pages_offset (multiple of 4096) | n_pages * page_bytes | pages of the suffix array |
//! | samples_offset | see below | sampled suffixes (the in-RAM level) |
//!
//! **Pages.** The suffix array is cut into pages of `per_page = page_bytes / (ptr_width + 3)`
//! consecutive entries, rounded down to a multiple of `samples_per_page` (584 with 4-byte
//! pointers and 4,096-byte pages, 372 with 8-byte pointers); page `j` holds entries
//! `j * per_page ..` as `[positions: per_page * ptr_width][lcp: per_page][hash: per_page u16]`
//! (zero padded). `lcp[i]` is the length of the longest common prefix of the
//! document-truncated suffixes of entries `i - 1` and `i`, capped at `lcp_cap` (a stored value of
//! `lcp_cap` means "at least"); `hash[i]` identifies the token of entry `i`'s suffix right after
//! that prefix: `1 + mix(token) % hash_mod` (a u16), or 0 when the suffix ends there (or the
//! prefix was capped). A search reads one page and resolves a query inside it from these bytes, reading the
//! text only where a hash matches the query ([`super::unit`]).
//!
//! **Samples.** Every `stride = per_page / samples_per_page`-th entry (two per page by
//! default, so a page holds whole segments) is sampled: its position, its lcp with the
//! previous sample (capped like `lcp`), and its first `sample_tokens` tokens (16 for u16
//! shards, 8 for u32; fewer where its document ends). Arrays, each padded to 8 bytes:
//! `pos: n_samples * ptr_width`, `lcp: n_samples`, `len: n_samples`,
//! `keys: n_samples * sample_tokens * token_width`.
//!
//! Sizes: pages `page_bytes / per_page` = 7.01 B/token (4-byte pointers) or 11.01 B/token
//! (8-byte); samples `(ptr_width + 2 + sample_tokens * token_width) / stride` = 0.13 B/token
//! (u16 or u32 shards, 4-byte pointers). Written atomically (temp name in the same directory, fsync, rename,
//! fsync of the directory). The data checksum is the CRC-32 of bytes `[256, end of file)`.
//!
//! Header fields (all little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `b"KDMEMSA\0"` |
//! | 8 | 4 | u32 format version = 2 |
//! | 12 | 4 | u32 pointer width (4: unit of fewer than 2^32 tokens, else 8) |
//! | 16 | 8 | u64 n_tokens of the unit |
//! | 24 | 8 | u64 n_docs of the unit |
//! | 32 | 4 | u32 token width (2 or 4) |
//! | 36 | 4 | u32 vocab_size (0 = unknown) |
//! | 40 | 32 | tokenizer hash of the shards |
//! | 72 | 4 | u32 first shard (position in name order) |
//! | 76 | 4 | u32 n_shards covered |
//! | 80 | 4 | u32 piece index |
//! | 84 | 4 | u32 pieces (1 = whole shards; > 1: the unit is piece `index` of one shard) |
//! | 88 | 8 | u64 first token of the piece in its shard (0 for whole shards) |
//! | 96 | 8 | u64 first document of the piece in its shard (0 for whole shards) |
//! | 104 | 4 | u32 page_bytes |
//! | 108 | 4 | u32 per_page |
//! | 112 | 4 | u32 sample_tokens |
//! | 116 | 4 | u32 lcp_cap (at most 255) |
//! | 120 | 4 | u32 hash_mod (1..=65535) |
//! | 124 | 4 | u32 samples_per_page |
//! | 128 | 8 | u64 pages_offset |
//! | 136 | 8 | u64 samples_offset |
//! | 144 | 8 | u64 file length |
//! | 152 | 4 | u32 data checksum |
//! | 156 | 96 | reserved (0) |
//! | 252 | 4 | u32 header checksum: CRC-32 of bytes [0, 252) |

use std::fs::{self, File};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{Error, Result};
use crate::shard::format::sync_parent;

/// File magic, bytes 0..8.
pub const MAGIC: &[u8; 8] = b"KDMEMSA\0";
/// The format version this build reads and writes.
pub const VERSION: u32 = 2;
/// Header length in bytes; the shard table starts here.
pub const HEADER_LEN: u64 = 256;
/// Bytes of one shard-table row.
pub const SHARD_ROW: u64 = 24;
/// Pages start at a multiple of this (the OS page size on x86-64 and most aarch64 systems).
pub const ALIGN: u64 = 4096;

/// The parameters of the page and sample layout. [`Layout::default`] is what `kdmem index`
/// writes; tests shrink every field to reach the multi-page, saturated-lcp and hash-collision
/// paths with small inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Bytes per page (4,096 by default: one OS page, so one read per page).
    pub page_bytes: u32,
    /// Tokens stored per sample (8 by default).
    pub sample_tokens: u32,
    /// Largest stored lcp (255 by default; at most 255).
    pub lcp_cap: u32,
    /// Hash values are `1..=hash_mod` (65,535 by default).
    pub hash_mod: u32,
    /// Samples per page (2 by default): a lookup scans the segment after one sample.
    pub samples_per_page: u32,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            page_bytes: 4096,
            sample_tokens: 16,
            lcp_cap: 255,
            hash_mod: 65535,
            samples_per_page: 2,
        }
    }
}

impl Layout {
    /// What `kdmem index` writes for shards of `token_width` bytes per token: 16 sampled
    /// tokens for u16 shards, 8 for u32 (the same bytes per sample).
    pub fn for_tokens(token_width: u32) -> Self {
        Layout {
            sample_tokens: if token_width == 2 { 16 } else { 8 },
            ..Layout::default()
        }
    }

    /// Suffix-array entries per page for a pointer width (a multiple of `samples_per_page`).
    pub fn per_page(&self, ptr_width: u32) -> usize {
        let spp = self.samples_per_page.max(1) as usize;
        (self.page_bytes / (ptr_width + 3)) as usize / spp * spp
    }

    /// Entries per segment (from one sample to the next).
    pub fn stride(&self, ptr_width: u32) -> usize {
        self.per_page(ptr_width) / self.samples_per_page.max(1) as usize
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.page_bytes < 16 || self.page_bytes > 1 << 20 {
            return Err(format!(
                "page_bytes {} (expected 16..=1 MiB)",
                self.page_bytes
            ));
        }
        if !(1..=64).contains(&self.sample_tokens) {
            return Err(format!(
                "sample_tokens {} (expected 1..=64)",
                self.sample_tokens
            ));
        }
        if !(1..=16).contains(&self.samples_per_page)
            || self.page_bytes / 11 < self.samples_per_page
        {
            return Err(format!(
                "samples_per_page {} for {}-byte pages",
                self.samples_per_page, self.page_bytes
            ));
        }
        if !(1..=255).contains(&self.lcp_cap) || !(1..=65535).contains(&self.hash_mod) {
            return Err(format!(
                "lcp_cap {} / hash_mod {} (expected 1..=255 / 1..=65535)",
                self.lcp_cap, self.hash_mod
            ));
        }
        Ok(())
    }

    /// The page hash of a token: `1..=hash_mod` (0 is reserved for "the suffix ends here").
    #[inline(always)]
    pub fn hash(&self, token: u32) -> u16 {
        let mixed = (u64::from(token).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32;
        (1 + mixed % self.hash_mod) as u16
    }
}

/// One shard covered by a unit, as recorded when the unit was built (its identity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoveredShard {
    /// Tokens of the whole shard.
    pub n_tokens: u64,
    /// Documents of the whole shard.
    pub n_docs: u64,
    /// The shard's data checksum (header offset 48 of its `.kdt`).
    pub checksum: u32,
}

/// The decoded header and shard table of a `.kdsa` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaHeader {
    /// 4 or 8.
    pub ptr_width: u32,
    /// Tokens of the unit.
    pub n_tokens: u64,
    /// Documents of the unit.
    pub n_docs: u64,
    /// 2 or 4.
    pub token_width: u32,
    /// Vocabulary size of the shards (0 = unknown).
    pub vocab_size: u32,
    /// Tokenizer hash of the shards (all zero = unknown).
    pub tokenizer_hash: [u8; 32],
    /// Position (name order) of the first covered shard.
    pub first_shard: u32,
    /// The covered shards, in order.
    pub shards: Vec<CoveredShard>,
    /// Piece index (0 for whole shards).
    pub piece: u32,
    /// Pieces of the shard (1 = the unit is made of whole shards).
    pub pieces: u32,
    /// First token of the piece in its shard.
    pub piece_token: u64,
    /// First document of the piece in its shard.
    pub piece_doc: u64,
    /// Page and sample layout.
    pub layout: Layout,
    /// Data checksum (CRC-32 of bytes 256.. of the file).
    pub data_checksum: u32,
}

impl SaHeader {
    /// Suffix-array entries per page.
    pub fn per_page(&self) -> usize {
        self.layout.per_page(self.ptr_width)
    }

    /// Number of pages.
    pub fn n_pages(&self) -> u64 {
        self.n_tokens.div_ceil(self.per_page() as u64)
    }

    /// Entries per segment (one sample each).
    pub fn stride(&self) -> usize {
        self.layout.stride(self.ptr_width)
    }

    /// Number of samples.
    pub fn n_samples(&self) -> u64 {
        self.n_tokens.div_ceil(self.stride() as u64)
    }

    /// Byte offset of the first page.
    pub fn pages_offset(&self) -> u64 {
        (HEADER_LEN + SHARD_ROW * self.shards.len() as u64).div_ceil(ALIGN) * ALIGN
    }

    /// Byte offset of the samples.
    pub fn samples_offset(&self) -> u64 {
        self.pages_offset() + self.n_pages() * u64::from(self.layout.page_bytes)
    }

    /// Byte length of the samples part.
    pub fn samples_len(&self) -> u64 {
        let p = self.n_samples();
        let pad = |x: u64| x.div_ceil(8) * 8;
        pad(p * u64::from(self.ptr_width))
            + 2 * pad(p)
            + pad(p * u64::from(self.layout.sample_tokens) * u64::from(self.token_width))
    }

    /// Exact file size implied by the header.
    pub fn file_len(&self) -> u64 {
        self.samples_offset() + self.samples_len()
    }

    /// The last covered shard (position in name order).
    pub fn last_shard(&self) -> u32 {
        self.first_shard + self.shards.len() as u32 - 1
    }

    fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN as usize];
        let put4 =
            |b: &mut [u8], at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        let put8 =
            |b: &mut [u8], at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        b[0..8].copy_from_slice(MAGIC);
        put4(&mut b, 8, VERSION);
        put4(&mut b, 12, self.ptr_width);
        put8(&mut b, 16, self.n_tokens);
        put8(&mut b, 24, self.n_docs);
        put4(&mut b, 32, self.token_width);
        put4(&mut b, 36, self.vocab_size);
        b[40..72].copy_from_slice(&self.tokenizer_hash);
        put4(&mut b, 72, self.first_shard);
        put4(&mut b, 76, self.shards.len() as u32);
        put4(&mut b, 80, self.piece);
        put4(&mut b, 84, self.pieces);
        put8(&mut b, 88, self.piece_token);
        put8(&mut b, 96, self.piece_doc);
        put4(&mut b, 104, self.layout.page_bytes);
        put4(&mut b, 108, self.per_page() as u32);
        put4(&mut b, 112, self.layout.sample_tokens);
        put4(&mut b, 116, self.layout.lcp_cap);
        put4(&mut b, 120, self.layout.hash_mod);
        put4(&mut b, 124, self.layout.samples_per_page);
        put8(&mut b, 128, self.pages_offset());
        put8(&mut b, 136, self.samples_offset());
        put8(&mut b, 144, self.file_len());
        put4(&mut b, 152, self.data_checksum);
        let crc = crc32fast::hash(&b[..252]);
        put4(&mut b, 252, crc);
        for s in &self.shards {
            b.extend_from_slice(&s.n_tokens.to_le_bytes());
            b.extend_from_slice(&s.n_docs.to_le_bytes());
            b.extend_from_slice(&s.checksum.to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
        }
        b
    }

    /// Decode the header and shard table from the start of a file; `b` holds at least the
    /// first 256 bytes (more for the shard table). Old format versions are a
    /// [`Error::StaleIndex`] (rebuild), other problems [`Error::Corrupt`].
    fn decode(b: &[u8], path: &Path) -> Result<Self> {
        let corrupt = |reason: String| Error::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        if b.len() < 128 || &b[0..8] != MAGIC {
            return Err(corrupt(if b.len() < 128 {
                format!("{} bytes, shorter than a header", b.len())
            } else {
                "bad magic (not a kdmem suffix array)".into()
            }));
        }
        let version = u32_at(b, 8);
        if version != VERSION {
            // Version 1 had a 128-byte header with its CRC at byte 124.
            let v1_ok = version == 1 && crc32fast::hash(&b[..124]) == u32_at(b, 124);
            if v1_ok || version < VERSION {
                return Err(Error::StaleIndex {
                    path: path.to_path_buf(),
                    reason: format!(
                        "has format version {version}, this kdmem reads version {VERSION}"
                    ),
                    dir: path
                        .parent()
                        .map_or_else(|| ".".into(), |d| d.display().to_string()),
                });
            }
            return Err(Error::FormatVersion {
                path: path.to_path_buf(),
                found: version,
                supported: VERSION,
            });
        }
        if b.len() < HEADER_LEN as usize {
            return Err(corrupt(format!(
                "{} bytes, shorter than the header",
                b.len()
            )));
        }
        if crc32fast::hash(&b[..252]) != u32_at(b, 252) {
            return Err(corrupt("header checksum mismatch".into()));
        }
        let n_shards = u32_at(b, 76) as usize;
        let layout = Layout {
            page_bytes: u32_at(b, 104),
            sample_tokens: u32_at(b, 112),
            lcp_cap: u32_at(b, 116),
            hash_mod: u32_at(b, 120),
            samples_per_page: u32_at(b, 124),
        };
        let mut h = SaHeader {
            ptr_width: u32_at(b, 12),
            n_tokens: u64_at(b, 16),
            n_docs: u64_at(b, 24),
            token_width: u32_at(b, 32),
            vocab_size: u32_at(b, 36),
            tokenizer_hash: b[40..72].try_into().expect("32-byte slice"),
            first_shard: u32_at(b, 72),
            shards: Vec::new(),
            piece: u32_at(b, 80),
            pieces: u32_at(b, 84),
            piece_token: u64_at(b, 88),
            piece_doc: u64_at(b, 96),
            layout,
            data_checksum: u32_at(b, 152),
        };
        if !matches!(h.ptr_width, 4 | 8) || !matches!(h.token_width, 2 | 4) {
            return Err(corrupt(format!(
                "pointer width {} / token width {} (expected 4 or 8 / 2 or 4)",
                h.ptr_width, h.token_width
            )));
        }
        layout.check().map_err(corrupt)?;
        if n_shards == 0 || h.pieces == 0 || h.piece >= h.pieces || (h.pieces > 1 && n_shards != 1)
        {
            return Err(corrupt(format!(
                "{n_shards} shards, piece {} of {}",
                h.piece, h.pieces
            )));
        }
        let table_end = HEADER_LEN as usize + SHARD_ROW as usize * n_shards;
        if b.len() < table_end {
            return Err(corrupt("truncated shard table".into()));
        }
        for k in 0..n_shards {
            let at = HEADER_LEN as usize + SHARD_ROW as usize * k;
            h.shards.push(CoveredShard {
                n_tokens: u64_at(b, at),
                n_docs: u64_at(b, at + 8),
                checksum: u32_at(b, at + 16),
            });
        }
        if u32_at(b, 108) as usize != h.per_page()
            || u64_at(b, 128) != h.pages_offset()
            || u64_at(b, 136) != h.samples_offset()
            || u64_at(b, 144) != h.file_len()
        {
            return Err(corrupt(format!(
                "section offsets do not match n_tokens {}",
                h.n_tokens
            )));
        }
        Ok(h)
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4-byte slice"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8-byte slice"))
}

/// Sampled tokens, at the shards' width.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keys {
    /// u16 shards.
    U16(Vec<u16>),
    /// u32 shards.
    U32(Vec<u32>),
}

impl Default for Keys {
    fn default() -> Self {
        Keys::U32(Vec::new())
    }
}

impl Keys {
    fn push(&mut self, t: u32) {
        match self {
            Keys::U16(v) => v.push(t as u16),
            Keys::U32(v) => v.push(t),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Keys::U16(v) => v.len() * 2,
            Keys::U32(v) => v.len() * 4,
        }
    }
}

/// The sampled level of a unit, held in RAM: one sample per segment of `stride` entries (two
/// per page by default), the segment's first entry.
///
/// Bytes per sample in RAM: 8 (position) + 2 + sample_tokens * token width, i.e. 42 bytes
/// per 341 tokens (0.12 B/token) with the default layouts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Samples {
    /// Text position of each sample.
    pub pos: Vec<u64>,
    /// lcp with the previous sample, capped at `lcp_cap` (0 for the first).
    pub lcp: Vec<u8>,
    /// Number of valid tokens in `keys` (less than `sample_tokens` where the document ends).
    pub len: Vec<u8>,
    /// `sample_tokens` tokens per sample (zero padded).
    pub keys: Keys,
    /// Tokens per sample in `keys`.
    pub k: usize,
}

impl Samples {
    /// An empty set of samples for `k` tokens each at `token_width` bytes.
    pub fn new(k: usize, token_width: u32, capacity: usize) -> Self {
        Samples {
            pos: Vec::with_capacity(capacity),
            lcp: Vec::with_capacity(capacity),
            len: Vec::with_capacity(capacity),
            keys: if token_width == 2 {
                Keys::U16(Vec::with_capacity(capacity * k))
            } else {
                Keys::U32(Vec::with_capacity(capacity * k))
            },
            k,
        }
    }

    /// Append a sample: its position, lcp with the previous one and first tokens (at most `k`).
    pub fn push(&mut self, pos: u64, lcp: u8, tokens: &[u32]) {
        debug_assert!(tokens.len() <= self.k);
        self.pos.push(pos);
        self.lcp.push(lcp);
        self.len.push(tokens.len() as u8);
        for &t in tokens {
            self.keys.push(t);
        }
        for _ in tokens.len()..self.k {
            self.keys.push(0);
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.pos.len()
    }

    /// Whether there are none (an empty unit).
    pub fn is_empty(&self) -> bool {
        self.pos.is_empty()
    }

    /// Bytes held in RAM.
    pub fn ram_bytes(&self) -> usize {
        self.pos.len() * 8 + self.lcp.len() + self.len.len() + self.keys.bytes()
    }

    fn encode(&self, h: &SaHeader) -> Vec<u8> {
        let mut out = Vec::with_capacity(h.samples_len() as usize);
        let pad = |out: &mut Vec<u8>| out.resize(out.len().div_ceil(8) * 8, 0);
        for &p in &self.pos {
            if h.ptr_width == 4 {
                out.extend_from_slice(&(p as u32).to_le_bytes());
            } else {
                out.extend_from_slice(&p.to_le_bytes());
            }
        }
        pad(&mut out);
        out.extend_from_slice(&self.lcp);
        pad(&mut out);
        out.extend_from_slice(&self.len);
        pad(&mut out);
        match &self.keys {
            Keys::U16(v) => v
                .iter()
                .for_each(|t| out.extend_from_slice(&t.to_le_bytes())),
            Keys::U32(v) => v
                .iter()
                .for_each(|t| out.extend_from_slice(&t.to_le_bytes())),
        }
        pad(&mut out);
        out
    }

    fn decode(b: &[u8], h: &SaHeader, path: &Path) -> Result<Self> {
        let p = h.n_samples() as usize;
        let k = h.layout.sample_tokens as usize;
        let pad = |x: usize| x.div_ceil(8) * 8;
        let pw = h.ptr_width as usize;
        let tw = h.token_width as usize;
        let mut at = 0;
        let pos: Vec<u64> = b[at..at + p * pw]
            .chunks_exact(pw)
            .map(|c| {
                if pw == 4 {
                    u64::from(u32::from_le_bytes(c.try_into().expect("4 bytes")))
                } else {
                    u64::from_le_bytes(c.try_into().expect("8 bytes"))
                }
            })
            .collect();
        at += pad(p * pw);
        let lcp = b[at..at + p].to_vec();
        at += pad(p);
        let len = b[at..at + p].to_vec();
        at += pad(p);
        let raw = &b[at..at + p * k * tw];
        let keys = if tw == 2 {
            Keys::U16(
                raw.chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            )
        } else {
            Keys::U32(
                raw.chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect(),
            )
        };
        if pos.iter().any(|&x| x >= h.n_tokens) || len.iter().any(|&l| l as usize > k) {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                reason: "sample positions or lengths out of range".into(),
            });
        }
        Ok(Samples {
            pos,
            lcp,
            len,
            keys,
            k,
        })
    }
}

/// Streaming writer of a `.kdsa` file: pages in order, then the samples; see the module docs.
/// Writes go to a temp name in the same directory; [`SaWriter::finish`] renames.
pub struct SaWriter {
    path: PathBuf,
    tmp: PathBuf,
    w: Option<BufWriter<File>>,
    crc: crc32fast::Hasher,
    header: SaHeader,
    pages: u64,
}

impl SaWriter {
    /// Start a file for `header` (its `data_checksum` is filled in by [`SaWriter::finish`]).
    pub fn create(path: &Path, header: SaHeader) -> Result<Self> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let file = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        let head = header.encode();
        let werr = |e| Error::io("write", &tmp, e);
        w.write_all(&head).map_err(werr)?;
        let mut crc = crc32fast::Hasher::new();
        let gap = vec![0u8; (header.pages_offset() - head.len() as u64) as usize];
        crc.update(&head[HEADER_LEN as usize..]);
        crc.update(&gap);
        w.write_all(&gap).map_err(werr)?;
        Ok(SaWriter {
            path: path.to_path_buf(),
            tmp,
            w: Some(w),
            crc,
            header,
            pages: 0,
        })
    }

    /// Append one page (exactly `page_bytes` bytes).
    pub fn page(&mut self, bytes: &[u8]) -> Result<()> {
        debug_assert_eq!(bytes.len(), self.header.layout.page_bytes as usize);
        self.crc.update(bytes);
        self.pages += 1;
        let tmp = &self.tmp;
        self.w
            .as_mut()
            .expect("writer is open until finish")
            .write_all(bytes)
            .map_err(|e| Error::io("write", tmp, e))
    }

    /// Write the samples and the final header, fsync and rename into place.
    pub fn finish(mut self, samples: &Samples) -> Result<SaHeader> {
        let res = self.finish_inner(samples);
        if res.is_err() {
            let _ = fs::remove_file(&self.tmp);
        }
        res
    }

    fn finish_inner(&mut self, samples: &Samples) -> Result<SaHeader> {
        let werr = |e: std::io::Error| Error::io("write", &self.tmp, e);
        assert_eq!(self.pages, self.header.n_pages(), "every page written");
        let bytes = samples.encode(&self.header);
        debug_assert_eq!(bytes.len() as u64, self.header.samples_len());
        self.crc.update(&bytes);
        let mut w = self.w.take().expect("writer is open until finish");
        w.write_all(&bytes).map_err(werr)?;
        self.header.data_checksum = self.crc.clone().finalize();
        let mut file = w.into_inner().map_err(|e| werr(e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(werr)?;
        file.write_all(&self.header.encode()[..HEADER_LEN as usize])
            .map_err(werr)?;
        file.sync_all().map_err(werr)?;
        drop(file);
        fs::rename(&self.tmp, &self.path).map_err(|e| Error::io("rename", &self.path, e))?;
        sync_parent(&self.path);
        Ok(self.header.clone())
    }
}

impl Drop for SaWriter {
    fn drop(&mut self) {
        if self.w.is_some() {
            self.w = None;
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Read only the header and shard table of a `.kdsa` file (no map). O(n_shards).
pub fn read_header(path: &Path) -> Result<SaHeader> {
    use std::io::Read;
    let mut f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut b = vec![0u8; HEADER_LEN as usize];
    let mut got = 0;
    while got < b.len() {
        match f.read(&mut b[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(Error::io("read", path, e)),
        }
    }
    b.truncate(got);
    if got == HEADER_LEN as usize && &b[0..8] == MAGIC && u32_at(&b, 8) == VERSION {
        let n = u32_at(&b, 76) as usize;
        let mut table = vec![0u8; n.min(1 << 20) * SHARD_ROW as usize];
        f.read_exact(&mut table).map_err(|_| Error::Corrupt {
            path: path.to_path_buf(),
            reason: "truncated shard table".into(),
        })?;
        b.extend_from_slice(&table);
    }
    let h = SaHeader::decode(&b, path)?;
    let len = f.metadata().map_err(|e| Error::io("stat", path, e))?.len();
    if len != h.file_len() {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            reason: format!(
                "file is {len} bytes, the header implies {} (truncated)",
                h.file_len()
            ),
        });
    }
    Ok(h)
}

/// A memory-mapped `.kdsa` file whose header and size have been checked, with its samples
/// loaded into RAM. Opening reads the header and the samples (O(n / per_page)); pages are read
/// by the OS when a query touches them (the map is advised `MADV_RANDOM`: one page per fault).
pub struct SaFile {
    path: PathBuf,
    map: Mmap,
    header: SaHeader,
    samples: Samples,
}

impl std::fmt::Debug for SaFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaFile")
            .field("path", &self.path)
            .field("header", &self.header)
            .finish()
    }
}

impl SaFile {
    /// Map `path`, check magic, version, header CRC and file size, and load the samples.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let header = read_header(&path)?;
        let file = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
        // SAFETY: index files are immutable once renamed into place (atomic writes).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io("map", &path, e))?;
        if map.len() as u64 != header.file_len() {
            return Err(Error::Corrupt {
                path,
                reason: "file changed while opening".into(),
            });
        }
        #[cfg(unix)]
        let _ = map.advise(memmap2::Advice::Random);
        let s0 = header.samples_offset() as usize;
        let samples = Samples::decode(&map[s0..], &header, &path)?;
        Ok(SaFile {
            path,
            map,
            header,
            samples,
        })
    }

    /// The header.
    pub fn header(&self) -> &SaHeader {
        &self.header
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The samples (in RAM).
    pub fn samples(&self) -> &Samples {
        &self.samples
    }

    /// The pages (borrowed from the map).
    pub fn pages(&self) -> &[u8] {
        let a = self.header.pages_offset() as usize;
        let b = self.header.samples_offset() as usize;
        &self.map[a..b]
    }

    /// Recompute the data CRC-32 and compare with the header, with plain reads (the map's
    /// pages are not touched, so a verification does not grow this process's RSS by the
    /// file). O(file size).
    pub fn verify(&self) -> Result<()> {
        let data = (HEADER_LEN, self.map.len() as u64 - HEADER_LEN);
        let got = crate::shard::format::crc_of_file_ranges(&self.path, &[data])?;
        if got != self.header.data_checksum {
            return Err(Error::Corrupt {
                path: self.path.clone(),
                reason: format!(
                    "data checksum {got:#010x} does not match the header's {:#010x}",
                    self.header.data_checksum
                ),
            });
        }
        Ok(())
    }
}

/// A page-layout view of the suffix array of a unit: entry `i` lives on page `i / per_page`.
#[derive(Debug, Clone, Copy)]
pub struct Pages<'a> {
    /// The page bytes.
    pub bytes: &'a [u8],
    /// Entries per page.
    pub per_page: usize,
    /// Bytes per page.
    pub page_bytes: usize,
    /// Number of entries.
    pub n: usize,
    /// `ceil(2^64 / per_page)`: `i / per_page` is `(i * magic) >> 64` for every `i` below
    /// `2^64 / per_page` (one multiplication instead of a division); 0 when `per_page` is 1.
    magic: u64,
}

impl<'a> Pages<'a> {
    /// A view of `n` entries in `bytes`.
    pub fn new(bytes: &'a [u8], per_page: usize, page_bytes: usize, n: usize) -> Self {
        let magic = if per_page <= 1 {
            0
        } else {
            (1u128 << 64).div_ceil(per_page as u128) as u64
        };
        Pages {
            bytes,
            per_page,
            page_bytes,
            n,
            magic,
        }
    }

    /// Page of entry `i`.
    #[inline(always)]
    pub fn page(&self, i: usize) -> usize {
        if self.magic == 0 {
            return i;
        }
        ((i as u128 * self.magic as u128) >> 64) as usize
    }

    /// Byte offset of entry `i`'s page and its slot in it.
    #[inline(always)]
    pub fn slot(&self, i: usize) -> (usize, usize) {
        let page = self.page(i);
        (page * self.page_bytes, i - page * self.per_page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_arithmetic_without_division_is_exact() {
        for per_page in [1usize, 2, 3, 4, 6, 409, 682, 1000, 4096] {
            let p = Pages::new(&[], per_page, 4096, 0);
            let mut probes: Vec<usize> = (0..5000).collect();
            probes.extend([u32::MAX as usize, (1 << 40) + 12345, (1 << 50) - 1]);
            for i in probes {
                assert_eq!(p.page(i), i / per_page, "{i} / {per_page}");
            }
        }
    }
}
