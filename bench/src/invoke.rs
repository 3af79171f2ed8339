//! One cold invocation of a function binary, as Lambda runs it: a fresh
//! process with Lambda's environment, its own Runtime API listener
//! ([`RuntimeApi`]), one event; timed from `exec` to the first poll and to
//! the response, then killed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use crate::Result;
use crate::runtime_api::{Observation, OutcomeKind, RuntimeApi};

/// How far a run goes before the process is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopAt {
    /// Init only: the first `next` poll (the smoke test).
    FirstPoll,
    /// The first invocation's response or error.
    Response,
}

pub struct Invocation<'a> {
    /// `AWS_LAMBDA_FUNCTION_NAME`.
    pub name: &'a str,
    pub binary: &'a Path,
    /// Everything but `AWS_LAMBDA_RUNTIME_API`, which each run gets anew.
    pub env: &'a [(String, String)],
    pub event: Bytes,
    /// A profiler to start the binary under (`valgrind --tool=callgrind ...`).
    pub wrapper: &'a [String],
    pub timeout: Duration,
    /// Where the process's stdout and stderr go.
    pub log: PathBuf,
    pub stop_at: StopAt,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Invoked {
    pub spawned: Instant,
    pub first_poll: Instant,
    /// `None` with [`StopAt::FirstPoll`].
    pub done: Option<Instant>,
    pub kind: Option<OutcomeKind>,
    pub body: String,
    /// VmHWM: peak resident set through init (and the invocation).
    pub rss_kib: f64,
}

impl Invoked {
    pub fn poll_ms(&self) -> f64 {
        ms(self.first_poll - self.spawned)
    }

    pub fn response_ms(&self) -> f64 {
        self.done
            .map(|done| ms(done - self.spawned))
            .unwrap_or(f64::NAN)
    }

    /// The response as the run's outcome: `201`, `ok RESERVED`, `error OutOfStock`, ...
    pub fn describe(&self) -> String {
        let value: Value = serde_json::from_str(&self.body).unwrap_or(Value::Null);
        match self.kind {
            None => "first poll".into(),
            Some(OutcomeKind::InitError) => format!("init error {}", value["errorType"]),
            Some(OutcomeKind::Error) => {
                format!("error {}", value["errorType"].as_str().unwrap_or("unknown"))
            }
            Some(OutcomeKind::Response) => {
                match (value.get("statusCode"), value["status"].as_str()) {
                    (Some(code), _) => code.to_string(),
                    (None, Some(status)) => format!("ok {status}"),
                    (None, None) => "ok".into(),
                }
            }
        }
    }

    /// A 2xx API answer or a step's result (not an error).
    pub fn succeeded(&self) -> bool {
        let value: Value = serde_json::from_str(&self.body).unwrap_or(Value::Null);
        self.kind == Some(OutcomeKind::Response)
            && value["statusCode"]
                .as_u64()
                .is_none_or(|code| (200..300).contains(&code))
    }

    /// The status code of an API answer.
    pub fn status(&self) -> Option<u64> {
        let value: Value = serde_json::from_str(&self.body).ok()?;
        value["statusCode"].as_u64()
    }

    /// The JSON body of an API answer.
    pub fn api_body(&self) -> Value {
        let value: Value = serde_json::from_str(&self.body).unwrap_or(Value::Null);
        value["body"]
            .as_str()
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or(Value::Null)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Kills the process however the run ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn invoke_once(invocation: Invocation<'_>) -> Result<Invoked> {
    let runtime = RuntimeApi::start(invocation.name, invocation.event.clone()).await?;
    let log_file = std::fs::File::create(&invocation.log)
        .map_err(|e| format!("{}: {e}", invocation.log.display()))?;
    let mut command = match invocation.wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(invocation.binary);
            command
        }
        None => Command::new(invocation.binary),
    };
    command
        .env_clear()
        .envs(invocation.env.iter().map(|(k, v)| (k, v)))
        .env("AWS_LAMBDA_RUNTIME_API", runtime.address())
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    let spawned = Instant::now();
    let child = command
        .spawn()
        .map_err(|e| format!("{}: {e}", invocation.binary.display()))?;
    let mut process = Process(child);
    let seen = wait(&mut process.0, &runtime, &invocation, spawned).await;
    let rss_kib = peak_rss_kib(process.0.id()).unwrap_or(f64::NAN);
    if !invocation.wrapper.is_empty() {
        // A wrapper (valgrind) writes its results only when it exits on its own.
        let _ = Command::new("kill")
            .args(["-TERM", &process.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(120);
        while process.0.try_wait()?.is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    drop(process);
    // The listener closes only now, after the process is gone.
    drop(runtime);
    let seen = seen.map_err(|e| format!("{e}{}", log_tail(&invocation.log)))?;
    let first_poll = seen.first_poll.ok_or("responded without polling")?;
    let (kind, body) = match seen.outcome {
        Some((kind, body)) => (Some(kind), body),
        None => (None, String::new()),
    };
    Ok(Invoked {
        spawned,
        first_poll,
        done: seen.done,
        kind,
        body,
        rss_kib,
    })
}

async fn wait(
    child: &mut Child,
    runtime: &RuntimeApi,
    invocation: &Invocation<'_>,
    spawned: Instant,
) -> Result<Observation> {
    let deadline = spawned + invocation.timeout;
    loop {
        let seen = runtime.observation();
        let finished = match invocation.stop_at {
            StopAt::FirstPoll => seen.first_poll.is_some() || seen.done.is_some(),
            StopAt::Response => seen.done.is_some(),
        };
        if finished {
            if seen.first_poll.is_none() {
                let body = seen.outcome.map(|(_, b)| b).unwrap_or_default();
                return Err(format!("init failed: {body}").into());
            }
            return Ok(seen);
        }
        if let Some(status) = child.try_wait()? {
            return Err(format!("exited with {status} before responding").into());
        }
        if Instant::now() > deadline {
            let phase = if seen.first_poll.is_some() {
                "response"
            } else {
                "first poll"
            };
            return Err(format!("no {phase} within {:?}", invocation.timeout).into());
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

/// The last lines of a run's log, for error messages.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join("\n  ");
    if tail.is_empty() {
        String::new()
    } else {
        format!("\n  {} says:\n  {tail}", path.display())
    }
}

/// VmHWM: the resident set's high-water mark so far (the process is idle in
/// its second poll, so this is the peak through init and one invocation).
fn peak_rss_kib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
