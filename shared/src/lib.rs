//! The purchase orchestrator's common crate.
//!
//! - Domain (plain Rust, no AWS types): [`model`], [`validation`], [`rules`]...
//! - Ports: [`store`], [`payment`], [`provisioning`], [`workflow`], [`auth`].
//! - Adapters: [`embedded`] (redb), [`dynamodb`], [`sfn`], HTTP clients.
//! - Entry points shared by the Lambdas and the local server: [`api`], [`steps`].

pub mod api;
pub mod auth;
pub mod config;
pub mod dynamodb;
pub mod embedded;
pub mod error;
pub mod idempotency;
pub mod lambda;
pub mod metrics;
pub mod model;
pub mod payment;
pub mod provisioning;
pub mod rules;
pub mod sfn;
pub mod steps;
pub mod store;
pub mod telemetry;
pub mod validation;
pub mod workflow;
