//! The pattern planner: a deterministic, offline planner for the requests people type most.
//!
//! It understands arithmetic (for the `calculator` tool) and the todo list (for the `todo`
//! tool), in any capitalisation, with politeness ("please", "can you ...") and trailing
//! punctuation, combined into compound prompts ("calculate 2+3 and then add the result to my
//! todos"). Anything else is refused with [`PlanError::NotUnderstood`], whose message quotes
//! the part it could not read and says what it does understand.
//!
//! # How a prompt is read
//!
//! 1. `tokenize`: the prompt becomes words (lowercased copies, used only for matching),
//!    numbers, quoted strings and symbols, each with its byte range in the prompt. Titles are
//!    sliced out of the prompt by those ranges, so they keep the user's capitalisation and
//!    punctuation, and no byte offset is ever computed on a lowercased copy.
//! 2. `split`: the prompt is cut into clauses at separators ("and", "then", "after that",
//!    commas, semicolons, sentence ends, new lines), but only where the text after the
//!    separator is itself a complete request. "add a todo to buy milk and eggs" is one
//!    clause; "calculate 2+3 and list todos" is two. Quoted text is one token, so it is
//!    never split.
//! 3. `parse_clause`: each clause goes through the rows of the todo intent table
//!    (`table`) in priority order (list, reopen, complete, delete, get, add), then
//!    arithmetic. A todo title that is a calculation in words ("add the sum of 2 and 3 to
//!    my todos") becomes a calculator step and an add that references it.
//! 4. `build`: intents become steps `s1, s2, ...` in prompt order. References ("the
//!    result", "the sum", "it") are resolved to earlier steps; a step depends on the steps it
//!    references and on every step before the latest "then". The todo store's ordering
//!    (a todo step waits for every earlier one when either writes) is added by plan
//!    validation ([`super::validate`]) from each tool's declared access, as for every
//!    planner.
//!
//! # Layout
//!
//! - `tokens`: tokenizing and the phrase-matching helpers.
//! - `clauses`: splitting a prompt into clauses and reading one.
//! - `table`: the todo intents, one row each; adding an intent is adding a row (and the
//!   todo tool's support for its action).
//! - `todo`, `vocabulary`: the words of the todo intents, how a todo is named, titles.
//! - `arithmetic`, `references`: calculations and "the result".
//! - `intents`, `build`: what a clause asks for, and the steps it becomes.
//!
//! Every loop consumes at least one token, so the work is linear in the prompt (quote
//! pairing aside, which is quadratic only in the number of unmatched quotes), and nothing
//! indexes out of bounds: all slicing goes through `get` or through lengths just checked.

mod arithmetic;
mod build;
mod clauses;
mod intents;
mod references;
mod table;
#[cfg(test)]
mod tests;
mod todo;
mod tokens;
mod vocabulary;

use async_trait::async_trait;

use super::{PlanError, Planned, Planner, MAX_STEPS};
use crate::domain::{Plan, PlannerInfo};
use crate::tools::Registry;
use build::build;
use clauses::{parse_clause, split, Clause};
use intents::{Intent, Parse};
use table::hint;
use tokens::{text, tokenize, Tok};

pub use table::understood;

/// Longest part of a prompt quoted back in an error message, in characters.
const MAX_QUOTE_CHARS: usize = 80;

/// The deterministic, offline planner. See the [module documentation](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct PatternPlanner;

impl PatternPlanner {
    /// Turn `prompt` into a raw (not yet validated) plan whose steps are `s1, s2, ...` in
    /// prompt order. Pure and deterministic.
    pub fn plan_prompt(&self, prompt: &str) -> Result<Plan, PlanError> {
        let toks = tokenize(prompt);
        let clauses = split(prompt, &toks);
        let mut parsed: Vec<(bool, Vec<Intent>)> = Vec::new();
        let mut filler: Option<&str> = None;
        let mut count = 0usize;
        for clause in &clauses {
            let parse = match &clause.parse {
                Some(p) => p.clone(),
                None => parse_clause(prompt, clause.tokens(&toks)),
            };
            match parse {
                Parse::Intents(intents) => {
                    count += intents.len();
                    parsed.push((clause.after_then, intents));
                }
                Parse::Filler => {
                    filler.get_or_insert(text(prompt, clause.tokens(&toks)));
                }
                Parse::Unknown => return Err(explain_failure(prompt, &toks, clause)),
            }
        }
        if parsed.is_empty() {
            return Err(match filler {
                Some(f) => not_understood(f, None),
                None if prompt.trim().is_empty() => PlanError::NotUnderstood(format!(
                    "There is nothing to do: the prompt is empty. {}",
                    understood()
                )),
                None => not_understood(prompt, None),
            });
        }
        if count > MAX_STEPS {
            return Err(PlanError::Invalid(format!(
                "the plan has {count} steps, more than the limit of {MAX_STEPS}"
            )));
        }
        build(parsed)
    }
}

#[async_trait]
impl Planner for PatternPlanner {
    fn name(&self) -> &'static str {
        "pattern"
    }

    async fn plan(&self, prompt: &str, registry: &Registry) -> Result<Planned, PlanError> {
        let mut plan = self.plan_prompt(prompt)?;
        super::validate(&mut plan, registry)?;
        Ok(Planned {
            plan,
            info: PlannerInfo {
                name: "pattern".into(),
                ..Default::default()
            },
            fallback_detail: None,
        })
    }
}

/// The "not understood" error for `part` of a prompt, with an optional hint.
fn not_understood(part: &str, hint: Option<&str>) -> PlanError {
    let part = part.trim();
    let quoted = if part.chars().count() > MAX_QUOTE_CHARS {
        format!(
            "{}...",
            part.chars().take(MAX_QUOTE_CHARS).collect::<String>()
        )
    } else {
        part.to_owned()
    };
    PlanError::NotUnderstood(match hint {
        Some(h) => format!(
            "I don't know how to do \"{quoted}\" ({h}). {}",
            understood()
        ),
        None => format!("I don't know how to do \"{quoted}\". {}", understood()),
    })
}

/// Explain why `clause` failed: when the clause was merged from several segments and a
/// leading part of it is a request, quote only the part after it.
fn explain_failure(src: &str, toks: &[Tok], clause: &Clause) -> PlanError {
    // Bounded, so a clause merged from thousands of segments stays linear to explain.
    const MAX_TRIES: usize = 16;
    for k in (1..clause.segments.len().min(MAX_TRIES)).rev() {
        let (Some(first), Some(last), Some(bad), Some(end)) = (
            clause.segments.first(),
            clause.segments.get(k - 1),
            clause.segments.get(k),
            clause.segments.last(),
        ) else {
            continue;
        };
        let head = toks.get(first.start..last.end).unwrap_or(&[]);
        if matches!(parse_clause(src, head), Parse::Intents(_)) {
            let rest = toks.get(bad.start..end.end).unwrap_or(&[]);
            return not_understood(text(src, rest), hint(rest));
        }
    }
    let all = clause.tokens(toks);
    not_understood(text(src, all), hint(all))
}
