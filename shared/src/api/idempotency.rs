//! `Idempotency-Key` for the endpoints that act (`POST /purchases`, cancel,
//! redrive), with the semantics of Stripe's keys and the Powertools
//! idempotency utility:
//!
//! - the same key and the same request within 24 h gets the first *final*
//!   answer again (same status, same body, same `purchaseId`), without
//!   running twice;
//! - the same key with a different request is a 422;
//! - while the first request with a key is still running, a second one is a 409.
//!
//! Only final answers are kept (invariant 5 of the lifecycle): 2xx and the
//! 4xx that the same request always gets (400, 403, 404, 422). Anything else
//! (a 409 that says "retry", a 412, a 5xx) releases the key, so the retry
//! runs again — and a create's retry continues with the purchase id the
//! first attempt chose, so a create that stored its purchase and then failed
//! is never made twice.
//!
//! Keys are scoped to the caller and the endpoint, so two customers (or a
//! create and a cancel) can never collide.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use http::{HeaderValue, header};

use super::error::{ApiError, json_response};
use super::request::{ApiRequest, ApiResponse};
use crate::auth::Caller;
use crate::ports::store::{Claim, Completion, IdempotencyRecord, IdempotencyStore, StoredResponse};

pub const HEADER: &str = "idempotency-key";
/// How long a final answer is replayed for a retry with the same key (and
/// how long a released key remembers its resource).
pub const RESPONSE_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a claimed key stays in flight before a retry may take it over:
/// longer than any API function may run (template.yaml gives them 10 s; the
/// local server's requests are as short), short enough that a request that
/// died holding the key does not make its retries wait long.
pub const IN_FLIGHT_TTL: Duration = Duration::from_secs(15);
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
fn fingerprint(scope: &str, request: &ApiRequest) -> String {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    context.update(scope.as_bytes());
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

/// Whether the same request would always get this answer again.
pub fn is_final(status: http::StatusCode) -> bool {
    status.is_success() || matches!(status.as_u16(), 400 | 403 | 404 | 422)
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
        && let Ok(location) = HeaderValue::from_str(&location_of(id))
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// Where a created purchase is, relative to the request's own path
/// (`.../purchases` → `.../purchases/{id}`), so it resolves under any stage
/// prefix API Gateway puts in front.
pub fn location_of(purchase_id: &str) -> String {
    format!("purchases/{purchase_id}")
}

/// One attempt of a request under [`run_once`], as the work sees it: the
/// resource to make or continue with, and the key its answer is recorded
/// under.
pub struct RequestAttempt {
    /// The id of what the request makes: the one the caller proposed, or the
    /// one an earlier attempt with the same key chose and did not finish.
    pub resource_id: Option<String>,
    key: Option<String>,
    recorded: Arc<Mutex<Option<StoredResponse>>>,
}

impl RequestAttempt {
    /// The completion that records `response` as the request's final
    /// answer, for work that writes it in the same atomic write as what it
    /// makes (a create: one write and one round trip fewer). `None` when the
    /// request has no key.
    pub fn completion(&self, response: &ApiResponse) -> Option<Completion> {
        self.key.as_ref().map(|key| Completion {
            key: key.clone(),
            response: stored(response),
            expires_at: expiry(RESPONSE_TTL),
        })
    }

    /// The work's write landed with `completion`: if the work answers
    /// exactly that, nothing is left to record.
    pub fn recorded(&self, completion: &Completion) {
        *self.recorded.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(completion.response.clone());
    }
}

fn stored(response: &ApiResponse) -> StoredResponse {
    StoredResponse {
        status_code: response.status().as_u16(),
        body: response.body().clone(),
    }
}

/// Runs `work` at most once per idempotency key (when the request has one).
///
/// `resource_id` is the id of what the request would create (a new purchase
/// id), or `None`. `work` receives a [`RequestAttempt`]: the id to use (`resource_id`,
/// or the one an earlier attempt with the same key chose and did not
/// finish), and the means to record its answer in its own write.
pub async fn run_once<F, Fut>(
    store: &dyn IdempotencyStore,
    scope: &str,
    caller: &Caller,
    request: &ApiRequest,
    resource_id: Option<String>,
    work: F,
) -> Result<ApiResponse, ApiError>
where
    F: FnOnce(RequestAttempt) -> Fut,
    Fut: Future<Output = Result<ApiResponse, ApiError>>,
{
    let recorded = Arc::new(Mutex::new(None));
    let Some(client_key) = key_from(request)? else {
        return work(RequestAttempt {
            resource_id,
            key: None,
            recorded,
        })
        .await;
    };
    let key = format!("{}\u{1f}{scope}\u{1f}{client_key}", caller.customer_id);
    let claim = IdempotencyRecord {
        key: key.clone(),
        fingerprint: fingerprint(scope, request),
        resource_id,
        response: None,
        in_flight: true,
        expires_at: expiry(IN_FLIGHT_TTL),
    };
    let claimed = match store.claim(&claim).await? {
        Claim::Claimed(record) => record,
        Claim::Taken(existing) => {
            if existing.fingerprint != claim.fingerprint {
                return Err(ApiError::Unprocessable(
                    "this Idempotency-Key was used for a different request; use a new key".into(),
                ));
            }
            return match &existing.response {
                Some(stored) => Ok(replay(stored)),
                None => Err(ApiError::Conflict(
                    "a request with this Idempotency-Key is still in progress; retry shortly"
                        .into(),
                )),
            };
        }
    };
    let attempt = RequestAttempt {
        resource_id: claimed.resource_id.clone(),
        key: Some(key.clone()),
        recorded: Arc::clone(&recorded),
    };
    let response = match work(attempt).await {
        Ok(response) => response,
        Err(error) => error.into_response(&request.request_id),
    };
    let answer = stored(&response);
    let already = recorded
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if is_final(response.status()) {
        if already.as_ref() == Some(&answer) {
            return Ok(response); // recorded with the work's own write
        }
        let completion = Completion {
            key,
            response: answer,
            expires_at: expiry(RESPONSE_TTL),
        };
        // The work is done; failing to remember it only means a retry
        // within the in-flight window gets a 409 and a later one runs again
        // (on the same resource).
        if let Err(error) = store.complete(&completion).await {
            tracing::error!(request_id = %request.request_id, %error, "could not store the response of an idempotent request");
        }
    } else if let Err(error) = store.release(&key, expiry(RESPONSE_TTL)).await {
        // Also undoes an answer the work recorded and then did not give.
        tracing::warn!(request_id = %request.request_id, %error, "could not release the idempotency key of an unfinished request");
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::embedded::EmbeddedStore;
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

    fn answer(status: StatusCode, body: &str) -> Result<ApiResponse, ApiError> {
        Ok(json_response(status, body.to_owned()))
    }

    #[tokio::test]
    async fn a_duplicate_while_the_first_runs_is_a_conflict_and_a_5xx_releases_the_key() {
        let store = EmbeddedStore::in_memory().unwrap();
        let caller = Caller::new("c-1", &[]);
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (finish_tx, finish_rx) = tokio::sync::oneshot::channel::<()>();
        let first_request = request("{}");
        let first = run_once(
            &store,
            "create-purchase",
            &caller,
            &first_request,
            Some("p-first".into()),
            |attempt: RequestAttempt| async move {
                assert_eq!(attempt.resource_id.as_deref(), Some("p-first"));
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
                "create-purchase",
                &caller,
                &request("{}"),
                Some("p-second".into()),
                |_| async { answer(StatusCode::CREATED, "{}") },
            )
            .await;
            let _ = finish_tx.send(());
            result
        };
        let (first, second) = tokio::join!(first, second);
        assert_eq!(first.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(matches!(second, Err(ApiError::Conflict(_))), "{second:?}");
        // The failed request gave no final answer: its retry runs for real,
        // and continues with the purchase id the first attempt chose.
        let retry = run_once(
            &store,
            "create-purchase",
            &caller,
            &request("{}"),
            Some("p-third".into()),
            |attempt: RequestAttempt| async move {
                assert_eq!(attempt.resource_id.as_deref(), Some("p-first"));
                answer(StatusCode::CREATED, r#"{"purchaseId":"p-first"}"#)
            },
        )
        .await
        .unwrap();
        assert_eq!(retry.status(), StatusCode::CREATED);
        assert!(retry.headers().get(REPLAYED_HEADER).is_none());
        // Now final: replayed.
        let again = run_once(
            &store,
            "create-purchase",
            &caller,
            &request("{}"),
            None,
            |_| async { panic!("a final answer must be replayed, not run again") },
        )
        .await
        .unwrap();
        assert_eq!(again.headers()[REPLAYED_HEADER], "true");
        assert_eq!(again.headers()[header::LOCATION], "purchases/p-first");
    }

    #[tokio::test]
    async fn only_final_answers_are_replayed() {
        let store = EmbeddedStore::in_memory().unwrap();
        let caller = Caller::new("c-1", &[]);
        for (status, replayed) in [
            (StatusCode::CONFLICT, false),
            (StatusCode::PRECONDITION_FAILED, false),
            (StatusCode::SERVICE_UNAVAILABLE, false),
            (StatusCode::INTERNAL_SERVER_ERROR, false),
            (StatusCode::NOT_FOUND, true),
            (StatusCode::BAD_REQUEST, true),
            (StatusCode::OK, true),
        ] {
            let scope = format!("scope-{status}");
            let first = run_once(
                &store,
                &scope,
                &caller,
                &request("{}"),
                None,
                |_| async move { answer(status, "{}") },
            )
            .await
            .unwrap();
            assert_eq!(first.status(), status);
            let runs = std::sync::atomic::AtomicU32::new(0);
            let second = run_once(&store, &scope, &caller, &request("{}"), None, |_| async {
                runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                answer(StatusCode::OK, "{}")
            })
            .await
            .unwrap();
            let ran_again = runs.load(std::sync::atomic::Ordering::SeqCst) == 1;
            assert_eq!(!ran_again, replayed, "{status}");
            assert_eq!(
                second.headers().contains_key(REPLAYED_HEADER),
                replayed,
                "{status}"
            );
        }
    }

    #[tokio::test]
    async fn the_same_key_on_another_endpoint_or_body_is_another_request() {
        let store = EmbeddedStore::in_memory().unwrap();
        let caller = Caller::new("c-1", &[]);
        let same = request("{}");
        let create = run_once(&store, "create-purchase", &caller, &same, None, |_| async {
            answer(StatusCode::CREATED, "{}")
        });
        assert_eq!(create.await.unwrap().status(), StatusCode::CREATED);
        let cancel = run_once(&store, "cancel-purchase", &caller, &same, None, |_| async {
            answer(StatusCode::OK, "{}")
        });
        let response = cancel.await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get(REPLAYED_HEADER).is_none());
        let other = request(r#"{"x":1}"#);
        let other_body = run_once(
            &store,
            "create-purchase",
            &caller,
            &other,
            None,
            |_| async { answer(StatusCode::CREATED, "{}") },
        );
        assert!(matches!(other_body.await, Err(ApiError::Unprocessable(_))));
    }
}
