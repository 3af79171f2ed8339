//! What a Task state's `Resource` does here, as Step Functions does it:
//!
//! - a function ARN: the function is invoked with the state's input, its
//!   answer is the result;
//! - `arn:aws:states:::lambda:invoke`: `Parameters.FunctionName` is invoked
//!   with `Parameters.Payload`, the result wraps the answer (`Payload`,
//!   `StatusCode`, `ExecutedVersion`, the SDK's metadata);
//! - `arn:aws:states:::lambda:invoke.waitForTaskToken`: the same call, then
//!   the state waits for `SendTaskSuccess` / `SendTaskFailure`;
//! - `arn:aws:states:::states:startExecution`: starts another machine's
//!   execution and answers `{ExecutionArn, StartDate}` (request-response).
//!
//! A function error becomes the error name Retry and Catch see: its
//! `errorType`, or `Lambda.Unknown` when it has none; the cause is the error
//! document. An invocation that fails before the function answers becomes
//! `Lambda.<the service's error type>` (`Lambda.ResourceNotFoundException`,
//! `Lambda.TooManyRequestsException`, `Lambda.ServiceException`, ...) or,
//! with no answer at all, `Lambda.SdkClientException`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};

use asl::{TaskContext, TaskFailure, TaskInvoker};
use async_trait::async_trait;
use bytes::Bytes;
use local::{Attempt, StepHook};
use serde_json::{Value, json};
use shared::steps::Step;

use super::StepFunctionsService;
use crate::lambda::client::{InvokeFailure, LambdaClient};

pub const LAMBDA_INVOKE: &str = "arn:aws:states:::lambda:invoke";
pub const LAMBDA_INVOKE_WAIT: &str = "arn:aws:states:::lambda:invoke.waitForTaskToken";
pub use local::executions::START_EXECUTION;
const FUNCTION_ARN_PREFIX: &str = "arn:aws:lambda:";

/// `States.Runtime`: a fault of the definition, never retried nor caught.
fn runtime(cause: impl Into<String>) -> TaskFailure {
    TaskFailure::new(asl::error_names::RUNTIME, cause)
}

/// Whether the resource is one this endpoint runs; `Err` says why not.
pub fn check_resource(resource: &str, express: bool) -> Result<(), String> {
    if resource.starts_with(FUNCTION_ARN_PREFIX)
        || resource == LAMBDA_INVOKE
        || resource == START_EXECUTION
    {
        return Ok(());
    }
    if resource == LAMBDA_INVOKE_WAIT {
        // Step Functions refuses the callback pattern in Express machines.
        return if express {
            Err("an EXPRESS state machine does not support the '.waitForTaskToken' service integration pattern".into())
        } else {
            Ok(())
        };
    }
    Err(format!(
        "Task resource {resource:?} is not one aws-local runs (a Lambda function ARN, {LAMBDA_INVOKE}[.waitForTaskToken], {START_EXECUTION})"
    ))
}

/// Runs Task states against the Lambda Invoke API and this endpoint.
pub struct TaskRunner {
    lambda: LambdaClient,
    /// Function name or ARN → its binary, to tell step hooks which step runs.
    binaries: HashMap<String, String>,
    hook: Option<Arc<dyn StepHook>>,
    /// The endpoint itself, for `states:startExecution`: set once it exists
    /// (it owns the runners that own this, so it is held weakly).
    states: OnceLock<Weak<StepFunctionsService>>,
}

impl TaskRunner {
    pub fn new(
        lambda: LambdaClient,
        binaries: HashMap<String, String>,
        hook: Option<Arc<dyn StepHook>>,
    ) -> TaskRunner {
        TaskRunner {
            lambda,
            binaries,
            hook,
            states: OnceLock::new(),
        }
    }

    pub fn connect(&self, states: &Arc<StepFunctionsService>) {
        let _ = self.states.set(Arc::downgrade(states));
    }

    /// `states:startExecution`, as local mode runs it: the same
    /// integration over the same executions host.
    fn start_execution(&self, parameters: &Value) -> Result<Value, TaskFailure> {
        let states = self.states.get().and_then(Weak::upgrade).ok_or_else(|| {
            TaskFailure::new(
                "States.TaskFailed",
                "the Step Functions endpoint is not running",
            )
        })?;
        states.executions().start_execution_task(parameters)
    }
}

/// The failure a function error document stands for.
pub fn function_failure(document: &Bytes) -> TaskFailure {
    let text = String::from_utf8_lossy(document).into_owned();
    let error_type = serde_json::from_slice::<Value>(document)
        .ok()
        .and_then(|v| {
            v.get("errorType")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .filter(|t| !t.is_empty());
    match error_type {
        Some(error_type) => TaskFailure::new(error_type, text),
        None => TaskFailure::new(
            "Lambda.Unknown",
            format!(
                "The cause could not be determined because Lambda did not return an error type. Returned payload: {text}"
            ),
        ),
    }
}

fn invoke_failure(failure: InvokeFailure) -> TaskFailure {
    match failure {
        InvokeFailure::Service {
            error_type,
            message,
            status,
        } => TaskFailure::new(
            format!("Lambda.{error_type}"),
            format!("{message} (Service: Lambda, Status Code: {status})"),
        ),
        InvokeFailure::Transport(message) => TaskFailure::new(
            "Lambda.SdkClientException",
            format!("Unable to execute HTTP request: {message}"),
        ),
    }
}

#[async_trait]
impl TaskInvoker for TaskRunner {
    async fn invoke(
        &self,
        resource: &str,
        input: Value,
        _context: &TaskContext,
    ) -> Result<Value, TaskFailure> {
        let integration = resource == LAMBDA_INVOKE || resource == LAMBDA_INVOKE_WAIT;
        let (function, payload) = if integration {
            let function = input
                .get("FunctionName")
                .and_then(Value::as_str)
                .ok_or_else(|| runtime("lambda:invoke needs Parameters.FunctionName"))?
                .to_owned();
            (
                function,
                input.get("Payload").cloned().unwrap_or_else(|| json!({})),
            )
        } else if resource == START_EXECUTION {
            return self.start_execution(&input);
        } else if resource.starts_with(FUNCTION_ARN_PREFIX) {
            (resource.to_owned(), input)
        } else {
            return Err(runtime(format!("unsupported Task resource {resource}")));
        };

        let step = self
            .binaries
            .get(&function)
            .and_then(|binary| Step::from_function_name(binary));
        let purchase_id = payload
            .get("purchaseId")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if let (Some(hook), Some(step)) = (&self.hook, step)
            && let Attempt::Fail(failure) = hook.before(step, &purchase_id).await
        {
            return Err(failure);
        }

        let result = match self
            .lambda
            .invoke(&function, Bytes::from(payload.to_string()))
            .await
        {
            Err(failure) => Err(invoke_failure(failure)),
            Ok(invoked) if invoked.function_error.is_some() => {
                Err(function_failure(&invoked.payload))
            }
            Ok(invoked) => {
                let answer =
                    serde_json::from_slice::<Value>(&invoked.payload).unwrap_or_else(|_| {
                        Value::String(String::from_utf8_lossy(&invoked.payload).into_owned())
                    });
                Ok(if integration {
                    json!({
                        "ExecutedVersion": invoked.executed_version,
                        "Payload": answer,
                        "SdkHttpMetadata": {
                            "HttpHeaders": {
                                "Content-Type": "application/json",
                                "X-Amz-Executed-Version": invoked.executed_version,
                                "x-amzn-RequestId": invoked.request_id,
                            },
                            "HttpStatusCode": 200,
                        },
                        "SdkResponseMetadata": { "RequestId": invoked.request_id },
                        "StatusCode": 200,
                    })
                } else {
                    answer
                })
            }
        };
        if let (Some(hook), Some(step)) = (&self.hook, step)
            && let Some(failure) = hook.after(step, &purchase_id, &result).await
        {
            return Err(failure);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_function_error_is_named_by_its_error_type_or_lambda_unknown() {
        let named = function_failure(&Bytes::from(
            r#"{"errorType":"PaymentDeclined","errorMessage":"no"}"#,
        ));
        assert_eq!(named.error, "PaymentDeclined");
        assert!(named.cause.contains("\"errorMessage\":\"no\""));
        let unnamed = function_failure(&Bytes::from(r#"{"errorMessage":"Task timed out"}"#));
        assert_eq!(unnamed.error, "Lambda.Unknown");
        assert!(unnamed.cause.contains("Task timed out"));
    }

    #[test]
    fn invoke_failures_are_lambda_errors() {
        let throttled = invoke_failure(InvokeFailure::Service {
            status: 429,
            error_type: "TooManyRequestsException".into(),
            message: "Rate exceeded".into(),
        });
        assert_eq!(throttled.error, "Lambda.TooManyRequestsException");
        assert_eq!(
            invoke_failure(InvokeFailure::Transport("refused".into())).error,
            "Lambda.SdkClientException"
        );
    }

    #[test]
    fn express_machines_refuse_the_callback_pattern() {
        assert!(check_resource(LAMBDA_INVOKE_WAIT, false).is_ok());
        assert!(check_resource(LAMBDA_INVOKE_WAIT, true).is_err());
        assert!(check_resource("arn:aws:states:::sqs:sendMessage", false).is_err());
        assert!(check_resource("arn:aws:lambda:us-east-1:1:function:f", true).is_ok());
    }
}
