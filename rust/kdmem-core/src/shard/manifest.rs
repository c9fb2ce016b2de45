//! The `shards.json` manifest of a shard directory (`docs/formats.md`): what is in it, how
//! it was made, and the atomic write every change goes through.
//!
//! Costs: reading and writing are O(number of shards); the JSON has a fixed key order, so
//! the same manifest always has the same bytes.

use std::fs;
use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::shard::format::{self, Dtype, ShardMeta};
use crate::shard::tokenize::hex;

/// Manifest file name inside the output directory.
pub const MANIFEST: &str = "shards.json";

/// Name of shard `k`.
pub fn shard_name(k: usize) -> String {
    format!("shard-{k:05}.kdt")
}

/// Whether `name` is a shard file name (`shard-NNNNN.kdt`).
pub fn is_shard_name(name: &str) -> bool {
    name.len() == 15
        && name.starts_with("shard-")
        && name.ends_with(".kdt")
        && name[6..11].bytes().all(|b| b.is_ascii_digit())
}

/// SHA-256 (hex) of the configuration lines that determine the output bytes.
pub fn config_hash(parts: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(b"kdmem-shards v1\n");
    for p in parts {
        h.update(p.as_bytes());
        h.update(b"\n");
    }
    hex(&h.finalize())
}

/// One finished shard as listed in the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardEntry {
    /// File name inside the directory.
    pub name: String,
    /// Documents.
    pub n_docs: u64,
    /// Tokens.
    pub n_tokens: u64,
    /// Data CRC-32.
    pub checksum: u32,
    /// Global id of its first document.
    pub first_doc: u64,
    /// Input records consumed up to and including this shard's last document (counted
    /// within the run, or the append, that wrote it).
    pub records_consumed: u64,
    /// Records skipped as bad (`--skip-bad`) among those.
    pub skipped_bad: u64,
    /// Documents among them longer than `--max-doc-bytes`, tokenized in pieces (written to
    /// the JSON only when non-zero, so other manifests keep their bytes).
    pub long_docs_split: u64,
}

/// One `kdmem shard --append` committed to a shard set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendEntry {
    /// Configuration hash of the append (its inputs and options): rerunning it is a no-op.
    pub config_hash: String,
    /// Number of its first shard.
    pub first_shard: usize,
    /// Shards it added.
    pub n_shards: usize,
}

/// The `shards.json` manifest (see `docs/formats.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Shared shard metadata.
    pub meta: ShardMeta,
    /// Whether the run finished.
    pub complete: bool,
    /// Configuration hash of the run that made the set.
    pub config_hash: String,
    /// Finished shards in order.
    pub shards: Vec<ShardEntry>,
    /// Which encoder turned text into ids (`kdmem-bpe`, `tokenizers`, or both in order of
    /// use, joined by `, then `); `None` for imported token arrays.
    pub encoder: Option<String>,
    /// Appends committed after the run, in order.
    pub appends: Vec<AppendEntry>,
}

impl Manifest {
    /// An empty, unfinished manifest.
    pub fn new(meta: ShardMeta, config_hash: String, encoder: Option<String>) -> Self {
        Manifest {
            meta,
            complete: false,
            config_hash,
            shards: Vec::new(),
            encoder,
            appends: Vec::new(),
        }
    }

    /// Total documents.
    pub fn n_docs(&self) -> u64 {
        self.shards.iter().map(|s| s.n_docs).sum()
    }
    /// Total tokens.
    pub fn n_tokens(&self) -> u64 {
        self.shards.iter().map(|s| s.n_tokens).sum()
    }
    /// Total bad records skipped.
    pub fn skipped_bad(&self) -> u64 {
        self.shards.iter().map(|s| s.skipped_bad).sum()
    }
    /// Total documents tokenized in pieces (longer than `--max-doc-bytes`).
    pub fn long_docs_split(&self) -> u64 {
        self.shards.iter().map(|s| s.long_docs_split).sum()
    }
    /// Total input records consumed.
    pub fn records_consumed(&self) -> u64 {
        self.shards.iter().map(|s| s.records_consumed).sum()
    }

    /// Record that `encoder` wrote (more of) this set.
    pub fn note_encoder(&mut self, encoder: Option<&str>) {
        self.encoder = match (self.encoder.take(), encoder) {
            (None, e) => e.map(str::to_string),
            (Some(old), Some(e)) if !old.ends_with(e) => Some(format!("{old}, then {e}")),
            (old, _) => old,
        };
    }

    /// The manifest as JSON text (keys in a fixed order, so it is byte-stable). `encoder` and
    /// `appends` are written only when set, so manifests without them keep their bytes.
    pub fn to_json(&self) -> String {
        let shards: Vec<Value> = self
            .shards
            .iter()
            .map(|s| {
                let mut e = json!({"name": s.name, "n_docs": s.n_docs, "n_tokens": s.n_tokens,
                       "checksum": s.checksum, "first_doc": s.first_doc,
                       "records_consumed": s.records_consumed, "skipped_bad": s.skipped_bad});
                if s.long_docs_split > 0 {
                    e["long_docs_split"] = json!(s.long_docs_split);
                }
                e
            })
            .collect();
        let mut v = json!({
            "format": "kdmem-shards", "version": format::VERSION, "dtype": self.meta.dtype.name(),
            "tokenizer_hash": hex(&self.meta.tokenizer_hash), "vocab_size": self.meta.vocab_size,
            "eos_id": self.meta.eos_id, "n_docs": self.n_docs(), "n_tokens": self.n_tokens(),
            "skipped_bad": self.skipped_bad(), "complete": self.complete,
            "config_hash": self.config_hash,
        });
        if let Some(e) = &self.encoder {
            v["encoder"] = json!(e);
        }
        if self.long_docs_split() > 0 {
            v["long_docs_split"] = json!(self.long_docs_split());
        }
        if !self.appends.is_empty() {
            v["appends"] = Value::Array(
                self.appends
                    .iter()
                    .map(|a| {
                        json!({"config_hash": a.config_hash, "first_shard": a.first_shard,
                               "n_shards": a.n_shards})
                    })
                    .collect(),
            );
        }
        v["shards"] = Value::Array(shards);
        serde_json::to_string_pretty(&v).expect("JSON values always serialise") + "\n"
    }

    /// Parse `shards.json`; errors name the file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
        let corrupt = |reason: &str| Error::Corrupt {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let v: Value =
            serde_json::from_str(&text).map_err(|e| corrupt(&format!("invalid JSON ({e})")))?;
        if v["format"] != "kdmem-shards" {
            return Err(corrupt("not a kdmem shard manifest"));
        }
        let version = v["version"].as_u64().unwrap_or(0) as u32;
        if version != format::VERSION {
            return Err(Error::FormatVersion {
                path: path.to_path_buf(),
                found: version,
                supported: format::VERSION,
            });
        }
        let dtype = match v["dtype"].as_str() {
            Some("u16") => Dtype::U16,
            Some("u32") => Dtype::U32,
            _ => return Err(corrupt("bad dtype")),
        };
        let tokenizer_hash = parse_hash(v["tokenizer_hash"].as_str().unwrap_or(""))
            .ok_or_else(|| corrupt("bad tokenizer_hash"))?;
        let u = |x: &Value, k: &str| x[k].as_u64().ok_or_else(|| corrupt(&format!("bad {k}")));
        let mut shards = Vec::new();
        for s in v["shards"]
            .as_array()
            .ok_or_else(|| corrupt("no shards list"))?
        {
            shards.push(ShardEntry {
                name: s["name"]
                    .as_str()
                    .filter(|n| is_shard_name(n))
                    .ok_or_else(|| corrupt("bad shard name"))?
                    .to_string(),
                n_docs: u(s, "n_docs")?,
                n_tokens: u(s, "n_tokens")?,
                checksum: u(s, "checksum")? as u32,
                first_doc: u(s, "first_doc")?,
                records_consumed: u(s, "records_consumed")?,
                skipped_bad: s["skipped_bad"].as_u64().unwrap_or(0),
                long_docs_split: s["long_docs_split"].as_u64().unwrap_or(0),
            });
        }
        let mut appends = Vec::new();
        for a in v["appends"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            appends.push(AppendEntry {
                config_hash: a["config_hash"]
                    .as_str()
                    .ok_or_else(|| corrupt("bad appends"))?
                    .to_string(),
                first_shard: u(a, "first_shard")? as usize,
                n_shards: u(a, "n_shards")? as usize,
            });
        }
        Ok(Manifest {
            meta: ShardMeta {
                dtype,
                vocab_size: u(&v, "vocab_size")? as u32,
                eos_id: v["eos_id"].as_u64().map(|e| e as u32),
                tokenizer_hash,
            },
            complete: v["complete"].as_bool().unwrap_or(false),
            config_hash: v["config_hash"].as_str().unwrap_or("").to_string(),
            shards,
            encoder: v["encoder"].as_str().map(str::to_string),
            appends,
        })
    }

    /// Write atomically (temp file, fsync, rename) as `dir/shards.json`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        write_atomic(&dir.join(MANIFEST), self.to_json().as_bytes())
    }
}

/// 64 hex digits as 32 bytes.
pub fn parse_hash(h: &str) -> Option<[u8; 32]> {
    if h.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Write `bytes` to `path` atomically: temp file, fsync, rename, fsync of the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = format::tmp_path(path, "");
    let res = (|| {
        let mut f = fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        f.write_all(bytes)
            .map_err(|e| Error::io("write", &tmp, e))?;
        f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| Error::io("rename", &tmp, e))
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    format::sync_parent(path);
    res
}
