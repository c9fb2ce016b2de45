//! Property tests of the index against a naive oracle that scans every position of the raw
//! token array and respects document ends. Case counts: 64 per property by default; set
//! `KDMEM_PROPTEST_CASES` for longer runs.

use std::path::Path;

use proptest::prelude::*;

use super::build::{sort, PtrVec};
use super::dir::{build_dir, build_dir_with, build_shards, index_path, verify_dir, Index};
use super::search::{Corpus, Location, Ptrs, ShardSa};
use crate::control::Control;
use crate::error::Error;
use crate::shard::{write_shard, Dtype, ShardMeta, Tokens};

fn cases() -> u32 {
    std::env::var("KDMEM_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

/// One shard held in memory: tokens (as the chosen dtype), offsets, bitmap, suffix array.
struct MemShard {
    t16: Vec<u16>,
    t32: Vec<u32>,
    u16: bool,
    offsets: Vec<u64>,
    starts: Vec<u64>,
    sa: PtrVec,
}

impl MemShard {
    fn new(docs: &[Vec<u32>], u16: bool, wide: bool) -> Self {
        let mut t32 = Vec::new();
        let mut offsets = vec![0u64];
        for d in docs {
            t32.extend_from_slice(d);
            offsets.push(t32.len() as u64);
        }
        let t16: Vec<u16> = t32.iter().map(|&x| x as u16).collect();
        let tokens = if u16 {
            Tokens::U16(&t16)
        } else {
            Tokens::U32(&t32)
        };
        let sorted = sort(tokens, &offsets, wide).unwrap();
        let starts = sorted.starts.clone();
        let sa = sorted.into_ptrs();
        MemShard {
            t16,
            t32,
            u16,
            offsets,
            starts,
            sa,
        }
    }

    fn view(&self, first_doc: u64) -> ShardSa<'_> {
        ShardSa {
            tokens: if self.u16 {
                Tokens::U16(&self.t16)
            } else {
                Tokens::U32(&self.t32)
            },
            offsets: &self.offsets,
            starts: &self.starts,
            sa: match &self.sa {
                PtrVec::U32(v) => Ptrs::U32(v),
                PtrVec::U64(v) => Ptrs::U64(v),
            },
            first_doc,
        }
    }

    fn sa_vec(&self) -> Vec<u64> {
        match &self.sa {
            PtrVec::U32(v) => v.iter().map(|&x| x as u64).collect(),
            PtrVec::U64(v) => v.clone(),
        }
    }
}

/// The naive oracle over a list of shards, each a list of documents.
struct Oracle<'a> {
    shards: &'a [Vec<Vec<u32>>],
}

impl Oracle<'_> {
    /// Every (shard, global doc, offset) where `q` occurs inside the document.
    fn locations(&self, q: &[u32]) -> Vec<Location> {
        let mut out = Vec::new();
        let mut doc_id = 0u64;
        for (k, shard) in self.shards.iter().enumerate() {
            for d in shard {
                for p in 0..d.len() {
                    if d.len() - p >= q.len() && d[p..p + q.len()] == *q {
                        out.push(Location {
                            shard: k as u32,
                            doc: doc_id,
                            offset: p as u64,
                        });
                    }
                }
                doc_id += 1;
            }
        }
        out
    }

    fn longest_match(&self, q: &[u32]) -> Vec<u32> {
        (0..q.len())
            .map(|i| {
                let mut best = 0;
                for d in self.shards.iter().flatten() {
                    for p in 0..d.len() {
                        let l = d[p..]
                            .iter()
                            .zip(&q[i..])
                            .take_while(|(a, b)| a == b)
                            .count();
                        best = best.max(l);
                    }
                }
                best as u32
            })
            .collect()
    }
}

/// Corpora: small alphabets for many repeats, sometimes a single symbol, empty documents.
fn docs_strategy(max_tok: u32) -> impl Strategy<Value = Vec<Vec<u32>>> {
    prop_oneof![
        prop::collection::vec(prop::collection::vec(0..3u32, 0..12), 0..8),
        prop::collection::vec(prop::collection::vec(Just(1u32), 0..20), 0..6),
        prop::collection::vec(prop::collection::vec(0..max_tok, 0..10), 0..8),
        // Long repeats: one random block repeated inside and across documents.
        (prop::collection::vec(0..4u32, 1..5), 1..6usize, 1..4usize)
            .prop_map(|(blk, reps, docs)| vec![blk.repeat(reps); docs]),
    ]
}

fn queries_for(docs: &[Vec<u32>], picks: &[(usize, usize)], random: &[Vec<u32>]) -> Vec<Vec<u32>> {
    // Substrings of the concatenated corpus (many span document boundaries), plus random ones.
    let flat: Vec<u32> = docs.iter().flatten().copied().collect();
    let mut qs: Vec<Vec<u32>> = random.to_vec();
    qs.push(Vec::new());
    for &(a, len) in picks {
        if !flat.is_empty() {
            let a = a % flat.len();
            qs.push(flat[a..(a + len).min(flat.len())].to_vec());
        }
    }
    // Longer than any document.
    let longest = docs.iter().map(Vec::len).max().unwrap_or(0);
    qs.push(flat.iter().copied().take(longest + 1).collect());
    qs
}

fn check_sa_sorted(m: &MemShard, docs: &[Vec<u32>]) {
    let n = m.t32.len();
    let sa = m.sa_vec();
    let mut seen = vec![false; n];
    for &p in &sa {
        assert!(!seen[p as usize], "SA is a permutation");
        seen[p as usize] = true;
    }
    assert_eq!(sa.len(), n);
    // Document-truncated suffixes must be non-decreasing (sentinel below every token).
    let end_of = |p: usize| m.offsets[m.offsets.partition_point(|&o| o <= p as u64)] as usize;
    let trunc = |p: usize| &m.t32[p..end_of(p)];
    for w in sa.windows(2) {
        assert!(trunc(w[0] as usize) <= trunc(w[1] as usize), "{docs:?}");
    }
}

fn run_all(shards: &[Vec<Vec<u32>>], u16: bool, wide: bool, qs: &[Vec<u32>]) {
    let mems: Vec<MemShard> = shards.iter().map(|d| MemShard::new(d, u16, wide)).collect();
    for (m, d) in mems.iter().zip(shards) {
        check_sa_sorted(m, d);
    }
    let mut first = 0u64;
    let mut views = Vec::new();
    for (m, d) in mems.iter().zip(shards) {
        views.push(m.view(first));
        first += d.len() as u64;
    }
    let corpus = Corpus {
        shards: views,
        vocab_size: 0,
    };
    let oracle = Oracle { shards };
    for q in qs {
        let locs = oracle.locations(q);
        assert_eq!(
            corpus.count(q, Some(1)).unwrap(),
            locs.len() as u64,
            "q={q:?}"
        );
        for limit in [0, 1, 3, usize::MAX] {
            let got = corpus.locate(q, limit, Some(2)).unwrap();
            let want: Vec<Location> = locs.iter().copied().take(limit).collect();
            assert_eq!(got, want, "q={q:?} limit={limit}");
        }
        let ms = oracle.longest_match(q);
        assert_eq!(corpus.longest_match(q, Some(2)).unwrap(), ms, "q={q:?}");
        for n in [1, 2, 4] {
            let ov = corpus.ngram_overlap(q, n, Some(1)).unwrap();
            let total = (q.len() + 1).saturating_sub(n);
            let want: Vec<u32> = (0..total)
                .filter(|&i| !oracle.locations(&q[i..i + n]).is_empty())
                .map(|i| i as u32)
                .collect();
            assert_eq!(ov.total, total);
            assert_eq!(ov.positions, want, "q={q:?} n={n}");
            if total == 0 {
                assert!(ov.fraction.is_nan());
            }
        }
    }
    // Batch forms agree with single queries, for any thread count.
    let refs: Vec<&[u32]> = qs.iter().map(Vec::as_slice).collect();
    for threads in [1, 3] {
        let c = corpus.count_many(&refs, Some(threads)).unwrap();
        let l = corpus.locate_many(&refs, 2, Some(threads)).unwrap();
        let ms = corpus.longest_match_many(&refs, Some(threads)).unwrap();
        let ov = corpus.ngram_overlap_many(&refs, 3, Some(threads)).unwrap();
        for (i, q) in qs.iter().enumerate() {
            assert_eq!(c[i], corpus.count(q, None).unwrap());
            assert_eq!(l[i], corpus.locate(q, 2, None).unwrap());
            assert_eq!(ms[i], corpus.longest_match(q, None).unwrap());
            assert_eq!(
                ov[i].positions,
                corpus.ngram_overlap(q, 3, None).unwrap().positions
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn queries_match_oracle(
        shards in prop::collection::vec(docs_strategy(70_000), 1..4),
        u16 in any::<bool>(),
        wide in prop::bool::weighted(0.2),
        picks in prop::collection::vec((0..1000usize, 0..8usize), 0..6),
        random in prop::collection::vec(prop::collection::vec(0..4u32, 0..6), 0..4),
    ) {
        // u16 shards hold ids < 65536: fold the generated ids into range.
        let shards: Vec<Vec<Vec<u32>>> = if u16 {
            shards.iter().map(|s| s.iter().map(|d| d.iter().map(|&x| x % 65_536).collect()).collect()).collect()
        } else {
            shards
        };
        let all: Vec<Vec<u32>> = shards.iter().flatten().cloned().collect();
        let qs = queries_for(&all, &picks, &random);
        run_all(&shards, u16, wide, &qs);
    }
}

#[test]
fn u16_token_65535_takes_the_i32_path() {
    let shards = vec![vec![
        vec![65535, 0, 65535, 65535],
        vec![],
        vec![65535, 65535],
    ]];
    let qs = vec![
        vec![65535],
        vec![65535, 65535],
        vec![0, 65535],
        vec![65535, 0, 65535, 65535, 65535],
    ];
    run_all(&shards, true, false, &qs);
}

#[test]
fn empty_shards_and_documents() {
    let shards = vec![
        vec![],
        vec![vec![], vec![]],
        vec![vec![5], vec![], vec![5, 5]],
    ];
    run_all(
        &shards,
        false,
        false,
        &[vec![], vec![5], vec![5, 5], vec![5, 5, 5]],
    );
}

#[test]
fn query_tokens_beyond_the_vocabulary_are_an_error() {
    let m = MemShard::new(&[vec![1, 2, 3]], true, false);
    let c = Corpus {
        shards: vec![m.view(0)],
        vocab_size: 10,
    };
    let e = c.count(&[1, 10], None).unwrap_err();
    assert_eq!(e.kind(), "TokenRangeError");
    assert!(e.to_string().contains("token id 10"), "{e}");
    let c = Corpus {
        shards: vec![m.view(0)],
        vocab_size: 0,
    };
    assert!(c.count(&[70_000], None).is_err());
    assert!(c.ngram_overlap(&[1], 0, None).is_err());
}

// ---- files --------------------------------------------------------------------------------

fn meta(dtype: Dtype, vocab: u32, hash: u8) -> ShardMeta {
    ShardMeta {
        dtype,
        vocab_size: vocab,
        eos_id: None,
        tokenizer_hash: [hash; 32],
    }
}

fn write_dir(dir: &Path, shards: &[Vec<Vec<u32>>], m: &ShardMeta) {
    for (k, docs) in shards.iter().enumerate() {
        let tokens: Vec<u32> = docs.iter().flatten().copied().collect();
        let mut offsets = vec![0u64];
        for d in docs {
            offsets.push(offsets.last().unwrap() + d.len() as u64);
        }
        write_shard(
            dir.join(format!("shard-{k:05}.kdt")),
            m.clone(),
            &tokens,
            &offsets,
        )
        .unwrap();
    }
}

fn sample_shards() -> Vec<Vec<Vec<u32>>> {
    vec![
        vec![vec![1, 2, 3, 1, 2], vec![2, 3], vec![]],
        vec![vec![3, 1, 2, 3], vec![1, 2, 3, 1, 2, 3]],
    ]
}

#[test]
fn files_roundtrip_resume_and_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = sample_shards();
    for (dtype, wide) in [(Dtype::U16, false), (Dtype::U32, false), (Dtype::U32, true)] {
        let dir = tmp.path().join(format!("{}-{wide}", dtype.name()));
        std::fs::create_dir(&dir).unwrap();
        write_dir(&dir, &shards, &meta(dtype, 8, 7));
        let ctl = Control::new();
        let r = build_dir_with(&dir, Some(2), &ctl, wide).unwrap();
        assert_eq!(
            (r.shards, r.built, r.skipped, r.tokens_built),
            (2, 2, 0, 17)
        );
        let r = build_dir(&dir, Some(1), &ctl).unwrap();
        assert_eq!((r.built, r.skipped), (0, 2), "finished shards are kept");
        verify_dir(&dir, None, &ctl).unwrap();
        let idx = Index::open(&dir).unwrap();
        assert_eq!((idx.n_shards(), idx.n_tokens(), idx.n_docs()), (2, 17, 5));
        let c = idx.corpus();
        let oracle = Oracle { shards: &shards };
        for q in [vec![1, 2, 3], vec![3, 1], vec![2, 3, 1, 2, 3], vec![]] {
            assert_eq!(
                c.count(&q, None).unwrap(),
                oracle.locations(&q).len() as u64
            );
            assert_eq!(c.locate(&q, 100, None).unwrap(), oracle.locations(&q));
            assert_eq!(c.longest_match(&q, None).unwrap(), oracle.longest_match(&q));
        }
        idx.check_tokenizer(&[7; 32]).unwrap();
        idx.check_tokenizer(&[0; 32]).unwrap();
        let e = idx.check_tokenizer(&[9; 32]).unwrap_err();
        assert_eq!(e.kind(), "TokenizerMismatchError");
        assert!(e.to_string().contains("090909090909"), "{e}");
    }
}

#[test]
fn corrupt_stale_and_missing_indexes_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let shards = sample_shards();
    write_dir(dir, &shards, &meta(Dtype::U16, 0, 0));
    let ctl = Control::new();

    // Missing index.
    let e = Index::open(dir).unwrap_err();
    assert_eq!(e.kind(), "StaleIndexError");
    assert!(e.to_string().contains("kdmem index"), "{e}");

    build_dir(dir, None, &ctl).unwrap();
    let sa0 = index_path(&dir.join("shard-00000.kdt"));

    // Flipped byte in the suffix array: open still works (header is fine), verify fails.
    let good = std::fs::read(&sa0).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(&sa0, &bad).unwrap();
    Index::open(dir).unwrap();
    let e = verify_dir(dir, None, &ctl).unwrap_err();
    assert_eq!(e.kind(), "CorruptFileError");
    // A rebuild does not trust a file that only looks current... but the header is current,
    // so `build` skips it; `--verify` is the check. Restore and truncate instead.
    std::fs::write(&sa0, &good[..good.len() - 4]).unwrap();
    let e = Index::open(dir).unwrap_err();
    assert_eq!(e.kind(), "CorruptFileError");
    assert!(e.to_string().contains("truncated"), "{e}");
    // A truncated index is rebuilt.
    assert_eq!(build_dir(dir, None, &ctl).unwrap().built, 1);
    Index::open(dir).unwrap();

    // Shard changed after indexing.
    write_dir(dir, &[vec![vec![9, 9, 9]]], &meta(Dtype::U16, 0, 0));
    let e = Index::open(dir).unwrap_err();
    assert_eq!(e.kind(), "StaleIndexError");
    assert!(e.to_string().contains("changed after indexing"), "{e}");
    assert_eq!(build_dir(dir, None, &ctl).unwrap().built, 1);
    Index::open(dir).unwrap();

    // No shards at all.
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        Index::open(empty.path()),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn shard_tokens_beyond_the_vocabulary_fail_the_build() {
    let tmp = tempfile::tempdir().unwrap();
    write_dir(tmp.path(), &[vec![vec![1, 2, 3]]], &meta(Dtype::U16, 3, 0));
    let e = build_dir(tmp.path(), None, &Control::new()).unwrap_err();
    assert_eq!(e.kind(), "TokenRangeError");
    assert!(e.to_string().contains("token id 3"), "{e}");
}

#[test]
fn shards_with_different_tokenizers_do_not_open_together() {
    let tmp = tempfile::tempdir().unwrap();
    write_dir(tmp.path(), &sample_shards()[..1], &meta(Dtype::U16, 0, 1));
    let one = vec![vec![vec![1u32]]];
    let tokens: Vec<u32> = vec![1];
    let _ = one;
    write_shard(
        tmp.path().join("shard-00001.kdt"),
        meta(Dtype::U16, 0, 2),
        &tokens,
        &[0, 1],
    )
    .unwrap();
    build_dir(tmp.path(), None, &Control::new()).unwrap();
    let e = Index::open(tmp.path()).unwrap_err();
    assert_eq!(e.kind(), "TokenizerMismatchError");
}

#[test]
fn per_shard_builds_and_subsets_merge_to_the_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = sample_shards();
    let (one, all) = (tmp.path().join("one"), tmp.path().join("all"));
    for d in [&one, &all] {
        std::fs::create_dir(d).unwrap();
        write_dir(d, &shards, &meta(Dtype::U16, 8, 7));
    }
    let ctl = Control::new();
    build_dir(&all, None, &ctl).unwrap();
    for k in [1, 0] {
        let r = build_shards(&one, Some(&[k]), None, &ctl).unwrap();
        assert_eq!((r.shards, r.built), (1, 1));
        assert!(
            Index::open(&one).is_ok() == (k == 0),
            "shard 0 still unbuilt"
        );
    }
    for k in 0..2 {
        let name = format!("shard-{k:05}.kdsa");
        let (a, b) = (one.join(&name), all.join(&name));
        assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    }
    let e = build_shards(&one, Some(&[2]), None, &ctl).unwrap_err();
    assert_eq!(e.kind(), "InvalidArgumentError");

    let whole = Index::open(&all).unwrap();
    let parts: Vec<Index> = (0..2)
        .map(|k| Index::open_shards(&all, &[k]).unwrap())
        .collect();
    assert_eq!(parts[1].shard_ids(), &[1]);
    assert_eq!(parts[1].n_docs(), 2);
    for q in [vec![1, 2, 3], vec![3, 1], vec![2, 3, 1, 2, 3], vec![]] {
        let c = whole.corpus();
        let count: u64 = parts
            .iter()
            .map(|p| p.corpus().count(&q, None).unwrap())
            .sum();
        assert_eq!(count, c.count(&q, None).unwrap());
        let lm: Vec<Vec<u32>> = parts
            .iter()
            .map(|p| p.corpus().longest_match(&q, None).unwrap())
            .collect();
        let max: Vec<u32> = (0..q.len()).map(|i| lm[0][i].max(lm[1][i])).collect();
        assert_eq!(max, c.longest_match(&q, None).unwrap());
        // Global document ids survive; shard numbers are positions in the subset.
        let docs: Vec<u64> = parts
            .iter()
            .flat_map(|p| p.corpus().locate(&q, 100, None).unwrap())
            .map(|l| l.doc)
            .collect();
        let want: Vec<u64> = c
            .locate(&q, 100, None)
            .unwrap()
            .iter()
            .map(|l| l.doc)
            .collect();
        assert_eq!(docs, want);
    }
}
