//! One execution environment: a function process with a Runtime API of its
//! own, serving one invocation at a time, killed when an invocation runs
//! past the function's timeout. Its output goes to the log (with the
//! function's name) and the last lines are kept to explain a failed start.

use std::collections::VecDeque;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;

use super::runtime_api::{NextEvent, Reported, RuntimeApi};
use super::{FunctionPool, Outcome, Pending};

/// Lambda's limit on the init phase of an on-demand function.
const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of output kept to explain a failed start.
const TAIL_LINES: usize = 20;
const TAIL_LINE_CHARS: usize = 500;

type Tail = Arc<Mutex<VecDeque<String>>>;

fn tail_text(tail: &Tail) -> String {
    tail.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}

/// Forwards a stream of the process to the log, keeping its last lines;
/// ends with the stream.
fn forward(
    stream: impl AsyncRead + Unpin + Send + 'static,
    function: String,
    tail: Tail,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(target: "aws_local::function", "[{function}] {line}");
            let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line.chars().take(TAIL_LINE_CHARS).collect());
        }
    })
}

fn error_document(error_type: &str, message: String) -> Bytes {
    Bytes::from(json!({ "errorType": error_type, "errorMessage": message }).to_string())
}

fn epoch_ms(at: Instant) -> u64 {
    let left = at.saturating_duration_since(Instant::now());
    let now = chrono::Utc::now().timestamp_millis();
    u64::try_from(now).unwrap_or_default() + u64::try_from(left.as_millis()).unwrap_or(u64::MAX)
}

/// Counts the instance out of the pool however it ends, and lets the pool
/// start a replacement if invocations are waiting.
struct Alive(Arc<FunctionPool>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.instance_ended();
    }
}

/// Kills the process and reaps it, so nothing is left behind.
async fn stop(child: &mut Child) {
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// Runs one instance until its process exits, it is killed (timeout) or the
/// service shuts down.
pub(super) async fn run(pool: Arc<FunctionPool>, mut shutdown: watch::Receiver<bool>) {
    let _alive = Alive(pool.clone());
    let spec = &pool.spec;
    let (api, mut channels) = match RuntimeApi::start().await {
        Ok(started) => started,
        Err(e) => {
            pool.fail_waiting(
                "Runtime.InitError",
                format!("{}: no Runtime API: {e}", spec.describe()),
            );
            return;
        }
    };
    let instance_id = uuid::Uuid::now_v7().simple().to_string();
    let mut command = Command::new(&spec.program);
    command
        .env_clear()
        .envs(&spec.environment)
        .env("AWS_LAMBDA_RUNTIME_API", api.address.to_string())
        .env(
            "AWS_LAMBDA_LOG_STREAM_NAME",
            format!(
                "{}/[$LATEST]{instance_id}",
                chrono::Utc::now().format("%Y/%m/%d")
            ),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            pool.fail_waiting(
                "Runtime.InvalidEntrypoint",
                format!(
                    "{}: cannot run {}: {e} (build it: cargo build --workspace --bins)",
                    spec.describe(),
                    spec.program.display()
                ),
            );
            return;
        }
    };
    let tail: Tail = Arc::new(Mutex::new(VecDeque::new()));
    let mut output = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        output.push(forward(stdout, spec.function.binary.clone(), tail.clone()));
    }
    if let Some(stderr) = child.stderr.take() {
        output.push(forward(stderr, spec.function.binary.clone(), tail.clone()));
    }
    tracing::debug!(function = %spec.function.name, instance = %instance_id, "instance started");

    let mut initialized = false;
    loop {
        // The process asks for work: at once when warm, after its init when new.
        let init_deadline = Instant::now() + INIT_TIMEOUT;
        let poll = tokio::select! {
            poll = channels.polls.recv() => match poll {
                Some(poll) => poll,
                None => return,
            },
            status = child.wait() => {
                if !initialized {
                    init_failed(&pool, status.ok(), output, &tail, &channels.init_error).await;
                }
                return;
            }
            _ = tokio::time::sleep_until(init_deadline), if !initialized => {
                stop(&mut child).await;
                pool.fail_waiting(
                    "Runtime.InitError",
                    format!(
                        "{} did not ask for an invocation within {} s of starting (Lambda's init limit). Its last output:\n{}",
                        spec.describe(),
                        INIT_TIMEOUT.as_secs(),
                        tail_text(&tail)
                    ),
                );
                return;
            }
            _ = shutdown.changed() => {
                stop(&mut child).await;
                return;
            }
        };
        initialized = true;

        let pending: Pending = tokio::select! {
            pending = pool.take_waiting() => pending,
            status = child.wait() => {
                tracing::warn!(function = %spec.function.name, ?status, "idle instance exited");
                return;
            }
            _ = shutdown.changed() => {
                stop(&mut child).await;
                return;
            }
        };

        let deadline = Instant::now() + spec.function.timeout;
        let event = NextEvent {
            request_id: pending.request_id.clone(),
            deadline_ms: epoch_ms(deadline),
            function_arn: spec.function.arn.clone(),
            trace_id: format!(
                "Root=1-{:08x}-{:024x};Parent={:016x};Sampled=0",
                chrono::Utc::now().timestamp(),
                fastrand::u128(..) >> 32,
                fastrand::u64(..)
            ),
            payload: pending.payload.clone(),
        };
        if poll.send(event).is_err() {
            // The process dropped its poll (it is exiting): give the
            // invocation back to the queue for another instance.
            pool.requeue(pending);
            stop(&mut child).await;
            return;
        }

        let outcome = loop {
            tokio::select! {
                report = channels.reports.recv() => match report {
                    Some((id, report)) if id == pending.request_id => break match report {
                        Reported::Response(body) => Outcome::Response(body),
                        Reported::Error { body, error_type } => Outcome::FunctionError(error_body(body, error_type)),
                    },
                    // A report for another request id: not this invocation's.
                    Some(_) => continue,
                    None => return,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    stop(&mut child).await;
                    let _ = pending.reply.send(Outcome::FunctionError(error_document(
                        "Sandbox.Timedout",
                        format!(
                            "RequestId: {} Error: Task timed out after {}.00 seconds",
                            pending.request_id,
                            spec.function.timeout.as_secs()
                        ),
                    )));
                    tracing::warn!(function = %spec.function.name, request_id = %pending.request_id, "invocation timed out; instance killed");
                    return;
                }
                status = child.wait() => {
                    let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                    let _ = pending.reply.send(Outcome::FunctionError(error_document(
                        "Runtime.ExitError",
                        format!(
                            "RequestId: {} Error: Runtime exited with error: {status}",
                            pending.request_id
                        ),
                    )));
                    return;
                }
                _ = shutdown.changed() => {
                    stop(&mut child).await;
                    return;
                }
            }
        };
        // The caller may have given up (its own timeout): nobody to tell.
        let _ = pending.reply.send(outcome);
    }
}

/// The posted error document, with the error type from the header when
/// the document has none.
fn error_body(body: Bytes, header_type: Option<String>) -> Bytes {
    let Ok(serde_json::Value::Object(mut document)) = serde_json::from_slice(&body) else {
        return error_document(
            header_type.as_deref().unwrap_or(""),
            String::from_utf8_lossy(&body).into_owned(),
        );
    };
    if !document.contains_key("errorType")
        && let Some(kind) = header_type
    {
        document.insert("errorType".into(), kind.into());
    }
    Bytes::from(serde_json::Value::Object(document).to_string())
}

/// The process ended before asking for its first invocation: every
/// invocation waiting for this function fails now, saying why, rather than
/// waiting for an instance that will never come.
async fn init_failed(
    pool: &Arc<FunctionPool>,
    status: Option<ExitStatus>,
    output: Vec<tokio::task::JoinHandle<()>>,
    tail: &Tail,
    init_error: &Arc<Mutex<Option<String>>>,
) {
    // The readers end with the pipes: then the tail holds the last words.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        for reader in output {
            let _ = reader.await;
        }
    })
    .await;
    let status = status.map_or_else(|| "unknown exit status".to_owned(), |s| s.to_string());
    let posted = init_error
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
        .map(|body| format!(" It reported: {body}."))
        .unwrap_or_default();
    let message = format!(
        "{} failed at init ({status}).{posted} Its last output:\n{}",
        pool.spec.describe(),
        tail_text(tail)
    );
    tracing::error!(function = %pool.spec.function.name, "{message}");
    pool.fail_waiting("Runtime.InitError", message);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_document_gets_its_type_from_the_header_only_when_it_has_none() {
        let with_type = error_body(
            Bytes::from(r#"{"errorType":"PaymentDeclined","errorMessage":"no"}"#),
            Some("Other".into()),
        );
        let value: serde_json::Value = serde_json::from_slice(&with_type).unwrap();
        assert_eq!(value["errorType"], "PaymentDeclined");
        let without = error_body(
            Bytes::from(r#"{"errorMessage":"no"}"#),
            Some("Other".into()),
        );
        let value: serde_json::Value = serde_json::from_slice(&without).unwrap();
        assert_eq!(value["errorType"], "Other");
    }
}
