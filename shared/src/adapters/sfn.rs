//! Step Functions adapter for the workflow port.

use async_trait::async_trait;
use aws_sdk_sfn::config::http::HttpResponse;
use aws_sdk_sfn::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sfn::types::ExecutionStatus;

use crate::domain::PurchaseId;
use crate::domain::purchase::TaskDecision;
use crate::ports::workflow::{
    ExecutionState, Workflow, WorkflowError, execution_input, task_failure, task_output,
};

pub struct StepFunctionsWorkflow {
    client: aws_sdk_sfn::Client,
    /// Functions that start, describe or redrive executions have it; those
    /// that only complete task tokens do not need it.
    state_machine_arn: Option<String>,
}

impl StepFunctionsWorkflow {
    pub fn new(
        client: aws_sdk_sfn::Client,
        state_machine_arn: Option<String>,
    ) -> StepFunctionsWorkflow {
        StepFunctionsWorkflow {
            client,
            state_machine_arn,
        }
    }

    fn state_machine_arn(&self) -> Result<&str, WorkflowError> {
        self.state_machine_arn.as_deref().ok_or_else(|| {
            WorkflowError::Failed("STATE_MACHINE_ARN is not set for this function".into())
        })
    }

    /// `arn:aws:states:R:A:stateMachine:NAME` → `arn:aws:states:R:A:execution:NAME:<purchaseId>`.
    fn execution_arn(&self, purchase_id: &PurchaseId) -> Result<String, WorkflowError> {
        let machine = self.state_machine_arn()?;
        match machine.split_once(":stateMachine:") {
            Some((prefix, name)) => Ok(format!("{prefix}:execution:{name}:{purchase_id}")),
            None => Err(WorkflowError::Failed(format!(
                "STATE_MACHINE_ARN {machine:?} is not a state machine ARN"
            ))),
        }
    }
}

/// Codes meaning the parked task is gone: nobody is left to tell.
const TASK_GONE: [&str; 3] = ["TaskDoesNotExist", "TaskTimedOut", "InvalidToken"];

/// Codes worth retrying later.
const RETRYABLE: [&str; 4] = [
    "ThrottlingException",
    "KmsThrottlingException",
    "ServiceUnavailable",
    "InternalFailure",
];

/// One classification for every call: throttling, timeouts and 5xx may
/// succeed later; a gone task is final; anything else (access denied, KMS,
/// validation) is a failure someone must fix, never mistaken for "gone".
fn classify<E>(error: SdkError<E, HttpResponse>) -> WorkflowError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let detail = DisplayErrorContext(&error).to_string();
    match &error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            WorkflowError::Unavailable(detail)
        }
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            if TASK_GONE.contains(&code) {
                WorkflowError::TaskGone(detail)
            } else if RETRYABLE.contains(&code) || service.raw().status().is_server_error() {
                WorkflowError::Unavailable(detail)
            } else {
                WorkflowError::Failed(detail)
            }
        }
        _ => WorkflowError::Failed(detail),
    }
}

fn code_of<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> Option<&str> {
    error.as_service_error().and_then(|e| e.code())
}

#[async_trait]
impl Workflow for StepFunctionsWorkflow {
    async fn start(&self, purchase_id: &PurchaseId) -> Result<(), WorkflowError> {
        // The execution name is the purchase id: Step Functions refuses a
        // second execution with the same name, so a retried start (SDK retry,
        // client retry with an Idempotency-Key, the reconciler) can never run
        // the purchase twice.
        let result = self
            .client
            .start_execution()
            .state_machine_arn(self.state_machine_arn()?)
            .name(purchase_id.as_str())
            .input(execution_input(purchase_id).to_string())
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if code_of(&e) == Some("ExecutionAlreadyExists") => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    async fn describe(
        &self,
        purchase_id: &PurchaseId,
    ) -> Result<Option<ExecutionState>, WorkflowError> {
        let result = self
            .client
            .describe_execution()
            .execution_arn(self.execution_arn(purchase_id)?)
            .send()
            .await;
        match result {
            Ok(output) => Ok(Some(match output.status() {
                ExecutionStatus::Succeeded => ExecutionState::Succeeded,
                ExecutionStatus::Failed | ExecutionStatus::TimedOut | ExecutionStatus::Aborted => {
                    ExecutionState::Failed
                }
                _ => ExecutionState::Running,
            })),
            Err(e) if code_of(&e) == Some("ExecutionDoesNotExist") => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    async fn notify(&self, task_token: &str, decision: TaskDecision) -> Result<(), WorkflowError> {
        match (decision, task_failure(decision)) {
            (TaskDecision::Resume { at }, _) => self
                .client
                .send_task_success()
                .task_token(task_token)
                .output(task_output(at).to_string())
                .send()
                .await
                .map(|_| ())
                .map_err(classify),
            (_, Some((error, cause))) => self
                .client
                .send_task_failure()
                .task_token(task_token)
                .error(error)
                .cause(cause)
                .send()
                .await
                .map(|_| ())
                .map_err(classify),
            (_, None) => Ok(()),
        }
    }

    async fn redrive(&self, purchase_id: &PurchaseId) -> Result<(), WorkflowError> {
        let result = self
            .client
            .redrive_execution()
            .execution_arn(self.execution_arn(purchase_id)?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if code_of(&e) == Some("ExecutionNotRedrivable") => {
                // Running: still ending (the purchase says NEEDS_ATTENTION a
                // moment before the execution has failed) or redriven
                // already; a retry in a moment tells which. Anything else
                // cannot be redriven.
                match self.describe(purchase_id).await? {
                    Some(ExecutionState::Running) => Err(WorkflowError::Unavailable(format!(
                        "the execution of purchase {purchase_id} is still running; retry in a moment"
                    ))),
                    _ => Err(WorkflowError::NotAllowed(format!(
                        "the execution of purchase {purchase_id} cannot be redriven"
                    ))),
                }
            }
            Err(e) => Err(classify(e)),
        }
    }
}
