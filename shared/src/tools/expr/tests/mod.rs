//! Tests of the expression parser: operators, precedence, numbers, errors and their
//! positions, limits and formatting, given / when / then. Property tests against a
//! reference evaluator are in [`properties`].

mod properties;

use super::*;
use crate::domain::number::format_number;

fn assert_syntax(input: &str, expected_pos: usize, expected_fragment: &str) {
    match evaluate(input) {
        Err(ExprError::Syntax { pos, message }) => {
            assert_eq!(pos, expected_pos, "position for {input:?} ({message})");
            assert!(
                message.contains(expected_fragment),
                "message for {input:?} was {message:?}, expected it to contain {expected_fragment:?}"
            );
        }
        other => panic!("expected a syntax error for {input:?}, got {other:?}"),
    }
}

// --- operators -------------------------------------------------------

#[test]
fn given_addition_when_evaluated_then_returns_sum() {
    assert_eq!(evaluate("1+2"), Ok(3.0));
}

#[test]
fn given_subtraction_when_evaluated_then_returns_difference() {
    assert_eq!(evaluate("10-4"), Ok(6.0));
}

#[test]
fn given_multiplication_when_evaluated_then_returns_product() {
    assert_eq!(evaluate("6*7"), Ok(42.0));
}

#[test]
fn given_division_when_evaluated_then_returns_quotient() {
    assert_eq!(evaluate("7/2"), Ok(3.5));
}

#[test]
fn given_remainder_when_evaluated_then_sign_follows_dividend() {
    assert_eq!(evaluate("7%3"), Ok(1.0));
    assert_eq!(evaluate("-7%3"), Ok(-1.0));
    assert_eq!(evaluate("7%-3"), Ok(1.0));
    assert_eq!(evaluate("5.5%2"), Ok(1.5));
}

#[test]
fn given_caret_or_double_star_when_evaluated_then_both_are_power() {
    assert_eq!(evaluate("2^10"), Ok(1024.0));
    assert_eq!(evaluate("2**10"), Ok(1024.0));
    assert_eq!(evaluate("9^0.5"), Ok(3.0));
}

#[test]
fn given_unicode_times_and_divide_when_evaluated_then_they_alias_star_and_slash() {
    assert_eq!(evaluate("3×4"), Ok(12.0));
    assert_eq!(evaluate("12÷4"), Ok(3.0));
    assert_eq!(evaluate("2 × 3 ÷ 4"), Ok(1.5));
}

#[test]
fn given_letter_x_when_evaluated_then_it_is_not_multiplication() {
    assert_syntax("2x3", 1, "unexpected character 'x'");
}

// --- precedence & associativity --------------------------------------

#[test]
fn given_mixed_operators_when_evaluated_then_multiplication_binds_tighter() {
    assert_eq!(evaluate("2+3*4"), Ok(14.0));
    assert_eq!(evaluate("(2+3)*4"), Ok(20.0));
    assert_eq!(evaluate("10-6/2"), Ok(7.0));
    assert_eq!(evaluate("1+7%4"), Ok(4.0));
    assert_eq!(evaluate("2*3^2"), Ok(18.0));
}

#[test]
fn given_power_chain_when_evaluated_then_it_is_right_associative() {
    assert_eq!(evaluate("2^3^2"), Ok(512.0));
    assert_eq!(evaluate("2**3**2"), Ok(512.0));
    assert_eq!(evaluate("(2^3)^2"), Ok(64.0));
}

#[test]
fn given_subtraction_chain_when_evaluated_then_it_is_left_associative() {
    assert_eq!(evaluate("2-3-4"), Ok(-5.0));
}

#[test]
fn given_division_chain_when_evaluated_then_it_is_left_associative() {
    assert_eq!(evaluate("100/10/5"), Ok(2.0));
    assert_eq!(evaluate("100%30%7"), Ok(3.0));
}

// --- unary operators -------------------------------------------------

#[test]
fn given_unary_minus_before_power_when_evaluated_then_power_binds_tighter() {
    assert_eq!(evaluate("-2^2"), Ok(-4.0));
    assert_eq!(evaluate("(-2)^2"), Ok(4.0));
}

#[test]
fn given_negative_exponent_when_evaluated_then_sign_applies_to_exponent() {
    assert_eq!(evaluate("2^-1"), Ok(0.5));
    assert_eq!(evaluate("2^-1^2"), Ok(0.5)); // 2^(-(1^2))
    assert_eq!(evaluate("2^--2"), Ok(4.0));
    assert_eq!(evaluate("2^+3"), Ok(8.0));
}

#[test]
fn given_repeated_unary_signs_when_evaluated_then_they_compose() {
    assert_eq!(evaluate("--3"), Ok(3.0));
    assert_eq!(evaluate("---3"), Ok(-3.0));
    assert_eq!(evaluate("+3"), Ok(3.0));
    assert_eq!(evaluate("-+-3"), Ok(3.0));
    assert_eq!(evaluate("-(2+3)"), Ok(-5.0));
}

#[test]
fn given_unary_after_binary_operator_when_evaluated_then_it_applies_to_operand() {
    assert_eq!(evaluate("2--3"), Ok(5.0));
    assert_eq!(evaluate("2---3"), Ok(-1.0));
    assert_eq!(evaluate("2*-3"), Ok(-6.0));
    assert_eq!(evaluate("6/-2"), Ok(-3.0));
    assert_eq!(evaluate("2+-3"), Ok(-1.0));
}

#[test]
fn given_negated_zero_when_evaluated_then_result_is_negative_zero_and_formats_as_zero() {
    let v = evaluate("-0");
    assert_eq!(v.clone().map(f64::to_bits), Ok((-0.0_f64).to_bits()));
    assert_eq!(v.map(format_number), Ok("0".to_owned()));
}

// --- numbers ---------------------------------------------------------

#[test]
fn given_decimals_when_evaluated_then_all_forms_are_accepted() {
    assert_eq!(evaluate("3.5"), Ok(3.5));
    assert_eq!(evaluate(".5"), Ok(0.5));
    assert_eq!(evaluate("5."), Ok(5.0));
    assert_eq!(evaluate("0.25+.25"), Ok(0.5));
    assert_eq!(evaluate("007"), Ok(7.0));
}

#[test]
fn given_scientific_notation_when_evaluated_then_exponent_is_applied() {
    assert_eq!(evaluate("1e3"), Ok(1000.0));
    assert_eq!(evaluate("2.5E-2"), Ok(0.025));
    assert_eq!(evaluate("1e+2"), Ok(100.0));
    assert_eq!(evaluate(".5e1"), Ok(5.0));
    assert_eq!(evaluate("5.e1"), Ok(50.0));
    assert_eq!(evaluate("1e-400"), Ok(0.0));
}

#[test]
fn given_malformed_numbers_when_evaluated_then_syntax_error_at_number() {
    assert_syntax("1.2.3", 0, "invalid number '1.2.3'");
    assert_syntax("2 + .", 4, "invalid number '.'");
    assert_syntax("1e", 0, "exponent has no digits");
    assert_syntax("3*2e+", 2, "invalid number '2e+'");
    assert_syntax("e5", 0, "unexpected character 'e'");
}

// --- whitespace ------------------------------------------------------

#[test]
fn given_ascii_whitespace_when_evaluated_then_it_is_ignored() {
    assert_eq!(evaluate("  1 +\t2 *\n3\r "), Ok(7.0));
    assert_eq!(evaluate("2 ** 3"), Ok(8.0));
    assert_eq!(evaluate("( 1 + 2 ) * 3"), Ok(9.0));
}

#[test]
fn given_whitespace_inside_double_star_when_evaluated_then_syntax_error() {
    assert_syntax("2* *3", 3, "expected a number or '(' but found '*'");
}

#[test]
fn given_non_ascii_whitespace_when_evaluated_then_syntax_error() {
    assert_syntax("1\u{a0}+ 2", 1, "unexpected character");
}

// --- error variants --------------------------------------------------

#[test]
fn given_empty_or_blank_input_when_evaluated_then_empty() {
    assert_eq!(evaluate(""), Err(ExprError::Empty));
    assert_eq!(evaluate(" \t\n "), Err(ExprError::Empty));
}

#[test]
fn given_input_over_length_limit_when_evaluated_then_too_long() {
    let input = "1+".repeat(500) + "1"; // 1001 bytes
    assert_eq!(
        evaluate(&input),
        Err(ExprError::TooLong {
            len: 1001,
            max: MAX_INPUT_LEN
        })
    );
    let blank = " ".repeat(MAX_INPUT_LEN + 1);
    assert!(matches!(evaluate(&blank), Err(ExprError::TooLong { .. })));
}

#[test]
fn given_input_at_length_limit_when_evaluated_then_it_is_accepted() {
    let input = "1+".repeat(499) + "10"; // exactly 1000 bytes
    assert_eq!(input.len(), MAX_INPUT_LEN);
    assert_eq!(evaluate(&input), Ok(509.0));
}

#[test]
fn given_multibyte_input_when_length_checked_then_bytes_are_counted() {
    let input = "1".to_owned() + &"×1".repeat(333); // 1 + 333 * 3 bytes = 1000
    assert_eq!(input.len(), 1000);
    assert_eq!(evaluate(&input), Ok(1.0));
    let over = input + "1";
    assert!(matches!(
        evaluate(&over),
        Err(ExprError::TooLong { len: 1001, .. })
    ));
}

#[test]
fn given_division_or_remainder_by_zero_when_evaluated_then_division_by_zero() {
    assert_eq!(evaluate("1/0"), Err(ExprError::DivisionByZero));
    assert_eq!(evaluate("1/(2-2)"), Err(ExprError::DivisionByZero));
    assert_eq!(evaluate("5%0"), Err(ExprError::DivisionByZero));
    assert_eq!(evaluate("0/0"), Err(ExprError::DivisionByZero));
    assert_eq!(evaluate("1/-0"), Err(ExprError::DivisionByZero));
}

#[test]
fn given_zero_to_a_negative_power_when_evaluated_then_division_by_zero() {
    assert_eq!(evaluate("0^-1"), Err(ExprError::DivisionByZero));
}

#[test]
fn given_zero_to_the_zero_when_evaluated_then_one() {
    assert_eq!(evaluate("0^0"), Ok(1.0));
}

#[test]
fn given_exponent_beyond_limit_when_evaluated_then_exponent_too_large() {
    let expected = Err(ExprError::ExponentTooLarge { max: MAX_EXPONENT });
    assert_eq!(evaluate("2^10001"), expected);
    assert_eq!(evaluate("1^-20000"), expected);
    assert_eq!(evaluate("2^2^2^2^2"), expected); // 2^65536
    assert_eq!(evaluate("1^10000"), Ok(1.0));
    assert_eq!(evaluate("0.5^-10000"), Err(ExprError::Overflow));
}

#[test]
fn given_result_beyond_f64_range_when_evaluated_then_overflow() {
    assert_eq!(evaluate("10^400"), Err(ExprError::Overflow));
    assert_eq!(evaluate("1e308*10"), Err(ExprError::Overflow));
    assert_eq!(evaluate("-1e308-1e308"), Err(ExprError::Overflow));
    assert_eq!(evaluate("1e308/1e-308"), Err(ExprError::Overflow));
}

#[test]
fn given_infinite_literal_when_evaluated_then_overflow() {
    assert_eq!(evaluate("1e400"), Err(ExprError::Overflow));
    assert_eq!(evaluate("1e400*0"), Err(ExprError::Overflow));
}

#[test]
fn given_fractional_power_of_negative_when_evaluated_then_not_a_number() {
    assert_eq!(evaluate("(-8)^0.5"), Err(ExprError::NotANumber));
    assert_eq!(evaluate("(-8)^(1/3)"), Err(ExprError::NotANumber));
    assert_eq!(evaluate("(-8)^3"), Ok(-512.0));
}

#[test]
fn given_several_arithmetic_errors_when_evaluated_then_first_in_evaluation_order_wins() {
    assert_eq!(evaluate("1/0 + 10^400"), Err(ExprError::DivisionByZero));
    assert_eq!(evaluate("10^400 + 1/0"), Err(ExprError::Overflow));
}

#[test]
fn given_arithmetic_and_syntax_errors_when_evaluated_then_syntax_error_wins() {
    assert_syntax("1/0 + )", 6, "expected a number or '('");
    assert_syntax("1/0 1", 4, "missing operator");
}

// --- syntax error positions & messages -------------------------------

#[test]
fn given_stray_closing_paren_when_evaluated_then_unexpected_paren_at_its_position() {
    assert_syntax("1+2)", 3, "unexpected ')'");
    assert_syntax(")", 0, "expected a number or '(' but found ')'");
}

#[test]
fn given_missing_operand_when_evaluated_then_expected_number_or_paren() {
    assert_syntax("2+", 2, "expected a number or '(' but the expression ended");
    assert_syntax("2 + * 3", 4, "expected a number or '(' but found '*'");
    assert_syntax("()", 1, "expected a number or '(' but found ')'");
    assert_syntax("*2", 0, "expected a number or '('");
    assert_syntax("2^", 2, "expected a number or '('");
    assert_syntax("-", 1, "expected a number or '('");
}

#[test]
fn given_unclosed_paren_when_evaluated_then_error_points_at_the_open_paren() {
    assert_syntax("(1+2", 0, "unclosed '('");
    assert_syntax("2*(3+(4)", 2, "unclosed '('");
}

#[test]
fn given_unexpected_character_when_evaluated_then_its_char_position_is_reported() {
    assert_syntax("1 + a", 4, "unexpected character 'a'");
    assert_syntax("sqrt(4)", 0, "unexpected character 's'");
    // Positions count characters, not bytes ('×' is 2 bytes in UTF-8).
    assert_syntax("2×3×y", 4, "unexpected character 'y'");
    assert_syntax("1;2", 1, "unexpected character ';'");
}

#[test]
fn given_implicit_multiplication_when_evaluated_then_syntax_error() {
    assert_syntax("2(3)", 1, "implicit multiplication");
    assert_syntax("(2)(3)", 3, "implicit multiplication");
    assert_syntax("(2)3", 3, "missing operator before '3'");
    assert_syntax("2 3", 2, "missing operator before '3'");
    assert_syntax("(2 3)", 3, "missing operator before '3'");
}

#[test]
fn given_syntax_error_when_displayed_then_message_includes_position() {
    let error = evaluate("1 + a").err().map(|e| e.to_string());
    assert_eq!(
        error.as_deref(),
        Some("syntax error at position 4: unexpected character 'a'")
    );
}

// --- depth limit -----------------------------------------------------

#[test]
fn given_parentheses_at_depth_limit_when_evaluated_then_accepted() {
    let input = "(".repeat(MAX_DEPTH) + "7" + &")".repeat(MAX_DEPTH);
    assert_eq!(evaluate(&input), Ok(7.0));
}

#[test]
fn given_parentheses_past_depth_limit_when_evaluated_then_too_deep() {
    let input = "(".repeat(MAX_DEPTH + 1) + "7" + &")".repeat(MAX_DEPTH + 1);
    assert_eq!(evaluate(&input), Err(ExprError::TooDeep { max: MAX_DEPTH }));
}

#[test]
fn given_unary_signs_past_depth_limit_when_evaluated_then_too_deep() {
    assert_eq!(evaluate(&("-".repeat(MAX_DEPTH) + "1")), Ok(1.0));
    assert_eq!(
        evaluate(&("-".repeat(MAX_DEPTH + 1) + "1")),
        Err(ExprError::TooDeep { max: MAX_DEPTH })
    );
}

#[test]
fn given_a_thousand_opening_tokens_when_evaluated_then_too_deep_not_stack_overflow() {
    let too_deep = Err(ExprError::TooDeep { max: MAX_DEPTH });
    assert_eq!(evaluate(&"(".repeat(MAX_INPUT_LEN)), too_deep);
    assert_eq!(evaluate(&"-".repeat(MAX_INPUT_LEN)), too_deep);
    assert_eq!(evaluate(&"-(".repeat(MAX_INPUT_LEN / 2)), too_deep);
    assert_eq!(evaluate(&"2^-".repeat(MAX_INPUT_LEN / 3)), too_deep);
}

#[test]
fn given_long_flat_chains_when_evaluated_then_no_depth_error() {
    let sum = "1+".repeat(400) + "1";
    assert_eq!(evaluate(&sum), Ok(401.0));
    let powers = "1^".repeat(400) + "1";
    assert_eq!(evaluate(&powers), Ok(1.0));
    let siblings = "(1)+".repeat(200) + "(1)";
    assert_eq!(evaluate(&siblings), Ok(201.0));
}

// --- outline ---------------------------------------------------------

#[test]
fn given_expressions_when_outlined_then_the_operator_evaluated_last_is_named() {
    use Operator::*;
    let cases = [
        ("2+3*4", Some(Add)),
        ("2*3+4", Some(Add)),
        ("2-3-4", Some(Sub)),
        ("(2+3)*4", Some(Mul)),
        ("((2+3))", Some(Add)),
        ("8/2", Some(Div)),
        ("7 % 2", Some(Rem)),
        ("2^3^2", Some(Pow)),
        ("2**3", Some(Pow)),
        ("-2^2", Some(Pow)),
        ("-(2+3)", None),
        ("-2", None),
        ("42", None),
        ("(7)", None),
        ("1/0", Some(Div)),
    ];
    for (input, top) in cases {
        assert_eq!(outline(input).map(|o| o.top), Ok(top), "{input}");
    }
}

#[test]
fn given_expressions_when_outlined_then_operators_and_single_operands_are_recognised() {
    // (input, has a binary operator, is one operand)
    let cases = [
        ("42", false, true),
        ("(2+3)", true, true),
        ("((1))", false, true),
        ("-2", false, false),
        ("2^-1", true, false),
        ("-(2)", false, false),
        ("1e999 + 1", true, false),
    ];
    for (input, has_operator, atomic) in cases {
        let got = outline(input).expect(input);
        assert_eq!(
            (got.has_operator, got.atomic),
            (has_operator, atomic),
            "{input}"
        );
    }
    // Syntax errors are errors; arithmetic ones are not (above: 1/0, 1e999 + 1).
    assert!(matches!(outline("2+"), Err(ExprError::Syntax { .. })));
    assert_eq!(outline(" "), Err(ExprError::Empty));
    let deep = "(".repeat(MAX_DEPTH + 1) + "1" + &")".repeat(MAX_DEPTH + 1);
    assert_eq!(outline(&deep), Err(ExprError::TooDeep { max: MAX_DEPTH }));
}

#[test]
fn given_evaluated_expression_when_formatted_then_reads_naturally() {
    let cases = [
        ("0.1+0.2", "0.3"),
        ("42/2", "21"),
        ("1/3", "0.333333333333"),
        ("1e21", "1e21"),
    ];
    for (input, expected) in cases {
        assert_eq!(
            evaluate(input).map(format_number),
            Ok(expected.to_owned()),
            "{input}"
        );
    }
}
