//! [`EventStore`] on the events table: conditional writes, one item per event.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{ConditionCheck, Put, TransactWriteItem};
use tracing::instrument;

use super::error::{build_error, cancelled_error, sdk_error, tx_failure, TxFailure};
use super::error::{CONDITION_FAILED, TRANSACTION_CONFLICT};
use super::item::{decode_sdk_event_item, event_item, n, run_pk, s, Item};
use super::DynamoStore;
use crate::domain::{EventRecord, RunKey};
use crate::ports::{EventStore, Outbox, StoreError, StoreResult};

/// `TransactWriteItems` takes at most this many items.
const MAX_TRANSACTION_ITEMS: usize = 100;

const NEW_ITEM: &str = "attribute_not_exists(pk)";

impl DynamoStore {
    async fn put_first_event(&self, key: &RunKey, item: Item) -> StoreResult<()> {
        self.client
            .put_item()
            .table_name(&self.tables.events)
            .set_item(Some(item))
            .condition_expression(NEW_ITEM)
            .send()
            .await
            .map_err(|e| match sdk_error("PutItem", e) {
                StoreError::Conflict(_) => {
                    StoreError::Conflict(format!("{key}: event 1 exists already"))
                }
                other => other,
            })?;
        Ok(())
    }

    async fn transact_events(
        &self,
        key: &RunKey,
        first_seq: u64,
        items: Vec<Item>,
    ) -> StoreResult<()> {
        let mut writes = Vec::with_capacity(items.len() + 1);
        let check_previous = first_seq > 1;
        if check_previous {
            let check = ConditionCheck::builder()
                .table_name(&self.tables.events)
                .key("pk", s(run_pk(key)))
                .key("seq", n(first_seq - 1))
                .condition_expression("attribute_exists(pk)")
                .build()
                .map_err(build_error)?;
            writes.push(TransactWriteItem::builder().condition_check(check).build());
        }
        for item in items {
            let put = Put::builder()
                .table_name(&self.tables.events)
                .set_item(Some(item))
                .condition_expression(NEW_ITEM)
                .build()
                .map_err(build_error)?;
            writes.push(TransactWriteItem::builder().put(put).build());
        }
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(writes))
            .send()
            .await;
        let Err(err) = result else {
            return Ok(());
        };
        Err(match tx_failure(err) {
            TxFailure::Other(e) => e,
            TxFailure::Cancelled(reasons) => {
                let (check, puts) = if check_previous {
                    reasons.split_at(1.min(reasons.len()))
                } else {
                    (&[][..], &reasons[..])
                };
                if check.iter().any(|r| r == CONDITION_FAILED) {
                    StoreError::Conflict(format!(
                        "{key}: cannot append at {first_seq}: event {} does not exist",
                        first_seq - 1
                    ))
                } else if puts.iter().any(|r| r == CONDITION_FAILED) {
                    StoreError::Conflict(format!(
                        "{key}: event {first_seq} or a later one exists already"
                    ))
                } else if reasons.iter().any(|r| r == TRANSACTION_CONFLICT) {
                    StoreError::Conflict(format!("{key}: a concurrent write to the log"))
                } else {
                    cancelled_error(&format!("append to {key}"), &reasons)
                }
            }
        })
    }
}

#[async_trait]
impl EventStore for DynamoStore {
    /// The `outbox` is ignored: the events table's stream is the outbox (see the module
    /// docs of `adapters::aws`).
    #[instrument(level = "debug", skip(self, events, _outbox), fields(run = %key, first_seq, count = events.len()))]
    async fn append(
        &self,
        key: &RunKey,
        events: &[EventRecord],
        _outbox: Outbox<'_>,
    ) -> StoreResult<()> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let first_seq = first.seq;
        tracing::Span::current().record("first_seq", first_seq);
        if first_seq == 0 {
            return Err(StoreError::Invalid(format!(
                "{key}: sequence numbers start at 1"
            )));
        }
        if events.iter().zip(first_seq..).any(|(e, seq)| e.seq != seq) {
            return Err(StoreError::Invalid(format!(
                "{key}: events to append are not numbered consecutively"
            )));
        }
        let max = if first_seq > 1 {
            MAX_TRANSACTION_ITEMS - 1
        } else {
            MAX_TRANSACTION_ITEMS
        };
        if events.len() > max {
            return Err(StoreError::Invalid(format!(
                "{key}: at most {max} events can be appended at once, got {}",
                events.len()
            )));
        }
        let items = events
            .iter()
            .map(|e| event_item(key, e))
            .collect::<StoreResult<Vec<_>>>()?;
        if first_seq == 1 && items.len() == 1 {
            let item = items
                .into_iter()
                .next()
                .ok_or_else(|| StoreError::Invalid("no event".into()))?;
            self.put_first_event(key, item).await
        } else {
            self.transact_events(key, first_seq, items).await
        }
    }

    #[instrument(level = "debug", skip(self), fields(run = %key))]
    async fn load(&self, key: &RunKey) -> StoreResult<Vec<EventRecord>> {
        let mut events = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.tables.events)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(run_pk(key)))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Query", e))?;
            for item in page.items.unwrap_or_default() {
                let (_, rec) = decode_sdk_event_item(item)?;
                events.push(rec);
            }
            start = page.last_evaluated_key.filter(|k| !k.is_empty());
            if start.is_none() {
                return Ok(events);
            }
        }
    }
}
