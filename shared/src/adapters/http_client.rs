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
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_DEADLINE)
        .timeout(CALL_DEADLINE)
        .build()
}

/// What a provider's status code means for the orchestrator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    Success,
    /// 408, 409 (a concurrent request with the same key), 429, 5xx: the
    /// same request may succeed later.
    Retry,
    /// 401, 403: the orchestrator's credentials or set-up are wrong.
    Misconfigured,
    /// Any other 4xx: the provider refuses this request for good.
    Refused,
}

pub fn classify_status(status: StatusCode) -> StatusClass {
    match status.as_u16() {
        200..=299 => StatusClass::Success,
        408 | 409 | 429 | 500..=599 => StatusClass::Retry,
        401 | 403 => StatusClass::Misconfigured,
        _ => StatusClass::Refused,
    }
}
