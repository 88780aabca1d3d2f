//! The todo vocabulary of each intent (its verbs and endings), and the readers of the two
//! shapes too free for a row of words: list and add. The intents themselves are rows of
//! [`super::table::TODO_INTENTS`].

use super::arithmetic::split_all;
use super::intents::Intent;
use super::tokens::{
    is_exactly, is_kw, prefix_len, quoted_inside, strip_prefix, strip_prefixes, strip_suffix,
    strip_suffixes, Kind, Tok,
};
use super::vocabulary::{
    add_intents, clean_title, is_bare_noun, strip_list_suffix, LIST_DETS, LIST_NOUNS, TODO_NOUNS,
    TODO_NOUNS_SINGULAR,
};

/// Words a "show my todos" request is made of.
#[rustfmt::skip]
pub(super) const LIST_WORDS: &[&str] = &[
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
pub(super) const LIST_REQUEST_NOUNS: &[&str] = &[
    "todos", "todo", "dos", "tasks", "task", "list", "lists", "reminders", "checklist",
    "todo's", "items", "entries",
];

/// Whole sentences that ask for the list.
#[rustfmt::skip]
pub(super) const LIST_SENTENCES: &[&str] = &[
    "what do i have to do", "what do i need to do", "what's left to do", "what is left to do",
    "what's on my plate", "what is on my plate", "what have i got to do", "what must i do",
];

/// "list todos", "show my todos", "what's on my todo list", "list all my tasks".
pub(super) fn list(_src: &str, toks: &[Tok]) -> Option<Vec<Intent>> {
    if is_exactly(toks, LIST_SENTENCES) {
        return Some(vec![Intent::List]);
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
    (has_noun || everything).then(|| vec![Intent::List])
}

/// Verbs that complete the todo named after them, which must say "todo" or be quoted.
pub(super) const COMPLETE_VERBS: &[&str] = &["complete", "finish", "close", "resolve"];

/// Verbs that complete the todo named after them, which may be a bare title.
#[rustfmt::skip]
pub(super) const COMPLETE_VERBS_LOOSE: &[&str] = &[
    "check off", "tick off", "cross off", "mark off", "strike off", "cross out", "i finished",
    "i've finished", "i have finished", "i completed", "i've completed", "i have completed",
    "i did", "i've done", "i have done", "i'm done with", "i am done with", "done with",
];

/// Verbs that complete a todo when followed by a "done" word ("mark todo 3 as done").
pub(super) const MARK_VERBS: &[&str] = &["mark", "set", "flag", "tick", "check", "cross", "strike"];

/// The "done" words after a todo.
#[rustfmt::skip]
pub(super) const DONE_TAILS: &[&str] = &[
    "as done", "done", "as complete", "complete", "as completed", "completed", "as finished",
    "finished", "as checked", "checked", "checked off", "as checked off", "off", "to done",
    "to complete", "to completed", "as resolved", "resolved", "as closed", "closed",
    "as done now", "done now",
];

/// "<todo> is done" without a verb.
#[rustfmt::skip]
pub(super) const STATE_TAILS: &[&str] = &[
    "is done", "is complete", "is completed", "is finished", "has been done",
    "has been completed", "is now done", "is all done",
];

/// Verbs that reopen the todo named after them ("reopen todo 3").
#[rustfmt::skip]
pub(super) const REOPEN_VERBS: &[&str] = &[
    "reopen", "re - open", "uncheck", "untick", "unmark", "uncomplete", "un - complete",
];

/// The "not done" words after a todo ("mark todo 3 as not done").
#[rustfmt::skip]
pub(super) const NOT_DONE_TAILS: &[&str] = &[
    "as not done", "not done", "as not done yet", "not done yet", "as undone", "undone",
    "as incomplete", "incomplete", "as not complete", "not complete", "as not completed",
    "not completed", "as unfinished", "unfinished", "as not finished", "not finished",
    "as open", "as open again", "as unchecked", "unchecked", "as pending", "to not done",
    "to undone", "to incomplete", "to open", "to unfinished", "to pending", "back to open",
    "back to not done", "as not done again",
];

/// "<todo> is not done" without a verb.
#[rustfmt::skip]
pub(super) const NOT_DONE_STATES: &[&str] = &[
    "is not done", "isn't done", "is not done yet", "isn't done yet", "is undone",
    "is incomplete", "is not complete", "isn't complete", "is not completed",
    "isn't completed", "is not finished", "isn't finished", "is unfinished", "is open again",
    "is not done after all", "isn't done after all",
];

/// Verbs that delete the todo named after them.
#[rustfmt::skip]
pub(super) const DELETE_VERBS: &[&str] = &[
    "delete", "remove", "erase", "drop", "discard", "cancel", "trash", "clear", "scrap",
    "ditch", "get rid of", "forget", "forget about", "bin", "throw away", "throw out", "purge",
    "nuke",
];

/// Verbs that delete a todo only with "off my list" after it ("take milk off my list").
pub(super) const TAKE_VERBS: &[&str] = &["take", "take out"];

/// Words ignored after the todo a delete names.
pub(super) const DELETE_DROPS: &[&str] = &["completely", "permanently", "for good", "entirely"];

/// What a todo is taken off or out of: "from", "off", "out of" (my list).
pub(super) const OFF_LIST: &[&str] = &["from", "off", "out of"];

/// Verbs that fetch one todo.
#[rustfmt::skip]
pub(super) const GET_VERBS: &[&str] = &[
    "show", "show me", "get", "get me", "view", "display", "fetch", "open", "see", "find",
    "look up", "lookup", "read", "describe", "retrieve", "give me", "tell me about", "what is",
    "what's", "whats", "what does", "what about", "details of", "details for", "details on",
    "info on", "info about", "information about", "information on", "pull up", "bring up",
    "check", "let me see", "look at", "show details of", "show the details of",
];

/// Words ignored after the todo a get names ("what does todo 3 say").
pub(super) const GET_DROPS: &[&str] = &["say", "says", "contain", "contains", "details", "for me"];

/// Verbs that create a todo ("add a todo ...", "new todo ...").
#[rustfmt::skip]
pub(super) const ADD_VERBS: &[&str] = &[
    "add", "create", "make", "new", "put", "put in", "save", "write", "write down", "record",
    "log", "enter", "insert", "start", "jot down", "note down", "schedule", "register", "set",
    "set up", "add in", "append",
];

/// Verbs that put a title on the list ("add buy bread to my list").
#[rustfmt::skip]
pub(super) const PUT_VERBS: &[&str] = &[
    "add", "put", "save", "write", "write down", "append", "stick", "throw", "pop", "jot",
    "jot down", "note", "note down", "put down", "include", "place", "set", "log", "record",
    "enter", "insert", "add in", "throw in", "store", "keep", "make", "turn", "create",
    "register",
];

/// Words between the verb and "todo" ("add a new todo").
pub(super) const ADD_DETS: &[&str] = &[
    "a", "an", "the", "one", "another", "new", "single", "more", "quick", "simple", "my",
];

/// Words between "todo" and its title.
#[rustfmt::skip]
pub(super) const ADD_SEPS: &[&str] = &[
    ":", "-", "–", "—", ",", "=", "called", "named", "titled", "entitled", "saying",
    "that says", "which says", "reading", "that reads", "with the title", "with title",
    "with the text", "with text", "with the name", "with name", "with the description",
    "labeled", "labelled", "for", "about", "from", "with", "to",
];

/// Phrases that ask for a reminder, followed by its title.
#[rustfmt::skip]
pub(super) const REMINDER_LEADS: &[&str] = &[
    "remind me to", "remind me about", "remind me of", "remind me that", "remind me",
    "remind me :", "don't forget to", "dont forget to", "do not forget to",
    "don't let me forget to", "remember to", "i need to remember to", "i must remember to",
    "note to self", "note to self :",
];

/// "add todo Write tests", "add a todo to buy milk", "add a todo: call the bank",
/// "create a todo called 'Pay rent'", "remind me to call mom", "new todo buy eggs",
/// "add 'buy bread' to my todos", "add 'milk' and 'eggs' to my list",
/// "add the result as a todo", "todo: buy eggs".
pub(super) fn add(src: &str, toks: &[Tok]) -> Option<Vec<Intent>> {
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
pub(super) fn quoted_list(src: &str, toks: &[Tok]) -> Option<Vec<String>> {
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
pub(super) fn list_phrase_prefix(toks: &[Tok], need_det: bool) -> Option<&[Tok]> {
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

/// Whether a clause starts like an add ("add a todo", "remind me") though no title could
/// be read from it.
pub(super) fn looks_like_add(toks: &[Tok]) -> bool {
    let add = strip_prefix(toks, ADD_VERBS).map(|r| strip_prefixes(r, ADD_DETS));
    add.is_some_and(|r| prefix_len(r, TODO_NOUNS).is_some())
        || prefix_len(toks, REMINDER_LEADS).is_some()
}
