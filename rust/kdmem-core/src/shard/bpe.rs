//! A fast, exact encoder for byte-level BPE `tokenizer.json` files (GPT-2, GPT-NeoX/Pythia,
//! Llama-3, OLMo-2, Qwen-2/3 style): the ids of `Tokenizer.encode(text,
//! add_special_tokens=False)`, several times faster.
//!
//! It performs the steps `tokenizers` performs, in the same order and with the same
//! building blocks, minus the offset and alignment bookkeeping that dominates that library's
//! cost:
//!
//! 1. split on added tokens that match the raw text (`normalized: false`), leftmost-longest
//!    (the same `daachorse` automaton the library builds);
//! 2. normalize each remaining piece (none, or NFC with the library's own NFC tables; pieces
//!    made only of code points below U+0300 are already NFC and skip it);
//! 3. split on added tokens that match the normalized text (`normalized: true`);
//! 4. pre-tokenize with the family's regex, run as a hand-written scanner
//!    ([`crate::shard::pretok`]), after `add_prefix_space` if set;
//! 5. BPE-encode each piece: a whole-word lookup first when the model has `ignore_merges`,
//!    then a per-thread word cache, then the merge loop of `tokenizers` (repeatedly merge the
//!    adjacent pair of lowest merge rank, leftmost first, with a binary heap).
//!
//! **Which tokenizers.** [`ByteLevelBpe::from_tokenizer`] accepts a tokenizer only if every
//! component is one it reproduces exactly, and says which one is not otherwise (the caller
//! falls back to `tokenizers`): model BPE without dropout, `continuing_subword_prefix` or
//! `end_of_word_suffix`, whose vocabulary holds all 256 byte symbols; normalizer none or NFC;
//! pre-tokenizer `ByteLevel` with `use_regex: true` (GPT-2's regex), or a `Sequence` of a
//! `Split` with one of the known regexes ([`crate::shard::pretok::Pattern`], behavior
//! `Isolated`, not inverted) and a `ByteLevel` with `use_regex: false` and no prefix space;
//! added tokens without `single_word`, `lstrip` or `rstrip`; `encode_special_tokens` off.
//! Then it encodes a fixed sample (every added token, contractions, digits, whitespace runs,
//! accents, CJK, emoji) both ways and refuses if a single id differs.
//!
//! **Cost.** Steps 1-4 are O(text) with no allocation (NFC allocates one string for pieces
//! that need it). Step 5 is O(1) expected per piece on a cache hit; a miss costs
//! O(L log L) for a piece of L bytes (the library's own algorithm: exactness with its merge
//! rules, which differ from "lowest-ranked token" rules on some vocabularies, rules out the
//! backtracking linear-time encoders; the cache makes misses rare on natural text).
//! **Memory.** The merge table (24 B per merge) and byte-string vocabulary (~40 B per token)
//! per encoder; per thread, a word cache of at most [`CACHE_WORDS`] words of at most
//! [`CACHE_WORD_BYTES`] bytes (about 10 MB when full), cleared when full.

use std::borrow::Cow;
use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};

use daachorse::{DoubleArrayAhoCorasick, DoubleArrayAhoCorasickBuilder, MatchKind};
use rustc_hash::FxHashMap;
use tokenizers::models::ModelWrapper;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::split::SplitPattern;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{SplitDelimiterBehavior, Tokenizer};
use unicode_normalization_alignments::UnicodeNormalization;

use crate::shard::pretok::{classes, ClassTable, Pattern};

/// Most words a thread's cache holds before it is cleared.
pub const CACHE_WORDS: usize = 1 << 16;
/// Longest piece (bytes) that is cached.
pub const CACHE_WORD_BYTES: usize = 64;

/// Name recorded in the manifest when this encoder tokenized a shard set.
pub const NAME: &str = "kdmem-bpe";

/// GPT-2's byte-to-symbol map (`bytes_to_unicode`): printable Latin-1 bytes map to
/// themselves, the others to U+0100 onwards in byte order.
fn byte_symbols() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        out[b as usize] = if printable {
            b as char
        } else {
            n += 1;
            char::from_u32(255 + n).expect("U+0100..U+0143 are scalar values")
        };
    }
    out
}

/// A byte-level BPE tokenizer compiled for fast encoding; see the module docs.
pub struct ByteLevelBpe {
    /// Identifies this encoder's entries in the per-thread word caches.
    key: u64,
    pattern: Pattern,
    add_prefix_space: bool,
    nfc: bool,
    byte_ids: [u32; 256],
    /// `(left << 32 | right)` -> `(rank, merged id)`.
    merges: FxHashMap<u64, (u32, u32)>,
    /// Byte string -> id of every vocabulary token, when the model has `ignore_merges`.
    whole_words: Option<FxHashMap<Box<[u8]>, u32>>,
    raw_added: Option<DoubleArrayAhoCorasick<u32>>,
    norm_added: Option<DoubleArrayAhoCorasick<u32>>,
    classes: &'static ClassTable,
}

impl std::fmt::Debug for ByteLevelBpe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByteLevelBpe")
            .field("pattern", &self.pattern)
            .field("nfc", &self.nfc)
            .field("merges", &self.merges.len())
            .finish()
    }
}

#[derive(Clone, Copy)]
struct Symbol {
    id: u32,
    prev: i32,
    next: i32,
    alive: bool,
}

struct ThreadCache {
    key: u64,
    words: FxHashMap<Box<[u8]>, Box<[u32]>>,
    symbols: Vec<Symbol>,
    heap: BinaryHeap<Reverse<(u32, u32, u32)>>,
}

thread_local! {
    static CACHE: RefCell<ThreadCache> = RefCell::new(ThreadCache {
        key: 0,
        words: FxHashMap::default(),
        symbols: Vec::new(),
        heap: BinaryHeap::new(),
    });
}

#[inline]
fn pair(a: u32, b: u32) -> u64 {
    ((a as u64) << 32) | b as u64
}

/// Whether a piece may change under NFC: only code points from U+0300 on can (every UTF-8
/// lead byte below 0xCC encodes a code point below U+0300; none of those decomposes,
/// composes with a neighbour or is excluded from composition).
#[inline]
fn may_need_nfc(s: &str) -> bool {
    s.bytes().any(|b| b >= 0xCC)
}

fn automaton(patterns: Vec<(String, u32)>) -> Result<Option<DoubleArrayAhoCorasick<u32>>, String> {
    if patterns.is_empty() {
        return Ok(None);
    }
    DoubleArrayAhoCorasickBuilder::new()
        .match_kind(MatchKind::LeftmostLongest)
        .build_with_values(patterns)
        .map(Some)
        .map_err(|e| format!("its added tokens do not form an automaton ({e})"))
}

impl ByteLevelBpe {
    /// Compile `tok`, or explain (one clause, for the manifest and logs) why it is not a
    /// byte-level BPE this encoder reproduces exactly. O(vocabulary + merges).
    pub fn from_tokenizer(tok: &Tokenizer) -> Result<Self, String> {
        let bpe = match tok.get_model() {
            ModelWrapper::BPE(b) => b,
            _ => return Err("its model is not BPE".into()),
        };
        let model =
            serde_json::to_value(bpe).map_err(|e| format!("cannot read its model ({e})"))?;
        match model["dropout"].as_f64() {
            None | Some(0.0) => {}
            Some(_) => return Err("its BPE uses dropout".into()),
        }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if !model[key].is_null() {
                return Err(format!("its BPE sets {key}"));
            }
        }
        let ignore_merges = model["ignore_merges"].as_bool().unwrap_or(false);

        let nfc = match tok.get_normalizer() {
            None => false,
            Some(NormalizerWrapper::NFC(_)) => true,
            Some(_) => return Err("its normalizer is neither none nor NFC".into()),
        };
        let (pattern, add_prefix_space) = match tok.get_pre_tokenizer() {
            Some(PreTokenizerWrapper::ByteLevel(bl)) if bl.use_regex => {
                (Pattern::Gpt2, bl.add_prefix_space)
            }
            Some(PreTokenizerWrapper::Sequence(seq)) => match seq.as_ref() {
                [PreTokenizerWrapper::Split(sp), PreTokenizerWrapper::ByteLevel(bl)]
                    if !bl.use_regex
                        && !bl.add_prefix_space
                        && !sp.invert
                        && sp.behavior == SplitDelimiterBehavior::Isolated =>
                {
                    match &sp.pattern {
                        SplitPattern::Regex(r) => (
                            Pattern::from_regex(r).ok_or("its split regex is not a known one")?,
                            false,
                        ),
                        SplitPattern::String(_) => {
                            return Err("its split pattern is a string, not a known regex".into())
                        }
                    }
                }
                _ => return Err("its pre-tokenizer sequence is not Split + ByteLevel".into()),
            },
            _ => return Err("its pre-tokenizer is not byte-level".into()),
        };

        let vocab = model["vocab"]
            .as_object()
            .ok_or("its BPE has no vocabulary")?;
        let symbols = byte_symbols();
        let mut unsymbol: FxHashMap<char, u8> = FxHashMap::default();
        for (b, c) in symbols.iter().enumerate() {
            unsymbol.insert(*c, b as u8);
        }
        let id_of = |t: &str| vocab.get(t).and_then(|v| v.as_u64()).map(|v| v as u32);
        let mut byte_ids = [0u32; 256];
        for (b, c) in symbols.iter().enumerate() {
            byte_ids[b] = id_of(&c.to_string())
                .ok_or_else(|| format!("its vocabulary lacks the byte symbol for 0x{b:02x}"))?;
        }
        let whole_words = ignore_merges.then(|| {
            vocab
                .iter()
                .filter_map(|(t, id)| {
                    let bytes: Option<Vec<u8>> =
                        t.chars().map(|c| unsymbol.get(&c).copied()).collect();
                    Some((bytes?.into_boxed_slice(), id.as_u64()? as u32))
                })
                .collect()
        });
        let mut merges = FxHashMap::default();
        let list = model["merges"].as_array().ok_or("its BPE has no merges")?;
        merges.reserve(list.len());
        for (rank, m) in list.iter().enumerate() {
            let (a, b) = match m.as_array().map(|v| v.as_slice()) {
                Some([a, b]) => (a.as_str().unwrap_or(""), b.as_str().unwrap_or("")),
                _ => return Err("its merges are not pairs".into()),
            };
            match (id_of(a), id_of(b), id_of(&format!("{a}{b}"))) {
                (Some(x), Some(y), Some(z)) => {
                    merges.insert(pair(x, y), (rank as u32, z));
                }
                _ => return Err(format!("its merge {a:?} {b:?} is not in its vocabulary")),
            }
        }

        if tok.get_encode_special_tokens() {
            return Err("it has encode_special_tokens set".into());
        }
        let added = tok.get_added_vocabulary();
        let (mut raw, mut norm) = (Vec::new(), Vec::new());
        for (id, t) in tok.get_added_tokens_decoder() {
            if t.single_word || t.lstrip || t.rstrip {
                return Err(format!(
                    "its added token {:?} sets single_word, lstrip or rstrip",
                    t.content
                ));
            }
            if t.content.is_empty() {
                continue;
            }
            if t.normalized {
                norm.push((added.simple_id_to_token(id).unwrap_or(t.content), id));
            } else {
                raw.push((t.content, id));
            }
        }
        static KEYS: AtomicU64 = AtomicU64::new(1);
        let enc = ByteLevelBpe {
            key: KEYS.fetch_add(1, Ordering::Relaxed),
            pattern,
            add_prefix_space,
            nfc,
            byte_ids,
            merges,
            whole_words,
            raw_added: automaton(raw.clone())?,
            norm_added: automaton(norm.clone())?,
            classes: classes(),
        };
        enc.self_check(tok, raw.iter().chain(&norm).map(|(t, _)| t.as_str()))?;
        Ok(enc)
    }

    /// Encode a sample both ways; any difference disqualifies this encoder.
    fn self_check<'a>(
        &self,
        tok: &Tokenizer,
        added: impl Iterator<Item = &'a str>,
    ) -> Result<(), String> {
        let mut sample = String::from(
            "Hello world! It's 2024; we're   testing\n\n  the tokenizer's\t\tedge-cases: don't, \
             WON'T, I'LL, she'D.\r\n  1234567 ٣٤٥ ½\u{3000}日本語のテキスト 😀😀 naïve cafe\u{301} \
             ſ 'ſ «quotes» \"x\"   \n\t \n x",
        );
        for a in added {
            sample.push_str(a);
            sample.push_str(" a");
            sample.push_str(a);
            sample.push('\n');
        }
        for text in [sample.as_str(), " leading", "", "trailing  "] {
            let want = tok
                .encode_fast(text, false)
                .map_err(|e| format!("tokenizers failed on the self-check sample ({e})"))?;
            let mut got = Vec::new();
            self.encode_into(text, &mut got);
            if got != want.get_ids() {
                return Err("its ids differ from tokenizers' on the self-check sample".into());
            }
        }
        Ok(())
    }

    /// Append the ids of `text` (no special tokens added) to `out`; see the module docs.
    pub fn encode_into(&self, text: &str, out: &mut Vec<u32>) {
        self.split_added(&self.raw_added, text, out, &mut |this, piece, out| {
            let normalized: Cow<'_, str> = if this.nfc && may_need_nfc(piece) {
                Cow::Owned(piece.nfc().map(|(c, _)| c).collect())
            } else {
                Cow::Borrowed(piece)
            };
            this.split_added(&this.norm_added, &normalized, out, &mut |this, p, out| {
                this.encode_plain(p, out)
            });
        });
    }

    /// Call `plain` on the non-empty stretches between added-token matches, push the matches.
    #[inline]
    fn split_added(
        &self,
        ac: &Option<DoubleArrayAhoCorasick<u32>>,
        text: &str,
        out: &mut Vec<u32>,
        plain: &mut dyn FnMut(&Self, &str, &mut Vec<u32>),
    ) {
        let Some(ac) = ac else {
            if !text.is_empty() {
                plain(self, text, out);
            }
            return;
        };
        let mut prev = 0;
        for m in ac.leftmost_find_iter(text) {
            if m.start() > prev {
                plain(self, &text[prev..m.start()], out);
            }
            out.push(m.value());
            prev = m.end();
        }
        if prev < text.len() {
            plain(self, &text[prev..], out);
        }
    }

    fn encode_plain(&self, text: &str, out: &mut Vec<u32>) {
        let prefixed;
        let text = if self.add_prefix_space && !text.starts_with(' ') {
            prefixed = format!(" {text}");
            prefixed.as_str()
        } else {
            text
        };
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            if c.key != self.key {
                c.words.clear();
                c.key = self.key;
            }
            self.pattern.split(text, self.classes, |w| {
                self.encode_word(w.as_bytes(), out, &mut c)
            });
        });
    }

    #[inline]
    fn encode_word(&self, w: &[u8], out: &mut Vec<u32>, c: &mut ThreadCache) {
        if w.len() == 1 {
            out.push(self.byte_ids[w[0] as usize]);
            return;
        }
        if let Some(id) = self.whole_words.as_ref().and_then(|m| m.get(w)) {
            out.push(*id);
            return;
        }
        if let Some(ids) = c.words.get(w) {
            out.extend_from_slice(ids);
            return;
        }
        let start = out.len();
        self.merge_word(w, out, c);
        if w.len() <= CACHE_WORD_BYTES {
            if c.words.len() >= CACHE_WORDS {
                c.words.clear();
            }
            c.words.insert(w.into(), out[start..].into());
        }
    }

    /// `tokenizers`' `Word::merge_all`: merge the lowest-ranked adjacent pair, leftmost
    /// first, until no adjacent pair has a merge. O(L log L).
    fn merge_word(&self, w: &[u8], out: &mut Vec<u32>, c: &mut ThreadCache) {
        let ThreadCache {
            symbols: s, heap, ..
        } = c;
        let n = w.len();
        s.clear();
        heap.clear();
        for (i, &b) in w.iter().enumerate() {
            s.push(Symbol {
                id: self.byte_ids[b as usize],
                prev: i as i32 - 1,
                next: if i + 1 < n { i as i32 + 1 } else { -1 },
                alive: true,
            });
        }
        for i in 0..n - 1 {
            if let Some(&(rank, id)) = self.merges.get(&pair(s[i].id, s[i + 1].id)) {
                heap.push(Reverse((rank, i as u32, id)));
            }
        }
        while let Some(Reverse((_, pos, new_id))) = heap.pop() {
            let p = pos as usize;
            if !s[p].alive || s[p].next < 0 {
                continue;
            }
            let nx = s[p].next as usize;
            // Skip entries made stale by an earlier merge.
            match self.merges.get(&pair(s[p].id, s[nx].id)) {
                Some(&(_, id)) if id == new_id => {}
                _ => continue,
            }
            s[p].id = new_id;
            s[p].next = s[nx].next;
            s[nx].alive = false;
            let after = s[nx].next;
            if after >= 0 {
                s[after as usize].prev = p as i32;
            }
            if s[p].prev >= 0 {
                let pv = s[p].prev as usize;
                if let Some(&(rank, id)) = self.merges.get(&pair(s[pv].id, s[p].id)) {
                    heap.push(Reverse((rank, pv as u32, id)));
                }
            }
            if s[p].next >= 0 {
                let nn = s[p].next as usize;
                if let Some(&(rank, id)) = self.merges.get(&pair(s[p].id, s[nn].id)) {
                    heap.push(Reverse((rank, pos, id)));
                }
            }
        }
        out.extend(s.iter().filter(|x| x.alive).map(|x| x.id));
    }
}

#[cfg(test)]
mod tests;
