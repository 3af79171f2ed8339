//! Adapters: the ports implemented on real technology.
//!
//! - [`embedded`]: the store ports on redb (local mode).
//! - [`dynamodb`]: the store ports on DynamoDB (AWS), one file per table.
//! - [`sfn`]: the workflow port on Step Functions.
//! - [`http_payment`], [`http_provisioning`]: the providers over HTTP, with
//!   [`http_client`]'s deadlines and status reading.
//! - [`simulators`]: built-in providers for local mode and tests.

pub mod dynamodb;
pub mod embedded;
pub mod http_client;
pub mod http_payment;
pub mod http_provisioning;
pub mod sfn;
pub mod simulators;
