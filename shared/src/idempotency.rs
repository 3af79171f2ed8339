//! `Idempotency-Key` for `POST /purchases` and `POST .../cancel`, with the
//! semantics of Stripe's keys and the Powertools idempotency utility:
//!
//! - the same key and the same request within 24 h gets the first response
//!   again (same status, same body, same `purchaseId`), without running twice;
//! - the same key with a different request is a 422;
//! - while the first request with a key is still running, a second one is a 409.
//!
//! Keys are scoped to the caller and the endpoint, so two customers (or a
//! create and a cancel) can never collide. A request that fails with a 5xx
//! frees its key: nothing was done, and the client's retry should run.

use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use http::{HeaderValue, header};

use crate::api::{ApiRequest, ApiResponse, BASE_PATH, Endpoint};
use crate::auth::Caller;
use crate::error::{ApiError, json_response};
use crate::store::{IdempotencyRecord, IdempotencyStore, StoredResponse};

pub const HEADER: &str = "idempotency-key";
/// How long a response is replayed for a retry with the same key.
pub const RESPONSE_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a claimed key stays in flight before a retry may take it over:
/// longer than any API request may run (API Gateway stops at 29 s), short
/// enough that a crashed request does not block its retries for a day.
pub const IN_FLIGHT_TTL: Duration = Duration::from_secs(60);
pub const MAX_KEY_CHARS: usize = 255;

/// Marks a replayed response, as Stripe does.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

fn key_from(request: &ApiRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = request.headers.get(HEADER) else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::invalid(
            "Idempotency-Key",
            format!(
                "must be 1 to {MAX_KEY_CHARS} visible ASCII characters (a UUID is a good choice)"
            ),
        )
    };
    let key = value.to_str().map_err(|_| invalid())?;
    if key.is_empty() || key.len() > MAX_KEY_CHARS || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid());
    }
    Ok(Some(key.to_owned()))
}

/// A digest of what makes two requests "the same": endpoint, path id and body.
fn fingerprint(endpoint: Endpoint, request: &ApiRequest) -> String {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    context.update(endpoint.function_name().as_bytes());
    context.update(b"\n");
    context.update(request.purchase_id.as_deref().unwrap_or("").as_bytes());
    context.update(b"\n");
    context.update(&request.body);
    context
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn expiry(ttl: Duration) -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(24))
}

fn replay(stored: &StoredResponse) -> ApiResponse {
    let status = http::StatusCode::from_u16(stored.status_code).unwrap_or(http::StatusCode::OK);
    let mut response = json_response(status, stored.body.clone());
    response
        .headers_mut()
        .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    // The one header a stored response needs again: where the created purchase is.
    if status == http::StatusCode::CREATED
        && let Ok(body) = serde_json::from_str::<serde_json::Value>(&stored.body)
        && let Some(id) = body["purchaseId"].as_str()
        && let Ok(location) = HeaderValue::from_str(&format!("{BASE_PATH}/purchases/{id}"))
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// Runs `work` at most once per idempotency key (when the request has one).
pub async fn run_once<F, Fut>(
    store: &dyn IdempotencyStore,
    endpoint: Endpoint,
    caller: &Caller,
    request: &ApiRequest,
    work: F,
) -> Result<ApiResponse, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<ApiResponse, ApiError>>,
{
    let Some(client_key) = key_from(request)? else {
        return work().await;
    };
    let key = format!(
        "{}\u{1f}{}\u{1f}{client_key}",
        caller.customer_id,
        endpoint.function_name()
    );
    let claim = IdempotencyRecord {
        key: key.clone(),
        fingerprint: fingerprint(endpoint, request),
        response: None,
        expires_at: expiry(IN_FLIGHT_TTL),
    };
    if let Some(existing) = store.put_if_absent(&claim).await? {
        if existing.fingerprint != claim.fingerprint {
            return Err(ApiError::Unprocessable(
                "this Idempotency-Key was used for a different request; use a new key".into(),
            ));
        }
        return match &existing.response {
            Some(stored) => Ok(replay(stored)),
            None => Err(ApiError::Conflict(
                "a request with this Idempotency-Key is still in progress; retry shortly".into(),
            )),
        };
    }
    let response = match work().await {
        Ok(response) => response,
        Err(error) => error.into_response(&request.request_id),
    };
    if response.status().is_server_error() {
        if let Err(error) = store.remove(&key).await {
            tracing::warn!(%error, "could not free the idempotency key of a failed request");
        }
    } else {
        let stored = StoredResponse {
            status_code: response.status().as_u16(),
            body: response.body().clone(),
        };
        // The work is done; failing to remember it only means a retry
        // within the in-flight window gets a 409 and a later one runs again.
        if let Err(error) = store.complete(&key, &stored, expiry(RESPONSE_TTL)).await {
            tracing::error!(%error, "could not store the response of an idempotent request");
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::EmbeddedStore;
    use http::StatusCode;

    fn request(body: &str) -> ApiRequest {
        let mut request = ApiRequest {
            body: bytes::Bytes::copy_from_slice(body.as_bytes()),
            request_id: "r-1".into(),
            ..ApiRequest::default()
        };
        request
            .headers
            .insert(HEADER, HeaderValue::from_static("key-1"));
        request
    }

    fn created(body: &str) -> Result<ApiResponse, ApiError> {
        Ok(json_response(StatusCode::CREATED, body.to_owned()))
    }

    #[tokio::test]
    async fn a_duplicate_while_the_first_runs_is_a_conflict_and_a_5xx_frees_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let caller = Caller::new("c-1", &[]);
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (finish_tx, finish_rx) = tokio::sync::oneshot::channel::<()>();
        let first_request = request("{}");
        let first = run_once(
            &store,
            Endpoint::CreatePurchase,
            &caller,
            &first_request,
            || async {
                let _ = started_tx.send(());
                let _ = finish_rx.await;
                Err(ApiError::Unavailable {
                    retry_after_seconds: 1,
                    reason: "down".into(),
                })
            },
        );
        let second = async {
            let _ = started_rx.await;
            let result = run_once(
                &store,
                Endpoint::CreatePurchase,
                &caller,
                &request("{}"),
                || async { created("{}") },
            )
            .await;
            let _ = finish_tx.send(());
            result
        };
        let (first, second) = tokio::join!(first, second);
        assert_eq!(first.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(matches!(second, Err(ApiError::Conflict(_))), "{second:?}");
        // The failed request did nothing: its retry runs for real.
        let retry = run_once(
            &store,
            Endpoint::CreatePurchase,
            &caller,
            &request("{}"),
            || async { created(r#"{"purchaseId":"p-9"}"#) },
        )
        .await
        .unwrap();
        assert_eq!(retry.status(), StatusCode::CREATED);
        assert!(retry.headers().get(REPLAYED_HEADER).is_none());
    }

    #[tokio::test]
    async fn the_same_key_on_another_endpoint_is_another_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let caller = Caller::new("c-1", &[]);
        let same = request("{}");
        let create = run_once(&store, Endpoint::CreatePurchase, &caller, &same, || async {
            created("{}")
        });
        assert_eq!(create.await.unwrap().status(), StatusCode::CREATED);
        let cancel = run_once(&store, Endpoint::CancelPurchase, &caller, &same, || async {
            Ok(json_response(StatusCode::OK, "{}".into()))
        });
        let response = cancel.await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get(REPLAYED_HEADER).is_none());
    }
}
