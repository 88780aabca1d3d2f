//! Attribute helpers and the events-table item codec (shared by `load` and the stream
//! decoder).

use std::collections::HashMap;
use std::str::FromStr;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::corrupt;
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

/// A string attribute holding JSON.
pub(crate) fn from_json_attr<T: DeserializeOwned>(item: &Item, name: &str) -> StoreResult<T> {
    serde_json::from_str(get_s(item, name)?).map_err(|e| corrupt(format!("attribute {name}: {e}")))
}

// ---- events -------------------------------------------------------------------------

/// Attributes of an events item that are keys, not part of the [`EventRecord`].
const KEY_ATTRS: [&str; 3] = ["pk", "tenant", "run_id"];

/// The events-table item of `rec` (see the module docs of `adapters::aws`).
pub(crate) fn event_item(key: &RunKey, rec: &EventRecord) -> StoreResult<Item> {
    let mut item: Item = serde_dynamo::aws_sdk_dynamodb_1::to_item(rec).map_err(corrupt)?;
    if !stored_exactly(&item, rec) {
        // Keep the event readable and exact: its data as a JSON string.
        let event = serde_json::to_value(&rec.event).map_err(corrupt)?;
        let data = event.get("data").cloned().unwrap_or(Value::Null);
        item.insert("data".into(), s(to_json(&data)?));
    }
    item.insert("pk".into(), s(run_pk(key)));
    item.insert("tenant".into(), s(&key.tenant));
    item.insert("run_id".into(), s(&key.run_id));
    Ok(item)
}

/// Whether DynamoDB accepts every number of `item` and reading it back gives `rec`.
fn stored_exactly(item: &Item, rec: &EventRecord) -> bool {
    item.values().all(numbers_fit)
        && serde_dynamo::from_item::<_, EventRecord>(item.clone()).is_ok_and(|back| &back == rec)
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

/// Decode an events-table item (from a `Query` or a stream record's `NewImage`).
pub(crate) fn decode_event_item(item: serde_dynamo::Item) -> StoreResult<(RunKey, EventRecord)> {
    let mut item = item.into_inner();
    let text = |item: &mut HashMap<String, serde_dynamo::AttributeValue>, name: &str| match item
        .remove(name)
    {
        Some(serde_dynamo::AttributeValue::S(v)) => Ok(v),
        _ => Err(corrupt(format!("event item has no string {name}"))),
    };
    let tenant = text(&mut item, "tenant")?;
    let run_id = text(&mut item, "run_id")?;
    for attr in KEY_ATTRS {
        item.remove(attr);
    }
    let rec: EventRecord = match item.remove("data") {
        Some(serde_dynamo::AttributeValue::S(json)) => {
            let data: Value = serde_json::from_str(&json)
                .map_err(|e| corrupt(format!("event {run_id}: data: {e}")))?;
            let mut rest: Value = serde_dynamo::from_item(item).map_err(corrupt)?;
            if let Some(obj) = rest.as_object_mut() {
                obj.insert("data".into(), data);
            }
            serde_json::from_value(rest).map_err(|e| corrupt(format!("event {run_id}: {e}")))?
        }
        data => {
            if let Some(data) = data {
                item.insert("data".into(), data);
            }
            serde_dynamo::from_item(item).map_err(|e| corrupt(format!("event {run_id}: {e}")))?
        }
    };
    Ok((RunKey::new(tenant, run_id), rec))
}

/// Decode an events-table item as the SDK returns it.
pub(crate) fn decode_sdk_event_item(item: Item) -> StoreResult<(RunKey, EventRecord)> {
    decode_event_item(serde_dynamo::Item::from(item))
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    use super::*;
    use crate::domain::Event;

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
                output,
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
        assert_eq!(back, r);
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
            assert_eq!(back, r);
        }
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
