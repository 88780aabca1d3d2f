//! References to earlier results: "the result", "the sum", "it".

use super::intents::RefKind;
use super::tokens::{is_kw, phrase_len, prefix_len, Tok};

/// Determiners of an earlier-result phrase.
pub(super) const REF_DETS: &[&str] = &["the", "that", "this", "its", "my", "your", "our"];

/// Adjectives of an earlier-result phrase.
#[rustfmt::skip]
pub(super) const REF_ADJS: &[&str] = &[
    "previous", "last", "latest", "above", "same", "former", "prior", "earlier", "final",
    "calculated", "computed", "resulting", "new", "most recent", "recent", "current",
];

/// Nouns of an earlier-result phrase and what they ask for.
pub(super) const REF_NOUNS: &[(&str, RefKind)] = &[
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
pub(super) const REF_TAILS: &[(&str, Option<RefKind>)] = &[
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
pub(super) fn ref_phrase(toks: &[Tok]) -> Option<(RefKind, usize)> {
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
