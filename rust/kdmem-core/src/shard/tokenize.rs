//! Tokenization for shards: a Hugging Face `tokenizer.json` loaded with the `tokenizers`
//! crate (the library behind Python `tokenizers` and transformers fast tokenizers), the
//! tokenizer hash of `docs/formats.md`, and the EOS rule.
//!
//! Ids equal Python `Tokenizer.encode(text, add_special_tokens=False).ids`: the same library,
//! no special tokens added, and truncation/padding stored in the tokenizer.json switched off
//! (a shard holds whole documents). EOS, when enabled, is appended after every document.
//!
//! `--eos auto` picks the first of [`EOS_CANDIDATES`] present in the vocabulary (as an added
//! token or a regular one); when none is present no EOS is appended (the manifest then says
//! `eos_id: null`). `--eos none` never appends; `--eos TOKEN` looks `TOKEN` up in the
//! vocabulary (or, if it is a decimal number below the vocabulary size, uses it as the id).
//!
//! **Encoder.** Byte-level BPE tokenizers of the GPT-2, GPT-NeoX/Pythia, Llama-3, OLMo-2 and
//! Qwen families are encoded by kdmem's own exact encoder ([`crate::shard::bpe`], several
//! times faster); every other tokenizer by the `tokenizers` library. The rule is
//! [`ByteLevelBpe::from_tokenizer`]: every component must be one that encoder reproduces, and
//! a self-check sample must encode identically; [`ShardTokenizer::encoder`] names the one in
//! use and [`ShardTokenizer::encoder_note`] why (both are recorded in the manifest).
//! [`EncoderChoice::Tokenizers`] forces the library.
//!
//! Cost: O(text) per document; one `ShardTokenizer` is shared by all worker threads.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::shard::bpe::{self, ByteLevelBpe};
use crate::shard::format::Dtype;

/// End-of-text tokens recognised by `--eos auto`, in priority order.
pub const EOS_CANDIDATES: &[&str] = &[
    "<|endoftext|>",
    "<|end_of_text|>",
    "</s>",
    "<eos>",
    "<|eos|>",
    "<|end|>",
];

/// How to choose the token appended after each document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EosChoice {
    /// The first of [`EOS_CANDIDATES`] in the vocabulary, else none.
    Auto,
    /// Append nothing.
    None,
    /// This token (string, or a decimal id).
    Token(String),
}

impl EosChoice {
    /// Parse the CLI spelling: `auto`, `none`, or a token.
    pub fn parse(s: &str) -> Self {
        match s {
            "auto" => EosChoice::Auto,
            "none" => EosChoice::None,
            t => EosChoice::Token(t.to_string()),
        }
    }
}

/// Which encoder turns text into ids (the ids are the same either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncoderChoice {
    /// kdmem's byte-level BPE encoder when the tokenizer qualifies, else `tokenizers`.
    #[default]
    Auto,
    /// Always the `tokenizers` library.
    Tokenizers,
}

/// Name recorded in the manifest when the `tokenizers` library encoded a shard set.
pub const TOKENIZERS_ENCODER: &str = "tokenizers";

impl EncoderChoice {
    /// Parse `auto` or `tokenizers`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(EncoderChoice::Auto),
            "tokenizers" => Ok(EncoderChoice::Tokenizers),
            other => Err(Error::InvalidArgument {
                name: "encoder".into(),
                value: other.into(),
                fix: "use auto (kdmem's byte-level BPE encoder where it applies) or tokenizers"
                    .into(),
            }),
        }
    }
}

/// How to choose the token width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtypeChoice {
    /// u16 when every id fits (vocab size <= 65,536), else u32.
    Auto,
    /// Always this width.
    Fixed(Dtype),
}

impl DtypeChoice {
    /// Parse `auto`, `u16` or `u32`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(DtypeChoice::Auto),
            "u16" => Ok(DtypeChoice::Fixed(Dtype::U16)),
            "u32" => Ok(DtypeChoice::Fixed(Dtype::U32)),
            other => Err(Error::InvalidArgument {
                name: "dtype".into(),
                value: other.into(),
                fix: "use auto, u16 or u32".into(),
            }),
        }
    }

    /// The width for a vocabulary of `vocab_size` ids.
    pub fn resolve(self, vocab_size: u32) -> Dtype {
        match self {
            DtypeChoice::Fixed(d) => d,
            DtypeChoice::Auto if vocab_size as u64 <= 65_536 => Dtype::U16,
            DtypeChoice::Auto => Dtype::U32,
        }
    }
}

/// SHA-256 of `"".join(f"{id}\t{token}\n")` over the vocabulary (added tokens included)
/// sorted by id (ties, which real tokenizers do not have, by token string).
pub fn tokenizer_hash(tok: &Tokenizer) -> [u8; 32] {
    let mut vocab: Vec<(u32, String)> = tok
        .get_vocab(true)
        .into_iter()
        .map(|(t, id)| (id, t))
        .collect();
    vocab.sort_unstable();
    let mut h = Sha256::new();
    for (id, t) in &vocab {
        h.update(id.to_string().as_bytes());
        h.update(b"\t");
        h.update(t.as_bytes());
        h.update(b"\n");
    }
    h.finalize().into()
}

/// Lower-case hex of a hash.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A loaded tokenizer plus what a shard header needs from it.
pub struct ShardTokenizer {
    tok: Tokenizer,
    fast: Option<ByteLevelBpe>,
    note: String,
    path: PathBuf,
    /// See [`tokenizer_hash`].
    pub hash: [u8; 32],
    /// Largest id + 1 over the vocabulary incl. added tokens.
    pub vocab_size: u32,
    /// Token appended after every document.
    pub eos_id: Option<u32>,
}

impl std::fmt::Debug for ShardTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardTokenizer")
            .field("path", &self.path)
            .field("vocab_size", &self.vocab_size)
            .field("eos_id", &self.eos_id)
            .field("encoder", &self.encoder())
            .finish()
    }
}

impl ShardTokenizer {
    /// Load `tokenizer.json` (or a directory containing one) and resolve the EOS choice, with
    /// [`EncoderChoice::Auto`].
    pub fn load(path: impl AsRef<Path>, eos: &EosChoice) -> Result<Self> {
        Self::load_with(path, eos, EncoderChoice::Auto)
    }

    /// [`ShardTokenizer::load`] with an explicit encoder choice. Compiling the fast encoder
    /// costs O(vocabulary + merges) once (about 0.1-0.5 s for a 150k vocabulary).
    pub fn load_with(
        path: impl AsRef<Path>,
        eos: &EosChoice,
        encoder: EncoderChoice,
    ) -> Result<Self> {
        let mut path = path.as_ref().to_path_buf();
        if path.is_dir() {
            path = path.join("tokenizer.json");
        }
        let mut tok = Tokenizer::from_file(&path).map_err(|e| Error::TokenizerLoad {
            path: path.clone(),
            reason: e.to_string().replace('\n', " "),
        })?;
        // Shards hold whole documents: ignore any truncation/padding saved in the file.
        tok.with_truncation(None)
            .map_err(|e| Error::TokenizerLoad {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        tok.with_padding(None);
        let vocab = tok.get_vocab(true);
        let max_id = vocab.values().copied().max().map_or(0, |m| m as u64 + 1);
        let vocab_size = max_id
            .max(tok.get_vocab_size(true) as u64)
            .min(u32::MAX as u64) as u32;
        let eos_id = match eos {
            EosChoice::None => None,
            EosChoice::Auto => EOS_CANDIDATES.iter().find_map(|c| vocab.get(*c).copied()),
            EosChoice::Token(t) => match vocab.get(t.as_str()) {
                Some(&id) => Some(id),
                None => match t.parse::<u32>() {
                    Ok(id) if id < vocab_size => Some(id),
                    _ => {
                        return Err(Error::InvalidArgument {
                            name: "eos".into(),
                            value: t.clone(),
                            fix: format!(
                                "no such token in {}; pass a token of its vocabulary, an id below {vocab_size}, auto or none",
                                path.display()
                            ),
                        })
                    }
                },
            },
        };
        let (fast, note) = match encoder {
            EncoderChoice::Tokenizers => (None, "forced by --encoder tokenizers".to_string()),
            EncoderChoice::Auto => match ByteLevelBpe::from_tokenizer(&tok) {
                Ok(f) => (Some(f), "byte-level BPE of a supported family".to_string()),
                Err(why) => (None, format!("not kdmem's fast path: {why}")),
            },
        };
        Ok(ShardTokenizer {
            hash: tokenizer_hash(&tok),
            tok,
            fast,
            note,
            path,
            vocab_size,
            eos_id,
        })
    }

    /// The tokenizer.json path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.tok
    }

    /// The encoder in use: [`bpe::NAME`] or [`TOKENIZERS_ENCODER`].
    pub fn encoder(&self) -> &'static str {
        if self.fast.is_some() {
            bpe::NAME
        } else {
            TOKENIZERS_ENCODER
        }
    }

    /// Why that encoder (for the manifest and logs; one clause).
    pub fn encoder_note(&self) -> &str {
        &self.note
    }

    /// Token ids of `text` (no special tokens) followed by EOS if enabled, appended to `out`.
    /// `path` and `line` name the record in errors.
    pub fn encode_into(&self, text: &str, out: &mut Vec<u32>, path: &str, line: u64) -> Result<()> {
        self.encode_raw(text, out, path, line)?;
        if let Some(e) = self.eos_id {
            out.push(e);
        }
        Ok(())
    }

    /// [`Self::encode_into`] for a document of any size: one longer than `cap` bytes is
    /// tokenized in pieces of at most `cap` bytes ([`split_points`]), so that the tokenizer's
    /// working memory is bounded by `cap` (HF `tokenizers` needs ~150 bytes per input byte of
    /// one string). Returns whether it was split. The pieces are cut before a single space
    /// between two non-space characters, which is a pre-token boundary of the byte-level BPE
    /// families (GPT-2, GPT-NeoX, Llama-3, OLMo-2, Qwen): their ids equal the whole
    /// document's. Other tokenizers may differ at the cuts (at most a token or two per cut).
    pub fn encode_capped(
        &self,
        text: &str,
        cap: usize,
        out: &mut Vec<u32>,
        path: &str,
        line: u64,
    ) -> Result<bool> {
        if text.len() <= cap {
            self.encode_into(text, out, path, line)?;
            return Ok(false);
        }
        let mut start = 0;
        for end in split_points(text, cap) {
            self.encode_raw(&text[start..end], out, path, line)?;
            start = end;
        }
        if let Some(e) = self.eos_id {
            out.push(e);
        }
        Ok(true)
    }

    /// Tokenize a document longer than `cap` piece by piece ([`split_points`]), giving each
    /// piece's ids to `emit` (EOS after the last): the ids of [`Self::encode_capped`] without
    /// holding them all. `buf` is reused between pieces. Returns the number of tokens.
    pub fn encode_pieces(
        &self,
        text: &str,
        cap: usize,
        buf: &mut Vec<u32>,
        path: &str,
        line: u64,
        emit: &mut dyn FnMut(&[u32]) -> Result<()>,
    ) -> Result<u64> {
        let mut n = 0u64;
        let mut start = 0;
        for end in split_points(text, cap) {
            buf.clear();
            self.encode_raw(&text[start..end], buf, path, line)?;
            n += buf.len() as u64;
            emit(buf)?;
            start = end;
        }
        if let Some(e) = self.eos_id {
            emit(&[e])?;
            n += 1;
        }
        Ok(n)
    }

    fn encode_raw(&self, text: &str, out: &mut Vec<u32>, path: &str, line: u64) -> Result<()> {
        if let Some(f) = &self.fast {
            f.encode_into(text, out);
            return Ok(());
        }
        let enc = self
            .tok
            .encode_fast(text, false)
            .map_err(|e| Error::MalformedRecord {
                path: path.to_string(),
                line,
                reason: format!("the tokenizer failed: {e}"),
            })?;
        out.extend_from_slice(enc.get_ids());
        Ok(())
    }
}

/// The ends of the pieces `text` is cut into, each at most `cap` bytes (`cap` >= 4), the last
/// one `text.len()`. A cut is placed before a single space that sits between two non-space
/// characters, searched backwards over the last half of the piece; without one there, at the
/// last character boundary (a pre-token may then be cut). O(len).
pub fn split_points(text: &str, cap: usize) -> Vec<usize> {
    let b = text.as_bytes();
    let cap = cap.max(4);
    let mut out = Vec::with_capacity(b.len() / cap + 1);
    let mut start = 0;
    while b.len() - start > cap {
        let hard = start + cap;
        let lo = start + cap / 2;
        let good = (lo.max(start + 1)..hard).rev().find(|&i| {
            b[i] == b' '
                && !b[i - 1].is_ascii_whitespace()
                && i + 1 < b.len()
                && !b[i + 1].is_ascii_whitespace()
        });
        let cut = good.unwrap_or_else(|| {
            let mut i = hard;
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            i
        });
        out.push(cut);
        start = cut;
    }
    out.push(b.len());
    out
}

#[cfg(test)]
mod split_tests {
    use super::split_points;

    #[test]
    fn pieces_are_bounded_and_cut_before_a_lone_space() {
        let text = "alpha beta  gamma delta epsilon zeta eta theta iota kappa".repeat(50);
        let ends = split_points(&text, 40);
        assert_eq!(*ends.last().unwrap(), text.len());
        let mut start = 0;
        for &e in &ends {
            assert!(e - start <= 40 && e > start);
            if e < text.len() {
                let b = text.as_bytes();
                assert_eq!(b[e], b' ');
                assert!(!b[e - 1].is_ascii_whitespace() && !b[e + 1].is_ascii_whitespace());
            }
            start = e;
        }
    }

    #[test]
    fn without_spaces_cuts_at_char_boundaries() {
        let text = "é".repeat(100); // 2 bytes each
        let ends = split_points(&text, 7);
        let mut start = 0;
        for &e in &ends {
            assert!(text.is_char_boundary(e) && e - start <= 7 && e > start);
            start = e;
        }
        assert_eq!(start, text.len());
        assert_eq!(split_points("short", 40), vec![5]);
    }
}
