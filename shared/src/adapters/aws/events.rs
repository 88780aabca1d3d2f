//! [`EventStore`] on the events table: one conditional `PutItem` per append.
//!
//! # Why one put, and how it stays exact
//!
//! An append's events go into one item keyed by its first sequence number `k`, written
//! with `attribute_not_exists(pk)`: 1 WRU per started KB, where the transaction this
//! replaces (a `ConditionCheck` plus a `Put` per event) cost 2 WRU per KB per item, about
//! 4 WRU for a typical append.
//!
//! Every item ends where the next one starts: the log is a chain of items `k..=m`, each
//! starting right after the last seq of the previous one, and a reader always sees whole
//! items. So an appender that appends after the last seq of a log it read consistently
//! (the rule of every caller) writes at a key that is either free (it is still the tail) or
//! taken by the append that beat it: two racing appends meet at the same key and one fails
//! its condition ([`StoreError::Conflict`]). The put needs no other check for the callers
//! that follow the rule.
//!
//! A caller that does not follow it (a bug: a stale or invented position) is what the
//! contract's gap and overlap cases are about, and a condition only sees its own item: a
//! put at 5 on a log ending at 2 would succeed, and one at 3 on a log whose item 1 holds
//! 1..=4 too. Refusing those takes knowing the tail. Reading it before every put (a
//! consistent `Query`, `Limit 1`, newest first: 1 RRU for an item up to 4 KB, more for a
//! large one) would double the requests per append, so the store keeps what it already
//! knows instead: the last seq of each run as its own [`EventStore::load`] (which every
//! caller runs before appending) or its own successful appends saw it ([`Tails`]). The log
//! only grows, and every value kept is the end of an item, so with a known tail `t`:
//! - `k <= t`: seq `k` exists, the append conflicts without a request;
//! - `k == t + 1`: the put alone decides (free key: `t` is still the tail; taken: someone
//!   appended after `t`, and items chain, so their item starts at `t + 1`);
//! - `k > t + 1`, or no tail known (a cold start, a run this process never read): read the
//!   tail, then decide as above, refusing a gap as a conflict.
//!
//! So the usual append is one request, and a gap or an overlap is refused whatever the
//! store knows. A first event (`k == 1`) needs no tail: its put's condition is exact.
//!
//! # Large appends
//!
//! An item holds at most 400 KB. An append whose one item would exceed [`MAX_ITEM_BYTES`]
//! (step outputs may be 64 KB each) is written the old way, one item per event in one
//! `TransactWriteItems`, each `Put` conditioned on `attribute_not_exists(pk)`, after the
//! same position check. Single-event items chain like the others, so a log may mix both
//! kinds and [`EventStore::load`] reads either.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
use tracing::instrument;

use super::error::{build_error, cancelled_error, sdk_error, tx_failure, TxFailure};
use super::error::{CONDITION_FAILED, TRANSACTION_CONFLICT};
use super::item::{
    append_item, decode_sdk_event_item, event_item, item_last_seq, item_size, run_pk, s, with_wake,
    Item, LAST,
};
use super::DynamoStore;
use crate::domain::{EventRecord, RunKey};
use crate::ports::{EventStore, Outbox, StoreError, StoreResult};

/// `TransactWriteItems` takes at most this many items, so an append takes at most this
/// many events (its large-append fallback writes one item per event).
const MAX_TRANSACTION_ITEMS: usize = 100;

/// An append whose one item would be larger than this (DynamoDB's limit is 400 KB) is
/// written one item per event instead.
pub(crate) const MAX_ITEM_BYTES: usize = 350 * 1024;

/// Runs whose tail [`Tails`] keeps at most; when full, it starts over (a forgotten run
/// costs one tail read at its next append).
const MAX_TAILS: usize = 10_000;

const NEW_ITEM: &str = "attribute_not_exists(pk)";

/// The last sequence number of runs' logs as this process last saw them (see the module
/// docs): set by [`EventStore::load`] to what it read, raised by each successful append.
/// A value kept is never above the run's true tail and always the end of an item.
#[derive(Debug, Default)]
pub(crate) struct Tails(Mutex<HashMap<String, u64>>);

impl Tails {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, u64>) -> T) -> T {
        // A panic elsewhere while holding the lock leaves a map of plain numbers behind.
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut map)
    }

    fn get(&self, pk: &str) -> Option<u64> {
        self.with(|m| m.get(pk).copied())
    }

    /// A consistent read saw the log end at `tail` (`None`: no events).
    fn read(&self, pk: &str, tail: Option<u64>) {
        self.with(|m| match tail {
            Some(tail) => {
                if m.len() >= MAX_TAILS && !m.contains_key(pk) {
                    m.clear();
                }
                m.insert(pk.to_owned(), tail);
            }
            None => {
                m.remove(pk);
            }
        });
    }

    /// An append ending at `last` succeeded.
    fn appended(&self, pk: &str, last: u64) {
        self.with(|m| {
            if m.len() >= MAX_TAILS && !m.contains_key(pk) {
                m.clear();
            }
            let tail = m.entry(pk.to_owned()).or_insert(last);
            *tail = (*tail).max(last);
        });
    }
}

/// How an append is written.
#[derive(Debug)]
enum Write {
    /// One conditional `PutItem` of the append's item.
    One(Item),
    /// Too large for one item: a transaction of one item per event.
    PerEvent(Vec<Item>),
}

/// The items of an append of `events` (consecutive, at least one), each marked for the
/// stream reactor when `wake`.
fn write_of(key: &RunKey, events: &[EventRecord], wake: bool) -> StoreResult<Write> {
    let item = append_item(key, events, wake)?;
    if events.len() == 1 || item_size(&item) <= MAX_ITEM_BYTES {
        return Ok(Write::One(item));
    }
    let items = events
        .iter()
        .map(|e| event_item(key, e).map(|i| with_wake(i, wake)))
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(Write::PerEvent(items))
}

impl DynamoStore {
    /// Refuse an append at `first_seq` (above 1) unless it comes right after the tail; see
    /// the module docs for when this reads the tail.
    async fn check_position(&self, key: &RunKey, pk: &str, first_seq: u64) -> StoreResult<()> {
        let tail = match self.tails.get(pk) {
            Some(tail) if first_seq <= tail + 1 => tail,
            known => {
                tracing::debug!(run = %key, first_seq, known_tail = ?known, "reading the tail before appending");
                let tail = self.read_tail(pk).await?;
                self.tails.read(pk, (tail > 0).then_some(tail));
                tail
            }
        };
        if first_seq <= tail {
            Err(StoreError::Conflict(format!(
                "{key}: event {first_seq} exists already (the log is at {tail})"
            )))
        } else if first_seq > tail + 1 {
            Err(StoreError::Conflict(format!(
                "{key}: cannot append at {first_seq}: the log ends at {tail}, and events \
                 must be appended without gaps"
            )))
        } else {
            Ok(())
        }
    }

    /// The last seq of the run's log (0 if it has no events): its newest item, read
    /// consistently.
    async fn read_tail(&self, pk: &str) -> StoreResult<u64> {
        let out = self
            .client
            .query()
            .table_name(&self.tables.events)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(pk))
            .projection_expression("seq, #last")
            .expression_attribute_names("#last", LAST)
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("Query", e))?;
        match out.items.unwrap_or_default().first() {
            Some(item) => item_last_seq(item),
            None => Ok(0),
        }
    }

    /// The append's one item, if no item has its key.
    async fn put_append(&self, key: &RunKey, first_seq: u64, item: Item) -> StoreResult<()> {
        self.client
            .put_item()
            .table_name(&self.tables.events)
            .set_item(Some(item))
            .condition_expression(NEW_ITEM)
            .send()
            .await
            .map_err(|e| match sdk_error("PutItem", e) {
                StoreError::Conflict(_) => StoreError::Conflict(format!(
                    "{key}: event {first_seq} exists already (another append got there first)"
                )),
                other => other,
            })?;
        Ok(())
    }

    /// A large append: one item per event, all or none.
    async fn transact_events(
        &self,
        key: &RunKey,
        first_seq: u64,
        items: Vec<Item>,
    ) -> StoreResult<()> {
        let mut writes = Vec::with_capacity(items.len());
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
                if reasons.iter().any(|r| r == CONDITION_FAILED) {
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
    /// Of the `outbox`, only `wake` is used (the item is marked for the stream reactor's
    /// filter): the events table's stream is the outbox (see the module docs of
    /// `adapters::aws`).
    #[instrument(level = "debug", skip(self, events, outbox), fields(run = %key, first_seq, count = events.len()))]
    async fn append(
        &self,
        key: &RunKey,
        events: &[EventRecord],
        outbox: Outbox<'_>,
    ) -> StoreResult<()> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
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
        if events.len() > MAX_TRANSACTION_ITEMS {
            return Err(StoreError::Invalid(format!(
                "{key}: at most {MAX_TRANSACTION_ITEMS} events can be appended at once, got {}",
                events.len()
            )));
        }
        let write = write_of(key, events, outbox.wake)?;
        let pk = run_pk(key);
        if first_seq > 1 {
            self.check_position(key, &pk, first_seq).await?;
        }
        match write {
            Write::One(item) => self.put_append(key, first_seq, item).await?,
            Write::PerEvent(items) => self.transact_events(key, first_seq, items).await?,
        }
        self.tails.appended(&pk, last.seq);
        Ok(())
    }

    #[instrument(level = "debug", skip(self), fields(run = %key))]
    async fn load(&self, key: &RunKey) -> StoreResult<Vec<EventRecord>> {
        let pk = run_pk(key);
        let mut events: Vec<EventRecord> = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.tables.events)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(&pk))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Query", e))?;
            for item in page.items.unwrap_or_default() {
                let (_, recs) = decode_sdk_event_item(item)?;
                let expected = events.last().map_or(1, |e| e.seq + 1);
                if let Some(rec) = recs.first().filter(|r| r.seq != expected) {
                    return Err(StoreError::corrupt(format!(
                        "{key}: the item at {} does not follow the event at {}",
                        rec.seq,
                        expected - 1
                    )));
                }
                events.extend(recs);
            }
            start = page.last_evaluated_key.filter(|k| !k.is_empty());
            if start.is_none() {
                self.tails.read(&pk, events.last().map(|e| e.seq));
                return Ok(events);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::{json, Value};

    use super::*;
    use crate::adapters::aws::item::{decode_sdk_event_item, get_n, get_s, WAKE, WAKE_VALUE};
    use crate::domain::Event;

    fn completed(seq: u64, output: Value) -> EventRecord {
        EventRecord::new(
            seq,
            Utc::now(),
            Event::StepCompleted {
                step_id: format!("s{seq}"),
                attempt: 1,
                output: output.into(),
                duration_ms: 3,
            },
        )
    }

    #[test]
    fn given_small_events_when_appended_then_they_are_one_item_keyed_by_the_first() {
        let key = RunKey::new("t", "r");
        let events: Vec<_> = (3..=5).map(|seq| completed(seq, json!(seq))).collect();
        let Write::One(item) = write_of(&key, &events, true).expect("encodes") else {
            panic!("small events fit in one item");
        };
        assert_eq!(get_n::<u64>(&item, "seq").expect("seq"), 3);
        assert_eq!(get_n::<u64>(&item, LAST).expect("last"), 5);
        assert_eq!(decode_sdk_event_item(item).expect("decodes").1, events);
    }

    #[test]
    fn given_events_too_large_for_one_item_when_appended_then_each_gets_its_own_marked_item() {
        let key = RunKey::new("t", "r");
        // Six step outputs of 64 KB: 384 KB, over the limit.
        let output = json!("x".repeat(64 * 1024));
        let events: Vec<_> = (3..=8).map(|seq| completed(seq, output.clone())).collect();
        let Write::PerEvent(items) = write_of(&key, &events, true).expect("encodes") else {
            panic!("384 KB do not fit in one item");
        };
        assert_eq!(items.len(), events.len());
        for (item, rec) in items.into_iter().zip(&events) {
            assert_eq!(get_s(&item, WAKE).expect("every item wakes"), WAKE_VALUE);
            assert!(!item.contains_key(LAST));
            assert!(item_size(&item) < MAX_ITEM_BYTES);
            assert_eq!(
                decode_sdk_event_item(item).expect("decodes").1,
                std::slice::from_ref(rec)
            );
        }

        let fewer = &events[..5];
        assert!(
            matches!(write_of(&key, fewer, false), Ok(Write::One(_))),
            "320 KB still fit"
        );
        let Write::PerEvent(items) = write_of(&key, &events, false).expect("encodes") else {
            panic!("too large");
        };
        assert!(items.iter().all(|i| !i.contains_key(WAKE)));
    }

    #[test]
    fn given_one_large_event_when_appended_then_it_stays_one_item() {
        let key = RunKey::new("t", "r");
        let event = completed(2, json!("x".repeat(360 * 1024)));
        assert!(matches!(write_of(&key, &[event], false), Ok(Write::One(_))));
    }

    #[test]
    fn given_tails_when_read_and_appended_then_reads_set_and_appends_only_raise() {
        let tails = Tails::default();
        assert_eq!(tails.get("a"), None);
        tails.read("a", Some(5));
        tails.appended("a", 3);
        assert_eq!(tails.get("a"), Some(5), "an append never lowers a tail");
        tails.appended("a", 8);
        assert_eq!(tails.get("a"), Some(8));
        tails.read("a", Some(6));
        assert_eq!(tails.get("a"), Some(6), "a read sets what it saw");
        tails.read("a", None);
        assert_eq!(tails.get("a"), None, "an empty log forgets the run");
    }

    #[test]
    fn given_full_tails_when_another_run_is_seen_then_they_start_over() {
        let tails = Tails::default();
        for i in 0..MAX_TAILS {
            tails.appended(&format!("r{i}"), 1);
        }
        tails.appended("r0", 2);
        assert_eq!(tails.get("r0"), Some(2), "a known run does not clear");
        tails.read("new", Some(4));
        assert_eq!(tails.get("new"), Some(4));
        assert_eq!(tails.get("r1"), None, "the others were forgotten");
    }
}
