//! A counting HTTP proxy in front of moto: every AWS API request (DynamoDB,
//! Step Functions) is forwarded and recorded with its operation
//! (`X-Amz-Target`), sizes and the time spent waiting for moto.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::Result;

#[derive(Debug, Clone)]
pub struct Exchange {
    /// `DynamoDB_20120810.PutItem` → `DynamoDB.PutItem`; `AWSStepFunctions.StartExecution`
    /// → `StepFunctions.StartExecution`; anything else: the path.
    pub operation: String,
    pub upstream: Duration,
    pub status: u16,
    /// Kept only when the proxy records bodies (the cost model sizes items).
    pub request: Option<Bytes>,
    pub response: Option<Bytes>,
}

#[derive(Clone)]
pub struct CountingProxy {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Exchange>>>,
}

impl CountingProxy {
    /// Listens on 127.0.0.1 and forwards to `upstream` (`http://host:port`).
    pub async fn start(upstream: &str, record_bodies: bool) -> Result<CountingProxy> {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let shared = log.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let log = shared.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let log = log.clone();
                        let upstream = upstream.clone();
                        async move { forward(&upstream, log, record_bodies, request).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(CountingProxy { addr, log })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything recorded so far, and a fresh start.
    pub fn take(&self) -> Vec<Exchange> {
        std::mem::take(&mut *self.log.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

fn operation(request: &Request<Incoming>) -> String {
    match request
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
    {
        Some(target) => {
            let (service, op) = target.split_once('.').unwrap_or(("", target));
            let service = if service.starts_with("DynamoDB") {
                "DynamoDB"
            } else if service.starts_with("AWSStepFunctions") {
                "StepFunctions"
            } else {
                service
            };
            format!("{service}.{op}")
        }
        None => format!("{} {}", request.method(), request.uri().path()),
    }
}

async fn forward(
    upstream: &str,
    log: Arc<Mutex<Vec<Exchange>>>,
    record_bodies: bool,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let operation = operation(&request);
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return Ok(bad_gateway(format!("reading request: {e}"))),
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let started = Instant::now();
    let result = crate::http_client::send(
        upstream,
        parts.method.clone(),
        &path,
        &parts.headers,
        body.clone(),
    )
    .await;
    let upstream_time = started.elapsed();
    let response = match result {
        Ok(response) => response,
        Err(e) => return Ok(bad_gateway(e.to_string())),
    };
    let (mut parts, response_body) = response.into_parts();
    // The body is re-framed by hyper; the upstream's framing headers no longer apply.
    parts.headers.remove(http::header::TRANSFER_ENCODING);
    parts.headers.remove(http::header::CONNECTION);
    log.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Exchange {
            operation,
            upstream: upstream_time,
            status: parts.status.as_u16(),
            request: record_bodies.then(|| body.clone()),
            response: record_bodies.then(|| response_body.clone()),
        });
    Ok(Response::from_parts(parts, Full::new(response_body)))
}

fn bad_gateway(message: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(message)));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}
