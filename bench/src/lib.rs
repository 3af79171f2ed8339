//! Benchmark tooling for the purchase orchestrator (issue 9).
//!
//! - [`fixtures`]: the dependencies the handlers run on in a benchmark (real
//!   HS256 auth, the embedded store or DynamoDB-on-moto, a no-op workflow)
//!   and the requests they get.
//! - [`runtime_api`]: a minimal Lambda Runtime API on 127.0.0.1 that times a
//!   function process's first poll and first response.
//! - [`proxy`]: a counting HTTP proxy in front of moto (DynamoDB and Step
//!   Functions requests by operation, with the time spent waiting on them).
//! - [`stats`], [`http_client`]: small helpers.
//!
//! `scripts/bench.sh` drives everything through the `bench-driver` binary
//! and writes `docs/benchmarks.md`.

pub mod fixtures;
pub mod http_client;
pub mod proxy;
pub mod runtime_api;
pub mod stats;

/// Errors in bench tooling are reported, not handled: a readable message is enough.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T, E = Error> = std::result::Result<T, E>;
