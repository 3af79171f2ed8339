//! What the HTTP adapters share: one client with deadlines, built on first
//! use, and one reading of status codes.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::StatusCode;

/// How long one call to a provider may take, connection included. Well
/// inside a step's function timeout, so a hanging provider turns into a
/// retried step rather than a killed one.
pub const CALL_DEADLINE: Duration = Duration::from_secs(10);
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(3);

/// A reqwest client with the deadlines every outbound call needs.
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

/// The providers' client, built by the first call that needs it and then
/// shared by every clone (the payment and provisioning adapters of one
/// function share one).
///
/// Why not at cold start: building a reqwest client parses the machine's
/// whole CA store (milliseconds of CPU), and most step functions never call
/// a provider (reserving stock, judging rules, finalizing), so only the
/// first call that does pays.
#[derive(Clone, Default)]
pub struct LazyHttpClient {
    client: Arc<OnceLock<reqwest::Client>>,
}

impl LazyHttpClient {
    /// The client, built with [`http_client`] on the first call. A build
    /// that fails (no usable CA store, for instance) is not kept: the next
    /// call tries again.
    pub fn get(&self) -> Result<&reqwest::Client, reqwest::Error> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let built = http_client()?;
        // Two first calls racing both build; one client is kept.
        Ok(self.client.get_or_init(|| built))
    }
}

/// A client built beforehand (tests with a client of their own).
impl From<reqwest::Client> for LazyHttpClient {
    fn from(client: reqwest::Client) -> LazyHttpClient {
        LazyHttpClient {
            client: Arc::new(OnceLock::from(client)),
        }
    }
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
