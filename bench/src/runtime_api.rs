//! A minimal Lambda Runtime API (the part a function uses: next, response,
//! error, init error) on 127.0.0.1, one invocation per run.
//!
//! The driver arms it with an event, starts the function process and reads
//! back when the first `GET /2018-06-01/runtime/invocation/next` arrived and
//! when the `POST .../response` (or `.../error`) did. The second poll is
//! left hanging, as on Lambda between invocations, until the process is killed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::Result;

const NEXT: &str = "/2018-06-01/runtime/invocation/next";
const INVOCATION: &str = "/2018-06-01/runtime/invocation/";
const INIT_ERROR: &str = "/2018-06-01/runtime/init/error";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    /// `POST /runtime/invocation/{id}/response`
    Response,
    /// `POST /runtime/invocation/{id}/error`
    Error,
    /// `POST /runtime/init/error`
    InitError,
}

/// What one run saw.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub first_poll: Option<Instant>,
    pub done: Option<Instant>,
    pub outcome: Option<(OutcomeKind, String)>,
}

#[derive(Default)]
struct Slot {
    event: Option<Bytes>,
    request_id: String,
    function_arn: String,
    seen: Observation,
}

#[derive(Clone)]
pub struct RuntimeApi {
    addr: SocketAddr,
    slot: Arc<Mutex<Slot>>,
}

impl RuntimeApi {
    pub async fn start() -> Result<RuntimeApi> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let slot = Arc::new(Mutex::new(Slot::default()));
        let shared = slot.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let slot = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let slot = slot.clone();
                        async move { handle(slot, request).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(RuntimeApi { addr, slot })
    }

    /// `AWS_LAMBDA_RUNTIME_API`'s value.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Arms the next run: the first poll gets `event`.
    pub fn arm(&self, function_name: &str, event: Bytes) {
        let mut slot = lock(&self.slot);
        *slot = Slot {
            event: Some(event),
            request_id: uuid::Uuid::now_v7().to_string(),
            function_arn: format!("arn:aws:lambda:us-east-1:123456789012:function:{function_name}"),
            seen: Observation::default(),
        };
    }

    pub fn observation(&self) -> Observation {
        lock(&self.slot).seen.clone()
    }
}

fn lock(slot: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn reply(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}

async fn handle(
    slot: Arc<Mutex<Slot>>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let now = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    if method == Method::GET && path == NEXT {
        let armed = {
            let mut slot = lock(&slot);
            match slot.event.take() {
                Some(event) => {
                    slot.seen.first_poll = Some(now);
                    Some((event, slot.request_id.clone(), slot.function_arn.clone()))
                }
                None => None,
            }
        };
        let Some((event, request_id, arn)) = armed else {
            // Between invocations: Lambda freezes the sandbox; here the
            // poll waits until the driver kills the process.
            std::future::pending::<()>().await;
            return Ok(reply(StatusCode::INTERNAL_SERVER_ERROR, ""));
        };
        let deadline = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() + 60_000)
            .unwrap_or_default();
        let mut response = Response::new(Full::new(event));
        let headers = response.headers_mut();
        let value = |text: String| {
            http::HeaderValue::try_from(text).unwrap_or(http::HeaderValue::from_static(""))
        };
        headers.insert("lambda-runtime-aws-request-id", value(request_id));
        headers.insert("lambda-runtime-deadline-ms", value(deadline.to_string()));
        headers.insert("lambda-runtime-invoked-function-arn", value(arn));
        headers.insert(
            "lambda-runtime-trace-id",
            http::HeaderValue::from_static(
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0",
            ),
        );
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        return Ok(response);
    }
    let kind = if method == Method::POST && path == INIT_ERROR {
        Some(OutcomeKind::InitError)
    } else if method == Method::POST && path.starts_with(INVOCATION) && path.ends_with("/response")
    {
        Some(OutcomeKind::Response)
    } else if method == Method::POST && path.starts_with(INVOCATION) && path.ends_with("/error") {
        Some(OutcomeKind::Error)
    } else {
        None
    };
    let Some(kind) = kind else {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            r#"{"errorMessage":"not found"}"#,
        ));
    };
    // The timestamp is the request's arrival: the body is read afterwards.
    let body = match request.into_body().collect().await {
        Ok(body) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        Err(e) => format!("<body not read: {e}>"),
    };
    {
        let mut slot = lock(&slot);
        if slot.seen.done.is_none() {
            slot.seen.done = Some(now);
            slot.seen.outcome = Some((kind, body));
        }
    }
    Ok(reply(StatusCode::ACCEPTED, r#"{"status":"OK"}"#))
}
