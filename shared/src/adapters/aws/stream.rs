//! Decoding the events table's stream records (the Lambda `DynamoDBEvent`) back into
//! events. Events are immutable, so only INSERT records carry news: MODIFY and REMOVE
//! records (e.g. a table restore or a manual clean-up) are skipped.

use aws_lambda_events::event::dynamodb::EventRecord as StreamRecord;

use super::item::decode_event_item;
use crate::domain::{EventRecord, RunKey};
use crate::ports::{StoreError, StoreResult};

/// Decode the `NewImage` of an events-table item into its run and event. Accepts the
/// Lambda event's [`serde_dynamo::Item`] as well as an SDK item
/// (`HashMap<String, aws_sdk_dynamodb::types::AttributeValue>`).
pub fn decode_new_image(
    item: impl Into<serde_dynamo::Item>,
) -> Result<(RunKey, EventRecord), StoreError> {
    decode_event_item(item.into())
}

/// Decode one stream record: `Ok(None)` for a MODIFY or REMOVE record, the event for an
/// INSERT, [`StoreError::Corrupt`] for an INSERT without a decodable `NewImage` (a table
/// whose stream is not `NEW_IMAGE` or `NEW_AND_OLD_IMAGES`, or a foreign item).
pub fn decode_record(record: &StreamRecord) -> StoreResult<Option<(RunKey, EventRecord)>> {
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
    use crate::adapters::aws::item::event_item;
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
        let (key, rec) = decoded[0].clone().expect("the INSERT has an event");
        assert_eq!(key, RunKey::new("acme", "r-1"));
        assert_eq!(rec.seq, 2);
        assert_eq!(
            rec.event,
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
                output: json!({"value": 1e300, "note": "too big for a DynamoDB number"}),
                duration_ms: 5,
            },
        );
        let item = event_item(&key, &rec).expect("encodes");
        // Through the Lambda event's JSON form, as the stream delivers it.
        let image: serde_dynamo::Item = serde_dynamo::Item::from(item);
        let json = serde_json::to_value(&image).expect("serialises");
        let image: serde_dynamo::Item = serde_json::from_value(json).expect("deserialises");
        assert_eq!(decode_new_image(image).expect("decodes"), (key, rec));
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
