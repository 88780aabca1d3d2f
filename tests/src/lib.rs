//! Shared helpers of Crane's integration and end-to-end tests.

pub mod aws;
pub mod cloud;
pub mod contract;
pub mod events;
pub mod infra;
pub mod local;
