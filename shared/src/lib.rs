//! The purchase orchestrator's common crate, in layers that only point
//! inward (a test in `tests/layout.rs` keeps them so):
//!
//! | layer | folder | depends on |
//! |---|---|---|
//! | domain: the purchase, its lifecycle, rules, pricing, validation | [`domain`] | nothing here |
//! | ports: what the orchestrator needs from outside, as traits | [`ports`] | domain |
//! | service: load → decide → write, shared by API and steps | [`service`] | ports, domain |
//! | adapters: redb, DynamoDB, Step Functions, HTTP providers, simulators | [`adapters`] | ports, domain |
//! | API: the HTTP handlers and their one error mapping | [`api`] | service, auth, ports, domain |
//! | steps: the workflow's tasks | [`steps`] | service, ports, domain |
//! | auth: JWT verification | [`auth`] | — |
//! | Lambda glue: runtimes and configuration | [`lambda`] | everything above |
//! | observability: logs and metrics | [`observability`] | domain |

pub mod adapters;
pub mod api;
pub mod auth;
pub mod domain;
pub mod lambda;
pub mod observability;
pub mod ports;
pub mod service;
pub mod steps;
