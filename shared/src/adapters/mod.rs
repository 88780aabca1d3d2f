//! Implementations of the [`crate::ports`]: `local` (embedded SQLite and in-memory).

pub mod local;
