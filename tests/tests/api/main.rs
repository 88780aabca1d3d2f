//! API tests: the router over in-memory adapters, driven with `tower::ServiceExt::oneshot`.
//!
//! Three promises are held here: the OpenAPI document (`infra/openapi.json`) and the
//! router agree on the routes; every real response (success or error) has a status the
//! document lists for its operation and a body that conforms to the documented schema
//! (checked with the `jsonschema` crate); and no input, however malformed, gets anything
//! but a JSON answer below 500.
//!
//! Runs use a fixed planner and are driven to their end by draining the in-memory outbox;
//! planner and store failures are simulated, and cursors are also checked on SQLite.

mod harness;
mod schema;

mod approval;
mod bad_input;
mod edge;
mod failures;
mod headers;
mod live;
mod openapi;
mod properties;
mod responses;
mod todos;
