//! The workflow port: starting the purchase state machine for a stored
//! purchase. On AWS this is Step Functions ([`crate::sfn`]); in local mode the
//! local server runs the same definition in-process.

use async_trait::async_trait;

/// The state machine definition, shared by the SAM template (by path) and
/// the local runner (compiled in here, so both always run the same file).
pub const DEFINITION: &str = include_str!("../../statemachine/purchase.asl.json");

#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// Throttling or an outage; the purchase is stored and the start can be retried.
    #[error("workflow service unavailable: {0}")]
    Unavailable(String),
    #[error("workflow failure: {0}")]
    Internal(String),
}

#[async_trait]
pub trait Workflow: Send + Sync {
    /// Starts the workflow for a stored purchase. Starting it twice for the
    /// same purchase is a no-op (the execution is named after the purchase).
    async fn start(&self, purchase_id: &str) -> Result<(), WorkflowError>;

    /// Completes a waiting `.waitForTaskToken` task (Step Functions'
    /// `SendTaskSuccess`): the review endpoint approving a held purchase.
    async fn send_task_success(
        &self,
        task_token: &str,
        output: serde_json::Value,
    ) -> Result<(), WorkflowError>;

    /// Fails a waiting task (`SendTaskFailure`) with a stable error name the
    /// definition catches (`PurchaseRejected`, `PurchaseCancelled`).
    async fn send_task_failure(
        &self,
        task_token: &str,
        error: &str,
        cause: &str,
    ) -> Result<(), WorkflowError>;
}

/// What a decided review tells the waiting `AwaitReview` task: approval
/// resumes the forward path at `resumeAt` (the status the purchase was held
/// from); rejection or cancellation fails the task so the definition compensates.
pub fn review_decision(
    purchase: &crate::model::Purchase,
) -> Result<serde_json::Value, (&'static str, String)> {
    use crate::model::PurchaseStatus;
    match purchase.status {
        PurchaseStatus::Rejected => Err((
            "PurchaseRejected",
            format!("purchase {} was rejected on review", purchase.purchase_id),
        )),
        PurchaseStatus::Cancelled => Err((
            "PurchaseCancelled",
            format!("purchase {} was cancelled", purchase.purchase_id),
        )),
        status => Ok(serde_json::json!({ "resumeAt": status })),
    }
}

/// The execution input: everything else is read from the store by each step,
/// so a retried step always sees the latest purchase.
pub fn execution_input(purchase_id: &str) -> serde_json::Value {
    serde_json::json!({ "purchaseId": purchase_id })
}
