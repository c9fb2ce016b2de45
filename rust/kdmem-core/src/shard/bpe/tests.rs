//! The fast encoder against `tokenizers` itself (the oracle), per tokenizer family, on random
//! and real text. Tokenizers are trained here on this crate's own sources (no downloads) and
//! dressed in each family's configuration.

use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::{json, Value};
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::normalizers::{NormalizerWrapper, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, DecoderWrapper, PostProcessorWrapper, Tokenizer, TokenizerImpl};

use super::*;
use crate::shard::pretok::{CL100K_REGEX, QWEN_REGEX};

/// Training text: this crate's sources plus some multilingual lines.
fn corpus() -> Vec<String> {
    let mut v: Vec<String> = [
        include_str!("../pipeline.rs"),
        include_str!("../format.rs"),
        include_str!("../input.rs"),
        include_str!("../../index/search.rs"),
    ]
    .iter()
    .flat_map(|s| s.lines().map(str::to_string))
    .collect();
    for _ in 0..20 {
        v.push(
            "Die Straße ist naß; café, naïve, résumé. Ça va? ¿Qué tal? 日本語のテキストです。"
                .into(),
        );
        v.push("Привет, мир! Γειά σου κόσμε. مرحبا بالعالم ١٢٣ ٤٥٦. 12345 67890 3.14159".into());
        v.push("I'm sure you're right, he'll see; we've done it. DON'T SHOUT, IT'S LATE!".into());
    }
    v
}

/// Families, as (name, tokenizer.json text).
fn families() -> &'static Vec<(&'static str, Tokenizer)> {
    static F: OnceLock<Vec<(&'static str, Tokenizer)>> = OnceLock::new();
    F.get_or_init(|| {
        let texts = corpus();
        let train = |pre: PreTokenizerWrapper, norm: Option<NormalizerWrapper>| -> Value {
            let mut t: TokenizerImpl<
                ModelWrapper,
                NormalizerWrapper,
                PreTokenizerWrapper,
                PostProcessorWrapper,
                DecoderWrapper,
            > = TokenizerImpl::new(ModelWrapper::BPE(BPE::default()));
            t.with_pre_tokenizer(Some(pre));
            t.with_normalizer(norm).unwrap();
            let mut trainer: TrainerWrapper = BpeTrainer::builder()
                .vocab_size(700)
                .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
                .show_progress(false)
                .build()
                .into();
            t.train(&mut trainer, texts.iter()).unwrap();
            serde_json::from_str(&t.to_string(false).unwrap()).unwrap()
        };
        let split = |regex: &str| -> PreTokenizerWrapper {
            serde_json::from_value(json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
            ]}))
            .unwrap()
        };
        let load = |mut v: Value, added: &[(&str, bool, bool)], ignore_merges: bool| -> Tokenizer {
            v["model"]["ignore_merges"] = json!(ignore_merges);
            let mut t: Tokenizer = serde_json::from_value(v).unwrap();
            let tokens: Vec<AddedToken> = added
                .iter()
                .map(|&(c, special, normalized)| {
                    AddedToken::from(c, special).normalized(normalized)
                })
                .collect();
            t.add_tokens(tokens).unwrap();
            // Round-trip through JSON, as a tokenizer.json on disk is read.
            serde_json::from_str(&t.to_string(false).unwrap()).unwrap()
        };
        let gpt2_pre = PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true));
        vec![
            (
                "gpt2",
                load(train(gpt2_pre.clone(), None), &[("<|endoftext|>", true, false)], false),
            ),
            (
                "neox",
                load(
                    train(gpt2_pre.clone(), Some(NFC.into())),
                    &[
                        ("<|endoftext|>", true, false),
                        ("<|padding|>", true, false),
                        ("    ", false, true),
                        ("  ", false, true),
                        ("\t\t", false, true),
                    ],
                    false,
                ),
            ),
            (
                "llama3",
                load(
                    train(split(CL100K_REGEX), None),
                    &[("<|begin_of_text|>", true, false), ("<|end_of_text|>", true, false)],
                    true,
                ),
            ),
            (
                "olmo2",
                load(
                    train(split(CL100K_REGEX), None),
                    &[("<|endoftext|>", true, false), ("<|pad|>", true, false)],
                    false,
                ),
            ),
            (
                "qwen3",
                load(
                    train(split(QWEN_REGEX), Some(NFC.into())),
                    &[
                        ("<|endoftext|>", true, false),
                        ("<|im_start|>", true, false),
                        ("<|im_end|>", true, false),
                        ("<think>", false, false),
                    ],
                    false,
                ),
            ),
            (
                "roberta",
                load(
                    train(PreTokenizerWrapper::ByteLevel(ByteLevel::new(true, true, true)), None),
                    &[("<s>", true, false), ("</s>", true, false)],
                    false,
                ),
            ),
        ]
    })
}

fn compiled() -> &'static Vec<(&'static str, &'static Tokenizer, ByteLevelBpe)> {
    static C: OnceLock<Vec<(&'static str, &'static Tokenizer, ByteLevelBpe)>> = OnceLock::new();
    C.get_or_init(|| {
        families()
            .iter()
            .map(|(n, t)| {
                let e = ByteLevelBpe::from_tokenizer(t).unwrap_or_else(|e| panic!("{n}: {e}"));
                // The oracle is a real BPE: hundreds of merges, which shorten real text.
                assert!(
                    t.get_vocab_size(false) >= 600 && e.merges.len() >= 300,
                    "{n}"
                );
                let text = "fn main() { let shard = self.manifest.shards.len(); }";
                let mut ids = Vec::new();
                e.encode_into(text, &mut ids);
                assert!(ids.len() * 2 < text.len(), "{n}: {ids:?}");
                (*n, t, e)
            })
            .collect()
    })
}

fn check(text: &str) -> Result<(), TestCaseError> {
    for (name, tok, enc) in compiled() {
        let want = tok.encode_fast(text, false).unwrap();
        let mut got = Vec::new();
        enc.encode_into(text, &mut got);
        prop_assert_eq!(&got[..], want.get_ids(), "{} on {:?}", name, text);
    }
    Ok(())
}

const PIECES: &[&str] = &[
    "the",
    " the",
    "The",
    " quick",
    "brown",
    "fox",
    "'s",
    "'S",
    "'re",
    "'ll",
    "'ſ",
    "n't",
    " ",
    "  ",
    "   ",
    "\t",
    "\n",
    "\n\n",
    "\r\n",
    " \n ",
    "0",
    "123",
    "4567",
    "٣",
    "½",
    ".",
    ",",
    "!",
    "?",
    "...",
    "--",
    "(",
    ")",
    "{",
    "}",
    "::",
    "é",
    "e\u{301}",
    "ñ",
    "ß",
    "日本",
    "語",
    "😀",
    "\u{a0}",
    "\u{3000}",
    "\u{200b}",
    "<|endoftext|>",
    "<|padding|>",
    "<|im_start|>",
    "<think>",
    "<|end_of_text|>",
    "<s>",
    "</s>",
    "<|endof",
    "text|>",
    "    ",
    "\t\t",
    "fn",
    " pub",
    "self",
    "Ω",
    "Å",
    "\u{212b}",
    "\u{2126}",
    "ﬁ",
    "ǅ",
];

fn text_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            6 => prop::sample::select(PIECES).prop_map(str::to_string),
            1 => any::<char>().prop_map(|c| c.to_string()),
            1 => "[a-zA-Z]{1,12}",
        ],
        0..60,
    )
    .prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn fast_encoder_equals_tokenizers_on_random_text(text in text_strategy()) {
        check(&text)?;
    }

    #[test]
    fn fast_encoder_equals_tokenizers_on_arbitrary_strings(text in any::<String>()) {
        check(&text)?;
    }
}

#[test]
fn fast_encoder_equals_tokenizers_on_real_text() {
    for line in corpus().iter().step_by(3) {
        check(line).unwrap();
    }
    let doc = include_str!("../tokenize.rs");
    check(doc).unwrap();
    // Long pieces (no cache) and repeated pieces (cache hits, twice in a row).
    let long = "abcdefghij".repeat(100) + &" ".repeat(300) + &"1".repeat(50);
    check(&long).unwrap();
    check(&long).unwrap();
}

#[test]
fn merge_rules_follow_tokenizers_not_token_ranks() {
    // Merges b+c (rank 0), a+b (1), ab+c (2): tokenizers encodes "abc" as [a, bc] (no merge
    // a+bc exists), where a lowest-ranked-token encoder would give [abc].
    let v = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "post_processor": null, "decoder": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": Value::Object(byte_symbols().iter().enumerate()
                        .map(|(i, c)| (c.to_string(), json!(i)))
                        .chain([("bc".to_string(), json!(256)), ("ab".to_string(), json!(257)),
                                ("abc".to_string(), json!(258))])
                        .collect()),
                  "merges": [["b", "c"], ["a", "b"], ["ab", "c"]]}
    });
    let tok: Tokenizer = serde_json::from_value(v).unwrap();
    let enc = ByteLevelBpe::from_tokenizer(&tok).unwrap();
    let mut got = Vec::new();
    enc.encode_into("abc", &mut got);
    assert_eq!(got, vec![b'a' as u32, 256]);
    assert_eq!(got, tok.encode_fast("abc", false).unwrap().get_ids());
}

#[test]
fn other_tokenizers_are_refused_with_a_reason() {
    let base: Value = serde_json::from_str(&families()[0].1.to_string(false).unwrap()).unwrap();
    let refuse = |edit: &dyn Fn(&mut Value), why: &str| {
        let mut v = base.clone();
        edit(&mut v);
        let tok: Tokenizer = serde_json::from_value(v).unwrap();
        let err = ByteLevelBpe::from_tokenizer(&tok).unwrap_err();
        assert!(err.contains(why), "{err:?} should mention {why:?}");
    };
    refuse(
        &|v| v["normalizer"] = json!({"type": "Lowercase"}),
        "normalizer",
    );
    refuse(
        &|v| v["pre_tokenizer"] = json!({"type": "Whitespace"}),
        "pre-tokenizer",
    );
    refuse(
        &|v| {
            v["pre_tokenizer"] = json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": r"\p{L}+|\s+"}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]})
        },
        "regex",
    );
    refuse(&|v| v["model"]["dropout"] = json!(0.1), "dropout");
    refuse(
        &|v| v["model"]["end_of_word_suffix"] = json!("</w>"),
        "end_of_word_suffix",
    );
    refuse(
        &|v| {
            v["added_tokens"][0]["lstrip"] = json!(true);
        },
        "lstrip",
    );
}
