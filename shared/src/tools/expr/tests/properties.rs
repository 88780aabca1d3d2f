//! Property tests: random expression trees rendered with the fewest parentheses the grammar
//! needs, evaluated by the parser and by a reference evaluator written independently.

use proptest::prelude::*;

use super::*;
use crate::domain::number::{format_number, to_json_number};

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

    /// The parser's name for it.
    fn operator(self) -> Operator {
        match self {
            Op::Add => Operator::Add,
            Op::Sub => Operator::Sub,
            Op::Mul { .. } => Operator::Mul,
            Op::Div { .. } => Operator::Div,
            Op::Rem => Operator::Rem,
            Op::Pow { .. } => Operator::Pow,
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

    /// What [`outline`] must say of the rendered tree, from the tree's own structure.
    fn expected_outline(&self) -> Outline {
        Outline {
            top: self.expected_top(),
            has_operator: self.has_binary(),
            atomic: matches!(self, Tree::Num(..) | Tree::Group(_)),
        }
    }

    /// The operator evaluated last: a group is looked into; a sign hides what it applies
    /// to unless that is a power (which binds tighter than the sign).
    fn expected_top(&self) -> Option<Operator> {
        match self {
            Tree::Num(..) => None,
            Tree::Group(t) => t.expected_top(),
            Tree::Bin(op, ..) => Some(op.operator()),
            Tree::Neg(t) | Tree::Pos(t) => t.signed_top(),
        }
    }

    fn signed_top(&self) -> Option<Operator> {
        match self {
            Tree::Bin(Op::Pow { .. }, ..) => Some(Operator::Pow),
            Tree::Neg(t) | Tree::Pos(t) => t.signed_top(),
            _ => None,
        }
    }

    fn has_binary(&self) -> bool {
        match self {
            Tree::Num(..) => false,
            Tree::Neg(t) | Tree::Pos(t) | Tree::Group(t) => t.has_binary(),
            Tree::Bin(..) => true,
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
    fn given_random_expression_tree_when_outlined_then_top_operator_and_operand_shape_match_the_tree(
        tree in tree(),
        spaces in proptest::collection::vec(0_u8..6, 1..16),
    ) {
        let mut tokens = Vec::new();
        tree.render(&mut tokens);
        let input = join_with_whitespace(&tokens, &spaces);
        prop_assert_eq!(outline(&input), Ok(tree.expected_outline()), "{}", input);
    }

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
