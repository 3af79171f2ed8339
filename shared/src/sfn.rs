//! Step Functions adapter for the workflow port.

use async_trait::async_trait;
use aws_sdk_sfn::error::SdkError;
use aws_sdk_sfn::operation::start_execution::StartExecutionError;

use crate::workflow::{Workflow, WorkflowError, execution_input};

pub struct StepFunctionsWorkflow {
    client: aws_sdk_sfn::Client,
    /// Only the create function starts executions, so only it has the ARN.
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
}

#[async_trait]
impl Workflow for StepFunctionsWorkflow {
    async fn start(&self, purchase_id: &str) -> Result<(), WorkflowError> {
        // The execution name is the purchase id: Step Functions refuses a
        // second execution with the same name, so a retried start (SDK retry,
        // client retry with an Idempotency-Key) can never run the purchase twice.
        let Some(arn) = &self.state_machine_arn else {
            return Err(WorkflowError::Internal(
                "STATE_MACHINE_ARN is not set for this function".into(),
            ));
        };
        let result = self
            .client
            .start_execution()
            .state_machine_arn(arn)
            .name(purchase_id)
            .input(execution_input(purchase_id).to_string())
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(error)) => match error.err() {
                StartExecutionError::ExecutionAlreadyExists(_) => Ok(()),
                other => Err(WorkflowError::Internal(other.to_string())),
            },
            Err(
                error @ (SdkError::TimeoutError(_)
                | SdkError::DispatchFailure(_)
                | SdkError::ResponseError(_)),
            ) => Err(WorkflowError::Unavailable(error.to_string())),
            Err(other) => Err(WorkflowError::Internal(other.to_string())),
        }
    }

    async fn send_task_success(
        &self,
        task_token: &str,
        output: serde_json::Value,
    ) -> Result<(), WorkflowError> {
        self.client
            .send_task_success()
            .task_token(task_token)
            .output(output.to_string())
            .send()
            .await
            .map(|_| ())
            .map_err(callback_error)
    }

    async fn send_task_failure(
        &self,
        task_token: &str,
        error: &str,
        cause: &str,
    ) -> Result<(), WorkflowError> {
        self.client
            .send_task_failure()
            .task_token(task_token)
            .error(error)
            .cause(cause)
            .send()
            .await
            .map(|_| ())
            .map_err(callback_error)
    }
}

fn callback_error<E: std::error::Error + 'static, R: std::fmt::Debug>(
    error: SdkError<E, R>,
) -> WorkflowError {
    match &error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            WorkflowError::Unavailable(error.to_string())
        }
        _ => WorkflowError::Internal(aws_sdk_sfn::error::DisplayErrorContext(&error).to_string()),
    }
}
