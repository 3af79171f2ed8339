//! What the API answers: the JSON shapes of purchases and status messages,
//! and the ETag of a version.

use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Serialize;

use super::error::{ApiError, json_response};
use super::request::ApiResponse;
use crate::domain::purchase::{
    FailureReason, LineStatus, PaymentStatus, ProductKind, Purchase, PurchaseStatus,
    ShippingAddress, ShippingStatus, TimelineEntry,
};
use crate::domain::rules::RuleResult;

/// `POST`/`PUT`/cancel/apply-rules/review/redrive answer with this (the spec's shape).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusMessage<'a> {
    pub purchase_id: &'a str,
    pub status: PurchaseStatus,
    pub message: String,
}

impl StatusMessage<'_> {
    pub fn of(purchase: &Purchase, message: impl Into<String>) -> StatusMessage<'_> {
        StatusMessage {
            purchase_id: purchase.purchase_id.as_str(),
            status: purchase.status,
            message: message.into(),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LineView<'a> {
    id: &'a str,
    quantity: u32,
    status: LineStatus,
    unit_price: i64,
    kind: ProductKind,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct AttentionView<'a> {
    failed_step: &'a str,
    error: &'a str,
    since: DateTime<Utc>,
}

/// `GET /purchases/{purchaseId}`: the spec's fields first, then what a
/// client needs to understand where the purchase stands.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PurchaseView<'a> {
    purchase_id: &'a str,
    status: PurchaseStatus,
    products: Vec<LineView<'a>>,
    payment_status: PaymentStatus,
    shipping_status: ShippingStatus,
    customer_id: &'a str,
    currency: &'a str,
    total_amount: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_reason: Option<FailureReason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attention: Option<AttentionView<'a>>,
    payment_method: &'a str,
    shipping_address: &'a ShippingAddress,
    timeline: &'a [TimelineEntry],
    rule_results: &'a [RuleResult],
    version: u64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finalized_at: Option<DateTime<Utc>>,
}

impl<'a> PurchaseView<'a> {
    pub fn of(p: &'a Purchase) -> PurchaseView<'a> {
        PurchaseView {
            purchase_id: p.purchase_id.as_str(),
            status: p.status,
            products: p
                .products
                .iter()
                .map(|l| LineView {
                    id: l.id.as_str(),
                    quantity: l.quantity,
                    status: l.status,
                    unit_price: l.unit_price,
                    kind: l.kind,
                })
                .collect(),
            payment_status: p.payment_status,
            shipping_status: p.shipping_status,
            customer_id: p.customer_id.as_str(),
            currency: p.currency.as_str(),
            total_amount: p.total_amount,
            failure_reason: p.failure_reason,
            attention: p.attention.as_ref().map(|a| AttentionView {
                failed_step: &a.failed_step,
                error: &a.error,
                since: a.since,
            }),
            payment_method: &p.payment_details.method,
            shipping_address: &p.shipping_address,
            timeline: &p.timeline,
            rule_results: &p.rule_results,
            version: p.version,
            created_at: p.created_at,
            updated_at: p.updated_at,
            finalized_at: p.finalized_at,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PurchaseList<'a> {
    pub purchases: Vec<PurchaseView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

pub fn to_json<T: Serialize>(status: StatusCode, value: &T) -> Result<ApiResponse, ApiError> {
    let body = serde_json::to_string(value).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(json_response(status, body))
}

pub fn etag(version: u64) -> HeaderValue {
    // Digits and quotes are always a valid header value.
    HeaderValue::try_from(format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

pub fn with_etag(mut response: ApiResponse, version: u64) -> ApiResponse {
    response.headers_mut().insert(header::ETAG, etag(version));
    response
}

/// `If-Match: "7"` (or the weak `W/"7"`) → Some(7). `*` or absent → None
/// (no precondition). Anything else is a 400.
pub fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let invalid = || ApiError::invalid("If-Match", "must be an ETag returned by GET, e.g. \"3\"");
    let text = value.to_str().map_err(|_| invalid())?.trim();
    if text == "*" {
        return Ok(None);
    }
    // Quoted as RFC 9110 spells an ETag; bare digits are accepted too, as
    // earlier versions did.
    let tag = text.strip_prefix("W/").unwrap_or(text);
    let digits = match tag.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"').ok_or_else(invalid)?,
        None => tag,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    digits.parse::<u64>().map(Some).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_MATCH, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn if_match_reads_strong_weak_and_any() {
        assert_eq!(if_match(&HeaderMap::new()).unwrap(), None);
        assert_eq!(if_match(&with("*")).unwrap(), None);
        assert_eq!(if_match(&with("\"3\"")).unwrap(), Some(3));
        assert_eq!(if_match(&with("W/\"3\"")).unwrap(), Some(3));
        assert_eq!(if_match(&with("3")).unwrap(), Some(3));
        for bad in ["\"three\"", "W/\"\"", "\"3", "-3", ""] {
            assert!(if_match(&with(bad)).is_err(), "{bad:?}");
        }
    }
}
