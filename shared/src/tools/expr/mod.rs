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
//! [`format_number`](crate::domain::number::format_number) and
//! [`to_json_number`](crate::domain::number::to_json_number) present a result the way a person
//! (or a JSON consumer) expects it, with floating-point noise rounded away.
//! [`outline`] says what an expression evaluates last without evaluating it, from the
//! same parser (the pattern planner uses it to tell "the sum" from "the product").

/// Maximum length of an expression, in bytes.
pub const MAX_INPUT_LEN: usize = 1_000;
/// Maximum nesting of parentheses and unary signs.
pub const MAX_DEPTH: usize = 64;
/// Maximum magnitude of the exponent of `^` / `**`.
pub const MAX_EXPONENT: f64 = 10_000.0;

/// Why an expression could not be evaluated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExprError {
    /// Nothing but whitespace.
    #[error("expression is empty")]
    Empty,
    /// Longer than [`MAX_INPUT_LEN`] bytes.
    #[error("expression is too long ({len} bytes, limit {max})")]
    TooLong {
        /// The expression's length, in bytes.
        len: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// Parentheses or signs nested deeper than [`MAX_DEPTH`].
    #[error("expression nests too deeply (limit {max})")]
    TooDeep {
        /// The deepest nesting allowed.
        max: usize,
    },
    /// Not an expression: an unexpected character or token, a missing operand or `)`.
    #[error("syntax error at position {pos}: {message}")]
    Syntax {
        /// Where it went wrong, in characters from the start (0-based).
        pos: usize,
        /// What was expected or found there.
        message: String,
    },
    /// A division or remainder by zero.
    #[error("division by zero")]
    DivisionByZero,
    /// An exponent larger in magnitude than [`MAX_EXPONENT`].
    #[error("exponent too large (limit {max})")]
    ExponentTooLarge {
        /// The largest exponent magnitude allowed.
        max: f64,
    },
    /// A result (or intermediate result) too large for a finite number.
    #[error("result overflows")]
    Overflow,
    /// A result that is not a real number (such as a negative number to a fractional power).
    #[error("result is not a real number")]
    NotANumber,
}

/// Parses and evaluates an arithmetic expression.
///
/// See the [module documentation](self) for the grammar and the limits. The
/// result is always finite. It may be `-0.0` (for `-0`); [`format_number`](crate::domain::number::format_number)
/// and [`to_json_number`](crate::domain::number::to_json_number) render that as `0`.
pub fn evaluate(input: &str) -> Result<f64, ExprError> {
    if input.len() > MAX_INPUT_LEN {
        return Err(ExprError::TooLong {
            len: input.len(),
            max: MAX_INPUT_LEN,
        });
    }
    parse(input)?.value
}

/// The shape of an expression as the parser reads it, whatever its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outline {
    /// The operator evaluated last, looking inside parentheses around the whole
    /// expression (`((2+3))` is an addition). `None` for a number, or a sign before a
    /// number or a parenthesised group (`-(2+3)`); `-2^2` is a power.
    pub top: Option<Operator>,
    /// Whether the expression has a binary operator anywhere, inside parentheses too.
    pub has_operator: bool,
    /// Whether it is one number or one parenthesised group, without a sign: it can be
    /// used as an operand without adding parentheses.
    pub atomic: bool,
}

/// The [`Outline`] of a syntactically valid expression: what the calculator would
/// evaluate last, without evaluating it. Arithmetic errors (division by zero, overflow)
/// do not matter; syntax errors, an empty input and [`ExprError::TooDeep`] are returned.
/// There is no length limit: the parser is linear in the input.
pub fn outline(input: &str) -> Result<Outline, ExprError> {
    parse(input).map(|parsed| parsed.outline)
}

/// What parsing an expression found: its value (or the first arithmetic error) and its
/// outline.
struct Parsed {
    value: Result<f64, ExprError>,
    outline: Outline,
}

/// Parses `input` completely; syntax errors take priority over arithmetic errors.
fn parse(input: &str) -> Result<Parsed, ExprError> {
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
    let outline = Outline {
        top: parser.node.top,
        has_operator: parser.has_operator,
        atomic: parser.node.atomic,
    };
    let value = match parser.first_error {
        Some(error) => Err(error),
        None => Ok(value),
    };
    Ok(Parsed { value, outline })
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

/// A binary operator of the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*` or `×`
    Mul,
    /// `/` or `÷`
    Div,
    /// `%`
    Rem,
    /// `^` or `**`
    Pow,
}

/// What the parser knows of the sub-expression it read last.
#[derive(Debug, Clone, Copy)]
struct Node {
    /// The operator it evaluates last (see [`Outline::top`]).
    top: Option<Operator>,
    /// Whether it is one number or one parenthesised group.
    atomic: bool,
}

impl Node {
    const NUMBER: Node = Node {
        top: None,
        atomic: true,
    };

    fn operation(op: Operator) -> Node {
        Node {
            top: Some(op),
            atomic: false,
        }
    }
}

/// Applies one binary operator to finite operands, enforcing the rules of the
/// module documentation.
fn apply(op: Operator, a: f64, b: f64) -> Result<f64, ExprError> {
    let result = match op {
        Operator::Add => a + b,
        Operator::Sub => a - b,
        Operator::Mul => a * b,
        Operator::Div | Operator::Rem if b == 0.0 => return Err(ExprError::DivisionByZero),
        Operator::Div => a / b,
        Operator::Rem => a % b,
        Operator::Pow => {
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
    /// The sub-expression read last.
    node: Node,
    /// Whether a binary operator has been read.
    has_operator: bool,
}

impl<'a> Parser<'a> {
    fn new(chars: &'a [char], tokens: Vec<Token>) -> Self {
        Self {
            chars,
            tokens,
            next: 0,
            depth: 0,
            first_error: None,
            node: Node::NUMBER,
            has_operator: false,
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
        let mut node = self.node;
        loop {
            let op = match self.peek().kind {
                Kind::Plus => Operator::Add,
                Kind::Minus => Operator::Sub,
                _ => {
                    self.node = node;
                    return Ok(acc);
                }
            };
            self.bump();
            let rhs = self.term()?;
            acc = self.check(apply(op, acc, rhs));
            node = Node::operation(op);
            self.has_operator = true;
        }
    }

    /// `term := unary (('*' | '/' | '%') unary)*`
    fn term(&mut self) -> Result<f64, ExprError> {
        let mut acc = self.unary()?;
        let mut node = self.node;
        loop {
            let op = match self.peek().kind {
                Kind::Star => Operator::Mul,
                Kind::Slash => Operator::Div,
                Kind::Percent => Operator::Rem,
                _ => {
                    self.node = node;
                    return Ok(acc);
                }
            };
            self.bump();
            let rhs = self.unary()?;
            acc = self.check(apply(op, acc, rhs));
            node = Node::operation(op);
            self.has_operator = true;
        }
    }

    /// `unary := ('+' | '-')* power`
    fn unary(&mut self) -> Result<f64, ExprError> {
        let outer = self.depth;
        let first = self.next;
        let negate = self.signs()?;
        let signed = self.next != first;
        let value = self.power()?;
        self.depth = outer;
        if signed {
            // A sign is evaluated after a power (`-2^2`), before anything else it reads.
            let power = !self.node.atomic;
            self.node = Node {
                top: self.node.top.filter(|_| power),
                atomic: false,
            };
        }
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
        let base_node = self.node;
        let mut exponents: Vec<(bool, f64)> = Vec::new();
        while self.peek().kind == Kind::Caret {
            self.bump();
            let negate = self.signs()?;
            let operand = self.primary()?;
            exponents.push((negate, operand));
        }
        self.depth = outer;
        if exponents.is_empty() {
            self.node = base_node;
        } else {
            self.node = Node::operation(Operator::Pow);
            self.has_operator = true;
        }
        let mut exponent: Option<f64> = None;
        for (negate, operand) in exponents.into_iter().rev() {
            let value = match exponent {
                None => operand,
                Some(e) => self.check(apply(Operator::Pow, operand, e)),
            };
            exponent = Some(if negate { -value } else { value });
        }
        Ok(match exponent {
            None => base,
            Some(e) => self.check(apply(Operator::Pow, base, e)),
        })
    }

    /// `primary := number | '(' expression ')'`
    fn primary(&mut self) -> Result<f64, ExprError> {
        let token = self.peek();
        match token.kind {
            Kind::Number(value) => {
                self.bump();
                self.node = Node::NUMBER;
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
                        // A group is one operand; what it evaluates last is inside it.
                        self.node.atomic = true;
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
mod tests;
