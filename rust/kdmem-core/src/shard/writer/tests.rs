//! FedWriter tests: texts fed in batches give the native pipeline's shard bytes; token
//! arrays round-trip; state rules (resume, finished, wrong kind of input, bad offsets).

use std::fs;

use super::*;
use crate::shard::format::ShardReader;
use crate::shard::pipeline::{shard_files, ShardConfig};
use crate::shard::test_util::tiny_tokenizer;

fn texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("doc {i} {}", "héllo wörld ".repeat(i % 5)))
        .collect()
}

fn text_writer(out: &std::path::Path, tok: &std::path::Path, config: &str) -> FedWriter {
    let mut o = FedOptions::new(
        out.to_path_buf(),
        config.into(),
        FedSource::Texts {
            tokenizer: tok.to_path_buf(),
            eos: EosChoice::Auto,
            encoder: EncoderChoice::Auto,
        },
    );
    o.shard_tokens = Some(120);
    o.threads = Some(2);
    FedWriter::open(o).unwrap()
}

fn shard_bytes(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "kdt"))
        .collect();
    names.sort();
    names.iter().map(|p| fs::read(p).unwrap()).collect()
}

#[test]
fn texts_fed_in_batches_match_the_native_pipeline() {
    let t = tempfile::tempdir().unwrap();
    let tok = tiny_tokenizer(t.path());
    let docs = texts(40);
    let jsonl = t.path().join("c.jsonl");
    let lines: Vec<String> = docs
        .iter()
        .map(|d| serde_json::json!({ "text": d }).to_string())
        .collect();
    fs::write(&jsonl, lines.join("\n") + "\n").unwrap();
    let mut cfg = ShardConfig::new(vec![jsonl], tok.clone(), t.path().join("native"));
    cfg.shard_tokens = Some(120);
    shard_files(&cfg, &Control::new()).unwrap();

    let out = t.path().join("fed");
    let mut w = text_writer(&out, &tok, "src");
    assert_eq!(w.encoder(), Some(crate::shard::bpe::NAME));
    let ctl = Control::new();
    let views: Vec<&str> = docs.iter().map(String::as_str).collect();
    for (k, chunk) in views.chunks(7).enumerate() {
        w.add_texts(chunk, "src", 1 + 7 * k as u64, &ctl).unwrap();
    }
    let m = w.finish("src").unwrap();
    assert_eq!(m.encoder.as_deref(), Some(crate::shard::bpe::NAME));
    assert_eq!(shard_bytes(&out), shard_bytes(&t.path().join("native")));
    assert_eq!(ctl.snapshot().0, 40);
    let e = w.finish("src").unwrap_err().to_string();
    assert!(e.contains("finished"), "{e}");
}

#[test]
fn a_killed_text_writer_resumes_and_skips_its_records() {
    let t = tempfile::tempdir().unwrap();
    let tok = tiny_tokenizer(t.path());
    let docs = texts(40);
    let views: Vec<&str> = docs.iter().map(String::as_str).collect();
    let ctl = Control::new();
    let (full, part) = (t.path().join("full"), t.path().join("part"));
    let mut w = text_writer(&full, &tok, "src");
    w.add_texts(&views, "src", 1, &ctl).unwrap();
    w.finish("src").unwrap();

    let mut w = text_writer(&part, &tok, "src");
    w.add_texts(&views[..25], "src", 1, &ctl).unwrap();
    drop(w); // killed: the open shard is dropped, finished ones are kept
    let mut w = text_writer(&part, &tok, "src");
    let skip = w.records_to_skip() as usize;
    assert!(w.resumed_shards() > 0 && skip > 0 && skip <= 25);
    w.add_texts(&views[skip..], "src", 1 + skip as u64, &ctl)
        .unwrap();
    w.finish("src").unwrap();
    assert_eq!(shard_bytes(&full), shard_bytes(&part));
    // Another source in the same directory is refused.
    let mut o = FedOptions::new(
        part.clone(),
        "other".into(),
        FedSource::Texts {
            tokenizer: tok.clone(),
            eos: EosChoice::Auto,
            encoder: EncoderChoice::Auto,
        },
    );
    o.shard_tokens = Some(120);
    let e = FedWriter::open(o).unwrap_err().to_string();
    assert!(e.contains("different configuration"), "{e}");
}

#[test]
fn token_arrays_round_trip_and_bad_input_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("tok");
    let source = FedSource::Tokens {
        vocab_size: 70_000,
        tokenizer_hash: Some("ab".repeat(32)),
        eos_id: None,
    };
    let mut o = FedOptions::new(out.clone(), "npy".into(), source.clone());
    o.shard_tokens = Some(5);
    let mut w = FedWriter::open(o).unwrap();
    assert_eq!(w.meta().dtype, Dtype::U32);
    assert_eq!(w.encoder(), None);
    let ctl = Control::new();
    let tokens: Vec<u32> = (0..20).map(|i| i * 3_000).collect();
    w.add_tokens(&tokens, &[0, 4, 4, 11, 20], &ctl).unwrap();
    let e = w
        .add_tokens(&tokens, &[0, 4, 19], &ctl)
        .unwrap_err()
        .to_string();
    assert!(e.contains("offsets"), "{e}");
    let e = w.add_texts(&["x"], "s", 1, &ctl).unwrap_err().to_string();
    assert!(e.contains("no tokenizer"), "{e}");
    let m = w.finish("npy").unwrap();
    assert_eq!(m.n_docs(), 4);
    let r = ShardReader::open(out.join(&m.shards[0].name)).unwrap();
    assert_eq!(r.tokens().to_vec(0, 4), tokens[..4].to_vec());

    // u16 shards reject ids that do not fit, naming the document.
    let mut o = FedOptions::new(t.path().join("u16"), "npy".into(), source);
    o.dtype = DtypeChoice::Fixed(Dtype::U16);
    let mut w = FedWriter::open(o).unwrap();
    let e = w
        .add_tokens(&[1, 70_000], &[0, 2], &ctl)
        .unwrap_err()
        .to_string();
    assert!(e.contains("70000") && e.contains("--dtype u32"), "{e}");

    let o = FedOptions::new(
        t.path().join("bad"),
        "x".into(),
        FedSource::Tokens {
            vocab_size: 0,
            tokenizer_hash: Some("xyz".into()),
            eos_id: None,
        },
    );
    let e = FedWriter::open(o).unwrap_err().to_string();
    assert!(e.contains("dtype"), "{e}");
}
