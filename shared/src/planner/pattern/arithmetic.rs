//! Arithmetic: calculations written with symbols or in words.

use crate::tools::expr::{self, ExprError};

use super::intents::{Expr, Intent, RefUse};
use super::references::ref_phrase;
use super::tokens::{
    is_kw, number_words, phrase_len, prefix_len, strip_prefixes, strip_suffixes, text, Kind, Tok,
};

/// Words that ask for a calculation.
#[rustfmt::skip]
pub(super) const CALC_LEADS: &[&str] = &[
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
pub(super) const CALC_TAILS: &[&str] = &[
    "is", "are", "equals", "equal", "=", "make", "makes", "come to", "comes to", "give", "gives",
    "give me", "give you", "for me", "equal to", "be", "exactly",
];

/// Words inside an expression and the operator they stand for.
pub(super) const OPERATOR_WORDS: &[(&str, &str)] = &[
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
pub(super) fn arithmetic(src: &str, toks: &[Tok]) -> Option<Intent> {
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
    let has_operator = expr.outline().is_some_and(|o| o.has_operator);
    (had_lead || explicit || has_operator).then_some(Intent::Calculate(expr))
}

/// Whether the calculator can parse `expr` (references read as numbers). Arithmetic errors
/// (division by zero, too long) are left for the tool and `validate()` to report.
pub(super) fn syntax_ok(expr: &Expr) -> bool {
    !matches!(
        expr::evaluate(&expr.placeholder()),
        Err(ExprError::Syntax { .. } | ExprError::Empty)
    )
}

/// An expression made of numbers, operators (as symbols or words), parentheses and
/// earlier results, written with the spacing the user typed.
pub(super) fn plain_expr(src: &str, toks: &[Tok]) -> Option<Expr> {
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
pub(super) enum Form {
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
pub(super) const FORMS: &[(&[&str], Form)] = &[
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
pub(super) fn expr_form(src: &str, toks: &[Tok]) -> Option<Expr> {
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
pub(super) fn apply_form(src: &str, toks: &[Tok], form: Form) -> Option<Expr> {
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
pub(super) fn split_once<'t>(toks: &'t [Tok], words: &[&str]) -> Option<(&'t [Tok], &'t [Tok])> {
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
pub(super) fn split_all(toks: &[Tok]) -> Vec<&[Tok]> {
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
