//! The suffix-array file `shard-NNNNN.kdsa`, format version 1 (`docs/formats.md`).
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `b"KDMEMSA\0"` |
//! | 8 | 4 | u32 format version = 1 |
//! | 12 | 4 | u32 pointer width in bytes: 4 (shard of fewer than 2^32 tokens) or 8 |
//! | 16 | 8 | u64 n_tokens of the shard |
//! | 24 | 8 | u64 n_docs of the shard |
//! | 32 | 8 | u64 bitmap_offset (= 128) |
//! | 40 | 8 | u64 sa_offset (= 128 + 8 * (n_tokens / 64 + 1)) |
//! | 48 | 4 | u32 data checksum: CRC-32 of bytes [bitmap_offset, end of file) |
//! | 52 | 4 | u32 shard checksum: the indexed shard's data checksum (header offset 48 of the `.kdt`) |
//! | 56 | 4 | u32 token width of the shard (2 or 4) |
//! | 60 | 4 | u32 vocab_size of the shard (0 = unknown) |
//! | 64 | 32 | tokenizer hash of the shard |
//! | 96 | 28 | reserved (0) |
//! | 124 | 4 | u32 header checksum: CRC-32 of bytes [0, 124) |
//! | 128 | 8 * (n_tokens / 64 + 1) | document-start bitmap, u64 words: bit p set iff p is some `offsets[i]` (bit n_tokens always set) |
//! | sa_offset | n_tokens * width | suffix array: shard token positions, little-endian |
//!
//! File size is exactly `sa_offset + n_tokens * width`. Written atomically (temp name in the
//! same directory, fsync, rename, fsync of the directory).

use std::fs::{self, File};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::build::SortedShard;
use super::search::Ptrs;
use crate::error::{Error, Result};

/// File magic, bytes 0..8.
pub const MAGIC: &[u8; 8] = b"KDMEMSA\0";
/// The format version this build reads and writes.
pub const VERSION: u32 = 1;
/// Header length in bytes; the bitmap starts here.
pub const HEADER_LEN: u64 = 128;

/// The decoded header of a `.kdsa` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaHeader {
    /// 4 or 8.
    pub ptr_width: u32,
    /// Tokens of the indexed shard.
    pub n_tokens: u64,
    /// Documents of the indexed shard.
    pub n_docs: u64,
    /// CRC-32 of the bitmap and the suffix array.
    pub data_checksum: u32,
    /// Data checksum of the indexed shard.
    pub shard_checksum: u32,
    /// 2 or 4.
    pub token_width: u32,
    /// Vocabulary size of the shard (0 = unknown).
    pub vocab_size: u32,
    /// Tokenizer hash of the shard (all zero = unknown).
    pub tokenizer_hash: [u8; 32],
}

impl SaHeader {
    /// Byte offset of the suffix array.
    pub fn sa_offset(&self) -> u64 {
        HEADER_LEN + 8 * (self.n_tokens / 64 + 1)
    }

    /// Exact file size implied by the header.
    pub fn file_len(&self) -> Option<u64> {
        self.n_tokens
            .checked_mul(u64::from(self.ptr_width))?
            .checked_add(self.sa_offset())
    }

    fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut b = [0u8; HEADER_LEN as usize];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.ptr_width.to_le_bytes());
        b[16..24].copy_from_slice(&self.n_tokens.to_le_bytes());
        b[24..32].copy_from_slice(&self.n_docs.to_le_bytes());
        b[32..40].copy_from_slice(&HEADER_LEN.to_le_bytes());
        b[40..48].copy_from_slice(&self.sa_offset().to_le_bytes());
        b[48..52].copy_from_slice(&self.data_checksum.to_le_bytes());
        b[52..56].copy_from_slice(&self.shard_checksum.to_le_bytes());
        b[56..60].copy_from_slice(&self.token_width.to_le_bytes());
        b[60..64].copy_from_slice(&self.vocab_size.to_le_bytes());
        b[64..96].copy_from_slice(&self.tokenizer_hash);
        let crc = crc32fast::hash(&b[..124]);
        b[124..128].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8], path: &Path) -> Result<Self> {
        let corrupt = |reason: String| Error::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        if b.len() < HEADER_LEN as usize {
            return Err(corrupt(format!(
                "{} bytes, shorter than the {HEADER_LEN}-byte header",
                b.len()
            )));
        }
        if &b[0..8] != MAGIC {
            return Err(corrupt("bad magic (not a kdmem suffix array)".into()));
        }
        if crc32fast::hash(&b[..124]) != u32_at(b, 124) {
            return Err(corrupt("header checksum mismatch".into()));
        }
        let version = u32_at(b, 8);
        if version != VERSION {
            return Err(Error::FormatVersion {
                path: path.to_path_buf(),
                found: version,
                supported: VERSION,
            });
        }
        let h = SaHeader {
            ptr_width: u32_at(b, 12),
            n_tokens: u64_at(b, 16),
            n_docs: u64_at(b, 24),
            data_checksum: u32_at(b, 48),
            shard_checksum: u32_at(b, 52),
            token_width: u32_at(b, 56),
            vocab_size: u32_at(b, 60),
            tokenizer_hash: b[64..96].try_into().expect("32-byte slice"),
        };
        if !matches!(h.ptr_width, 4 | 8) || !matches!(h.token_width, 2 | 4) {
            return Err(corrupt(format!(
                "pointer width {} / token width {} (expected 4 or 8 / 2 or 4)",
                h.ptr_width, h.token_width
            )));
        }
        if u64_at(b, 32) != HEADER_LEN || u64_at(b, 40) != h.sa_offset() {
            return Err(corrupt(format!(
                "array offsets {}/{} do not match n_tokens {}",
                u64_at(b, 32),
                u64_at(b, 40),
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

/// What the writer needs to know about the indexed shard.
#[derive(Debug, Clone, Copy)]
pub struct ShardInfo {
    /// Documents of the shard.
    pub n_docs: u64,
    /// Data checksum of the shard.
    pub checksum: u32,
    /// 2 or 4.
    pub token_width: u32,
    /// Vocabulary size (0 = unknown).
    pub vocab_size: u32,
    /// Tokenizer hash.
    pub tokenizer_hash: [u8; 32],
}

/// Write `sorted` to `path` atomically; returns the header written.
pub fn write(path: &Path, sorted: &SortedShard, shard: ShardInfo) -> Result<SaHeader> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let res = write_tmp(&tmp, sorted, shard).and_then(|h| {
        fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(h)
    });
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

fn write_tmp(tmp: &PathBuf, sorted: &SortedShard, shard: ShardInfo) -> Result<SaHeader> {
    let werr = |e: std::io::Error| Error::io("write", tmp, e);
    let file = File::create(tmp).map_err(werr)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut crc = crc32fast::Hasher::new();
    w.write_all(&[0u8; HEADER_LEN as usize]).map_err(werr)?;
    let mut put = |bytes: &[u8], w: &mut BufWriter<File>| -> Result<()> {
        crc.update(bytes);
        w.write_all(bytes).map_err(werr)
    };
    let mut bytes = Vec::with_capacity(8 << 16);
    for chunk in sorted.starts.chunks(1 << 16) {
        bytes.clear();
        bytes.extend(chunk.iter().flat_map(|x| x.to_le_bytes()));
        put(&bytes, &mut w)?;
    }
    let width = sorted.ptr_width();
    sorted.for_each_chunk(1 << 16, |part| {
        bytes.clear();
        if width == 4 {
            bytes.extend(part.iter().flat_map(|&x| (x as u32).to_le_bytes()));
        } else {
            bytes.extend(part.iter().flat_map(|&x| x.to_le_bytes()));
        }
        put(&bytes, &mut w)
    })?;
    let h = SaHeader {
        ptr_width: width,
        n_tokens: sorted.len() as u64,
        n_docs: shard.n_docs,
        data_checksum: crc.finalize(),
        shard_checksum: shard.checksum,
        token_width: shard.token_width,
        vocab_size: shard.vocab_size,
        tokenizer_hash: shard.tokenizer_hash,
    };
    let mut file = w.into_inner().map_err(|e| werr(e.into_error()))?;
    file.seek(SeekFrom::Start(0)).map_err(werr)?;
    file.write_all(&h.encode()).map_err(werr)?;
    file.sync_all().map_err(werr)?;
    Ok(h)
}

/// A memory-mapped `.kdsa` file whose header and size have been checked.
pub struct SaFile {
    path: PathBuf,
    map: Mmap,
    header: SaHeader,
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
    /// Map `path` and check magic, version, header CRC and file size. O(1).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
        // SAFETY: index files are immutable once renamed into place (atomic writes).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io("map", &path, e))?;
        let header = SaHeader::decode(&map, &path)?;
        let len = map.len() as u64;
        if header.file_len() != Some(len) {
            return Err(Error::Corrupt {
                path,
                reason: format!(
                    "file is {len} bytes, the header implies {}",
                    header
                        .file_len()
                        .map_or("an impossible size".into(), |l| l.to_string())
                ),
            });
        }
        Ok(SaFile { path, map, header })
    }

    /// The header.
    pub fn header(&self) -> &SaHeader {
        &self.header
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The document-start bitmap (borrowed from the map).
    pub fn starts(&self) -> &[u64] {
        let words = (self.header.n_tokens / 64 + 1) as usize;
        let bytes = &self.map[HEADER_LEN as usize..HEADER_LEN as usize + 8 * words];
        // SAFETY: page-aligned map + offset 128: aligned for u64; length checked in `open`;
        // little-endian host (the shard module refuses to compile otherwise).
        unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast(), words) }
    }

    /// The suffix array (borrowed from the map).
    pub fn ptrs(&self) -> Ptrs<'_> {
        let n = self.header.n_tokens as usize;
        let bytes = &self.map[self.header.sa_offset() as usize..];
        // SAFETY: sa_offset is a multiple of 8 from a page-aligned base; the length was checked
        // against the header in `open`; little-endian host.
        unsafe {
            if self.header.ptr_width == 4 {
                Ptrs::U32(std::slice::from_raw_parts(bytes.as_ptr().cast(), n))
            } else {
                Ptrs::U64(std::slice::from_raw_parts(bytes.as_ptr().cast(), n))
            }
        }
    }

    /// Recompute the data CRC-32 and compare with the header. O(file size).
    pub fn verify(&self) -> Result<()> {
        let got = crc32fast::hash(&self.map[HEADER_LEN as usize..]);
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
