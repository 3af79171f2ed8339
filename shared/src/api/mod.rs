//! The HTTP API, shared by the Lambda functions and the local server: each
//! endpoint parses an [`ApiRequest`](request::ApiRequest) (whatever the
//! transport), calls the lifecycle through the purchase service, and answers
//! an `http::Response`.
//!
//! - [`endpoint`]: the table of endpoints (routes, function names, handlers).
//! - [`purchases`], [`rule_sets`]: the handlers.
//! - [`app`]: their dependencies; [`request`]: what they take and give.
//! - [`body`]: request bodies; [`views`]: response bodies and ETags.
//! - [`idempotency`]: the `Idempotency-Key` header.
//! - [`error`]: the one mapping of every error to HTTP.
//!
//! Everything but [`request`] is behind the `api` feature. The request
//! types and [`request::BASE_PATH`] are always here: the console's
//! assets serve below the same base path without linking the handlers.

#[cfg(feature = "api")]
pub mod app;
#[cfg(feature = "api")]
pub mod body;
#[cfg(feature = "api")]
pub mod endpoint;
#[cfg(feature = "api")]
pub mod error;
#[cfg(feature = "api")]
pub mod idempotency;
#[cfg(feature = "api")]
pub mod purchases;
pub mod request;
#[cfg(feature = "api")]
pub mod rule_sets;
#[cfg(feature = "api")]
pub mod views;
