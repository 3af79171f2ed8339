//! The payment port over HTTP (`PAYMENT_URL`): what runs on AWS.
//!
//! - `POST {base}/captures` and `POST {base}/refunds`, JSON bodies, each with
//!   its own `Idempotency-Key` (the same on every retry of that request);
//! - 2xx succeeds (a capture answers `{"paymentReference": ...}`);
//! - 408, 409, 429 and 5xx, timeouts, dropped connections and a success
//!   whose body cannot be read are transient: the workflow retries with the
//!   same key, and the provider answers the first outcome again;
//! - 401 and 403 mean the orchestrator's own credentials or set-up are
//!   wrong: a configuration error, never a decline;
//! - any other 4xx (402 above all) declines a capture; a refund's 404 means
//!   nothing was captured.

use async_trait::async_trait;
use reqwest::StatusCode;

use super::http_client::{LazyHttpClient, StatusClass, classify_status};
use crate::ports::payment::{
    Capture, CaptureRequest, PaymentError, PaymentGateway, RefundOutcome, RefundRequest,
};

pub struct HttpPaymentGateway {
    base_url: String,
    client: LazyHttpClient,
}

impl HttpPaymentGateway {
    pub fn new(base_url: &str, client: impl Into<LazyHttpClient>) -> HttpPaymentGateway {
        HttpPaymentGateway {
            base_url: base_url.trim_end_matches('/').to_owned(),
            client: client.into(),
        }
    }

    fn client(&self) -> Result<&reqwest::Client, PaymentError> {
        self.client
            .get()
            .map_err(|e| PaymentError::Transient(format!("HTTP client: {e}")))
    }
}

fn transient(error: reqwest::Error) -> PaymentError {
    PaymentError::Transient(error.to_string())
}

/// An answer that is not a success, as the port's error.
async fn failure(response: reqwest::Response, decline: bool) -> PaymentError {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let text = format!("{status}: {body}");
    match classify_status(status) {
        StatusClass::Retry => PaymentError::Transient(text),
        StatusClass::Misconfigured => PaymentError::Misconfigured(text),
        StatusClass::Refused if decline => PaymentError::Declined(text),
        StatusClass::Refused | StatusClass::Success => PaymentError::Transient(text),
    }
}

#[async_trait]
impl PaymentGateway for HttpPaymentGateway {
    async fn capture(&self, request: &CaptureRequest) -> Result<Capture, PaymentError> {
        let response = self
            .client()?
            .post(format!("{}/captures", self.base_url))
            .header("Idempotency-Key", &request.idempotency_key)
            .json(request)
            .send()
            .await
            .map_err(transient)?;
        if response.status().is_success() {
            // The capture happened but its answer is unreadable: a retry
            // with the same key reads the same capture again.
            return response.json::<Capture>().await.map_err(transient);
        }
        Err(failure(response, true).await)
    }

    async fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome, PaymentError> {
        let response = self
            .client()?
            .post(format!("{}/refunds", self.base_url))
            .header("Idempotency-Key", &request.idempotency_key)
            .json(request)
            .send()
            .await
            .map_err(transient)?;
        match response.status() {
            status if status.is_success() => Ok(RefundOutcome::Refunded),
            StatusCode::NOT_FOUND => Ok(RefundOutcome::NothingToRefund),
            _ => Err(failure(response, false).await),
        }
    }
}
