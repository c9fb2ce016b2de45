//! The scanners against the regexes they replace, run by Oniguruma (the oracle).

use proptest::prelude::*;

use super::*;

fn by_regex(regex: &str, text: &str) -> Vec<String> {
    let re = onig::Regex::new(regex).unwrap();
    let mut out = Vec::new();
    let mut prev = 0;
    for (s, e) in re.find_iter(text) {
        if s != prev {
            out.push(text[prev..s].to_string());
        }
        out.push(text[s..e].to_string());
        prev = e;
    }
    if prev != text.len() {
        out.push(text[prev..].to_string());
    }
    out
}

fn by_scanner(p: Pattern, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    p.split(text, classes(), |w| out.push(w.to_string()));
    out
}

const PATTERNS: [Pattern; 3] = [
    Pattern::Gpt2,
    Pattern::Cl100k { max_digits: 3 },
    Pattern::Cl100k { max_digits: 1 },
];

/// Characters that exercise every branch: each class, the contraction letters in both cases
/// and their case-folding relatives, multi-byte whitespace and numbers, marks, emoji.
const TRICKY: &[char] = &[
    'a',
    'b',
    'Z',
    'é',
    '\u{301}',
    's',
    'S',
    't',
    'T',
    'r',
    'R',
    'e',
    'E',
    'v',
    'V',
    'm',
    'M',
    'l',
    'L',
    'd',
    'D',
    'ſ',
    'K',
    'ß',
    'ẞ',
    '\'',
    '’',
    '0',
    '7',
    '٣',
    '½',
    'Ⅻ',
    '²',
    ' ',
    ' ',
    ' ',
    ' ',
    ' ',
    ' ',
    '\t',
    '\n',
    '\n',
    '\r',
    '\u{b}',
    '\u{c}',
    '\u{85}',
    '\u{a0}',
    '\u{2009}',
    '\u{2028}',
    '\u{3000}',
    '\u{200b}',
    '.',
    ',',
    '!',
    '-',
    '_',
    '#',
    '中',
    '文',
    'ん',
    '😀',
    '\u{e000}',
    '\u{10ffff}',
    '\u{0}',
    '\u{7f}',
    'ǅ',
    'ʰ',
];

fn tricky_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            8 => prop::sample::select(TRICKY),
            1 => any::<char>(),
        ],
        0..80,
    )
    .prop_map(|v| v.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn scanners_split_like_the_regex(text in tricky_text()) {
        for p in PATTERNS {
            prop_assert_eq!(by_scanner(p, &text), by_regex(p.regex(), &text), "{:?} on {:?}", p, text);
        }
    }

    #[test]
    fn scanners_split_random_unicode_like_the_regex(text in any::<String>()) {
        for p in PATTERNS {
            prop_assert_eq!(by_scanner(p, &text), by_regex(p.regex(), &text), "{:?} on {:?}", p, text);
        }
    }
}

#[test]
fn real_text_splits_like_the_regex() {
    let text = "Hello world! It's 2024; we're   testing\n\n  the tokenizer's\t\tedge-cases: \
                don't, WON'T, I'LL, she'D.\r\n  123456789 ٣٤٥ ½\u{3000}日本語のテキスト 😀😀 \
                naïve café — «quotes» 'single' \"double\"   \n\t \n";
    for p in PATTERNS {
        assert_eq!(by_scanner(p, text), by_regex(p.regex(), text), "{p:?}");
    }
}

#[test]
fn classes_are_disjoint_and_match_oniguruma_everywhere() {
    let t = classes();
    let check = |pattern: &str, want: &dyn Fn(Class) -> bool| {
        let re = onig::Regex::new(&format!("^{pattern}$")).unwrap();
        let mut buf = [0u8; 4];
        for c in (0u32..0x11_0000).filter_map(char::from_u32).step_by(7) {
            let s = c.encode_utf8(&mut buf);
            assert_eq!(
                re.is_match(s),
                want(t.of(c as u32)),
                "{pattern} on U+{:04X}",
                c as u32
            );
        }
    };
    check(r"\p{L}", &|c| c == Class::Letter);
    check(r"\p{N}", &|c| c == Class::Number);
    check(r"\s", &|c| matches!(c, Class::Space | Class::Newline));
    check(r"[\r\n]", &|c| c == Class::Newline);
}

#[test]
fn case_folded_contractions_match_oniguruma_on_every_code_point() {
    let re = onig::Regex::new(r"\A(?:(?i:'s|'t|'re|'ve|'m|'ll|'d))").unwrap();
    let exact = onig::Regex::new(r"\A(?:'s|'t|'re|'ve|'m|'ll|'d)").unwrap();
    for c in (0u32..0x11_0000).filter_map(char::from_u32) {
        for text in [
            format!("'{c}x"),
            format!("'{c}e"),
            format!("'{c}l"),
            format!("'r{c}"),
            format!("'v{c}"),
            format!("'l{c}"),
        ] {
            let want = re.find(&text).map(|(_, e)| e - 1);
            let got = contraction(text.as_bytes(), 1, true);
            assert_eq!(got, want, "(?i) contraction on {text:?}");
            let want = exact.find(&text).map(|(_, e)| e - 1);
            let got = contraction(text.as_bytes(), 1, false);
            assert_eq!(got, want, "contraction on {text:?}");
        }
    }
}
