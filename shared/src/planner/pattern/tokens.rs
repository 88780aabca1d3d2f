//! Tokens: the prompt as words, numbers, quoted strings and symbols, each with its byte
//! range in the prompt, and the phrase-matching helpers every matcher uses.

use std::ops::Range;

/// What a token is.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Kind {
    /// Letters, with apostrophes between letters ("what's"); lowercased, `’` read as `'`.
    Word(String),
    /// A number as the calculator reads it: thousands commas removed, decimals and
    /// exponent kept.
    Num(String),
    /// A quoted string; the byte range of its inside in the prompt.
    Quoted(Range<usize>),
    /// Any other character (operators, punctuation, emoji, a new line).
    Sym(char),
}

/// One token: its kind, its byte range in the prompt, and whether whitespace precedes it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Tok {
    pub(super) kind: Kind,
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) spaced: bool,
}

/// Split `src` into tokens. Never fails: every character ends up in some token or is
/// whitespace.
pub(super) fn tokenize(src: &str) -> Vec<Tok> {
    let chars: Vec<(usize, char)> = src.char_indices().collect();
    let at = |i: usize| chars.get(i).map(|&(_, c)| c);
    let byte = |i: usize| chars.get(i).map_or(src.len(), |&(b, _)| b);
    let digit = |i: usize| at(i).is_some_and(|c| c.is_ascii_digit());
    let mut toks = Vec::new();
    let mut spaced = false;
    let mut i = 0;
    while let Some(c) = at(i) {
        if c.is_whitespace() && c != '\n' {
            spaced = true;
            i += 1;
            continue;
        }
        let (kind, next) = if c.is_alphabetic() {
            let mut j = i;
            while let Some(d) = at(j) {
                let apostrophe =
                    (d == '\'' || d == '’') && j > i && at(j + 1).is_some_and(char::is_alphabetic);
                if d.is_alphabetic() || apostrophe {
                    j += 1;
                } else {
                    break;
                }
            }
            let word: String = chars
                .get(i..j)
                .unwrap_or(&[])
                .iter()
                .map(|&(_, d)| if d == '’' { '\'' } else { d })
                .collect();
            (Kind::Word(word.to_lowercase()), j)
        } else if c.is_ascii_digit() || (c == '.' && digit(i + 1) && !(i > 0 && digit(i - 1))) {
            let mut j = i;
            let mut text = String::new();
            while digit(j) {
                text.push(at(j).unwrap_or('0'));
                j += 1;
            }
            // Thousands separators: ",ddd" not followed by another digit.
            while at(j) == Some(',')
                && digit(j + 1)
                && digit(j + 2)
                && digit(j + 3)
                && !digit(j + 4)
            {
                for k in j + 1..j + 4 {
                    text.push(at(k).unwrap_or('0'));
                }
                j += 4;
            }
            if at(j) == Some('.') && digit(j + 1) {
                text.push('.');
                j += 1;
                while digit(j) {
                    text.push(at(j).unwrap_or('0'));
                    j += 1;
                }
            }
            if matches!(at(j), Some('e' | 'E')) {
                let sign = matches!(at(j + 1), Some('+' | '-'));
                let first = if sign { j + 2 } else { j + 1 };
                if digit(first) {
                    for k in j..first {
                        text.push(at(k).unwrap_or('e'));
                    }
                    j = first;
                    while digit(j) {
                        text.push(at(j).unwrap_or('0'));
                        j += 1;
                    }
                }
            }
            (Kind::Num(text), j)
        } else if let Some(close) = closing_quote(&chars, i) {
            (Kind::Quoted(byte(i + 1)..byte(close)), close + 1)
        } else {
            (Kind::Sym(c), i + 1)
        };
        toks.push(Tok {
            kind,
            start: byte(i),
            end: byte(next),
            spaced,
        });
        spaced = c == '\n';
        i = next.max(i + 1);
    }
    toks
}

/// If `chars[i]` opens a quote that is closed later, the index of the closing quote. A
/// single quote opens only when not preceded by a letter or digit (so "mom's" and "kids'"
/// are not quotes), and closes only when not followed by one.
pub(super) fn closing_quote(chars: &[(usize, char)], i: usize) -> Option<usize> {
    let c = chars.get(i)?.1;
    let after_alnum = i > 0 && chars.get(i - 1).is_some_and(|&(_, p)| p.is_alphanumeric());
    let (closers, single): (&[char], bool) = match c {
        '"' | '“' | '”' => (&['"', '”', '“'], false),
        '\'' | '‘' | '’' if !after_alnum => (&['\'', '’', '‘'], true),
        '`' => (&['`'], false),
        '«' => (&['»'], false),
        _ => return None,
    };
    let mut j = i + 1;
    while let Some(&(_, d)) = chars.get(j) {
        let followed_by_alnum = chars.get(j + 1).is_some_and(|&(_, n)| n.is_alphanumeric());
        if closers.contains(&d) && !(single && followed_by_alnum) {
            return (j > i + 1).then_some(j);
        }
        j += 1;
    }
    None
}

/// The prompt text a run of tokens covers, exactly as typed.
pub(super) fn text<'s>(src: &'s str, toks: &[Tok]) -> &'s str {
    match (toks.first(), toks.last()) {
        (Some(a), Some(b)) => src.get(a.start..b.end).unwrap_or(""),
        _ => "",
    }
}

/// The inside of a token that is a quoted string.
pub(super) fn quoted_inside<'s>(src: &'s str, tok: &Tok) -> Option<&'s str> {
    match &tok.kind {
        Kind::Quoted(inner) => src.get(inner.clone()),
        _ => None,
    }
}

/// Whether a token is the keyword `kw`: a word, or a one-character symbol.
pub(super) fn is_kw(tok: &Tok, kw: &str) -> bool {
    match &tok.kind {
        Kind::Word(w) => w == kw,
        Kind::Sym(c) => {
            let mut k = kw.chars();
            k.next() == Some(*c) && k.next().is_none()
        }
        _ => false,
    }
}

/// The number of tokens `phrase` (space-separated keywords) covers at the start of `toks`.
pub(super) fn phrase_len(toks: &[Tok], phrase: &str) -> Option<usize> {
    let mut n = 0;
    for kw in phrase.split(' ') {
        if !toks.get(n).is_some_and(|t| is_kw(t, kw)) {
            return None;
        }
        n += 1;
    }
    Some(n)
}

/// The longest of `phrases` at the start of `toks`, as a token count.
pub(super) fn prefix_len(toks: &[Tok], phrases: &[&str]) -> Option<usize> {
    phrases.iter().filter_map(|p| phrase_len(toks, p)).max()
}

/// `toks` without the longest of `phrases` at its start.
pub(super) fn strip_prefix<'t>(toks: &'t [Tok], phrases: &[&str]) -> Option<&'t [Tok]> {
    prefix_len(toks, phrases).and_then(|n| toks.get(n..))
}

/// `toks` without any number of `phrases` at its start.
pub(super) fn strip_prefixes<'t>(mut toks: &'t [Tok], phrases: &[&str]) -> &'t [Tok] {
    while let Some(rest) = strip_prefix(toks, phrases) {
        toks = rest;
    }
    toks
}

/// The longest of `phrases` at the end of `toks`, as a token count.
pub(super) fn suffix_len(toks: &[Tok], phrases: &[&str]) -> Option<usize> {
    phrases
        .iter()
        .filter_map(|p| {
            let n = p.split(' ').count();
            let start = toks.len().checked_sub(n)?;
            phrase_len(toks.get(start..)?, p)
        })
        .max()
}

/// `toks` without the longest of `phrases` at its end.
pub(super) fn strip_suffix<'t>(toks: &'t [Tok], phrases: &[&str]) -> Option<&'t [Tok]> {
    suffix_len(toks, phrases).and_then(|n| toks.get(..toks.len() - n))
}

/// `toks` without any number of `phrases` at its end.
pub(super) fn strip_suffixes<'t>(mut toks: &'t [Tok], phrases: &[&str]) -> &'t [Tok] {
    while let Some(rest) = strip_suffix(toks, phrases) {
        toks = rest;
    }
    toks
}

/// Whether `toks` is exactly one of `phrases`.
pub(super) fn is_exactly(toks: &[Tok], phrases: &[&str]) -> bool {
    phrases
        .iter()
        .any(|p| phrase_len(toks, p) == Some(toks.len()))
}

/// The positive integer a token run starts with (digits or number words), and its length.
pub(super) fn integer_at(toks: &[Tok]) -> Option<(u64, usize)> {
    match &toks.first()?.kind {
        Kind::Num(n) if n.bytes().all(|b| b.is_ascii_digit()) => Some((n.parse().ok()?, 1)),
        Kind::Word(_) => number_words(toks),
        _ => None,
    }
}

/// A number written in words ("seven", "twenty-one", "one hundred"), and its token count.
pub(super) fn number_words(toks: &[Tok]) -> Option<(u64, usize)> {
    const UNITS: [&str; 20] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: [&str; 8] = [
        "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    let value_of = |t: &Tok| -> Option<u64> {
        let Kind::Word(w) = &t.kind else { return None };
        let w = w.as_str();
        if let Some(u) = UNITS.iter().position(|x| *x == w) {
            return Some(u as u64);
        }
        TENS.iter()
            .position(|x| *x == w)
            .map(|t| (t as u64 + 2) * 10)
    };
    let (mut total, mut current, mut used) = (0u64, 0u64, 0usize);
    while let Some(tok) = toks.get(used) {
        if let Some(v) = value_of(tok) {
            current = current.saturating_add(v);
            used += 1;
            // "twenty-one"
            if v >= 20
                && toks.get(used).is_some_and(|t| is_kw(t, "-"))
                && toks
                    .get(used + 1)
                    .and_then(value_of)
                    .is_some_and(|u| (1..10).contains(&u))
            {
                current += toks.get(used + 1).and_then(value_of).unwrap_or(0);
                used += 2;
            }
        } else if and_continues_number(toks, used) {
            used += 1;
        } else if used > 0 && is_kw(tok, "hundred") {
            current = current.max(1).saturating_mul(100);
            used += 1;
        } else if used > 0 && (is_kw(tok, "thousand") || is_kw(tok, "million")) {
            let scale = if is_kw(tok, "thousand") {
                1_000
            } else {
                1_000_000
            };
            total = total.saturating_add(current.max(1).saturating_mul(scale));
            current = 0;
            used += 1;
        } else {
            break;
        }
    }
    (used > 0).then_some((total.saturating_add(current), used))
}

/// Whether `toks[i]` is the "and" of "two hundred and five": after a scale word, before
/// a number word.
pub(super) fn and_continues_number(toks: &[Tok], i: usize) -> bool {
    let scale = |t: &Tok| {
        ["hundred", "thousand", "million"]
            .iter()
            .any(|w| is_kw(t, w))
    };
    i > 0
        && toks.get(i).is_some_and(|t| is_kw(t, "and"))
        && toks.get(i - 1).is_some_and(scale)
        && toks.get(i + 1..).and_then(number_words).is_some()
}
