//! `todo`: add, list, get, complete, reopen and delete a tenant's todos. Every change is
//! keyed by (run, step) so a repeated execution cannot apply it twice, and declares its
//! compensation: add -> delete, delete -> restore, complete -> reopen, reopen -> complete. A list is bounded: at most `limit`
//! todos (default [`TodoQuery::DEFAULT_LIMIT`], at most [`TodoQuery::MAX_LIMIT`]) with the
//! total, so a step's output stays small however many todos a tenant has.

use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use super::{Access, Tool, ToolContext};
use crate::domain::Output;
use crate::domain::ToolError;
use crate::domain::{ErrorKind, Todo, TodoChange};
use crate::ports::{StoreError, TodoError, TodoQuery, TodoStore};

/// Longest title accepted.
pub const MAX_TITLE_LEN: usize = 500;

/// The `todo` tool: adds, lists, gets, completes, reopens and deletes a tenant's todos in
/// a [`TodoStore`], each change once per step (keyed by run and step).
pub struct TodoTool {
    store: Arc<dyn TodoStore>,
}

/// The first page of a tenant's todos and their number, as `list` answers.
struct Listing {
    todos: Vec<Todo>,
    total: u64,
    truncated: bool,
}

impl Listing {
    fn listed(&self) -> Listed<'_> {
        Listed {
            todos: self
                .todos
                .iter()
                .map(|t| ListedTodo {
                    completed_at: t.completed_at.as_ref(),
                    created_at: &t.created_at,
                    done: t.done,
                    id: t.id,
                    title: &t.title,
                })
                .collect(),
            total: self.total,
            truncated: self.truncated,
        }
    }
}

/// `list`'s answer: `{"todos": [...], "total": N, "truncated": bool}`. Members in the
/// order a JSON object of them sorts (as the answer read when it was built as one).
#[derive(Serialize)]
struct Listed<'a> {
    todos: Vec<ListedTodo<'a>>,
    total: u64,
    truncated: bool,
}

/// A [`Todo`] as `list` writes it, its members sorted like [`Listed`]'s.
#[derive(Serialize)]
struct ListedTodo<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    completed_at: Option<&'a DateTime<Utc>>,
    created_at: &'a DateTime<Utc>,
    done: bool,
    id: u64,
    title: &'a str,
}

impl TodoTool {
    /// The first `limit` (from the input) todos of the tenant, and how many there are.
    async fn list(&self, ctx: &ToolContext, input: &Value) -> Result<Listing, ToolError> {
        let limit = limit(input)?;
        let page = self
            .store
            .list(&ctx.tenant, &TodoQuery::first(limit))
            .await
            .map_err(store_error)?;
        let total = self.store.count(&ctx.tenant).await.map_err(store_error)?;
        Ok(Listing {
            total: total.max(page.items.len() as u64),
            truncated: page.next_cursor.is_some(),
            todos: page.items,
        })
    }

    /// The tool over `store`.
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
    Reopen,
    Delete,
}

impl Action {
    fn parse(input: &Value) -> Result<Action, ToolError> {
        match input.get("action").and_then(Value::as_str) {
            Some("add") => Ok(Action::Add),
            Some("list") => Ok(Action::List),
            Some("get") => Ok(Action::Get),
            Some("complete") => Ok(Action::Complete),
            Some("reopen") => Ok(Action::Reopen),
            Some("delete") => Ok(Action::Delete),
            Some(other) => Err(ToolError::permanent(format!(
                "unknown todo action '{other}' (expected add, list, get, complete, reopen or delete)"
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

/// A whole number from JSON, accepting `3.0` (a substituted calculator result) as `3`.
fn whole(n: &serde_json::Number) -> Option<u64> {
    n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < u64::MAX as f64)
            .map(|f| f as u64)
    })
}

fn target(input: &Value) -> Result<Target, ToolError> {
    if let Some(id) = input.get("id") {
        return match id {
            Value::Number(n) => whole(n)
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
        Some(Value::Number(_)) => crate::domain::refs::render(&input["title"]),
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

/// How many todos a list shows: `limit`, or [`TodoQuery::DEFAULT_LIMIT`].
fn limit(input: &Value) -> Result<usize, ToolError> {
    let max = TodoQuery::MAX_LIMIT;
    match input.get("limit") {
        None | Some(Value::Null) => Ok(TodoQuery::DEFAULT_LIMIT),
        Some(Value::Number(n)) => whole(n)
            .and_then(|l| usize::try_from(l).ok())
            .filter(|l| (1..=max).contains(l))
            .ok_or_else(|| {
                ToolError::permanent(format!("todo list limit must be from 1 to {max}, got {n}"))
            }),
        Some(other) => Err(ToolError::permanent(format!(
            "todo list limit must be a whole number from 1 to {max}, got {other}"
        ))),
    }
}

fn store_error(e: StoreError) -> ToolError {
    match e {
        StoreError::Unavailable { message: m, .. } => {
            ToolError::transient(format!("todo store unavailable: {m}"))
        }
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
    /// The todo `target` names. By title, the first with that title, or with
    /// `prefer_done: Some(done)` the first whose `done` is `done` if there is one (so
    /// completing takes an open todo, reopening a done one).
    async fn resolve(
        &self,
        tenant: &str,
        target: Target,
        prefer_done: Option<bool>,
    ) -> Result<Todo, ToolError> {
        match target {
            Target::Id(id) => self
                .store
                .get(tenant, id)
                .await
                .map_err(store_error)?
                .ok_or_else(|| ToolError::permanent(format!("todo {id} not found"))),
            Target::Title(title) => {
                // Read a page at a time so only the matches are held.
                let wanted = normalise(&title);
                let mut query = TodoQuery::first(TodoQuery::MAX_LIMIT);
                let mut found: Option<Todo> = None;
                loop {
                    let page = self.store.list(tenant, &query).await.map_err(store_error)?;
                    for todo in page.items {
                        if normalise(&todo.title) != wanted {
                            continue;
                        }
                        if prefer_done.is_none_or(|done| todo.done == done) {
                            return Ok(todo);
                        }
                        found.get_or_insert(todo);
                    }
                    match page.next_cursor {
                        Some(next) => query.cursor = Some(next),
                        None => break,
                    }
                }
                found.ok_or_else(|| ToolError::permanent(format!("no todo titled '{title}'")))
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

/// The input schema, built once: plans validate against it and workers read it per step.
static SCHEMA: LazyLock<Value> = LazyLock::new(|| {
    json!({
        "type": "object",
        "properties": {
            "action": {"type": "string", "enum": ["add", "list", "get", "complete", "reopen", "delete"]},
            "title": {"type": "string", "minLength": 1, "maxLength": MAX_TITLE_LEN},
            "id": {"type": "integer", "minimum": 1},
            "limit": {
                "type": "integer",
                "minimum": 1,
                "maximum": TodoQuery::MAX_LIMIT,
                "description": "list only: how many todos to show (default 100)"
            }
        },
        "required": ["action"],
        "additionalProperties": false
    })
});

#[async_trait]
impl Tool for TodoTool {
    fn name(&self) -> &'static str {
        "todo"
    }

    fn description(&self) -> &'static str {
        "Manages the tenant's todo list: add (title), list (the first `limit` by id, default 100, with the total), get, complete, reopen (mark as not done) or delete (id or title)."
    }

    fn input_schema(&self) -> Value {
        SCHEMA.clone()
    }

    fn validate(&self, input: &Value) -> Result<(), String> {
        super::schema::validate(&SCHEMA, input)?;
        let action = Action::parse(input).map_err(|e| e.message)?;
        let has = |k: &str| input.get(k).is_some();
        match action {
            Action::Add if !has("title") => Err("todo add needs a title".into()),
            Action::Add if has("id") => Err("todo add takes a title, not an id".into()),
            Action::List if has("id") || has("title") => {
                Err("todo list takes no id or title".into())
            }
            Action::Add | Action::Get | Action::Complete | Action::Reopen | Action::Delete
                if has("limit") =>
            {
                Err("only todo list takes a limit".into())
            }
            Action::Get | Action::Complete | Action::Reopen | Action::Delete
                if !has("id") && !has("title") =>
            {
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
            Ok(Action::Reopen) => Some("complete"),
            _ => None,
        }
    }

    async fn execute(&self, ctx: &ToolContext, input: &Value) -> Result<Value, ToolError> {
        let action = Action::parse(input)?;
        let key = ctx.effect_key();
        if matches!(
            action,
            Action::Add | Action::Complete | Action::Reopen | Action::Delete
        ) {
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
            Action::List => serde_json::to_value(self.list(ctx, input).await?.listed())
                .map_err(|e| ToolError::permanent(format!("todo list: {e}"))),
            Action::Get => Ok(to_json(
                &self.resolve(&ctx.tenant, target(input)?, None).await?,
            )),
            Action::Complete | Action::Reopen => {
                // Completing a done todo (or reopening an open one) changes nothing and
                // says so: `previously_done` tells the compensation there is nothing to undo.
                let complete = action == Action::Complete;
                let todo = self
                    .resolve(&ctx.tenant, target(input)?, Some(!complete))
                    .await?;
                let was_done = todo.done;
                let change = if complete {
                    TodoChange::Complete { id: todo.id }
                } else {
                    TodoChange::Reopen { id: todo.id }
                };
                let after = self.change(ctx, &key, change).await?;
                let mut out = to_json(&after);
                out["previously_done"] = Value::Bool(was_done);
                Ok(out)
            }
            Action::Delete => {
                let todo = self.resolve(&ctx.tenant, target(input)?, None).await?;
                Ok(to_json(
                    &self
                        .change(ctx, &key, TodoChange::Delete { id: todo.id })
                        .await?,
                ))
            }
        }
    }

    async fn execute_output(&self, ctx: &ToolContext, input: &Value) -> Result<Output, ToolError> {
        // A list is the one large output: written straight from the todos.
        if Action::parse(input)? == Action::List {
            return Output::to_output(&self.list(ctx, input).await?.listed())
                .map_err(|e| ToolError::permanent(format!("todo list: {e}")));
        }
        self.execute(ctx, input).await.map(Output::from)
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
            (Action::Reopen, Some(_))
                if output.get("previously_done") == Some(&Value::Bool(false)) =>
            {
                return Ok(());
            }
            (Action::Reopen, Some(id)) => TodoChange::Complete { id },
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

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::adapters::local::memory::MemoryTodos;

    fn ctx(step: &str) -> ToolContext {
        ToolContext {
            tenant: "t".into(),
            run_id: "r".into(),
            step_id: step.into(),
            attempt: 1,
            now: Utc::now(),
        }
    }

    /// A tool over a store holding `n` todos titled `todo 1` .. `todo n`.
    async fn tool_with(n: usize) -> TodoTool {
        let store = Arc::new(MemoryTodos::default());
        for i in 1..=n {
            let title = format!("todo {i}");
            store
                .apply(
                    "t",
                    &format!("seed/{i}"),
                    &TodoChange::Add { title },
                    Utc::now(),
                )
                .await
                .expect("seeded");
        }
        TodoTool::new(store)
    }

    fn ids(out: &Value) -> Vec<u64> {
        out["todos"]
            .as_array()
            .expect("todos")
            .iter()
            .map(|t| t["id"].as_u64().expect("id"))
            .collect()
    }

    #[tokio::test]
    async fn given_todos_when_listed_as_text_then_it_is_the_json_of_the_list_as_a_value_members_sorted(
    ) {
        let tool = tool_with(3).await;
        let done = tool
            .execute(&ctx("c"), &json!({"action": "complete", "id": 2}))
            .await
            .expect("completes");
        assert_eq!(done["done"], true);
        for input in [
            json!({"action": "list"}),
            json!({"action": "list", "limit": 2}),
        ] {
            let value = tool.execute(&ctx("l"), &input).await.expect("lists");
            let text = tool.execute_output(&ctx("l"), &input).await.expect("lists");
            // Byte for byte what the value writes: a map of JSON sorts its members.
            assert_eq!(text.json(), value.to_string(), "{input}");
            let page = value["todos"].as_array().expect("todos");
            let expected: Vec<Value> = tool
                .store
                .list("t", &TodoQuery::first(page.len()))
                .await
                .expect("lists")
                .items
                .iter()
                .map(to_json)
                .collect();
            assert_eq!(page, &expected, "{input}");
            assert!(
                page[1].get("completed_at").is_some(),
                "the done todo says when"
            );
            assert!(
                page[0].get("completed_at").is_none(),
                "an open one does not"
            );
        }
        // Every other action answers the same through either door.
        let got = json!({"action": "get", "id": 1});
        assert_eq!(
            tool.execute_output(&ctx("g"), &got).await.expect("gets"),
            tool.execute(&ctx("g"), &got).await.expect("gets")
        );
        let bad = json!({"action": "list", "limit": 0});
        assert_eq!(
            tool.execute_output(&ctx("b"), &bad)
                .await
                .expect_err("refused"),
            tool.execute(&ctx("b"), &bad).await.expect_err("refused")
        );
    }

    #[tokio::test]
    async fn given_150_todos_when_listed_without_a_limit_then_the_first_100_come_with_the_total() {
        let tool = tool_with(150).await;
        let out = tool
            .execute(&ctx("s1"), &json!({"action": "list"}))
            .await
            .expect("listed");
        assert_eq!(ids(&out), (1..=100).collect::<Vec<_>>());
        assert_eq!(out["total"], 150);
        assert_eq!(out["truncated"], true);
    }

    #[tokio::test]
    async fn given_a_limit_when_listed_then_at_most_that_many_come_and_500_is_the_most() {
        let tool = tool_with(600).await;
        for (limit, shown) in [(1, 1), (3, 3), (500, 500)] {
            let out = tool
                .execute(&ctx("s1"), &json!({"action": "list", "limit": limit}))
                .await
                .expect("listed");
            assert_eq!(ids(&out), (1..=shown).collect::<Vec<_>>(), "limit {limit}");
            assert_eq!(out["total"], 600, "limit {limit}");
            assert_eq!(out["truncated"], true, "limit {limit}");
        }
        // A substituted calculator result (a whole float) is a limit too.
        let out = tool
            .execute(&ctx("s1"), &json!({"action": "list", "limit": 2.0}))
            .await
            .expect("listed");
        assert_eq!(ids(&out), vec![1, 2]);
    }

    #[tokio::test]
    async fn given_fewer_todos_than_the_limit_when_listed_then_all_come_and_nothing_is_truncated() {
        for n in [0, 3, 100] {
            let tool = tool_with(n).await;
            let out = tool
                .execute(&ctx("s1"), &json!({"action": "list"}))
                .await
                .expect("listed");
            assert_eq!(ids(&out).len(), n);
            assert_eq!(out["total"], n);
            assert_eq!(out["truncated"], false, "{n} todos");
        }
    }

    #[tokio::test]
    async fn given_a_limit_out_of_range_or_not_a_whole_number_when_listed_then_it_fails_permanently(
    ) {
        let tool = tool_with(3).await;
        for limit in [
            json!(0),
            json!(501),
            json!(-1),
            json!(1.5),
            json!(1e30),
            json!("ten"),
            json!("5"),
            json!(true),
            json!([5]),
        ] {
            let err = tool
                .execute(&ctx("s1"), &json!({"action": "list", "limit": limit}))
                .await
                .expect_err("refused");
            assert_eq!(err.kind, ErrorKind::Permanent, "{limit}");
            assert!(err.message.contains("limit"), "{limit}: {}", err.message);
        }
    }

    #[test]
    fn given_limits_when_validated_then_only_a_list_takes_one_from_1_to_500() {
        let tool = TodoTool::new(Arc::new(MemoryTodos::default()));
        for ok in [
            json!({"action": "list"}),
            json!({"action": "list", "limit": 1}),
            json!({"action": "list", "limit": 500}),
            json!({"action": "list", "limit": "{{s1}}"}),
        ] {
            assert_eq!(tool.validate(&ok), Ok(()), "{ok}");
        }
        for bad in [
            json!({"action": "list", "limit": 0}),
            json!({"action": "list", "limit": 501}),
            json!({"action": "list", "limit": "ten"}),
            json!({"action": "add", "title": "x", "limit": 5}),
            json!({"action": "get", "id": 1, "limit": 5}),
        ] {
            assert!(tool.validate(&bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn given_more_todos_than_a_page_when_one_is_named_by_title_then_it_is_found() {
        let tool = tool_with(TodoQuery::MAX_LIMIT + 20).await;
        let out = tool
            .execute(
                &ctx("s1"),
                &json!({"action": "complete", "title": "todo 510"}),
            )
            .await
            .expect("completed");
        assert_eq!(
            (out["id"].as_u64(), out["done"].as_bool()),
            (Some(510), Some(true))
        );
        // Two todos with one title, the first done: completing by title takes the open one,
        // even when it is on a later page.
        tool.execute(&ctx("s2"), &json!({"action": "complete", "id": 5}))
            .await
            .expect("done");
        tool.execute(&ctx("s3"), &json!({"action": "add", "title": "todo 5"}))
            .await
            .expect("added");
        let out = tool
            .execute(
                &ctx("s4"),
                &json!({"action": "complete", "title": "todo 5"}),
            )
            .await
            .expect("completed");
        assert_eq!(out["id"].as_u64(), Some(TodoQuery::MAX_LIMIT as u64 + 21));
        assert_eq!(out["previously_done"], false);
        let out = tool
            .execute(&ctx("s5"), &json!({"action": "get", "title": "todo 5"}))
            .await
            .expect("got");
        assert_eq!(out["id"], 5, "get takes the first by id");
    }

    #[tokio::test]
    async fn given_a_done_todo_when_reopened_then_it_is_open_and_compensation_completes_it_again() {
        let tool = tool_with(2).await;
        tool.execute(&ctx("s1"), &json!({"action": "complete", "id": 2}))
            .await
            .expect("completed");
        let input = json!({"action": "reopen", "id": 2});
        assert_eq!(tool.validate(&input), Ok(()));
        assert_eq!(tool.compensation(&input), Some("complete"));
        assert_eq!(
            tool.access(&input),
            Some(Access {
                resource: "todo",
                writes: true
            })
        );
        let out = tool.execute(&ctx("s2"), &input).await.expect("reopened");
        assert_eq!(
            (out["id"].as_u64(), out["done"].as_bool()),
            (Some(2), Some(false))
        );
        assert_eq!(out["previously_done"], true);
        // A repeated execution of the step returns what the first one did.
        let again = tool.execute(&ctx("s2"), &input).await.expect("repeated");
        assert_eq!(again, {
            let mut first = out.clone();
            first
                .as_object_mut()
                .expect("object")
                .remove("previously_done");
            first
        });
        tool.compensate(&ctx("s2"), &input, &out)
            .await
            .expect("compensated");
        let after = tool
            .execute(&ctx("s3"), &json!({"action": "get", "id": 2}))
            .await
            .expect("got");
        assert_eq!(after["done"], true, "the compensation of reopen completes");
    }

    #[tokio::test]
    async fn given_an_open_todo_when_reopened_then_nothing_changes_and_nothing_is_undone() {
        // The mirror of completing a done todo: no error, `previously_done` says so, and
        // the compensation leaves the todo open.
        let tool = tool_with(1).await;
        let input = json!({"action": "reopen", "id": 1});
        let out = tool.execute(&ctx("s1"), &input).await.expect("reopened");
        assert_eq!(
            (out["done"].as_bool(), out["previously_done"].as_bool()),
            (Some(false), Some(false))
        );
        tool.compensate(&ctx("s1"), &input, &out)
            .await
            .expect("compensated");
        let after = tool
            .execute(&ctx("s2"), &json!({"action": "get", "id": 1}))
            .await
            .expect("got");
        assert_eq!(after["done"], false);
    }

    #[tokio::test]
    async fn given_a_missing_todo_when_reopened_then_it_fails_permanently_like_complete() {
        let tool = tool_with(1).await;
        for action in ["complete", "reopen"] {
            let err = tool
                .execute(&ctx("s1"), &json!({"action": action, "id": 9}))
                .await
                .expect_err("missing");
            assert_eq!(err.kind, ErrorKind::Permanent, "{action}");
            assert_eq!(err.message, "todo 9 not found", "{action}");
            let err = tool
                .execute(&ctx("s2"), &json!({"action": action, "title": "nope"}))
                .await
                .expect_err("missing");
            assert_eq!(
                (err.kind, err.message.as_str()),
                (ErrorKind::Permanent, "no todo titled 'nope'"),
                "{action}"
            );
        }
        for bad in [
            json!({"action": "reopen"}),
            json!({"action": "reopen", "id": 1, "limit": 5}),
            json!({"action": "reopen", "id": 0}),
        ] {
            assert!(tool.validate(&bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn given_two_todos_with_one_title_when_reopened_by_title_then_the_done_one_is_reopened() {
        let tool = tool_with(0).await;
        for (step, title) in [("s1", "milk"), ("s2", "milk")] {
            tool.execute(&ctx(step), &json!({"action": "add", "title": title}))
                .await
                .expect("added");
        }
        tool.execute(&ctx("s3"), &json!({"action": "complete", "id": 2}))
            .await
            .expect("completed");
        let out = tool
            .execute(&ctx("s4"), &json!({"action": "reopen", "title": "milk"}))
            .await
            .expect("reopened");
        assert_eq!(
            (out["id"].as_u64(), out["previously_done"].as_bool()),
            (Some(2), Some(true))
        );
    }
}
