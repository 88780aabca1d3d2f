//! A tenant's todo list as data: a todo and the changes a todo store applies.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A todo item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Todo {
    pub id: u64,
    pub title: String,
    pub done: bool,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
}

/// A change to a tenant's todos.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum TodoChange {
    Add {
        title: String,
    },
    Complete {
        id: u64,
    },
    Reopen {
        id: u64,
    },
    Delete {
        id: u64,
    },
    /// Put back a deleted todo exactly as it was (the compensation of a delete).
    Restore {
        todo: Todo,
    },
}
