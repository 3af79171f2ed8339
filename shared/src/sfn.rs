//! Step Functions adapter for the workflow port.

use async_trait::async_trait;
use aws_sdk_sfn::error::SdkError;
use aws_sdk_sfn::operation::start_execution::StartExecutionError;

use crate::workflow::{Workflow, WorkflowError, execution_input};

pub struct StepFunctionsWorkflow {
    client: aws_sdk_sfn::Client,
    state_machine_arn: String,
}

impl StepFunctionsWorkflow {
    pub fn new(client: aws_sdk_sfn::Client, state_machine_arn: String) -> StepFunctionsWorkflow {
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
        let result = self
            .client
            .start_execution()
            .state_machine_arn(&self.state_machine_arn)
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
            Err(error @ (SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_))) => {
                Err(WorkflowError::Unavailable(error.to_string()))
            }
            Err(other) => Err(WorkflowError::Internal(other.to_string())),
        }
    }
}
