//! Adapters: the ports implemented on real technology. Each is behind the
//! Cargo feature named in brackets (the crate doc lists them).
//!
//! - `embedded` (`embedded`): the store ports on redb (local mode).
//! - `dynamodb` (`dynamodb`): the store ports on DynamoDB (AWS), one file
//!   per table.
//! - `sfn` (`sfn`): the workflow port on Step Functions.
//! - `aws_sdk` (`aws-sdk`): what every AWS SDK client shares: one HTTPS
//!   client trusting Amazon's roots, and the credentials.
//! - `http_payment`, `http_provisioning` (`steps`): the providers over HTTP,
//!   with `http_client`'s deadlines, lazily built client and status reading.
//! - `simulators` (`simulators`): built-in providers for local mode and
//!   tests.

#[cfg(feature = "aws-sdk")]
pub mod aws_sdk;
#[cfg(feature = "dynamodb")]
pub mod dynamodb;
#[cfg(feature = "embedded")]
pub mod embedded;
#[cfg(feature = "steps")]
pub mod http_client;
#[cfg(feature = "steps")]
pub mod http_payment;
#[cfg(feature = "steps")]
pub mod http_provisioning;
#[cfg(feature = "sfn")]
pub mod sfn;
#[cfg(feature = "simulators")]
pub mod simulators;
