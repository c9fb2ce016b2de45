//! Sink tests: memory plans, the overflow rule, appends (ids continue, the old set untouched
//! until the commit, interrupted appends and commits finish identically, bad appends).

use std::cell::Cell;
use std::collections::BTreeMap;

use super::*;
use crate::shard::format::ShardReader;

thread_local! {
    /// Test hook: fail a commit before moving staged shard `i`.
    pub(crate) static COMMIT_FAULT: Cell<Option<usize>> = const { Cell::new(None) };
}

fn meta(dtype: Dtype) -> ShardMeta {
    ShardMeta {
        dtype,
        vocab_size: 1000,
        eos_id: Some(0),
        tokenizer_hash: [7u8; 32],
    }
}

fn doc(i: u64) -> Vec<u32> {
    (0..(3 + i % 11))
        .map(|k| (1 + (i * 31 + k) % 997) as u32)
        .collect()
}

fn opts(out: &Path, hash: &str) -> SinkOptions {
    SinkOptions::new(out.to_path_buf(), meta(Dtype::U16), 40, hash.into())
}

/// Write documents `range` through a sink with these options; `stop_after` simulates a kill.
fn write(o: SinkOptions, range: std::ops::Range<u64>, stop_after: Option<u64>) -> Result<Manifest> {
    let mut s = ShardSink::open(o)?;
    if s.is_complete() {
        return s.finish("test");
    }
    let skip = s.records_to_skip();
    for i in range.clone().skip(skip as usize) {
        if stop_after == Some(i) {
            return Err(Error::Cancelled); // dropped: like a kill between two documents
        }
        if i % 13 == 5 {
            s.skip_record(false)?;
        } else {
            s.push_doc(&doc(i), "t", i)?;
        }
    }
    s.finish("test")
}

/// Every document of a finished directory, in id order, read back from the shard files.
fn read_docs(dir: &Path) -> Vec<Vec<u32>> {
    let m = Manifest::read(&dir.join(MANIFEST)).unwrap();
    assert!(m.complete);
    let mut out = Vec::new();
    for s in &m.shards {
        let r = ShardReader::open(dir.join(&s.name)).unwrap();
        assert_eq!(s.first_doc, out.len() as u64, "{}", s.name);
        for d in 0..r.n_docs() as usize {
            let (a, b) = r.doc_range(d);
            out.push(r.tokens().to_vec(a, b));
        }
    }
    out
}

fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            e.path().is_file().then(|| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    fs::read(e.path()).unwrap(),
                )
            })
        })
        .collect()
}

fn expected(ranges: &[std::ops::Range<u64>]) -> Vec<Vec<u32>> {
    ranges
        .iter()
        .flat_map(|r| r.clone())
        .filter(|i| i % 13 != 5)
        .map(doc)
        .collect()
}

#[test]
fn plans_fit_the_budget_and_say_the_minimum() {
    let p = plan(Some(8_000_000_000), None, Dtype::U16, 2).unwrap();
    assert_eq!(p.shard_tokens, DEFAULT_SHARD_TOKENS.min(p.max_shard_tokens));
    assert!(memory::index_bytes(p.max_shard_tokens, Dtype::U16) <= 8_000_000_000);
    let small = plan(Some(1_000_000_000), None, Dtype::U32, 2).unwrap();
    assert_eq!(small.shard_tokens, small.max_shard_tokens);
    assert!(memory::index_bytes(small.shard_tokens, Dtype::U32) <= 1_000_000_000);
    assert!(small.shard_tokens > 100_000_000);
    // Explicit shard sizes are kept, unless an explicit budget cannot index them.
    assert_eq!(
        plan(None, Some(77), Dtype::U16, 1).unwrap().shard_tokens,
        77
    );
    let e = plan(Some(1_000_000_000), Some(1 << 30), Dtype::U16, 1).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("--shard-tokens") && msg.contains("--memory"),
        "{msg}"
    );
    let e = plan(Some(50 << 20), None, Dtype::U16, 4).unwrap_err();
    let msg = e.to_string();
    assert!(
        !msg.contains('\n') && msg.contains("needs at least"),
        "{msg}"
    );
    assert!(plan(Some(1 << 30), None, Dtype::U16, 4).is_ok());
}

#[test]
fn shards_close_before_a_document_would_overflow_and_huge_documents_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let mut o = opts(t.path(), "h");
    o.shard_tokens = 1000;
    o.max_shard_tokens = 14;
    o.memory = 123_456_789;
    let mut s = ShardSink::open(o).unwrap();
    for i in 0..40 {
        s.push_doc(&doc(i), "t", i).unwrap();
    }
    let e = s.push_doc(&[1; 15], "big.jsonl", 7).unwrap_err();
    let msg = e.to_string();
    let need = memory::format_size_arg(memory::index_bytes(15, Dtype::U16));
    assert!(
        msg.contains("big.jsonl:7") && msg.contains("15 tokens") && msg.contains(&need),
        "{msg}"
    );
    let m = s.finish("t").unwrap();
    assert!(m.shards.iter().all(|x| x.n_tokens <= 14));
    assert!(m
        .shards
        .iter()
        .any(|x| x.n_tokens < 14 && x.n_tokens + 3 > 14));
    assert_eq!(read_docs(t.path()), (0..40).map(doc).collect::<Vec<_>>());
}

#[test]
fn append_continues_ids_and_leaves_the_old_shards_untouched() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("set");
    let base = write(opts(&dir, "base"), 0..50, None).unwrap();
    let before = files(&dir);
    let mut o = opts(&dir, "more");
    o.append = true;
    o.encoder = Some("kdmem-bpe".into());
    let m = write(o.clone(), 100..130, None).unwrap();
    assert_eq!(m.shards[..base.shards.len()], base.shards[..]);
    assert_eq!(m.appends.len(), 1);
    assert_eq!(m.appends[0].first_shard, base.shards.len());
    assert_eq!(m.appends[0].n_shards, m.shards.len() - base.shards.len());
    assert_eq!(m.encoder.as_deref(), Some("kdmem-bpe"));
    assert_eq!(read_docs(&dir), expected(&[0..50, 100..130]));
    for (name, bytes) in &before {
        if name != MANIFEST {
            assert_eq!(&files(&dir)[name], bytes, "{name} changed");
        }
    }
    assert!(!dir.join(APPEND_DIR).exists());
    // Rerunning the append (or appending the set's own inputs) adds nothing.
    let again = ShardSink::open(o).unwrap();
    assert!(again.is_complete() && again.records_to_skip() == 0);
    let mut o = opts(&dir, "base");
    o.append = true;
    let mut same = ShardSink::open(o).unwrap();
    assert!(same.is_complete());
    assert_eq!(same.finish("t").unwrap(), m);
    assert!(same.push_doc(&[1], "t", 1).is_err());
    // A second append continues after the first.
    let mut o = opts(&dir, "third");
    o.append = true;
    let m3 = write(o, 200..210, None).unwrap();
    assert_eq!(m3.appends.len(), 2);
    assert_eq!(read_docs(&dir), expected(&[0..50, 100..130, 200..210]));
}

#[test]
fn an_interrupted_append_keeps_the_old_set_and_resumes_to_the_same_bytes() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    for d in [&a, &b] {
        write(opts(d, "base"), 0..50, None).unwrap();
    }
    let mut oa = opts(&a, "more");
    oa.append = true;
    write(oa, 100..160, None).unwrap();

    let mut ob = opts(&b, "more");
    ob.append = true;
    let before = files(&b);
    write(ob.clone(), 100..160, Some(140)).unwrap_err();
    assert_eq!(files(&b), before, "the set changed before the commit");
    let staged = fs::read_dir(b.join(APPEND_DIR)).unwrap().count();
    assert!(
        staged >= 2,
        "staged shards and their manifest: {staged} files"
    );
    let s = ShardSink::open(ob.clone()).unwrap();
    assert!(s.resumed_shards() > 0 && s.records_to_skip() > 0);
    drop(s);
    write(ob, 100..160, None).unwrap();
    assert_eq!(files(&a), files(&b));
}

#[test]
fn an_interrupted_commit_is_finished_by_the_rerun() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    for d in [&a, &b] {
        write(opts(d, "base"), 0..50, None).unwrap();
    }
    let mut oa = opts(&a, "more");
    oa.append = true;
    write(oa, 100..160, None).unwrap();
    let mut ob = opts(&b, "more");
    ob.append = true;
    let old_manifest = fs::read(b.join(MANIFEST)).unwrap();
    COMMIT_FAULT.with(|f| f.set(Some(1)));
    let e = write(ob.clone(), 100..160, None);
    COMMIT_FAULT.with(|f| f.set(None));
    assert!(matches!(e, Err(Error::Cancelled)));
    assert_eq!(fs::read(b.join(MANIFEST)).unwrap(), old_manifest);
    write(ob, 100..160, None).unwrap();
    assert_eq!(files(&a), files(&b));
}

#[test]
fn appends_with_another_tokenizer_dtype_or_eos_name_both_sides() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("set");
    let mut o = opts(&dir, "x");
    o.append = true;
    let e = ShardSink::open(o.clone()).unwrap_err().to_string();
    assert!(e.contains("no shard set to append to"), "{e}");
    write(opts(&dir, "base"), 0..20, None).unwrap();

    let mut other = o.clone();
    other.meta.tokenizer_hash = [9u8; 32];
    let e = ShardSink::open(other).unwrap_err();
    assert_eq!(e.kind(), "TokenizerMismatchError");
    let msg = e.to_string();
    assert!(
        msg.contains(&"07".repeat(32)) && msg.contains(&"09".repeat(32)),
        "{msg}"
    );

    let mut other = o.clone();
    other.meta.dtype = Dtype::U32;
    let msg = ShardSink::open(other).unwrap_err().to_string();
    assert!(msg.contains("dtype u16") && msg.contains("u32"), "{msg}");

    let mut other = o;
    other.meta.eos_id = None;
    let msg = ShardSink::open(other).unwrap_err().to_string();
    assert!(msg.contains("eos"), "{msg}");
}

#[test]
fn a_finished_sink_refuses_more_work() {
    let t = tempfile::tempdir().unwrap();
    let mut s = ShardSink::open(opts(t.path(), "h")).unwrap();
    s.push_doc(&[1, 2], "t", 1).unwrap();
    s.finish("t").unwrap();
    for e in [
        s.push_doc(&[1], "t", 2).unwrap_err(),
        s.skip_record(false).unwrap_err(),
        s.finish("t").unwrap_err(),
    ] {
        assert!(e.to_string().contains("finished"), "{e}");
    }
}
