//! The todo vocabulary: nouns for todos and the list, titles, and how a request names the
//! todos it acts on (ids, titles, "it").

use super::arithmetic::{expr_form, plain_expr, syntax_ok};
use super::intents::{Expr, Intent, RefKind, RefUse, Target, Title};
use super::references::ref_phrase;
use super::todo::{quoted_list, ADD_DETS};
use super::tokens::{
    integer_at, is_exactly, prefix_len, quoted_inside, strip_prefix, strip_prefixes, strip_suffix,
    text, Kind, Tok,
};

/// Words for one todo, or several.
#[rustfmt::skip]
pub(super) const TODO_NOUNS: &[&str] = &[
    "todo", "todos", "to - do", "to - dos", "todo item", "todo items", "to - do item",
    "to - do items", "task", "tasks", "reminder", "reminders", "item", "items", "entry",
    "entries", "todo entry", "note", "todo's",
];

/// Words for one todo.
#[rustfmt::skip]
pub(super) const TODO_NOUNS_SINGULAR: &[&str] = &[
    "todo", "to - do", "todo item", "to - do item", "task", "reminder", "item", "entry",
    "todo entry", "note",
];

/// Words for the todo list as a whole ("to my todo list").
#[rustfmt::skip]
pub(super) const LIST_NOUNS: &[&str] = &[
    "todo list", "to - do list", "to do list", "todos list", "todos", "to - dos", "todo's",
    "to - do's", "task list", "tasks list", "tasks", "list", "checklist", "reminders",
    "reminder list", "list of todos", "list of tasks", "todo", "to - do", "to do's",
];

/// Determiners before the list ("my", "the").
pub(super) const LIST_DETS: &[&str] = &["my", "the", "our", "your"];

/// `toks` without a trailing "<prep> [my|the] [word] <list noun>" ("to my shopping list").
pub(super) fn strip_list_suffix<'t>(toks: &'t [Tok], preps: &[&str]) -> Option<&'t [Tok]> {
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
pub(super) fn is_bare_noun(toks: &[Tok]) -> bool {
    let rest = strip_prefixes(toks, ADD_DETS);
    rest.is_empty() || is_exactly(rest, TODO_NOUNS)
}

/// A title as typed: trimmed, one pair of surrounding quotes removed.
pub(super) fn clean_title(s: &str) -> Option<String> {
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
pub(super) fn title_of(src: &str, toks: &[Tok]) -> Option<Title> {
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
pub(super) fn add_intents(src: &str, toks: &[Tok]) -> Option<Vec<Intent>> {
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
pub(super) fn calculation_title(src: &str, toks: &[Tok]) -> Option<Expr> {
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

/// How freely a todo may be named.
#[derive(Debug, Clone, Copy)]
pub(super) struct Naming {
    /// An unquoted title without "todo" before it ("mark buy milk as done").
    pub(super) bare_title: bool,
    /// A number without "todo" or "#" before it ("complete 3").
    pub(super) bare_id: bool,
}

impl Naming {
    /// Only "todo 3", "#3", a quoted title or "the todo called X".
    pub(super) const STRICT: Naming = Naming {
        bare_title: false,
        bare_id: false,
    };
    /// Also a bare number ("complete 3").
    pub(super) const ID: Naming = Naming {
        bare_title: false,
        bare_id: true,
    };
    /// Also a bare number or a bare title ("mark buy milk as done").
    pub(super) const FREE: Naming = Naming {
        bare_title: true,
        bare_id: true,
    };
}

/// Words that name a particular todo among several ("todo number 3", "#3").
#[rustfmt::skip]
pub(super) const ID_MARKERS: &[&str] = &[
    "number", "no", "no .", "num", "nr", "#", "id", "id #", "number #", "no . #", "with id",
    "with the id", "with number", "with the number", "n°",
];

/// Words that introduce a todo's title.
#[rustfmt::skip]
pub(super) const TITLE_MARKERS: &[&str] = &[
    "called", "named", "titled", "entitled", ":", "with the title", "with title", "that says",
    "saying",
];

/// Words a bare title may not start with ("delete everything" is not a todo title).
#[rustfmt::skip]
pub(super) const NOT_TITLES: &[&str] = &[
    "all", "every", "everything", "each", "any", "both", "them", "these", "those", "a", "an",
    "first", "second", "third", "fourth", "fifth", "last", "next", "latest", "newest", "oldest",
    "other", "top", "bottom",
];

/// Which todos a run of tokens names: ids ("todo 3", "todos 1, 2 and 3", "#4"), a title
/// (quoted, or after "todo"), or the latest todo ("it", "the todo").
pub(super) fn targets(src: &str, toks: &[Tok], naming: Naming) -> Option<Vec<Target>> {
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
pub(super) fn id_list(toks: &[Tok]) -> Option<(Vec<u64>, bool)> {
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
