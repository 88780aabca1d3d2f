//! Intents: what a clause asks for, before references are resolved.

use crate::tools::expr::{self, Operator, Outline};

/// What an earlier-result phrase asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RefKind {
    /// "the result", "the answer", "it": the latest calculation.
    Any,
    /// "the sum" / "the total": the latest addition, else the latest calculation.
    Sum,
    /// "the product".
    Product,
    /// "the difference".
    Difference,
    /// "the quotient".
    Quotient,
    /// "it" / "the todo" in a todo command: the latest todo added or fetched.
    Todo,
    /// The step just before (a calculation planned for the title of the todo after it).
    Previous,
}

impl RefKind {
    /// The top-level operator a calculation must have to be preferred.
    pub(super) fn operator(self) -> Option<Operator> {
        match self {
            RefKind::Sum => Some(Operator::Add),
            RefKind::Product => Some(Operator::Mul),
            RefKind::Difference => Some(Operator::Sub),
            RefKind::Quotient => Some(Operator::Div),
            RefKind::Any | RefKind::Todo | RefKind::Previous => None,
        }
    }
}

/// A phrase referring to an earlier step, as typed.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RefUse {
    pub(super) kind: RefKind,
    pub(super) phrase: String,
}

/// A part of an arithmetic expression.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Piece {
    Text(String),
    Ref(RefUse),
}

/// An arithmetic expression that may name earlier results.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Expr {
    pub(super) pieces: Vec<Piece>,
}

impl Expr {
    pub(super) fn push_text(&mut self, s: &str) {
        if let Some(Piece::Text(t)) = self.pieces.last_mut() {
            t.push_str(s);
        } else {
            self.pieces.push(Piece::Text(s.to_owned()));
        }
    }

    pub(super) fn push_ref(&mut self, r: RefUse) {
        self.pieces.push(Piece::Ref(r));
    }

    pub(super) fn append(&mut self, other: Expr) {
        for piece in other.pieces {
            match piece {
                Piece::Text(t) => self.push_text(&t),
                Piece::Ref(r) => self.push_ref(r),
            }
        }
    }

    /// The expression text, each reference written by `name`.
    pub(super) fn render(&self, mut name: impl FnMut(&RefUse) -> String) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Ref(r) => out.push_str(&name(r)),
            }
        }
        out
    }

    /// The expression with every reference replaced by `1`, for syntax checks.
    pub(super) fn placeholder(&self) -> String {
        self.render(|_| "1".to_owned())
    }

    /// What the calculator reads in the expression (references read as numbers), or
    /// `None` when it cannot parse it.
    pub(super) fn outline(&self) -> Option<Outline> {
        expr::outline(&self.placeholder()).ok()
    }

    /// The expression as an operand: parenthesised unless it is a single number, reference
    /// or parenthesised group.
    pub(super) fn operand(self) -> Expr {
        if self.outline().is_some_and(|o| o.atomic) {
            return self;
        }
        let mut out = Expr::default();
        out.push_text("(");
        out.append(self);
        out.push_text(")");
        out
    }
}

/// The title of a todo to add.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Title {
    Text(String),
    Ref(RefUse),
}

/// Which todo a get, complete or delete names.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Target {
    Id(u64),
    Title(String),
    Ref(RefUse),
}

/// A todo action that names a todo, as its row of the intent table says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TodoAct {
    /// The todo tool's `action`.
    pub(super) action: &'static str,
    /// Whether the step's output is the todo it names.
    pub(super) names_todo: bool,
}

/// One request of a clause, before references are resolved.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Intent {
    Calculate(Expr),
    Add(Title),
    List,
    Todo(TodoAct, Target),
}

/// What a clause reads as.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Parse {
    Intents(Vec<Intent>),
    /// Only greetings or politeness ("hello", "thanks").
    Filler,
    Unknown,
}
