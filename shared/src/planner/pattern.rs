//! The pattern planner: a deterministic, offline planner for the requests people type most.
//!
//! It understands arithmetic (for the `calculator` tool) and the todo list (for the `todo`
//! tool), in any capitalisation, with politeness ("please", "can you ...") and trailing
//! punctuation, combined into compound prompts ("calculate 2+3 and then add the result to my
//! todos"). Anything else is refused with [`PlanError::NotUnderstood`], whose message quotes
//! the part it could not read and says what it does understand.
//!
//! # How a prompt is read
//!
//! 1. `tokenize`: the prompt becomes words (lowercased copies, used only for matching),
//!    numbers, quoted strings and symbols, each with its byte range in the prompt. Titles are
//!    sliced out of the prompt by those ranges, so they keep the user's capitalisation and
//!    punctuation, and no byte offset is ever computed on a lowercased copy.
//! 2. `split`: the prompt is cut into clauses at separators ("and", "then", "after that",
//!    commas, semicolons, sentence ends, new lines), but only where the text after the
//!    separator is itself a complete request. "add a todo to buy milk and eggs" is one
//!    clause; "calculate 2+3 and list todos" is two. Quoted text is one token, so it is
//!    never split.
//! 3. `parse_clause`: each clause goes through the intent matchers in turn: list,
//!    complete, delete, get, add, arithmetic. A todo title that is a calculation in words
//!    ("add the sum of 2 and 3 to my todos") becomes a calculator step and an add that
//!    references it.
//! 4. `build`: intents become steps `s1, s2, ...` in prompt order. References ("the
//!    result", "the sum", "it") are resolved to earlier steps; a step depends on the steps it
//!    references, on every step before the latest "then", and (for the todo store) on every
//!    earlier todo step when either of them writes.
//!
//! Every loop consumes at least one token, so the work is linear in the prompt (quote
//! pairing aside, which is quadratic only in the number of unmatched quotes), and nothing
//! indexes out of bounds: all slicing goes through `get` or through lengths just checked.

use std::collections::BTreeSet;
use std::ops::Range;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{PlanError, Planned, Planner, MAX_STEPS};
use crate::domain::{Plan, PlanStep, PlannerInfo};
use crate::engine::refs::reference_to;
use crate::tools::expr::{self, ExprError};
use crate::tools::Registry;

/// What the pattern planner understands, appended to every "not understood" message.
pub const UNDERSTOOD: &str = "I understand: arithmetic (\"calculate 2+3\", \"what is 10*5\"), \
todos (\"add a todo to buy milk\", \"list my todos\", \"complete todo 3\", \"delete the todo \
'buy milk'\"), combined with \"and\", \"then\", commas or semicolons, and \"the result\" to use \
an earlier answer.";

/// Longest part of a prompt quoted back in an error message, in characters.
const MAX_QUOTE_CHARS: usize = 80;

/// The deterministic, offline planner. See the [module documentation](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct PatternPlanner;

impl PatternPlanner {
    /// Turn `prompt` into a raw (not yet validated) plan whose steps are `s1, s2, ...` in
    /// prompt order. Pure and deterministic.
    pub fn plan_prompt(&self, prompt: &str) -> Result<Plan, PlanError> {
        let toks = tokenize(prompt);
        let clauses = split(prompt, &toks);
        let mut parsed: Vec<(bool, Vec<Intent>)> = Vec::new();
        let mut filler: Option<&str> = None;
        let mut count = 0usize;
        for clause in &clauses {
            let parse = match &clause.parse {
                Some(p) => p.clone(),
                None => parse_clause(prompt, clause.tokens(&toks)),
            };
            match parse {
                Parse::Intents(intents) => {
                    count += intents.len();
                    parsed.push((clause.after_then, intents));
                }
                Parse::Filler => {
                    filler.get_or_insert(text(prompt, clause.tokens(&toks)));
                }
                Parse::Unknown => return Err(explain_failure(prompt, &toks, clause)),
            }
        }
        if parsed.is_empty() {
            return Err(match filler {
                Some(f) => not_understood(f, None),
                None if prompt.trim().is_empty() => PlanError::NotUnderstood(format!(
                    "There is nothing to do: the prompt is empty. {UNDERSTOOD}"
                )),
                None => not_understood(prompt, None),
            });
        }
        if count > MAX_STEPS {
            return Err(PlanError::Invalid(format!(
                "the plan has {count} steps, more than the limit of {MAX_STEPS}"
            )));
        }
        build(parsed)
    }
}

#[async_trait]
impl Planner for PatternPlanner {
    fn name(&self) -> &'static str {
        "pattern"
    }

    async fn plan(&self, prompt: &str, registry: &Registry) -> Result<Planned, PlanError> {
        let mut plan = self.plan_prompt(prompt)?;
        super::validate(&mut plan, registry)?;
        Ok(Planned {
            plan,
            info: PlannerInfo {
                name: "pattern".into(),
                ..Default::default()
            },
            fallback_detail: None,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// The "not understood" error for `part` of a prompt, with an optional hint.
fn not_understood(part: &str, hint: Option<&str>) -> PlanError {
    let part = part.trim();
    let quoted = if part.chars().count() > MAX_QUOTE_CHARS {
        format!(
            "{}...",
            part.chars().take(MAX_QUOTE_CHARS).collect::<String>()
        )
    } else {
        part.to_owned()
    };
    PlanError::NotUnderstood(match hint {
        Some(h) => format!("I don't know how to do \"{quoted}\" ({h}). {UNDERSTOOD}"),
        None => format!("I don't know how to do \"{quoted}\". {UNDERSTOOD}"),
    })
}

/// Explain why `clause` failed: when the clause was merged from several segments and a
/// leading part of it is a request, quote only the part after it.
fn explain_failure(src: &str, toks: &[Tok], clause: &Clause) -> PlanError {
    // Bounded, so a clause merged from thousands of segments stays linear to explain.
    const MAX_TRIES: usize = 16;
    for k in (1..clause.segments.len().min(MAX_TRIES)).rev() {
        let (Some(first), Some(last), Some(bad), Some(end)) = (
            clause.segments.first(),
            clause.segments.get(k - 1),
            clause.segments.get(k),
            clause.segments.last(),
        ) else {
            continue;
        };
        let head = toks.get(first.start..last.end).unwrap_or(&[]);
        if matches!(parse_clause(src, head), Parse::Intents(_)) {
            let rest = toks.get(bad.start..end.end).unwrap_or(&[]);
            return not_understood(text(src, rest), hint(rest));
        }
    }
    let all = clause.tokens(toks);
    not_understood(text(src, all), hint(all))
}

/// A hint for a clause that looks like a todo request but is not one the planner can do.
fn hint(toks: &[Tok]) -> Option<&'static str> {
    let toks = strip_prefixes(toks, LEAD_FILLERS);
    if prefix_len(
        toks,
        &[
            "delete", "remove", "clear", "erase", "complete", "finish", "mark",
        ],
    )
    .is_some()
    {
        return Some(
            "todos are changed one at a time, by number (\"todo 3\") or by title in quotes",
        );
    }
    let add = strip_prefix(toks, ADD_VERBS).map(|r| strip_prefixes(r, ADD_DETS));
    if add.is_some_and(|r| prefix_len(r, TODO_NOUNS).is_some())
        || prefix_len(toks, REMINDER_LEADS).is_some()
    {
        return Some("a todo needs a title, e.g. \"add a todo to buy milk\"");
    }
    None
}

// ---------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------

/// What a token is.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
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
struct Tok {
    kind: Kind,
    start: usize,
    end: usize,
    spaced: bool,
}

/// Split `src` into tokens. Never fails: every character ends up in some token or is
/// whitespace.
fn tokenize(src: &str) -> Vec<Tok> {
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
fn closing_quote(chars: &[(usize, char)], i: usize) -> Option<usize> {
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
fn text<'s>(src: &'s str, toks: &[Tok]) -> &'s str {
    match (toks.first(), toks.last()) {
        (Some(a), Some(b)) => src.get(a.start..b.end).unwrap_or(""),
        _ => "",
    }
}

/// The inside of a token that is a quoted string.
fn quoted_inside<'s>(src: &'s str, tok: &Tok) -> Option<&'s str> {
    match &tok.kind {
        Kind::Quoted(inner) => src.get(inner.clone()),
        _ => None,
    }
}

/// Whether a token is the keyword `kw`: a word, or a one-character symbol.
fn is_kw(tok: &Tok, kw: &str) -> bool {
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
fn phrase_len(toks: &[Tok], phrase: &str) -> Option<usize> {
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
fn prefix_len(toks: &[Tok], phrases: &[&str]) -> Option<usize> {
    phrases.iter().filter_map(|p| phrase_len(toks, p)).max()
}

/// `toks` without the longest of `phrases` at its start.
fn strip_prefix<'t>(toks: &'t [Tok], phrases: &[&str]) -> Option<&'t [Tok]> {
    prefix_len(toks, phrases).and_then(|n| toks.get(n..))
}

/// `toks` without any number of `phrases` at its start.
fn strip_prefixes<'t>(mut toks: &'t [Tok], phrases: &[&str]) -> &'t [Tok] {
    while let Some(rest) = strip_prefix(toks, phrases) {
        toks = rest;
    }
    toks
}

/// The longest of `phrases` at the end of `toks`, as a token count.
fn suffix_len(toks: &[Tok], phrases: &[&str]) -> Option<usize> {
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
fn strip_suffix<'t>(toks: &'t [Tok], phrases: &[&str]) -> Option<&'t [Tok]> {
    suffix_len(toks, phrases).and_then(|n| toks.get(..toks.len() - n))
}

/// `toks` without any number of `phrases` at its end.
fn strip_suffixes<'t>(mut toks: &'t [Tok], phrases: &[&str]) -> &'t [Tok] {
    while let Some(rest) = strip_suffix(toks, phrases) {
        toks = rest;
    }
    toks
}

/// Whether `toks` is exactly one of `phrases`.
fn is_exactly(toks: &[Tok], phrases: &[&str]) -> bool {
    phrases
        .iter()
        .any(|p| phrase_len(toks, p) == Some(toks.len()))
}

/// The positive integer a token run starts with (digits or number words), and its length.
fn integer_at(toks: &[Tok]) -> Option<(u64, usize)> {
    match &toks.first()?.kind {
        Kind::Num(n) if n.bytes().all(|b| b.is_ascii_digit()) => Some((n.parse().ok()?, 1)),
        Kind::Word(_) => number_words(toks),
        _ => None,
    }
}

/// A number written in words ("seven", "twenty-one", "one hundred"), and its token count.
fn number_words(toks: &[Tok]) -> Option<(u64, usize)> {
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
fn and_continues_number(toks: &[Tok], i: usize) -> bool {
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

// ---------------------------------------------------------------------------------------
// Clauses
// ---------------------------------------------------------------------------------------

/// Separator words and whether they order what follows after everything before ("then").
const SEPARATOR_WORDS: &[(&str, bool)] = &[
    ("and", false),
    ("also", false),
    ("then", true),
    ("after that", true),
    ("afterwards", true),
    ("afterward", true),
    ("after which", true),
    ("followed by", true),
    ("once done", true),
    ("when done", true),
    ("once that's done", true),
    ("when that's done", true),
    ("once that is done", true),
    ("when that is done", true),
    ("finally", true),
    ("lastly", true),
    ("next", true),
];

/// The separator starting at `toks[i]`, if any: its token count and whether it is "then".
fn separator_at(toks: &[Tok], i: usize) -> Option<(usize, bool)> {
    let tok = toks.get(i)?;
    match tok.kind {
        Kind::Sym(',' | ';' | '&' | '\n') => return Some((1, false)),
        Kind::Sym('.' | '!' | '?') => {
            let ends = toks.get(i + 1).is_none_or(|n| n.spaced || is_kw(n, "\n"));
            return ends.then_some((1, false));
        }
        _ => {}
    }
    if and_continues_number(toks, i) {
        return None;
    }
    let rest = toks.get(i..)?;
    SEPARATOR_WORDS
        .iter()
        .filter_map(|&(p, then)| phrase_len(rest, p).map(|n| (n, then)))
        .max_by_key(|&(n, _)| n)
}

/// A clause: a run of segments (token ranges between separators) that reads as one
/// request, and whether a "then" came right before it.
#[derive(Debug, Clone)]
struct Clause {
    segments: Vec<Range<usize>>,
    after_then: bool,
    /// How the clause reads, when [`split`] already worked it out.
    parse: Option<Parse>,
}

impl Clause {
    /// All the tokens of the clause, including separators merged into it.
    fn tokens<'t>(&self, toks: &'t [Tok]) -> &'t [Tok] {
        match (self.segments.first(), self.segments.last()) {
            (Some(a), Some(b)) => toks.get(a.start..b.end).unwrap_or(&[]),
            _ => &[],
        }
    }
}

/// Cut the prompt into clauses: at every separator where the following segment is a
/// complete request on its own; elsewhere the separator stays inside the clause (a title
/// like "buy milk and eggs").
fn split(src: &str, toks: &[Tok]) -> Vec<Clause> {
    // Segments between runs of separators, each with whether its run contained "then".
    let mut segments: Vec<(Range<usize>, bool)> = Vec::new();
    let mut i = 0;
    let mut then = false;
    let mut start = None;
    while i < toks.len() {
        if let Some((n, is_then)) = separator_at(toks, i) {
            if let Some(s) = start.take() {
                segments.push((s..i, then));
                then = false;
            }
            then |= is_then;
            i += n.max(1);
        } else {
            start.get_or_insert(i);
            i += 1;
        }
    }
    if let Some(s) = start {
        segments.push((s..toks.len(), then));
    }

    let mut clauses: Vec<Clause> = Vec::new();
    for (range, then) in segments {
        let seg = toks.get(range.clone()).unwrap_or(&[]);
        let Some(current) = clauses.last_mut() else {
            clauses.push(Clause {
                segments: vec![range],
                after_then: then,
                parse: None,
            });
            continue;
        };
        match parse_clause(src, seg) {
            parse @ Parse::Intents(_) => clauses.push(Clause {
                segments: vec![range],
                after_then: then,
                parse: Some(parse),
            }),
            _ => {
                current.segments.push(range);
                current.parse = None;
            }
        }
    }
    if let Some(first) = clauses.first_mut() {
        first.after_then = false;
    }
    clauses
}

// ---------------------------------------------------------------------------------------
// Intents
// ---------------------------------------------------------------------------------------

/// What an earlier-result phrase asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefKind {
    /// "the result", "the answer", "it": the latest calculation.
    Any,
    /// "the sum" / "the total": the latest addition, else the latest calculation.
    Sum,
    /// "the product".
    Product,
    /// "the difference".
    Difference,
    /// "the quotient".
    Quotient,
    /// "it" / "the todo" in a todo command: the latest todo added or fetched.
    Todo,
    /// The step just before (a calculation planned for the title of the todo after it).
    Previous,
}

impl RefKind {
    /// The top-level operator a calculation must have to be preferred.
    fn operator(self) -> Option<char> {
        match self {
            RefKind::Sum => Some('+'),
            RefKind::Product => Some('*'),
            RefKind::Difference => Some('-'),
            RefKind::Quotient => Some('/'),
            RefKind::Any | RefKind::Todo | RefKind::Previous => None,
        }
    }
}

/// A phrase referring to an earlier step, as typed.
#[derive(Debug, Clone, PartialEq)]
struct RefUse {
    kind: RefKind,
    phrase: String,
}

/// A part of an arithmetic expression.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Ref(RefUse),
}

/// An arithmetic expression that may name earlier results.
#[derive(Debug, Clone, Default, PartialEq)]
struct Expr {
    pieces: Vec<Piece>,
}

impl Expr {
    fn push_text(&mut self, s: &str) {
        if let Some(Piece::Text(t)) = self.pieces.last_mut() {
            t.push_str(s);
        } else {
            self.pieces.push(Piece::Text(s.to_owned()));
        }
    }

    fn push_ref(&mut self, r: RefUse) {
        self.pieces.push(Piece::Ref(r));
    }

    fn append(&mut self, other: Expr) {
        for piece in other.pieces {
            match piece {
                Piece::Text(t) => self.push_text(&t),
                Piece::Ref(r) => self.push_ref(r),
            }
        }
    }

    /// The expression text, each reference written by `name`.
    fn render(&self, mut name: impl FnMut(&RefUse) -> String) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Ref(r) => out.push_str(&name(r)),
            }
        }
        out
    }

    /// The expression with every reference replaced by `1`, for syntax checks.
    fn placeholder(&self) -> String {
        self.render(|_| "1".to_owned())
    }

    /// The expression as an operand: parenthesised unless it is a single number, reference
    /// or parenthesised group.
    fn operand(self) -> Expr {
        if is_atomic(&self.placeholder()) {
            return self;
        }
        let mut out = Expr::default();
        out.push_text("(");
        out.append(self);
        out.push_text(")");
        out
    }
}

/// The title of a todo to add.
#[derive(Debug, Clone, PartialEq)]
enum Title {
    Text(String),
    Ref(RefUse),
}

/// Which todo a get, complete or delete names.
#[derive(Debug, Clone, PartialEq)]
enum Target {
    Id(u64),
    Title(String),
    Ref(RefUse),
}

/// The todo actions that name a todo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TodoVerb {
    Get,
    Complete,
    Delete,
}

impl TodoVerb {
    fn action(self) -> &'static str {
        match self {
            TodoVerb::Get => "get",
            TodoVerb::Complete => "complete",
            TodoVerb::Delete => "delete",
        }
    }
}

/// One request of a clause, before references are resolved.
#[derive(Debug, Clone, PartialEq)]
enum Intent {
    Calculate(Expr),
    Add(Title),
    List,
    Todo(TodoVerb, Target),
}

/// What a clause reads as.
#[derive(Debug, Clone, PartialEq)]
enum Parse {
    Intents(Vec<Intent>),
    /// Only greetings or politeness ("hello", "thanks").
    Filler,
    Unknown,
}

/// Politeness and sequencing words ignored at the start of a clause.
#[rustfmt::skip]
const LEAD_FILLERS: &[&str] = &[
    "please", "pls", "plz", "kindly", "can you", "could you", "would you", "will you", "can u",
    "could u", "would u", "would you mind", "would you please", "could you please",
    "can you please", "i want you to", "i'd like you to", "i would like you to",
    "i need you to", "go ahead and", "let's", "lets", "let us", "now", "also", "first",
    "firstly", "first of all", "next", "finally", "lastly", "and", "then", "after that",
    "afterwards", "hey", "hi", "hello", "ok", "okay", "so", "just", "quickly", "help me",
    "i want to", "i'd like to", "i would like to", "i wanna", "try to", "yes", "sure",
    "alright", "well", "oh", "one more thing", ":",
];

/// Politeness ignored at the end of a clause.
#[rustfmt::skip]
const TRAIL_FILLERS: &[&str] = &[
    "please", "pls", "plz", "thanks", "thank you", "thx", "ty", "thanks a lot",
    "thank you very much", ".", "!", "?", ",", ";", ":",
];

/// An intent matcher: the intents a clause (politeness removed) reads as, if any.
type Matcher = fn(&str, &[Tok]) -> Option<Vec<Intent>>;

/// Read one clause.
fn parse_clause(src: &str, toks: &[Tok]) -> Parse {
    let trimmed = strip_prefixes(strip_suffixes(toks, TRAIL_FILLERS), LEAD_FILLERS);
    if trimmed.is_empty() {
        return if toks.is_empty() {
            Parse::Unknown
        } else {
            Parse::Filler
        };
    }
    let toks = trimmed;
    if let Some(i) = list(toks) {
        return Parse::Intents(vec![i]);
    }
    let matchers: [Matcher; 4] = [complete, delete, get, add];
    for m in matchers {
        if let Some(intents) = m(src, toks) {
            return Parse::Intents(intents);
        }
    }
    if let Some(i) = arithmetic(src, toks) {
        return Parse::Intents(vec![i]);
    }
    Parse::Unknown
}

// ---- todo vocabulary ------------------------------------------------------------------

/// Words for one todo, or several.
#[rustfmt::skip]
const TODO_NOUNS: &[&str] = &[
    "todo", "todos", "to - do", "to - dos", "todo item", "todo items", "to - do item",
    "to - do items", "task", "tasks", "reminder", "reminders", "item", "items", "entry",
    "entries", "todo entry", "note", "todo's",
];

/// Words for one todo.
#[rustfmt::skip]
const TODO_NOUNS_SINGULAR: &[&str] = &[
    "todo", "to - do", "todo item", "to - do item", "task", "reminder", "item", "entry",
    "todo entry", "note",
];

/// Words for the todo list as a whole ("to my todo list").
#[rustfmt::skip]
const LIST_NOUNS: &[&str] = &[
    "todo list", "to - do list", "to do list", "todos list", "todos", "to - dos", "todo's",
    "to - do's", "task list", "tasks list", "tasks", "list", "checklist", "reminders",
    "reminder list", "list of todos", "list of tasks", "todo", "to - do", "to do's",
];

/// Determiners before the list ("my", "the").
const LIST_DETS: &[&str] = &["my", "the", "our", "your"];

/// `toks` without a trailing "<prep> [my|the] [word] <list noun>" ("to my shopping list").
fn strip_list_suffix<'t>(toks: &'t [Tok], preps: &[&str]) -> Option<&'t [Tok]> {
    let rest = strip_suffix(toks, LIST_NOUNS)?;
    if let Some(r) = strip_suffix(rest, LIST_DETS).and_then(|r| strip_suffix(r, preps)) {
        return Some(r);
    }
    if let Some(r) = strip_suffix(rest, preps) {
        return Some(r);
    }
    // One modifier between the determiner and the noun: "my shopping list".
    let (_, before) = rest.split_last()?;
    if !matches!(rest.last()?.kind, Kind::Word(_)) {
        return None;
    }
    strip_suffix(strip_suffix(before, LIST_DETS)?, preps)
}

/// Whether `toks` is only "[a|the] <todo noun>", not a real title.
fn is_bare_noun(toks: &[Tok]) -> bool {
    let rest = strip_prefixes(toks, ADD_DETS);
    rest.is_empty() || is_exactly(rest, TODO_NOUNS)
}

/// A title as typed: trimmed, one pair of surrounding quotes removed.
fn clean_title(s: &str) -> Option<String> {
    let s = s.trim();
    let mut chars = s.chars();
    let (first, last) = (chars.next(), chars.next_back());
    let quoted = matches!(
        (first, last),
        (Some('"'), Some('"'))
            | (Some('\''), Some('\''))
            | (Some('“'), Some('”'))
            | (Some('‘'), Some('’'))
            | (Some('`'), Some('`'))
    );
    let inner = chars.as_str();
    let nested = inner.contains(['"', '\'', '“', '”', '‘', '’', '`']);
    let s = if quoted && !nested { inner.trim() } else { s };
    (!s.is_empty()).then(|| s.to_owned())
}

/// The title a run of tokens spells: a quoted string's inside, an earlier result
/// ("the result"), or the text as typed.
fn title_of(src: &str, toks: &[Tok]) -> Option<Title> {
    if let [tok] = toks {
        if let Some(inner) = quoted_inside(src, tok) {
            return clean_title(inner).map(Title::Text);
        }
    }
    if let Some((kind, n)) = ref_phrase(toks) {
        if n == toks.len() {
            return Some(Title::Ref(RefUse {
                kind,
                phrase: text(src, toks).to_owned(),
            }));
        }
    }
    clean_title(text(src, toks)).map(Title::Text)
}

/// The todos a title run asks to add: several quoted titles ("'milk' and 'eggs'"), a
/// calculation named in words ("the sum of 2 and 3", calculated first and then added), or
/// one title.
fn add_intents(src: &str, toks: &[Tok]) -> Option<Vec<Intent>> {
    if let Some(titles) = quoted_list(src, toks) {
        return Some(
            titles
                .into_iter()
                .map(|t| Intent::Add(Title::Text(t)))
                .collect(),
        );
    }
    if let Some(expr) = calculation_title(src, toks) {
        let previous = RefUse {
            kind: RefKind::Previous,
            phrase: text(src, toks).to_owned(),
        };
        return Some(vec![
            Intent::Calculate(expr),
            Intent::Add(Title::Ref(previous)),
        ]);
    }
    title_of(src, toks).map(|t| vec![Intent::Add(t)])
}

/// A title that is a calculation in words: "the sum of 2 and 3", "the result of 6*7".
fn calculation_title(src: &str, toks: &[Tok]) -> Option<Expr> {
    prefix_len(toks, &["the"])?;
    let leads = [
        "the result of",
        "the answer to",
        "the answer of",
        "the value of",
    ];
    let expr = match strip_prefix(toks, &leads) {
        Some(body) => expr_form(src, body).or_else(|| plain_expr(src, body))?,
        None => expr_form(src, toks)?,
    };
    syntax_ok(&expr).then_some(expr)
}

// ---- list -----------------------------------------------------------------------------

/// Words a "show my todos" request is made of.
#[rustfmt::skip]
const LIST_WORDS: &[&str] = &[
    "list", "lists", "show", "display", "view", "get", "see", "fetch", "retrieve", "print",
    "read", "give", "tell", "check", "review", "pull", "bring", "up", "what", "what's", "whats",
    "what're", "which", "how", "many", "are", "is", "there", "do", "i", "i've", "have", "got",
    "me", "us", "all", "of", "my", "the", "our", "current", "currently", "open", "pending",
    "remaining", "outstanding", "existing", "entire", "whole", "full", "on", "in", "to", "left",
    "so", "far", "now", "right", "again", "any", "some", "you", "can", "could", "would",
    "things", "stuff", "thing", "items", "item", "todo", "todos", "dos", "task", "tasks",
    "reminders", "checklist", "completed", "done", "finished", "unfinished", "incomplete",
    "active", "everything", "every", "single", "anything", "still", "yet", "need", "saved",
    "todo's", "-", "'", "please", "for", "each", "one", "entries", "notes", "today", "tonight",
    "tomorrow", "this", "week",
];

/// Nouns that make a bag of [`LIST_WORDS`] a list request.
#[rustfmt::skip]
const LIST_REQUEST_NOUNS: &[&str] = &[
    "todos", "todo", "dos", "tasks", "task", "list", "lists", "reminders", "checklist",
    "todo's", "items", "entries",
];

/// Whole sentences that ask for the list.
#[rustfmt::skip]
const LIST_SENTENCES: &[&str] = &[
    "what do i have to do", "what do i need to do", "what's left to do", "what is left to do",
    "what's on my plate", "what is on my plate", "what have i got to do", "what must i do",
];

/// "list todos", "show my todos", "what's on my todo list", "list all my tasks".
fn list(toks: &[Tok]) -> Option<Intent> {
    if is_exactly(toks, LIST_SENTENCES) {
        return Some(Intent::List);
    }
    let all_list_words = toks.iter().all(|t| LIST_WORDS.iter().any(|w| is_kw(t, w)));
    if !all_list_words {
        return None;
    }
    let has_noun = toks
        .iter()
        .any(|t| LIST_REQUEST_NOUNS.iter().any(|w| is_kw(t, w)));
    // "list everything", "show all": only after a listing verb.
    let everything = toks
        .iter()
        .any(|t| is_kw(t, "everything") || is_kw(t, "all"))
        && prefix_len(toks, &["list", "show", "display", "view", "print"]).is_some();
    (has_noun || everything).then_some(Intent::List)
}

// ---- targets (get, complete, delete) ----------------------------------------------------

/// How freely a todo may be named.
#[derive(Debug, Clone, Copy)]
struct Naming {
    /// An unquoted title without "todo" before it ("mark buy milk as done").
    bare_title: bool,
    /// A number without "todo" or "#" before it ("complete 3").
    bare_id: bool,
}

/// Words that name a particular todo among several ("todo number 3", "#3").
#[rustfmt::skip]
const ID_MARKERS: &[&str] = &[
    "number", "no", "no .", "num", "nr", "#", "id", "id #", "number #", "no . #", "with id",
    "with the id", "with number", "with the number", "n°",
];

/// Words that introduce a todo's title.
#[rustfmt::skip]
const TITLE_MARKERS: &[&str] = &[
    "called", "named", "titled", "entitled", ":", "with the title", "with title", "that says",
    "saying",
];

/// Words a bare title may not start with ("delete everything" is not a todo title).
#[rustfmt::skip]
const NOT_TITLES: &[&str] = &[
    "all", "every", "everything", "each", "any", "both", "them", "these", "those", "a", "an",
    "first", "second", "third", "fourth", "fifth", "last", "next", "latest", "newest", "oldest",
    "other", "top", "bottom",
];

/// Which todos a run of tokens names: ids ("todo 3", "todos 1, 2 and 3", "#4"), a title
/// (quoted, or after "todo"), or the latest todo ("it", "the todo").
fn targets(src: &str, toks: &[Tok], naming: Naming) -> Option<Vec<Target>> {
    if toks.is_empty() {
        return None;
    }
    let todo_ref = || {
        Some(vec![Target::Ref(RefUse {
            kind: RefKind::Todo,
            phrase: text(src, toks).to_owned(),
        })])
    };
    if is_exactly(
        toks,
        &["it", "that", "this", "this one", "that one", "the one"],
    ) {
        return todo_ref();
    }
    let mut rest = toks;
    let had_det = match strip_prefix(rest, &["the", "my", "this", "that", "our"]) {
        Some(r) => {
            rest = r;
            true
        }
        None => false,
    };
    let had_adj = match strip_prefix(
        rest,
        &[
            "last",
            "latest",
            "new",
            "newest",
            "most recent",
            "previous",
            "recent",
            "same",
        ],
    ) {
        Some(r) => {
            rest = r;
            true
        }
        None => false,
    };
    let singular = prefix_len(rest, TODO_NOUNS_SINGULAR);
    let noun = prefix_len(rest, TODO_NOUNS);
    if let Some(n) = noun {
        rest = rest.get(n..).unwrap_or(&[]);
    }
    if rest.is_empty() {
        let one_todo = singular.is_some() && singular == noun;
        return if one_todo && (had_det || had_adj) {
            todo_ref()
        } else {
            None
        };
    }
    if had_adj {
        return None;
    }
    if let Some((ids, marked)) = id_list(rest) {
        return (noun.is_some() || marked || naming.bare_id)
            .then(|| ids.into_iter().map(Target::Id).collect());
    }
    let named = strip_prefix(rest, TITLE_MARKERS).unwrap_or(rest);
    if let [tok] = named {
        if let Some(inner) = quoted_inside(src, tok) {
            return clean_title(inner).map(|t| vec![Target::Title(t)]);
        }
    }
    let mut body = named;
    let mut has_noun = noun.is_some();
    if !has_noun {
        // "the buy milk todo": the noun after the title.
        if let Some(r) = strip_suffix(body, TODO_NOUNS_SINGULAR).filter(|r| !r.is_empty()) {
            body = if had_det {
                r
            } else {
                strip_prefixes(r, &["the", "my"])
            };
            // "the first todo", "the other task": not a title.
            if is_exactly(body, NOT_TITLES) {
                return None;
            }
            has_noun = true;
        } else {
            // No noun: keep a determiner as part of the title ("the dishes").
            body = toks;
        }
    }
    if !has_noun && (!naming.bare_title || prefix_len(body, NOT_TITLES).is_some()) {
        return None;
    }
    clean_title(text(src, body)).map(|t| vec![Target::Title(t)])
}

/// A list of todo ids: "3", "#3", "number 3", "1, 2 and 3", "3 and todo 4". Also says
/// whether an id marker ("#", "number") was used.
fn id_list(toks: &[Tok]) -> Option<(Vec<u64>, bool)> {
    let mut ids = Vec::new();
    let mut marked = false;
    let mut i = 0;
    loop {
        let rest = toks.get(i..)?;
        if let Some(n) = prefix_len(rest, TODO_NOUNS).filter(|_| !ids.is_empty()) {
            i += n;
        }
        let rest = toks.get(i..)?;
        if let Some(n) = prefix_len(rest, ID_MARKERS) {
            marked = true;
            i += n;
        }
        let (id, n) = integer_at(toks.get(i..)?)?;
        ids.push(id);
        i += n;
        if i >= toks.len() {
            return Some((ids, marked));
        }
        i += prefix_len(toks.get(i..)?, &[",", "and", "&", ", and", "or"])?;
    }
}

// ---- complete ---------------------------------------------------------------------------

/// Verbs that complete the todo named after them, which must say "todo" or be quoted.
const COMPLETE_VERBS: &[&str] = &["complete", "finish", "close", "resolve"];

/// Verbs that complete the todo named after them, which may be a bare title.
#[rustfmt::skip]
const COMPLETE_VERBS_LOOSE: &[&str] = &[
    "check off", "tick off", "cross off", "mark off", "strike off", "cross out", "i finished",
    "i've finished", "i have finished", "i completed", "i've completed", "i have completed",
    "i did", "i've done", "i have done", "i'm done with", "i am done with", "done with",
];

/// Verbs that complete a todo when followed by a "done" word ("mark todo 3 as done").
const MARK_VERBS: &[&str] = &["mark", "set", "flag", "tick", "check", "cross", "strike"];

/// The "done" words after a todo.
#[rustfmt::skip]
const DONE_TAILS: &[&str] = &[
    "as done", "done", "as complete", "complete", "as completed", "completed", "as finished",
    "finished", "as checked", "checked", "checked off", "as checked off", "off", "to done",
    "to complete", "to completed", "as resolved", "resolved", "as closed", "closed",
    "as done now", "done now",
];

/// "<todo> is done" without a verb.
#[rustfmt::skip]
const STATE_TAILS: &[&str] = &[
    "is done", "is complete", "is completed", "is finished", "has been done",
    "has been completed", "is now done", "is all done",
];

/// `toks` without a trailing "done" phrase, possibly "off my list".
fn strip_done_tail(toks: &[Tok]) -> Option<&[Tok]> {
    if let Some(r) = strip_list_suffix(toks, &["off", "from"]) {
        return Some(strip_suffix(r, DONE_TAILS).unwrap_or(r));
    }
    strip_suffix(toks, DONE_TAILS)
}

/// "complete todo 3", "mark todo #3 as done", "check off todo 4", "mark 'buy milk' done",
/// "complete todos 1 and 2", "todo 3 is done".
fn complete(src: &str, toks: &[Tok]) -> Option<Vec<Intent>> {
    let intents = |t: Vec<Target>| {
        t.into_iter()
            .map(|t| Intent::Todo(TodoVerb::Complete, t))
            .collect()
    };
    let strict = prefix_len(toks, COMPLETE_VERBS);
    let loose = prefix_len(toks, COMPLETE_VERBS_LOOSE);
    if let Some(n) = strict.max(loose) {
        let rest = toks.get(n..)?;
        let rest = strip_done_tail(rest).unwrap_or(rest);
        let naming = Naming {
            bare_title: loose.is_some_and(|l| Some(l) >= strict),
            bare_id: true,
        };
        if let Some(t) = targets(src, rest, naming) {
            return Some(intents(t));
        }
    }
    if let Some(rest) = strip_prefix(toks, MARK_VERBS) {
        let body = strip_done_tail(rest)?;
        let naming = Naming {
            bare_title: true,
            bare_id: true,
        };
        return targets(src, body, naming).map(intents);
    }
    let body = strip_suffix(toks, STATE_TAILS)?;
    let naming = Naming {
        bare_title: false,
        bare_id: false,
    };
    targets(src, body, naming).map(intents)
}

// ---- delete -----------------------------------------------------------------------------

/// Verbs that delete the todo named after them.
#[rustfmt::skip]
const DELETE_VERBS: &[&str] = &[
    "delete", "remove", "erase", "drop", "discard", "cancel", "trash", "clear", "scrap",
    "ditch", "get rid of", "forget", "forget about", "bin", "throw away", "throw out", "purge",
    "nuke", "take", "take out",
];

/// "delete todo 3", "remove todo #2", "delete the todo 'buy milk'",
/// "remove 'buy milk' from my todos", "take buy milk off my list".
fn delete(src: &str, toks: &[Tok]) -> Option<Vec<Intent>> {
    let n = prefix_len(toks, DELETE_VERBS)?;
    let rest = toks.get(n..)?;
    let rest = strip_suffixes(rest, &["completely", "permanently", "for good", "entirely"]);
    let from_list = strip_list_suffix(rest, &["from", "off", "out of"]);
    if from_list.is_none() && is_kw(toks.first()?, "take") {
        return None;
    }
    let naming = Naming {
        bare_title: from_list.is_some(),
        bare_id: true,
    };
    let t = targets(src, from_list.unwrap_or(rest), naming)?;
    Some(
        t.into_iter()
            .map(|t| Intent::Todo(TodoVerb::Delete, t))
            .collect(),
    )
}

// ---- get --------------------------------------------------------------------------------

/// Verbs that fetch one todo.
#[rustfmt::skip]
const GET_VERBS: &[&str] = &[
    "show", "show me", "get", "get me", "view", "display", "fetch", "open", "see", "find",
    "look up", "lookup", "read", "describe", "retrieve", "give me", "tell me about", "what is",
    "what's", "whats", "what does", "what about", "details of", "details for", "details on",
    "info on", "info about", "information about", "information on", "pull up", "bring up",
    "check", "let me see", "look at", "show details of", "show the details of",
];

/// "show todo 3", "get todo 2", "what's todo 5", "show the todo 'buy milk'".
fn get(src: &str, toks: &[Tok]) -> Option<Vec<Intent>> {
    let rest = strip_prefix(toks, GET_VERBS)?;
    let rest = strip_suffixes(
        rest,
        &["say", "says", "contain", "contains", "details", "for me"],
    );
    let naming = Naming {
        bare_title: false,
        bare_id: false,
    };
    let t = targets(src, rest, naming)?;
    Some(
        t.into_iter()
            .map(|t| Intent::Todo(TodoVerb::Get, t))
            .collect(),
    )
}

// ---- add --------------------------------------------------------------------------------

/// Verbs that create a todo ("add a todo ...", "new todo ...").
#[rustfmt::skip]
const ADD_VERBS: &[&str] = &[
    "add", "create", "make", "new", "put", "put in", "save", "write", "write down", "record",
    "log", "enter", "insert", "start", "jot down", "note down", "schedule", "register", "set",
    "set up", "add in", "append",
];

/// Verbs that put a title on the list ("add buy bread to my list").
#[rustfmt::skip]
const PUT_VERBS: &[&str] = &[
    "add", "put", "save", "write", "write down", "append", "stick", "throw", "pop", "jot",
    "jot down", "note", "note down", "put down", "include", "place", "set", "log", "record",
    "enter", "insert", "add in", "throw in", "store", "keep", "make", "turn", "create",
    "register",
];

/// Words between the verb and "todo" ("add a new todo").
const ADD_DETS: &[&str] = &[
    "a", "an", "the", "one", "another", "new", "single", "more", "quick", "simple", "my",
];

/// Words between "todo" and its title.
#[rustfmt::skip]
const ADD_SEPS: &[&str] = &[
    ":", "-", "–", "—", ",", "=", "called", "named", "titled", "entitled", "saying",
    "that says", "which says", "reading", "that reads", "with the title", "with title",
    "with the text", "with text", "with the name", "with name", "with the description",
    "labeled", "labelled", "for", "about", "from", "with", "to",
];

/// Phrases that ask for a reminder, followed by its title.
#[rustfmt::skip]
const REMINDER_LEADS: &[&str] = &[
    "remind me to", "remind me about", "remind me of", "remind me that", "remind me",
    "remind me :", "don't forget to", "dont forget to", "do not forget to",
    "don't let me forget to", "remember to", "i need to remember to", "i must remember to",
    "note to self", "note to self :",
];

/// "add todo Write tests", "add a todo to buy milk", "add a todo: call the bank",
/// "create a todo called 'Pay rent'", "remind me to call mom", "new todo buy eggs",
/// "add 'buy bread' to my todos", "add 'milk' and 'eggs' to my list",
/// "add the result as a todo", "todo: buy eggs".
fn add(src: &str, toks: &[Tok]) -> Option<Vec<Intent>> {
    let titled = |t: &[Tok]| add_intents(src, t);

    // "remind me to call mom"
    if let Some(rest) = strip_prefix(toks, REMINDER_LEADS) {
        return titled(rest);
    }

    // "add a todo to buy milk", "add a task to my list: X"
    if let Some(rest) = strip_prefix(toks, ADD_VERBS) {
        let rest = strip_prefixes(rest, ADD_DETS);
        if let Some(rest) = strip_prefix(rest, TODO_NOUNS) {
            let rest = list_phrase_prefix(rest, true).unwrap_or(rest);
            let rest = strip_prefix(rest, ADD_SEPS).unwrap_or(rest);
            if let Some(i) = titled(rest) {
                return Some(i);
            }
        }
    }

    if let Some(rest) = strip_prefix(toks, PUT_VERBS) {
        // "add the result as a todo", "make the result a todo"
        let as_todo = strip_list_suffix(rest, &["to", "on", "onto", "in", "into"]).unwrap_or(rest);
        if let Some(r) = strip_suffix(as_todo, TODO_NOUNS) {
            let r = strip_suffixes(r, &["a", "an", "new", "another", "one", "my", "of"]);
            let r = strip_suffix(r, &["as", "into", "to be", "as one", "as one of"])
                .or_else(|| prefix_len(toks, &["make", "turn"]).map(|_| r));
            if let Some(middle) = r.filter(|m| !m.is_empty() && !is_bare_noun(m)) {
                return titled(middle);
            }
        }
        // "add buy bread to my todo list"
        let preps = ["to", "on", "onto", "in", "into", "under"];
        if let Some(middle) = strip_list_suffix(rest, &preps) {
            if !middle.is_empty() && !is_bare_noun(middle) {
                return titled(middle);
            }
        }
        // "add to my list: buy milk"
        if let Some(after) = list_phrase_prefix(rest, false) {
            let after = strip_prefix(after, &[":", "-", ","]).unwrap_or(after);
            return titled(after);
        }
    }

    // "todo: buy eggs"
    let rest = strip_prefix(toks, TODO_NOUNS_SINGULAR)?;
    titled(strip_prefix(rest, &[":", "-"])?)
}

/// Two or more quoted titles separated by commas or "and": "'milk', 'eggs' and 'bread'".
fn quoted_list(src: &str, toks: &[Tok]) -> Option<Vec<String>> {
    let parts = split_all(toks);
    if parts.len() < 2 {
        return None;
    }
    parts
        .into_iter()
        .map(|part| match part {
            [tok] => quoted_inside(src, tok).and_then(clean_title),
            _ => None,
        })
        .collect()
}

/// The tokens after a leading "to|on|in <det> [word] <list noun>" ("to my list"); the
/// determiner may be left out when `need_det` is false ("to todo list").
fn list_phrase_prefix(toks: &[Tok], need_det: bool) -> Option<&[Tok]> {
    let rest = strip_prefix(toks, &["to", "on", "onto", "in", "into"])?;
    let rest = match strip_prefix(rest, LIST_DETS) {
        Some(r) => r,
        None if need_det => return None,
        None => return strip_prefix(rest, LIST_NOUNS),
    };
    if let Some(r) = strip_prefix(rest, LIST_NOUNS) {
        return Some(r);
    }
    let (first, after) = rest.split_first()?;
    if !matches!(first.kind, Kind::Word(_)) {
        return None;
    }
    strip_prefix(after, LIST_NOUNS)
}

// ---- references -------------------------------------------------------------------------

/// Determiners of an earlier-result phrase.
const REF_DETS: &[&str] = &["the", "that", "this", "its", "my", "your", "our"];

/// Adjectives of an earlier-result phrase.
#[rustfmt::skip]
const REF_ADJS: &[&str] = &[
    "previous", "last", "latest", "above", "same", "former", "prior", "earlier", "final",
    "calculated", "computed", "resulting", "new", "most recent", "recent", "current",
];

/// Nouns of an earlier-result phrase and what they ask for.
const REF_NOUNS: &[(&str, RefKind)] = &[
    ("result", RefKind::Any),
    ("answer", RefKind::Any),
    ("value", RefKind::Any),
    ("number", RefKind::Any),
    ("output", RefKind::Any),
    ("outcome", RefKind::Any),
    ("figure", RefKind::Any),
    ("calculation", RefKind::Any),
    ("computation", RefKind::Any),
    ("solution", RefKind::Any),
    ("sum", RefKind::Sum),
    ("total", RefKind::Sum),
    ("product", RefKind::Product),
    ("difference", RefKind::Difference),
    ("quotient", RefKind::Quotient),
];

/// Words after an earlier-result phrase ("the result of the multiplication").
const REF_TAILS: &[(&str, Option<RefKind>)] = &[
    ("of that", None),
    ("of it", None),
    ("of this", None),
    ("of the calculation", None),
    ("of the computation", None),
    ("of the previous calculation", None),
    ("of the last calculation", None),
    ("of the math", None),
    ("from before", None),
    ("from above", None),
    ("from earlier", None),
    ("from that", None),
    ("from the calculation", None),
    ("from the last step", None),
    ("from the previous step", None),
    ("above", None),
    ("you got", None),
    ("you calculated", None),
    ("you just calculated", None),
    ("you computed", None),
    ("you found", None),
    ("we got", None),
    ("i got", None),
    ("of the addition", Some(RefKind::Sum)),
    ("of the sum", Some(RefKind::Sum)),
    ("of the multiplication", Some(RefKind::Product)),
    ("of the product", Some(RefKind::Product)),
    ("of the subtraction", Some(RefKind::Difference)),
    ("of the difference", Some(RefKind::Difference)),
    ("of the division", Some(RefKind::Quotient)),
    ("of the quotient", Some(RefKind::Quotient)),
];

/// An earlier-result phrase at the start of `toks` ("the result", "the sum", "it",
/// "the previous answer", "that number"), and its token count.
fn ref_phrase(toks: &[Tok]) -> Option<(RefKind, usize)> {
    let mut i = prefix_len(toks, REF_DETS).unwrap_or(0);
    let mut qualified = i > 0;
    while let Some(n) = toks.get(i..).and_then(|r| prefix_len(r, REF_ADJS)) {
        i += n;
        qualified = true;
    }
    let noun = toks
        .get(i)
        .and_then(|t| REF_NOUNS.iter().find(|(w, _)| is_kw(t, w)));
    if let (true, Some(&(_, mut kind))) = (qualified, noun) {
        i += 1;
        let rest = toks.get(i..).unwrap_or(&[]);
        let tail = REF_TAILS
            .iter()
            .filter_map(|&(p, k)| phrase_len(rest, p).map(|n| (n, k)))
            .max_by_key(|&(n, _)| n);
        match tail {
            Some((n, k)) => {
                i += n;
                kind = k.unwrap_or(kind);
            }
            // "the sum of 2 and 3" is a calculation, not a reference.
            None if rest.first().is_some_and(|t| is_kw(t, "of")) => return None,
            None => {}
        }
        return Some((kind, i));
    }
    let n = prefix_len(toks, &["it", "that", "this", "that one", "this one"])?;
    Some((RefKind::Any, n))
}

// ---- arithmetic -------------------------------------------------------------------------

/// Words that ask for a calculation.
#[rustfmt::skip]
const CALC_LEADS: &[&str] = &[
    "calculate", "calc", "compute", "evaluate", "eval", "solve", "work out", "figure out",
    "find out", "find", "determine", "tell me", "give me", "show me", "what is", "what's",
    "whats", "what are", "what", "what does", "what do", "how much is", "how much are",
    "how much does", "how much do", "how much", "the value of", "the result of",
    "the answer to", "the answer of", "value of", "result of", "answer to", "do the math on",
    "do the math for", "do the math", "quickly", "=", ":", "i need to know", "i want to know",
    "i'd like to know", "i would like to know", "do you know", "let me know", "what would",
    "what will", "what would be", "what will be",
];

/// Words after a calculation ("what does 2+3 equal").
const CALC_TAILS: &[&str] = &[
    "is", "are", "equals", "equal", "=", "make", "makes", "come to", "comes to", "give", "gives",
    "give me", "give you", "for me", "equal to", "be", "exactly",
];

/// Words inside an expression and the operator they stand for.
const OPERATOR_WORDS: &[(&str, &str)] = &[
    ("plus", "+"),
    ("minus", "-"),
    ("less", "-"),
    ("take away", "-"),
    ("negative", "-"),
    ("times", "*"),
    ("x", "*"),
    ("multiplied by", "*"),
    ("multiply by", "*"),
    ("divided by", "/"),
    ("divide by", "/"),
    ("over", "/"),
    ("mod", "%"),
    ("modulo", "%"),
    ("modulus", "%"),
    ("to the power of", "^"),
    ("to the power", "^"),
    ("raised to the power of", "^"),
    ("raised to the", "^"),
    ("raised to", "^"),
    ("to the", "^"),
    ("power of", "^"),
    ("squared", "^ 2"),
    ("cubed", "^ 3"),
    ("percent of", "/ 100 *"),
    ("% of", "/ 100 *"),
    ("percent", "/ 100"),
];

/// "calculate 2+3", "what is 10 times 5", "2^8", "multiply the result by 4",
/// "the sum of 2 and 3", "double it".
fn arithmetic(src: &str, toks: &[Tok]) -> Option<Intent> {
    let body = strip_prefixes(toks, CALC_LEADS);
    let had_lead = body.len() < toks.len();
    let body = strip_suffixes(body, CALC_TAILS);
    let (expr, explicit) = match expr_form(src, body) {
        Some(e) => (e, true),
        None => (plain_expr(src, body)?, false),
    };
    if !syntax_ok(&expr) {
        return None;
    }
    let (has_binary, _) = shape(&expr.placeholder());
    (had_lead || explicit || has_binary).then_some(Intent::Calculate(expr))
}

/// Whether the calculator can parse `expr` (references read as numbers). Arithmetic errors
/// (division by zero, too long) are left for the tool and `validate()` to report.
fn syntax_ok(expr: &Expr) -> bool {
    !matches!(
        expr::evaluate(&expr.placeholder()),
        Err(ExprError::Syntax { .. } | ExprError::Empty)
    )
}

/// An expression made of numbers, operators (as symbols or words), parentheses and
/// earlier results, written with the spacing the user typed.
fn plain_expr(src: &str, toks: &[Tok]) -> Option<Expr> {
    let mut out = Expr::default();
    let mut i = 0;
    // After an operator written in words, the next token is spaced whatever was typed.
    let mut pad = false;
    while let Some(tok) = toks.get(i) {
        if i > 0 && (tok.spaced || pad) {
            out.push_text(" ");
        }
        pad = false;
        let rest = toks.get(i..)?;
        // "2 to the 10th power": the ordinal ending and "power" add nothing.
        let after_number = i > 0
            && !tok.spaced
            && matches!(
                toks.get(i - 1),
                Some(Tok {
                    kind: Kind::Num(_),
                    ..
                })
            );
        if after_number && ["th", "st", "nd", "rd"].iter().any(|w| is_kw(tok, w)) {
            i += 1 + usize::from(toks.get(i + 1).is_some_and(|t| is_kw(t, "power")));
            continue;
        }
        let wordy = matches!(tok.kind, Kind::Word(_) | Kind::Sym('%'));
        if let Some((kind, n)) = ref_phrase(rest).filter(|_| wordy) {
            let phrase = text(src, rest.get(..n)?).to_owned();
            out.push_ref(RefUse { kind, phrase });
            i += n;
            continue;
        }
        let op = OPERATOR_WORDS
            .iter()
            .filter(|_| wordy)
            .filter_map(|&(p, op)| phrase_len(rest, p).map(|n| (n, op)))
            .max_by_key(|&(n, _)| n);
        if let Some((n, op)) = op {
            if i > 0 && !tok.spaced {
                out.push_text(" ");
            }
            out.push_text(op);
            pad = true;
            i += n;
            continue;
        }
        match &tok.kind {
            Kind::Num(n) => out.push_text(n),
            Kind::Sym(c) => out.push_text(match c {
                '+' => "+",
                '-' | '−' | '–' => "-",
                '*' | '×' | '·' | '∗' => "*",
                '/' | '÷' | '∕' => "/",
                '%' => "%",
                '^' => "^",
                '(' | '[' => "(",
                ')' | ']' => ")",
                _ => return None,
            }),
            Kind::Word(_) => {
                let (v, n) = number_words(rest)?;
                out.push_text(&v.to_string());
                i += n;
                continue;
            }
            Kind::Quoted(_) => return None,
        }
        i += 1;
    }
    (!out.pieces.is_empty()).then_some(out)
}

/// The shapes of calculation phrased in words.
#[derive(Debug, Clone, Copy)]
enum Form {
    /// "<verb> A <word> B": the operator, and whether B comes first ("add A to B" is B + A).
    Binary(&'static [&'static str], &'static str, bool),
    /// "<verb> A, B and C": the operator between all of them.
    Many(&'static str),
    /// "the average of A, B and C".
    Average,
    /// "<verb> A": text before and after A.
    Unary(&'static str, &'static str),
}

/// The word-phrased calculations: their leading phrases and shapes.
const FORMS: &[(&[&str], Form)] = &[
    (
        &["multiply"],
        Form::Binary(&["by", "times", "with"], "*", false),
    ),
    (&["multiply"], Form::Many("*")),
    (&["divide"], Form::Binary(&["by"], "/", false)),
    (&["add"], Form::Binary(&["to"], "+", true)),
    (
        &["add", "add up", "sum", "sum up", "total", "total up"],
        Form::Many("+"),
    ),
    (
        &["subtract", "deduct", "take", "take away"],
        Form::Binary(&["from"], "-", true),
    ),
    (
        &["raise"],
        Form::Binary(
            &["to the power of", "to the power", "to the", "to"],
            "^",
            false,
        ),
    ),
    (&["increase", "raise"], Form::Binary(&["by"], "+", false)),
    (
        &["decrease", "reduce", "lower"],
        Form::Binary(&["by"], "-", false),
    ),
    (
        &["the sum of", "sum of", "the total of", "total of"],
        Form::Many("+"),
    ),
    (&["the product of", "product of"], Form::Many("*")),
    (
        &[
            "the difference between",
            "the difference of",
            "difference between",
            "difference of",
        ],
        Form::Binary(&["and"], "-", false),
    ),
    (
        &["the quotient of", "quotient of"],
        Form::Binary(&["divided by", "and", "by"], "/", false),
    ),
    (
        &[
            "the average of",
            "average of",
            "the mean of",
            "mean of",
            "average",
        ],
        Form::Average,
    ),
    (&["double", "twice"], Form::Unary("", " * 2")),
    (&["triple", "thrice"], Form::Unary("", " * 3")),
    (&["quadruple"], Form::Unary("", " * 4")),
    (&["halve", "half of", "half"], Form::Unary("", " / 2")),
    (
        &["square", "the square of", "square of"],
        Form::Unary("", " ^ 2"),
    ),
    (&["cube", "the cube of", "cube of"], Form::Unary("", " ^ 3")),
    (
        &[
            "the square root of",
            "square root of",
            "the sqrt of",
            "sqrt of",
            "sqrt",
            "square root",
        ],
        Form::Unary("", " ^ 0.5"),
    ),
    (
        &["the cube root of", "cube root of", "cube root"],
        Form::Unary("", " ^ (1 / 3)"),
    ),
    (
        &["negate", "the negative of", "negative of"],
        Form::Unary("-", ""),
    ),
];

/// A calculation phrased in words ("multiply the result by 4", "the sum of 2 and 3").
fn expr_form(src: &str, toks: &[Tok]) -> Option<Expr> {
    // Longest leading phrase first; among equal ones, the order of FORMS.
    let mut candidates: Vec<(usize, Form)> = FORMS
        .iter()
        .filter_map(|&(leads, form)| prefix_len(toks, leads).map(|n| (n, form)))
        .collect();
    candidates.sort_by_key(|&(n, _)| std::cmp::Reverse(n));
    candidates
        .into_iter()
        .find_map(|(n, form)| apply_form(src, toks.get(n..)?, form))
}

/// Build the expression of one word-phrased calculation from the tokens after its verb.
fn apply_form(src: &str, toks: &[Tok], form: Form) -> Option<Expr> {
    let operand = |t: &[Tok]| plain_expr(src, t).map(Expr::operand);
    let mut out = Expr::default();
    match form {
        Form::Binary(words, op, reversed) => {
            let (a, b) = split_once(toks, words)?;
            let (a, b) = (operand(a)?, operand(b)?);
            let (first, second) = if reversed { (b, a) } else { (a, b) };
            out.append(first);
            out.push_text(&format!(" {op} "));
            out.append(second);
        }
        Form::Many(op) => {
            let parts = split_all(toks);
            if parts.len() < 2 {
                return None;
            }
            for (k, part) in parts.into_iter().enumerate() {
                if k > 0 {
                    out.push_text(&format!(" {op} "));
                }
                out.append(operand(part)?);
            }
        }
        Form::Average => {
            let parts = split_all(toks);
            if parts.len() < 2 {
                return None;
            }
            let count = parts.len();
            out.push_text("(");
            for (k, part) in parts.into_iter().enumerate() {
                if k > 0 {
                    out.push_text(" + ");
                }
                out.append(operand(part)?);
            }
            out.push_text(&format!(") / {count}"));
        }
        Form::Unary(before, after) => {
            out.push_text(before);
            out.append(operand(toks)?);
            out.push_text(after);
        }
    }
    Some(out)
}

/// Split at the first of `words` outside parentheses: the tokens before and after, both
/// non-empty.
fn split_once<'t>(toks: &'t [Tok], words: &[&str]) -> Option<(&'t [Tok], &'t [Tok])> {
    let mut depth = 0i32;
    for (i, tok) in toks.iter().enumerate() {
        if is_kw(tok, "(") {
            depth += 1;
        } else if is_kw(tok, ")") {
            depth -= 1;
        } else if depth == 0 && i > 0 {
            if let Some(n) = toks.get(i..).and_then(|r| prefix_len(r, words)) {
                let after = toks.get(i + n..).filter(|a| !a.is_empty())?;
                return Some((toks.get(..i)?, after));
            }
        }
    }
    None
}

/// Split a list "A, B and C" at commas, "and" and "&" outside parentheses; empty parts
/// (from ", and") are dropped.
fn split_all(toks: &[Tok]) -> Vec<&[Tok]> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, tok) in toks.iter().enumerate() {
        if is_kw(tok, "(") {
            depth += 1;
        } else if is_kw(tok, ")") {
            depth -= 1;
        } else if depth == 0 && (is_kw(tok, ",") || is_kw(tok, "and") || is_kw(tok, "&")) {
            if let Some(part) = toks.get(start..i).filter(|p| !p.is_empty()) {
                parts.push(part);
            }
            start = i + 1;
        }
    }
    if let Some(part) = toks.get(start..).filter(|p| !p.is_empty()) {
        parts.push(part);
    }
    parts
}

/// A token of a (syntactically valid) calculator expression, for finding its shape.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Lex {
    Operand,
    Open,
    Close,
    Op(char),
}

/// Lex a calculator expression, reading `**` as `^` and `×` `÷` as `*` `/`.
fn lex(s: &str) -> Vec<Lex> {
    let cs: Vec<char> = s.chars().collect();
    let at = |i: usize| cs.get(i).copied();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(c) = at(i) {
        if c.is_ascii_digit() || c == '.' {
            i += 1;
            while let Some(d) = at(i) {
                let exponent = matches!(d, 'e' | 'E')
                    && (at(i + 1).is_some_and(|n| n.is_ascii_digit())
                        || (matches!(at(i + 1), Some('+' | '-'))
                            && at(i + 2).is_some_and(|n| n.is_ascii_digit())));
                if d.is_ascii_digit() || d == '.' {
                    i += 1;
                } else if exponent {
                    i += 2;
                } else {
                    break;
                }
            }
            out.push(Lex::Operand);
            continue;
        }
        match c {
            '*' if at(i + 1) == Some('*') => {
                out.push(Lex::Op('^'));
                i += 1;
            }
            '(' => out.push(Lex::Open),
            ')' => out.push(Lex::Close),
            '+' | '-' | '*' | '/' | '%' | '^' => out.push(Lex::Op(c)),
            '×' => out.push(Lex::Op('*')),
            '÷' => out.push(Lex::Op('/')),
            _ => {}
        }
        i += 1;
    }
    out
}

/// Whether an expression has a binary operator, and its top-level (last evaluated)
/// operator, looking inside outer parentheses: `((2+3))` is a sum.
fn shape(s: &str) -> (bool, Option<char>) {
    let toks = lex(s);
    let has_binary = binary_ops(&toks).next().is_some();
    // The closing parenthesis of each opening one, to strip outer pairs in linear time. A
    // wholly parenthesised run has no operator at depth 0, so stripping first is exact.
    let mut close_of = vec![None; toks.len()];
    let mut open = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        match t {
            Lex::Open => open.push(i),
            Lex::Close => {
                if let Some(slot) = open.pop().and_then(|o| close_of.get_mut(o)) {
                    *slot = Some(i);
                }
            }
            _ => {}
        }
    }
    let (mut lo, mut hi) = (0, toks.len());
    while hi >= lo + 2 && close_of.get(lo) == Some(&Some(hi - 1)) {
        lo += 1;
        hi -= 1;
    }
    (has_binary, top_operator(toks.get(lo..hi).unwrap_or(&[])))
}

/// Every binary operator of `toks` with its depth in parentheses.
fn binary_ops(toks: &[Lex]) -> impl Iterator<Item = (usize, i32, char)> + '_ {
    let mut depth = 0i32;
    let mut after_operand = false;
    toks.iter().enumerate().filter_map(move |(i, t)| match *t {
        Lex::Open => {
            depth += 1;
            after_operand = false;
            None
        }
        Lex::Close => {
            depth -= 1;
            after_operand = true;
            None
        }
        Lex::Operand => {
            after_operand = true;
            None
        }
        Lex::Op(c) => {
            let binary = after_operand;
            after_operand = false;
            binary.then_some((i, depth, c))
        }
    })
}

/// The operator evaluated last at depth 0: the loosest; the rightmost of `+ -` or `* / %`
/// (left-associative), the leftmost `^` (right-associative).
fn top_operator(toks: &[Lex]) -> Option<char> {
    let precedence = |c: char| match c {
        '+' | '-' => 1,
        '*' | '/' | '%' => 2,
        _ => 3,
    };
    let mut best: Option<(u8, char)> = None;
    for (_, depth, c) in binary_ops(toks) {
        if depth != 0 {
            continue;
        }
        let p = precedence(c);
        let replace = match best {
            None => true,
            Some((bp, _)) => p < bp || (p == bp && p < 3),
        };
        if replace {
            best = Some((p, c));
        }
    }
    best.map(|(_, c)| c)
}

/// The inside of `toks` when all of it is one parenthesised group.
fn outer_parens(toks: &[Lex]) -> Option<&[Lex]> {
    if toks.first() != Some(&Lex::Open) || toks.last() != Some(&Lex::Close) {
        return None;
    }
    let mut depth = 0i32;
    for (i, t) in toks.iter().enumerate() {
        match t {
            Lex::Open => depth += 1,
            Lex::Close => {
                depth -= 1;
                if depth == 0 && i + 1 != toks.len() {
                    return None;
                }
            }
            _ => {}
        }
    }
    toks.get(1..toks.len() - 1)
}

/// Whether an expression is one number, one reference or one parenthesised group.
fn is_atomic(s: &str) -> bool {
    let toks = lex(s);
    toks == [Lex::Operand] || outer_parens(&toks).is_some()
}

// ---------------------------------------------------------------------------------------
// Plan
// ---------------------------------------------------------------------------------------

/// What an earlier step was, for resolving references and ordering the todo store.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Made {
    /// A calculation and its top-level operator.
    Calc(Option<char>),
    /// A todo action, and whether it names a todo its output can stand for.
    Todo { writes: bool, names_todo: bool },
}

/// The id of the `i`-th step (0-based): `s1, s2, ...`.
fn step_id(i: usize) -> String {
    format!("s{}", i + 1)
}

/// The earlier step a reference names.
fn resolve(r: &RefUse, made: &[Made]) -> Result<usize, PlanError> {
    let latest = |f: &dyn Fn(&Made) -> bool| made.iter().rposition(f);
    let found = match r.kind {
        RefKind::Previous => made.len().checked_sub(1),
        RefKind::Todo => latest(&|m| {
            matches!(
                m,
                Made::Todo {
                    names_todo: true,
                    ..
                }
            )
        }),
        kind => {
            let wanted = kind.operator();
            latest(&|m| wanted.is_some() && *m == Made::Calc(wanted))
                .or_else(|| latest(&|m| matches!(m, Made::Calc(_))))
        }
    };
    found.ok_or_else(|| {
        let what = if r.kind == RefKind::Todo {
            "todo"
        } else {
            "calculation"
        };
        PlanError::NotUnderstood(format!(
            "'{}' refers to an earlier {what}, but there is none before it",
            r.phrase.trim()
        ))
    })
}

/// Turn the clauses' intents into steps with their dependencies.
fn build(clauses: Vec<(bool, Vec<Intent>)>) -> Result<Plan, PlanError> {
    let mut steps: Vec<PlanStep> = Vec::new();
    let mut made: Vec<Made> = Vec::new();
    let mut barrier = 0;
    for (after_then, intents) in clauses {
        if after_then {
            barrier = steps.len();
        }
        for intent in intents {
            let mut deps: BTreeSet<usize> = (0..barrier).collect();
            let mut reference = |r: &RefUse| -> Result<String, PlanError> {
                let i = resolve(r, &made)?;
                deps.insert(i);
                Ok(reference_to(&step_id(i)))
            };
            let (tool, input, this) = match intent {
                Intent::Calculate(e) => {
                    let mut names = Vec::new();
                    for piece in &e.pieces {
                        if let Piece::Ref(r) = piece {
                            names.push(reference(r)?);
                        }
                    }
                    let mut names = names.into_iter();
                    let expression = e.render(|_| names.next().unwrap_or_default());
                    let (_, top) = shape(&e.placeholder());
                    (
                        "calculator",
                        json!({ "expression": expression }),
                        Made::Calc(top),
                    )
                }
                Intent::Add(title) => {
                    let title = match title {
                        Title::Text(t) => t,
                        Title::Ref(r) => reference(&r)?,
                    };
                    let this = Made::Todo {
                        writes: true,
                        names_todo: true,
                    };
                    ("todo", json!({ "action": "add", "title": title }), this)
                }
                Intent::List => {
                    let this = Made::Todo {
                        writes: false,
                        names_todo: false,
                    };
                    ("todo", json!({ "action": "list" }), this)
                }
                Intent::Todo(verb, target) => {
                    let (key, value) = match target {
                        Target::Id(id) => ("id", Value::from(id)),
                        Target::Title(t) => ("title", Value::from(t)),
                        Target::Ref(r) => ("title", Value::from(reference(&r)?)),
                    };
                    let mut input = json!({ "action": verb.action() });
                    input[key] = value;
                    let this = Made::Todo {
                        writes: verb != TodoVerb::Get,
                        names_todo: verb != TodoVerb::Delete,
                    };
                    ("todo", input, this)
                }
            };
            if let Made::Todo { writes, .. } = this {
                for (j, m) in made.iter().enumerate() {
                    if matches!(m, Made::Todo { writes: w, .. } if writes || *w) {
                        deps.insert(j);
                    }
                }
            }
            steps.push(PlanStep {
                id: step_id(steps.len()),
                tool: tool.to_owned(),
                input,
                depends_on: deps.into_iter().map(step_id).collect(),
                requires_approval: false,
            });
            made.push(this);
        }
    }
    Ok(Plan { steps })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::local::memory::MemoryTodos;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn registry() -> Registry {
        Registry::new(Arc::new(MemoryTodos::default()))
    }

    /// The plan for `prompt`, validated; panics with the error otherwise.
    fn planned(prompt: &str) -> Plan {
        let mut plan = PatternPlanner
            .plan_prompt(prompt)
            .unwrap_or_else(|e| panic!("{prompt:?} should plan: {e}"));
        let before = plan.clone();
        super::super::validate(&mut plan, &registry())
            .unwrap_or_else(|e| panic!("{prompt:?} should validate: {e}"));
        // The planner already adds every edge validate() would.
        assert_eq!(plan, before, "validate changed the plan of {prompt:?}");
        plan
    }

    /// The error for `prompt`.
    fn refused(prompt: &str) -> String {
        match PatternPlanner.plan_prompt(prompt) {
            Ok(plan) => panic!("{prompt:?} should be refused, got {plan:?}"),
            Err(PlanError::NotUnderstood(m)) => m,
            Err(other) => panic!("{prompt:?} should be not understood, got {other:?}"),
        }
    }

    /// One expected step: tool, input, dependencies.
    type Want = (&'static str, Value, &'static [&'static str]);

    fn assert_plan(prompt: &str, want: &[Want]) {
        let plan = planned(prompt);
        let got: Vec<(String, Value, Vec<String>)> = plan
            .steps
            .iter()
            .map(|s| (s.tool.clone(), s.input.clone(), s.depends_on.clone()))
            .collect();
        let want: Vec<(String, Value, Vec<String>)> = want
            .iter()
            .map(|(t, i, d)| {
                (
                    t.to_string(),
                    i.clone(),
                    d.iter().map(|s| s.to_string()).collect(),
                )
            })
            .collect();
        assert_eq!(got, want, "plan of {prompt:?}");
        for (i, step) in plan.steps.iter().enumerate() {
            assert_eq!(step.id, format!("s{}", i + 1));
        }
    }

    fn calc(expression: &str) -> Value {
        json!({ "expression": expression })
    }

    fn add_todo(title: &str) -> Value {
        json!({ "action": "add", "title": title })
    }

    fn list_todos() -> Value {
        json!({ "action": "list" })
    }

    #[test]
    fn given_arithmetic_paraphrases_when_planned_then_one_calculator_step() {
        let cases = [
            ("calculate 2+3", "2+3"),
            ("CALCULATE 2+3", "2+3"),
            ("  Calculate   2 + 3  !", "2 + 3"),
            ("compute (4 + 6) / 2", "(4 + 6) / 2"),
            ("what is 10*5", "10*5"),
            ("What is 10*5?", "10*5"),
            ("what's 7 - 2", "7 - 2"),
            ("whats 6*7", "6*7"),
            ("evaluate 2^8", "2^8"),
            ("calc 3 * 7", "3 * 7"),
            ("solve 1+1", "1+1"),
            ("how much is 6/3", "6/3"),
            ("work out 17 * 3.", "17 * 3"),
            ("figure out 100 - 37", "100 - 37"),
            ("What does 2+2 equal?", "2+2"),
            ("tell me what 9 * 9 is", "9 * 9"),
            ("2+3", "2+3"),
            ("2 + 2 = ?", "2 + 2"),
            ("-3 + 5", "-3 + 5"),
            ("5 * (3 + 2)", "5 * (3 + 2)"),
            ("What's 2 ** 10", "2 ** 10"),
            ("please calculate 2+3", "2+3"),
            ("can you calculate 2+3?", "2+3"),
            ("Could you please compute 8/2", "8/2"),
            ("I want you to calculate 5*5", "5*5"),
            ("hey, calculate 2+3", "2+3"),
            ("calculate 1,000 + 5.5", "1000 + 5.5"),
            ("calculate 2e3 / 4", "2e3 / 4"),
            ("3×4", "3*4"),
            ("9 ÷ 3", "9 / 3"),
            ("Compute: 5*5", "5*5"),
            ("I need to know what 5 + 5 is", "5 + 5"),
            ("Please work out 12 * 12 for me", "12 * 12"),
        ];
        for (prompt, expression) in cases {
            assert_plan(prompt, &[("calculator", calc(expression), &[])]);
        }
    }

    #[test]
    fn given_operators_written_in_words_when_planned_then_they_become_symbols() {
        let cases = [
            ("10 times 5", "10 * 5"),
            ("10 plus 5", "10 + 5"),
            ("7 minus 2", "7 - 2"),
            ("8 divided by 2", "8 / 2"),
            ("10 multiplied by 3", "10 * 3"),
            ("2 to the power of 8", "2 ^ 8"),
            ("what is 2 raised to 10", "2 ^ 10"),
            ("3 x 4", "3 * 4"),
            ("3x4", "3 * 4"),
            ("10 mod 3", "10 % 3"),
            ("17 modulo 5", "17 % 5"),
            ("what's 5 squared", "5 ^ 2"),
            ("what is 3 cubed?", "3 ^ 3"),
            ("2 times 3 plus 4", "2 * 3 + 4"),
            ("what is 15% of 200", "15 / 100 * 200"),
            ("what is two plus three", "2 + 3"),
            ("calculate twenty-one times 2", "21 * 2"),
            ("calculate two hundred and five plus one", "205 + 1"),
            ("what is the sum of 2 and 3", "2 + 3"),
            ("the sum of 1, 2, and 3", "1 + 2 + 3"),
            ("calculate the product of 3 and 4", "3 * 4"),
            ("what is the difference between 10 and 4", "10 - 4"),
            ("the quotient of 10 and 4", "10 / 4"),
            ("multiply 3 by 4", "3 * 4"),
            ("divide 10 by 4", "10 / 4"),
            ("add 2 and 3", "2 + 3"),
            ("subtract 3 from 10", "10 - 3"),
            ("raise 2 to the power of 8", "2 ^ 8"),
            ("square root of 16", "16 ^ 0.5"),
            ("the average of 2, 4 and 6", "(2 + 4 + 6) / 3"),
            ("multiply 2+3 by 4", "(2+3) * 4"),
            ("square -5", "(-5) ^ 2"),
            ("what is 2 to the 10th power", "2 ^ 10"),
            ("what is 6 over 3", "6 / 3"),
            ("sum 2 and 3", "2 + 3"),
        ];
        for (prompt, expression) in cases {
            assert_plan(prompt, &[("calculator", calc(expression), &[])]);
        }
    }

    #[test]
    fn given_add_paraphrases_when_planned_then_titles_keep_what_was_typed() {
        let cases = [
            ("add todo Write tests", "Write tests"),
            ("add a todo to buy milk", "buy milk"),
            ("Add a TODO to Buy Milk.", "Buy Milk"),
            ("add a todo: call the bank", "call the bank"),
            ("create a todo called 'Pay rent'", "Pay rent"),
            (
                "create a new task called \"Call the dentist\"",
                "Call the dentist",
            ),
            ("add a todo called “Call Anna”", "Call Anna"),
            ("create a todo named Book flights", "Book flights"),
            ("remind me to call mom", "call mom"),
            ("Remind me to call Mom!", "call Mom"),
            ("remind me about the meeting", "the meeting"),
            ("don't forget to call grandma", "call grandma"),
            ("new todo buy eggs", "buy eggs"),
            ("new todo: buy eggs", "buy eggs"),
            ("todo: buy eggs", "buy eggs"),
            ("add 'buy bread' to my todos", "buy bread"),
            ("add buy bread to my todo list", "buy bread"),
            ("can you add 'walk the dog' to my list?", "walk the dog"),
            ("put milk on my shopping list", "milk"),
            ("add eggs to the list", "eggs"),
            ("add a task to water the plants", "water the plants"),
            ("set a reminder to pay the bills", "pay the bills"),
            (
                "please add a new todo: Email Bob about the Q3 report",
                "Email Bob about the Q3 report",
            ),
            ("add a todo to buy milk and eggs", "buy milk and eggs"),
            (
                "remind me to buy milk, eggs and bread",
                "buy milk, eggs and bread",
            ),
            ("remind me to eat then sleep", "eat then sleep"),
            (
                "add a todo: don't forget mom's birthday",
                "don't forget mom's birthday",
            ),
            (
                "add a todo to review the kids' homework",
                "review the kids' homework",
            ),
            (
                "add \"Finish report, then send it\" to my todos",
                "Finish report, then send it",
            ),
            ("add a todo to 🎉 party with Zoë", "🎉 party with Zoë"),
            ("add a todo to plan next week", "plan next week"),
            ("add to todo list: buy milk", "buy milk"),
            ("add to my todos: buy milk", "buy milk"),
            ("Add 'Buy groceries' to my to-do list", "Buy groceries"),
            ("add buy groceries to my to do list", "buy groceries"),
            ("add a to-do: call mom", "call mom"),
            ("Create a task: Finish the report", "Finish the report"),
            ("add an item to my list: eggs", "eggs"),
            ("create reminder: stretch", "stretch"),
            (
                "add a todo to read the result of the election",
                "read the result of the election",
            ),
            (
                "remind me to double check the report",
                "double check the report",
            ),
        ];
        for (prompt, title) in cases {
            assert_plan(prompt, &[("todo", add_todo(title), &[])]);
        }
    }

    #[test]
    fn given_several_quoted_titles_when_added_to_the_list_then_each_is_a_todo() {
        assert_plan(
            "add 'milk', 'eggs' and 'bread' to my list",
            &[
                ("todo", add_todo("milk"), &[]),
                ("todo", add_todo("eggs"), &["s1"]),
                ("todo", add_todo("bread"), &["s1", "s2"]),
            ],
        );
    }

    #[test]
    fn given_several_quoted_titles_in_any_add_form_when_planned_then_each_is_a_todo() {
        for prompt in [
            "add todos 'a' and 'b'",
            "remind me to 'a', 'b'",
            "add \"a\" and \"b\" to my todos",
        ] {
            assert_plan(
                prompt,
                &[
                    ("todo", add_todo("a"), &[]),
                    ("todo", add_todo("b"), &["s1"]),
                ],
            );
        }
    }

    #[test]
    fn given_a_calculation_as_a_title_when_planned_then_it_is_calculated_first() {
        for (prompt, expression) in [
            ("add the sum of 2 and 3 to my todos", "2 + 3"),
            ("remind me about the result of 6*7", "6*7"),
            ("add a todo with the product of 3 and 4", "3 * 4"),
        ] {
            assert_plan(
                prompt,
                &[
                    ("calculator", calc(expression), &[]),
                    ("todo", add_todo("{{s1}}"), &["s1"]),
                ],
            );
        }
    }

    #[test]
    fn given_list_paraphrases_when_planned_then_one_list_step() {
        let cases = [
            "list todos",
            "List my todos.",
            "show my todos",
            "show me my todo list",
            "what are my todos",
            "show todo list",
            "list all my tasks?",
            "what's on my todo list",
            "What's on my list?",
            "display my tasks",
            "what do I have to do?",
            "how many todos do I have",
            "show all my todos please",
            "show my to-do list",
            "show me all of my reminders",
            "list everything",
            "my todos",
            "list",
            "what todos do I have?",
            "show me what's on my list",
            "what are my tasks for today",
            "read me my todos",
            "do I have any todos?",
        ];
        for prompt in cases {
            assert_plan(prompt, &[("todo", list_todos(), &[])]);
        }
    }

    #[test]
    fn given_complete_delete_and_get_paraphrases_when_planned_then_the_todo_is_named() {
        let cases: &[(&str, Value)] = &[
            ("complete todo 3", json!({"action": "complete", "id": 3})),
            (
                "mark todo 3 as done",
                json!({"action": "complete", "id": 3}),
            ),
            (
                "mark todo #3 complete",
                json!({"action": "complete", "id": 3}),
            ),
            ("finish todo 2", json!({"action": "complete", "id": 2})),
            ("check off todo 4", json!({"action": "complete", "id": 4})),
            ("tick off task 7", json!({"action": "complete", "id": 7})),
            (
                "check todo 2 off my list",
                json!({"action": "complete", "id": 2}),
            ),
            ("mark task 5 done", json!({"action": "complete", "id": 5})),
            ("I finished todo 3", json!({"action": "complete", "id": 3})),
            ("todo 3 is done", json!({"action": "complete", "id": 3})),
            ("complete #4", json!({"action": "complete", "id": 4})),
            (
                "complete todo number five",
                json!({"action": "complete", "id": 5}),
            ),
            (
                "complete the todo 'buy milk'",
                json!({"action": "complete", "title": "buy milk"}),
            ),
            (
                "mark 'buy milk' as done",
                json!({"action": "complete", "title": "buy milk"}),
            ),
            (
                "mark Buy Milk as done",
                json!({"action": "complete", "title": "Buy Milk"}),
            ),
            (
                "finish the todo called \"buy milk\"",
                json!({"action": "complete", "title": "buy milk"}),
            ),
            (
                "cross off 'call mom'",
                json!({"action": "complete", "title": "call mom"}),
            ),
            (
                "complete the todo 'mom's birthday'",
                json!({"action": "complete", "title": "mom's birthday"}),
            ),
            ("delete todo 3", json!({"action": "delete", "id": 3})),
            ("remove todo #2", json!({"action": "delete", "id": 2})),
            ("delete task number 5", json!({"action": "delete", "id": 5})),
            ("get rid of todo 6", json!({"action": "delete", "id": 6})),
            (
                "delete the todo 'buy milk'",
                json!({"action": "delete", "title": "buy milk"}),
            ),
            (
                "remove the todo called 'buy milk'",
                json!({"action": "delete", "title": "buy milk"}),
            ),
            (
                "remove 'buy milk' from my todos",
                json!({"action": "delete", "title": "buy milk"}),
            ),
            (
                "remove buy milk from my list",
                json!({"action": "delete", "title": "buy milk"}),
            ),
            (
                "take 'buy milk' off my list",
                json!({"action": "delete", "title": "buy milk"}),
            ),
            (
                "delete the todo \"a, b; and then c\"",
                json!({"action": "delete", "title": "a, b; and then c"}),
            ),
            ("show todo 3", json!({"action": "get", "id": 3})),
            ("get todo 2", json!({"action": "get", "id": 2})),
            ("show todo #3", json!({"action": "get", "id": 3})),
            ("what's todo 3?", json!({"action": "get", "id": 3})),
            ("view task 8", json!({"action": "get", "id": 8})),
            (
                "show the todo 'buy milk'",
                json!({"action": "get", "title": "buy milk"}),
            ),
            ("mark 3 as done", json!({"action": "complete", "id": 3})),
            ("set todo 3 to done", json!({"action": "complete", "id": 3})),
            (
                "I'm done with todo 3",
                json!({"action": "complete", "id": 3}),
            ),
            (
                "remove the 'buy milk' todo",
                json!({"action": "delete", "title": "buy milk"}),
            ),
            (
                "delete the buy milk todo",
                json!({"action": "delete", "title": "buy milk"}),
            ),
            (
                "delete 'buy milk'",
                json!({"action": "delete", "title": "buy milk"}),
            ),
            ("cancel todo 5", json!({"action": "delete", "id": 5})),
            ("what does todo 3 say", json!({"action": "get", "id": 3})),
            ("details of todo 4", json!({"action": "get", "id": 4})),
            ("open todo 3", json!({"action": "get", "id": 3})),
        ];
        for (prompt, input) in cases {
            assert_plan(prompt, &[("todo", input.clone(), &[])]);
        }
    }

    #[test]
    fn given_several_ids_when_planned_then_one_ordered_step_each() {
        let complete = |id: u64| json!({"action": "complete", "id": id});
        let delete = |id: u64| json!({"action": "delete", "id": id});
        assert_plan(
            "complete todos 1, 2 and 3",
            &[
                ("todo", complete(1), &[]),
                ("todo", complete(2), &["s1"]),
                ("todo", complete(3), &["s1", "s2"]),
            ],
        );
        assert_plan(
            "delete todo 4 and todo 5",
            &[("todo", delete(4), &[]), ("todo", delete(5), &["s1"])],
        );
    }

    #[test]
    fn given_compound_prompts_when_planned_then_split_only_before_a_request() {
        assert_plan(
            "calculate 2+3 and list todos",
            &[
                ("calculator", calc("2+3"), &[]),
                ("todo", list_todos(), &[]),
            ],
        );
        assert_plan(
            "what is 2+3 and what is 4*5",
            &[
                ("calculator", calc("2+3"), &[]),
                ("calculator", calc("4*5"), &[]),
            ],
        );
        assert_plan(
            "Calculate 2+3. List todos.",
            &[
                ("calculator", calc("2+3"), &[]),
                ("todo", list_todos(), &[]),
            ],
        );
        assert_plan(
            "add a todo: buy milk; list todos",
            &[
                ("todo", add_todo("buy milk"), &[]),
                ("todo", list_todos(), &["s1"]),
            ],
        );
        assert_plan(
            "add a todo to buy milk and complete todo 3",
            &[
                ("todo", add_todo("buy milk"), &[]),
                ("todo", json!({"action": "complete", "id": 3}), &["s1"]),
            ],
        );
        assert_plan(
            "complete todo 1, delete todo 2 and list todos",
            &[
                ("todo", json!({"action": "complete", "id": 1}), &[]),
                ("todo", json!({"action": "delete", "id": 2}), &["s1"]),
                ("todo", list_todos(), &["s1", "s2"]),
            ],
        );
        assert_plan(
            "calculate 2+3\nlist todos",
            &[
                ("calculator", calc("2+3"), &[]),
                ("todo", list_todos(), &[]),
            ],
        );
        assert_plan(
            "what's 6*7? Then remind me about it",
            &[
                ("calculator", calc("6*7"), &[]),
                ("todo", add_todo("{{s1}}"), &["s1"]),
            ],
        );
        assert_plan(
            "First calculate 2+3, then add a todo with the result, and finally list my todos.",
            &[
                ("calculator", calc("2+3"), &[]),
                ("todo", add_todo("{{s1}}"), &["s1"]),
                ("todo", list_todos(), &["s1", "s2"]),
            ],
        );
        assert_plan(
            "list todos and show todo 2",
            &[
                ("todo", list_todos(), &[]),
                ("todo", json!({"action": "get", "id": 2}), &[]),
            ],
        );
    }

    #[test]
    fn given_then_when_planned_then_later_clauses_wait_for_everything_before() {
        let then_forms = [
            "calculate 1+1 then calculate 2+2",
            "calculate 1+1 and then calculate 2+2",
            "calculate 1+1, then calculate 2+2",
            "calculate 1+1; then calculate 2+2",
            "calculate 1+1 after that calculate 2+2",
            "calculate 1+1, and after that, calculate 2+2",
        ];
        for prompt in then_forms {
            assert_plan(
                prompt,
                &[
                    ("calculator", calc("1+1"), &[]),
                    ("calculator", calc("2+2"), &["s1"]),
                ],
            );
        }
        assert_plan(
            "calculate 1+1 and calculate 2+2 then calculate 3+3 and calculate 4+4 then list todos",
            &[
                ("calculator", calc("1+1"), &[]),
                ("calculator", calc("2+2"), &[]),
                ("calculator", calc("3+3"), &["s1", "s2"]),
                ("calculator", calc("4+4"), &["s1", "s2"]),
                ("todo", list_todos(), &["s1", "s2", "s3", "s4"]),
            ],
        );
    }

    #[test]
    fn given_the_seed_prompt_when_planned_then_the_dag_matches() {
        assert_plan(
            "calculate 2+3 and calculate 10*5 and list todos then add a todo with the result",
            &[
                ("calculator", calc("2+3"), &[]),
                ("calculator", calc("10*5"), &[]),
                ("todo", list_todos(), &[]),
                ("todo", add_todo("{{s2}}"), &["s1", "s2", "s3"]),
            ],
        );
    }

    #[test]
    fn given_references_to_an_earlier_result_when_planned_then_titles_name_the_step() {
        let cases = [
            "calculate 3*7 then add a todo with the result",
            "calculate 3*7 and add the result to my todos",
            "calculate 3*7 and then add a todo with the answer",
            "calculate 3*7; remind me about the result",
            "calculate 3*7 and add it as a todo",
            "what is 3*7? add it to my list",
            "calculate 3*7, then save that as a todo",
            "calculate 3*7 and add the sum as a todo",
            "calculate 3*7 then add the previous result to my todo list",
        ];
        for prompt in cases {
            let plan = planned(prompt);
            assert_eq!(plan.steps.len(), 2, "{prompt}");
            assert_eq!(plan.steps[1].input, add_todo("{{s1}}"), "{prompt}");
            assert_eq!(plan.steps[1].depends_on, vec!["s1"], "{prompt}");
        }
    }

    #[test]
    fn given_sum_product_difference_quotient_when_referenced_then_the_matching_calculation_is_used()
    {
        let prompt = |what: &str| {
            format!(
                "calculate 6*7 and 10/2 and 1+1 and 9-4 and (2+3)*4 then add the {what} as a todo"
            )
        };
        // s1 = 6*7, s2 = 10/2, s3 = 1+1, s4 = 9-4, s5 = (2+3)*4 (a product).
        for (what, step) in [
            ("sum", "{{s3}}"),
            ("total", "{{s3}}"),
            ("product", "{{s5}}"),
            ("difference", "{{s4}}"),
            ("quotient", "{{s2}}"),
            ("result", "{{s5}}"),
            ("answer", "{{s5}}"),
        ] {
            let plan = planned(&prompt(what));
            assert_eq!(plan.steps[5].input, add_todo(step), "the {what}");
        }
        // No addition before: the latest calculation.
        let plan = planned("calculate 6*7 and 10/2 then add the sum to my todos");
        assert_eq!(plan.steps[2].input, add_todo("{{s2}}"));
        // Only earlier steps count.
        let plan = planned(
            "calculate 1+1, then calculate 2*2, then calculate 3+3 and add the sum as a todo",
        );
        assert_eq!(plan.steps[3].input, add_todo("{{s3}}"));
    }

    #[test]
    fn given_arithmetic_on_an_earlier_result_when_planned_then_the_reference_is_in_the_expression()
    {
        let cases = [
            ("calculate 2+3 then multiply the result by 4", "{{s1}} * 4"),
            ("calculate 2+3 then calculate the result * 2", "{{s1}} * 2"),
            ("calculate 2+3 then double it", "{{s1}} * 2"),
            ("calculate 2+3 then add 10 to it", "{{s1}} + 10"),
            ("calculate 2+3 then divide it by 2", "{{s1}} / 2"),
            (
                "calculate 2+3 and then what's the result times 3",
                "{{s1}} * 3",
            ),
            (
                "calculate 2+3 then subtract 1 from the answer",
                "{{s1}} - 1",
            ),
            ("calculate 2+3 then square it", "{{s1}} ^ 2"),
        ];
        for (prompt, expression) in cases {
            assert_plan(
                prompt,
                &[
                    ("calculator", calc("2+3"), &[]),
                    ("calculator", calc(expression), &["s1"]),
                ],
            );
        }
        assert_plan(
            "calculate 2+3, then multiply it by 4, then add it to my todos",
            &[
                ("calculator", calc("2+3"), &[]),
                ("calculator", calc("{{s1}} * 4"), &["s1"]),
                ("todo", add_todo("{{s2}}"), &["s1", "s2"]),
            ],
        );
        assert_plan(
            "calculate 2+3 and 4*5 then calculate the sum plus the product",
            &[
                ("calculator", calc("2+3"), &[]),
                ("calculator", calc("4*5"), &[]),
                ("calculator", calc("{{s1}} + {{s2}}"), &["s1", "s2"]),
            ],
        );
    }

    #[test]
    fn given_it_in_a_todo_command_when_planned_then_it_names_the_todo_just_added() {
        assert_plan(
            "add a todo to buy milk then mark it as done",
            &[
                ("todo", add_todo("buy milk"), &[]),
                (
                    "todo",
                    json!({"action": "complete", "title": "{{s1}}"}),
                    &["s1"],
                ),
            ],
        );
    }

    #[test]
    fn given_a_reference_without_an_earlier_step_when_planned_then_it_is_explained() {
        for (prompt, phrase, what) in [
            ("add a todo with the result", "the result", "calculation"),
            ("add the sum as a todo", "the sum", "calculation"),
            ("remind me about the answer", "the answer", "calculation"),
            ("double it", "it", "calculation"),
            ("list todos then add it to my todos", "it", "calculation"),
            (
                "add a todo with the result then calculate 2+3",
                "the result",
                "calculation",
            ),
            ("calculate 2+3 then delete it", "it", "todo"),
            ("delete the todo", "the todo", "todo"),
        ] {
            assert_eq!(
                refused(prompt),
                format!("'{phrase}' refers to an earlier {what}, but there is none before it"),
                "{prompt}"
            );
        }
    }

    #[test]
    fn given_unplannable_prompts_when_planned_then_the_clause_is_quoted_with_what_is_understood() {
        let cases = [
            ("", "There is nothing to do: the prompt is empty."),
            ("   ", "There is nothing to do: the prompt is empty."),
            ("hello", "I don't know how to do \"hello\"."),
            (
                "write me a poem",
                "I don't know how to do \"write me a poem\".",
            ),
            (
                "delete everything",
                "I don't know how to do \"delete everything\" (todos are changed",
            ),
            (
                "delete all todos",
                "I don't know how to do \"delete all todos\"",
            ),
            (
                "clear my todos",
                "I don't know how to do \"clear my todos\"",
            ),
            (
                "calculate 2+3 and write me a poem",
                "I don't know how to do \"write me a poem\".",
            ),
            (
                "write a poem and list todos",
                "I don't know how to do \"write a poem\".",
            ),
            (
                "list todos, then sing a song!",
                "I don't know how to do \"sing a song\".",
            ),
            (
                "add a todo",
                "I don't know how to do \"add a todo\" (a todo needs a title",
            ),
            (
                "what is the meaning of life",
                "\"what is the meaning of life\"",
            ),
            ("calculate", "\"calculate\""),
            ("2+", "\"2+\""),
            ("(2+3", "\"(2+3\""),
            ("5", "\"5\""),
            ("AND AND AND", "\"AND AND AND\""),
            ("🎉🎉🎉", "\"🎉🎉🎉\""),
            ("'", "\"'\""),
            ("complete buy milk", "\"complete buy milk\""),
            (
                "mark the first todo as done",
                "\"mark the first todo as done\"",
            ),
            ("delete the other task", "\"delete the other task\""),
            ("calculate 2+3 and then add 5", "\"add 5\""),
        ];
        for (prompt, start) in cases {
            let message = refused(prompt);
            assert!(message.contains(start), "{prompt:?}: {message}");
            assert!(message.ends_with(UNDERSTOOD), "{prompt:?}: {message}");
        }
        assert!(refused("write me a poem").contains("\"calculate 2+3\""));
        assert!(refused("write me a poem").contains("\"add a todo to buy milk\""));
    }

    #[test]
    fn given_a_long_unknown_clause_when_refused_then_the_quote_is_truncated() {
        let message = refused(&"blah ".repeat(100));
        assert!(message.contains("blah blah"));
        assert!(
            message.chars().count() < 80 + UNDERSTOOD.len() + 60,
            "{message}"
        );
    }

    #[test]
    fn given_too_many_requests_when_planned_then_the_step_limit_refuses_them() {
        let prompt = vec!["calculate 1+1"; 1000].join(" and ");
        let err = PatternPlanner.plan_prompt(&prompt).expect_err("too many");
        assert!(err.to_string().contains("limit of 50"), "{err}");
        let ids: Vec<String> = (1..=60).map(|i| i.to_string()).collect();
        let err = PatternPlanner
            .plan_prompt(&format!("complete todos {}", ids.join(", ")))
            .expect_err("too many");
        assert!(err.to_string().contains("limit of 50"), "{err}");
        assert_eq!(planned(&vec!["list todos"; 50].join(", ")).steps.len(), 50);
    }

    #[test]
    fn given_hostile_inputs_when_planned_then_nothing_panics() {
        let long_quotes = "'a".repeat(2000);
        let ands = "and ".repeat(1000);
        let unknown_segments = vec!["blah"; 1000].join(" and ");
        let parens = "(".repeat(500) + "1" + &")".repeat(500);
        let inputs = [
            "\"",
            "“",
            "'''",
            "{{s1}}",
            "calculate {{s1}} + 1",
            "add a todo {{s9}}",
            "ǅ ß İ ﬃ",
            "\u{0}\u{7f}\u{200b}",
            "todo #",
            "complete todo 99999999999999999999999",
            "1e999 + 1",
            long_quotes.as_str(),
            ands.as_str(),
            unknown_segments.as_str(),
            parens.as_str(),
        ];
        for input in inputs {
            let _ = PatternPlanner.plan_prompt(input);
        }
        // Lowercasing changes byte lengths here ("İ" is 2 bytes, "i̇" 3): titles are sliced
        // from the prompt, not from a lowercased copy.
        assert_plan(
            "ADD A TODO TO VİSİT İZMİR",
            &[("todo", add_todo("VİSİT İZMİR"), &[])],
        );
        assert_plan(
            "Remind me to pay ẞTRASSE İ",
            &[("todo", add_todo("pay ẞTRASSE İ"), &[])],
        );
    }

    #[tokio::test]
    async fn given_the_planner_when_planning_then_the_plan_is_validated_and_signed() {
        let planned = PatternPlanner
            .plan("calculate 3*7 then add a todo with the result", &registry())
            .await
            .expect("plans");
        assert_eq!(
            planned.info,
            PlannerInfo {
                name: "pattern".into(),
                ..Default::default()
            }
        );
        assert_eq!(planned.plan.steps[1].depends_on, vec!["s1"]);
        assert_eq!(PatternPlanner.name(), "pattern");
        // Refusals from validate() come through.
        let err = PatternPlanner
            .plan("delete todo 0", &registry())
            .await
            .expect_err("id 0");
        assert!(matches!(err, PlanError::Invalid(_)), "{err:?}");
        let err = PatternPlanner
            .plan("hello", &registry())
            .await
            .expect_err("hello");
        assert!(matches!(err, PlanError::NotUnderstood(_)), "{err:?}");
    }

    /// Words the planner reacts to, for generating prompts that reach deep into it.
    const VOCAB: &[&str] = &[
        "add",
        "a",
        "todo",
        "to",
        "buy",
        "milk",
        "and",
        "then",
        ",",
        ";",
        ".",
        "?",
        "calculate",
        "2+3",
        "3",
        "*",
        "(",
        ")",
        "the",
        "result",
        "sum",
        "it",
        "list",
        "todos",
        "my",
        "complete",
        "mark",
        "as",
        "done",
        "delete",
        "remove",
        "from",
        "'",
        "\"",
        "remind",
        "me",
        "what",
        "is",
        "times",
        "plus",
        "of",
        "#",
        "show",
        "two",
        "hundred",
        "after",
        "that",
        "x",
        "-",
        "🎉",
        "İ",
        "called",
        "multiply",
        "by",
        "double",
        "product",
        "average",
        "off",
    ];

    proptest! {
        #[test]
        fn given_any_string_when_planned_then_it_never_panics(s in any::<String>()) {
            let _ = PatternPlanner.plan_prompt(&s);
        }

        #[test]
        fn given_keyword_soup_when_planned_then_it_never_panics_and_plans_are_valid(
            words in prop::collection::vec(prop::sample::select(VOCAB), 0..40),
            glue in prop::collection::vec(prop::sample::select(&[" ", "", "  "][..]), 40),
        ) {
            let prompt: String = words
                .iter()
                .zip(glue.iter())
                .flat_map(|(w, g)| [*w, *g])
                .collect();
            if let Ok(mut plan) = PatternPlanner.plan_prompt(&prompt) {
                prop_assert!(!plan.steps.is_empty());
                let before = plan.clone();
                // Whatever is planned uses known tools with valid inputs.
                match super::super::validate(&mut plan, &registry()) {
                    Ok(()) => prop_assert_eq!(plan, before),
                    Err(e) => prop_assert!(false, "{:?} -> {}", prompt, e),
                }
            }
        }
    }
}
