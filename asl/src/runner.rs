//! Executes a [`StateMachine`]: input/output processing, Task invocation with
//! Retry/Catch/TimeoutSeconds, callback tokens, and checkpointing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::choice::parse_timestamp;
use crate::definition::{
    ChoiceState, FailState, Jitter, PassState, Retrier, State, StateMachine, TaskState, TextSource,
    Transition, WaitFor, WaitState, error_matches,
};
use crate::error::{TaskFailure, TaskTokenError, names};
use crate::journal::{Checkpoint, ExecutionJournal, ExecutionStatus};
use crate::path::Path;

/// What a task invocation knows about where it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskContext {
    pub execution_name: String,
    /// The execution ARN (`$$.Execution.Id`).
    pub execution_id: String,
    pub state_name: String,
    /// Set for `.waitForTaskToken` resources: hand it to whoever will call
    /// [`Runner::send_task_success`] / [`Runner::send_task_failure`].
    pub task_token: Option<String>,
    /// `$$.State.RetryCount`: 0 on the first attempt.
    pub retry_count: u32,
    /// The Task's `TimeoutSeconds`: the invocation is abandoned after it, so
    /// a task with more work than time should stop before.
    pub timeout: Option<Duration>,
}

/// Runs a Task's `Resource`.
#[async_trait::async_trait]
pub trait TaskInvoker: Send + Sync {
    /// `resource` is the Task's Resource string after substitution (the
    /// `.waitForTaskToken` suffix, if any, is still on it). For callback tasks the value
    /// returned here is ignored: the task's result is what `send_task_success` delivers.
    async fn invoke(
        &self,
        resource: &str,
        input: Value,
        ctx: &TaskContext,
    ) -> Result<Value, TaskFailure>;
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExecutionOutcome {
    Succeeded(Value),
    Failed { error: String, cause: String },
}

type TokenSender = oneshot::Sender<Result<Value, TaskFailure>>;

/// Runs executions of one state machine. Cheap to clone: clones share the machine, the
/// invoker, the journal and the registry of outstanding task tokens.
#[derive(Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

struct Inner {
    machine: Arc<StateMachine>,
    invoker: Arc<dyn TaskInvoker>,
    journal: Arc<dyn ExecutionJournal>,
    tokens: Mutex<HashMap<String, TokenSender>>,
    /// Multiplies every Retry and Wait delay (1.0: as the definition says).
    delay_scale: f64,
}

/// The facts about an execution that stay fixed while it runs.
struct Execution {
    name: String,
    id: String,
    input: Value,
    started_at: DateTime<Utc>,
}

impl Execution {
    fn checkpoint(&self, state_name: &str, state_input: &Value) -> Checkpoint {
        Checkpoint {
            execution_name: self.name.clone(),
            execution_input: self.input.clone(),
            state_name: state_name.to_owned(),
            state_input: state_input.clone(),
            status: ExecutionStatus::Running,
            output: None,
            error: None,
            task_token: None,
            started_at: self.started_at,
            updated_at: Utc::now(),
        }
    }
}

/// What running one state leads to.
enum Step {
    Next { state: String, output: Value },
    Succeeded(Value),
    Failed(TaskFailure),
}

fn follow(transition: &Transition, output: Value) -> Step {
    match transition {
        Transition::Next(state) => Step::Next {
            state: state.clone(),
            output,
        },
        Transition::End => Step::Succeeded(output),
    }
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `InputPath` / `OutputPath`: `null` gives `{}`; a path that selects nothing is a
/// `States.Runtime` failure.
fn select_io(path: Option<&Path>, value: &Value, context: &Value) -> Result<Value, TaskFailure> {
    match path {
        None => Ok(json!({})),
        Some(path) => path.select(value, context).ok_or_else(|| {
            TaskFailure::runtime(format!(
                "Invalid path '{path}' : No results for path: {path} in input '{value}'"
            ))
        }),
    }
}

/// `ResultPath`: `null` keeps the input unchanged; otherwise the result is written into
/// the state's *raw* input (before `InputPath`), as AWS does.
fn apply_result_path(
    path: Option<&Path>,
    raw_input: Value,
    result: Value,
) -> Result<Value, TaskFailure> {
    match path {
        None => Ok(raw_input),
        Some(path) => path.set(raw_input, result).map_err(|reason| {
            TaskFailure::new(
                names::RESULT_PATH_MATCH_FAILURE,
                format!("Unable to apply ResultPath '{path}' to the state input: {reason}"),
            )
        }),
    }
}

/// The error output a catcher passes on: `{"Error": ..., "Cause": ...}` (the `Cause` is
/// left out when there is none, as AWS does).
fn error_output(failure: &TaskFailure) -> Value {
    let mut out = json!({ "Error": failure.error });
    if !failure.cause.is_empty() {
        out["Cause"] = json!(failure.cause);
    }
    out
}

/// `IntervalSeconds × BackoffRate^n`, capped by `MaxDelaySeconds`, then with `FULL`
/// jitter a uniformly random delay in `[0, that]`.
pub(crate) fn retry_delay(retrier: &Retrier, previous_retries: u64) -> Duration {
    let exponent = i32::try_from(previous_retries).unwrap_or(i32::MAX);
    // Seconds as f64: exact for every integer interval AWS accepts (<= 99,999,999).
    let mut seconds = retrier.interval_seconds as f64 * retrier.backoff_rate.powi(exponent);
    if let Some(cap) = retrier.max_delay_seconds {
        seconds = seconds.min(cap as f64);
    }
    if retrier.jitter == Jitter::Full {
        seconds *= fastrand::f64();
    }
    // Unbounded backoff can overflow to infinity; that simply means "wait forever".
    Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX)
}

fn new_task_token() -> String {
    // Unguessable enough for a local runner; the token only has to be unique and opaque.
    format!("{:032x}{:032x}", fastrand::u128(..), fastrand::u128(..))
}

/// Removes a task token from the registry when its task attempt ends, however it ends
/// (result, failure, timeout or cancellation), so late callbacks get `Unknown`.
struct TokenRegistration<'a> {
    inner: &'a Inner,
    token: String,
}

impl Drop for TokenRegistration<'_> {
    fn drop(&mut self) {
        self.inner.tokens().remove(&self.token);
    }
}

impl Inner {
    fn tokens(&self) -> std::sync::MutexGuard<'_, HashMap<String, TokenSender>> {
        // A panic elsewhere while holding the lock leaves the map itself consistent.
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Runner {
    pub fn new(
        machine: Arc<StateMachine>,
        invoker: Arc<dyn TaskInvoker>,
        journal: Arc<dyn ExecutionJournal>,
    ) -> Runner {
        Runner {
            inner: Arc::new(Inner {
                machine,
                invoker,
                journal,
                tokens: Mutex::new(HashMap::new()),
                delay_scale: 1.0,
            }),
        }
    }

    /// The same runner with every Retry and Wait delay multiplied by
    /// `scale` (task timeouts are not scaled). For tests and local
    /// development that should not sit through a definition's real backoff;
    /// a deployed workflow always waits as written.
    pub fn with_delay_scale(self, scale: f64) -> Runner {
        let inner = match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner,
            Err(shared) => Inner {
                machine: Arc::clone(&shared.machine),
                invoker: Arc::clone(&shared.invoker),
                journal: Arc::clone(&shared.journal),
                tokens: Mutex::new(HashMap::new()),
                delay_scale: shared.delay_scale,
            },
        };
        Runner {
            inner: Arc::new(Inner {
                delay_scale: scale.max(0.0),
                ..inner
            }),
        }
    }

    fn scaled(&self, delay: Duration) -> Duration {
        if self.inner.delay_scale == 1.0 {
            delay
        } else {
            Duration::try_from_secs_f64(delay.as_secs_f64() * self.inner.delay_scale)
                .unwrap_or(Duration::MAX)
        }
    }

    pub fn machine(&self) -> &Arc<StateMachine> {
        &self.inner.machine
    }

    /// Runs a new execution to completion. (Callers spawn it on tokio themselves.)
    pub async fn start(&self, execution_name: &str, input: Value) -> ExecutionOutcome {
        let execution = Execution {
            name: execution_name.to_owned(),
            id: self.inner.machine.execution_arn(execution_name),
            input: input.clone(),
            started_at: Utc::now(),
        };
        let start_at = self.inner.machine.start_at().to_owned();
        self.run(execution, start_at, input, None).await
    }

    /// Continues an unfinished execution from its last checkpoint: the state that was
    /// about to run runs again from the start (tasks are expected to be idempotent). A
    /// callback task re-issues the checkpoint's task token, so a callback sent with it is
    /// still accepted. A finished checkpoint just yields its outcome.
    pub async fn resume(&self, checkpoint: Checkpoint) -> ExecutionOutcome {
        match checkpoint.status {
            ExecutionStatus::Succeeded => {
                return ExecutionOutcome::Succeeded(checkpoint.output.unwrap_or(Value::Null));
            }
            ExecutionStatus::Failed => {
                let failure = checkpoint.error.unwrap_or_else(|| TaskFailure::new("", ""));
                return ExecutionOutcome::Failed {
                    error: failure.error,
                    cause: failure.cause,
                };
            }
            ExecutionStatus::Running => {}
        }
        let execution = Execution {
            id: self.inner.machine.execution_arn(&checkpoint.execution_name),
            name: checkpoint.execution_name,
            input: checkpoint.execution_input,
            started_at: checkpoint.started_at,
        };
        self.run(
            execution,
            checkpoint.state_name,
            checkpoint.state_input,
            checkpoint.task_token,
        )
        .await
    }

    /// Restarts a failed execution at the state that failed, with that
    /// state's input, as Step Functions' `RedriveExecution` does: the states
    /// that succeeded are not run again. `None` if the checkpoint is not of a
    /// failed execution (running or succeeded ones cannot be redriven).
    pub async fn redrive(&self, checkpoint: Checkpoint) -> Option<ExecutionOutcome> {
        if checkpoint.status != ExecutionStatus::Failed {
            return None;
        }
        info!(execution = %checkpoint.execution_name, state = %checkpoint.state_name, "execution redriven");
        let execution = Execution {
            id: self.inner.machine.execution_arn(&checkpoint.execution_name),
            name: checkpoint.execution_name,
            input: checkpoint.execution_input,
            started_at: checkpoint.started_at,
        };
        Some(
            self.run(
                execution,
                checkpoint.state_name,
                checkpoint.state_input,
                None,
            )
            .await,
        )
    }

    /// Completes the `.waitForTaskToken` task waiting on `token` with `output` as its result.
    pub fn send_task_success(&self, token: &str, output: Value) -> Result<(), TaskTokenError> {
        self.complete(token, Ok(output))
    }

    /// Fails the `.waitForTaskToken` task waiting on `token`; Retry/Catch apply as for
    /// any task failure.
    pub fn send_task_failure(
        &self,
        token: &str,
        error: &str,
        cause: &str,
    ) -> Result<(), TaskTokenError> {
        self.complete(token, Err(TaskFailure::new(error, cause)))
    }

    /// Whether a `.waitForTaskToken` task waits on `token` now (what
    /// `SendTaskHeartbeat` needs to know).
    pub fn is_waiting_on(&self, token: &str) -> bool {
        self.inner.tokens().contains_key(token)
    }

    fn complete(
        &self,
        token: &str,
        result: Result<Value, TaskFailure>,
    ) -> Result<(), TaskTokenError> {
        let sender = self
            .inner
            .tokens()
            .remove(token)
            .ok_or_else(|| TaskTokenError::Unknown(token.to_owned()))?;
        sender
            .send(result)
            .map_err(|_| TaskTokenError::Unknown(token.to_owned()))
    }

    async fn save(&self, checkpoint: &Checkpoint) {
        // A journal failure costs durability, not correctness: the execution carries on
        // (failing a purchase because a disk is full would be worse), but loudly.
        if let Err(error) = self.inner.journal.save(checkpoint).await {
            warn!(
                execution = %checkpoint.execution_name,
                state = %checkpoint.state_name,
                %error,
                "could not save execution checkpoint"
            );
        }
    }

    async fn run(
        &self,
        execution: Execution,
        mut state_name: String,
        mut input: Value,
        mut resume_token: Option<String>,
    ) -> ExecutionOutcome {
        loop {
            let mut checkpoint = execution.checkpoint(&state_name, &input);
            checkpoint.task_token = resume_token.clone();
            self.save(&checkpoint).await;
            info!(execution = %execution.name, state = %state_name, "state entered");

            let step = match self.inner.machine.state(&state_name) {
                Some(state) => {
                    self.run_state(
                        &execution,
                        &state_name,
                        state,
                        input.clone(),
                        resume_token.take(),
                    )
                    .await
                }
                None => Step::Failed(TaskFailure::runtime(format!(
                    "state `{state_name}` does not exist in the state machine"
                ))),
            };

            let (outcome, mut last) = match step {
                Step::Next { state, output } => {
                    info!(execution = %execution.name, state = %state_name, next = %state, "state exited");
                    state_name = state;
                    input = output;
                    continue;
                }
                Step::Succeeded(output) => {
                    info!(execution = %execution.name, state = %state_name, "state exited; execution succeeded");
                    let mut last = execution.checkpoint(&state_name, &input);
                    last.status = ExecutionStatus::Succeeded;
                    last.output = Some(output.clone());
                    (ExecutionOutcome::Succeeded(output), last)
                }
                Step::Failed(failure) => {
                    info!(
                        execution = %execution.name,
                        state = %state_name,
                        error = %failure.error,
                        cause = %failure.cause,
                        "state exited; execution failed"
                    );
                    let mut last = execution.checkpoint(&state_name, &input);
                    last.status = ExecutionStatus::Failed;
                    last.error = Some(failure.clone());
                    (
                        ExecutionOutcome::Failed {
                            error: failure.error,
                            cause: failure.cause,
                        },
                        last,
                    )
                }
            };
            last.updated_at = Utc::now();
            self.save(&last).await;
            return outcome;
        }
    }

    /// The context object (`$$`) as seen by one attempt of one state.
    fn context(
        &self,
        execution: &Execution,
        state_name: &str,
        entered: DateTime<Utc>,
        retry_count: u32,
        task_token: Option<&str>,
    ) -> Value {
        let mut context = json!({
            "Execution": {
                "Id": execution.id,
                "Input": execution.input,
                "Name": execution.name,
                "StartTime": timestamp(execution.started_at),
            },
            "State": {
                "EnteredTime": timestamp(entered),
                "Name": state_name,
                "RetryCount": retry_count,
            },
            "StateMachine": {
                "Id": self.inner.machine.arn(),
                "Name": self.inner.machine.name(),
            },
        });
        if let (Some(token), Some(map)) = (task_token, context.as_object_mut()) {
            map.insert("Task".to_owned(), json!({ "Token": token }));
        }
        context
    }

    async fn run_state(
        &self,
        execution: &Execution,
        name: &str,
        state: &State,
        input: Value,
        resume_token: Option<String>,
    ) -> Step {
        let entered = Utc::now();
        let result = match state {
            State::Task(task) => {
                return self
                    .run_task(execution, name, task, input, entered, resume_token)
                    .await;
            }
            State::Pass(pass) => self.run_pass(
                &self.context(execution, name, entered, 0, None),
                pass,
                input,
            ),
            State::Choice(choice) => self.run_choice(
                &self.context(execution, name, entered, 0, None),
                name,
                choice,
                input,
            ),
            State::Wait(wait) => {
                self.run_wait(
                    &self.context(execution, name, entered, 0, None),
                    wait,
                    input,
                )
                .await
            }
            State::Succeed(succeed) => {
                let context = self.context(execution, name, entered, 0, None);
                select_io(succeed.input_path.as_ref(), &input, &context)
                    .and_then(|effective| {
                        select_io(succeed.output_path.as_ref(), &effective, &context)
                    })
                    .map(Step::Succeeded)
            }
            State::Fail(fail) => Ok(self.run_fail(
                &self.context(execution, name, entered, 0, None),
                fail,
                &input,
            )),
        };
        result.unwrap_or_else(Step::Failed)
    }

    fn run_pass(
        &self,
        context: &Value,
        pass: &PassState,
        input: Value,
    ) -> Result<Step, TaskFailure> {
        let effective = select_io(pass.input_path.as_ref(), &input, context)?;
        let result = match (&pass.result, &pass.parameters) {
            (Some(result), _) => result.clone(),
            (None, Some(parameters)) => parameters
                .render(&effective, context)
                .map_err(TaskFailure::runtime)?,
            (None, None) => effective,
        };
        let merged = apply_result_path(pass.result_path.as_ref(), input, result)?;
        let output = select_io(pass.output_path.as_ref(), &merged, context)?;
        Ok(follow(&pass.transition, output))
    }

    fn run_choice(
        &self,
        context: &Value,
        name: &str,
        choice: &ChoiceState,
        input: Value,
    ) -> Result<Step, TaskFailure> {
        let effective = select_io(choice.input_path.as_ref(), &input, context)?;
        let mut next = None;
        for rule in &choice.choices {
            if rule
                .condition
                .evaluate(&effective, context)
                .map_err(TaskFailure::runtime)?
            {
                next = Some(rule.next.clone());
                break;
            }
        }
        let state = next.or_else(|| choice.default.clone()).ok_or_else(|| {
            TaskFailure::new(
                names::NO_CHOICE_MATCHED,
                format!("no choice rule of state `{name}` matched and it has no Default"),
            )
        })?;
        let output = select_io(choice.output_path.as_ref(), &effective, context)?;
        Ok(Step::Next { state, output })
    }

    async fn run_wait(
        &self,
        context: &Value,
        wait: &WaitState,
        input: Value,
    ) -> Result<Step, TaskFailure> {
        let effective = select_io(wait.input_path.as_ref(), &input, context)?;
        let until = |at: DateTime<Utc>| (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        let selected = |path: &Path| {
            path.select(&effective, context).ok_or_else(|| {
                TaskFailure::runtime(format!(
                    "Invalid path '{path}': no value in input '{effective}'"
                ))
            })
        };
        let delay = match &wait.wait {
            WaitFor::Seconds(seconds) => Duration::from_secs(*seconds),
            WaitFor::SecondsPath(path) => {
                let value = selected(path)?;
                value.as_u64().map(Duration::from_secs).ok_or_else(|| {
                    TaskFailure::runtime(format!(
                        "SecondsPath '{path}' must select a non-negative integer, got {value}"
                    ))
                })?
            }
            WaitFor::Timestamp(at) => until(at.with_timezone(&Utc)),
            WaitFor::TimestampPath(path) => {
                let value = selected(path)?;
                let at = value.as_str().and_then(parse_timestamp).ok_or_else(|| {
                    TaskFailure::runtime(format!(
                        "TimestampPath '{path}' must select an RFC 3339 timestamp, got {value}"
                    ))
                })?;
                until(at.with_timezone(&Utc))
            }
        };
        tokio::time::sleep(self.scaled(delay)).await;
        let output = select_io(wait.output_path.as_ref(), &effective, context)?;
        Ok(follow(&wait.transition, output))
    }

    fn run_fail(&self, context: &Value, fail: &FailState, input: &Value) -> Step {
        let text = |source: &Option<TextSource>, field: &str| -> Result<String, TaskFailure> {
            match source {
                None => Ok(String::new()),
                Some(TextSource::Literal(text)) => Ok(text.clone()),
                Some(TextSource::Path(path)) => path
                    .select(input, context)
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .ok_or_else(|| {
                        TaskFailure::runtime(format!(
                            "{field} '{path}' must select a string in input '{input}'"
                        ))
                    }),
            }
        };
        match (
            text(&fail.error, "ErrorPath"),
            text(&fail.cause, "CausePath"),
        ) {
            (Ok(error), Ok(cause)) => Step::Failed(TaskFailure::new(error, cause)),
            (Err(failure), _) | (_, Err(failure)) => Step::Failed(failure),
        }
    }

    async fn run_task(
        &self,
        execution: &Execution,
        name: &str,
        task: &TaskState,
        input: Value,
        entered: DateTime<Utc>,
        mut resume_token: Option<String>,
    ) -> Step {
        // Each retrier counts its own attempts; all reset when the state is left.
        let mut attempts = vec![0u64; task.retry.len()];
        let mut retry_count: u32 = 0;
        loop {
            let token = task
                .wait_for_token
                .then(|| resume_token.take().unwrap_or_else(new_task_token));
            let failure = match self
                .attempt(execution, name, task, &input, entered, retry_count, token)
                .await
            {
                Ok(output) => return follow(&task.transition, output),
                Err(failure) => failure,
            };
            // AWS: States.Runtime is never retried or caught, not even by States.ALL.
            if failure.error == names::RUNTIME {
                return Step::Failed(failure);
            }
            // Only the first retrier that matches is consulted; once it is exhausted the
            // error goes to the catchers (the "complex retry scenario" in the AWS docs).
            if let Some(i) = task
                .retry
                .iter()
                .position(|r| error_matches(&r.error_equals, &failure.error))
            {
                let retrier = &task.retry[i];
                if attempts[i] < retrier.max_attempts {
                    let delay = self.scaled(retry_delay(retrier, attempts[i]));
                    attempts[i] += 1;
                    retry_count = retry_count.saturating_add(1);
                    info!(
                        execution = %execution.name,
                        state = %name,
                        error = %failure.error,
                        retry = retry_count,
                        delay_ms = delay.as_millis(),
                        "task failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    continue;
                }
            }
            if let Some(catcher) = task
                .catch
                .iter()
                .find(|c| error_matches(&c.error_equals, &failure.error))
            {
                info!(
                    execution = %execution.name,
                    state = %name,
                    error = %failure.error,
                    next = %catcher.next,
                    "task failed; caught"
                );
                return match apply_result_path(
                    catcher.result_path.as_ref(),
                    input,
                    error_output(&failure),
                ) {
                    Ok(output) => Step::Next {
                        state: catcher.next.clone(),
                        output,
                    },
                    Err(failure) => Step::Failed(failure),
                };
            }
            return Step::Failed(failure);
        }
    }

    /// One attempt of a Task: InputPath → Parameters → invoke → ResultSelector →
    /// ResultPath → OutputPath.
    #[allow(clippy::too_many_arguments)] // each argument is a distinct fact of the attempt
    async fn attempt(
        &self,
        execution: &Execution,
        name: &str,
        task: &TaskState,
        raw_input: &Value,
        entered: DateTime<Utc>,
        retry_count: u32,
        token: Option<String>,
    ) -> Result<Value, TaskFailure> {
        let context = self.context(execution, name, entered, retry_count, token.as_deref());
        let effective = select_io(task.input_path.as_ref(), raw_input, &context)?;
        let payload = match &task.parameters {
            Some(parameters) => parameters
                .render(&effective, &context)
                .map_err(TaskFailure::runtime)?,
            None => effective,
        };
        let task_context = TaskContext {
            execution_name: execution.name.clone(),
            execution_id: execution.id.clone(),
            state_name: name.to_owned(),
            task_token: token,
            retry_count,
            timeout: task.timeout,
        };
        let call = self.call(execution, task, raw_input, payload, &task_context);
        let result = match task.timeout {
            Some(limit) => tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
                Err(TaskFailure::new(
                    names::TIMEOUT,
                    format!(
                        "task `{name}` did not finish within {} seconds",
                        limit.as_secs()
                    ),
                ))
            }),
            None => call.await,
        }?;
        let selected = match &task.result_selector {
            Some(selector) => selector
                .render(&result, &context)
                .map_err(TaskFailure::runtime)?,
            None => result,
        };
        let merged = apply_result_path(task.result_path.as_ref(), raw_input.clone(), selected)?;
        select_io(task.output_path.as_ref(), &merged, &context)
    }

    async fn call(
        &self,
        execution: &Execution,
        task: &TaskState,
        raw_input: &Value,
        payload: Value,
        task_context: &TaskContext,
    ) -> Result<Value, TaskFailure> {
        let Some(token) = &task_context.task_token else {
            return self
                .inner
                .invoker
                .invoke(&task.resource, payload, task_context)
                .await;
        };
        // Register before invoking: the resource may call back before `invoke` returns.
        let (sender, receiver) = oneshot::channel();
        self.inner.tokens().insert(token.clone(), sender);
        let _registration = TokenRegistration {
            inner: &self.inner,
            token: token.clone(),
        };
        // Persist the token before handing it out, so that after a restart `resume`
        // waits on the token the outside world knows.
        let mut checkpoint = execution.checkpoint(&task_context.state_name, raw_input);
        checkpoint.task_token = Some(token.clone());
        self.save(&checkpoint).await;
        self.inner
            .invoker
            .invoke(&task.resource, payload, task_context)
            .await?;
        receiver.await.unwrap_or_else(|_| {
            Err(TaskFailure::runtime(format!(
                "task token `{token}` was abandoned before the task completed"
            )))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retrier(interval: u64, rate: f64, cap: Option<u64>, jitter: Jitter) -> Retrier {
        Retrier {
            error_equals: vec![names::ALL.to_owned()],
            interval_seconds: interval,
            max_attempts: 10,
            backoff_rate: rate,
            max_delay_seconds: cap,
            jitter,
        }
    }

    #[test]
    fn backoff_matches_the_aws_example() {
        // Error handling page: IntervalSeconds 3, BackoffRate 1.5 waits 3, 4.5, 6.75, 10.125 s.
        let r = retrier(3, 1.5, None, Jitter::None);
        let waits: Vec<f64> = (0..4).map(|n| retry_delay(&r, n).as_secs_f64()).collect();
        assert_eq!(waits, vec![3.0, 4.5, 6.75, 10.125]);
    }

    #[test]
    fn backoff_is_capped_and_never_panics() {
        let r = retrier(1, 2.0, Some(5), Jitter::None);
        assert_eq!(retry_delay(&r, 10), Duration::from_secs(5));
        let unbounded = retrier(1, 2.0, None, Jitter::None);
        assert_eq!(retry_delay(&unbounded, 5000), Duration::MAX);
    }

    #[test]
    fn full_jitter_stays_within_the_computed_delay() {
        let r = retrier(2, 2.0, Some(10), Jitter::Full);
        for n in 0..200 {
            let d = retry_delay(&r, n % 5);
            let ceiling = (2.0 * 2f64.powi((n % 5) as i32)).min(10.0);
            assert!(d.as_secs_f64() <= ceiling, "{d:?} > {ceiling}");
        }
    }
}
