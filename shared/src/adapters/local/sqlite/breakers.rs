//! Circuit-breaker states, updated with optimistic concurrency (a version per tool).

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

use super::{decode, encode, sql_err, SqliteStore};
use crate::ports::{BreakerStore, StoreError, StoreResult, StoredBreaker};

#[async_trait]
impl BreakerStore for SqliteStore {
    async fn get(&self, tool: &str) -> StoreResult<Option<StoredBreaker>> {
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

    async fn put(&self, tool: &str, expected: u64, state: &serde_json::Value) -> StoreResult<()> {
        let tool = tool.to_owned();
        let body = encode(state)?;
        self.write(move |conn| {
            let n = if expected == 0 {
                conn.prepare_cached("INSERT OR IGNORE INTO breakers (tool, version, state) VALUES (?1, 1, ?2)").map_err(sql_err)?.execute(
                    params![tool, body],
                )
            } else {
                conn.prepare_cached("UPDATE breakers SET version = version + 1, state = ?2 WHERE tool = ?1 AND version = ?3").map_err(sql_err)?.execute(
                    params![tool, body, expected as i64],
                )
            }
            .map_err(sql_err)?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("breaker {tool} changed since version {expected}")));
            }
            Ok(())
        })
        .await
    }
}
