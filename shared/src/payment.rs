//! The payment port, its HTTP adapter and the built-in simulator.
//!
//! Captures and refunds are keyed by purchase id: the provider must treat a
//! repeated capture for the same purchase as the same capture. That is what
//! makes the workflow's retries safe ("nothing charged twice").

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// The provider refused the payment; retrying will not help.
    #[error("payment declined: {0}")]
    Declined(String),
    /// Timeout, throttling or a provider outage; retrying may help.
    #[error("payment provider unavailable: {0}")]
    Transient(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CaptureRequest {
    pub purchase_id: String,
    pub amount: i64,
    pub currency: String,
    pub method: String,
    pub transaction_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capture {
    pub payment_reference: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundOutcome {
    Refunded,
    /// Nothing was captured for this purchase (or it was refunded already).
    NothingToRefund,
}

#[async_trait]
pub trait PaymentGateway: Send + Sync {
    /// Captures the amount; idempotent per purchase id.
    async fn capture(&self, request: &CaptureRequest) -> Result<Capture, PaymentError>;
    /// Refunds whatever was captured for the purchase; idempotent.
    async fn refund(&self, purchase_id: &str) -> Result<RefundOutcome, PaymentError>;
}

/// Talks to a payment service over HTTP (`PAYMENT_URL`):
/// `POST {base}/captures` and `POST {base}/refunds`, with the purchase id as
/// `Idempotency-Key`. 2xx succeeds, 402/4xx is a decline, 404 on refund means
/// nothing to refund, 429/5xx/timeouts are transient.
pub struct HttpPaymentGateway {
    base_url: String,
    client: reqwest::Client,
}

impl HttpPaymentGateway {
    pub fn new(base_url: &str, client: reqwest::Client) -> HttpPaymentGateway {
        HttpPaymentGateway {
            base_url: base_url.trim_end_matches('/').to_owned(),
            client,
        }
    }
}

/// A reqwest client with the timeouts every outbound call needs; built once
/// at cold start and shared.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10))
        .build()
}

fn transient(error: reqwest::Error) -> PaymentError {
    PaymentError::Transient(error.to_string())
}

#[async_trait]
impl PaymentGateway for HttpPaymentGateway {
    async fn capture(&self, request: &CaptureRequest) -> Result<Capture, PaymentError> {
        let response = self
            .client
            .post(format!("{}/captures", self.base_url))
            .header("Idempotency-Key", &request.purchase_id)
            .json(request)
            .send()
            .await
            .map_err(transient)?;
        let status = response.status();
        if status.is_success() {
            return response.json::<Capture>().await.map_err(transient);
        }
        let body = response.text().await.unwrap_or_default();
        if status.as_u16() == 429 || status.is_server_error() {
            Err(PaymentError::Transient(format!("{status}: {body}")))
        } else {
            Err(PaymentError::Declined(format!("{status}: {body}")))
        }
    }

    async fn refund(&self, purchase_id: &str) -> Result<RefundOutcome, PaymentError> {
        let response = self
            .client
            .post(format!("{}/refunds", self.base_url))
            .header("Idempotency-Key", purchase_id)
            .json(&serde_json::json!({ "purchaseId": purchase_id }))
            .send()
            .await
            .map_err(transient)?;
        let status = response.status();
        match status.as_u16() {
            200..=299 => Ok(RefundOutcome::Refunded),
            404 => Ok(RefundOutcome::NothingToRefund),
            _ => Err(PaymentError::Transient(format!("refund answered {status}"))),
        }
    }
}

/// The local-mode payment provider. Conventions (README):
/// - `transactionId` starting `tok_decline` → declined (permanent);
/// - `tok_flaky` → fails transiently twice per purchase, then succeeds;
/// - `tok_slow` → succeeds after [`SLOW_CAPTURE`], leaving time to update or
///   cancel a purchase while its workflow runs (README's walk-through);
/// - anything else → captured.
///
/// It also keeps a ledger so tests can check that nothing is charged twice.
#[derive(Default)]
pub struct SimulatedPaymentGateway {
    state: Mutex<SimulatorLedger>,
}

#[derive(Default, Debug, Clone)]
pub struct SimulatorLedger {
    /// purchaseId → amount captured and not refunded.
    pub captured: HashMap<String, i64>,
    /// Number of distinct captures ever made (a repeated capture of the same purchase is not counted).
    pub captures: u64,
    pub refunds: u64,
    flaky_failures: HashMap<String, u32>,
}

impl SimulatedPaymentGateway {
    pub fn ledger(&self) -> SimulatorLedger {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

fn lock_error<T>(_: T) -> PaymentError {
    PaymentError::Transient("simulator lock poisoned".into())
}

/// How long the simulator takes to capture a `tok_slow` payment.
pub const SLOW_CAPTURE: Duration = Duration::from_secs(15);

#[async_trait]
impl PaymentGateway for SimulatedPaymentGateway {
    async fn capture(&self, request: &CaptureRequest) -> Result<Capture, PaymentError> {
        if request.transaction_id.starts_with("tok_slow") {
            tokio::time::sleep(SLOW_CAPTURE).await;
        }
        let mut state = self.state.lock().map_err(lock_error)?;
        let token = request.transaction_id.as_str();
        if token.starts_with("tok_decline") {
            return Err(PaymentError::Declined(format!(
                "card declined for transaction {token}"
            )));
        }
        if token.starts_with("tok_flaky") {
            let failures = state
                .flaky_failures
                .entry(request.purchase_id.clone())
                .or_insert(0);
            if *failures < 2 {
                *failures += 1;
                return Err(PaymentError::Transient(format!(
                    "simulated provider timeout ({} of 2)",
                    failures
                )));
            }
        }
        if !state.captured.contains_key(&request.purchase_id) {
            state
                .captured
                .insert(request.purchase_id.clone(), request.amount);
            state.captures += 1;
        }
        Ok(Capture {
            payment_reference: format!("sim_{}", request.purchase_id),
        })
    }

    async fn refund(&self, purchase_id: &str) -> Result<RefundOutcome, PaymentError> {
        let mut state = self.state.lock().map_err(lock_error)?;
        match state.captured.remove(purchase_id) {
            Some(_) => {
                state.refunds += 1;
                Ok(RefundOutcome::Refunded)
            }
            None => Ok(RefundOutcome::NothingToRefund),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(token: &str) -> CaptureRequest {
        CaptureRequest {
            purchase_id: "p-1".into(),
            amount: 500,
            currency: "EUR".into(),
            method: "card".into(),
            transaction_id: token.into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn slow_token_takes_its_time_then_captures() {
        let sim = SimulatedPaymentGateway::default();
        let started = tokio::time::Instant::now();
        assert!(sim.capture(&request("tok_slow")).await.is_ok());
        assert!(started.elapsed() >= SLOW_CAPTURE);
        assert_eq!(sim.ledger().captures, 1);
    }

    #[tokio::test]
    async fn simulator_follows_the_documented_tokens() {
        let sim = SimulatedPaymentGateway::default();
        assert!(matches!(
            sim.capture(&request("tok_decline_insufficient_funds"))
                .await,
            Err(PaymentError::Declined(_))
        ));
        for _ in 0..2 {
            assert!(matches!(
                sim.capture(&request("tok_flaky")).await,
                Err(PaymentError::Transient(_))
            ));
        }
        assert!(sim.capture(&request("tok_flaky")).await.is_ok());
        // Capturing again is the same capture, not a second charge.
        assert!(sim.capture(&request("tok_flaky")).await.is_ok());
        assert_eq!(sim.ledger().captures, 1);
        assert_eq!(sim.refund("p-1").await, Ok(RefundOutcome::Refunded));
        assert_eq!(sim.refund("p-1").await, Ok(RefundOutcome::NothingToRefund));
        assert_eq!(sim.ledger().refunds, 1);
    }
}
