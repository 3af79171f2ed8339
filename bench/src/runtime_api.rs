//! A minimal Lambda Runtime API (the part a function uses: next, response,
//! error, init error) on 127.0.0.1, **one listener per invocation**.
//!
//! The driver starts one with the invocation's event, starts the function
//! process with `AWS_LAMBDA_RUNTIME_API` set to its address, and reads back
//! when the first `GET /2018-06-01/runtime/invocation/next` arrived and when
//! the `POST .../response` (or `.../error`) did. The second poll is left
//! hanging, as on Lambda between invocations, until the process is killed and
//! the `RuntimeApi` dropped, which closes the listener and every connection.
//!
//! Why a listener per invocation: a process killed right after its response
//! may already have written its next poll into the socket. With one listener
//! shared by all runs, that poll can be read after the *next* run was armed
//! and take that run's event; the new process then waits forever for an
//! event that went to a dead one (the "no response within 30 s" seen once in
//! 21 cold-start runs). `bench-driver runtime-race` reproduces it with
//! [`RuntimeApi::rearm`] (the old, shared way) and shows that a fresh
//! listener per run cannot lose an event.

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
use tokio::task::{JoinHandle, JoinSet};

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
    /// The event was taken by a connection opened before the last
    /// [`RuntimeApi::rearm`], i.e. by a previous run's process.
    pub taken_by_stale_connection: bool,
}

#[derive(Default)]
struct Slot {
    /// Incremented by every arm; a connection remembers the value it was
    /// accepted under.
    generation: u64,
    event: Option<Bytes>,
    request_id: String,
    function_arn: String,
    seen: Observation,
}

pub struct RuntimeApi {
    addr: SocketAddr,
    slot: Arc<Mutex<Slot>>,
    server: JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        // Aborting the accept loop drops the listener and its JoinSet, which
        // aborts every connection task: nothing of this run outlives it.
        self.server.abort();
    }
}

impl RuntimeApi {
    /// Listens on a fresh port of 127.0.0.1, armed with `event` for `function_name`.
    pub async fn start(function_name: &str, event: Bytes) -> Result<RuntimeApi> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let slot = Arc::new(Mutex::new(Slot::default()));
        let shared = slot.clone();
        let server = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let slot = shared.clone();
                let generation = lock(&slot).generation;
                // Finished connection tasks are reaped as new ones come.
                while connections.try_join_next().is_some() {}
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let slot = slot.clone();
                        async move { handle(slot, generation, request).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let api = RuntimeApi { addr, slot, server };
        api.rearm(function_name, event);
        Ok(api)
    }

    /// `AWS_LAMBDA_RUNTIME_API`'s value.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Arms the same listener again for another run. Only the race
    /// reproduction does this: it is how runs shared one listener before.
    pub fn rearm(&self, function_name: &str, event: Bytes) {
        let mut slot = lock(&self.slot);
        let generation = slot.generation + 1;
        *slot = Slot {
            generation,
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
    generation: u64,
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
                    slot.seen.taken_by_stale_connection = generation < slot.generation;
                    Some((event, slot.request_id.clone(), slot.function_arn.clone()))
                }
                None => None,
            }
        };
        let Some((event, request_id, arn)) = armed else {
            // Between invocations: Lambda freezes the sandbox; here the
            // poll waits until the process is killed and the listener dropped.
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const POLL: &[u8] = b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nhost: x\r\n\r\n";
    const RESPONSE: &[u8] = b"POST /2018-06-01/runtime/invocation/1/response HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}";

    /// Sends `request` on `stream` and returns the start of the answer.
    async fn exchange(stream: &mut TcpStream, request: &[u8]) -> String {
        stream.write_all(request).await.unwrap();
        let mut buffer = vec![0u8; 4096];
        let n = stream.read(&mut buffer).await.unwrap();
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    }

    /// What a function process does: poll, answer, then (on the same
    /// keep-alive connection) poll again.
    async fn poll_and_respond(addr: &str) -> (TcpStream, String) {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let event = exchange(&mut stream, POLL).await;
        assert!(
            exchange(&mut stream, RESPONSE)
                .await
                .starts_with("HTTP/1.1 202")
        );
        (stream, event)
    }

    /// The old way: one listener, re-armed per run. The previous process's
    /// last poll, read after the re-arm, takes the next run's event.
    #[tokio::test]
    async fn a_late_poll_on_a_shared_listener_takes_the_next_runs_event() {
        let api = RuntimeApi::start("first", Bytes::from_static(b"{\"run\":1}"))
            .await
            .unwrap();
        let (mut old, event) = poll_and_respond(&api.address()).await;
        assert!(event.contains("{\"run\":1}"));
        api.rearm("second", Bytes::from_static(b"{\"run\":2}"));
        assert!(exchange(&mut old, POLL).await.contains("{\"run\":2}"));
        let seen = api.observation();
        assert!(seen.first_poll.is_some() && seen.taken_by_stale_connection);
    }

    /// A listener per run: the same late poll reaches the previous run's
    /// listener (or nothing); the next run keeps its event for its process.
    #[tokio::test]
    async fn a_late_poll_cannot_take_the_event_of_the_next_runs_listener() {
        let first = RuntimeApi::start("first", Bytes::from_static(b"{\"run\":1}"))
            .await
            .unwrap();
        let (mut old, _) = poll_and_respond(&first.address()).await;
        drop(first);
        let second = RuntimeApi::start("second", Bytes::from_static(b"{\"run\":2}"))
            .await
            .unwrap();
        let _ = old.write_all(POLL).await;
        let mut fresh = TcpStream::connect(second.address()).await.unwrap();
        assert!(exchange(&mut fresh, POLL).await.contains("{\"run\":2}"));
        assert!(!second.observation().taken_by_stale_connection);
    }
}
