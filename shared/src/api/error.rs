//! The API's errors and their one mapping to HTTP.
//!
//! Every handler returns `Result<_, ApiError>`; `ApiError::into_response` is
//! the only place that decides status codes and error bodies:
//! `{"error": CODE, "message": ..., "details": [{"field": ..., "problem": ...}]}`.
//! The domain's, the stores', the workflow's and auth's errors convert into
//! it here, each in one place.

use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

use super::request::{ApiRequest, ApiResponse};
use crate::auth::AuthError;
use crate::domain::{DomainError, FieldProblem};
use crate::ports::store::StoreError;
use crate::ports::workflow::WorkflowError;
use crate::service::{NotifyError, TransitionError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or breaks a validation rule. Nothing was stored.
    #[error("the request is invalid")]
    Validation(Vec<FieldProblem>),
    /// No or unusable credentials. The reason is logged, never sent.
    #[error("authentication required")]
    Unauthorized { reason: String },
    /// Valid credentials without the needed scope. The reason is logged.
    #[error("insufficient scope")]
    Forbidden { reason: String },
    #[error("{0} not found")]
    NotFound(String),
    /// The change is not allowed in the resource's current state.
    #[error("{0}")]
    Conflict(String),
    /// `If-Match` did not match the current version.
    #[error("{0}")]
    PreconditionFailed(String),
    /// An `Idempotency-Key` was reused with a different request.
    #[error("{0}")]
    Unprocessable(String),
    /// A dependency is throttling or down; the client may retry.
    #[error("service temporarily unavailable")]
    Unavailable {
        retry_after_seconds: u32,
        reason: String,
    },
    /// A bug or an unexpected dependency failure. The cause is logged, never sent.
    #[error("an unexpected error occurred")]
    Internal(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
    details: &'a [FieldProblem],
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ApiError {
        ApiError::Validation(vec![FieldProblem::new(field, problem)])
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, machine-readable `error` code of the body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Validation(_) => "VALIDATION_FAILED",
            ApiError::Unauthorized { .. } => "UNAUTHORIZED",
            ApiError::Forbidden { .. } => "FORBIDDEN",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::Conflict(_) => "CONFLICT",
            ApiError::PreconditionFailed(_) => "PRECONDITION_FAILED",
            ApiError::Unprocessable(_) => "IDEMPOTENCY_KEY_REUSED",
            ApiError::Unavailable { .. } => "SERVICE_UNAVAILABLE",
            ApiError::Internal(_) => "INTERNAL_ERROR",
        }
    }

    /// Renders the error. Internal causes and auth reasons are logged here,
    /// with the request id, and never reach the client.
    pub fn into_response(self, request_id: &str) -> http::Response<String> {
        let status = self.status();
        let message = match &self {
            ApiError::Validation(problems) => match problems.as_slice() {
                [one] => format!("invalid request: {}: {}", one.field, one.problem),
                _ => format!("invalid request: {} problems", problems.len()),
            },
            ApiError::Unauthorized { reason } => {
                tracing::info!(request_id, reason = %reason, "request not authenticated");
                "a valid bearer token is required".to_owned()
            }
            ApiError::Forbidden { reason } => {
                tracing::info!(request_id, reason = %reason, "request not authorized");
                "the token does not grant this operation".to_owned()
            }
            ApiError::Unavailable { reason, .. } => {
                tracing::warn!(request_id, reason = %reason, "dependency unavailable");
                self.to_string()
            }
            ApiError::Internal(cause) => {
                tracing::error!(request_id, cause = %cause, "internal error");
                format!("an unexpected error occurred (request id {request_id})")
            }
            other => other.to_string(),
        };
        let details: &[FieldProblem] = match &self {
            ApiError::Validation(problems) => problems,
            _ => &[],
        };
        let body = ErrorBody {
            error: self.code(),
            message,
            details,
        };
        let json = serde_json::to_string(&body).unwrap_or_else(|_| {
            // Serialising a struct of strings cannot fail; keep a body anyway.
            r#"{"error":"INTERNAL_ERROR","message":"an unexpected error occurred","details":[]}"#
                .to_owned()
        });
        let mut response = json_response(status, json);
        match &self {
            ApiError::Unauthorized { .. } => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="purchase-orchestrator""#),
                );
            }
            ApiError::Forbidden { .. } => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        r#"Bearer realm="purchase-orchestrator", error="insufficient_scope""#,
                    ),
                );
            }
            ApiError::Unavailable {
                retry_after_seconds,
                ..
            } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_seconds));
            }
            _ => {}
        }
        response
    }
}

/// A JSON response with the given status.
pub fn json_response(status: StatusCode, body: String) -> http::Response<String> {
    let mut response = http::Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Runs a handler body and renders its error, if any, in the one format.
pub async fn respond<F>(request: &ApiRequest, work: F) -> ApiResponse
where
    F: std::future::Future<Output = Result<ApiResponse, ApiError>>,
{
    match work.await {
        Ok(response) => response,
        Err(error) => error.into_response(&request.request_id),
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> ApiError {
        match error {
            DomainError::Invalid(problems) => ApiError::Validation(problems),
            DomainError::NotAllowed(reason) => ApiError::Conflict(reason),
            DomainError::Stopped(_) | DomainError::OnHold(_) | DomainError::Rejected(_) => {
                ApiError::Conflict(error.to_string())
            }
            // Handlers judge again on `Stale`; one that still surfaces lost
            // the race too often.
            DomainError::Stale => ApiError::Conflict(
                "the purchase changed concurrently too often; retry the request".into(),
            ),
            DomainError::Outdated { .. } => ApiError::PreconditionFailed(error.to_string()),
            DomainError::Inconsistent(cause) => ApiError::Internal(cause),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::NotFound(what) => ApiError::NotFound(what),
            StoreError::VersionConflict => ApiError::Conflict(
                "the purchase changed concurrently too often; retry the request".into(),
            ),
            StoreError::AlreadyExists(what) => ApiError::Conflict(format!("{what} already exists")),
            // Stock is only taken by the workflow; here it is a bug.
            StoreError::OutOfStock { .. } => ApiError::Internal(error.to_string()),
            StoreError::InvalidPageToken => {
                ApiError::invalid("nextToken", "is not a token returned by a previous page")
            }
            StoreError::Unavailable(reason) => ApiError::Unavailable {
                retry_after_seconds: 1,
                reason,
            },
            StoreError::Internal(cause) => ApiError::Internal(cause),
        }
    }
}

impl From<TransitionError> for ApiError {
    fn from(error: TransitionError) -> ApiError {
        match error {
            TransitionError::Domain(error) => error.into(),
            TransitionError::Store(error) => error.into(),
        }
    }
}

impl From<WorkflowError> for ApiError {
    fn from(error: WorkflowError) -> ApiError {
        match error {
            WorkflowError::Unavailable(reason) => ApiError::Unavailable {
                retry_after_seconds: 2,
                reason,
            },
            WorkflowError::NotAllowed(reason) => ApiError::Conflict(reason),
            WorkflowError::TaskGone(cause) | WorkflowError::Failed(cause) => {
                ApiError::Internal(cause)
            }
        }
    }
}

impl From<NotifyError> for ApiError {
    fn from(error: NotifyError) -> ApiError {
        match error {
            NotifyError::Workflow(error) => error.into(),
            NotifyError::Transition(error) => error.into(),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> ApiError {
        match error {
            AuthError::Unauthorized { reason } => ApiError::Unauthorized { reason },
            AuthError::Forbidden { reason } => ApiError::Forbidden { reason },
            AuthError::Unavailable {
                retry_after_seconds,
                reason,
            } => ApiError::Unavailable {
                retry_after_seconds,
                reason,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(response: &http::Response<String>) -> serde_json::Value {
        serde_json::from_str(response.body()).unwrap()
    }

    #[test]
    fn validation_error_names_the_field() {
        let response =
            ApiError::invalid("products[0].quantity", "must be at least 1").into_response("r-1");
        assert_eq!(response.status(), 400);
        let body = body(&response);
        assert_eq!(body["error"], "VALIDATION_FAILED");
        assert_eq!(body["details"][0]["field"], "products[0].quantity");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("products[0].quantity")
        );
    }

    #[test]
    fn internal_error_does_not_leak_its_cause() {
        let response =
            ApiError::Internal("redb: table corrupted at page 7".into()).into_response("req-42");
        assert_eq!(response.status(), 500);
        let text = response.body();
        assert!(!text.contains("redb"), "{text}");
        assert!(text.contains("req-42"));
    }

    #[test]
    fn unauthorized_sets_www_authenticate_and_hides_reason() {
        let response = ApiError::Unauthorized {
            reason: "ExpiredSignature".into(),
        }
        .into_response("r");
        assert_eq!(response.status(), 401);
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
        assert!(!response.body().contains("Expired"));
    }

    #[test]
    fn unavailable_sets_retry_after() {
        let response = ApiError::Unavailable {
            retry_after_seconds: 2,
            reason: "throttled".into(),
        }
        .into_response("r");
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }
}
