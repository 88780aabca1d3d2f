//! Tools: what a step can call. Every tool implements [`Tool`] (name, JSON schema,
//! execute, compensate); adding one is a file here plus a line in [`Registry::new`].

pub mod calculator;
pub mod expr;
pub mod faults;
pub mod schema;
pub mod todo;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::domain::{Output, ToolError};
use crate::ports::TodoStore;

pub use faults::{FaultRule, Faults};

/// Who is calling a tool: the run and step, so side effects can be keyed by them.
#[derive(Debug, Clone)]
pub struct ToolContext {
    /// The tenant whose run calls the tool; tools keep each tenant's data apart by it.
    pub tenant: String,
    /// The run the step belongs to.
    pub run_id: String,
    /// The step's id in the plan.
    pub step_id: String,
    /// The attempt (or, for a compensation, the compensation attempt) making the call, from 1.
    pub attempt: u32,
    /// The time of the call, from the runtime's clock (so tests can fix it).
    pub now: DateTime<Utc>,
}

impl ToolContext {
    /// The key a side effect of this step is recorded under.
    pub fn effect_key(&self) -> String {
        format!("{}/{}", self.run_id, self.step_id)
    }

    /// The key the compensation of this step is recorded under.
    pub fn compensation_key(&self) -> String {
        format!("{}/{}/undo", self.run_id, self.step_id)
    }
}

/// What shared state a call touches, so steps on the same store keep prompt order when
/// one of them writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// The name of the store touched (`todo`); calls on different resources never conflict.
    pub resource: &'static str,
    /// Whether the call changes the store (a write) rather than only reading it.
    pub writes: bool,
}

/// A capability a plan step can call: described for planners, validated before a run, executed by
/// workers and undone by the saga.
#[async_trait]
pub trait Tool: Send + Sync {
    /// The tool's name, as plans and the catalog write it (`calculator`, `todo`).
    fn name(&self) -> &'static str;

    /// One sentence telling planners (and `GET /tools`) what the tool does.
    fn description(&self) -> &'static str;

    /// JSON Schema of the input (a subset: see [`schema`]).
    fn input_schema(&self) -> Value;

    /// Check an input before it is planned. References (`{{s1}}`) are accepted wherever a
    /// value is expected; they are checked again after substitution, at run time.
    fn validate(&self, input: &Value) -> Result<(), String> {
        schema::validate(&self.input_schema(), input)
    }

    /// The store this call touches, if any.
    fn access(&self, input: &Value) -> Option<Access>;

    /// The name of the action that undoes this call, or `None` if there is nothing to undo.
    fn compensation(&self, input: &Value) -> Option<&'static str>;

    /// Make the call for `ctx` with the step's input (references filled in) and return its JSON
    /// output; the error's kind decides whether the engine retries.
    async fn execute(&self, ctx: &ToolContext, input: &Value) -> Result<Value, ToolError>;

    /// [`Tool::execute`], its output as JSON text: what workers call. A tool whose output
    /// can be large writes its text directly, with no tree of JSON values in between.
    async fn execute_output(&self, ctx: &ToolContext, input: &Value) -> Result<Output, ToolError> {
        self.execute(ctx, input).await.map(Output::from)
    }

    /// Undo a completed call, given its input and output. Must be idempotent.
    async fn compensate(
        &self,
        ctx: &ToolContext,
        input: &Value,
        output: &Value,
    ) -> Result<(), ToolError>;
}

/// One entry of the catalog served by `GET /tools`.
#[derive(Debug, Clone, Serialize)]
pub struct ToolInfo {
    /// The tool's name, as plans use it.
    pub name: &'static str,
    /// What the tool does, for people and planners.
    pub description: &'static str,
    /// JSON Schema of the tool's input.
    pub input_schema: Value,
}

/// The tools a runtime offers, by name.
#[derive(Clone)]
pub struct Registry {
    tools: BTreeMap<&'static str, Arc<dyn Tool>>,
    /// Each tool's input schema, built once: workers read it for every step they run.
    schemas: Arc<BTreeMap<&'static str, Value>>,
}

impl Registry {
    /// The standard catalog: `calculator` and `todo`.
    pub fn new(todos: Arc<dyn TodoStore>) -> Self {
        Self::from_tools(vec![
            Arc::new(calculator::Calculator),
            Arc::new(todo::TodoTool::new(todos)),
        ])
    }

    /// A registry of exactly these tools, keyed by their names (a later tool replaces an earlier
    /// one of the same name).
    pub fn from_tools(tools: Vec<Arc<dyn Tool>>) -> Self {
        Self::of(tools.into_iter().map(|t| (t.name(), t)).collect())
    }

    fn of(tools: BTreeMap<&'static str, Arc<dyn Tool>>) -> Self {
        let schemas = tools
            .iter()
            .map(|(name, tool)| (*name, tool.input_schema()))
            .collect();
        Self {
            tools,
            schemas: Arc::new(schemas),
        }
    }

    /// Wrap every tool that a fault rule names (see [`faults`]).
    pub fn with_faults(self, faults: &Faults) -> Self {
        if faults.is_empty() {
            return self;
        }
        Self::of(
            self.tools
                .into_iter()
                .map(|(name, tool)| (name, faults.wrap(tool)))
                .collect(),
        )
    }

    /// The tool with this name; `None` if the runtime does not offer it.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.tools.get(name)
    }

    /// The input schema of the tool with this name, as it was when the registry was made;
    /// `None` if the runtime does not offer it.
    pub fn input_schema(&self, name: &str) -> Option<&Value> {
        self.schemas.get(name)
    }

    /// The names of every tool, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.tools.keys().copied().collect()
    }

    /// Name, description and input schema of every tool, sorted by name (`GET /tools`).
    pub fn catalog(&self) -> Vec<ToolInfo> {
        self.tools
            .values()
            .map(|t| ToolInfo {
                name: t.name(),
                description: t.description(),
                input_schema: t.input_schema(),
            })
            .collect()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("tools", &self.names())
            .finish()
    }
}

impl crate::engine::ToolFacts for Registry {
    fn compensable(&self, tool: &str, input: &Value) -> bool {
        self.get(tool)
            .is_some_and(|t| t.compensation(input).is_some())
    }

    fn input_schema(&self, tool: &str) -> Value {
        Registry::input_schema(self, tool)
            .cloned()
            .unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::local::memory::MemoryTodos;
    use crate::engine::ToolFacts;

    #[test]
    fn given_a_registry_when_asked_for_input_schemas_then_each_is_its_tools_and_unknown_tools_have_none(
    ) {
        let plain = Registry::new(Arc::new(MemoryTodos::default()));
        let faulty = plain
            .clone()
            .with_faults(&faults::Faults::parse("calculator=fail_permanent").expect("a rule"));
        for registry in [plain, faulty] {
            for name in registry.names() {
                let tool = registry.get(name).expect("named tool");
                assert_eq!(registry.input_schema(name), Some(&tool.input_schema()));
                assert_eq!(
                    ToolFacts::input_schema(&registry, name),
                    tool.input_schema()
                );
            }
            assert_eq!(registry.input_schema("nope"), None);
            assert_eq!(ToolFacts::input_schema(&registry, "nope"), Value::Null);
            assert_eq!(registry.names(), vec!["calculator", "todo"]);
        }
    }
}
