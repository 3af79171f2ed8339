//! The workflow port: the purchase state machine's executions, one per
//! purchase, named by its id. On AWS this is Step Functions
//! (`adapters::sfn`); in local mode the local server runs the same definition
//! in-process (`local::workflow`).

use async_trait::async_trait;

use crate::domain::PurchaseId;
use crate::domain::purchase::{PurchaseStatus, TaskDecision};

/// The state machine definition, shared by the SAM template (by path) and
/// the local runner (compiled in here, so both always run the same file).
pub const DEFINITION: &str = include_str!("../../../statemachine/purchase.asl.json");

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkflowError {
    /// Throttling, a timeout or an outage: the call may or may not have taken
    /// effect, and may be retried.
    #[error("workflow service unavailable: {0}")]
    Unavailable(String),
    /// The parked task is gone (`TaskDoesNotExist`, `TaskTimedOut`,
    /// `InvalidToken`): there is nobody left to tell.
    #[error("the workflow task is gone: {0}")]
    TaskGone(String),
    /// The execution is not in a state that allows this (`ExecutionNotRedrivable`).
    #[error("{0}")]
    NotAllowed(String),
    /// Anything else (access denied, a validation error, a missing ARN):
    /// nothing happened, and retrying will not help until someone fixes it.
    #[error("workflow failure: {0}")]
    Failed(String),
}

/// Where a purchase's execution stands, as the workflow service knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionState {
    Running,
    Succeeded,
    /// Failed, timed out or aborted: redrivable.
    Failed,
}

#[async_trait]
pub trait Workflow: Send + Sync {
    /// Starts the purchase's execution. Starting it again is a no-op (the
    /// execution is named after the purchase).
    async fn start(&self, purchase_id: &PurchaseId) -> Result<(), WorkflowError>;

    /// The purchase's execution, or `None` if it was never started.
    async fn describe(
        &self,
        purchase_id: &PurchaseId,
    ) -> Result<Option<ExecutionState>, WorkflowError>;

    /// Tells a parked task (`.waitForTaskToken`) a decision: approval
    /// completes it (`SendTaskSuccess` with `{"resumeAt": STATUS}`), anything
    /// else fails it with the error name the definition catches.
    async fn notify(&self, task_token: &str, decision: TaskDecision) -> Result<(), WorkflowError>;

    /// Restarts the purchase's failed execution at the step that failed
    /// (`RedriveExecution`). One still running (ending, or redriven
    /// already) is `Unavailable`: retry in a moment.
    async fn redrive(&self, purchase_id: &PurchaseId) -> Result<(), WorkflowError>;
}

/// The error name a parked task fails with for a decision, or `None` when
/// the decision completes it. The definition's `AwaitReview` catches these.
pub fn task_failure(decision: TaskDecision) -> Option<(&'static str, &'static str)> {
    match decision {
        TaskDecision::Resume { .. } => None,
        TaskDecision::Rejected => Some(("PurchaseRejected", "the purchase was rejected")),
        TaskDecision::Stopped => Some(("PurchaseStopped", "the purchase was stopped")),
    }
}

/// The output that completes a parked task on approval.
pub fn task_output(at: PurchaseStatus) -> serde_json::Value {
    serde_json::json!({ "resumeAt": at })
}

/// The execution input: everything else is read from the store by each step,
/// so a retried step always sees the latest purchase.
pub fn execution_input(purchase_id: &PurchaseId) -> serde_json::Value {
    serde_json::json!({ "purchaseId": purchase_id })
}
