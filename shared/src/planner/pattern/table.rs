//! The todo intents, as data: one row per intent, in priority order.
//!
//! A row says which words ask for the intent and in which shapes ([`Shape`]), how freely
//! the todo may be named ([`Naming`]), which todo action it builds, the hint given when a
//! clause looks like it but cannot be read, and example prompts. Matching
//! ([`todo_intents`]), the hint of a refusal ([`hint`]), the "I understand ..." message
//! ([`understood`]) and a test that plans every example all read this table, so a new
//! intent is a new row (plus the tool's support for its action).

use std::sync::OnceLock;

use super::clauses::LEAD_FILLERS;
use super::intents::{Intent, TodoAct};
use super::todo::{
    add, list, looks_like_add, COMPLETE_VERBS, COMPLETE_VERBS_LOOSE, DELETE_DROPS, DELETE_VERBS,
    DONE_TAILS, GET_DROPS, GET_VERBS, MARK_VERBS, NOT_DONE_STATES, NOT_DONE_TAILS, OFF_LIST,
    REOPEN_VERBS, STATE_TAILS, TAKE_VERBS,
};
use super::tokens::{prefix_len, strip_prefix, strip_prefixes, strip_suffix, strip_suffixes, Tok};
use super::vocabulary::{strip_list_suffix, targets, Naming};

/// One todo intent.
pub(super) struct TodoIntent {
    /// The todo tool's `action` it builds.
    pub(super) action: &'static str,
    /// Whether the step's output is the todo it names, so a later "it" can mean that todo.
    pub(super) names_todo: bool,
    /// The shapes of clause it accepts, tried in order.
    pub(super) shapes: &'static [Shape],
    /// What a refusal says when a clause starts like this intent but cannot be read.
    pub(super) hint: Option<Hint>,
    /// Prompts it plans as one `todo` step, and that step's input (JSON). The first is
    /// quoted in the "I understand ..." message.
    pub(super) examples: &'static [(&'static str, &'static str)],
}

/// A shape of clause an intent accepts.
pub(super) enum Shape {
    /// "<verb> <todo> [ending]": "complete todo 3", "delete 'milk' from my list".
    Verb {
        verbs: &'static [&'static str],
        /// Words ignored at the end, any number of them ("completely").
        drop: &'static [&'static str],
        ending: Ending,
        naming: Naming,
    },
    /// "<todo> <state>" without a verb: "todo 3 is done".
    State {
        states: &'static [&'static str],
        naming: Naming,
    },
    /// A shape too free for a row of words, read by a function: list, add.
    Read(fn(&str, &[Tok]) -> Option<Vec<Intent>>),
}

/// What may or must follow the todo a verb names.
pub(super) enum Ending {
    /// Nothing: the rest of the clause names the todo.
    Nothing,
    /// Stripped when present ("complete todo 3 as done").
    Optional(Tail),
    /// Must be present ("mark todo 3 as done").
    Required(Tail),
    /// Stripped when present, and then the todo may be a bare title ("delete buy milk
    /// from my list").
    Frees(Tail),
}

/// The words at the end of a clause: "<prep> my list" (any of `off_list`), then
/// optionally one of `words`; or one of `words` alone.
#[derive(Clone, Copy)]
pub(super) struct Tail {
    off_list: &'static [&'static str],
    words: &'static [&'static str],
}

impl Tail {
    /// `toks` without this tail, if it ends with it.
    fn strip(self, toks: &[Tok]) -> Option<&[Tok]> {
        if let Some(r) = strip_list_suffix(toks, self.off_list) {
            return Some(strip_suffix(r, self.words).unwrap_or(r));
        }
        strip_suffix(toks, self.words)
    }
}

/// A refusal's hint, and when it applies.
pub(super) struct Hint {
    /// Whether a clause (politeness removed) looks like the intent.
    pub(super) when: HintWhen,
    pub(super) text: &'static str,
}

/// When a hint applies.
pub(super) enum HintWhen {
    /// The clause starts with one of these words.
    Leads(&'static [&'static str]),
    /// The function says so.
    Test(fn(&[Tok]) -> bool),
}

/// The hint of intents that change one todo.
const CHANGE_HINT: &str =
    "todos are changed one at a time, by number (\"todo 3\") or by title in quotes";

/// "as done", "done", "off my list", "done off my list" ...
const DONE: Tail = Tail {
    off_list: &["off", "from"],
    words: DONE_TAILS,
};

/// "as not done", "undone", "as incomplete" ...
const NOT_DONE: Tail = Tail {
    off_list: &[],
    words: NOT_DONE_TAILS,
};

/// "from my list", "off the todo list", "out of my todos".
const OFF_MY_LIST: Tail = Tail {
    off_list: OFF_LIST,
    words: &[],
};

/// The todo intents in priority order: a clause is the first row that reads it (and
/// arithmetic when none does).
pub(super) const TODO_INTENTS: &[TodoIntent] = &[
    TodoIntent {
        action: "list",
        names_todo: false,
        shapes: &[Shape::Read(list)],
        hint: None,
        examples: &[
            ("list my todos", r#"{"action": "list"}"#),
            ("what's on my todo list?", r#"{"action": "list"}"#),
            ("what do I have to do", r#"{"action": "list"}"#),
        ],
    },
    TodoIntent {
        action: "reopen",
        names_todo: true,
        shapes: &[
            Shape::Verb {
                verbs: REOPEN_VERBS,
                drop: &["again"],
                ending: Ending::Nothing,
                naming: Naming::ID,
            },
            Shape::Verb {
                verbs: MARK_VERBS,
                drop: &[],
                ending: Ending::Required(NOT_DONE),
                naming: Naming::FREE,
            },
            Shape::State {
                states: NOT_DONE_STATES,
                naming: Naming::STRICT,
            },
        ],
        hint: Some(Hint {
            when: HintWhen::Leads(&["reopen", "uncheck", "unmark"]),
            text: CHANGE_HINT,
        }),
        examples: &[
            ("reopen todo 3", r#"{"action": "reopen", "id": 3}"#),
            ("reopen the todo 3", r#"{"action": "reopen", "id": 3}"#),
            ("Re-open todo #3 again", r#"{"action": "reopen", "id": 3}"#),
            (
                "mark todo 3 as not done",
                r#"{"action": "reopen", "id": 3}"#,
            ),
            ("mark todo 3 as undone", r#"{"action": "reopen", "id": 3}"#),
            (
                "mark todo 3 as incomplete",
                r#"{"action": "reopen", "id": 3}"#,
            ),
            (
                "set task 2 back to not done",
                r#"{"action": "reopen", "id": 2}"#,
            ),
            (
                "uncheck 'buy milk'",
                r#"{"action": "reopen", "title": "buy milk"}"#,
            ),
            (
                "mark buy milk as unfinished",
                r#"{"action": "reopen", "title": "buy milk"}"#,
            ),
            ("todo 4 isn't done yet", r#"{"action": "reopen", "id": 4}"#),
        ],
    },
    TodoIntent {
        action: "complete",
        names_todo: true,
        shapes: &[
            Shape::Verb {
                verbs: COMPLETE_VERBS,
                drop: &[],
                ending: Ending::Optional(DONE),
                naming: Naming::ID,
            },
            Shape::Verb {
                verbs: COMPLETE_VERBS_LOOSE,
                drop: &[],
                ending: Ending::Optional(DONE),
                naming: Naming::FREE,
            },
            Shape::Verb {
                verbs: MARK_VERBS,
                drop: &[],
                ending: Ending::Required(DONE),
                naming: Naming::FREE,
            },
            Shape::State {
                states: STATE_TAILS,
                naming: Naming::STRICT,
            },
        ],
        hint: Some(Hint {
            when: HintWhen::Leads(&["complete", "finish", "mark"]),
            text: CHANGE_HINT,
        }),
        examples: &[
            ("complete todo 3", r#"{"action": "complete", "id": 3}"#),
            ("mark todo #3 as done", r#"{"action": "complete", "id": 3}"#),
            ("check off todo 4", r#"{"action": "complete", "id": 4}"#),
            (
                "mark 'buy milk' done",
                r#"{"action": "complete", "title": "buy milk"}"#,
            ),
            ("todo 3 is done", r#"{"action": "complete", "id": 3}"#),
        ],
    },
    TodoIntent {
        action: "delete",
        names_todo: false,
        shapes: &[
            Shape::Verb {
                verbs: DELETE_VERBS,
                drop: DELETE_DROPS,
                ending: Ending::Frees(OFF_MY_LIST),
                naming: Naming::ID,
            },
            Shape::Verb {
                verbs: TAKE_VERBS,
                drop: DELETE_DROPS,
                ending: Ending::Required(OFF_MY_LIST),
                naming: Naming::FREE,
            },
        ],
        hint: Some(Hint {
            when: HintWhen::Leads(&["delete", "remove", "clear", "erase"]),
            text: CHANGE_HINT,
        }),
        examples: &[
            (
                "delete the todo 'buy milk'",
                r#"{"action": "delete", "title": "buy milk"}"#,
            ),
            ("remove todo #2", r#"{"action": "delete", "id": 2}"#),
            (
                "remove 'buy milk' from my todos",
                r#"{"action": "delete", "title": "buy milk"}"#,
            ),
            (
                "take buy milk off my list",
                r#"{"action": "delete", "title": "buy milk"}"#,
            ),
        ],
    },
    TodoIntent {
        action: "get",
        names_todo: true,
        shapes: &[Shape::Verb {
            verbs: GET_VERBS,
            drop: GET_DROPS,
            ending: Ending::Nothing,
            naming: Naming::STRICT,
        }],
        hint: None,
        examples: &[
            ("show todo 3", r#"{"action": "get", "id": 3}"#),
            ("what's todo 5", r#"{"action": "get", "id": 5}"#),
            (
                "show the todo 'buy milk'",
                r#"{"action": "get", "title": "buy milk"}"#,
            ),
        ],
    },
    TodoIntent {
        action: "add",
        names_todo: true,
        shapes: &[Shape::Read(add)],
        hint: Some(Hint {
            when: HintWhen::Test(looks_like_add),
            text: "a todo needs a title, e.g. \"add a todo to buy milk\"",
        }),
        examples: &[
            (
                "add a todo to buy milk",
                r#"{"action": "add", "title": "buy milk"}"#,
            ),
            (
                "remind me to call mom",
                r#"{"action": "add", "title": "call mom"}"#,
            ),
            (
                "add 'buy bread' to my todos",
                r#"{"action": "add", "title": "buy bread"}"#,
            ),
        ],
    },
];

/// The intents a clause (politeness removed) reads as: those of the first row that reads
/// it.
pub(super) fn todo_intents(src: &str, toks: &[Tok]) -> Option<Vec<Intent>> {
    TODO_INTENTS.iter().find_map(|row| {
        row.shapes
            .iter()
            .find_map(|shape| read(src, toks, row, shape))
    })
}

/// Read a clause in one shape of a row.
fn read(src: &str, toks: &[Tok], row: &TodoIntent, shape: &Shape) -> Option<Vec<Intent>> {
    let (body, naming) = match *shape {
        Shape::Read(f) => return f(src, toks),
        Shape::State { states, naming } => (strip_suffix(toks, states)?, naming),
        Shape::Verb {
            verbs,
            drop,
            ref ending,
            naming,
        } => {
            let rest = strip_suffixes(strip_prefix(toks, verbs)?, drop);
            match *ending {
                Ending::Nothing => (rest, naming),
                Ending::Optional(tail) => (tail.strip(rest).unwrap_or(rest), naming),
                Ending::Required(tail) => (tail.strip(rest)?, naming),
                Ending::Frees(tail) => match tail.strip(rest) {
                    Some(body) => (
                        body,
                        Naming {
                            bare_title: true,
                            ..naming
                        },
                    ),
                    None => (rest, naming),
                },
            }
        }
    };
    let act = TodoAct {
        action: row.action,
        names_todo: row.names_todo,
    };
    let named = targets(src, body, naming)?;
    Some(named.into_iter().map(|t| Intent::Todo(act, t)).collect())
}

/// The hint for a clause that looks like a todo request but is not one the planner can
/// do: that of the first row it looks like.
pub(super) fn hint(toks: &[Tok]) -> Option<&'static str> {
    let toks = strip_prefixes(toks, LEAD_FILLERS);
    TODO_INTENTS.iter().find_map(|row| {
        let hint = row.hint.as_ref()?;
        let applies = match hint.when {
            HintWhen::Leads(words) => prefix_len(toks, words).is_some(),
            HintWhen::Test(f) => f(toks),
        };
        applies.then_some(hint.text)
    })
}

/// What the pattern planner understands, appended to every "not understood" message: the
/// first example of every todo intent.
pub fn understood() -> &'static str {
    static MESSAGE: OnceLock<String> = OnceLock::new();
    MESSAGE.get_or_init(|| {
        let todos: Vec<String> = TODO_INTENTS
            .iter()
            .filter_map(|row| row.examples.first())
            .map(|(prompt, _)| format!("\"{prompt}\""))
            .collect();
        format!(
            "I understand: arithmetic (\"calculate 2+3\", \"what is 10*5\"), todos ({}), \
             combined with \"and\", \"then\", commas or semicolons, and \"the result\" to use \
             an earlier answer.",
            todos.join(", ")
        )
    })
}
