//! One instance's Lambda Runtime API (`AWS_LAMBDA_RUNTIME_API`): the part a
//! function process talks to. `GET /runtime/invocation/next` waits for the
//! instance to hand it an event; `POST .../{id}/response`, `.../{id}/error`
//! and `/runtime/init/error` report back. Every request is passed to the
//! instance ([`super::instance`]), which decides; this file is only HTTP.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

/// Lambda's limit on a synchronous invocation's response payload.
pub const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;

/// An event handed to the process by `/next`.
pub struct NextEvent {
    pub request_id: String,
    pub deadline_ms: u64,
    pub function_arn: String,
    pub trace_id: String,
    pub payload: Bytes,
}

/// What the process said about an invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Reported {
    Response(Bytes),
    /// The error document as posted (`{"errorType", "errorMessage"}`), and
    /// the `Lambda-Runtime-Function-Error-Type` header if any.
    Error {
        body: Bytes,
        error_type: Option<String>,
    },
}

/// The instance's ends of its Runtime API.
pub struct RuntimeChannels {
    /// A `/next` poll waiting for an event.
    pub polls: mpsc::Receiver<oneshot::Sender<NextEvent>>,
    /// `(request id, report)` from `/response` and `/error`.
    pub reports: mpsc::Receiver<(String, Reported)>,
    /// The body of `/runtime/init/error`, if the process posted one.
    pub init_error: Arc<Mutex<Option<String>>>,
}

#[derive(Clone)]
struct ApiState {
    polls: mpsc::Sender<oneshot::Sender<NextEvent>>,
    reports: mpsc::Sender<(String, Reported)>,
    init_error: Arc<Mutex<Option<String>>>,
}

/// A Runtime API served on 127.0.0.1; stops when dropped.
pub struct RuntimeApi {
    pub address: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl RuntimeApi {
    pub async fn start() -> std::io::Result<(RuntimeApi, RuntimeChannels)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (polls_tx, polls) = mpsc::channel(1);
        let (reports_tx, reports) = mpsc::channel(4);
        let init_error = Arc::new(Mutex::new(None));
        let state = ApiState {
            polls: polls_tx,
            reports: reports_tx,
            init_error: init_error.clone(),
        };
        let router = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{request_id}/response",
                post(response),
            )
            .route(
                "/2018-06-01/runtime/invocation/{request_id}/error",
                post(error),
            )
            .route("/2018-06-01/runtime/init/error", post(init_error_report))
            .with_state(state);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok((
            RuntimeApi { address, server },
            RuntimeChannels {
                polls,
                reports,
                init_error,
            },
        ))
    }
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        [("content-type", "application/json")],
        r#"{"status":"OK"}"#,
    )
        .into_response()
}

async fn next(State(state): State<ApiState>) -> Response {
    let (event_tx, event_rx) = oneshot::channel();
    if state.polls.send(event_tx).await.is_err() {
        return StatusCode::GONE.into_response();
    }
    let Ok(event) = event_rx.await else {
        // The instance is going away (killed or shut down): nothing more.
        return StatusCode::GONE.into_response();
    };
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    put("lambda-runtime-aws-request-id", &event.request_id);
    put("lambda-runtime-deadline-ms", &event.deadline_ms.to_string());
    put("lambda-runtime-invoked-function-arn", &event.function_arn);
    put("lambda-runtime-trace-id", &event.trace_id);
    put("content-type", "application/json");
    (StatusCode::OK, headers, event.payload).into_response()
}

async fn read(body: Body) -> Option<Bytes> {
    // One byte over the limit is enough to know it is too large.
    axum::body::to_bytes(body, MAX_RESPONSE_BYTES + 1)
        .await
        .ok()
}

async fn response(
    State(state): State<ApiState>,
    Path(request_id): Path<String>,
    body: Body,
) -> Response {
    let report = match read(body).await {
        Some(bytes) if bytes.len() <= MAX_RESPONSE_BYTES => Reported::Response(bytes),
        _ => Reported::Error {
            body: Bytes::from(
                serde_json::json!({
                    "errorType": "Function.ResponseSizeTooLarge",
                    "errorMessage": format!(
                        "Response payload size exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes)."
                    ),
                })
                .to_string(),
            ),
            error_type: None,
        },
    };
    let _ = state.reports.send((request_id, report)).await;
    accepted()
}

async fn error(
    State(state): State<ApiState>,
    Path(request_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = read(body).await.unwrap_or_default();
    let error_type = headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let _ = state
        .reports
        .send((request_id, Reported::Error { body, error_type }))
        .await;
    accepted()
}

async fn init_error_report(State(state): State<ApiState>, body: Body) -> Response {
    let body = read(body).await.unwrap_or_default();
    *state
        .init_error
        .lock()
        .unwrap_or_else(PoisonError::into_inner) =
        Some(String::from_utf8_lossy(&body).into_owned());
    accepted()
}
