//! Compound prompts: where they are split, what "then" orders, and references.

use super::*;

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
fn given_todo_steps_around_a_calculation_when_planned_then_the_store_orders_them_and_deps_are_in_plan_order(
) {
    // s3 references s2 and, through the shared todo store, waits for s1 too.
    assert_plan(
        "add a todo to buy milk, calculate 2+3 and add the result to my todos",
        &[
            ("todo", add_todo("buy milk"), &[]),
            ("calculator", calc("2+3"), &[]),
            ("todo", add_todo("{{s2}}"), &["s1", "s2"]),
        ],
    );
    // Reads of the store stay parallel to each other, and wait for an earlier write.
    assert_plan(
        "list my todos, show todo 2 and complete todo 3, then show todo 3",
        &[
            ("todo", list_todos(), &[]),
            ("todo", json!({"action": "get", "id": 2}), &[]),
            (
                "todo",
                json!({"action": "complete", "id": 3}),
                &["s1", "s2"],
            ),
            (
                "todo",
                json!({"action": "get", "id": 3}),
                &["s1", "s2", "s3"],
            ),
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
