//! The intent table: every example of every row plans as that row says, and the table
//! drives the "I understand ..." message and the hints.

use super::*;
use crate::planner::pattern::table::TODO_INTENTS;

#[test]
fn given_every_example_of_every_intent_when_planned_then_it_is_one_todo_step_of_that_action() {
    let mut seen = 0;
    for row in TODO_INTENTS {
        assert!(!row.examples.is_empty(), "{} has no examples", row.action);
        for (prompt, input) in row.examples {
            let input: Value = serde_json::from_str(input)
                .unwrap_or_else(|e| panic!("example input of {prompt:?} is not JSON: {e}"));
            assert_eq!(input["action"], row.action, "example {prompt:?}");
            assert_plan(prompt, &[("todo", input, &[])]);
            seen += 1;
        }
    }
    assert!(seen >= 25, "only {seen} examples");
}

#[test]
fn given_the_table_when_refusing_then_the_message_quotes_the_first_example_of_each_intent() {
    let message = refused("sing a song");
    for row in TODO_INTENTS {
        let (first, _) = row.examples[0];
        assert!(
            message.contains(&format!("\"{first}\"")),
            "{message} should quote {first:?}"
        );
    }
    assert!(message.ends_with(understood()), "{message}");
    assert!(
        understood().starts_with("I understand: arithmetic (\"calculate 2+3\""),
        "{}",
        understood()
    );
}

#[test]
fn given_reopen_paraphrases_when_planned_then_the_todo_is_reopened() {
    let reopen_id = |id: u64| json!({ "action": "reopen", "id": id });
    let reopen_title = |t: &str| json!({ "action": "reopen", "title": t });
    let cases: Vec<(&str, Value)> = vec![
        ("reopen todo 3", reopen_id(3)),
        ("Reopen the todo 3.", reopen_id(3)),
        ("please reopen todo #3", reopen_id(3)),
        ("reopen 3", reopen_id(3)),
        ("re-open task number 7", reopen_id(7)),
        ("reopen todo 3 again", reopen_id(3)),
        ("mark todo 3 as not done", reopen_id(3)),
        ("Mark todo 3 as undone", reopen_id(3)),
        ("mark todo 3 as incomplete", reopen_id(3)),
        ("mark todo 3 not completed", reopen_id(3)),
        ("mark todo 3 as not done yet", reopen_id(3)),
        ("set todo 3 to not done", reopen_id(3)),
        ("mark todo 3 as open", reopen_id(3)),
        ("uncheck todo 2", reopen_id(2)),
        ("untick todo 2", reopen_id(2)),
        ("reopen the todo 'buy milk'", reopen_title("buy milk")),
        ("reopen \"Pay rent\"", reopen_title("Pay rent")),
        ("mark buy milk as not done", reopen_title("buy milk")),
        ("todo 3 is not done", reopen_id(3)),
        ("todo 3 isn't done after all", reopen_id(3)),
    ];
    for (prompt, input) in cases {
        assert_plan(prompt, &[("todo", input, &[])]);
    }
    // Several at once, and "it" for the todo just completed.
    assert_plan(
        "reopen todos 1 and 2",
        &[("todo", reopen_id(1), &[]), ("todo", reopen_id(2), &["s1"])],
    );
    assert_plan(
        "complete todo 4 and then reopen it",
        &[
            ("todo", json!({"action": "complete", "id": 4}), &[]),
            ("todo", reopen_title("{{s1}}"), &["s1"]),
        ],
    );
    // "Done" still completes, and a bare title needs quotes or "todo" after "reopen".
    assert_plan(
        "mark todo 3 as done",
        &[("todo", json!({"action": "complete", "id": 3}), &[])],
    );
    let message = refused("reopen everything");
    assert!(
        message.contains("(todos are changed one at a time"),
        "{message}"
    );
}
