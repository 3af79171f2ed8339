//! What the HTTP adapters share: one client with deadlines, and one reading
//! of status codes.

use std::time::Duration;

use reqwest::StatusCode;

/// How long one call to a provider may take, connection included. Well
/// inside a step's function timeout, so a hanging provider turns into a
/// retried step rather than a killed one.
pub const CALL_DEADLINE: Duration = Duration::from_secs(10);
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(3);

/// A reqwest client with the deadlines every outbound call needs; built once
/// at cold start and shared.
///
/// Redirects are not followed: a provider that moved is a configuration to
/// fix, and following one would turn a capture's POST into a GET.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_DEADLINE)
        .timeout(CALL_DEADLINE)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// What a provider's status code means for the orchestrator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    Success,
    /// 408, 409 (a concurrent request with the same key), 429, 5xx: the
    /// same request may succeed later.
    Retry,
    /// 3xx, 401, 403: the orchestrator's set-up (the provider's address,
    /// its credentials) is wrong.
    Misconfigured,
    /// Any other 4xx: the provider refuses this request for good.
    Refused,
}

pub fn classify_status(status: StatusCode) -> StatusClass {
    match status.as_u16() {
        200..=299 => StatusClass::Success,
        408 | 409 | 429 | 500..=599 => StatusClass::Retry,
        300..=399 | 401 | 403 => StatusClass::Misconfigured,
        _ => StatusClass::Refused,
    }
}
