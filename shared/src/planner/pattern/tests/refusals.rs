//! Refusals and robustness: what is not understood is explained; nothing panics.

use proptest::prelude::*;

use super::*;

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
        assert!(message.ends_with(understood()), "{prompt:?}: {message}");
    }
    assert!(refused("write me a poem").contains("\"calculate 2+3\""));
    assert!(refused("write me a poem").contains("\"add a todo to buy milk\""));
}

#[test]
fn given_a_long_unknown_clause_when_refused_then_the_quote_is_truncated() {
    let message = refused(&"blah ".repeat(100));
    assert!(message.contains("blah blah"));
    assert!(
        message.chars().count() < 80 + understood().len() + 60,
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
    "reopen",
    "not",
    "undone",
    "isn't",
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
            match crate::planner::validate(&mut plan, &registry()) {
                Ok(()) => {
                    // Validation only adds dependencies (of the shared todo store).
                    prop_assert_eq!(plan.steps.len(), before.steps.len());
                    for (after, planned) in plan.steps.iter().zip(&before.steps) {
                        prop_assert_eq!(
                            (&after.id, &after.tool, &after.input),
                            (&planned.id, &planned.tool, &planned.input)
                        );
                        for d in &planned.depends_on {
                            prop_assert!(after.depends_on.contains(d), "{:?} lost {}", prompt, d);
                        }
                    }
                }
                Err(e) => prop_assert!(false, "{:?} -> {}", prompt, e),
            }
        }
    }
}
