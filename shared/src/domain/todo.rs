//! A tenant's todo list as data: a todo and the changes a todo store applies.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A todo item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Todo {
    /// The todo's number within its tenant, assigned by the store from 1 upward.
    pub id: u64,
    /// What is to be done.
    pub title: String,
    /// Whether it has been completed.
    pub done: bool,
    /// When it was added.
    pub created_at: DateTime<Utc>,
    /// When it was completed; `None` while it is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
}

/// A change to a tenant's todos.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum TodoChange {
    /// Add a new, open todo.
    Add {
        /// The new todo's title.
        title: String,
    },
    /// Mark a todo done.
    Complete {
        /// The todo to complete.
        id: u64,
    },
    /// Mark a done todo open again (the compensation of a complete).
    Reopen {
        /// The todo to reopen.
        id: u64,
    },
    /// Remove a todo.
    Delete {
        /// The todo to delete.
        id: u64,
    },
    /// Put back a deleted todo exactly as it was (the compensation of a delete).
    Restore {
        /// The todo as it was before the delete, id and dates included.
        todo: Todo,
    },
}
