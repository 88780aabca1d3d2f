//! Decoding the events table's stream records (the Lambda `DynamoDBEvent`) back into
//! events. Events are immutable, so only INSERT records carry news: MODIFY and REMOVE
//! records (e.g. a table restore or a manual clean-up) are skipped. A record's item holds
//! all the events of one append, so a record decodes into one or more events.
//!
//! The event source mapping passes the reactor only the records of appends marked `wake`
//! ([`REACTOR_FILTER`]); [`passes_reactor_filter`] is the same rule in code, for harnesses
//! that stand in for the mapping.

use aws_lambda_events::event::dynamodb::EventRecord as StreamRecord;

use super::item::{decode_event_item, WAKE, WAKE_VALUE};
use crate::domain::{EventRecord, RunKey};
use crate::ports::{StoreError, StoreResult};

/// The filter pattern of the stream reactor's event source mapping (`template.yaml`,
/// `EventReactorStreamTrigger`): inserted items marked `wake` = `"1"`, i.e. appends the
/// reactor must see ([`crate::engine::wakes_reactor`]). Filtered-out records cost no
/// invocation.
pub const REACTOR_FILTER: &str =
    r#"{"eventName": ["INSERT"], "dynamodb": {"NewImage": {"wake": {"S": ["1"]}}}}"#;

/// Whether Lambda's event source mapping, filtering with [`REACTOR_FILTER`], hands
/// `record` to the reactor: an INSERT whose `NewImage` has `wake` = S `"1"`.
pub fn passes_reactor_filter(record: &StreamRecord) -> bool {
    record.event_name == "INSERT"
        && matches!(
            record.change.new_image.get(WAKE),
            Some(serde_dynamo::AttributeValue::S(v)) if v == WAKE_VALUE
        )
}

/// Decode the `NewImage` of an events-table item into its run and its events (one, or all
/// those of a multi-event append, in order). Accepts the Lambda event's
/// [`serde_dynamo::Item`] as well as an SDK item
/// (`HashMap<String, aws_sdk_dynamodb::types::AttributeValue>`).
pub fn decode_new_image(
    item: impl Into<serde_dynamo::Item>,
) -> Result<(RunKey, Vec<EventRecord>), StoreError> {
    decode_event_item(item.into())
}

/// Decode one stream record: `Ok(None)` for a MODIFY or REMOVE record, the run and its
/// events for an INSERT, [`StoreError::Corrupt`] for an INSERT without a decodable
/// `NewImage` (a table whose stream is not `NEW_IMAGE` or `NEW_AND_OLD_IMAGES`, or a
/// foreign item).
pub fn decode_record(record: &StreamRecord) -> StoreResult<Option<(RunKey, Vec<EventRecord>)>> {
    if record.event_name != "INSERT" {
        return Ok(None);
    }
    if record.change.new_image.is_empty() {
        return Err(StoreError::corrupt(format!(
            "stream record {} has no NewImage: the events stream must be NEW_IMAGE",
            record.event_id
        )));
    }
    decode_new_image(record.change.new_image.clone()).map(Some)
}

#[cfg(test)]
mod tests {
    use aws_lambda_events::event::dynamodb::Event;
    use serde_json::json;

    use super::*;
    use crate::adapters::aws::item::{append_item, event_item};
    use crate::domain::Event as DomainEvent;

    fn lambda_event() -> Event {
        let image = json!({
            "pk": {"S": "acme#r-1"},
            "seq": {"N": "2"},
            "tenant": {"S": "acme"},
            "run_id": {"S": "r-1"},
            "type": {"S": "StepStarted"},
            "at": {"S": "2026-01-02T03:04:05.123456Z"},
            "version": {"N": "1"},
            "data": {"M": {
                "step_id": {"S": "s1"},
                "attempt": {"N": "1"},
                "lease_ms": {"N": "30000"}
            }}
        });
        let record = |name: &str, id: &str| {
            json!({
                "eventID": id,
                "eventName": name,
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": "us-east-1",
                "dynamodb": {
                    "ApproximateCreationDateTime": 1767323045.0,
                    "Keys": {"pk": {"S": "acme#r-1"}, "seq": {"N": "2"}},
                    "NewImage": image,
                    "SequenceNumber": "100",
                    "SizeBytes": 200,
                    "StreamViewType": "NEW_IMAGE"
                },
                "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/events/stream/2026"
            })
        };
        let event = json!({"Records": [record("INSERT", "1"), record("MODIFY", "2"), record("REMOVE", "3")]});
        serde_json::from_value(event).expect("a valid DynamoDB stream event")
    }

    #[test]
    fn given_a_lambda_stream_event_when_decoded_then_inserts_yield_events_and_others_are_skipped() {
        let event = lambda_event();
        let decoded: Vec<_> = event
            .records
            .iter()
            .map(|r| decode_record(r).expect("decodes"))
            .collect();
        let (key, recs) = decoded[0].clone().expect("the INSERT has an event");
        assert_eq!(key, RunKey::new("acme", "r-1"));
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].seq, 2);
        assert_eq!(
            recs[0].event,
            DomainEvent::StepStarted {
                step_id: "s1".into(),
                attempt: 1,
                lease_ms: 30_000
            }
        );
        assert_eq!(decoded[1], None);
        assert_eq!(decoded[2], None);
    }

    #[test]
    fn given_an_item_as_written_when_decoded_from_a_stream_image_then_it_is_the_same_event() {
        let key = RunKey::new("acme", "r-2");
        let rec = EventRecord::new(
            7,
            chrono::Utc::now(),
            DomainEvent::StepCompleted {
                step_id: "s1".into(),
                attempt: 2,
                output: json!({"value": 1e300, "note": "too big for a DynamoDB number"}).into(),
                duration_ms: 5,
            },
        );
        let item = event_item(&key, &rec).expect("encodes");
        assert_eq!(
            decode_new_image(through_lambda(item)).expect("decodes"),
            (key, vec![rec])
        );
    }

    /// `item` through the Lambda event's JSON form, as the stream delivers it.
    fn through_lambda(item: crate::adapters::aws::item::Item) -> serde_dynamo::Item {
        let image: serde_dynamo::Item = serde_dynamo::Item::from(item);
        let json = serde_json::to_value(&image).expect("serialises");
        serde_json::from_value(json).expect("deserialises")
    }

    fn completed(seq: u64, output: serde_json::Value) -> EventRecord {
        EventRecord::new(
            seq,
            chrono::Utc::now(),
            DomainEvent::StepCompleted {
                step_id: format!("s{seq}"),
                attempt: 1,
                output: output.into(),
                duration_ms: 5,
            },
        )
    }

    #[test]
    fn given_the_image_of_a_multi_event_append_when_decoded_then_it_yields_all_its_events() {
        let key = RunKey::new("acme", "r-3");
        let events = vec![
            completed(4, json!({"n": 1})),
            completed(5, json!(1e200)),
            completed(6, json!([1, "two", null])),
        ];
        let item = append_item(&key, &events, true).expect("encodes");
        assert_eq!(
            decode_new_image(through_lambda(item)).expect("decodes"),
            (key, events)
        );
    }

    #[test]
    fn given_an_image_whose_more_skips_a_seq_when_decoded_then_it_is_corrupt() {
        let image: serde_dynamo::Item = serde_json::from_value(json!({
            "pk": {"S": "acme#r-4"}, "tenant": {"S": "acme"}, "run_id": {"S": "r-4"},
            "seq": {"N": "2"}, "type": {"S": "RunCompensated"}, "version": {"N": "1"},
            "at": {"S": "2026-01-02T03:04:05Z"}, "data": {"M": {}},
            "last": {"N": "3"},
            "more": {"L": [{"M": {
                "seq": {"N": "4"}, "type": {"S": "RunCompensated"}, "version": {"N": "1"},
                "at": {"S": "2026-01-02T03:04:05Z"}, "data": {"M": {}}
            }}]}
        }))
        .expect("an item");
        let result = decode_new_image(image);
        assert!(
            matches!(result, Err(StoreError::Corrupt { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn given_records_when_filtered_like_the_event_source_mapping_then_only_woken_inserts_pass() {
        let key = RunKey::new("acme", "r-5");
        let events = [completed(2, json!(1)), completed(3, json!(2))];
        let record = |name: &str, wake: bool| {
            let image = append_item(&key, &events, wake).expect("encodes");
            let json = json!({
                "eventID": "1",
                "eventName": name,
                "awsRegion": "us-east-1",
                "dynamodb": {
                    "NewImage": serde_json::to_value(serde_dynamo::Item::from(image)).expect("json"),
                    "SequenceNumber": "100",
                    "SizeBytes": 200,
                    "StreamViewType": "NEW_IMAGE"
                }
            });
            serde_json::from_value::<StreamRecord>(json).expect("a stream record")
        };
        assert!(passes_reactor_filter(&record("INSERT", true)));
        assert!(!passes_reactor_filter(&record("INSERT", false)));
        assert!(!passes_reactor_filter(&record("MODIFY", true)));
        let mut other = record("INSERT", true);
        other
            .change
            .new_image
            .insert(WAKE.into(), serde_dynamo::AttributeValue::S("0".into()));
        assert!(!passes_reactor_filter(&other));
        let filter: serde_json::Value =
            serde_json::from_str(REACTOR_FILTER).expect("the filter is JSON");
        assert_eq!(
            filter["dynamodb"]["NewImage"][WAKE]["S"],
            json!([WAKE_VALUE])
        );
    }

    #[test]
    fn given_a_foreign_item_when_decoded_then_it_is_corrupt() {
        let image: serde_dynamo::Item =
            serde_json::from_value(json!({"pk": {"S": "x"}})).expect("an item");
        assert!(matches!(
            decode_new_image(image),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
