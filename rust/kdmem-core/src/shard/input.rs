//! Native corpus readers: `.jsonl` / `.json` / `.ndjson` (one JSON object per line) and
//! `.txt` (one document per line), each optionally `.gz` or `.zst` compressed.
//!
//! A *record* is one input line; records are numbered across all inputs in the order given,
//! which is what the resume bookkeeping counts (`records_consumed`). Rules:
//! - JSON lines: the document is the string field `--text-field` of the object; lines that
//!   are empty or only whitespace are skipped (they count as records, not documents).
//! - Text: every line is a document, empty lines included, like Hugging Face `datasets`'
//!   `text` builder with its defaults (split on `\n`, a trailing `\r` removed, line breaks
//!   not kept). Unlike Python's `str.splitlines`, the rarer separators (`\x0b`, `\x0c`,
//!   `\x1c`-`\x1e`, `\x85`, U+2028, U+2029) do not split documents.
//!
//! Reading is sequential on one thread (decompression included); parsing, UTF-8 validation
//! and tokenization of a batch happen in parallel later ([`parse_record`]).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};

/// How the lines of an input are interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// One document per line.
    Text,
}

/// Compression of an input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain bytes.
    None,
    /// gzip (multi-member allowed).
    Gzip,
    /// Zstandard.
    Zstd,
}

/// Classify a path by its extension; `None` if it is not a natively read format.
pub fn classify(path: &Path) -> Option<(Format, Compression)> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    let (stem, comp) = if let Some(s) = name.strip_suffix(".gz") {
        (s, Compression::Gzip)
    } else if let Some(s) = name.strip_suffix(".zst") {
        (s, Compression::Zstd)
    } else if let Some(s) = name.strip_suffix(".zstd") {
        (s, Compression::Zstd)
    } else {
        (name.as_str(), Compression::None)
    };
    let fmt = if stem.ends_with(".jsonl") || stem.ends_with(".json") || stem.ends_with(".ndjson") {
        Format::Jsonl
    } else if stem.ends_with(".txt") {
        Format::Text
    } else {
        return None;
    };
    Some((fmt, comp))
}

/// One input line, located by file and 1-based line number.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef {
    /// Index into the input list.
    pub file: u32,
    /// 1-based line number in that file.
    pub line: u64,
    /// Byte range of the line (without the line break) in the batch buffer.
    pub start: usize,
    /// End of that range.
    pub end: usize,
}

/// A run of consecutive records sharing one byte buffer.
#[derive(Debug, Default)]
pub struct Batch {
    /// Concatenated line bytes.
    pub buf: Vec<u8>,
    /// The records, in input order.
    pub records: Vec<RecordRef>,
    /// On-disk input bytes read up to the end of this batch (for progress).
    pub disk_bytes: u64,
}

impl Batch {
    /// The bytes of record `i`.
    pub fn bytes(&self, i: usize) -> &[u8] {
        let r = &self.records[i];
        &self.buf[r.start..r.end]
    }
}

/// Counts bytes read from the underlying (compressed) file, for progress and ETA.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Open `path` as a buffered, decompressed line source.
pub fn open(path: &Path, count: Arc<AtomicU64>) -> Result<Box<dyn BufRead + Send>> {
    let (_, comp) = classify(path).ok_or_else(|| unsupported(path))?;
    let f = File::open(path).map_err(|e| Error::io("read", path, e))?;
    let raw = Counting { inner: f, count };
    Ok(match comp {
        Compression::None => Box::new(BufReader::with_capacity(1 << 20, raw)),
        Compression::Gzip => Box::new(BufReader::with_capacity(
            1 << 20,
            flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 16, raw)),
        )),
        Compression::Zstd => Box::new(BufReader::with_capacity(
            1 << 20,
            zstd::stream::read::Decoder::new(raw).map_err(|e| Error::io("read", path, e))?,
        )),
    })
}

fn unsupported(path: &Path) -> Error {
    Error::InvalidArgument {
        name: "input".into(),
        value: path.display().to_string(),
        fix:
            "natively read inputs end in .jsonl, .json, .ndjson or .txt (optionally .gz or .zst); \
              .parquet and datasets directories go through kdmem.corpus.shard_corpus"
                .into(),
    }
}

/// Sequential reader of all inputs' lines, cut into batches of about `batch_bytes`.
pub struct LineReader {
    inputs: Vec<PathBuf>,
    file: usize,
    line: u64,
    cur: Option<Box<dyn BufRead + Send>>,
    count: Arc<AtomicU64>,
}

impl LineReader {
    /// A reader over `inputs` (checked to be natively readable). `count` receives the number
    /// of on-disk bytes read.
    pub fn new(inputs: &[PathBuf], count: Arc<AtomicU64>) -> Result<Self> {
        for p in inputs {
            classify(p).ok_or_else(|| unsupported(p))?;
        }
        Ok(LineReader {
            inputs: inputs.to_vec(),
            file: 0,
            line: 0,
            cur: None,
            count,
        })
    }

    /// Skip `n` records without keeping them (resume). Stops early at the end of input.
    pub fn skip(&mut self, mut n: u64) -> Result<()> {
        let mut sink = Vec::new();
        while n > 0 {
            sink.clear();
            if self.next_line(&mut sink)?.is_none() {
                break;
            }
            n -= 1;
        }
        Ok(())
    }

    /// Append the next line (without its line break) to `buf`; returns its (file, line)
    /// or `None` at the end of all inputs.
    fn next_line(&mut self, buf: &mut Vec<u8>) -> Result<Option<(u32, u64)>> {
        loop {
            if self.cur.is_none() {
                if self.file >= self.inputs.len() {
                    return Ok(None);
                }
                self.cur = Some(open(&self.inputs[self.file], Arc::clone(&self.count))?);
                self.line = 0;
            }
            let start = buf.len();
            let r = self.cur.as_mut().expect("just opened");
            let n = r
                .read_until(b'\n', buf)
                .map_err(|e| Error::io("read", &self.inputs[self.file], e))?;
            if n == 0 {
                self.cur = None;
                self.file += 1;
                continue;
            }
            self.line += 1;
            if buf.last() == Some(&b'\n') {
                buf.pop();
                if buf.len() > start && buf.last() == Some(&b'\r') {
                    buf.pop();
                }
            }
            return Ok(Some((self.file as u32, self.line)));
        }
    }

    /// The next batch of records totalling at least `batch_bytes` (or up to `max_records`),
    /// empty at the end of input.
    pub fn next_batch(&mut self, batch_bytes: usize, max_records: usize) -> Result<Batch> {
        let mut b = Batch::default();
        while b.buf.len() < batch_bytes && b.records.len() < max_records {
            let start = b.buf.len();
            match self.next_line(&mut b.buf)? {
                None => break,
                Some((file, line)) => b.records.push(RecordRef {
                    file,
                    line,
                    start,
                    end: b.buf.len(),
                }),
            }
        }
        b.disk_bytes = self.count.load(Ordering::Relaxed);
        Ok(b)
    }

    /// Input paths.
    pub fn inputs(&self) -> &[PathBuf] {
        &self.inputs
    }
}

/// What one record holds.
#[derive(Debug)]
pub enum Parsed<'a> {
    /// A document's text.
    Doc(std::borrow::Cow<'a, str>),
    /// A blank JSON line: a record but no document.
    Blank,
}

/// Decode one record (UTF-8 check, JSON parsing, field extraction).
pub fn parse_record<'a>(
    bytes: &'a [u8],
    format: Format,
    text_field: &str,
    path: &str,
    line: u64,
) -> Result<Parsed<'a>> {
    let text = std::str::from_utf8(bytes).map_err(|e| Error::InvalidUtf8 {
        path: path.to_string(),
        line,
        offset: e.valid_up_to() as u64,
    })?;
    match format {
        Format::Text => Ok(Parsed::Doc(text.into())),
        Format::Jsonl => {
            if text.trim().is_empty() {
                return Ok(Parsed::Blank);
            }
            let v: serde_json::Value =
                serde_json::from_str(text).map_err(|e| Error::MalformedRecord {
                    path: path.to_string(),
                    line,
                    reason: format!("invalid JSON: {e}"),
                })?;
            let serde_json::Value::Object(mut obj) = v else {
                return Err(Error::MalformedRecord {
                    path: path.to_string(),
                    line,
                    reason: "not a JSON object".into(),
                });
            };
            match obj.remove(text_field) {
                Some(serde_json::Value::String(s)) => Ok(Parsed::Doc(s.into())),
                other => {
                    let found = match other {
                        Some(v) => format!(
                            "{text_field:?} is {}",
                            match v {
                                serde_json::Value::Null => "null",
                                serde_json::Value::Bool(_) => "a boolean",
                                serde_json::Value::Number(_) => "a number",
                                serde_json::Value::Array(_) => "an array",
                                _ => "an object",
                            }
                        ),
                        None => {
                            let keys: Vec<&str> = obj.keys().take(8).map(|k| k.as_str()).collect();
                            format!("keys {keys:?}")
                        }
                    };
                    Err(Error::MissingField {
                        path: path.to_string(),
                        line,
                        field: text_field.to_string(),
                        found,
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_by_extension() {
        assert_eq!(
            classify(Path::new("a/b.JSONL.gz")),
            Some((Format::Jsonl, Compression::Gzip))
        );
        assert_eq!(
            classify(Path::new("b.txt.zst")),
            Some((Format::Text, Compression::Zstd))
        );
        assert_eq!(classify(Path::new("b.parquet")), None);
    }

    #[test]
    fn lines_keep_empty_text_lines_and_strip_crlf() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        std::fs::write(&p, b"one\r\n\ntwo").unwrap();
        let mut r = LineReader::new(&[p], Arc::default()).unwrap();
        let b = r.next_batch(1 << 20, 100).unwrap();
        let lines: Vec<&[u8]> = (0..b.records.len()).map(|i| b.bytes(i)).collect();
        assert_eq!(lines, vec![&b"one"[..], b"", b"two"]);
        assert_eq!(b.records[2].line, 3);
    }

    #[test]
    fn json_errors_name_file_line_and_fix() {
        let e = parse_record(b"{\"a\": 1}", Format::Jsonl, "text", "f.jsonl", 4).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("f.jsonl:4") && s.contains("--text-field"), "{s}");
        let e = parse_record(b"{oops", Format::Jsonl, "text", "f.jsonl", 5).unwrap_err();
        assert!(e.to_string().contains("--skip-bad"), "{e}");
        let e = parse_record(b"ab\xffc", Format::Text, "text", "f.txt", 6).unwrap_err();
        assert!(e.to_string().contains("f.txt:6") && e.to_string().contains("byte 2"));
        assert!(matches!(
            parse_record(b"  ", Format::Jsonl, "text", "f", 1).unwrap(),
            Parsed::Blank
        ));
    }
}
