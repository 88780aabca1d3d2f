//! Crane: a durable runtime for AI agent runs.
//!
//! A prompt is planned into a DAG of tool steps; independent steps run in parallel, failed
//! attempts are retried with backoff, failing tools are isolated by circuit breakers, and
//! completed steps are compensated when a run cannot finish. Every state change is an
//! immutable event; current state is `fold(events)`.
//!
//! # Layout
//! - [`domain`]: runs, plans, steps, events and `fold`. Pure data, no I/O.
//! - [`planner`]: prompt -> validated plan (pattern planner; LLM planners).
//! - [`tools`]: the `Tool` trait, the registry, `calculator`, `todo`, fault injection.
//! - [`engine`]: pure decisions: what is ready, what an outcome means, retry backoff,
//!   circuit breaker, saga order, step references, the DAG, human approval (which steps
//!   wait for a person, what a decision or an expiry means).
//! - [`ports`]: one small trait per kind of I/O (event store, run views, dispatcher, todos,
//!   idempotency keys, breakers, clock).
//! - [`adapters`]: implementations of the ports: `local` (embedded SQLite, in-memory).
//! - [`app`]: the application services the entry points call (create run, process a
//!   step job, react to new events, ...), written once over the ports.
//! - [`http`]: the axum router served locally and, in the cloud, through `lambda_http`, and
//!   the guards at its edge (origin, host, content type, body deadline), and the web
//!   console's embedded files.
//! - `entrypoints` (feature `aws`): the Lambda handlers: API Gateway requests, SQS step
//!   batches, DynamoDB Stream batches and saga tasks into `app` calls; EMF metrics.
//! - [`config`], [`telemetry`]: typed configuration from the environment; logging setup.
//! - [`prometheus`]: the local runtime's Prometheus metrics, named like the EMF ones.

#![warn(missing_docs)]

pub mod adapters;
pub mod app;
pub mod config;
pub mod domain;
pub mod engine;
#[cfg(feature = "aws")]
pub mod entrypoints;
pub mod http;
pub mod planner;
pub mod ports;
pub mod prometheus;
pub mod telemetry;
pub mod tools;
