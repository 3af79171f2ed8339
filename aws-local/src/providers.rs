//! The payment and provisioning providers, served over HTTP in the protocol
//! the step functions' HTTP adapters speak (`shared::adapters::http_payment`,
//! `http_provisioning`): `PAYMENT_URL` and `PROVISIONING_URL` point here.
//!
//! Behind it are the simulators of local mode, one set of books for every
//! function process, as a real provider keeps one. A request the caller
//! stops waiting for (the adapter's 10 s deadline, a killed function) is
//! abandoned with it, as in local mode, where a step that runs past its
//! timeout drops its simulator call: so `tok_slow` (15 s) never completes a
//! capture here, it is retried until the purchase is cancelled or fails.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::json;
use shared::domain::purchase::{LineStatus, ProductKind, PurchaseLine};
use shared::domain::{ProductId, PurchaseId};
use shared::ports::payment::{
    CaptureRequest, PaymentError, PaymentGateway, RefundOutcome, RefundRequest,
};
use shared::ports::provisioning::{Provisioner, ProvisioningError};

/// The path prefix of each provider on the providers' server.
pub const PAYMENT_PATH: &str = "/payment";
pub const PROVISIONING_PATH: &str = "/provisioning";

#[derive(Clone)]
struct Providers {
    payments: Arc<dyn PaymentGateway>,
    provisioning: Arc<dyn Provisioner>,
}

/// The providers' routes: `/payment/captures`, `/payment/refunds`,
/// `/provisioning/provisions`, `/provisioning/revocations`.
pub fn router(payments: Arc<dyn PaymentGateway>, provisioning: Arc<dyn Provisioner>) -> Router {
    Router::new()
        .route(&format!("{PAYMENT_PATH}/captures"), post(capture))
        .route(&format!("{PAYMENT_PATH}/refunds"), post(refund))
        .route(&format!("{PROVISIONING_PATH}/provisions"), post(provision))
        .route(&format!("{PROVISIONING_PATH}/revocations"), post(revoke))
        .with_state(Providers {
            payments,
            provisioning,
        })
}

fn idempotency_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|key| !key.is_empty())
        .map(str::to_owned)
}

fn missing_key() -> Response {
    answer(StatusCode::BAD_REQUEST, "Idempotency-Key is required")
}

fn answer(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "message": message }))).into_response()
}

fn payment_error(error: PaymentError) -> Response {
    match error {
        // 402: a refusal for good, which the adapter reads as a decline.
        PaymentError::Declined(text) => answer(StatusCode::PAYMENT_REQUIRED, &text),
        PaymentError::Transient(text) => answer(StatusCode::SERVICE_UNAVAILABLE, &text),
        PaymentError::Misconfigured(text) => answer(StatusCode::FORBIDDEN, &text),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CaptureBody {
    purchase_id: PurchaseId,
    amount: i64,
    currency: String,
    method: String,
    transaction_id: String,
}

async fn capture(
    State(providers): State<Providers>,
    headers: HeaderMap,
    Json(body): Json<CaptureBody>,
) -> Response {
    let Some(key) = idempotency_key(&headers) else {
        return missing_key();
    };
    let request = CaptureRequest {
        purchase_id: body.purchase_id,
        idempotency_key: key,
        amount: body.amount,
        currency: body.currency,
        method: body.method,
        transaction_id: body.transaction_id,
    };
    match providers.payments.capture(&request).await {
        Ok(capture) => (
            StatusCode::OK,
            Json(json!({ "paymentReference": capture.payment_reference })),
        )
            .into_response(),
        Err(error) => payment_error(error),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefundBody {
    purchase_id: PurchaseId,
    amount: i64,
    currency: String,
}

async fn refund(
    State(providers): State<Providers>,
    headers: HeaderMap,
    Json(body): Json<RefundBody>,
) -> Response {
    let Some(key) = idempotency_key(&headers) else {
        return missing_key();
    };
    let request = RefundRequest {
        purchase_id: body.purchase_id,
        idempotency_key: key,
        amount: body.amount,
        currency: body.currency,
    };
    match providers.payments.refund(&request).await {
        Ok(RefundOutcome::Refunded) => (StatusCode::OK, Json(json!({}))).into_response(),
        // The adapter reads a refund's 404 as "nothing was captured".
        Ok(RefundOutcome::NothingToRefund) => answer(StatusCode::NOT_FOUND, "nothing to refund"),
        Err(error) => payment_error(error),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LineBody {
    purchase_id: PurchaseId,
    product_id: ProductId,
    quantity: u32,
    kind: ProductKind,
}

impl LineBody {
    fn line(&self) -> PurchaseLine {
        PurchaseLine {
            id: self.product_id.clone(),
            quantity: self.quantity,
            // The provider is told what to deliver, not the purchase's books.
            status: LineStatus::Reserved,
            unit_price: 0,
            kind: self.kind,
        }
    }
}

fn provisioning_result(result: Result<(), ProvisioningError>) -> Response {
    match result {
        Ok(()) => (StatusCode::OK, Json(json!({}))).into_response(),
        // 422: refused for good, which the adapter reads as a rejection.
        Err(ProvisioningError::Rejected(text)) => answer(StatusCode::UNPROCESSABLE_ENTITY, &text),
        Err(ProvisioningError::Transient(text)) => answer(StatusCode::SERVICE_UNAVAILABLE, &text),
        Err(ProvisioningError::Misconfigured(text)) => answer(StatusCode::FORBIDDEN, &text),
    }
}

async fn provision(
    State(providers): State<Providers>,
    headers: HeaderMap,
    Json(body): Json<LineBody>,
) -> Response {
    if idempotency_key(&headers).is_none() {
        return missing_key();
    }
    provisioning_result(
        providers
            .provisioning
            .provision(&body.purchase_id, &body.line())
            .await,
    )
}

async fn revoke(
    State(providers): State<Providers>,
    headers: HeaderMap,
    Json(body): Json<LineBody>,
) -> Response {
    if idempotency_key(&headers).is_none() {
        return missing_key();
    }
    provisioning_result(
        providers
            .provisioning
            .revoke(&body.purchase_id, &body.line())
            .await,
    )
}
