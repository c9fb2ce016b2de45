//! Pipeline tests: determinism over threads and batch sizes, resume, bad input.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::shard::format::{self, Dtype, ShardReader};
use crate::shard::test_util::tiny_tokenizer;
use std::fs;
use tokenizers::Tokenizer;

fn corpus(dir: &Path, docs: &[String]) -> PathBuf {
    let p = dir.join("c.jsonl");
    let lines: Vec<String> = docs
        .iter()
        .map(|d| serde_json::json!({ "text": d, "id": 1 }).to_string())
        .collect();
    fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn run(cfg: &ShardConfig) -> Result<ShardReport> {
    shard_files(cfg, &Control::new())
}

fn docs(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("doc {i} {}", "héllo wörld ".repeat(i % 7)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]
    #[test]
    fn bytes_do_not_depend_on_threads_or_batches(n in 1usize..60, shard_tokens in 1u64..400,
                                                 batch in 1usize..300) {
        let t = tempfile::tempdir().unwrap();
        let tok = tiny_tokenizer(t.path());
        let input = corpus(t.path(), &docs(n));
        let mut outs = Vec::new();
        for (threads, bb) in [(1, DEFAULT_BATCH_BYTES), (2, batch), (3, batch * 7)] {
            let out = t.path().join(format!("o{threads}"));
            let mut cfg = ShardConfig::new(vec![input.clone()], tok.clone(), out.clone());
            cfg.threads = Some(threads);
            cfg.shard_tokens = Some(shard_tokens);
            cfg.batch_bytes = bb;
            let rep = run(&cfg).unwrap();
            prop_assert_eq!(rep.manifest.n_docs(), n as u64);
            outs.push(files(&out));
        }
        prop_assert_eq!(&outs[0], &outs[1]);
        prop_assert_eq!(&outs[0], &outs[2]);
    }
}

#[test]
fn ids_and_eos_match_the_tokenizer() {
    let t = tempfile::tempdir().unwrap();
    let tok = tiny_tokenizer(t.path());
    let ds = docs(5);
    let input = corpus(t.path(), &ds);
    let out = t.path().join("o");
    let rep = run(&ShardConfig::new(vec![input], tok.clone(), out.clone())).unwrap();
    assert_eq!(rep.manifest.meta.eos_id, Some(256));
    assert_eq!(rep.manifest.meta.dtype, Dtype::U16);
    let r = ShardReader::open(out.join("shard-00000.kdt")).unwrap();
    let oracle = Tokenizer::from_file(&tok).unwrap();
    for (i, d) in ds.iter().enumerate() {
        let (a, b) = r.doc_range(i);
        let mut want = oracle.encode(d.as_str(), false).unwrap().get_ids().to_vec();
        want.push(256);
        assert_eq!(r.tokens().to_vec(a, b), want);
    }
}

#[test]
fn default_runs_keep_the_configuration_hash_of_earlier_versions() {
    // Without --memory a run's identity is the lines kdmem hashed before --memory existed,
    // so finished and interrupted outputs of earlier versions are still reused or resumed.
    let t = tempfile::tempdir().unwrap();
    let tok = tiny_tokenizer(t.path());
    let input = corpus(t.path(), &docs(5));
    let mut cfg = ShardConfig::new(vec![input.clone()], tok.clone(), t.path().join("o"));
    cfg.shard_tokens = Some(100);
    let rep = run(&cfg).unwrap();
    let st = ShardTokenizer::load(&tok, &EosChoice::Auto).unwrap();
    let abs = fs::canonicalize(&input).unwrap();
    let want = config_hash(&[
        format!("tokenizer {}", hex(&st.hash)),
        "dtype u16".into(),
        "eos Some(256)".into(),
        "text_field \"text\"".into(),
        "skip_bad false".into(),
        "shard_tokens 100".into(),
        format!(
            "input {} {}",
            abs.display(),
            fs::metadata(&input).unwrap().len()
        ),
    ]);
    assert_eq!(rep.manifest.config_hash, want);
    // An explicit budget is part of the identity (it may move shard boundaries).
    cfg.out = t.path().join("m");
    cfg.memory = Some(1 << 30);
    assert_ne!(run(&cfg).unwrap().manifest.config_hash, want);
}

#[test]
fn resume_keeps_finished_shards_and_ends_identical() {
    let t = tempfile::tempdir().unwrap();
    let tok = tiny_tokenizer(t.path());
    let input = corpus(t.path(), &docs(40));
    let full = t.path().join("full");
    let mut cfg = ShardConfig::new(vec![input.clone()], tok.clone(), full.clone());
    cfg.shard_tokens = Some(100);
    let rep = run(&cfg).unwrap();
    assert!(rep.manifest.shards.len() >= 4);
    let want = files(&full);

    // Simulate a crash after shard 1: manifest lists 2 shards, later files and temps linger.
    let part = t.path().join("part");
    fs::create_dir_all(&part).unwrap();
    let mut m = rep.manifest.clone();
    m.shards.truncate(2);
    m.complete = false;
    m.write(&part).unwrap();
    for k in 0..3 {
        let n = shard_name(k);
        fs::copy(full.join(&n), part.join(&n)).unwrap();
    }
    fs::write(part.join("shard-00003.kdt.tmp"), b"partial").unwrap();
    let before = fs::metadata(part.join("shard-00000.kdt"))
        .unwrap()
        .modified()
        .unwrap();
    let mut cfg2 = cfg.clone();
    cfg2.out = part.clone();
    let rep2 = run(&cfg2).unwrap();
    assert_eq!(rep2.resumed_shards, 2);
    assert_eq!(files(&part), want);
    let after = fs::metadata(part.join("shard-00000.kdt"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after);

    // A corrupted listed shard is redone, the output still identical.
    let p1 = part.join("shard-00001.kdt");
    let mut b = fs::read(&p1).unwrap();
    let n = b.len();
    b[n - 20] ^= 1;
    fs::write(&p1, b).unwrap();
    let rep3 = run(&cfg2).unwrap();
    assert_eq!(rep3.resumed_shards, 1);
    assert_eq!(files(&part), want);

    // A different configuration is refused, naming the fix.
    let mut cfg4 = cfg2.clone();
    cfg4.shard_tokens = Some(99);
    let e = run(&cfg4).unwrap_err();
    assert!(e.to_string().contains("--overwrite"), "{e}");
    cfg4.overwrite = true;
    run(&cfg4).unwrap();
}

#[test]
fn bad_records_fail_or_are_counted() {
    let t = tempfile::tempdir().unwrap();
    let tok = tiny_tokenizer(t.path());
    let p = t.path().join("bad.jsonl");
    fs::write(
        &p,
        b"{\"text\": \"a\"}\n{oops\n\n{\"text\": \"b\xff\"}\n{\"text\": \"c\"}\n",
    )
    .unwrap();
    let out = t.path().join("o");
    let mut cfg = ShardConfig::new(vec![p.clone()], tok.clone(), out.clone());
    let e = run(&cfg).unwrap_err();
    assert!(e.to_string().contains("bad.jsonl:2"), "{e}");
    assert!(!out.join(MANIFEST).exists());
    assert_eq!(files(&out).len(), 0, "nothing half-written");
    cfg.skip_bad = true;
    let rep = run(&cfg).unwrap();
    assert_eq!(rep.manifest.n_docs(), 2);
    assert_eq!(rep.manifest.skipped_bad(), 2);
    assert_eq!(rep.manifest.records_consumed(), 5);

    let empty = t.path().join("empty.txt");
    fs::write(&empty, b"").unwrap();
    let e = run(&ShardConfig::new(
        vec![empty],
        tok.clone(),
        t.path().join("e"),
    ))
    .unwrap_err();
    assert_eq!(e.kind(), "EmptyCorpusError");

    let mut cfg = ShardConfig::new(vec![p], tok, t.path().join("u"));
    cfg.text_field = "body".into();
    let e = run(&cfg).unwrap_err();
    assert_eq!(e.kind(), "MissingFieldError");
}

#[test]
fn disk_full_is_reported_and_leaves_no_partial_shard() {
    let t = tempfile::tempdir().unwrap();
    let tok = tiny_tokenizer(t.path());
    let input = corpus(t.path(), &docs(30));
    let out = t.path().join("o");
    let mut cfg = ShardConfig::new(vec![input], tok, out.clone());
    cfg.shard_tokens = Some(50);
    // The writer runs on the calling thread, so the thread-local hook reaches it.
    format::TEST_FAULT.with(|f| f.set(Some(300)));
    let e = run(&cfg);
    format::TEST_FAULT.with(|f| f.set(None));
    let e = e.unwrap_err();
    assert_eq!(e.kind(), "DiskFullError", "{e}");
    for n in files(&out).keys() {
        assert!(!n.contains(".tmp"), "temp file {n} left behind");
    }
    // The rerun (space freed) resumes and finishes.
    run(&cfg).unwrap();
}

#[test]
fn cancellation_stops_without_partial_files_and_counters_advance() {
    let t = tempfile::tempdir().unwrap();
    let tok = tiny_tokenizer(t.path());
    let input = corpus(t.path(), &docs(50));
    let out = t.path().join("o");
    let mut cfg = ShardConfig::new(vec![input], tok, out.clone());
    cfg.shard_tokens = Some(40);
    let ctl = Control::new();
    ctl.cancel();
    let e = shard_files(&cfg, &ctl).unwrap_err();
    assert_eq!(e.kind(), "KeyboardInterrupt");
    for n in files(&out).keys() {
        assert!(!n.contains(".tmp"), "temp file {n} left behind");
    }
    let ctl = Control::new();
    let rep = shard_files(&cfg, &ctl).unwrap();
    let (d, tk, b, tb) = ctl.snapshot();
    assert_eq!((d, tk), (rep.manifest.n_docs(), rep.manifest.n_tokens()));
    assert_eq!(b, tb);
    assert!(tb > 0);
}
