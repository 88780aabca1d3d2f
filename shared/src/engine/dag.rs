//! The plan as a DAG: levels (what can run together) and cycle detection.

use std::collections::{HashMap, HashSet};

use crate::domain::Plan;

/// Group step ids into levels: level 0 has no dependencies, level n depends only on
/// levels below n. `Err` names a step on a cycle (or depending on an unknown step).
pub fn levels(plan: &Plan) -> Result<Vec<Vec<String>>, String> {
    let ids: HashSet<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
    let mut level_of: HashMap<&str, usize> = HashMap::new();
    let mut remaining: Vec<_> = plan.steps.iter().collect();
    while !remaining.is_empty() {
        let before = remaining.len();
        let mut next = Vec::new();
        for step in remaining {
            if let Some(bad) = step.depends_on.iter().find(|d| !ids.contains(d.as_str())) {
                return Err(format!("step {} depends on unknown step {bad}", step.id));
            }
            let deps: Option<Vec<usize>> = step
                .depends_on
                .iter()
                .map(|d| level_of.get(d.as_str()).copied())
                .collect();
            match deps {
                Some(deps) => {
                    let level = deps.iter().map(|l| l + 1).max().unwrap_or(0);
                    level_of.insert(step.id.as_str(), level);
                }
                None => next.push(step),
            }
        }
        if next.len() == before {
            let on_cycle = next.first().map(|s| s.id.clone()).unwrap_or_default();
            return Err(format!(
                "the plan has a dependency cycle through step {on_cycle}"
            ));
        }
        remaining = next;
    }
    let depth = level_of.values().copied().max().map_or(0, |m| m + 1);
    let mut out = vec![Vec::new(); depth];
    for step in &plan.steps {
        if let Some(&l) = level_of.get(step.id.as_str()) {
            out[l].push(step.id.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PlanStep;
    use serde_json::json;

    fn step(id: &str, deps: &[&str]) -> PlanStep {
        PlanStep {
            id: id.into(),
            tool: "calculator".into(),
            input: json!({"expression": "1"}),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            requires_approval: false,
        }
    }

    #[test]
    fn given_the_seed_dag_when_levelled_then_three_parallel_steps_precede_the_fourth() {
        let plan = Plan {
            steps: vec![
                step("s1", &[]),
                step("s2", &[]),
                step("s3", &[]),
                step("s4", &["s1", "s2", "s3"]),
            ],
        };
        assert_eq!(
            levels(&plan),
            Ok(vec![
                vec!["s1".into(), "s2".into(), "s3".into()],
                vec!["s4".into()]
            ])
        );
    }

    #[test]
    fn given_forward_edges_when_levelled_then_order_follows_dependencies() {
        let plan = Plan {
            steps: vec![step("a", &["b"]), step("b", &[])],
        };
        assert_eq!(levels(&plan), Ok(vec![vec!["b".into()], vec!["a".into()]]));
    }

    #[test]
    fn given_a_cycle_or_unknown_dependency_when_levelled_then_error() {
        let cyc = Plan {
            steps: vec![step("a", &["b"]), step("b", &["a"])],
        };
        assert!(levels(&cyc).expect_err("cycle").contains("cycle"));
        let selfdep = Plan {
            steps: vec![step("a", &["a"])],
        };
        assert!(levels(&selfdep).is_err());
        let unknown = Plan {
            steps: vec![step("a", &["zz"])],
        };
        assert_eq!(
            levels(&unknown),
            Err("step a depends on unknown step zz".into())
        );
        assert_eq!(levels(&Plan::default()), Ok(vec![]));
    }
}
