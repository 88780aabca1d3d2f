//! Idempotency keys: the first request with a key binds it to its run.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::{sql_err, ts, SqliteStore};
use crate::ports::{IdempotencyRecord, IdempotencyStore, StoreResult};

#[async_trait]
impl IdempotencyStore for SqliteStore {
    async fn lookup(
        &self,
        tenant: &str,
        key: &str,
        _now: DateTime<Utc>,
    ) -> StoreResult<Option<IdempotencyRecord>> {
        let (tenant, key) = (tenant.to_owned(), key.to_owned());
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT run_id, request_hash FROM idempotency_keys WHERE tenant = ?1 AND key = ?2",
            )
            .map_err(sql_err)?
            .query_row(params![tenant, key], |r| {
                Ok(IdempotencyRecord {
                    run_id: r.get(0)?,
                    request_hash: r.get(1)?,
                })
            })
            .optional()
            .map_err(sql_err)
        })
        .await
    }

    async fn claim(
        &self,
        tenant: &str,
        key: &str,
        record: &IdempotencyRecord,
        now: DateTime<Utc>,
    ) -> StoreResult<IdempotencyRecord> {
        let (tenant, key, record) = (tenant.to_owned(), key.to_owned(), record.clone());
        self.write(move |tx| {
            tx.prepare_cached("INSERT OR IGNORE INTO idempotency_keys (tenant, key, run_id, request_hash, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)").map_err(sql_err)?.execute(
                params![tenant, key, record.run_id, record.request_hash, ts(now)],
            )
            .map_err(sql_err)?;
            let bound = tx.prepare_cached("SELECT run_id, request_hash FROM idempotency_keys WHERE tenant = ?1 AND key = ?2").map_err(sql_err)?.query_row(
                    params![tenant, key],
                    |r| Ok(IdempotencyRecord { run_id: r.get(0)?, request_hash: r.get(1)? }),
                )
                .map_err(sql_err)?;
            Ok(bound)
        })
        .await
    }
}
