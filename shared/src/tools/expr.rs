//! Safe arithmetic expressions for the `calculator` tool.
//!
//! The input is untrusted (it may come from a model or a user), so this module
//! parses and evaluates it with a small hand-written recursive-descent parser:
//! there is no `eval`, no dynamic code, and every path is bounded so that no
//! input can panic, hang, or overflow the stack.
//!
//! # Grammar
//!
//! ```text
//! expression := term   (('+' | '-') term)*
//! term       := unary  (('*' | '×' | '/' | '÷' | '%') unary)*
//! unary      := ('+' | '-')* power
//! power      := primary (('^' | '**') ('+' | '-')* primary)*     (right-associative)
//! primary    := number | '(' expression ')'
//! number     := digits ['.' digits] [exponent] | digits '.' [exponent] | '.' digits [exponent]
//! exponent   := ('e' | 'E') ['+' | '-'] digits
//! ```
//!
//! * Precedence, loosest first: `+ -`, then `* / %`, then unary `+ -`, then
//!   `^` / `**`. So `-2^2 = -4` (the power binds tighter than a minus on its
//!   left) while `2^-1 = 0.5` (an exponent may carry its own signs), and
//!   `2^3^2 = 2^9 = 512`.
//! * `%` is the floating-point remainder; its sign follows the dividend.
//! * ASCII whitespace is allowed between tokens. Implicit multiplication such
//!   as `2(3)` or `(1)(2)` is rejected as a syntax error.
//!
//! # Errors and limits
//!
//! * At most [`MAX_INPUT_LEN`] bytes of input ([`ExprError::TooLong`]).
//! * At most [`MAX_DEPTH`] nested parentheses and unary signs
//!   ([`ExprError::TooDeep`]). The depth is checked before the parser goes one
//!   level deeper, so the recursion is bounded whatever the input; chains of
//!   binary operators (including `^`) are parsed with loops, not recursion.
//! * An exponent larger than [`MAX_EXPONENT`] in magnitude is refused
//!   ([`ExprError::ExponentTooLarge`]).
//! * `/` or `%` by zero, and zero raised to a negative power, are
//!   [`ExprError::DivisionByZero`].
//! * Any infinite intermediate or final value, including a literal such as
//!   `1e400`, is [`ExprError::Overflow`]; a NaN such as `(-8)^0.5` is
//!   [`ExprError::NotANumber`].
//! * Syntax errors carry the 0-based *character* (not byte) position of the
//!   offending token. Syntax errors take priority over arithmetic errors: the
//!   whole input is checked before an arithmetic error is reported, and the
//!   arithmetic error reported is the first one in evaluation order.
//!
//! [`format_number`] and [`to_json_number`] present a result the way a person
//! (or a JSON consumer) expects it, with floating-point noise rounded away.

/// Maximum length of an expression, in bytes.
pub const MAX_INPUT_LEN: usize = 1_000;
/// Maximum nesting of parentheses and unary signs.
pub const MAX_DEPTH: usize = 64;
/// Maximum magnitude of the exponent of `^` / `**`.
pub const MAX_EXPONENT: f64 = 10_000.0;

pub use crate::domain::number::{format_number, to_json_number, SIGNIFICANT_DIGITS};

/// Why an expression could not be evaluated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExprError {
    #[error("expression is empty")]
    Empty,
    #[error("expression is too long ({len} bytes, limit {max})")]
    TooLong { len: usize, max: usize },
    #[error("expression nests too deeply (limit {max})")]
    TooDeep { max: usize },
    #[error("syntax error at position {pos}: {message}")]
    Syntax { pos: usize, message: String },
    #[error("division by zero")]
    DivisionByZero,
    #[error("exponent too large (limit {max})")]
    ExponentTooLarge { max: f64 },
    #[error("result overflows")]
    Overflow,
    #[error("result is not a real number")]
    NotANumber,
}

/// Parses and evaluates an arithmetic expression.
///
/// See the [module documentation](self) for the grammar and the limits. The
/// result is always finite. It may be `-0.0` (for `-0`); [`format_number`]
/// and [`to_json_number`] render that as `0`.
pub fn evaluate(input: &str) -> Result<f64, ExprError> {
    if input.len() > MAX_INPUT_LEN {
        return Err(ExprError::TooLong {
            len: input.len(),
            max: MAX_INPUT_LEN,
        });
    }
    if input.chars().all(|c| c.is_ascii_whitespace()) {
        return Err(ExprError::Empty);
    }
    let chars: Vec<char> = input.chars().collect();
    let tokens = lex(&chars)?;
    let mut parser = Parser::new(&chars, tokens);
    let value = parser.expression()?;
    let next = parser.peek();
    match next.kind {
        Kind::End => {}
        Kind::RParen => return Err(syntax(next.pos, "unexpected ')' without a matching '('")),
        _ => return Err(parser.missing_operator(next)),
    }
    match parser.first_error {
        Some(error) => Err(error),
        None => Ok(value),
    }
}

fn syntax(pos: usize, message: impl Into<String>) -> ExprError {
    ExprError::Syntax {
        pos,
        message: message.into(),
    }
}

// ---------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Number(f64),
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Caret,
    LParen,
    RParen,
    End,
}

/// A token and its span, in characters: `pos..end`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Token {
    kind: Kind,
    pos: usize,
    end: usize,
}

/// Splits the input into tokens; the result always ends with [`Kind::End`].
fn lex(chars: &[char]) -> Result<Vec<Token>, ExprError> {
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        let pos = i;
        let kind = match c {
            c if c.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            '0'..='9' | '.' => {
                let (value, end) = lex_number(chars, pos)?;
                i = end;
                tokens.push(Token {
                    kind: Kind::Number(value),
                    pos,
                    end,
                });
                continue;
            }
            '*' if chars.get(i + 1) == Some(&'*') => {
                i += 1;
                Kind::Caret
            }
            '+' => Kind::Plus,
            '-' => Kind::Minus,
            '*' | '×' => Kind::Star,
            '/' | '÷' => Kind::Slash,
            '%' => Kind::Percent,
            '^' => Kind::Caret,
            '(' => Kind::LParen,
            ')' => Kind::RParen,
            other => return Err(syntax(pos, format!("unexpected character {other:?}"))),
        };
        i += 1;
        tokens.push(Token { kind, pos, end: i });
    }
    tokens.push(Token {
        kind: Kind::End,
        pos: chars.len(),
        end: chars.len(),
    });
    Ok(tokens)
}

/// Reads the number starting at `start`; returns its value and end position.
fn lex_number(chars: &[char], start: usize) -> Result<(f64, usize), ExprError> {
    let mut i = start;
    let (mut digits, mut dots) = (0_usize, 0_usize);
    while let Some(&c) = chars.get(i) {
        match c {
            '0'..='9' => digits += 1,
            '.' => dots += 1,
            _ => break,
        }
        i += 1;
    }
    let text_until = |end: usize| -> String {
        chars
            .get(start..end)
            .map(|s| s.iter().collect())
            .unwrap_or_default()
    };
    if matches!(chars.get(i), Some('e' | 'E')) {
        let mut j = i + 1;
        if matches!(chars.get(j), Some('+' | '-')) {
            j += 1;
        }
        let exponent_start = j;
        while chars.get(j).is_some_and(char::is_ascii_digit) {
            j += 1;
        }
        if j == exponent_start {
            return Err(syntax(
                start,
                format!(
                    "invalid number '{}': the exponent has no digits",
                    text_until(j)
                ),
            ));
        }
        i = j;
    }
    let text = text_until(i);
    if digits == 0 || dots > 1 {
        return Err(syntax(start, format!("invalid number '{text}'")));
    }
    // Infinite values (e.g. `1e400`) are reported as overflow by the parser.
    let value = text
        .parse::<f64>()
        .map_err(|_| syntax(start, format!("invalid number '{text}'")))?;
    Ok((value, i))
}

// ---------------------------------------------------------------------------
// Parser + evaluator
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Pow,
}

/// Applies one binary operator to finite operands, enforcing the rules of the
/// module documentation.
fn apply(op: BinOp, a: f64, b: f64) -> Result<f64, ExprError> {
    let result = match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div | BinOp::Rem if b == 0.0 => return Err(ExprError::DivisionByZero),
        BinOp::Div => a / b,
        BinOp::Rem => a % b,
        BinOp::Pow => {
            if b.abs() > MAX_EXPONENT {
                return Err(ExprError::ExponentTooLarge { max: MAX_EXPONENT });
            }
            if a == 0.0 && b < 0.0 {
                return Err(ExprError::DivisionByZero);
            }
            a.powf(b)
        }
    };
    finite(result)
}

fn finite(v: f64) -> Result<f64, ExprError> {
    if v.is_nan() {
        Err(ExprError::NotANumber)
    } else if v.is_infinite() {
        Err(ExprError::Overflow)
    } else {
        Ok(v)
    }
}

/// Recursive-descent parser that evaluates as it goes.
///
/// Syntax errors abort immediately. Arithmetic errors are recorded (the first
/// one wins) and parsing continues with a NaN placeholder, so that a syntax
/// error later in the input still takes priority.
struct Parser<'a> {
    chars: &'a [char],
    tokens: Vec<Token>,
    next: usize,
    depth: usize,
    first_error: Option<ExprError>,
}

impl<'a> Parser<'a> {
    fn new(chars: &'a [char], tokens: Vec<Token>) -> Self {
        Self {
            chars,
            tokens,
            next: 0,
            depth: 0,
            first_error: None,
        }
    }

    fn peek(&self) -> Token {
        self.tokens.get(self.next).copied().unwrap_or(Token {
            kind: Kind::End,
            pos: self.chars.len(),
            end: self.chars.len(),
        })
    }

    fn bump(&mut self) {
        self.next += 1;
    }

    /// Enters one more level of nesting, refusing to go past [`MAX_DEPTH`].
    fn descend(&mut self) -> Result<(), ExprError> {
        if self.depth >= MAX_DEPTH {
            return Err(ExprError::TooDeep { max: MAX_DEPTH });
        }
        self.depth += 1;
        Ok(())
    }

    /// Records an arithmetic failure (keeping the first) and returns a placeholder.
    fn check(&mut self, result: Result<f64, ExprError>) -> f64 {
        match result {
            Ok(v) => v,
            Err(error) => {
                self.first_error.get_or_insert(error);
                f64::NAN
            }
        }
    }

    fn text(&self, token: Token) -> String {
        self.chars
            .get(token.pos..token.end)
            .map(|s| s.iter().collect())
            .unwrap_or_default()
    }

    /// The error for an operand that follows another operand directly.
    fn missing_operator(&self, token: Token) -> ExprError {
        match token.kind {
            Kind::Number(_) | Kind::LParen => syntax(
                token.pos,
                format!(
                    "missing operator before '{}' (implicit multiplication is not supported)",
                    self.text(token)
                ),
            ),
            Kind::End => syntax(token.pos, "unexpected end of the expression"),
            _ => syntax(token.pos, format!("unexpected '{}'", self.text(token))),
        }
    }

    /// `expression := term (('+' | '-') term)*`
    fn expression(&mut self) -> Result<f64, ExprError> {
        let mut acc = self.term()?;
        loop {
            let op = match self.peek().kind {
                Kind::Plus => BinOp::Add,
                Kind::Minus => BinOp::Sub,
                _ => return Ok(acc),
            };
            self.bump();
            let rhs = self.term()?;
            acc = self.check(apply(op, acc, rhs));
        }
    }

    /// `term := unary (('*' | '/' | '%') unary)*`
    fn term(&mut self) -> Result<f64, ExprError> {
        let mut acc = self.unary()?;
        loop {
            let op = match self.peek().kind {
                Kind::Star => BinOp::Mul,
                Kind::Slash => BinOp::Div,
                Kind::Percent => BinOp::Rem,
                _ => return Ok(acc),
            };
            self.bump();
            let rhs = self.unary()?;
            acc = self.check(apply(op, acc, rhs));
        }
    }

    /// `unary := ('+' | '-')* power`
    fn unary(&mut self) -> Result<f64, ExprError> {
        let outer = self.depth;
        let negate = self.signs()?;
        let value = self.power()?;
        self.depth = outer;
        Ok(if negate { -value } else { value })
    }

    /// Consumes a run of unary signs, one nesting level each; returns whether
    /// they negate.
    fn signs(&mut self) -> Result<bool, ExprError> {
        let mut negate = false;
        loop {
            match self.peek().kind {
                Kind::Minus => negate = !negate,
                Kind::Plus => {}
                _ => return Ok(negate),
            }
            self.descend()?;
            self.bump();
        }
    }

    /// `power := primary (('^' | '**') ('+' | '-')* primary)*`, right-associative.
    ///
    /// The chain is read with a loop and folded from the right, so
    /// `a ^ -b ^ c` is `a ^ (-(b ^ c))`. Signs inside the chain nest, so they
    /// accumulate depth until the end of the chain.
    fn power(&mut self) -> Result<f64, ExprError> {
        let outer = self.depth;
        let base = self.primary()?;
        let mut exponents: Vec<(bool, f64)> = Vec::new();
        while self.peek().kind == Kind::Caret {
            self.bump();
            let negate = self.signs()?;
            let operand = self.primary()?;
            exponents.push((negate, operand));
        }
        self.depth = outer;
        let mut exponent: Option<f64> = None;
        for (negate, operand) in exponents.into_iter().rev() {
            let value = match exponent {
                None => operand,
                Some(e) => self.check(apply(BinOp::Pow, operand, e)),
            };
            exponent = Some(if negate { -value } else { value });
        }
        Ok(match exponent {
            None => base,
            Some(e) => self.check(apply(BinOp::Pow, base, e)),
        })
    }

    /// `primary := number | '(' expression ')'`
    fn primary(&mut self) -> Result<f64, ExprError> {
        let token = self.peek();
        match token.kind {
            Kind::Number(value) => {
                self.bump();
                Ok(self.check(finite(value)))
            }
            Kind::LParen => {
                let outer = self.depth;
                self.descend()?;
                self.bump();
                let value = self.expression()?;
                let close = self.peek();
                match close.kind {
                    Kind::RParen => {
                        self.bump();
                        self.depth = outer;
                        Ok(value)
                    }
                    Kind::End => Err(syntax(token.pos, "unclosed '('")),
                    _ => Err(self.missing_operator(close)),
                }
            }
            Kind::End => Err(syntax(
                token.pos,
                "expected a number or '(' but the expression ended",
            )),
            _ => Err(syntax(
                token.pos,
                format!("expected a number or '(' but found '{}'", self.text(token)),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    // --- formatting ------------------------------------------------------

    #[test]
    fn given_integral_value_when_formatted_then_no_decimal_point() {
        assert_eq!(format_number(21.0), "21");
        assert_eq!(format_number(-3.0), "-3");
        assert_eq!(format_number(1_125_899_906_842_624.0), "1125899906842624");
    }

    #[test]
    fn given_float_noise_when_formatted_then_it_is_rounded_away() {
        assert_eq!(format_number(0.1 + 0.2), "0.3");
        assert_eq!(format_number(0.1 * 3.0), "0.3");
        assert_eq!(format_number(1.0 / 3.0), "0.333333333333");
        assert_eq!(format_number(2.0 / 3.0), "0.666666666667");
        assert_eq!(format_number(3.0 * (1.0 / 3.0) - 1e-16), "1");
    }

    #[test]
    fn given_simple_fractions_when_formatted_then_exact() {
        assert_eq!(format_number(2.5), "2.5");
        assert_eq!(format_number(-0.125), "-0.125");
        assert_eq!(format_number(0.000_001), "0.000001");
    }

    #[test]
    fn given_negative_zero_when_formatted_then_zero() {
        assert_eq!(format_number(-0.0), "0");
        assert_eq!(format_number(0.0), "0");
    }

    #[test]
    fn given_very_large_or_small_values_when_formatted_then_scientific() {
        assert_eq!(format_number(1e21), "1e21");
        assert_eq!(format_number(-2.5e30), "-2.5e30");
        assert_eq!(format_number(1.5e-7), "1.5e-7");
        assert_eq!(format_number(2f64.powi(60)), "1.15292150461e18");
        assert_eq!(format_number(f64::MAX), "1.79769313486e308");
    }

    #[test]
    fn given_non_finite_values_when_formatted_then_symbolic() {
        assert_eq!(format_number(f64::NAN), "NaN");
        assert_eq!(format_number(f64::INFINITY), "inf");
        assert_eq!(format_number(f64::NEG_INFINITY), "-inf");
    }

    #[test]
    fn given_integral_value_when_converted_to_json_then_integer() {
        assert_eq!(to_json_number(21.0), serde_json::json!(21));
        assert_eq!(to_json_number(21.0).to_string(), "21");
        assert_eq!(to_json_number(-0.0).to_string(), "0");
        assert_eq!(to_json_number(0.1 * 30.0), serde_json::json!(3));
        assert!(to_json_number(-7.0).is_i64());
    }

    #[test]
    fn given_fractional_or_huge_value_when_converted_to_json_then_rounded_float() {
        assert_eq!(to_json_number(0.1 + 0.2).to_string(), "0.3");
        assert_eq!(to_json_number(1.0 / 3.0).to_string(), "0.333333333333");
        assert_eq!(to_json_number(2.5), serde_json::json!(2.5));
        assert!(to_json_number(1e21).is_f64());
        assert!(to_json_number(2f64.powi(53)).is_f64());
        assert!(to_json_number(2f64.powi(53) - 1.0).is_i64());
    }

    #[test]
    fn given_non_finite_value_when_converted_to_json_then_null() {
        assert_eq!(to_json_number(f64::NAN), serde_json::Value::Null);
        assert_eq!(to_json_number(f64::INFINITY), serde_json::Value::Null);
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

    // --- property tests --------------------------------------------------

    /// A reference expression tree, evaluated directly with f64 arithmetic.
    #[derive(Debug, Clone)]
    enum Tree {
        /// A non-negative literal and how to spell it.
        Num(f64, Spelling),
        Neg(Box<Tree>),
        Pos(Box<Tree>),
        Group(Box<Tree>),
        Bin(Op, Box<Tree>, Box<Tree>),
    }

    #[derive(Debug, Clone, Copy)]
    enum Spelling {
        Plain,
        LowerExp,
        UpperExp,
    }

    #[derive(Debug, Clone, Copy)]
    enum Op {
        Add,
        Sub,
        Mul { unicode: bool },
        Div { unicode: bool },
        Rem,
        Pow { double_star: bool },
    }

    impl Op {
        fn symbol(self) -> &'static str {
            match self {
                Op::Add => "+",
                Op::Sub => "-",
                Op::Mul { unicode: false } => "*",
                Op::Mul { unicode: true } => "×",
                Op::Div { unicode: false } => "/",
                Op::Div { unicode: true } => "÷",
                Op::Rem => "%",
                Op::Pow { double_star: false } => "^",
                Op::Pow { double_star: true } => "**",
            }
        }

        /// Binding strength: (node, minimum for the left operand, minimum for the right).
        fn precedence(self) -> (u8, u8, u8) {
            match self {
                Op::Add | Op::Sub => (1, 1, 2),
                Op::Mul { .. } | Op::Div { .. } | Op::Rem => (2, 2, 3),
                Op::Pow { .. } => (4, 5, 3),
            }
        }
    }

    const ATOM: u8 = 5;
    const UNARY: u8 = 3;

    impl Tree {
        /// Reference semantics, written independently of the parser.
        fn eval(&self) -> Result<f64, ExprError> {
            let checked = |v: f64| {
                if v.is_nan() {
                    Err(ExprError::NotANumber)
                } else if v.is_infinite() {
                    Err(ExprError::Overflow)
                } else {
                    Ok(v)
                }
            };
            match self {
                Tree::Num(v, _) => checked(*v),
                Tree::Neg(t) => t.eval().map(|v| -v),
                Tree::Pos(t) | Tree::Group(t) => t.eval(),
                Tree::Bin(op, l, r) => {
                    let a = l.eval()?;
                    let b = r.eval()?;
                    match op {
                        Op::Add => checked(a + b),
                        Op::Sub => checked(a - b),
                        Op::Mul { .. } => checked(a * b),
                        Op::Div { .. } | Op::Rem if b == 0.0 => Err(ExprError::DivisionByZero),
                        Op::Div { .. } => checked(a / b),
                        Op::Rem => checked(a % b),
                        Op::Pow { .. } if b.abs() > MAX_EXPONENT => {
                            Err(ExprError::ExponentTooLarge { max: MAX_EXPONENT })
                        }
                        Op::Pow { .. } if a == 0.0 && b < 0.0 => Err(ExprError::DivisionByZero),
                        Op::Pow { .. } => checked(a.powf(b)),
                    }
                }
            }
        }

        fn precedence(&self) -> u8 {
            match self {
                Tree::Num(..) | Tree::Group(_) => ATOM,
                Tree::Neg(_) | Tree::Pos(_) => UNARY,
                Tree::Bin(op, ..) => op.precedence().0,
            }
        }

        /// Renders to tokens with the fewest parentheses the grammar needs
        /// (plus the explicit `Group`s).
        fn render(&self, out: &mut Vec<String>) {
            match self {
                Tree::Num(v, Spelling::Plain) => out.push(format!("{v}")),
                Tree::Num(v, Spelling::LowerExp) => out.push(format!("{v:e}")),
                Tree::Num(v, Spelling::UpperExp) => out.push(format!("{v:E}")),
                Tree::Neg(t) => {
                    out.push("-".to_owned());
                    t.render_at_least(UNARY, out);
                }
                Tree::Pos(t) => {
                    out.push("+".to_owned());
                    t.render_at_least(UNARY, out);
                }
                Tree::Group(t) => {
                    out.push("(".to_owned());
                    t.render(out);
                    out.push(")".to_owned());
                }
                Tree::Bin(op, l, r) => {
                    let (_, left_min, right_min) = op.precedence();
                    l.render_at_least(left_min, out);
                    out.push(op.symbol().to_owned());
                    r.render_at_least(right_min, out);
                }
            }
        }

        fn render_at_least(&self, min: u8, out: &mut Vec<String>) {
            if self.precedence() >= min {
                self.render(out);
            } else {
                out.push("(".to_owned());
                self.render(out);
                out.push(")".to_owned());
            }
        }
    }

    fn number() -> impl Strategy<Value = Tree> {
        let value = prop_oneof![
            4 => (0_u32..100).prop_map(f64::from),
            4 => (0_u32..10_000).prop_map(|n| f64::from(n) / 100.0),
            4 => (0_u32..64).prop_map(|n| f64::from(n) / 8.0),
            4 => (1_u32..1000, -20_i32..20).prop_map(|(m, e)| f64::from(m) * 10f64.powi(e)),
            2 => Just(0.0),
            1 => Just(1e300),
        ];
        let spelling = prop_oneof![
            3 => Just(Spelling::Plain),
            1 => Just(Spelling::LowerExp),
            1 => Just(Spelling::UpperExp),
        ];
        (value, spelling).prop_map(|(v, s)| {
            // Plain spelling of tiny or huge values is long; use exponents there.
            let s = if (v != 0.0 && v.abs() < 1e-6) || v.abs() > 1e15 {
                Spelling::LowerExp
            } else {
                s
            };
            Tree::Num(v, s)
        })
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Add),
            3 => Just(Op::Sub),
            3 => any::<bool>().prop_map(|unicode| Op::Mul { unicode }),
            3 => any::<bool>().prop_map(|unicode| Op::Div { unicode }),
            1 => Just(Op::Rem),
            1 => any::<bool>().prop_map(|double_star| Op::Pow { double_star }),
        ]
    }

    fn tree() -> impl Strategy<Value = Tree> {
        number().prop_recursive(8, 64, 2, |inner| {
            prop_oneof![
                1 => inner.clone().prop_map(|t| Tree::Neg(Box::new(t))),
                1 => inner.clone().prop_map(|t| Tree::Pos(Box::new(t))),
                1 => inner.clone().prop_map(|t| Tree::Group(Box::new(t))),
                4 => (op(), inner.clone(), inner)
                    .prop_map(|(op, l, r)| Tree::Bin(op, Box::new(l), Box::new(r))),
            ]
        })
    }

    fn join_with_whitespace(tokens: &[String], spaces: &[u8]) -> String {
        const WHITESPACE: [&str; 6] = ["", "", " ", "  ", "\t", "\n "];
        let mut out = String::new();
        for (i, token) in tokens.iter().enumerate() {
            let pick = usize::from(spaces.get(i % spaces.len().max(1)).copied().unwrap_or(0));
            out.push_str(WHITESPACE[pick % WHITESPACE.len()]);
            out.push_str(token);
        }
        out
    }

    fn same_outcome(actual: &Result<f64, ExprError>, expected: &Result<f64, ExprError>) -> bool {
        match (actual, expected) {
            (Ok(a), Ok(b)) => a.to_bits() == b.to_bits(),
            (Err(a), Err(b)) => a == b,
            _ => false,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn given_random_expression_tree_when_rendered_and_evaluated_then_matches_reference(
            tree in tree(),
            spaces in proptest::collection::vec(0_u8..6, 1..16),
        ) {
            let mut tokens = Vec::new();
            tree.render(&mut tokens);
            let input = join_with_whitespace(&tokens, &spaces);
            prop_assume!(input.len() <= MAX_INPUT_LEN);
            let expected = tree.eval();
            let actual = evaluate(&input);
            prop_assert!(
                same_outcome(&actual, &expected),
                "input {:?}: evaluate gave {:?}, reference gave {:?}", input, actual, expected
            );
        }

        #[test]
        fn given_any_short_string_when_evaluated_then_returns_without_panicking(
            chars in proptest::collection::vec(any::<char>(), 0..200),
        ) {
            let input: String = chars.into_iter().collect();
            check_total(&input)?;
        }

        #[test]
        fn given_operator_soup_when_evaluated_then_returns_without_panicking(
            input in "[0-9.eE+*/%^()× ÷-]{0,200}",
        ) {
            check_total(&input)?;
        }

        #[test]
        fn given_random_nesting_when_evaluated_then_too_deep_exactly_past_the_limit(
            prefixes in proptest::collection::vec(0_u8..3, 0..300),
            spaced in any::<bool>(),
        ) {
            // Each prefix is one nesting level: '(' (closed after the number), '-' or '+'.
            let mut input = String::new();
            let mut closing = String::new();
            let mut negative = false;
            for p in &prefixes {
                match p {
                    0 => {
                        input.push('(');
                        closing.push(')');
                    }
                    1 => {
                        input.push('-');
                        negative = !negative;
                    }
                    _ => input.push('+'),
                }
                if spaced {
                    input.push(' ');
                }
            }
            input.push('5');
            input.push_str(&closing);
            let expected = if prefixes.len() > MAX_DEPTH {
                Err(ExprError::TooDeep { max: MAX_DEPTH })
            } else if negative {
                Ok(-5.0)
            } else {
                Ok(5.0)
            };
            prop_assert_eq!(evaluate(&input), expected);
        }

        #[test]
        fn given_any_finite_value_when_formatted_then_text_parses_back_close_to_it(
            v in any::<f64>().prop_filter("finite", |v| v.is_finite()),
        ) {
            let text = format_number(v);
            prop_assert!(!text.starts_with("-0") || text.starts_with("-0."), "{}", text);
            let parsed: f64 = text.parse().map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            let tolerance = v.abs() * 1e-11;
            prop_assert!((parsed - v).abs() <= tolerance, "{} -> {} -> {}", v, text, parsed);
            // The formatted text is itself a valid expression with that value.
            prop_assert_eq!(evaluate(&text).map(f64::to_bits), Ok(parsed.to_bits()));
            let json = to_json_number(v);
            prop_assert!(json.is_number(), "{}", json);
        }
    }

    /// Evaluates `input` and checks the invariants that hold for every input.
    fn check_total(input: &str) -> Result<(), TestCaseError> {
        match evaluate(input) {
            Ok(v) => prop_assert!(v.is_finite(), "{:?} gave {}", input, v),
            Err(ExprError::Syntax { pos, message }) => {
                prop_assert!(
                    pos <= input.chars().count(),
                    "{:?}: position {} out of range",
                    input,
                    pos
                );
                prop_assert!(!message.is_empty());
            }
            Err(_) => {}
        }
        Ok(())
    }
}
