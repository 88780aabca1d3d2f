//! The embedded adapters: SQLite in WAL mode (durable, the local runtime's default) and
//! in-memory (unit tests).

pub mod memory;
pub mod notify;
mod private;
mod readers;
pub mod sqlite;
mod writer;

pub use notify::{AppendObserver, RunNotifier};
pub use sqlite::{Durability, JobKind, LeasedJob, SqliteStore};
