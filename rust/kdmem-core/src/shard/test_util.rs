//! Helpers shared by the shard tests.

use std::path::{Path, PathBuf};

use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

/// A byte-level BPE with no merges: one token per byte, plus `<|endoftext|>` (id 256).
pub(crate) fn tiny_tokenizer(dir: &Path) -> PathBuf {
    let mut vocab = tokenizers::models::bpe::Vocab::new();
    let mut alphabet: Vec<char> = ByteLevel::alphabet().into_iter().collect();
    alphabet.sort();
    for (i, c) in alphabet.iter().enumerate() {
        vocab.insert(c.to_string(), i as u32);
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, vec![])
        .build()
        .unwrap();
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::default()));
    tok.add_special_tokens(vec![AddedToken::from("<|endoftext|>", true)])
        .unwrap();
    let p = dir.join("tokenizer.json");
    tok.save(&p, false).unwrap();
    p
}
