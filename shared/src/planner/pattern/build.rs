//! Building the plan: intents become steps, references become dependencies.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::domain::refs::reference_to;
use crate::domain::{Plan, PlanStep};
use crate::planner::PlanError;
use crate::tools::expr::Operator;

use super::intents::{Intent, Piece, RefKind, RefUse, Target, Title};

/// What an earlier step was, for resolving references.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Made {
    /// A calculation and its top-level operator.
    Calc(Option<Operator>),
    /// A todo action, and whether it names a todo its output can stand for.
    Todo { names_todo: bool },
}

/// The id of the `i`-th step (0-based): `s1, s2, ...`.
pub(super) fn step_id(i: usize) -> String {
    format!("s{}", i + 1)
}

/// The earlier step a reference names.
pub(super) fn resolve(r: &RefUse, made: &[Made]) -> Result<usize, PlanError> {
    let latest = |f: &dyn Fn(&Made) -> bool| made.iter().rposition(f);
    let found = match r.kind {
        RefKind::Previous => made.len().checked_sub(1),
        RefKind::Todo => latest(&|m| {
            matches!(
                m,
                Made::Todo {
                    names_todo: true,
                    ..
                }
            )
        }),
        kind => {
            let wanted = kind.operator();
            latest(&|m| wanted.is_some() && *m == Made::Calc(wanted))
                .or_else(|| latest(&|m| matches!(m, Made::Calc(_))))
        }
    };
    found.ok_or_else(|| {
        let what = if r.kind == RefKind::Todo {
            "todo"
        } else {
            "calculation"
        };
        PlanError::NotUnderstood(format!(
            "'{}' refers to an earlier {what}, but there is none before it",
            r.phrase.trim()
        ))
    })
}

/// Turn the clauses' intents into steps with their dependencies.
pub(super) fn build(clauses: Vec<(bool, Vec<Intent>)>) -> Result<Plan, PlanError> {
    let mut steps: Vec<PlanStep> = Vec::new();
    let mut made: Vec<Made> = Vec::new();
    let mut barrier = 0;
    for (after_then, intents) in clauses {
        if after_then {
            barrier = steps.len();
        }
        for intent in intents {
            let mut deps: BTreeSet<usize> = (0..barrier).collect();
            let mut reference = |r: &RefUse| -> Result<String, PlanError> {
                let i = resolve(r, &made)?;
                deps.insert(i);
                Ok(reference_to(&step_id(i)))
            };
            let (tool, input, this) = match intent {
                Intent::Calculate(e) => {
                    let mut names = Vec::new();
                    for piece in &e.pieces {
                        if let Piece::Ref(r) = piece {
                            names.push(reference(r)?);
                        }
                    }
                    let mut names = names.into_iter();
                    let expression = e.render(|_| names.next().unwrap_or_default());
                    let top = e.outline().and_then(|o| o.top);
                    (
                        "calculator",
                        json!({ "expression": expression }),
                        Made::Calc(top),
                    )
                }
                Intent::Add(title) => {
                    let title = match title {
                        Title::Text(t) => t,
                        Title::Ref(r) => reference(&r)?,
                    };
                    let this = Made::Todo { names_todo: true };
                    ("todo", json!({ "action": "add", "title": title }), this)
                }
                Intent::List => {
                    let this = Made::Todo { names_todo: false };
                    ("todo", json!({ "action": "list" }), this)
                }
                Intent::Todo(act, target) => {
                    let (key, value) = match target {
                        Target::Id(id) => ("id", Value::from(id)),
                        Target::Title(t) => ("title", Value::from(t)),
                        Target::Ref(r) => ("title", Value::from(reference(&r)?)),
                    };
                    let mut input = json!({ "action": act.action });
                    input[key] = value;
                    let this = Made::Todo {
                        names_todo: act.names_todo,
                    };
                    ("todo", input, this)
                }
            };
            steps.push(PlanStep {
                id: step_id(steps.len()),
                tool: tool.to_owned(),
                input,
                depends_on: deps.into_iter().map(step_id).collect(),
                requires_approval: false,
            });
            made.push(this);
        }
    }
    Ok(Plan { steps })
}
