//! Clauses: where a prompt is cut into requests, and how one clause is read.

use std::ops::Range;

use super::arithmetic::arithmetic;
use super::intents::Parse;
use super::table::todo_intents;
use super::tokens::{
    and_continues_number, is_kw, phrase_len, strip_prefixes, strip_suffixes, Kind, Tok,
};

/// Separator words and whether they order what follows after everything before ("then").
pub(super) const SEPARATOR_WORDS: &[(&str, bool)] = &[
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
pub(super) fn separator_at(toks: &[Tok], i: usize) -> Option<(usize, bool)> {
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
pub(super) struct Clause {
    pub(super) segments: Vec<Range<usize>>,
    pub(super) after_then: bool,
    /// How the clause reads, when [`split`] already worked it out.
    pub(super) parse: Option<Parse>,
}

impl Clause {
    /// All the tokens of the clause, including separators merged into it.
    pub(super) fn tokens<'t>(&self, toks: &'t [Tok]) -> &'t [Tok] {
        match (self.segments.first(), self.segments.last()) {
            (Some(a), Some(b)) => toks.get(a.start..b.end).unwrap_or(&[]),
            _ => &[],
        }
    }
}

/// Cut the prompt into clauses: at every separator where the following segment is a
/// complete request on its own; elsewhere the separator stays inside the clause (a title
/// like "buy milk and eggs").
pub(super) fn split(src: &str, toks: &[Tok]) -> Vec<Clause> {
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

/// Politeness and sequencing words ignored at the start of a clause.
#[rustfmt::skip]
pub(super) const LEAD_FILLERS: &[&str] = &[
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
pub(super) const TRAIL_FILLERS: &[&str] = &[
    "please", "pls", "plz", "thanks", "thank you", "thx", "ty", "thanks a lot",
    "thank you very much", ".", "!", "?", ",", ";", ":",
];

/// Read one clause.
pub(super) fn parse_clause(src: &str, toks: &[Tok]) -> Parse {
    let trimmed = strip_prefixes(strip_suffixes(toks, TRAIL_FILLERS), LEAD_FILLERS);
    if trimmed.is_empty() {
        return if toks.is_empty() {
            Parse::Unknown
        } else {
            Parse::Filler
        };
    }
    let toks = trimmed;
    if let Some(intents) = todo_intents(src, toks) {
        return Parse::Intents(intents);
    }
    if let Some(i) = arithmetic(src, toks) {
        return Parse::Intents(vec![i]);
    }
    Parse::Unknown
}
