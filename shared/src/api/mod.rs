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

pub mod app;
pub mod body;
pub mod endpoint;
pub mod error;
pub mod idempotency;
pub mod purchases;
pub mod request;
pub mod rule_sets;
pub mod views;
