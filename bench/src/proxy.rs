//! A counting HTTP proxy in front of moto (or in front of nothing): every
//! AWS API request (DynamoDB, Step Functions) is forwarded and recorded with
//! its operation (`X-Amz-Target`), arrival time, status and the time spent
//! waiting for the upstream.
//!
//! For the cost model it can also keep the bodies and, around every
//! DynamoDB write, read the written items before and after (straight from
//! the upstream, not recorded): DynamoDB bills a write by the larger of the
//! old and the new item, and a global secondary index by what changed in it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::Result;

#[derive(Debug, Clone)]
pub struct Exchange {
    /// `DynamoDB_20120810.PutItem` → `DynamoDB.PutItem`; `AWSStepFunctions.StartExecution`
    /// → `StepFunctions.StartExecution`; anything else: the path.
    pub operation: String,
    /// When the request arrived at the proxy.
    pub at: Instant,
    pub upstream: Duration,
    pub status: u16,
    /// Kept only when the proxy records bodies (the cost model sizes items).
    pub request: Option<Value>,
    pub response: Option<Value>,
    /// Items a DynamoDB write touched, before and after (cost model only).
    pub images: Vec<ItemImage>,
}

#[derive(Debug, Clone)]
pub struct ItemImage {
    pub table: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// What the proxy keeps besides counts.
#[derive(Debug, Clone, Default)]
pub enum Recording {
    #[default]
    Counts,
    /// Bodies, and the before/after images of written items of the tables
    /// whose key attributes are given (table name → key attribute names).
    Items(HashMap<String, Vec<String>>),
}

#[derive(Clone)]
pub struct CountingProxy {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Exchange>>>,
}

impl CountingProxy {
    /// Listens on 127.0.0.1 and forwards to `upstream` (`http://host:port`).
    pub async fn start(upstream: &str, recording: Recording) -> Result<CountingProxy> {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let shared = log.clone();
        let recording = Arc::new(recording);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let log = shared.clone();
                let upstream = upstream.clone();
                let recording = recording.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let log = log.clone();
                        let upstream = upstream.clone();
                        let recording = recording.clone();
                        async move { forward(&upstream, log, &recording, request).await }
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

fn operation(headers: &HeaderMap, method: &http::Method, path: &str) -> String {
    match headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
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
        None => format!("{method} {path}"),
    }
}

async fn forward(
    upstream: &str,
    log: Arc<Mutex<Vec<Exchange>>>,
    recording: &Recording,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let at = Instant::now();
    let (parts, body) = request.into_parts();
    let operation = operation(&parts.headers, &parts.method, parts.uri.path());
    let body = match body.collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return Ok(bad_gateway(format!("reading request: {e}"))),
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let keys = match recording {
        Recording::Items(keys) => Some(keys),
        Recording::Counts => None,
    };
    let request_json: Option<Value> = keys.and_then(|_| serde_json::from_slice(&body).ok());
    let touched = match (keys, &request_json) {
        (Some(keys), Some(request)) => written_items(&operation, request, keys),
        _ => Vec::new(),
    };
    let mut before = Vec::new();
    for (table, key) in &touched {
        before.push(read_item(upstream, &parts.headers, table, key).await);
    }
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
    let (status, response) = match result {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            // The body is re-framed by hyper; the upstream's framing headers no longer apply.
            parts.headers.remove(http::header::TRANSFER_ENCODING);
            parts.headers.remove(http::header::CONNECTION);
            (parts.status.as_u16(), Response::from_parts(parts, body))
        }
        // No upstream (the smoke test's dead endpoint): still counted.
        Err(e) => (502, bad_gateway_bytes(e.to_string())),
    };
    let mut images = Vec::new();
    for ((table, key), before) in touched.iter().zip(before) {
        let after = read_item(upstream, &parts.headers, table, key).await;
        images.push(ItemImage {
            table: table.clone(),
            before,
            after,
        });
    }
    let response_json = keys.and_then(|_| serde_json::from_slice(response.body()).ok());
    log.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Exchange {
            operation,
            at,
            upstream: upstream_time,
            status,
            request: request_json,
            response: response_json,
            images,
        });
    Ok(response.map(Full::new))
}

/// `(table, key)` of every item a DynamoDB write request writes.
fn written_items(
    operation: &str,
    request: &Value,
    keys: &HashMap<String, Vec<String>>,
) -> Vec<(String, Value)> {
    let key_of = |table: &str, item: &Value| -> Option<Value> {
        let names = keys.get(table)?;
        let mut key = serde_json::Map::new();
        for name in names {
            key.insert(name.clone(), item.get(name)?.clone());
        }
        Some(Value::Object(key))
    };
    let mut out = Vec::new();
    let mut push = |table: Option<&str>, key: Option<Value>| {
        if let (Some(table), Some(key)) = (table, key) {
            out.push((table.to_owned(), key));
        }
    };
    match operation {
        "DynamoDB.PutItem" => {
            let table = request["TableName"].as_str();
            push(table, table.and_then(|t| key_of(t, &request["Item"])));
        }
        "DynamoDB.UpdateItem" | "DynamoDB.DeleteItem" => {
            push(request["TableName"].as_str(), Some(request["Key"].clone()));
        }
        "DynamoDB.TransactWriteItems" => {
            for item in request["TransactItems"].as_array().into_iter().flatten() {
                if let Some(put) = item.get("Put") {
                    let table = put["TableName"].as_str();
                    push(table, table.and_then(|t| key_of(t, &put["Item"])));
                } else if let Some(part) = item.get("Update").or_else(|| item.get("Delete")) {
                    push(part["TableName"].as_str(), Some(part["Key"].clone()));
                }
            }
        }
        "DynamoDB.BatchWriteItem" => {
            for (table, requests) in request["RequestItems"].as_object().into_iter().flatten() {
                for write in requests.as_array().into_iter().flatten() {
                    if let Some(item) = write.get("PutRequest").map(|p| &p["Item"]) {
                        push(Some(table), key_of(table, item));
                    } else if let Some(key) = write.get("DeleteRequest").map(|d| &d["Key"]) {
                        push(Some(table), Some(key.clone()));
                    }
                }
            }
        }
        _ => {}
    }
    out
}

/// A strongly consistent GetItem straight to the upstream (not counted).
async fn read_item(upstream: &str, headers: &HeaderMap, table: &str, key: &Value) -> Option<Value> {
    let mut headers = headers.clone();
    headers.insert(
        "x-amz-target",
        HeaderValue::from_static("DynamoDB_20120810.GetItem"),
    );
    headers.remove(http::header::CONTENT_LENGTH);
    let body = json!({"TableName": table, "Key": key, "ConsistentRead": true}).to_string();
    let response = crate::http_client::send(
        upstream,
        http::Method::POST,
        "/",
        &headers,
        Bytes::from(body),
    )
    .await
    .ok()?;
    let value: Value = serde_json::from_slice(response.body()).ok()?;
    value.get("Item").cloned()
}

fn bad_gateway_bytes(message: String) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(message));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

fn bad_gateway(message: String) -> Response<Full<Bytes>> {
    bad_gateway_bytes(message).map(Full::new)
}
