//! Test doubles shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use asl::{
    ExecutionOutcome, InMemoryJournal, Runner, StateMachine, TaskContext, TaskFailure, TaskInvoker,
};
use serde_json::Value;

/// One invocation as the task saw it, stamped with tokio's (possibly paused) clock.
#[derive(Debug, Clone)]
pub struct Call {
    pub resource: String,
    pub input: Value,
    pub ctx: TaskContext,
    pub at: tokio::time::Instant,
    /// How many calls were made before this one.
    pub index: usize,
}

/// What the scripted task does: optionally take some time, then return.
pub struct Reply {
    pub delay: Duration,
    pub result: Result<Value, TaskFailure>,
}

impl Reply {
    pub fn ok(value: Value) -> Reply {
        Reply {
            delay: Duration::ZERO,
            result: Ok(value),
        }
    }

    pub fn fail(error: &str, cause: &str) -> Reply {
        Reply {
            delay: Duration::ZERO,
            result: Err(TaskFailure::new(error, cause)),
        }
    }

    pub fn after(delay: Duration, value: Value) -> Reply {
        Reply {
            delay,
            result: Ok(value),
        }
    }
}

type Handler = dyn Fn(&Call) -> Reply + Send + Sync;

/// A `TaskInvoker` driven by a closure, recording every call.
pub struct Scripted {
    handler: Box<Handler>,
    calls: Mutex<Vec<Call>>,
}

impl Scripted {
    pub fn new(handler: impl Fn(&Call) -> Reply + Send + Sync + 'static) -> Arc<Scripted> {
        Arc::new(Scripted {
            handler: Box::new(handler),
            calls: Mutex::new(Vec::new()),
        })
    }

    /// A task that always returns `value`.
    pub fn returning(value: Value) -> Arc<Scripted> {
        Scripted::new(move |_| Reply::ok(value.clone()))
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("calls lock").clone()
    }

    /// Seconds between consecutive calls (virtual time under `start_paused`).
    pub fn gaps(&self) -> Vec<f64> {
        self.calls()
            .windows(2)
            .map(|w| (w[1].at - w[0].at).as_secs_f64())
            .collect()
    }
}

#[async_trait::async_trait]
impl TaskInvoker for Scripted {
    async fn invoke(
        &self,
        resource: &str,
        input: Value,
        ctx: &TaskContext,
    ) -> Result<Value, TaskFailure> {
        let call = {
            let mut calls = self.calls.lock().expect("calls lock");
            let call = Call {
                resource: resource.to_owned(),
                input,
                ctx: ctx.clone(),
                at: tokio::time::Instant::now(),
                index: calls.len(),
            };
            calls.push(call.clone());
            call
        };
        let reply = (self.handler)(&call);
        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        reply.result
    }
}

pub fn machine(definition: &Value) -> Arc<StateMachine> {
    Arc::new(
        StateMachine::from_json(&definition.to_string(), &HashMap::new())
            .expect("test definition loads"),
    )
}

pub fn runner(definition: &Value, invoker: Arc<Scripted>) -> (Runner, Arc<InMemoryJournal>) {
    let journal = Arc::new(InMemoryJournal::new());
    (
        Runner::new(machine(definition), invoker, journal.clone()),
        journal,
    )
}

/// Runs `definition` once with `input`, returning the outcome and the task calls.
pub async fn run(definition: &Value, input: Value, invoker: Arc<Scripted>) -> ExecutionOutcome {
    let (runner, _) = runner(definition, invoker);
    runner.start("test-execution", input).await
}

/// A one-Task machine: `task` is merged into `{"Type": "Task", "Resource": "fn", "End": true}`.
pub fn single_task(task: Value) -> Value {
    let mut state = serde_json::json!({"Type": "Task", "Resource": "fn", "End": true});
    if let (Some(state), Value::Object(extra)) = (state.as_object_mut(), task) {
        state.extend(extra);
    }
    serde_json::json!({"StartAt": "T", "States": {"T": state}})
}

pub fn succeeded(outcome: ExecutionOutcome) -> Value {
    match outcome {
        ExecutionOutcome::Succeeded(value) => value,
        other => panic!("expected success, got {other:?}"),
    }
}

pub fn failed(outcome: ExecutionOutcome) -> (String, String) {
    match outcome {
        ExecutionOutcome::Failed { error, cause } => (error, cause),
        other => panic!("expected failure, got {other:?}"),
    }
}

/// Asserts two durations in seconds agree to within tokio's millisecond timer resolution.
pub fn assert_secs(actual: &[f64], expected: &[f64]) {
    assert_eq!(
        actual.len(),
        expected.len(),
        "gaps {actual:?} vs {expected:?}"
    );
    for (a, e) in actual.iter().zip(expected) {
        assert!(
            (a - e).abs() < 0.005,
            "gaps {actual:?} vs expected {expected:?}"
        );
    }
}
