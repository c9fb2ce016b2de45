//! Token shard files, format version 1 (`docs/formats.md`): writer, memory-mapped reader and
//! checksum verification.
//!
//! Layout: a 128-byte header (magic `KDMEMTOK`, version, token width, counts, offsets of the
//! two arrays, CRC-32 of the data, vocab size, EOS id, tokenizer SHA-256, CRC-32 of the header),
//! then `n_tokens` little-endian u16/u32 tokens, zero padding to a multiple of 8, then
//! `n_docs + 1` u64 document offsets. Document `i` is `tokens[offsets[i]..offsets[i + 1]]`.
//!
//! Costs: writing is O(tokens) with a 1 MiB write buffer per array (offsets are spilled to a
//! side file, so memory does not grow with the shard); [`ShardReader::open`] maps the file and
//! checks the header and the offsets array, O(n_docs); [`ShardReader::verify`] re-computes
//! the data CRC with plain reads ([`crc_of_file_ranges`]), O(file size).

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{Error, Result};

#[cfg(target_endian = "big")]
compile_error!("kdmem shard files are little-endian; big-endian hosts are not supported");

/// File magic, bytes 0..8.
pub const MAGIC: &[u8; 8] = b"KDMEMTOK";
/// The format version this build reads and writes.
pub const VERSION: u32 = 1;
/// Header length in bytes; tokens start here.
pub const HEADER_LEN: u64 = 128;
/// `eos_id` value meaning "no EOS appended".
pub const NO_EOS: u32 = u32::MAX;

/// Environment variable (test hook only): make a shard file's writes fail with ENOSPC once
/// this many bytes have gone into it, to test disk-full handling without filling a disk.
pub const ENV_FAULT_ENOSPC: &str = "KDMEM_TEST_ENOSPC_AFTER_BYTES";

/// Token storage width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// 2 bytes per token, ids < 65,536.
    U16,
    /// 4 bytes per token.
    U32,
}

impl Dtype {
    /// Bytes per token (2 or 4).
    pub fn width(self) -> u32 {
        match self {
            Dtype::U16 => 2,
            Dtype::U32 => 4,
        }
    }

    /// Largest token id this width stores.
    pub fn max_token(self) -> u64 {
        match self {
            Dtype::U16 => u16::MAX as u64,
            Dtype::U32 => u32::MAX as u64,
        }
    }

    /// `"u16"` or `"u32"`.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::U16 => "u16",
            Dtype::U32 => "u32",
        }
    }

    fn from_width(w: u32) -> Option<Self> {
        match w {
            2 => Some(Dtype::U16),
            4 => Some(Dtype::U32),
            _ => None,
        }
    }
}

/// Per-shard metadata that is the same for every shard of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMeta {
    /// Token width.
    pub dtype: Dtype,
    /// Tokenizer vocabulary size incl. added tokens; 0 = unknown.
    pub vocab_size: u32,
    /// Token appended after every document, if any.
    pub eos_id: Option<u32>,
    /// SHA-256 of the tokenizer vocabulary (see `tokenize::tokenizer_hash`); zeros = unknown.
    pub tokenizer_hash: [u8; 32],
}

/// What a finished shard holds (also its manifest entry, minus the id bookkeeping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSummary {
    /// Documents in the shard.
    pub n_docs: u64,
    /// Tokens in the shard (EOS included).
    pub n_tokens: u64,
    /// CRC-32 of token bytes followed by offset bytes.
    pub checksum: u32,
}

#[cfg(test)]
thread_local! {
    /// Per-thread version of the ENOSPC hook, so parallel unit tests do not interfere.
    pub(crate) static TEST_FAULT: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// A write failure injector for the ENOSPC test hook (see [`ENV_FAULT_ENOSPC`]).
fn fault_budget() -> Option<u64> {
    #[cfg(test)]
    if let Some(n) = TEST_FAULT.with(|f| f.get()) {
        return Some(n);
    }
    std::env::var(ENV_FAULT_ENOSPC).ok()?.trim().parse().ok()
}

/// A `Write` wrapper that feeds a CRC and honours the ENOSPC test hook.
struct Sink {
    inner: BufWriter<File>,
    written: u64,
    fault_after: Option<u64>,
}

impl Sink {
    fn new(f: File) -> Self {
        Sink {
            inner: BufWriter::with_capacity(1 << 20, f),
            written: 0,
            fault_after: fault_budget(),
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(limit) = self.fault_after {
            if self.written + buf.len() as u64 > limit {
                return Err(std::io::Error::from_raw_os_error(28));
            }
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Streaming writer of one shard file.
///
/// Tokens go to `<final>.tmp`, offsets to `<final>.offsets.tmp`; [`ShardWriter::finish`]
/// appends the offsets, writes the header, fsyncs and renames to the final name, so a reader
/// never sees a partial file under the final name. Dropping an unfinished writer removes the
/// temp files.
pub struct ShardWriter {
    path: PathBuf,
    tmp: PathBuf,
    tmp_offsets: PathBuf,
    meta: ShardMeta,
    tokens: Sink,
    offsets: Sink,
    crc_tokens: crc32fast::Hasher,
    n_tokens: u64,
    n_docs: u64,
    buf: Vec<u8>,
    done: bool,
}

/// The temp-name suffix of shard files in progress (cleaned up by a rerun).
pub const TMP_SUFFIX: &str = ".tmp";

/// The temp name of `path` for this process: `<path>.tmp-<pid>` (`<path><extra>.tmp-<pid>`),
/// unique per writer, so that two writers never share a temp file even without the
/// directory lock the Python layer takes.
pub fn tmp_path(path: &Path, extra: &str) -> PathBuf {
    PathBuf::from(format!(
        "{}{extra}{TMP_SUFFIX}-{}",
        path.display(),
        std::process::id()
    ))
}

impl ShardWriter {
    /// Start writing the shard that will be published at `path`.
    pub fn create(path: impl AsRef<Path>, meta: ShardMeta) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let tmp = tmp_path(&path, "");
        let tmp_offsets = tmp_path(&path, ".offsets");
        let open = |p: &Path| {
            OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(p)
                .map_err(|e| Error::io("create", p, e))
        };
        let mut tokens = Sink::new(open(&tmp)?);
        let mut offsets = Sink::new(open(&tmp_offsets)?);
        tokens
            .write_all(&[0u8; HEADER_LEN as usize])
            .map_err(|e| Error::io("write", &tmp, e))?;
        offsets
            .write_all(&0u64.to_le_bytes())
            .map_err(|e| Error::io("write", &tmp_offsets, e))?;
        Ok(ShardWriter {
            path,
            tmp,
            tmp_offsets,
            meta,
            tokens,
            offsets,
            crc_tokens: crc32fast::Hasher::new(),
            n_tokens: 0,
            n_docs: 0,
            buf: Vec::new(),
            done: false,
        })
    }

    /// Tokens written so far.
    pub fn n_tokens(&self) -> u64 {
        self.n_tokens
    }

    /// Documents written so far.
    pub fn n_docs(&self) -> u64 {
        self.n_docs
    }

    /// Append one document (its tokens, EOS already included if wanted). O(len).
    ///
    /// Errors with [`Error::TokenOutOfRange`] if a token does not fit the dtype; `context`
    /// names where the document came from (e.g. `"corpus.jsonl:17"`).
    pub fn push_doc(&mut self, doc: &[u32], context: &str) -> Result<()> {
        self.write_tokens(doc, context)?;
        self.end_doc(doc.len() as u64)
    }

    /// Append one document given in parts: `parts` calls its argument with each run of
    /// tokens in order (a document too long to hold its ids at once, `--max-doc-bytes`).
    /// Memory: one part. Errors as [`Self::push_doc`].
    pub fn push_doc_parts(
        &mut self,
        context: &str,
        parts: impl FnOnce(&mut dyn FnMut(&[u32]) -> Result<()>) -> Result<()>,
    ) -> Result<u64> {
        let mut n = 0u64;
        parts(&mut |ids: &[u32]| {
            n += ids.len() as u64;
            self.write_tokens(ids, context)
        })?;
        self.end_doc(n)?;
        Ok(n)
    }

    fn write_tokens(&mut self, doc: &[u32], context: &str) -> Result<()> {
        self.buf.clear();
        match self.meta.dtype {
            Dtype::U16 => {
                for &t in doc {
                    if t > u16::MAX as u32 {
                        return Err(Error::TokenOutOfRange {
                            token: t as u64,
                            max: u16::MAX as u64,
                            context: format!("a u16 shard ({context})"),
                            fix: "re-shard with --dtype u32".into(),
                        });
                    }
                    self.buf.extend_from_slice(&(t as u16).to_le_bytes());
                }
            }
            Dtype::U32 => {
                for &t in doc {
                    self.buf.extend_from_slice(&t.to_le_bytes());
                }
            }
        }
        self.tokens
            .write_all(&self.buf)
            .map_err(|e| Error::io("write", &self.tmp, e))?;
        self.crc_tokens.update(&self.buf);
        Ok(())
    }

    fn end_doc(&mut self, n: u64) -> Result<()> {
        self.n_tokens += n;
        self.n_docs += 1;
        self.offsets
            .write_all(&self.n_tokens.to_le_bytes())
            .map_err(|e| Error::io("write", &self.tmp_offsets, e))
    }

    /// Append one document given as little-endian token bytes of this shard's dtype.
    pub fn push_doc_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let w = self.meta.dtype.width() as usize;
        debug_assert_eq!(bytes.len() % w, 0);
        self.push_raw(bytes, (bytes.len() / w) as u64)
    }

    fn push_raw(&mut self, bytes: &[u8], n: u64) -> Result<()> {
        self.tokens
            .write_all(bytes)
            .map_err(|e| Error::io("write", &self.tmp, e))?;
        self.crc_tokens.update(bytes);
        self.n_tokens += n;
        self.n_docs += 1;
        self.offsets
            .write_all(&self.n_tokens.to_le_bytes())
            .map_err(|e| Error::io("write", &self.tmp_offsets, e))?;
        Ok(())
    }

    /// Append the offsets, write the header, fsync and rename to the final name.
    pub fn finish(mut self) -> Result<ShardSummary> {
        let tmp = self.tmp.clone();
        let werr = |e| Error::io("write", &tmp, e);
        let width = self.meta.dtype.width() as u64;
        let tok_end = HEADER_LEN + self.n_tokens * width;
        let offsets_offset = tok_end.div_ceil(8) * 8;
        let pad = [0u8; 8];
        self.tokens
            .write_all(&pad[..(offsets_offset - tok_end) as usize])
            .map_err(werr)?;
        // Offsets: re-read the side file and append it, finishing the CRC as we go.
        self.offsets
            .flush()
            .map_err(|e| Error::io("write", &self.tmp_offsets, e))?;
        let mut crc = self.crc_tokens.clone();
        let mut side =
            File::open(&self.tmp_offsets).map_err(|e| Error::io("read", &self.tmp_offsets, e))?;
        let mut chunk = vec![0u8; 1 << 20];
        loop {
            let n = side
                .read(&mut chunk)
                .map_err(|e| Error::io("read", &self.tmp_offsets, e))?;
            if n == 0 {
                break;
            }
            crc.update(&chunk[..n]);
            self.tokens.write_all(&chunk[..n]).map_err(werr)?;
        }
        let checksum = crc.finalize();
        let header = encode_header(&Header {
            dtype: self.meta.dtype,
            n_tokens: self.n_tokens,
            n_docs: self.n_docs,
            offsets_offset,
            checksum,
            vocab_size: self.meta.vocab_size,
            eos_id: self.meta.eos_id.unwrap_or(NO_EOS),
            tokenizer_hash: self.meta.tokenizer_hash,
        });
        self.tokens.flush().map_err(werr)?;
        let file = self.tokens.inner.get_mut();
        file.seek(SeekFrom::Start(0)).map_err(werr)?;
        file.write_all(&header).map_err(werr)?;
        file.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        fs::rename(&self.tmp, &self.path).map_err(|e| Error::io("rename", &self.tmp, e))?;
        sync_parent(&self.path);
        let _ = fs::remove_file(&self.tmp_offsets);
        self.done = true;
        Ok(ShardSummary {
            n_docs: self.n_docs,
            n_tokens: self.n_tokens,
            checksum,
        })
    }
}

impl Drop for ShardWriter {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.tmp);
            let _ = fs::remove_file(&self.tmp_offsets);
        }
    }
}

/// fsync a file's directory so a rename survives a crash (best effort; not all filesystems
/// allow opening directories).
pub(crate) fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = File::open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        }) {
            let _ = d.sync_all();
        }
    }
}

/// CRC-32 of the byte ranges `(start, len)` of the file at `path`, in order, read with plain
/// `read` calls through a 1 MiB buffer: the file's pages go through the page cache but are
/// never mapped, so verifying a terabyte of files does not count against this process's
/// memory (a mapped read would leave every page resident in its RSS). O(bytes).
pub fn crc_of_file_ranges(path: &Path, ranges: &[(u64, u64)]) -> Result<u32> {
    let mut file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    for &(start, len) in ranges {
        file.seek(SeekFrom::Start(start))
            .map_err(|e| Error::io("read", path, e))?;
        let mut left = len;
        while left > 0 {
            let take = (left as usize).min(buf.len());
            file.read_exact(&mut buf[..take])
                .map_err(|e| Error::io("read", path, e))?;
            crc.update(&buf[..take]);
            left -= take as u64;
        }
    }
    Ok(crc.finalize())
}

/// Write a whole shard at once from in-memory arrays (`offsets` has `n_docs + 1` entries,
/// `offsets[0] == 0`, non-decreasing, last == `tokens.len()`).
pub fn write_shard(
    path: impl AsRef<Path>,
    meta: ShardMeta,
    tokens: &[u32],
    offsets: &[u64],
) -> Result<ShardSummary> {
    let bad = |reason: String| Error::InvalidArgument {
        name: "offsets".into(),
        value: format!("{} entries", offsets.len()),
        fix: reason,
    };
    if offsets.first() != Some(&0) || *offsets.last().unwrap_or(&1) != tokens.len() as u64 {
        return Err(bad(format!(
            "offsets must start at 0 and end at the token count {}",
            tokens.len()
        )));
    }
    if offsets.windows(2).any(|w| w[0] > w[1]) {
        return Err(bad("offsets must be non-decreasing".into()));
    }
    let mut w = ShardWriter::create(path, meta)?;
    for (i, d) in offsets.windows(2).enumerate() {
        w.push_doc(
            &tokens[d[0] as usize..d[1] as usize],
            &format!("document {i}"),
        )?;
    }
    w.finish()
}

struct Header {
    dtype: Dtype,
    n_tokens: u64,
    n_docs: u64,
    offsets_offset: u64,
    checksum: u32,
    vocab_size: u32,
    eos_id: u32,
    tokenizer_hash: [u8; 32],
}

fn encode_header(h: &Header) -> [u8; HEADER_LEN as usize] {
    let mut b = [0u8; HEADER_LEN as usize];
    b[0..8].copy_from_slice(MAGIC);
    b[8..12].copy_from_slice(&VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&h.dtype.width().to_le_bytes());
    b[16..24].copy_from_slice(&h.n_tokens.to_le_bytes());
    b[24..32].copy_from_slice(&h.n_docs.to_le_bytes());
    b[32..40].copy_from_slice(&HEADER_LEN.to_le_bytes());
    b[40..48].copy_from_slice(&h.offsets_offset.to_le_bytes());
    b[48..52].copy_from_slice(&h.checksum.to_le_bytes());
    b[52..56].copy_from_slice(&h.vocab_size.to_le_bytes());
    b[56..60].copy_from_slice(&h.eos_id.to_le_bytes());
    b[64..96].copy_from_slice(&h.tokenizer_hash);
    let crc = crc32fast::hash(&b[..124]);
    b[124..128].copy_from_slice(&crc.to_le_bytes());
    b
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4-byte slice"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8-byte slice"))
}

/// The tokens of a shard, borrowed from its memory map.
#[derive(Debug, Clone, Copy)]
pub enum Tokens<'a> {
    /// A u16 shard.
    U16(&'a [u16]),
    /// A u32 shard.
    U32(&'a [u32]),
}

impl Tokens<'_> {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        match self {
            Tokens::U16(t) => t.len(),
            Tokens::U32(t) => t.len(),
        }
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Token `i` widened to u32. Panics if out of bounds.
    pub fn get(&self, i: usize) -> u32 {
        match self {
            Tokens::U16(t) => t[i] as u32,
            Tokens::U32(t) => t[i],
        }
    }

    /// Tokens `[a, b)` widened to u32 (allocates).
    pub fn to_vec(&self, a: usize, b: usize) -> Vec<u32> {
        match self {
            Tokens::U16(t) => t[a..b].iter().map(|&x| x as u32).collect(),
            Tokens::U32(t) => t[a..b].to_vec(),
        }
    }
}

/// A memory-mapped, validated shard file.
///
/// [`ShardReader::open`] checks magic, version, width, sizes, header CRC and the offsets
/// invariants (starts at 0, non-decreasing, ends at `n_tokens`); the data CRC is checked only
/// by [`ShardReader::verify`] (it reads the whole file). Memory: the map only (pages are
/// loaded on demand by the OS).
pub struct ShardReader {
    path: PathBuf,
    map: Mmap,
    dtype: Dtype,
    n_tokens: u64,
    n_docs: u64,
    offsets_offset: u64,
    checksum: u32,
    vocab_size: u32,
    eos_id: u32,
    tokenizer_hash: [u8; 32],
}

impl std::fmt::Debug for ShardReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardReader")
            .field("path", &self.path)
            .field("dtype", &self.dtype)
            .field("n_tokens", &self.n_tokens)
            .field("n_docs", &self.n_docs)
            .finish()
    }
}

impl ShardReader {
    /// Map and validate the shard at `path` (O(n_docs) for the offsets check).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
        // SAFETY: shard files are immutable once renamed into place; kdmem never writes to a
        // final name, so the mapping is not modified underneath us by kdmem itself.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io("map", &path, e))?;
        let corrupt = |reason: String| Error::Corrupt {
            path: path.clone(),
            reason,
        };
        let len = map.len() as u64;
        if len < HEADER_LEN {
            return Err(corrupt(format!(
                "{len} bytes, shorter than the {HEADER_LEN}-byte header"
            )));
        }
        let h = &map[..HEADER_LEN as usize];
        if &h[0..8] != MAGIC {
            return Err(corrupt("bad magic (not a kdmem token shard)".into()));
        }
        let stored_crc = u32_at(h, 124);
        let version = u32_at(h, 8);
        if crc32fast::hash(&h[..124]) != stored_crc {
            return Err(corrupt("header checksum mismatch".into()));
        }
        if version != VERSION {
            return Err(Error::FormatVersion {
                path,
                found: version,
                supported: VERSION,
            });
        }
        let width = u32_at(h, 12);
        let dtype = Dtype::from_width(width)
            .ok_or_else(|| corrupt(format!("token width {width} (expected 2 or 4)")))?;
        let n_tokens = u64_at(h, 16);
        let n_docs = u64_at(h, 24);
        let tokens_offset = u64_at(h, 32);
        let offsets_offset = u64_at(h, 40);
        let expect_oo = n_tokens
            .checked_mul(width as u64)
            .and_then(|b| b.checked_add(HEADER_LEN))
            .map(|e| e.div_ceil(8) * 8);
        if tokens_offset != HEADER_LEN || Some(offsets_offset) != expect_oo {
            return Err(corrupt(format!(
                "array offsets {tokens_offset}/{offsets_offset} do not match n_tokens {n_tokens}"
            )));
        }
        let expect_len = n_docs
            .checked_add(1)
            .and_then(|d| d.checked_mul(8))
            .and_then(|d| d.checked_add(offsets_offset));
        if expect_len != Some(len) {
            return Err(corrupt(format!(
                "file is {len} bytes, the header implies {}",
                expect_len.map_or("an impossible size".into(), |l| l.to_string())
            )));
        }
        let r = ShardReader {
            checksum: u32_at(h, 48),
            vocab_size: u32_at(h, 52),
            eos_id: u32_at(h, 56),
            tokenizer_hash: h[64..96].try_into().expect("32-byte slice"),
            path: path.clone(),
            map,
            dtype,
            n_tokens,
            n_docs,
            offsets_offset,
        };
        let offs = r.offsets();
        if offs[0] != 0 || offs[n_docs as usize] != n_tokens {
            return Err(corrupt(format!(
                "document offsets run {}..{}, expected 0..{n_tokens}",
                offs[0], offs[n_docs as usize]
            )));
        }
        if let Some(i) = offs.windows(2).position(|w| w[0] > w[1]) {
            return Err(corrupt(format!(
                "document offsets decrease at document {i}"
            )));
        }
        Ok(r)
    }

    /// Recompute the data CRC-32 and compare with the header, reading the file with plain
    /// reads ([`crc_of_file_ranges`]; the map's pages are not touched). O(file size).
    pub fn verify(&self) -> Result<()> {
        let tok_bytes = self.n_tokens * u64::from(self.dtype.width());
        let offs_bytes = self.map.len() as u64 - self.offsets_offset;
        let got = crc_of_file_ranges(
            &self.path,
            &[(HEADER_LEN, tok_bytes), (self.offsets_offset, offs_bytes)],
        )?;
        if got != self.checksum {
            return Err(Error::Corrupt {
                path: self.path.clone(),
                reason: format!(
                    "data checksum {got:#010x} does not match the header's {:#010x}",
                    self.checksum
                ),
            });
        }
        Ok(())
    }

    /// The token array (borrowed from the map).
    pub fn tokens(&self) -> Tokens<'_> {
        let start = HEADER_LEN as usize;
        let n = self.n_tokens as usize;
        let bytes = &self.map[start..start + n * self.dtype.width() as usize];
        // SAFETY: the map is page-aligned and tokens start at byte 128, so the pointer is
        // aligned for u16/u32; the length was validated against the file size in `open`;
        // the host is little-endian (compile-time check), matching the file.
        unsafe {
            match self.dtype {
                Dtype::U16 => Tokens::U16(std::slice::from_raw_parts(bytes.as_ptr().cast(), n)),
                Dtype::U32 => Tokens::U32(std::slice::from_raw_parts(bytes.as_ptr().cast(), n)),
            }
        }
    }

    /// The `n_docs + 1` document offsets (in tokens).
    pub fn offsets(&self) -> &[u64] {
        let bytes = &self.map[self.offsets_offset as usize..];
        // SAFETY: offsets_offset is a multiple of 8 from a page-aligned base; the length
        // ((n_docs + 1) * 8 bytes) was validated in `open`; little-endian host.
        unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast(), self.n_docs as usize + 1) }
    }

    /// Tokens of document `i` as `[start, end)` token positions. Panics if `i >= n_docs`.
    pub fn doc_range(&self, i: usize) -> (usize, usize) {
        let o = self.offsets();
        (o[i] as usize, o[i + 1] as usize)
    }

    /// Number of documents.
    pub fn n_docs(&self) -> u64 {
        self.n_docs
    }

    /// Number of tokens (EOS included).
    pub fn n_tokens(&self) -> u64 {
        self.n_tokens
    }

    /// Token width.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// The data CRC-32 stored in the header (identifies the shard's content).
    pub fn data_checksum(&self) -> u32 {
        self.checksum
    }

    /// SHA-256 of the tokenizer vocabulary; all zeros = unknown.
    pub fn tokenizer_hash(&self) -> [u8; 32] {
        self.tokenizer_hash
    }

    /// Vocabulary size; 0 = unknown.
    pub fn vocab_size(&self) -> u32 {
        self.vocab_size
    }

    /// EOS id appended after every document, if any.
    pub fn eos_id(&self) -> Option<u32> {
        (self.eos_id != NO_EOS).then_some(self.eos_id)
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The metadata shared by all shards of a directory.
    pub fn meta(&self) -> ShardMeta {
        ShardMeta {
            dtype: self.dtype,
            vocab_size: self.vocab_size,
            eos_id: self.eos_id(),
            tokenizer_hash: self.tokenizer_hash,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meta(dtype: Dtype) -> ShardMeta {
        ShardMeta {
            dtype,
            vocab_size: 1000,
            eos_id: Some(7),
            tokenizer_hash: [3u8; 32],
        }
    }

    fn docs_to_flat(docs: &[Vec<u32>]) -> (Vec<u32>, Vec<u64>) {
        let mut toks = Vec::new();
        let mut offs = vec![0u64];
        for d in docs {
            toks.extend_from_slice(d);
            offs.push(toks.len() as u64);
        }
        (toks, offs)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn roundtrip(docs in prop::collection::vec(prop::collection::vec(0u32..70000, 0..20), 0..30),
                     wide in any::<bool>()) {
            let dtype = if wide { Dtype::U32 } else { Dtype::U16 };
            let docs: Vec<Vec<u32>> = docs.into_iter()
                .map(|d| d.into_iter().map(|t| if wide { t } else { t % 65536 }).collect())
                .collect();
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("s.kdt");
            let (toks, offs) = docs_to_flat(&docs);
            let s = write_shard(&p, meta(dtype), &toks, &offs).unwrap();
            let r = ShardReader::open(&p).unwrap();
            r.verify().unwrap();
            prop_assert_eq!(r.n_docs(), docs.len() as u64);
            prop_assert_eq!(r.n_tokens(), toks.len() as u64);
            prop_assert_eq!(r.offsets(), &offs[..]);
            prop_assert_eq!(r.tokens().to_vec(0, toks.len()), toks.clone());
            prop_assert_eq!(r.data_checksum(), s.checksum);
            prop_assert_eq!(r.meta(), meta(dtype));
            // The oracle: CRC over the concatenated arrays, computed independently.
            let mut bytes = Vec::new();
            for &t in &toks {
                if wide { bytes.extend_from_slice(&t.to_le_bytes()) }
                else { bytes.extend_from_slice(&(t as u16).to_le_bytes()) }
            }
            for &o in &offs { bytes.extend_from_slice(&o.to_le_bytes()) }
            prop_assert_eq!(crc32fast::hash(&bytes), s.checksum);
            let len = std::fs::metadata(&p).unwrap().len();
            prop_assert_eq!(len, (128 + toks.len() as u64 * dtype.width() as u64).div_ceil(8) * 8 + offs.len() as u64 * 8);
        }

        #[test]
        fn any_flipped_byte_is_detected(pos in 0usize..10_000, bit in 0u8..8) {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("s.kdt");
            let docs = vec![vec![1u32, 2, 3], vec![], vec![9; 11]];
            let (toks, offs) = docs_to_flat(&docs);
            write_shard(&p, meta(Dtype::U16), &toks, &offs).unwrap();
            let mut b = std::fs::read(&p).unwrap();
            let pos = pos % b.len();
            // Padding bytes are outside both checksums by design.
            let pad = (128 + 2 * toks.len())..(128 + 2 * toks.len()).div_ceil(8) * 8;
            prop_assume!(!pad.contains(&pos));
            b[pos] ^= 1 << bit;
            std::fs::write(&p, &b).unwrap();
            let bad = ShardReader::open(&p).and_then(|r| r.verify());
            prop_assert!(bad.is_err(), "flip at {pos} not detected");
        }
    }

    #[test]
    fn truncated_and_foreign_files_are_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.kdt");
        write_shard(&p, meta(Dtype::U32), &[1, 2, 3], &[0, 3]).unwrap();
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..b.len() - 1]).unwrap();
        let e = ShardReader::open(&p).unwrap_err();
        assert_eq!(e.kind(), "CorruptFileError", "{e}");
        std::fs::write(&p, b"hello").unwrap();
        assert_eq!(
            ShardReader::open(&p).unwrap_err().kind(),
            "CorruptFileError"
        );
    }

    #[test]
    fn u16_overflow_names_the_fix_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.kdt");
        let e = write_shard(&p, meta(Dtype::U16), &[70000], &[0, 1]).unwrap_err();
        assert!(e.to_string().contains("--dtype u32"), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
