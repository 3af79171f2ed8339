//! Step Functions adapter for the workflow port: the purchase machine
//! (`STATE_MACHINE_ARN`, `STANDARD` or `EXPRESS` as `WORKFLOW_TYPE` says) and
//! the review machine (`REVIEW_STATE_MACHINE_ARN`, always `STANDARD`).

use async_trait::async_trait;
use aws_sdk_sfn::config::http::HttpResponse;
use aws_sdk_sfn::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sfn::types::ExecutionStatus;

use crate::domain::purchase::TaskDecision;
use crate::ports::workflow::{
    ExecutionState, Machine, Run, Workflow, WorkflowError, WorkflowType, execution_input,
    task_failure, task_output,
};

/// The state machines a function works with. Functions that start,
/// describe or redrive executions have the ARNs they need; those that only
/// complete task tokens need none.
#[derive(Debug, Clone, Default)]
pub struct StateMachines {
    /// `STATE_MACHINE_ARN`: the purchase machine.
    pub purchase: Option<String>,
    /// `REVIEW_STATE_MACHINE_ARN`: the review machine.
    pub review: Option<String>,
    /// `WORKFLOW_TYPE`: how the purchase machine is deployed.
    pub workflow_type: WorkflowType,
}

pub struct StepFunctionsWorkflow {
    client: aws_sdk_sfn::Client,
    machines: StateMachines,
}

impl StepFunctionsWorkflow {
    pub fn new(client: aws_sdk_sfn::Client, machines: StateMachines) -> StepFunctionsWorkflow {
        StepFunctionsWorkflow { client, machines }
    }

    fn state_machine_arn(&self, machine: Machine) -> Result<&str, WorkflowError> {
        let (arn, variable) = match machine {
            Machine::Purchase => (&self.machines.purchase, "STATE_MACHINE_ARN"),
            Machine::Review => (&self.machines.review, "REVIEW_STATE_MACHINE_ARN"),
        };
        arn.as_deref().ok_or_else(|| {
            WorkflowError::Failed(format!("{variable} is not set for this function"))
        })
    }

    /// `arn:aws:states:R:A:stateMachine:NAME` → `arn:aws:states:R:A:execution:NAME:<run>`
    /// (a `STANDARD` machine's executions; an `EXPRESS` one's have no ARN
    /// to build, and nothing to ask them).
    fn execution_arn(&self, machine: Machine, run: &Run) -> Result<String, WorkflowError> {
        let arn = self.state_machine_arn(machine)?;
        match arn.split_once(":stateMachine:") {
            Some((prefix, name)) => Ok(format!("{prefix}:execution:{name}:{}", run.name())),
            None => Err(WorkflowError::Failed(format!(
                "{arn:?} is not a state machine ARN"
            ))),
        }
    }

    /// Refuses what an `EXPRESS` purchase machine cannot answer, before
    /// asking: it keeps no execution history.
    fn history(&self, machine: Machine, what: &str) -> Result<(), WorkflowError> {
        if machine == Machine::Purchase && self.machines.workflow_type == WorkflowType::Express {
            return Err(WorkflowError::Failed(format!(
                "EXPRESS executions keep no history: they cannot be {what}"
            )));
        }
        Ok(())
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
    fn workflow_type(&self) -> WorkflowType {
        self.machines.workflow_type
    }

    async fn start(&self, run: &Run) -> Result<(), WorkflowError> {
        // The execution is named after the run: a STANDARD machine refuses a
        // second execution of a name, so a retried start (SDK retry, client
        // retry with an Idempotency-Key, the reconciler) never runs the
        // purchase twice. An EXPRESS one starts a duplicate, whose steps
        // find their work done.
        let result = self
            .client
            .start_execution()
            .state_machine_arn(self.state_machine_arn(Machine::Purchase)?)
            .name(run.name())
            .input(execution_input(&run.purchase_id).to_string())
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
        machine: Machine,
        run: &Run,
    ) -> Result<Option<ExecutionState>, WorkflowError> {
        self.history(machine, "described")?;
        let result = self
            .client
            .describe_execution()
            .execution_arn(self.execution_arn(machine, run)?)
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

    async fn redrive(&self, run: &Run) -> Result<(), WorkflowError> {
        if self.machines.workflow_type == WorkflowType::Express {
            return Err(WorkflowError::NotAllowed(format!(
                "the execution of purchase {} (run {}) is EXPRESS: it cannot be redriven",
                run.purchase_id, run.number
            )));
        }
        let result = self
            .client
            .redrive_execution()
            .execution_arn(self.execution_arn(Machine::Purchase, run)?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if code_of(&e) == Some("ExecutionNotRedrivable") => {
                // Running: still ending (the purchase says NEEDS_ATTENTION a
                // moment before the execution has failed) or redriven
                // already; a retry in a moment tells which. Anything else
                // cannot be redriven.
                match self.describe(Machine::Purchase, run).await? {
                    Some(ExecutionState::Running) => Err(WorkflowError::Unavailable(format!(
                        "the execution of purchase {} (run {}) is still running; retry in a moment",
                        run.purchase_id, run.number
                    ))),
                    _ => Err(WorkflowError::NotAllowed(format!(
                        "the execution of purchase {} (run {}) cannot be redriven",
                        run.purchase_id, run.number
                    ))),
                }
            }
            Err(e) => Err(classify(e)),
        }
    }
}
