//! Arithmetic: calculations with symbols and in words, and on earlier results.

use super::*;

#[test]
fn given_arithmetic_paraphrases_when_planned_then_one_calculator_step() {
    let cases = [
        ("calculate 2+3", "2+3"),
        ("CALCULATE 2+3", "2+3"),
        ("  Calculate   2 + 3  !", "2 + 3"),
        ("compute (4 + 6) / 2", "(4 + 6) / 2"),
        ("what is 10*5", "10*5"),
        ("What is 10*5?", "10*5"),
        ("what's 7 - 2", "7 - 2"),
        ("whats 6*7", "6*7"),
        ("evaluate 2^8", "2^8"),
        ("calc 3 * 7", "3 * 7"),
        ("solve 1+1", "1+1"),
        ("how much is 6/3", "6/3"),
        ("work out 17 * 3.", "17 * 3"),
        ("figure out 100 - 37", "100 - 37"),
        ("What does 2+2 equal?", "2+2"),
        ("tell me what 9 * 9 is", "9 * 9"),
        ("2+3", "2+3"),
        ("2 + 2 = ?", "2 + 2"),
        ("-3 + 5", "-3 + 5"),
        ("5 * (3 + 2)", "5 * (3 + 2)"),
        ("What's 2 ** 10", "2 ** 10"),
        ("please calculate 2+3", "2+3"),
        ("can you calculate 2+3?", "2+3"),
        ("Could you please compute 8/2", "8/2"),
        ("I want you to calculate 5*5", "5*5"),
        ("hey, calculate 2+3", "2+3"),
        ("calculate 1,000 + 5.5", "1000 + 5.5"),
        ("calculate 2e3 / 4", "2e3 / 4"),
        ("3×4", "3*4"),
        ("9 ÷ 3", "9 / 3"),
        ("Compute: 5*5", "5*5"),
        ("I need to know what 5 + 5 is", "5 + 5"),
        ("Please work out 12 * 12 for me", "12 * 12"),
    ];
    for (prompt, expression) in cases {
        assert_plan(prompt, &[("calculator", calc(expression), &[])]);
    }
}

#[test]
fn given_operators_written_in_words_when_planned_then_they_become_symbols() {
    let cases = [
        ("10 times 5", "10 * 5"),
        ("10 plus 5", "10 + 5"),
        ("7 minus 2", "7 - 2"),
        ("8 divided by 2", "8 / 2"),
        ("10 multiplied by 3", "10 * 3"),
        ("2 to the power of 8", "2 ^ 8"),
        ("what is 2 raised to 10", "2 ^ 10"),
        ("3 x 4", "3 * 4"),
        ("3x4", "3 * 4"),
        ("10 mod 3", "10 % 3"),
        ("17 modulo 5", "17 % 5"),
        ("what's 5 squared", "5 ^ 2"),
        ("what is 3 cubed?", "3 ^ 3"),
        ("2 times 3 plus 4", "2 * 3 + 4"),
        ("what is 15% of 200", "15 / 100 * 200"),
        ("what is two plus three", "2 + 3"),
        ("calculate twenty-one times 2", "21 * 2"),
        ("calculate two hundred and five plus one", "205 + 1"),
        ("what is the sum of 2 and 3", "2 + 3"),
        ("the sum of 1, 2, and 3", "1 + 2 + 3"),
        ("calculate the product of 3 and 4", "3 * 4"),
        ("what is the difference between 10 and 4", "10 - 4"),
        ("the quotient of 10 and 4", "10 / 4"),
        ("multiply 3 by 4", "3 * 4"),
        ("divide 10 by 4", "10 / 4"),
        ("add 2 and 3", "2 + 3"),
        ("subtract 3 from 10", "10 - 3"),
        ("raise 2 to the power of 8", "2 ^ 8"),
        ("square root of 16", "16 ^ 0.5"),
        ("the average of 2, 4 and 6", "(2 + 4 + 6) / 3"),
        ("multiply 2+3 by 4", "(2+3) * 4"),
        ("square -5", "(-5) ^ 2"),
        ("what is 2 to the 10th power", "2 ^ 10"),
        ("what is 6 over 3", "6 / 3"),
        ("sum 2 and 3", "2 + 3"),
    ];
    for (prompt, expression) in cases {
        assert_plan(prompt, &[("calculator", calc(expression), &[])]);
    }
}
#[test]
fn given_sum_product_difference_quotient_when_referenced_then_the_matching_calculation_is_used() {
    let prompt = |what: &str| {
        format!("calculate 6*7 and 10/2 and 1+1 and 9-4 and (2+3)*4 then add the {what} as a todo")
    };
    // s1 = 6*7, s2 = 10/2, s3 = 1+1, s4 = 9-4, s5 = (2+3)*4 (a product).
    for (what, step) in [
        ("sum", "{{s3}}"),
        ("total", "{{s3}}"),
        ("product", "{{s5}}"),
        ("difference", "{{s4}}"),
        ("quotient", "{{s2}}"),
        ("result", "{{s5}}"),
        ("answer", "{{s5}}"),
    ] {
        let plan = planned(&prompt(what));
        assert_eq!(plan.steps[5].input, add_todo(step), "the {what}");
    }
    // No addition before: the latest calculation.
    let plan = planned("calculate 6*7 and 10/2 then add the sum to my todos");
    assert_eq!(plan.steps[2].input, add_todo("{{s2}}"));
    // Only earlier steps count.
    let plan =
        planned("calculate 1+1, then calculate 2*2, then calculate 3+3 and add the sum as a todo");
    assert_eq!(plan.steps[3].input, add_todo("{{s3}}"));
}

#[test]
fn given_arithmetic_on_an_earlier_result_when_planned_then_the_reference_is_in_the_expression() {
    let cases = [
        ("calculate 2+3 then multiply the result by 4", "{{s1}} * 4"),
        ("calculate 2+3 then calculate the result * 2", "{{s1}} * 2"),
        ("calculate 2+3 then double it", "{{s1}} * 2"),
        ("calculate 2+3 then add 10 to it", "{{s1}} + 10"),
        ("calculate 2+3 then divide it by 2", "{{s1}} / 2"),
        (
            "calculate 2+3 and then what's the result times 3",
            "{{s1}} * 3",
        ),
        (
            "calculate 2+3 then subtract 1 from the answer",
            "{{s1}} - 1",
        ),
        ("calculate 2+3 then square it", "{{s1}} ^ 2"),
    ];
    for (prompt, expression) in cases {
        assert_plan(
            prompt,
            &[
                ("calculator", calc("2+3"), &[]),
                ("calculator", calc(expression), &["s1"]),
            ],
        );
    }
    assert_plan(
        "calculate 2+3, then multiply it by 4, then add it to my todos",
        &[
            ("calculator", calc("2+3"), &[]),
            ("calculator", calc("{{s1}} * 4"), &["s1"]),
            ("todo", add_todo("{{s2}}"), &["s1", "s2"]),
        ],
    );
    assert_plan(
        "calculate 2+3 and 4*5 then calculate the sum plus the product",
        &[
            ("calculator", calc("2+3"), &[]),
            ("calculator", calc("4*5"), &[]),
            ("calculator", calc("{{s1}} + {{s2}}"), &["s1", "s2"]),
        ],
    );
}
