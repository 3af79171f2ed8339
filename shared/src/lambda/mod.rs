//! Lambda glue: from the Lambda runtimes to the shared handlers, so each
//! function's `main.rs` is three lines: set up logs, build dependencies once
//! ([`config`]), run.
//!
//! - [`config`]: dependencies from environment variables (always here;
//!   each constructor exists when the features it builds from do).
//! - `endpoint` (feature `lambda-http`): `run_endpoint`, `api_request`.
//! - `task` (feature `lambda-runtime`): `run_step` (with `steps`),
//!   `run_reconciler`.

pub mod config;
#[cfg(feature = "lambda-http")]
mod endpoint;
#[cfg(feature = "lambda-runtime")]
mod task;

#[cfg(feature = "lambda-http")]
pub use endpoint::{api_request, run_endpoint};
#[cfg(feature = "lambda-runtime")]
pub use task::run_reconciler;
#[cfg(all(feature = "lambda-runtime", feature = "steps"))]
pub use task::run_step;
