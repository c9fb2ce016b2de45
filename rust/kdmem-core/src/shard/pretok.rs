//! The pre-tokenizers of byte-level BPE tokenizers, written out as hand-made scanners.
//!
//! A Hugging Face byte-level BPE tokenizer first splits text with a regular expression
//! (Oniguruma, through the `tokenizers` crate); each piece is then BPE-encoded on its own.
//! The regex engine is the slow part, so the patterns used by the families kdmem accelerates
//! are spelled out here as scanners that return exactly the same pieces:
//!
//! - [`Pattern::Gpt2`] is [`GPT2_REGEX`] (GPT-2, GPT-NeoX/Pythia: the `ByteLevel`
//!   pre-tokenizer with `use_regex: true`);
//! - [`Pattern::Cl100k`] is [`CL100K_REGEX`] (Llama-3, OLMo-2: a `Split` pre-tokenizer) or,
//!   with single numbers, [`QWEN_REGEX`] (Qwen-2/Qwen-3).
//!
//! **Exactness.** The character classes (`\p{L}`, `\p{N}`, `\s`) are not taken from Rust's
//! Unicode tables but read out of Oniguruma itself, the engine `tokenizers` uses, once per
//! process ([`classes`], 1.1 MB table, built in about 0.1 s): the scanners agree with the
//! regex on every code point whatever Unicode version either side ships. The case-insensitive
//! contractions accept exactly what Oniguruma's case folding accepts (`ſ` U+017F folds to
//! `s`; tested over every code point). The scanners are property-tested against the regex
//! (`shard::pretok::tests`).
//!
//! **Cost.** O(length of the text), one table lookup per character; no allocation.

use std::sync::OnceLock;

/// Character class of a code point, as the patterns see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Class {
    /// `\p{L}`.
    Letter = 0,
    /// `\p{N}`.
    Number = 1,
    /// `\s` other than `\r` and `\n`.
    Space = 2,
    /// `\r` or `\n`.
    Newline = 3,
    /// Everything else (`[^\s\p{L}\p{N}]`).
    Other = 4,
}

const CLASSES: [Class; 5] = [
    Class::Letter,
    Class::Number,
    Class::Space,
    Class::Newline,
    Class::Other,
];

/// The class of every code point (index = scalar value; surrogates are `Other`).
pub struct ClassTable {
    table: Vec<u8>,
}

impl ClassTable {
    /// Class of `c`.
    #[inline]
    pub fn of(&self, c: u32) -> Class {
        CLASSES[self.table[c as usize] as usize]
    }

    fn build() -> Self {
        let mut table = vec![Class::Other as u8; 0x11_0000];
        let all: String = (0u32..0x11_0000).filter_map(char::from_u32).collect();
        // Later classes win; the three sets are disjoint (checked by a test).
        for (pattern, class) in [
            (r"\s+", Class::Space),
            (r"\p{N}+", Class::Number),
            (r"\p{L}+", Class::Letter),
        ] {
            let re = onig::Regex::new(pattern).expect("a valid constant pattern");
            for (s, e) in re.find_iter(&all) {
                for c in all[s..e].chars() {
                    table[c as usize] = class as u8;
                }
            }
        }
        table['\r' as usize] = Class::Newline as u8;
        table['\n' as usize] = Class::Newline as u8;
        ClassTable { table }
    }
}

/// The process-wide class table (built on first use from Oniguruma; see the module docs).
pub fn classes() -> &'static ClassTable {
    static T: OnceLock<ClassTable> = OnceLock::new();
    T.get_or_init(ClassTable::build)
}

/// The split patterns kdmem implements (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// GPT-2's pattern.
    Gpt2,
    /// The cl100k family; `max_digits` is 3 (`\p{N}{1,3}`, Llama-3, OLMo-2) or 1 (`\p{N}`,
    /// Qwen).
    Cl100k {
        /// Longest run of numbers in one piece.
        max_digits: usize,
    },
}

/// GPT-2's split regex, as `tokenizers` spells it.
pub const GPT2_REGEX: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// The cl100k split regex (Llama-3, OLMo-2).
pub const CL100K_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The Qwen split regex (cl100k with single-number pieces).
pub const QWEN_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

impl Pattern {
    /// The pattern a `Split` pre-tokenizer's regex string denotes, if kdmem implements it.
    pub fn from_regex(regex: &str) -> Option<Self> {
        match regex {
            GPT2_REGEX => Some(Pattern::Gpt2),
            CL100K_REGEX => Some(Pattern::Cl100k { max_digits: 3 }),
            QWEN_REGEX => Some(Pattern::Cl100k { max_digits: 1 }),
            _ => None,
        }
    }

    /// The regex this pattern implements.
    pub fn regex(self) -> &'static str {
        match self {
            Pattern::Gpt2 => GPT2_REGEX,
            Pattern::Cl100k { max_digits: 3 } => CL100K_REGEX,
            Pattern::Cl100k { .. } => QWEN_REGEX,
        }
    }

    /// Call `f` with every piece of `text`, in order; the pieces cover `text` exactly.
    #[inline]
    pub fn split<'t>(self, text: &'t str, t: &ClassTable, mut f: impl FnMut(&'t str)) {
        let s = text.as_bytes();
        let mut i = 0;
        while i < s.len() {
            let e = match self {
                Pattern::Gpt2 => gpt2_piece(s, i, t),
                Pattern::Cl100k { max_digits } => cl100k_piece(s, i, t, max_digits),
            };
            debug_assert!(e > i && text.is_char_boundary(e));
            f(&text[i..e]);
            i = e;
        }
    }
}

/// Class and byte length of the character starting at `s[i]` (`s` is valid UTF-8).
#[inline]
fn class_at(s: &[u8], i: usize, t: &ClassTable) -> (Class, usize) {
    let b0 = s[i] as u32;
    if b0 < 0x80 {
        return (t.of(b0), 1);
    }
    let (c, n) = if b0 < 0xE0 {
        (((b0 & 0x1F) << 6) | (s[i + 1] as u32 & 0x3F), 2)
    } else if b0 < 0xF0 {
        (
            ((b0 & 0x0F) << 12) | ((s[i + 1] as u32 & 0x3F) << 6) | (s[i + 2] as u32 & 0x3F),
            3,
        )
    } else {
        (
            ((b0 & 0x07) << 18)
                | ((s[i + 1] as u32 & 0x3F) << 12)
                | ((s[i + 2] as u32 & 0x3F) << 6)
                | (s[i + 3] as u32 & 0x3F),
            4,
        )
    };
    (t.of(c), n)
}

/// End of the run of `class` characters starting at `i`.
#[inline]
fn run(s: &[u8], mut i: usize, class: Class, t: &ClassTable) -> usize {
    while i < s.len() {
        let (c, n) = class_at(s, i, t);
        if c != class {
            break;
        }
        i += n;
    }
    i
}

/// End of the run of `\r`/`\n` starting at `i`.
#[inline]
fn newlines(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && (s[i] == b'\r' || s[i] == b'\n') {
        i += 1;
    }
    i
}

/// Length of a contraction suffix (`s t re ve m ll d`) at `s[i..]` (after the apostrophe),
/// case-sensitive or with Oniguruma's case folding.
#[inline]
fn contraction(s: &[u8], i: usize, fold: bool) -> Option<usize> {
    let at = |k: usize| s.get(i + k).copied();
    let is = |k: usize, lower: u8| match at(k) {
        Some(b) => b == lower || (fold && b == lower.to_ascii_uppercase()),
        None => false,
    };
    if is(0, b's') || is(0, b't') || is(0, b'm') || is(0, b'd') {
        return Some(1);
    }
    // U+017F LATIN SMALL LETTER LONG S case-folds to `s`.
    if fold && at(0) == Some(0xC5) && at(1) == Some(0xBF) {
        return Some(2);
    }
    if (is(0, b'r') && is(1, b'e')) || (is(0, b'v') && is(1, b'e')) || (is(0, b'l') && is(1, b'l'))
    {
        return Some(2);
    }
    None
}

/// The whitespace run starting at `i`: `(end, start of its last character, end of its last
/// newline)`.
#[inline]
fn whitespace(s: &[u8], i: usize, t: &ClassTable) -> (usize, usize, Option<usize>) {
    let (mut j, mut last, mut nl) = (i, i, None);
    while j < s.len() {
        let (c, n) = class_at(s, j, t);
        match c {
            Class::Space => {}
            Class::Newline => nl = Some(j + n),
            _ => break,
        }
        last = j;
        j += n;
    }
    (j, last, nl)
}

/// `\s+(?!\S)|\s+` on the whitespace run `(end, last)` starting at `i`.
#[inline]
fn trailing_space(s: &[u8], i: usize, end: usize, last: usize) -> usize {
    if end == s.len() || last == i {
        end
    } else {
        last
    }
}

fn gpt2_piece(s: &[u8], i: usize, t: &ClassTable) -> usize {
    if s[i] == b'\'' {
        if let Some(n) = contraction(s, i + 1, false) {
            return i + 1 + n;
        }
    }
    let (c, n) = class_at(s, i, t);
    match c {
        Class::Letter | Class::Number | Class::Other => run(s, i + n, c, t),
        Class::Space | Class::Newline => {
            if s[i] == b' ' && i + 1 < s.len() {
                let (c2, n2) = class_at(s, i + 1, t);
                if matches!(c2, Class::Letter | Class::Number | Class::Other) {
                    return run(s, i + 1 + n2, c2, t);
                }
            }
            let (end, last, _) = whitespace(s, i, t);
            trailing_space(s, i, end, last)
        }
    }
}

fn cl100k_piece(s: &[u8], i: usize, t: &ClassTable, max_digits: usize) -> usize {
    if s[i] == b'\'' {
        if let Some(n) = contraction(s, i + 1, true) {
            return i + 1 + n;
        }
    }
    let (c, n) = class_at(s, i, t);
    match c {
        Class::Letter => return run(s, i + n, Class::Letter, t),
        Class::Number => {
            let mut j = i + n;
            for _ in 1..max_digits {
                if j >= s.len() {
                    break;
                }
                let (c2, n2) = class_at(s, j, t);
                if c2 != Class::Number {
                    break;
                }
                j += n2;
            }
            return j;
        }
        _ => {}
    }
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if matches!(c, Class::Space | Class::Other) && i + n < s.len() {
        let (c2, n2) = class_at(s, i + n, t);
        if c2 == Class::Letter {
            return run(s, i + n + n2, Class::Letter, t);
        }
    }
    //  ?[^\s\p{L}\p{N}]+[\r\n]*
    if s[i] == b' ' && i + 1 < s.len() {
        let (c2, n2) = class_at(s, i + 1, t);
        if c2 == Class::Other {
            return newlines(s, run(s, i + 1 + n2, Class::Other, t));
        }
    }
    if c == Class::Other {
        return newlines(s, run(s, i + n, Class::Other, t));
    }
    // \s*[\r\n]+ | \s+(?!\S) | \s+
    let (end, last, nl) = whitespace(s, i, t);
    match nl {
        Some(e) => e,
        None => trailing_space(s, i, end, last),
    }
}

#[cfg(test)]
mod tests;
