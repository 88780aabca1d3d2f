//! Implementations of the [`crate::ports`]: `local` (embedded SQLite and in-memory) and
//! `aws` (DynamoDB, SQS, Step Functions; feature `aws`).

pub mod local;

#[cfg(feature = "aws")]
pub mod aws;
