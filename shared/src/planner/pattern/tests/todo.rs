//! Todo requests: add, list, complete, delete and get, in their many phrasings.

use super::*;

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
