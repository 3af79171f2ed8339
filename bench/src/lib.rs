//! Benchmark tooling for the purchase orchestrator (issues 9 and 14).
//!
//! - [`runtime_api`]: a minimal Lambda Runtime API on 127.0.0.1, one
//!   listener per invocation, that times a function's first poll and response.
//! - [`invoke`]: one cold invocation of a function binary as Lambda runs it.
//! - [`proxy`]: a counting HTTP proxy in front of moto (DynamoDB and Step
//!   Functions requests by operation, their arrival, the time waited on
//!   them; for the cost model the items each write touched, before and after).
//! - [`template`]: `template.yaml` read for the benchmarks (functions,
//!   tables and their indexes, state machines), intrinsics resolved locally.
//! - [`trust_store`]: a trap that sees a process read a CA trust store.
//! - [`fixtures`]: what the criterion handlers run on (real HS256 auth, the
//!   embedded store, a no-op workflow) and the requests they get.
//! - [`stats`], [`http_client`]: small helpers.
//!
//! `scripts/bench.sh` drives everything through the `bench-driver` binary
//! and writes `docs/benchmarks.md`; `scripts/bench-smoke.sh` runs its init
//! smoke test.

pub mod fixtures;
pub mod http_client;
pub mod invoke;
pub mod proxy;
pub mod runtime_api;
pub mod stats;
pub mod template;
pub mod trust_store;

/// Errors in bench tooling are reported, not handled: a readable message is enough.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T, E = Error> = std::result::Result<T, E>;
