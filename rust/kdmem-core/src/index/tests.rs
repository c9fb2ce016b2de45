//! Property tests of the index against a naive oracle that scans every position of the raw
//! token array and respects document ends. Indexes are written to files with shrunken
//! layouts (pages of 2-6 entries, 1-4 sampled tokens, lcps capped at 1-4, 1-3 hash values)
//! and memory budgets that force groups and pieces, so every path of the lookup is reached
//! with small inputs. Case counts: 48 per property by default; set `KDMEM_PROPTEST_CASES`
//! for longer runs.

use std::path::Path;

use proptest::prelude::*;

use super::build::{prepare, Source};
use super::dir::{build_dir, build_shards, index_path, verify_dir, BuildOptions, Index};
use super::format::{self, Layout};
use super::open::AnyIndex;
use super::plan::{Grouping, OVERHEAD};
use super::search::{Location, QueryShard};
use crate::control::Control;
use crate::error::Error;
use crate::shard::{write_shard, Dtype, ShardMeta};

fn cases() -> u32 {
    std::env::var("KDMEM_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

/// The naive oracle over a list of shards, each a list of documents.
struct Oracle<'a> {
    shards: &'a [Vec<Vec<u32>>],
}

impl Oracle<'_> {
    /// Every (shard, global doc, offset) where `q` occurs inside a document of the selected
    /// shards (`sel`: positions; shard numbers reported as positions in `sel`).
    fn locations_in(&self, q: &[u32], sel: &[usize]) -> Vec<Location> {
        let mut out = Vec::new();
        let mut doc_id = 0u64;
        for (k, shard) in self.shards.iter().enumerate() {
            for d in shard {
                if let Some(i) = sel.iter().position(|&s| s == k) {
                    for p in 0..d.len() {
                        if d.len() - p >= q.len() && d[p..p + q.len()] == *q {
                            out.push(Location {
                                shard: i as u32,
                                doc: doc_id,
                                offset: p as u64,
                            });
                        }
                    }
                }
                doc_id += 1;
            }
        }
        out
    }

    fn locations(&self, q: &[u32]) -> Vec<Location> {
        let all: Vec<usize> = (0..self.shards.len()).collect();
        self.locations_in(q, &all)
    }

    fn longest_match_in(&self, q: &[u32], sel: &[usize]) -> Vec<u32> {
        (0..q.len())
            .map(|i| {
                let mut best = 0;
                for (_, d) in self
                    .shards
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| sel.contains(k))
                    .flat_map(|(k, s)| s.iter().map(move |d| (k, d)))
                {
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

/// Corpora: small alphabets for many repeats, sometimes a single symbol, empty documents.
fn docs_strategy(max_tok: u32) -> impl Strategy<Value = Vec<Vec<u32>>> {
    prop_oneof![
        prop::collection::vec(prop::collection::vec(0..3u32, 0..14), 0..8),
        prop::collection::vec(prop::collection::vec(Just(1u32), 0..20), 0..6),
        prop::collection::vec(prop::collection::vec(0..max_tok, 0..10), 0..8),
        // Long repeats: one random block repeated inside and across documents.
        (prop::collection::vec(0..4u32, 1..5), 1..7usize, 1..4usize)
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
    // Longer than any document; whole documents.
    let longest = docs.iter().map(Vec::len).max().unwrap_or(0);
    qs.push(flat.iter().copied().take(longest + 1).collect());
    qs.extend(docs.iter().take(3).cloned());
    qs
}

fn layout_strategy() -> impl Strategy<Value = Layout> {
    prop_oneof![
        Just(Layout::default()),
        Just(Layout::for_tokens(4)),
        (
            prop::sample::select(vec![16u32, 24, 40, 64]),
            1..5u32,
            1..5u32,
            1..4u32,
            1..5u32,
        )
            .prop_map(
                |(page_bytes, sample_tokens, lcp_cap, hash_mod, spp)| Layout {
                    page_bytes,
                    sample_tokens,
                    lcp_cap,
                    hash_mod,
                    samples_per_page: spp.min(page_bytes / 11),
                }
            ),
    ]
}

/// Every query of `qs` against the oracle, over the whole index and over subsets.
fn check_dir(dir: &Path, shards: &[Vec<Vec<u32>>], qs: &[Vec<u32>]) {
    let idx = Index::open(dir).unwrap();
    let corpus = idx.corpus();
    let oracle = Oracle { shards };
    for u in &corpus.shards {
        for q in qs {
            // The same occurrences (where an empty range sits does not matter).
            let (a, b) = (u.range(q), u.range_by_binary_search(q));
            assert!(
                a == b || (a.is_empty() && b.is_empty()),
                "lookup q={q:?}: {a:?} {b:?}"
            );
            // Narrowing the range of every prefix of q by the next symbol (and by others).
            for l in 0..q.len() {
                let r = u.range(&q[..l]);
                if r.is_empty() {
                    break;
                }
                for c in [q[l], 0, 1, 2, 3] {
                    let (x, y) = u.narrow_both(r.clone(), l, c);
                    assert!(
                        x == y || (x.is_empty() && y.is_empty()),
                        "narrow {q:?} {l} {c}"
                    );
                }
            }
        }
    }
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
        let all: Vec<usize> = (0..shards.len()).collect();
        assert_eq!(
            corpus.longest_match(q, Some(2)).unwrap(),
            oracle.longest_match_in(q, &all),
            "q={q:?}"
        );
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
        for (i, q) in qs.iter().enumerate() {
            assert_eq!(c[i], corpus.count(q, None).unwrap());
            assert_eq!(l[i], corpus.locate(q, 2, None).unwrap());
            assert_eq!(ms[i], corpus.longest_match(q, None).unwrap());
        }
    }
    // Subsets (each shard alone, and every other shard): restricted units answer for their
    // shards only; shard numbers are positions in the subset.
    let n = shards.len();
    let mut subsets: Vec<Vec<usize>> = (0..n).map(|k| vec![k]).collect();
    subsets.push((0..n).step_by(2).collect());
    for sel in subsets {
        let part = Index::open_shards(dir, &sel).unwrap();
        assert_eq!(part.shard_ids(), &sel[..]);
        let c = part.corpus();
        let toks: u64 = sel
            .iter()
            .map(|&k| shards[k].iter().map(|d| d.len() as u64).sum::<u64>())
            .sum();
        assert_eq!(c.count(&[], None).unwrap(), toks);
        for q in qs.iter().filter(|q| !q.is_empty()) {
            let want = oracle.locations_in(q, &sel);
            assert_eq!(
                c.count(q, None).unwrap(),
                want.len() as u64,
                "sel={sel:?} q={q:?}"
            );
            assert_eq!(
                c.locate(q, usize::MAX, None).unwrap(),
                want,
                "sel={sel:?} q={q:?}"
            );
            assert_eq!(
                c.longest_match(q, None).unwrap(),
                oracle.longest_match_in(q, &sel),
                "sel={sel:?} q={q:?}"
            );
        }
    }
}

/// Grouping that groups tiny test shards like real small shards, about one unit per thread.
const PER_THREAD: Grouping = Grouping {
    small_shard: 1 << 20,
    min_group: 1,
};

/// `build_dir` with [`PER_THREAD`] grouping.
fn build_per_thread(dir: &Path, threads: usize) -> super::dir::BuildReport {
    let opts = BuildOptions {
        threads: Some(threads),
        grouping: Some(PER_THREAD),
        ..BuildOptions::default()
    };
    build_shards(dir, None, &opts, &Control::new()).unwrap()
}

fn build_with(dir: &Path, layout: Layout, memory_tokens: u64, threads: usize, wide: bool) {
    build_grouped(dir, layout, memory_tokens, threads, wide, PER_THREAD)
}

fn build_grouped(
    dir: &Path,
    layout: Layout,
    memory_tokens: u64,
    threads: usize,
    wide: bool,
    grouping: Grouping,
) {
    let opts = BuildOptions {
        threads: Some(threads),
        memory: Some(OVERHEAD + (memory_tokens as f64 * 8.5).ceil() as u64),
        layout: Some(layout),
        force_wide: wide,
        grouping: Some(grouping),
    };
    build_shards(dir, None, &opts, &Control::new()).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn queries_match_oracle(
        shards in prop::collection::vec(docs_strategy(70_000), 1..5),
        u16 in any::<bool>(),
        wide in prop::bool::weighted(0.15),
        layout in layout_strategy(),
        memory_tokens in 1..80u64,
        threads in 1..4usize,
        grouping in prop::sample::select(vec![
            PER_THREAD,
            Grouping::default(),
            Grouping { small_shard: 0, min_group: 1 },
            Grouping { small_shard: 1 << 20, min_group: 30 },
        ]),
        picks in prop::collection::vec((0..1000usize, 0..9usize), 0..6),
        random in prop::collection::vec(prop::collection::vec(0..4u32, 0..7), 0..4),
    ) {
        // u16 shards hold ids < 65536: fold the generated ids into range.
        let shards: Vec<Vec<Vec<u32>>> = if u16 {
            shards.iter().map(|s| s.iter().map(|d| d.iter().map(|&x| x % 65_536).collect()).collect()).collect()
        } else {
            shards
        };
        let tmp = tempfile::tempdir().unwrap();
        write_dir(tmp.path(), &shards, &meta(if u16 { Dtype::U16 } else { Dtype::U32 }, 0, 3));
        // A budget of at least the largest document: forces pieces and small groups.
        let max_doc = shards.iter().flatten().map(Vec::len).max().unwrap_or(0) as u64;
        build_grouped(tmp.path(), layout, memory_tokens.max(max_doc), threads, wide, grouping);
        let all: Vec<Vec<u32>> = shards.iter().flatten().cloned().collect();
        let qs = queries_for(&all, &picks, &random);
        check_dir(tmp.path(), &shards, &qs);
    }
}

#[test]
fn u16_token_65535_takes_the_i32_path() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = vec![vec![
        vec![65535, 0, 65535, 65535],
        vec![],
        vec![65535, 65535],
    ]];
    write_dir(tmp.path(), &shards, &meta(Dtype::U16, 0, 0));
    build_dir(tmp.path(), None, &Control::new()).unwrap();
    let qs = vec![
        vec![65535],
        vec![65535, 65535],
        vec![0, 65535],
        vec![65535, 0, 65535, 65535, 65535],
    ];
    check_dir(tmp.path(), &shards, &qs);
}

#[test]
fn suffix_order_is_the_document_truncated_order() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = vec![
        vec![2, 1, 2, 1],
        vec![],
        vec![2, 1],
        vec![1, 2, 1, 2, 1],
        vec![2],
    ];
    write_dir(
        tmp.path(),
        std::slice::from_ref(&docs),
        &meta(Dtype::U32, 0, 0),
    );
    let sorted = prepare(
        &[Source {
            path: tmp.path().join("shard-00000.kdt"),
            tok_start: 0,
            tok_end: 12,
            doc_start: 0,
            doc_end: 5,
        }],
        false,
    )
    .unwrap()
    .sort()
    .unwrap();
    let flat: Vec<u32> = docs.iter().flatten().copied().collect();
    let ends: Vec<usize> = docs
        .iter()
        .scan(0, |a, d| {
            *a += d.len();
            Some(*a)
        })
        .collect();
    let end_of = |p: usize| *ends.iter().find(|&&e| e > p).unwrap();
    let sa = sorted.positions();
    let mut want: Vec<u64> = (0..flat.len() as u64).collect();
    // Ties (equal truncated suffixes) are broken by the whole following text.
    want.sort_by(|&a, &b| {
        let (a, b) = (a as usize, b as usize);
        flat[a..end_of(a)]
            .cmp(&flat[b..end_of(b)])
            .then_with(|| flat[a..].cmp(&flat[b..]))
    });
    assert_eq!(sa, want);
}

#[test]
fn files_roundtrip_resume_and_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = vec![
        vec![vec![1, 2, 3, 1, 2], vec![2, 3], vec![]],
        vec![vec![3, 1, 2, 3], vec![1, 2, 3, 1, 2, 3]],
    ];
    for (dtype, threads) in [(Dtype::U16, 1), (Dtype::U32, 2)] {
        let dir = tmp.path().join(format!("{}-{threads}", dtype.name()));
        std::fs::create_dir(&dir).unwrap();
        write_dir(&dir, &shards, &meta(dtype, 8, 7));
        let ctl = Control::new();
        let r = build_per_thread(&dir, threads);
        assert_eq!(
            (r.shards, r.built, r.skipped, r.tokens_built),
            (2, 2, 0, 17)
        );
        // One thread: both shards in one unit; two: one unit each.
        assert_eq!(r.units, if threads == 1 { 1 } else { 2 });
        let r = build_per_thread(&dir, 1);
        assert_eq!(
            (r.built, r.skipped, r.units),
            (0, 2, 0),
            "finished units are kept"
        );
        verify_dir(&dir, None, &ctl).unwrap();
        let idx = Index::open(&dir).unwrap();
        assert_eq!((idx.n_shards(), idx.n_tokens(), idx.n_docs()), (2, 17, 5));
        assert!(idx.ram_bytes() > 0 && idx.disk_bytes() > 0);
        idx.check_tokenizer(&[7; 32]).unwrap();
        idx.check_tokenizer(&[0; 32]).unwrap();
        let e = idx.check_tokenizer(&[9; 32]).unwrap_err();
        assert_eq!(e.kind(), "TokenizerMismatchError");
        assert!(e.to_string().contains("090909090909"), "{e}");
        check_dir(
            &dir,
            &shards,
            &[vec![1, 2, 3], vec![3, 1], vec![2, 3, 1, 2, 3], vec![]],
        );
    }
}

#[test]
fn budgets_threads_and_layouts_give_the_same_answers() {
    // One corpus built four ways: grouped, per shard, in pieces, with tiny pages.
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = 7u64;
    let mut next = |m: u64| {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng >> 33) % m
    };
    let shards: Vec<Vec<Vec<u32>>> = (0..4)
        .map(|_| {
            (0..12)
                .map(|_| (0..next(40)).map(|_| next(5) as u32).collect())
                .collect()
        })
        .collect();
    let builds: [(Layout, u64, usize); 4] = [
        (Layout::default(), 1 << 20, 1),
        (Layout::default(), 1 << 20, 4),
        (Layout::default(), 60, 1),
        (
            Layout {
                page_bytes: 16,
                sample_tokens: 1,
                lcp_cap: 2,
                hash_mod: 1,
                samples_per_page: 1,
            },
            100,
            2,
        ),
    ];
    let all: Vec<Vec<u32>> = shards.iter().flatten().cloned().collect();
    let picks: Vec<(usize, usize)> = (0..30).map(|i| (i * 37, 1 + i % 9)).collect();
    let qs = queries_for(&all, &picks, &[vec![4, 4, 4], vec![0, 1, 2, 3]]);
    let mut units = Vec::new();
    for (i, (layout, mem, threads)) in builds.iter().enumerate() {
        let dir = tmp.path().join(format!("b{i}"));
        std::fs::create_dir(&dir).unwrap();
        write_dir(&dir, &shards, &meta(Dtype::U16, 0, 1));
        build_with(&dir, *layout, *mem, *threads, false);
        check_dir(&dir, &shards, &qs);
        units.push(Index::open(&dir).unwrap().units());
    }
    assert_eq!(units[0], vec![vec![0, 1, 2, 3]], "one thread: one unit");
    assert!(
        units[2].len() > 4,
        "a small budget cuts shards into pieces: {:?}",
        units[2]
    );
}

#[test]
fn corrupt_stale_missing_and_old_indexes_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let shards = vec![
        vec![vec![1, 2, 3, 1, 2], vec![2, 3], vec![]],
        vec![vec![3, 1, 2, 3], vec![1, 2, 3, 1, 2, 3]],
    ];
    write_dir(dir, &shards, &meta(Dtype::U16, 0, 0));
    let ctl = Control::new();

    // Missing index.
    let e = Index::open(dir).unwrap_err();
    assert_eq!(e.kind(), "StaleIndexError");
    assert!(e.to_string().contains("kdmem index"), "{e}");

    build_per_thread(dir, 2);
    let sa0 = index_path(&dir.join("shard-00000.kdt"));

    // Flipped byte in the samples: open still works (header is fine), verify fails.
    let good = std::fs::read(&sa0).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(&sa0, &bad).unwrap();
    Index::open(dir).unwrap();
    let e = verify_dir(dir, None, &ctl).unwrap_err();
    assert_eq!(e.kind(), "CorruptFileError");
    // Truncated: an error naming the file; a build replaces it.
    std::fs::write(&sa0, &good[..good.len() - 4]).unwrap();
    let e = Index::open(dir).unwrap_err();
    assert_eq!(e.kind(), "CorruptFileError");
    assert!(
        e.to_string().contains("truncated") && e.to_string().contains("shard-00000.kdsa"),
        "{e}"
    );
    assert_eq!(build_per_thread(dir, 2).built, 1);
    Index::open(dir).unwrap();

    // A version-1 file (the previous format): one line saying to rebuild; a build does.
    let mut v1 = vec![0u8; 128];
    v1[..8].copy_from_slice(format::MAGIC);
    v1[8..12].copy_from_slice(&1u32.to_le_bytes());
    let crc = crc32fast::hash(&v1[..124]);
    v1[124..128].copy_from_slice(&crc.to_le_bytes());
    v1.extend_from_slice(&[0u8; 512]);
    std::fs::write(&sa0, &v1).unwrap();
    let e = Index::open(dir).unwrap_err();
    assert_eq!(e.kind(), "StaleIndexError");
    let msg = e.to_string();
    assert!(
        msg.contains("format version 1") && msg.contains("kdmem index"),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
    assert_eq!(build_per_thread(dir, 2).built, 1);
    Index::open(dir).unwrap();

    // Shard changed after indexing.
    write_dir(dir, &[vec![vec![9, 9, 9]]], &meta(Dtype::U16, 0, 0));
    let e = Index::open(dir).unwrap_err();
    assert_eq!(e.kind(), "StaleIndexError");
    assert!(e.to_string().contains("changed after indexing"), "{e}");
    assert_eq!(build_per_thread(dir, 2).built, 1);
    Index::open(dir).unwrap();

    // A stale group is replaced (and its file removed) when its shards are rebuilt.
    build_dir(dir, Some(1), &ctl).unwrap();
    let g = tmp.path().join("g");
    std::fs::create_dir(&g).unwrap();
    write_dir(&g, &shards, &meta(Dtype::U16, 0, 0));
    build_dir(&g, Some(1), &ctl).unwrap();
    assert!(g.join("shard-00000..shard-00001.kdsa").exists());
    write_dir(&g, &[vec![vec![4, 4]]], &meta(Dtype::U16, 0, 0));
    assert_eq!(Index::open(&g).unwrap_err().kind(), "StaleIndexError");
    assert_eq!(build_dir(&g, Some(1), &ctl).unwrap().built, 2);
    let n_units = std::fs::read_dir(&g)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "kdsa")
        })
        .count();
    assert_eq!(n_units, 1);
    Index::open(&g).unwrap();

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
    write_dir(tmp.path(), &[vec![vec![1, 2, 3]]], &meta(Dtype::U16, 0, 1));
    write_shard(
        tmp.path().join("shard-00001.kdt"),
        meta(Dtype::U16, 0, 2),
        &[1],
        &[0, 1],
    )
    .unwrap();
    let r = build_dir(tmp.path(), Some(1), &Control::new()).unwrap();
    assert_eq!(
        r.units, 2,
        "shards of different tokenizers are never grouped"
    );
    let e = Index::open(tmp.path()).unwrap_err();
    assert_eq!(e.kind(), "TokenizerMismatchError");
}

#[test]
fn per_shard_builds_and_subsets_merge_to_the_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = vec![
        vec![vec![1, 2, 3, 1, 2], vec![2, 3], vec![]],
        vec![vec![3, 1, 2, 3], vec![1, 2, 3, 1, 2, 3]],
        vec![vec![2, 3, 1]],
    ];
    let (one, all) = (tmp.path().join("one"), tmp.path().join("all"));
    for d in [&one, &all] {
        std::fs::create_dir(d).unwrap();
        write_dir(d, &shards, &meta(Dtype::U16, 8, 7));
    }
    let ctl = Control::new();
    build_dir(&all, Some(1), &ctl).unwrap();
    assert_eq!(Index::open(&all).unwrap().n_units(), 1);
    let opts = BuildOptions::default();
    for k in [2, 0, 1] {
        let r = build_shards(&one, Some(&[k]), &opts, &ctl).unwrap();
        assert_eq!((r.shards, r.built, r.units), (1, 1, 1));
        assert!(
            Index::open(&one).is_ok() == (k == 1),
            "shards still unbuilt"
        );
    }
    // Per-shard builds leave per-shard units; a later build of the whole keeps them.
    assert_eq!(Index::open(&one).unwrap().n_units(), 3);
    assert_eq!(build_dir(&one, Some(1), &ctl).unwrap().built, 0);
    let e = build_shards(&one, Some(&[3]), &opts, &ctl).unwrap_err();
    assert_eq!(e.kind(), "InvalidArgumentError");
    // A per-shard build of a shard inside a current group does nothing.
    let r = build_shards(&all, Some(&[1]), &opts, &ctl).unwrap();
    assert_eq!((r.built, r.skipped), (0, 1));

    let qs = vec![
        vec![1, 2, 3],
        vec![3, 1],
        vec![2, 3, 1, 2, 3],
        vec![2, 3, 1],
        vec![],
    ];
    for dir in [&one, &all] {
        check_dir(dir, &shards, &qs);
        let whole = Index::open(dir).unwrap();
        let parts: Vec<Index> = (0..3)
            .map(|k| Index::open_shards(dir, &[k]).unwrap())
            .collect();
        assert_eq!(parts[1].shard_ids(), &[1]);
        assert_eq!(parts[1].n_docs(), 2);
        for q in &qs {
            let c = whole.corpus();
            let count: u64 = parts
                .iter()
                .map(|p| p.corpus().count(q, None).unwrap())
                .sum();
            assert_eq!(count, c.count(q, None).unwrap());
            let docs: Vec<u64> = parts
                .iter()
                .flat_map(|p| p.corpus().locate(q, 100, None).unwrap())
                .map(|l| l.doc)
                .collect();
            let want: Vec<u64> = c
                .locate(q, 100, None)
                .unwrap()
                .iter()
                .map(|l| l.doc)
                .collect();
            assert_eq!(docs, want);
        }
    }
}

#[test]
fn the_reader_selection_opens_either_layout_behind_one_api() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = vec![vec![vec![1, 2, 3, 1, 2], vec![2, 3]], vec![vec![3, 1, 2]]];
    write_dir(tmp.path(), &shards, &meta(Dtype::U16, 8, 7));
    build_per_thread(tmp.path(), 2);
    let a = AnyIndex::open(tmp.path(), None).unwrap();
    assert_eq!(a.format(), "kdmem");
    assert_eq!(
        (a.n_shards(), a.n_tokens(), a.n_docs(), a.vocab_size()),
        (2, 10, 3, 8)
    );
    assert_eq!(a.tokenizer_hash(), [7; 32]);
    assert_eq!(a.count(&[1, 2], None).unwrap(), 3);
    assert_eq!(a.units(), vec![vec![0], vec![1]]);
    let b = AnyIndex::open(tmp.path(), Some(&[1])).unwrap();
    assert_eq!(
        (b.shard_ids(), b.count(&[1, 2], None).unwrap()),
        (vec![1], 1)
    );
    assert!(a.check_tokenizer(&[8; 32]).is_err());
    a.verify(None, &Control::new()).unwrap();
    // A unit view answers like the corpus over it.
    let AnyIndex::Kdmem(idx) = &a else {
        unreachable!()
    };
    let c = idx.corpus();
    assert_eq!(c.shards[0].count(&[2, 3]), 2);
}

#[test]
fn a_shard_that_fails_its_checksum_is_not_indexed() {
    let tmp = tempfile::tempdir().unwrap();
    write_dir(
        tmp.path(),
        &[vec![vec![1, 2, 3, 4]]],
        &meta(Dtype::U16, 0, 0),
    );
    let kdt = tmp.path().join("shard-00000.kdt");
    let mut b = std::fs::read(&kdt).unwrap();
    b[128] ^= 1; // first token; the header (and its CRC) stay valid
    std::fs::write(&kdt, &b).unwrap();
    let e = build_dir(tmp.path(), None, &Control::new()).unwrap_err();
    assert_eq!(e.kind(), "CorruptFileError");
    assert!(e.to_string().contains("shard-00000.kdt"), "{e}");
    assert!(!tmp.path().join("shard-00000.kdsa").exists());
}
