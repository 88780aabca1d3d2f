//! Helpers for tests against the local AWS engines (DynamoDB Local for DynamoDB and its
//! Streams, moto for SQS): endpoints from the environment, uniquely named tables and
//! queues per test, SDK clients that count every request by service and operation (and
//! the DynamoDB capacity units it consumed), and the pieces that stand in for Lambda's
//! event source mappings: reading the events table's stream into Lambda `DynamoDBEvent`s
//! and receiving SQS messages into `SqsEvent`s.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lambda_events::dynamodb::Event as StreamEvent;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_dynamodb::config::interceptors::{
    AfterDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextMut,
    BeforeTransmitInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::types::{ConsumedCapacity, ReturnConsumedCapacity};
use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use crane::adapters::aws::{provision, DynamoStore, TableNames};
use crane::entrypoints::{CloudClients, CloudNames};
use serde_json::{json, Value};

use crate::clients;
use crate::names::unique;

/// What a test says when the emulators are not running.
pub const NEED_EMULATORS: &str =
    "run ./scripts/test, which installs and starts DynamoDB Local and moto";

/// Where the local AWS engines listen.
#[derive(Debug, Clone)]
pub struct Emulators {
    pub dynamodb: String,
    pub moto: String,
}

/// The endpoints from `CRANE_TEST_DYNAMODB_ENDPOINT` and `CRANE_TEST_MOTO_ENDPOINT`;
/// panics with how to start them if either is missing.
pub fn emulators(test: &str) -> Emulators {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| panic!("{test}: {name} is not set: {NEED_EMULATORS}"))
    };
    Emulators {
        dynamodb: var("CRANE_TEST_DYNAMODB_ENDPOINT"),
        moto: var("CRANE_TEST_MOTO_ENDPOINT"),
    }
}

/// Requests (HTTP transmissions, so SDK retries count), failed requests and DynamoDB
/// capacity units of one operation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpStats {
    pub requests: u64,
    pub errors: u64,
    /// Capacity units DynamoDB reported (`ReturnConsumedCapacity=TOTAL` is added to every
    /// DynamoDB request). Failed conditional writes report none.
    pub capacity_units: f64,
}

/// Counts requests by (service, operation). Install it on every client as an interceptor.
#[derive(Debug, Clone, Default)]
pub struct RequestLog {
    ops: Arc<Mutex<BTreeMap<(String, String), OpStats>>>,
    /// DynamoDB capacity units by table (named without the test's prefix): (read, write).
    units_by_table: Arc<Mutex<BTreeMap<String, (f64, f64)>>>,
}

impl RequestLog {
    pub fn snapshot(&self) -> BTreeMap<(String, String), OpStats> {
        self.ops.lock().expect("request log lock").clone()
    }

    /// A log holding the sum of `logs`.
    pub fn sum(logs: &[&RequestLog]) -> RequestLog {
        let total = RequestLog::default();
        {
            let mut ops = total.ops.lock().expect("request log lock");
            let mut units = total.units_by_table.lock().expect("request log lock");
            for log in logs {
                for (table, (r, w)) in log.units_by_table() {
                    let t = units.entry(table).or_default();
                    t.0 += r;
                    t.1 += w;
                }
                for (k, v) in log.snapshot() {
                    let t = ops.entry(k).or_default();
                    t.requests += v.requests;
                    t.errors += v.errors;
                    t.capacity_units += v.capacity_units;
                }
            }
        }
        total
    }

    /// DynamoDB capacity units by table (`events`, `runs`, ...): (read, write).
    pub fn units_by_table(&self) -> BTreeMap<String, (f64, f64)> {
        self.units_by_table
            .lock()
            .expect("request log lock")
            .clone()
    }

    pub fn reset(&self) {
        self.ops.lock().expect("request log lock").clear();
        self.units_by_table
            .lock()
            .expect("request log lock")
            .clear();
    }

    /// Add the units of `consumed` to their tables, as reads or writes by `cfg`'s operation.
    fn add_table_units<'a>(
        &self,
        cfg: &ConfigBag,
        consumed: impl IntoIterator<Item = &'a ConsumedCapacity>,
    ) {
        let read = cfg
            .load::<Metadata>()
            .is_some_and(|m| READ_OPS.contains(&m.name()));
        let mut units = self.units_by_table.lock().expect("request log lock");
        for c in consumed {
            let (Some(table), Some(cu)) = (c.table_name(), c.capacity_units) else {
                continue;
            };
            // `crane-<32 hex digits>-events` -> `events`.
            let short = table.rsplit('-').next().unwrap_or(table).to_owned();
            let t = units.entry(short).or_default();
            if read {
                t.0 += cu;
            } else {
                t.1 += cu;
            }
        }
    }

    fn update(&self, cfg: &ConfigBag, f: impl FnOnce(&mut OpStats)) {
        let (service, op) = match cfg.load::<Metadata>() {
            Some(m) => (m.service().to_owned(), m.name().to_owned()),
            None => ("?".to_owned(), "?".to_owned()),
        };
        let mut ops = self.ops.lock().expect("request log lock");
        f(ops.entry((service, op)).or_default());
    }

    /// The counts as a table with totals per service, and DynamoDB's read and write
    /// request units.
    pub fn table(&self, title: &str) -> String {
        let ops = self.snapshot();
        let mut out = format!(
            "{title}\n  {:<18} {:<22} {:>8} {:>7} {:>10}\n",
            "service", "operation", "requests", "errors", "capacity"
        );
        let mut totals: BTreeMap<String, (u64, f64)> = BTreeMap::new();
        let (mut read_units, mut write_units) = (0.0, 0.0);
        for ((service, op), s) in &ops {
            let _ = writeln!(
                out,
                "  {service:<18} {op:<22} {:>8} {:>7} {:>10.1}",
                s.requests, s.errors, s.capacity_units
            );
            let t = totals.entry(service.clone()).or_default();
            t.0 += s.requests;
            t.1 += s.capacity_units;
            if service == "DynamoDB" {
                if READ_OPS.contains(&op.as_str()) {
                    read_units += s.capacity_units;
                } else {
                    write_units += s.capacity_units;
                }
            }
        }
        for (service, (n, cu)) in totals {
            let _ = writeln!(
                out,
                "  {service:<18} {:<22} {n:>8} {:>7} {cu:>10.1}",
                "TOTAL", ""
            );
        }
        if read_units + write_units > 0.0 {
            let _ = writeln!(
                out,
                "  DynamoDB request units: {read_units:.1} read, {write_units:.1} write"
            );
            let by_table: Vec<String> = self
                .units_by_table()
                .into_iter()
                .map(|(t, (r, w))| format!("{t} {r:.1}/{w:.1}"))
                .collect();
            let _ = writeln!(out, "  by table (read/write): {}", by_table.join(", "));
        }
        out
    }
}

/// DynamoDB operations billed in read request units.
const READ_OPS: &[&str] = &[
    "GetItem",
    "Query",
    "Scan",
    "BatchGetItem",
    "TransactGetItems",
];

impl Intercept for RequestLog {
    fn name(&self) -> &'static str {
        "RequestLog"
    }

    fn modify_before_serialization(
        &self,
        ctx: &mut BeforeSerializationInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        use aws_sdk_dynamodb::operation::*;
        let total = Some(ReturnConsumedCapacity::Total);
        let input = ctx.input_mut();
        if let Some(i) = input.downcast_mut::<put_item::PutItemInput>() {
            i.return_consumed_capacity = total;
        } else if let Some(i) = input.downcast_mut::<get_item::GetItemInput>() {
            i.return_consumed_capacity = total;
        } else if let Some(i) = input.downcast_mut::<query::QueryInput>() {
            i.return_consumed_capacity = total;
        } else if let Some(i) = input.downcast_mut::<update_item::UpdateItemInput>() {
            i.return_consumed_capacity = total;
        } else if let Some(i) = input.downcast_mut::<delete_item::DeleteItemInput>() {
            i.return_consumed_capacity = total;
        } else if let Some(i) = input.downcast_mut::<batch_get_item::BatchGetItemInput>() {
            i.return_consumed_capacity = total;
        } else if let Some(i) =
            input.downcast_mut::<transact_write_items::TransactWriteItemsInput>()
        {
            i.return_consumed_capacity = total;
        }
        Ok(())
    }

    fn read_before_transmit(
        &self,
        _ctx: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.update(cfg, |s| s.requests += 1);
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        ctx: &AfterDeserializationInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        use aws_sdk_dynamodb::operation::*;
        let Ok(out) = ctx.output_or_error() else {
            self.update(cfg, |s| s.errors += 1);
            return Ok(());
        };
        let consumed: Vec<ConsumedCapacity> = if let Some(o) =
            out.downcast_ref::<put_item::PutItemOutput>()
        {
            o.consumed_capacity.iter().cloned().collect()
        } else if let Some(o) = out.downcast_ref::<get_item::GetItemOutput>() {
            o.consumed_capacity.iter().cloned().collect()
        } else if let Some(o) = out.downcast_ref::<query::QueryOutput>() {
            o.consumed_capacity.iter().cloned().collect()
        } else if let Some(o) = out.downcast_ref::<update_item::UpdateItemOutput>() {
            o.consumed_capacity.iter().cloned().collect()
        } else if let Some(o) = out.downcast_ref::<delete_item::DeleteItemOutput>() {
            o.consumed_capacity.iter().cloned().collect()
        } else if let Some(o) = out.downcast_ref::<batch_get_item::BatchGetItemOutput>() {
            o.consumed_capacity.clone().unwrap_or_default()
        } else if let Some(o) = out.downcast_ref::<transact_write_items::TransactWriteItemsOutput>()
        {
            o.consumed_capacity.clone().unwrap_or_default()
        } else {
            Vec::new()
        };
        self.update(cfg, |s| {
            s.capacity_units += consumed
                .iter()
                .filter_map(|c| c.capacity_units)
                .sum::<f64>();
        });
        self.add_table_units(cfg, &consumed);
        Ok(())
    }
}

/// One test's cloud: fresh tables and a queue (with a DLQ) on the emulators, counted
/// clients for each function ([`Cloud::clients`]), and clients for the harness that stands
/// in for Lambda's event source mappings (counted in `pollers`).
pub struct Cloud {
    pub emulators: Emulators,
    pub names: CloudNames,
    pub queue_arn: String,
    pub dlq_url: String,
    /// Stream reads and SQS receive/delete, done by Lambda's pollers in AWS.
    pub pollers: RequestLog,
    pub streams: aws_sdk_dynamodbstreams::Client,
    pub poll_sqs: aws_sdk_sqs::Client,
    /// Uncounted, for the test's own checks.
    pub store: DynamoStore,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
}

impl Cloud {
    /// With `<id>` = `crane-<32 hex digits>`: create tables `<id>-*` and queues
    /// `<id>-steps(-dlq)`.
    pub async fn create(test: &str) -> Cloud {
        let e = emulators(test);
        let id = unique("crane");
        let tables = TableNames::with_prefix(&id);
        let dynamodb = clients::dynamodb(&e.dynamodb, None);
        provision::create_tables(&dynamodb, &tables)
            .await
            .expect("tables created on DynamoDB Local");
        let sqs = clients::sqs(&e.moto, None);
        let dlq_url = sqs
            .create_queue()
            .queue_name(format!("{id}-steps-dlq"))
            .send()
            .await
            .expect("DLQ created on moto")
            .queue_url
            .expect("DLQ url");
        let dlq_arn = queue_arn(&sqs, &dlq_url).await;
        let redrive = json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"});
        let queue_url = sqs
            .create_queue()
            .queue_name(format!("{id}-steps"))
            .attributes(
                aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
                redrive.to_string(),
            )
            .attributes(
                aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
                "30",
            )
            .send()
            .await
            .expect("queue created on moto")
            .queue_url
            .expect("queue url");
        let queue_arn = queue_arn(&sqs, &queue_url).await;
        let pollers = RequestLog::default();
        Cloud {
            emulators: e.clone(),
            names: CloudNames {
                tables: tables.clone(),
                step_queue_url: Some(queue_url),
                saga_state_machine_arn: Some(format!(
                    "arn:aws:states:us-east-1:123456789012:stateMachine:{id}-saga"
                )),
            },
            queue_arn,
            dlq_url,
            pollers: pollers.clone(),
            streams: clients::streams(&e.dynamodb, Some(&pollers)),
            poll_sqs: clients::sqs(&e.moto, Some(&pollers)),
            store: DynamoStore::new(dynamodb.clone(), tables),
            dynamodb,
            sqs,
        }
    }

    /// Clients for one function, counted in `log`.
    pub fn clients(&self, log: &RequestLog) -> CloudClients {
        CloudClients {
            dynamodb: clients::dynamodb(&self.emulators.dynamodb, Some(log)),
            sqs: clients::sqs(&self.emulators.moto, Some(log)),
            sfn: clients::sfn(&self.emulators.moto, Some(log)),
        }
    }

    pub fn queue_url(&self) -> &str {
        self.names.step_queue_url.as_deref().expect("queue url")
    }

    /// A reader of the events table's stream, from its beginning.
    pub async fn stream_reader(&self) -> StreamReader {
        let arn = self
            .dynamodb
            .describe_table()
            .table_name(&self.names.tables.events)
            .send()
            .await
            .expect("describe events table")
            .table
            .and_then(|t| t.latest_stream_arn)
            .expect("the events table has a stream");
        StreamReader {
            client: self.streams.clone(),
            arn,
            shards: BTreeMap::new(),
            described: None,
        }
    }

    /// Receive up to ten messages as an `SqsEvent` (what the SQS event source mapping
    /// hands the worker), or `None` if the queue had nothing.
    pub async fn receive(&self, wait_seconds: i32) -> Option<SqsEvent> {
        let out = self
            .poll_sqs
            .receive_message()
            .queue_url(self.queue_url())
            .max_number_of_messages(10)
            .wait_time_seconds(wait_seconds)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("ReceiveMessage");
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            return None;
        }
        let records: Vec<Value> = messages
            .iter()
            .map(|m| {
                let attributes: BTreeMap<String, String> = m
                    .attributes
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v))
                    .collect();
                json!({
                    "messageId": m.message_id,
                    "receiptHandle": m.receipt_handle,
                    "body": m.body,
                    "md5OfBody": m.md5_of_body,
                    "attributes": attributes,
                    "messageAttributes": {},
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.queue_arn,
                    "awsRegion": clients::region(),
                })
            })
            .collect();
        Some(serde_json::from_value(json!({ "Records": records })).expect("an SqsEvent"))
    }

    /// Delete the messages of `event` the handler did not report (what the event source
    /// mapping does with a partial batch response).
    pub async fn acknowledge(&self, event: &SqsEvent, response: &SqsBatchResponse) {
        let failed: Vec<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        let entries: Vec<DeleteMessageBatchRequestEntry> = event
            .records
            .iter()
            .enumerate()
            .filter(|(_, r)| !failed.contains(&r.message_id.as_deref().unwrap_or_default()))
            .filter_map(|(i, r)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(format!("m{i}"))
                    .receipt_handle(r.receipt_handle.clone().unwrap_or_default())
                    .build()
                    .ok()
            })
            .collect();
        if entries.is_empty() {
            return;
        }
        self.poll_sqs
            .delete_message_batch()
            .queue_url(self.queue_url())
            .set_entries(Some(entries))
            .send()
            .await
            .expect("DeleteMessageBatch");
    }

    /// Messages in the DLQ.
    pub async fn dlq_depth(&self) -> u64 {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.dlq_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .expect("GetQueueAttributes");
        out.attributes
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
                    .cloned()
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("GetQueueAttributes")
        .attributes
        .and_then(|a| {
            a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .cloned()
        })
        .expect("queue ARN")
}

/// How often the stream reader looks for new shards.
const SHARD_REFRESH: Duration = Duration::from_secs(2);

/// Reads the events table's stream the way the reactor's event source mapping does: every
/// shard from TRIM_HORIZON, then on from where it left off, keeping only the records its
/// filter passes ([`crane::adapters::aws::stream::REACTOR_FILTER`]: appends marked `wake`).
pub struct StreamReader {
    client: aws_sdk_dynamodbstreams::Client,
    arn: String,
    shards: BTreeMap<String, Shard>,
    /// When the shard list was last read (DescribeStream).
    described: Option<Instant>,
}

/// Where the reader is in one shard.
#[derive(Default)]
struct Shard {
    /// The next iterator; `None` when one must be fetched.
    iterator: Option<String>,
    /// The last record read: a lost iterator resumes after it.
    last_sequence_number: Option<String>,
    /// The shard is closed and read to its end.
    done: bool,
}

impl StreamReader {
    /// The records written since the last call that pass the reactor's filter, as a Lambda
    /// `DynamoDBEvent` (`None` if there were none: Lambda does not invoke the reactor for a
    /// batch its filter emptied).
    pub async fn poll(&mut self) -> Option<StreamEvent> {
        // DynamoDB Local opens the first shard with the first write: until a shard is
        // seen, look on every poll.
        let no_open_shard = self.shards.values().all(|s| s.done);
        if no_open_shard || self.described.is_none_or(|t| t.elapsed() > SHARD_REFRESH) {
            self.describe().await;
        }
        let mut records = Vec::new();
        for (id, shard) in self.shards.iter_mut() {
            if shard.done {
                continue;
            }
            let iterator = match shard.iterator.clone() {
                Some(it) => it,
                None => {
                    let (kind, after) = match &shard.last_sequence_number {
                        Some(seq) => (ShardIteratorType::AfterSequenceNumber, Some(seq.clone())),
                        None => (ShardIteratorType::TrimHorizon, None),
                    };
                    let out = self
                        .client
                        .get_shard_iterator()
                        .stream_arn(&self.arn)
                        .shard_id(id)
                        .shard_iterator_type(kind)
                        .set_sequence_number(after)
                        .send()
                        .await
                        .expect("GetShardIterator");
                    match out.shard_iterator {
                        Some(it) => it,
                        None => continue,
                    }
                }
            };
            match self
                .client
                .get_records()
                .shard_iterator(iterator)
                .send()
                .await
            {
                Ok(out) => {
                    let got = out.records.unwrap_or_default();
                    if let Some(last) = got
                        .last()
                        .and_then(|r| r.dynamodb.as_ref())
                        .and_then(|d| d.sequence_number.clone())
                    {
                        shard.last_sequence_number = Some(last);
                    }
                    records.extend(got.iter().map(lambda_record));
                    shard.done = out.next_shard_iterator.is_none();
                    shard.iterator = out.next_shard_iterator;
                }
                // DynamoDB Local answers TrimmedDataAccess for an iterator taken before the
                // shard had records; an iterator also expires. Take a new one next time.
                Err(e)
                    if e.as_service_error().is_some_and(|e| {
                        e.is_trimmed_data_access_exception() || e.is_expired_iterator_exception()
                    }) =>
                {
                    shard.iterator = None;
                }
                Err(e) => panic!("GetRecords: {e:?}"),
            }
        }
        let mut event: StreamEvent =
            serde_json::from_value(json!({ "Records": records })).expect("a DynamoDBEvent");
        event
            .records
            .retain(crane::adapters::aws::stream::passes_reactor_filter);
        (!event.records.is_empty()).then_some(event)
    }

    /// Find new shards (each is read from TRIM_HORIZON).
    async fn describe(&mut self) {
        self.described = Some(Instant::now());
        let stream = self
            .client
            .describe_stream()
            .stream_arn(&self.arn)
            .send()
            .await
            .expect("DescribeStream")
            .stream_description
            .expect("stream description");
        for shard in stream.shards.unwrap_or_default() {
            if let Some(id) = shard.shard_id {
                self.shards.entry(id).or_default();
            }
        }
    }
}

/// A DynamoDB Streams record as Lambda delivers it.
pub fn lambda_record(r: &aws_sdk_dynamodbstreams::types::Record) -> Value {
    let change = r.dynamodb.as_ref();
    let image = |m: Option<
        &std::collections::HashMap<String, aws_sdk_dynamodbstreams::types::AttributeValue>,
    >| {
        m.map(|m| serde_json::to_value(serde_dynamo::Item::from(m.clone())).expect("image as JSON"))
    };
    let created = change
        .and_then(|c| c.approximate_creation_date_time)
        .map(|t| t.as_secs_f64())
        .unwrap_or_default();
    let mut dynamodb = json!({
        "ApproximateCreationDateTime": created,
        "SequenceNumber": change.and_then(|c| c.sequence_number.clone()),
        "SizeBytes": change.and_then(|c| c.size_bytes).unwrap_or_default(),
        "StreamViewType": change.and_then(|c| c.stream_view_type.as_ref()).map(|v| v.as_str().to_owned()),
    });
    for (name, m) in [
        ("Keys", change.and_then(|c| c.keys.as_ref())),
        ("NewImage", change.and_then(|c| c.new_image.as_ref())),
        ("OldImage", change.and_then(|c| c.old_image.as_ref())),
    ] {
        if let Some(v) = image(m) {
            dynamodb[name] = v;
        }
    }
    json!({
        "eventID": r.event_id,
        "eventName": r.event_name.as_ref().map(|n| n.as_str().to_owned()),
        "eventVersion": r.event_version,
        "eventSource": r.event_source,
        "awsRegion": r.aws_region,
        "dynamodb": dynamodb,
    })
}
