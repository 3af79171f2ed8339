//! The payment port: capture a purchase's total, refund it.
//!
//! Every request carries an idempotency key of its own (one for the capture,
//! another for the refund, each the same on every retry): the provider must
//! treat a repeated request with the same key as the same request. That is
//! what makes the workflow's retries safe ("never charged twice").
//! Adapters: `adapters::http_payment` (production), `adapters::simulators`.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::{Money, PurchaseId};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// The provider refused the payment; retrying will not help. The text
    /// is the provider's, for logs only.
    #[error("payment declined: {0}")]
    Declined(String),
    /// Timeout, throttling, a conflict or an outage; retrying may help.
    #[error("payment provider unavailable: {0}")]
    Transient(String),
    /// The provider refused *us* (401/403): credentials or set-up are wrong.
    /// Neither a decline nor worth retrying soon; an operator must look.
    #[error("payment provider refused the orchestrator's credentials: {0}")]
    Misconfigured(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CaptureRequest {
    pub purchase_id: PurchaseId,
    #[serde(skip)]
    pub idempotency_key: String,
    pub amount: i64,
    pub currency: String,
    pub method: String,
    pub transaction_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RefundRequest {
    pub purchase_id: PurchaseId,
    #[serde(skip)]
    pub idempotency_key: String,
    /// At most this much: whatever was captured for the purchase.
    pub amount: i64,
    pub currency: String,
}

impl RefundRequest {
    pub fn new(purchase_id: PurchaseId, idempotency_key: String, amount: Money) -> RefundRequest {
        RefundRequest {
            purchase_id,
            idempotency_key,
            amount: amount.amount,
            currency: amount.currency.to_string(),
        }
    }
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
    /// Captures the amount; the same key is the same capture.
    async fn capture(&self, request: &CaptureRequest) -> Result<Capture, PaymentError>;
    /// Refunds whatever was captured for the purchase; the same key is the
    /// same refund.
    async fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome, PaymentError>;
}
