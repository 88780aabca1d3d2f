//! Circuit-breaker states, updated with optimistic concurrency (a version per tool).
//!
//! Every step reads its tool's breaker, so the states are also kept in memory: a miss is
//! read from the table, and a committed write updates the copy on the writer thread, in
//! commit order, so a read that raced a write never replaces what the write left. As with
//! the state of runs in flight, this process must be the only writer of its database file.

use std::collections::HashMap;

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

use super::{decode, encode, poisoned, sql_err, SqliteStore};
use crate::ports::{BreakerStore, StoreError, StoreResult, StoredBreaker};

/// Most tools whose breaker is kept in memory (the registry's tools are far fewer); past
/// it the copy starts afresh.
const KNOWN_BREAKERS: usize = 1_024;

/// The breakers as this store last read or wrote them; `None`: the tool has none (closed).
pub(super) type KnownBreakers = HashMap<String, Option<StoredBreaker>>;

impl SqliteStore {
    async fn read_breaker(&self, tool: &str) -> StoreResult<Option<StoredBreaker>> {
        let tool = tool.to_owned();
        self.read(move |conn| {
            conn.prepare_cached("SELECT state, version FROM breakers WHERE tool = ?1")
                .map_err(sql_err)?
                .query_row(params![tool], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })
                .optional()
                .map_err(sql_err)?
                .map(|(s, v)| {
                    Ok(StoredBreaker {
                        state: decode(&s)?,
                        version: v as u64,
                    })
                })
                .transpose()
        })
        .await
    }
}

#[async_trait]
impl BreakerStore for SqliteStore {
    async fn get(&self, tool: &str) -> StoreResult<Option<StoredBreaker>> {
        if let Some(known) = self.breakers.lock().map_err(|_| poisoned())?.get(tool) {
            return Ok(known.clone());
        }
        let stored = self.read_breaker(tool).await?;
        let mut known = self.breakers.lock().map_err(|_| poisoned())?;
        if known.len() >= KNOWN_BREAKERS {
            known.clear();
        }
        // A write committed since the read has left its state here: it wins.
        Ok(known.entry(tool.to_owned()).or_insert(stored).clone())
    }

    async fn put(&self, tool: &str, expected: u64, state: &serde_json::Value) -> StoreResult<()> {
        let tool = tool.to_owned();
        let body = encode(state)?;
        let known = self.breakers.clone();
        let written = (
            tool.clone(),
            StoredBreaker {
                state: state.clone(),
                version: expected + 1,
            },
        );
        let remember: Box<dyn FnOnce(&StoreResult<()>) + Send> = Box::new(move |result| {
            if let (Ok(()), Ok(mut known)) = (result, known.lock()) {
                known.insert(written.0, Some(written.1));
            }
        });
        self.writer
            .write_then(
                move |conn| {
                    let n = if expected == 0 {
                        conn.prepare_cached(
                            "INSERT OR IGNORE INTO breakers (tool, version, state) VALUES (?1, 1, ?2)",
                        )
                        .map_err(sql_err)?
                        .execute(params![tool, body])
                    } else {
                        conn.prepare_cached(
                            "UPDATE breakers SET version = version + 1, state = ?2 WHERE tool = ?1 AND version = ?3",
                        )
                        .map_err(sql_err)?
                        .execute(params![tool, body, expected as i64])
                    }
                    .map_err(sql_err)?;
                    if n == 0 {
                        return Err(StoreError::Conflict(format!(
                            "breaker {tool} changed since version {expected}"
                        )));
                    }
                    Ok(())
                },
                Some(remember),
            )
            .await
    }
}
