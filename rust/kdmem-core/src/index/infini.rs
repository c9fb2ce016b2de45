//! Read-only queries over an infini-gram index directory (Liu et al. 2024, package
//! `infini-gram` 2.x, u16 tokens): `tokenized.N`, `table.N`, `offset.N` for N = 0, 1, ...
//!
//! Layout (as written by `infini_gram.indexing`): `tokenized.N` is every document as
//! `\xff\xff` followed by its u16 little-endian tokens; `offset.N` holds the u64 byte offset of
//! every document (its separator); `table.N` is the suffix array of the even byte positions of
//! `tokenized.N`, sorted by raw bytes, each entry a little-endian byte offset of
//! `ratio = ceil(log2(size of tokenized.N) / 8)` bytes.
//!
//! Byte order of little-endian u16 tokens is the numeric order of the byte-swapped ids, so the
//! searches of [`super::search`] run unchanged on `swap_bytes(token)` symbols; the separator
//! (0xFFFF) never equals a query symbol (queries may not contain 65535), so no match crosses
//! a document. Costs as for kdmem's own index; opening is O(shards), nothing is verified
//! beyond file sizes (infini-gram files carry no checksums).

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::search::{Corpus, QueryShard, Src};
use crate::error::{Error, Result};

struct Files {
    ds: Mmap,
    sa: Mmap,
    od: Mmap,
    ratio: usize,
    first_doc: u64,
}

/// An opened infini-gram index directory.
pub struct InfiniGramIndex {
    dir: PathBuf,
    shards: Vec<Files>,
}

impl std::fmt::Debug for InfiniGramIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfiniGramIndex")
            .field("dir", &self.dir)
            .field("shards", &self.shards.len())
            .finish()
    }
}

/// Whether `dir` looks like an infini-gram index (has `tokenized.0` and `table.0`).
pub fn is_infini_gram_dir(dir: &Path) -> bool {
    dir.join("tokenized.0").is_file() && dir.join("table.0").is_file()
}

fn map(path: &Path) -> Result<Mmap> {
    let f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    // SAFETY: the index is opened read-only and not modified while open.
    unsafe { Mmap::map(&f) }.map_err(|e| Error::io("map", path, e))
}

impl InfiniGramIndex {
    /// Map every shard of `dir` and check the file sizes against each other.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let mut shards = Vec::new();
        let mut first_doc = 0u64;
        for i in 0.. {
            let ds_path = dir.join(format!("tokenized.{i}"));
            if !ds_path.is_file() {
                break;
            }
            let ds = map(&ds_path)?;
            let sa_path = dir.join(format!("table.{i}"));
            let sa = map(&sa_path)?;
            let od = map(&dir.join(format!("offset.{i}")))?;
            let corrupt = |path: &Path, reason: String| Error::Corrupt {
                path: path.to_path_buf(),
                reason,
            };
            if ds.len() % 2 != 0 || od.len() % 8 != 0 {
                return Err(corrupt(
                    &ds_path,
                    format!(
                        "{} bytes of u16 tokens / {} bytes of u64 offsets: not whole values (only u16 infini-gram indexes are supported)",
                        ds.len(),
                        od.len()
                    ),
                ));
            }
            let ntok = ds.len() / 2;
            let ratio = sa.len().checked_div(ntok).unwrap_or(1);
            if ntok > 0 && (ratio * ntok != sa.len() || !(1..=8).contains(&ratio)) {
                return Err(corrupt(
                    &sa_path,
                    format!(
                        "{} bytes for {ntok} token positions (expected 1 to 8 bytes each)",
                        sa.len()
                    ),
                ));
            }
            let n_docs = (od.len() / 8) as u64;
            shards.push(Files {
                ds,
                sa,
                od,
                ratio,
                first_doc,
            });
            first_doc += n_docs;
        }
        if shards.is_empty() {
            return Err(Error::InvalidArgument {
                name: "dir".into(),
                value: dir.display().to_string(),
                fix: "no tokenized.0 there: pass an infini-gram index directory".into(),
            });
        }
        Ok(InfiniGramIndex { dir, shards })
    }

    /// Number of shards.
    pub fn n_shards(&self) -> usize {
        self.shards.len()
    }

    /// Documents over all shards.
    pub fn n_docs(&self) -> u64 {
        self.shards.iter().map(|f| (f.od.len() / 8) as u64).sum()
    }

    /// Tokens over all shards (separators excluded).
    pub fn n_tokens(&self) -> u64 {
        self.corpus().n_tokens()
    }

    /// Bytes of its files.
    pub fn disk_bytes(&self) -> u64 {
        self.shards
            .iter()
            .map(|f| (f.ds.len() + f.sa.len() + f.od.len()) as u64)
            .sum()
    }

    /// Its files.
    pub fn files(&self) -> Vec<PathBuf> {
        (0..self.shards.len())
            .flat_map(|i| {
                ["tokenized", "table", "offset"].map(|s| self.dir.join(format!("{s}.{i}")))
            })
            .collect()
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A query view over all shards (cheap: borrows the maps).
    pub fn corpus(&self) -> Corpus<IgShard<'_>> {
        Corpus {
            shards: self
                .shards
                .iter()
                .enumerate()
                .map(|(k, f)| IgShard {
                    ds: &f.ds,
                    sa: &f.sa,
                    od: &f.od,
                    ratio: f.ratio,
                    first_doc: f.first_doc,
                    k: k as u32,
                })
                .collect(),
            vocab_size: 0,
        }
    }
}

/// One infini-gram shard, borrowed from its maps.
#[derive(Debug, Clone, Copy)]
pub struct IgShard<'a> {
    ds: &'a [u8],
    sa: &'a [u8],
    od: &'a [u8],
    ratio: usize,
    first_doc: u64,
    k: u32,
}

impl IgShard<'_> {
    fn n_docs(&self) -> u64 {
        (self.od.len() / 8) as u64
    }

    fn doc_start(&self, d: usize) -> u64 {
        u64::from_le_bytes(self.od[8 * d..8 * d + 8].try_into().expect("8 bytes"))
    }

    fn swapped(q: &[u32]) -> Vec<u32> {
        q.iter()
            .map(|&t| u32::from((t as u16).swap_bytes()))
            .collect()
    }
}

impl Src for IgShard<'_> {
    #[inline(always)]
    fn entries(&self) -> usize {
        self.ds.len() / 2
    }

    #[inline(always)]
    fn pos(&self, i: usize) -> usize {
        let mut b = [0u8; 8];
        b[..self.ratio].copy_from_slice(&self.sa[i * self.ratio..(i + 1) * self.ratio]);
        (u64::from_le_bytes(b) / 2) as usize
    }

    #[inline(always)]
    fn at(&self, pos: usize, k: usize) -> Option<u32> {
        let p = 2 * (pos + k);
        // Byte order: first byte is the most significant.
        (p < self.ds.len()).then(|| u32::from(self.ds[p]) << 8 | u32::from(self.ds[p + 1]))
    }
}

impl QueryShard for IgShard<'_> {
    fn n_tokens(&self) -> u64 {
        (self.ds.len() / 2) as u64 - self.n_docs()
    }

    fn max_query_token(&self) -> u64 {
        // 0xFFFF is infini-gram's document separator.
        u64::from(u16::MAX) - 1
    }

    fn count(&self, q: &[u32]) -> u64 {
        if q.is_empty() {
            return self.n_tokens();
        }
        self.range(&Self::swapped(q)).len() as u64
    }

    fn positions(&self, q: &[u32], limit: usize) -> Vec<u64> {
        if q.is_empty() {
            // Every token position except the separators.
            return (0..self.ds.len() / 2)
                .filter(|&p| self.at(p, 0) != Some(0xFFFF))
                .take(limit)
                .map(|p| p as u64)
                .collect();
        }
        Src::positions(self, &Self::swapped(q), limit)
    }

    fn matching_stats_into(&self, q: &[u32], cap: usize, out: &mut [u32]) {
        assert_eq!(out.len(), q.len(), "one output per query position");
        self.matching_stats(&Self::swapped(q), cap, out);
    }

    fn locate_pos(&self, p: u64) -> (u32, u64, u64) {
        let byte = 2 * p;
        let (mut lo, mut hi) = (0usize, self.n_docs() as usize);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.doc_start(mid) <= byte {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let d = lo - 1;
        // Skip the document's leading separator.
        (
            self.k,
            self.first_doc + d as u64,
            (byte - self.doc_start(d)) / 2 - 1,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::search::Location;

    /// Write the three files of one shard the way `infini_gram.indexing` does, sorting the
    /// suffixes of the byte string directly (the oracle).
    fn write_shard(dir: &Path, i: usize, docs: &[Vec<u16>]) {
        let mut ds = Vec::new();
        let mut od = Vec::new();
        for d in docs {
            od.extend_from_slice(&(ds.len() as u64).to_le_bytes());
            ds.extend_from_slice(&[0xff, 0xff]);
            for t in d {
                ds.extend_from_slice(&t.to_le_bytes());
            }
        }
        let mut pos: Vec<usize> = (0..ds.len()).step_by(2).collect();
        pos.sort_by(|&a, &b| ds[a..].cmp(&ds[b..]));
        let ratio = ((ds.len() as f64).log2() / 8.0).ceil().max(1.0) as usize;
        let mut sa = Vec::new();
        for p in pos {
            sa.extend_from_slice(&(p as u64).to_le_bytes()[..ratio]);
        }
        std::fs::write(dir.join(format!("tokenized.{i}")), ds).unwrap();
        std::fs::write(dir.join(format!("table.{i}")), sa).unwrap();
        std::fs::write(dir.join(format!("offset.{i}")), od).unwrap();
    }

    #[test]
    fn infini_gram_layout_matches_a_naive_scan() {
        let tmp = tempfile::tempdir().unwrap();
        let shards: Vec<Vec<Vec<u16>>> = vec![
            vec![vec![1, 258, 3, 1, 258], vec![258, 3], vec![]],
            vec![vec![3, 1, 258, 3], vec![1, 258, 3, 1, 258, 3, 513]],
        ];
        for (i, s) in shards.iter().enumerate() {
            write_shard(tmp.path(), i, s);
        }
        assert!(is_infini_gram_dir(tmp.path()));
        let idx = InfiniGramIndex::open(tmp.path()).unwrap();
        let c = idx.corpus();
        let docs: Vec<(u32, &Vec<u16>)> = shards
            .iter()
            .enumerate()
            .flat_map(|(k, s)| s.iter().map(move |d| (k as u32, d)))
            .collect();
        let queries: Vec<Vec<u32>> = vec![
            vec![1, 258],
            vec![258, 3, 1],
            vec![3],
            vec![513],
            vec![258, 3, 3],
            vec![1, 258, 3, 1, 258, 3, 513, 1],
            vec![],
        ];
        for q in &queries {
            let mut want = Vec::new();
            for (gid, (k, d)) in docs.iter().enumerate() {
                for p in 0..d.len() {
                    if d.len() - p >= q.len()
                        && d[p..p + q.len()]
                            .iter()
                            .map(|&x| u32::from(x))
                            .eq(q.iter().copied())
                    {
                        want.push(Location {
                            shard: *k,
                            doc: gid as u64,
                            offset: p as u64,
                        });
                    }
                }
            }
            assert_eq!(c.count(q, None).unwrap(), want.len() as u64, "{q:?}");
            assert_eq!(c.locate(q, 100, None).unwrap(), want, "{q:?}");
            let ms: Vec<u32> = (0..q.len())
                .map(|i| {
                    docs.iter()
                        .flat_map(|(_, d)| {
                            (0..d.len()).map(move |p| {
                                d[p..]
                                    .iter()
                                    .zip(&q[i..])
                                    .take_while(|(a, b)| u32::from(**a) == **b)
                                    .count() as u32
                            })
                        })
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            assert_eq!(c.longest_match(q, None).unwrap(), ms, "{q:?}");
        }
        let e = c.count(&[65535], None).unwrap_err();
        assert_eq!(e.kind(), "TokenRangeError");
    }
}
