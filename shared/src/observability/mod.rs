//! Logs and metrics: what operators read.

pub mod metrics;
pub mod telemetry;
