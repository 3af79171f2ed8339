//! The Lambda service: the Invoke API (`POST
//! /2015-03-31/functions/{name}/invocations`) in front of pools of function
//! processes, the real debug binaries, each with the environment the
//! template gives it.
//!
//! - [`runtime_api`]: the Runtime API each process polls;
//! - [`instance`]: one process, one invocation at a time, killed past its
//!   `Timeout`;
//! - this file: the pools (instances started on demand, up to a limit per
//!   function; invocations wait for a free one), the Invoke API and its
//!   errors as Lambda words them;
//! - [`client`]: what Step Functions and the API Gateway shim call it with.

pub mod client;
mod instance;
mod runtime_api;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::template::Function;

/// Lambda's limit on a synchronous invocation's request payload.
pub const MAX_REQUEST_BYTES: usize = 6 * 1024 * 1024;

/// How one function is run.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    pub function: Function,
    /// The binary (`<target>/debug/<Metadata.BuildProperties.Binary>`).
    pub program: PathBuf,
    /// The process's whole environment, but for the Runtime API's address.
    pub environment: BTreeMap<String, String>,
    /// Instances at most (each serves one invocation at a time).
    pub max_instances: usize,
}

impl FunctionSpec {
    fn describe(&self) -> String {
        format!(
            "function {} ({}, binary {})",
            self.function.logical_id, self.function.name, self.function.binary
        )
    }
}

/// How an invocation ended, as the Invoke API answers it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The function's response payload.
    Response(Bytes),
    /// A function error (`X-Amz-Function-Error: Unhandled`): the document
    /// `{"errorType", "errorMessage"}`.
    FunctionError(Bytes),
}

/// A service error, as the Invoke API answers it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error_type}: {message}")]
pub struct ServiceError {
    pub status: u16,
    pub error_type: &'static str,
    pub message: String,
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let kind = if status.is_client_error() {
            "User"
        } else {
            "Service"
        };
        (
            status,
            [
                ("x-amzn-errortype", self.error_type),
                ("content-type", "application/json"),
            ],
            json!({ "Type": kind, "message": self.message }).to_string(),
        )
            .into_response()
    }
}

struct Pending {
    request_id: String,
    payload: Bytes,
    reply: oneshot::Sender<Outcome>,
}

#[derive(Default)]
struct Counts {
    /// Invocations queued and not taken by an instance.
    waiting: usize,
    /// Instances waiting for an invocation.
    idle: usize,
    /// Instances alive (starting, idle or busy).
    live: usize,
}

struct FunctionPool {
    spec: FunctionSpec,
    queue: mpsc::UnboundedSender<Pending>,
    taken: tokio::sync::Mutex<mpsc::UnboundedReceiver<Pending>>,
    counts: Mutex<Counts>,
    shutdown: watch::Receiver<bool>,
    instances: Arc<Mutex<JoinSet<()>>>,
}

/// Counts an instance idle while it waits for an invocation, however the
/// wait ends.
struct Idle<'a>(&'a FunctionPool);

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        self.0.counts().idle -= 1;
    }
}

impl FunctionPool {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn enqueue(self: &Arc<Self>, pending: Pending) {
        self.counts().waiting += 1;
        if self.queue.send(pending).is_err() {
            self.counts().waiting -= 1;
        }
        self.scale();
    }

    fn requeue(self: &Arc<Self>, pending: Pending) {
        self.enqueue(pending);
    }

    /// Starts an instance if invocations wait and no idle one will take them.
    fn scale(self: &Arc<Self>) {
        if *self.shutdown.borrow() {
            return;
        }
        {
            let mut counts = self.counts();
            if counts.waiting <= counts.idle || counts.live >= self.spec.max_instances {
                return;
            }
            counts.live += 1;
        }
        let pool = self.clone();
        let shutdown = self.shutdown.clone();
        self.instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .spawn(instance::run(pool, shutdown));
    }

    fn instance_ended(self: &Arc<Self>) {
        self.counts().live -= 1;
        self.scale();
    }

    async fn take_waiting(&self) -> Pending {
        self.counts().idle += 1;
        let _idle = Idle(self);
        let mut taken = self.taken.lock().await;
        match taken.recv().await {
            Some(pending) => {
                self.counts().waiting -= 1;
                pending
            }
            // The pool holds the sender: never, but wait rather than spin.
            None => std::future::pending().await,
        }
    }

    /// Fails every invocation still waiting, unless an idle instance is
    /// about to take them.
    fn fail_waiting(&self, error_type: &str, message: String) {
        let Ok(mut taken) = self.taken.try_lock() else {
            return;
        };
        let document =
            Bytes::from(json!({ "errorType": error_type, "errorMessage": message }).to_string());
        while let Ok(pending) = taken.try_recv() {
            self.counts().waiting -= 1;
            let _ = pending.reply.send(Outcome::FunctionError(document.clone()));
        }
    }
}

/// Every function of the template, ready to be invoked.
pub struct LambdaService {
    pools: BTreeMap<String, Arc<FunctionPool>>,
    region: String,
    account_id: String,
    shutdown: watch::Sender<bool>,
    stopped: AtomicBool,
    instances: Arc<Mutex<JoinSet<()>>>,
}

impl LambdaService {
    pub fn new(specs: Vec<FunctionSpec>, region: &str, account_id: &str) -> LambdaService {
        let (shutdown, watching) = watch::channel(false);
        let instances = Arc::new(Mutex::new(JoinSet::new()));
        let pools = specs
            .into_iter()
            .map(|spec| {
                let (queue, taken) = mpsc::unbounded_channel();
                (
                    spec.function.name.clone(),
                    Arc::new(FunctionPool {
                        spec,
                        queue,
                        taken: tokio::sync::Mutex::new(taken),
                        counts: Mutex::new(Counts::default()),
                        shutdown: watching.clone(),
                        instances: instances.clone(),
                    }),
                )
            })
            .collect();
        LambdaService {
            pools,
            region: region.to_owned(),
            account_id: account_id.to_owned(),
            shutdown,
            stopped: AtomicBool::new(false),
            instances,
        }
    }

    /// The function a name, an ARN or a partial ARN (`account:function:name`)
    /// designates, with the `$LATEST` qualifier or none.
    fn pool(
        &self,
        designation: &str,
        qualifier: Option<&str>,
    ) -> Result<&Arc<FunctionPool>, ServiceError> {
        let not_found = || ServiceError {
            status: 404,
            error_type: "ResourceNotFoundException",
            message: format!(
                "Function not found: arn:aws:lambda:{}:{}:function:{designation}",
                self.region, self.account_id
            ),
        };
        let parts: Vec<&str> = designation.split(':').collect();
        let (name, arn_qualifier) = match parts.as_slice() {
            [name] => (*name, None),
            [name, qualifier] => (*name, Some(*qualifier)),
            [_, "function", name] => (*name, None),
            [_, "function", name, qualifier] => (*name, Some(*qualifier)),
            ["arn", "aws", "lambda", region, account, "function", name] => {
                if *region != self.region || *account != self.account_id {
                    return Err(not_found());
                }
                (*name, None)
            }
            [
                "arn",
                "aws",
                "lambda",
                region,
                account,
                "function",
                name,
                qualifier,
            ] => {
                if *region != self.region || *account != self.account_id {
                    return Err(not_found());
                }
                (*name, Some(*qualifier))
            }
            _ => return Err(not_found()),
        };
        if arn_qualifier.or(qualifier).is_some_and(|q| q != "$LATEST") {
            return Err(not_found());
        }
        self.pools.get(name).ok_or_else(not_found)
    }

    /// Invokes a function synchronously (`RequestResponse`).
    pub async fn invoke(
        &self,
        function: &str,
        qualifier: Option<&str>,
        payload: Bytes,
    ) -> Result<(String, Outcome), ServiceError> {
        let pool = self.pool(function, qualifier)?;
        if self.stopped.load(Ordering::SeqCst) {
            return Err(stopping());
        }
        let request_id = uuid::Uuid::now_v7().to_string();
        let (reply, outcome) = oneshot::channel();
        pool.enqueue(Pending {
            request_id: request_id.clone(),
            payload,
            reply,
        });
        // No answer: the instance went away with the service.
        let outcome = outcome.await.map_err(|_| stopping())?;
        Ok((request_id, outcome))
    }

    /// Kills every function process and waits until each is gone.
    pub async fn shutdown(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let _ = self.shutdown.send(true);
        let mut instances = std::mem::take(
            &mut *self
                .instances
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        while instances.join_next().await.is_some() {}
    }

    /// Instances alive now, over every function.
    pub fn live_instances(&self) -> usize {
        self.pools.values().map(|pool| pool.counts().live).sum()
    }

    /// The Invoke API over HTTP.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/2015-03-31/functions/{function}/invocations", post(invoke))
            .with_state(self.clone())
    }
}

fn stopping() -> ServiceError {
    ServiceError {
        status: 500,
        error_type: "ServiceException",
        message: "the local Lambda service is shutting down".into(),
    }
}

#[derive(serde::Deserialize)]
struct InvokeQuery {
    #[serde(rename = "Qualifier")]
    qualifier: Option<String>,
}

async fn invoke(
    State(service): State<Arc<LambdaService>>,
    Path(function): Path<String>,
    Query(query): Query<InvokeQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(payload) = axum::body::to_bytes(body, MAX_REQUEST_BYTES).await else {
        return ServiceError {
            status: 413,
            error_type: "RequestTooLargeException",
            message: format!(
                "Request must be smaller than {MAX_REQUEST_BYTES} bytes for the InvokeFunction operation"
            ),
        }
        .into_response();
    };
    // An empty payload is `{}`, as the SDKs send it.
    let payload = if payload.is_empty() {
        Bytes::from_static(b"{}")
    } else {
        payload
    };
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(&payload) {
        return ServiceError {
            status: 400,
            error_type: "InvalidRequestContentException",
            message: format!("Could not parse request body into json: {e}"),
        }
        .into_response();
    }
    let invocation_type = headers
        .get("x-amz-invocation-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("RequestResponse")
        .to_owned();
    let qualifier = query.qualifier.as_deref();
    match invocation_type.as_str() {
        "RequestResponse" => match service.invoke(&function, qualifier, payload).await {
            Ok((request_id, outcome)) => {
                let (body, function_error) = match outcome {
                    Outcome::Response(body) => (body, None),
                    Outcome::FunctionError(body) => (body, Some("Unhandled")),
                };
                let mut response = (
                    StatusCode::OK,
                    [
                        ("content-type", "application/json"),
                        ("x-amz-executed-version", "$LATEST"),
                    ],
                    body,
                )
                    .into_response();
                if let Ok(id) = request_id.parse() {
                    response.headers_mut().insert("x-amzn-requestid", id);
                }
                if let Some(kind) = function_error {
                    response
                        .headers_mut()
                        .insert("x-amz-function-error", http::HeaderValue::from_static(kind));
                }
                response
            }
            Err(error) => error.into_response(),
        },
        "Event" => {
            if let Err(error) = service.pool(&function, qualifier) {
                return error.into_response();
            }
            let service = service.clone();
            let qualifier = query.qualifier.clone();
            tokio::spawn(async move {
                let _ = service
                    .invoke(&function, qualifier.as_deref(), payload)
                    .await;
            });
            StatusCode::ACCEPTED.into_response()
        }
        "DryRun" => match service.pool(&function, qualifier) {
            Ok(_) => StatusCode::NO_CONTENT.into_response(),
            Err(error) => error.into_response(),
        },
        other => ServiceError {
            status: 400,
            error_type: "InvalidParameterValueException",
            message: format!("Unsupported invocation type {other:?}"),
        }
        .into_response(),
    }
}
