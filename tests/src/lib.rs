//! Crane's test kit: everything the integration and end-to-end tests share, once. A test
//! file under `tests/` holds tests; what they need to stand up lives here.
//!
//! # Layout
//! - [`logs`]: `init_logs()`, logs on stderr only when `TEST_LOG` is set.
//! - [`names`]: `unique(what)`, a name no other test uses.
//! - [`clients`]: SDK clients for the emulators (DynamoDB Local, moto).
//! - [`aws`]: fresh tables, queues and state machines on the emulators.
//! - [`cloud`]: one test's cloud (tables, queues, counted clients) and the stand-ins for
//!   Lambda's event source mappings.
//! - [`asl`]: a walker of the saga's Amazon States Language definition.
//! - [`contract`]: the adapter contract suite, run against SQLite and the AWS adapters.
//! - [`events`]: the sample Lambda events of `events/`.
//! - [`local`]: the local runtime on `127.0.0.1:0`, driven over HTTP.
//! - [`api`]: Crane's HTTP answers as typed structs.
//! - [`infra`]: the repository, the tools venv (cfn-lint, statelint, sam), the rendered
//!   template.

pub mod api;
pub mod asl;
pub mod aws;
pub mod clients;
pub mod cloud;
pub mod contract;
pub mod events;
pub mod infra;
pub mod local;
pub mod logs;
pub mod names;
