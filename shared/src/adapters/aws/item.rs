//! Attribute helpers and the events-table item codec (shared by `load` and the stream
//! decoder).

use std::collections::HashMap;
use std::str::FromStr;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::corrupt;
use crate::adapters::deflate::{deflate, inflate, Effort};
use crate::domain::{EventRecord, RunKey};
use crate::ports::StoreResult;

/// An item as the SDK reads and writes it.
pub(crate) type Item = HashMap<String, AttributeValue>;

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: impl std::fmt::Display) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The key of a run in the events and runs tables.
pub(crate) fn run_pk(key: &RunKey) -> String {
    format!("{}#{}", key.tenant, key.run_id)
}

pub(crate) fn get_s<'a>(item: &'a Item, name: &str) -> StoreResult<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        Some(_) => Err(corrupt(format!("attribute {name} is not a string"))),
        None => Err(corrupt(format!("attribute {name} is missing"))),
    }
}

pub(crate) fn get_n<T: FromStr>(item: &Item, name: &str) -> StoreResult<T> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v
            .parse()
            .map_err(|_| corrupt(format!("attribute {name}={v} is out of range"))),
        Some(_) => Err(corrupt(format!("attribute {name} is not a number"))),
        None => Err(corrupt(format!("attribute {name} is missing"))),
    }
}

/// JSON for a string attribute.
pub(crate) fn to_json<T: Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(corrupt)
}

/// JSON compressed with DEFLATE, for a binary attribute: a run's JSON shrinks to a
/// third or less, and DynamoDB bills a write per started KB of the item.
pub(crate) fn deflated_json<T: Serialize>(v: &T) -> StoreResult<AttributeValue> {
    let json = serde_json::to_vec(v).map_err(corrupt)?;
    let bytes = deflate(&json, Effort::Default).map_err(corrupt)?;
    Ok(AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(
        bytes,
    )))
}

/// The value of a binary attribute [`deflated_json`] wrote.
pub(crate) fn from_deflated_json_attr<T: DeserializeOwned>(
    item: &Item,
    name: &str,
) -> StoreResult<T> {
    let bytes = match item.get(name) {
        Some(AttributeValue::B(b)) => b.as_ref(),
        Some(_) => return Err(corrupt(format!("attribute {name} is not binary"))),
        None => return Err(corrupt(format!("attribute {name} is missing"))),
    };
    let json = inflate(bytes).map_err(|e| corrupt(format!("attribute {name}: {e}")))?;
    serde_json::from_slice(&json).map_err(|e| corrupt(format!("attribute {name}: {e}")))
}

/// A string attribute holding JSON.
pub(crate) fn from_json_attr<T: DeserializeOwned>(item: &Item, name: &str) -> StoreResult<T> {
    serde_json::from_str(get_s(item, name)?).map_err(|e| corrupt(format!("attribute {name}: {e}")))
}

// ---- events -------------------------------------------------------------------------

/// Attributes of an events item that are keys, not part of the [`EventRecord`].
const KEY_ATTRS: [&str; 3] = ["pk", "tenant", "run_id"];

/// The events after the first of a multi-event item: a list (L) of maps, each an event's
/// attributes as [`event_item`] writes them, without the keys.
pub(crate) const MORE: &str = "more";

/// The sequence number of the last event of a multi-event item (N).
pub(crate) const LAST: &str = "last";

/// The attribute that marks an item the stream reactor must see (see
/// [`crate::adapters::aws::stream::REACTOR_FILTER`]).
pub(crate) const WAKE: &str = "wake";

/// The value of [`WAKE`] on an item the stream reactor must see.
pub(crate) const WAKE_VALUE: &str = "1";

/// The attributes of `rec` alone: `seq`, `type`, `at`, `version` and `data` (a map, or a
/// JSON string when DynamoDB could not hold its numbers exactly).
fn event_attrs(rec: &EventRecord) -> StoreResult<Item> {
    // Through a JSON value: a step's output is JSON text (`domain::Output`), which only
    // `serde_json` writes as the value it holds.
    let json = serde_json::to_value(rec).map_err(corrupt)?;
    let mut item: Item = serde_dynamo::aws_sdk_dynamodb_1::to_item(json).map_err(corrupt)?;
    if !stored_exactly(&item, rec) {
        // Keep the event readable and exact: its data as a JSON string.
        let event = serde_json::to_value(&rec.event).map_err(corrupt)?;
        let data = event.get("data").cloned().unwrap_or(Value::Null);
        item.insert("data".into(), s(to_json(&data)?));
    }
    Ok(item)
}

/// The events-table item of `rec` alone (see the module docs of `adapters::aws`).
pub(crate) fn event_item(key: &RunKey, rec: &EventRecord) -> StoreResult<Item> {
    let mut item = event_attrs(rec)?;
    item.insert("pk".into(), s(run_pk(key)));
    item.insert("tenant".into(), s(&key.tenant));
    item.insert("run_id".into(), s(&key.run_id));
    Ok(item)
}

/// The one item of an append of `events` (consecutive, at least one): the first event as
/// [`event_item`] writes it, the others in [`MORE`] with the last seq in [`LAST`], and
/// [`WAKE`] when the stream reactor must see the append. A single event's item is exactly
/// [`event_item`]'s (plus [`WAKE`]).
pub(crate) fn append_item(key: &RunKey, events: &[EventRecord], wake: bool) -> StoreResult<Item> {
    let Some((first, rest)) = events.split_first() else {
        return Err(crate::ports::StoreError::Invalid(format!(
            "{key}: an append item needs an event"
        )));
    };
    let mut item = event_item(key, first)?;
    if let Some(last) = rest.last() {
        let more = rest
            .iter()
            .map(|e| event_attrs(e).map(AttributeValue::M))
            .collect::<StoreResult<Vec<_>>>()?;
        item.insert(MORE.into(), AttributeValue::L(more));
        item.insert(LAST.into(), n(last.seq));
    }
    Ok(with_wake(item, wake))
}

/// `item`, marked for the stream reactor when `wake`.
pub(crate) fn with_wake(mut item: Item, wake: bool) -> Item {
    if wake {
        item.insert(WAKE.into(), s(WAKE_VALUE));
    }
    item
}

/// The sequence number of an item's last event: [`LAST`] if it has several, else `seq`.
pub(crate) fn item_last_seq(item: &Item) -> StoreResult<u64> {
    if item.contains_key(LAST) {
        get_n(item, LAST)
    } else {
        get_n(item, "seq")
    }
}

/// An upper bound of the size DynamoDB counts for `item` (attribute names plus values;
/// lists and maps with their overhead; a number as if each digit took a byte).
pub(crate) fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => n.len() + 1,
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| n.len() + 1).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(l) => 3 + l.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| k.len() + 1 + value_size(v))
                .sum::<usize>()
        }
        // BOOL, NULL (and any type a newer SDK adds, counted small).
        _ => 1,
    }
}

/// Whether DynamoDB accepts every number of `item` and reading it back gives `rec`.
fn stored_exactly(item: &Item, rec: &EventRecord) -> bool {
    item.values().all(numbers_fit) && record_of(item.clone()).is_ok_and(|back| &back == rec)
}

/// An event's attributes as its record, through a JSON value (see [`event_attrs`]).
fn record_of<I: Into<serde_dynamo::Item>>(item: I) -> Result<EventRecord, String> {
    let json: Value = serde_dynamo::from_item(item).map_err(|e| e.to_string())?;
    serde_json::from_value(json).map_err(|e| e.to_string())
}

fn numbers_fit(v: &AttributeValue) -> bool {
    match v {
        AttributeValue::N(n) => number_fits(n),
        AttributeValue::Ns(ns) => ns.iter().all(|n| number_fits(n)),
        AttributeValue::M(m) => m.values().all(numbers_fit),
        AttributeValue::L(l) => l.iter().all(numbers_fit),
        _ => true,
    }
}

/// DynamoDB numbers: up to 38 significant digits, magnitude zero or in 1e-130 ..< 1e126.
fn number_fits(n: &str) -> bool {
    let mantissa = n.split(['e', 'E']).next().unwrap_or_default();
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0');
    let Ok(x) = n.parse::<f64>() else {
        return false;
    };
    significant.len() <= 38 && (x == 0.0 || (1e-130..1e126).contains(&x.abs()))
}

type Attrs = HashMap<String, serde_dynamo::AttributeValue>;

/// Decode an events-table item (from a `Query` or a stream record's `NewImage`) into its
/// run and all its events: one for a single-event item, the first plus those in [`MORE`]
/// for a multi-event one. Their sequence numbers must be consecutive and end at [`LAST`]
/// (when present), else the item is [`StoreError::Corrupt`](crate::ports::StoreError).
pub(crate) fn decode_event_item(
    item: serde_dynamo::Item,
) -> StoreResult<(RunKey, Vec<EventRecord>)> {
    let mut item = item.into_inner();
    let text = |item: &mut Attrs, name: &str| match item.remove(name) {
        Some(serde_dynamo::AttributeValue::S(v)) => Ok(v),
        _ => Err(corrupt(format!("event item has no string {name}"))),
    };
    let tenant = text(&mut item, "tenant")?;
    let run_id = text(&mut item, "run_id")?;
    for attr in KEY_ATTRS {
        item.remove(attr);
    }
    item.remove(WAKE);
    let last = match item.remove(LAST) {
        None => None,
        Some(serde_dynamo::AttributeValue::N(v)) => Some(v.parse::<u64>().map_err(|_| {
            corrupt(format!(
                "event item {run_id}: attribute {LAST}={v} is out of range"
            ))
        })?),
        Some(_) => {
            return Err(corrupt(format!(
                "event item {run_id}: attribute {LAST} is not a number"
            )))
        }
    };
    let more = match item.remove(MORE) {
        None => Vec::new(),
        Some(serde_dynamo::AttributeValue::L(more)) => more,
        Some(_) => {
            return Err(corrupt(format!(
                "event item {run_id}: attribute {MORE} is not a list"
            )))
        }
    };
    if !more.is_empty() && last.is_none() {
        return Err(corrupt(format!(
            "event item {run_id}: {MORE} without {LAST}"
        )));
    }
    let mut events = Vec::with_capacity(1 + more.len());
    events.push(decode_event_attrs(item, &run_id)?);
    for attrs in more {
        let serde_dynamo::AttributeValue::M(attrs) = attrs else {
            return Err(corrupt(format!(
                "event item {run_id}: an entry of {MORE} is not a map"
            )));
        };
        events.push(decode_event_attrs(attrs, &run_id)?);
    }
    let first = events[0].seq;
    if events.iter().zip(first..).any(|(e, seq)| e.seq != seq) {
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        return Err(corrupt(format!(
            "event item {run_id}: sequence numbers {seqs:?} are not consecutive"
        )));
    }
    let end = first + events.len() as u64 - 1;
    if last.is_some_and(|last| last != end) {
        return Err(corrupt(format!(
            "event item {run_id}: {LAST} is {last:?}, but its events end at {end}"
        )));
    }
    Ok((RunKey::new(tenant, run_id), events))
}

/// One event's attributes (`seq`, `type`, `at`, `version`, `data`) back into its record.
fn decode_event_attrs(mut item: Attrs, run_id: &str) -> StoreResult<EventRecord> {
    match item.remove("data") {
        Some(serde_dynamo::AttributeValue::S(json)) => {
            let data: Value = serde_json::from_str(&json)
                .map_err(|e| corrupt(format!("event {run_id}: data: {e}")))?;
            let mut rest: Value = serde_dynamo::from_item(item).map_err(corrupt)?;
            if let Some(obj) = rest.as_object_mut() {
                obj.insert("data".into(), data);
            }
            serde_json::from_value(rest).map_err(|e| corrupt(format!("event {run_id}: {e}")))
        }
        data => {
            if let Some(data) = data {
                item.insert("data".into(), data);
            }
            record_of(item).map_err(|e| corrupt(format!("event {run_id}: {e}")))
        }
    }
}

/// Decode an events-table item as the SDK returns it.
pub(crate) fn decode_sdk_event_item(item: Item) -> StoreResult<(RunKey, Vec<EventRecord>)> {
    decode_event_item(serde_dynamo::Item::from(item))
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    use super::*;
    use crate::domain::Event;

    #[test]
    fn given_a_run_when_deflated_then_it_inflates_to_the_same_value_and_is_smaller() {
        let value = json!({"prompt": "calculate 2+3 ".repeat(100), "steps": [1, 2, 3]});
        let attr = deflated_json(&value).expect("deflates");
        let AttributeValue::B(bytes) = &attr else {
            panic!("a binary attribute: {attr:?}");
        };
        assert!(bytes.as_ref().len() < 200, "{} bytes", bytes.as_ref().len());
        let item = Item::from([("z".to_owned(), attr)]);
        let back: Value = from_deflated_json_attr(&item, "z").expect("inflates");
        assert_eq!(back, value);
    }

    #[test]
    fn given_a_bad_deflated_attribute_when_read_then_it_is_corrupt_not_a_panic() {
        let cases = [
            ("missing", None),
            ("not binary", Some(s("{}"))),
            (
                "not deflate",
                Some(AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(
                    vec![0xff; 16],
                ))),
            ),
            ("deflated non-JSON", {
                use std::io::Write as _;
                let mut z =
                    flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
                z.write_all(b"not json").expect("write");
                Some(AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(
                    z.finish().expect("finish"),
                )))
            }),
        ];
        for (what, attr) in cases {
            let item: Item = attr.map(|a| ("z".to_owned(), a)).into_iter().collect();
            let err = from_deflated_json_attr::<Value>(&item, "z").expect_err(what);
            assert!(
                matches!(err, crate::ports::StoreError::Corrupt { .. }),
                "{what}: {err:?}"
            );
        }
    }

    fn rec(output: Value) -> EventRecord {
        let at = Utc
            .with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
            .single()
            .expect("valid time");
        EventRecord::new(
            4,
            at,
            Event::StepCompleted {
                step_id: "s1".into(),
                attempt: 1,
                output: output.into(),
                duration_ms: 12,
            },
        )
    }

    #[test]
    fn given_plain_data_when_encoded_then_data_is_a_map_and_decodes_back() {
        let key = RunKey::new("t1", "r1");
        let r = rec(json!({"value": 3.5, "n": 7, "list": [1, "a", null, true], "e": ""}));
        let item = event_item(&key, &r).expect("encodes");
        assert!(matches!(item.get("data"), Some(AttributeValue::M(_))));
        assert_eq!(get_s(&item, "pk").expect("pk"), "t1#r1");
        assert_eq!(get_s(&item, "type").expect("type"), "StepCompleted");
        assert_eq!(get_n::<u64>(&item, "seq").expect("seq"), 4);
        let (k, back) = decode_sdk_event_item(item).expect("decodes");
        assert_eq!(k, key);
        assert_eq!(back, [r]);
    }

    #[test]
    fn given_numbers_dynamodb_cannot_hold_when_encoded_then_data_is_json_and_exact() {
        let key = RunKey::new("t1", "r1");
        for output in [
            json!(1e200),
            json!(1e-200),
            json!(1e18),
            json!({"x": [2.5e300]}),
        ] {
            let r = rec(output);
            let item = event_item(&key, &r).expect("encodes");
            assert!(
                matches!(item.get("data"), Some(AttributeValue::S(_))),
                "{item:?}"
            );
            let (_, back) = decode_sdk_event_item(item).expect("decodes");
            assert_eq!(back, [r]);
        }
    }

    /// `output` completed by step `s{seq}` at `seq`.
    fn rec_at(seq: u64, output: Value) -> EventRecord {
        let mut r = rec(output);
        r.seq = seq;
        if let Event::StepCompleted { step_id, .. } = &mut r.event {
            *step_id = format!("s{seq}");
        }
        r
    }

    #[test]
    fn given_one_event_when_its_append_item_is_built_then_it_is_the_event_item_plus_wake() {
        let key = RunKey::new("t1", "r1");
        let r = rec(json!(5));
        let plain = event_item(&key, &r).expect("encodes");
        assert_eq!(
            append_item(&key, std::slice::from_ref(&r), false).expect("encodes"),
            plain,
            "a single event keeps today's item"
        );
        let mut woken = append_item(&key, std::slice::from_ref(&r), true).expect("encodes");
        assert_eq!(woken.remove(WAKE), Some(s(WAKE_VALUE)));
        assert_eq!(woken, plain);
    }

    #[test]
    fn given_several_events_when_encoded_in_one_item_then_they_decode_back_in_order() {
        let key = RunKey::new("t1", "r1");
        let events = vec![
            rec_at(4, json!({"value": 3.5})),
            rec_at(5, json!(1e200)),
            rec_at(6, json!({"list": [1, "a", null, true], "e": ""})),
        ];
        let item = append_item(&key, &events, true).expect("encodes");
        assert_eq!(get_n::<u64>(&item, "seq").expect("seq"), 4);
        assert_eq!(get_n::<u64>(&item, LAST).expect("last"), 6);
        assert_eq!(item_last_seq(&item).expect("last"), 6);
        assert_eq!(get_s(&item, WAKE).expect("wake"), WAKE_VALUE);
        assert!(matches!(item.get("data"), Some(AttributeValue::M(_))));
        let Some(AttributeValue::L(more)) = item.get(MORE) else {
            panic!("more is a list: {item:?}");
        };
        assert_eq!(more.len(), 2);
        let AttributeValue::M(second) = &more[0] else {
            panic!("an entry of more is a map: {more:?}");
        };
        assert!(
            matches!(second.get("data"), Some(AttributeValue::S(_))),
            "1e200 falls back to JSON: {second:?}"
        );
        assert!(KEY_ATTRS.iter().all(|k| !second.contains_key(*k)));
        let (k, back) = decode_sdk_event_item(item).expect("decodes");
        assert_eq!(k, key);
        assert_eq!(back, events);
    }

    #[test]
    fn given_a_multi_event_item_with_non_consecutive_seqs_when_decoded_then_it_is_corrupt() {
        let key = RunKey::new("t1", "r1");
        let events = [
            rec_at(4, json!(1)),
            rec_at(5, json!(2)),
            rec_at(6, json!(3)),
        ];
        let item = append_item(&key, &events, false).expect("encodes");
        let corrupt_with = |change: &dyn Fn(&mut Item)| {
            let mut bad = item.clone();
            change(&mut bad);
            decode_sdk_event_item(bad)
        };
        type Change<'a> = &'a dyn Fn(&mut Item);
        let cases: [(&str, Change); 5] = [
            ("a skipped seq", &|i: &mut Item| {
                if let Some(AttributeValue::L(more)) = i.get_mut(MORE) {
                    more[1] = AttributeValue::M(event_attrs(&rec_at(8, json!(3))).expect("ok"));
                }
            }),
            ("a repeated seq", &|i: &mut Item| {
                if let Some(AttributeValue::L(more)) = i.get_mut(MORE) {
                    more[0] = AttributeValue::M(event_attrs(&rec_at(4, json!(2))).expect("ok"));
                }
            }),
            ("a last that does not match", &|i: &mut Item| {
                i.insert(LAST.into(), n(9));
            }),
            ("more without last", &|i: &mut Item| {
                i.remove(LAST);
            }),
            ("more that is not a list", &|i: &mut Item| {
                i.insert(MORE.into(), s("[]"));
            }),
        ];
        for (what, change) in cases {
            let result = corrupt_with(change);
            assert!(
                matches!(result, Err(crate::ports::StoreError::Corrupt { .. })),
                "{what}: {result:?}"
            );
        }
    }

    #[test]
    fn given_items_when_sized_then_the_estimate_grows_with_the_data_and_bounds_the_json() {
        let key = RunKey::new("t1", "r1");
        let small = event_item(&key, &rec(json!(1))).expect("encodes");
        let big_text = "x".repeat(64 * 1024);
        let big = append_item(
            &key,
            &[rec_at(4, json!(big_text)), rec_at(5, json!(big_text))],
            true,
        )
        .expect("encodes");
        assert!(item_size(&small) < 300, "{}", item_size(&small));
        assert!(item_size(&big) > 2 * 64 * 1024, "{}", item_size(&big));
        let json = serde_json::to_string(&serde_dynamo::Item::from(big.clone())).expect("json");
        assert!(item_size(&big) <= json.len());
    }

    #[test]
    fn given_number_strings_when_checked_then_dynamodb_limits_apply() {
        assert!(number_fits("0"));
        assert!(number_fits("-12.5"));
        assert!(number_fits("100000000000000000000000000000000000000000000"));
        assert!(!number_fits("1234567890123456789012345678901234567890"));
        assert!(!number_fits(&"1".repeat(130)));
        assert!(!number_fits("0.0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000001"));
    }
}
