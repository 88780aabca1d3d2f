//! `todo`: add, list, get, complete and delete a tenant's todos. Every change is keyed by
//! (run, step) so a repeated execution cannot apply it twice, and declares its compensation:
//! add -> delete, delete -> restore, complete -> reopen.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{Access, Tool, ToolContext, ToolError};
use crate::domain::ErrorKind;
use crate::ports::{StoreError, Todo, TodoChange, TodoError, TodoStore};

/// Longest title accepted.
pub const MAX_TITLE_LEN: usize = 500;

pub struct TodoTool {
    store: Arc<dyn TodoStore>,
}

impl TodoTool {
    pub fn new(store: Arc<dyn TodoStore>) -> Self {
        Self { store }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Add,
    List,
    Get,
    Complete,
    Delete,
}

impl Action {
    fn parse(input: &Value) -> Result<Action, ToolError> {
        match input.get("action").and_then(Value::as_str) {
            Some("add") => Ok(Action::Add),
            Some("list") => Ok(Action::List),
            Some("get") => Ok(Action::Get),
            Some("complete") => Ok(Action::Complete),
            Some("delete") => Ok(Action::Delete),
            Some(other) => Err(ToolError::permanent(format!(
                "unknown todo action '{other}' (expected add, list, get, complete or delete)"
            ))),
            None => Err(ToolError::permanent("todo input needs an \"action\"")),
        }
    }
}

/// Which todo an input names: by id, or by title.
enum Target {
    Id(u64),
    Title(String),
}

fn target(input: &Value) -> Result<Target, ToolError> {
    if let Some(id) = input.get("id") {
        return match id {
            Value::Number(n) => n
                .as_u64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && *f >= 1.0)
                        .map(|f| f as u64)
                })
                .filter(|id| *id >= 1)
                .map(Target::Id)
                .ok_or_else(|| {
                    ToolError::permanent(format!("todo id must be a positive integer, got {n}"))
                }),
            Value::String(s) => s
                .trim()
                .trim_start_matches('#')
                .parse::<u64>()
                .ok()
                .filter(|id| *id >= 1)
                .map(Target::Id)
                .ok_or_else(|| {
                    ToolError::permanent(format!("todo id must be a positive integer, got '{s}'"))
                }),
            other => Err(ToolError::permanent(format!(
                "todo id must be a positive integer, got {other}"
            ))),
        };
    }
    title(input).map(Target::Title)
}

/// The title, accepting a number (a substituted calculator result) as its text.
fn title(input: &Value) -> Result<String, ToolError> {
    let raw = match input.get("title") {
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(Value::Number(_)) => crate::engine::refs::render(&input["title"]),
        Some(_) => return Err(ToolError::permanent("todo title must be text")),
        None => {
            return Err(ToolError::permanent(
                "this todo action needs an \"id\" or a \"title\"",
            ))
        }
    };
    if raw.is_empty() {
        return Err(ToolError::permanent("todo title must not be empty"));
    }
    if raw.chars().count() > MAX_TITLE_LEN {
        return Err(ToolError::permanent(format!(
            "todo title must be at most {MAX_TITLE_LEN} characters"
        )));
    }
    Ok(raw)
}

fn store_error(e: StoreError) -> ToolError {
    match e {
        StoreError::Unavailable(m) => ToolError::transient(format!("todo store unavailable: {m}")),
        StoreError::Conflict(m) => ToolError::transient(format!("todo store busy: {m}")),
        other => ToolError::permanent(other.to_string()),
    }
}

fn todo_error(e: TodoError) -> ToolError {
    match e {
        TodoError::NotFound(id) => ToolError::permanent(format!("todo {id} not found")),
        TodoError::Store(s) => store_error(s),
    }
}

fn to_json(todo: &Todo) -> Value {
    serde_json::to_value(todo).unwrap_or(Value::Null)
}

impl TodoTool {
    async fn resolve(
        &self,
        tenant: &str,
        target: Target,
        prefer_open: bool,
    ) -> Result<Todo, ToolError> {
        match target {
            Target::Id(id) => self
                .store
                .get(tenant, id)
                .await
                .map_err(store_error)?
                .ok_or_else(|| ToolError::permanent(format!("todo {id} not found"))),
            Target::Title(title) => {
                let wanted = normalise(&title);
                let todos = self.store.list(tenant).await.map_err(store_error)?;
                let mut matches: Vec<Todo> = todos
                    .into_iter()
                    .filter(|t| normalise(&t.title) == wanted)
                    .collect();
                if prefer_open {
                    matches.sort_by_key(|t| (t.done, t.id));
                }
                matches
                    .into_iter()
                    .next()
                    .ok_or_else(|| ToolError::permanent(format!("no todo titled '{title}'")))
            }
        }
    }

    async fn change(
        &self,
        ctx: &ToolContext,
        key: &str,
        change: TodoChange,
    ) -> Result<Todo, ToolError> {
        self.store
            .apply(&ctx.tenant, key, &change, ctx.now)
            .await
            .map_err(todo_error)
    }
}

fn normalise(title: &str) -> String {
    title
        .trim()
        .trim_matches(|c| c == '\'' || c == '"')
        .trim()
        .to_lowercase()
}

#[async_trait]
impl Tool for TodoTool {
    fn name(&self) -> &'static str {
        "todo"
    }

    fn description(&self) -> &'static str {
        "Manages the tenant's todo list: add (title), list, get, complete or delete (id or title)."
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "action": {"type": "string", "enum": ["add", "list", "get", "complete", "delete"]},
                "title": {"type": "string", "minLength": 1, "maxLength": MAX_TITLE_LEN},
                "id": {"type": "integer", "minimum": 1}
            },
            "required": ["action"],
            "additionalProperties": false
        })
    }

    fn validate(&self, input: &Value) -> Result<(), String> {
        super::schema::validate(&self.input_schema(), input)?;
        let action = Action::parse(input).map_err(|e| e.message)?;
        let has = |k: &str| input.get(k).is_some();
        match action {
            Action::Add if !has("title") => Err("todo add needs a title".into()),
            Action::Add if has("id") => Err("todo add takes a title, not an id".into()),
            Action::List if has("id") || has("title") => {
                Err("todo list takes no id or title".into())
            }
            Action::Get | Action::Complete | Action::Delete if !has("id") && !has("title") => {
                Err("this todo action needs an id or a title".into())
            }
            _ => Ok(()),
        }
    }

    fn access(&self, input: &Value) -> Option<Access> {
        let writes = !matches!(Action::parse(input), Ok(Action::List | Action::Get));
        Some(Access {
            resource: "todo",
            writes,
        })
    }

    fn compensation(&self, input: &Value) -> Option<&'static str> {
        match Action::parse(input) {
            Ok(Action::Add) => Some("delete"),
            Ok(Action::Delete) => Some("restore"),
            Ok(Action::Complete) => Some("reopen"),
            _ => None,
        }
    }

    async fn execute(&self, ctx: &ToolContext, input: &Value) -> Result<Value, ToolError> {
        let action = Action::parse(input)?;
        let key = ctx.effect_key();
        if matches!(action, Action::Add | Action::Complete | Action::Delete) {
            // A repeated execution of this step returns what the first one did.
            if let Some(done) = self
                .store
                .recorded(&ctx.tenant, &key)
                .await
                .map_err(store_error)?
            {
                return Ok(to_json(&done));
            }
        }
        match action {
            Action::Add => {
                let title = title(input)?;
                Ok(to_json(
                    &self.change(ctx, &key, TodoChange::Add { title }).await?,
                ))
            }
            Action::List => {
                let todos = self.store.list(&ctx.tenant).await.map_err(store_error)?;
                Ok(Value::Array(todos.iter().map(to_json).collect()))
            }
            Action::Get => Ok(to_json(
                &self.resolve(&ctx.tenant, target(input)?, false).await?,
            )),
            Action::Complete => {
                let todo = self.resolve(&ctx.tenant, target(input)?, true).await?;
                let was_done = todo.done;
                let after = self
                    .change(ctx, &key, TodoChange::Complete { id: todo.id })
                    .await?;
                let mut out = to_json(&after);
                out["previously_done"] = Value::Bool(was_done);
                Ok(out)
            }
            Action::Delete => {
                let todo = self.resolve(&ctx.tenant, target(input)?, false).await?;
                Ok(to_json(
                    &self
                        .change(ctx, &key, TodoChange::Delete { id: todo.id })
                        .await?,
                ))
            }
        }
    }

    async fn compensate(
        &self,
        ctx: &ToolContext,
        input: &Value,
        output: &Value,
    ) -> Result<(), ToolError> {
        let key = ctx.compensation_key();
        let id = output.get("id").and_then(Value::as_u64);
        let change = match (Action::parse(input)?, id) {
            (Action::Add, Some(id)) => TodoChange::Delete { id },
            (Action::Complete, Some(_))
                if output.get("previously_done") == Some(&Value::Bool(true)) =>
            {
                return Ok(());
            }
            (Action::Complete, Some(id)) => TodoChange::Reopen { id },
            (Action::Delete, Some(_)) => {
                let todo: Todo = serde_json::from_value(output.clone()).map_err(|e| {
                    ToolError::permanent(format!("cannot restore todo from {output}: {e}"))
                })?;
                TodoChange::Restore { todo }
            }
            (Action::List | Action::Get, _) => return Ok(()),
            (_, None) => {
                return Err(ToolError {
                    kind: ErrorKind::Permanent,
                    message: format!("cannot compensate: output {output} has no todo id"),
                })
            }
        };
        match self.store.apply(&ctx.tenant, &key, &change, ctx.now).await {
            // Already gone (deleted by someone else): nothing left to undo.
            Ok(_) | Err(TodoError::NotFound(_)) => Ok(()),
            Err(e) => Err(todo_error(e)),
        }
    }
}
