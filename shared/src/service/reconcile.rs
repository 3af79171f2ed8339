//! The reconciler: nothing stays stuck without somebody noticing.
//!
//! It looks at purchases that are not final and have not changed for a
//! while, and asks the workflow about each one's execution (named after the
//! purchase):
//!
//! - none: the workflow never started (a start that failed ambiguously, a
//!   process that died between storing the purchase and starting it). A
//!   purchase nothing has happened to is started now; one that moved without
//!   an execution is flagged `NEEDS_ATTENTION`.
//! - running: fine (it may be parked in review for days). A decision its
//!   parked task has not heard yet is delivered.
//! - failed: fine if the purchase already says `NEEDS_ATTENTION`; otherwise
//!   the execution failed without saying so, and the purchase is flagged.
//! - succeeded while the purchase is not final: flagged.
//!
//! It runs every few minutes: an EventBridge schedule on AWS
//! (`functions/reconcile-purchases`), a background task in local mode.

use std::time::Duration;

use chrono::Utc;

use crate::domain::PurchaseId;
use crate::domain::lifecycle::{Command, Outcome};
use crate::domain::purchase::{FailureReason, Purchase, PurchaseStatus};
use crate::ports::store::{PurchaseStore, StoreError};
use crate::ports::workflow::{ExecutionState, Workflow, WorkflowError};

use super::{apply, deliver};

/// How many purchases one pass looks at, at most.
pub const BATCH: usize = 100;

/// What one pass found, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    pub examined: usize,
    pub started: usize,
    pub running: usize,
    pub notified: usize,
    pub flagged: usize,
    /// Purchases that could not be looked at this time (the workflow or the
    /// store did not answer); the next pass tries again.
    pub skipped: usize,
}

/// One pass over the purchases unchanged for `stale_after`.
pub async fn reconcile(
    purchases: &dyn PurchaseStore,
    workflow: &dyn Workflow,
    stale_after: Duration,
) -> Result<Findings, StoreError> {
    let before =
        Utc::now() - chrono::Duration::from_std(stale_after).unwrap_or(chrono::Duration::zero());
    let stale = purchases.unfinished_purchases(before, BATCH).await?;
    let mut findings = Findings::default();
    for purchase in stale {
        findings.examined += 1;
        let id = purchase.purchase_id.clone();
        match examine(purchases, workflow, &purchase).await {
            Ok(Finding::Started) => findings.started += 1,
            Ok(Finding::Running) => findings.running += 1,
            Ok(Finding::Notified) => findings.notified += 1,
            Ok(Finding::Flagged) => findings.flagged += 1,
            Ok(Finding::Fine) => {}
            Err(error) => {
                tracing::warn!(purchase_id = %id, %error, "reconciler could not examine purchase");
                findings.skipped += 1;
            }
        }
    }
    if findings != Findings::default() {
        tracing::info!(?findings, "reconciler pass");
    }
    Ok(findings)
}

enum Finding {
    Started,
    Running,
    Notified,
    Flagged,
    Fine,
}

#[derive(Debug, thiserror::Error)]
enum ExamineError {
    #[error(transparent)]
    Workflow(#[from] WorkflowError),
    #[error(transparent)]
    Transition(#[from] super::TransitionError),
    #[error(transparent)]
    Notify(#[from] super::NotifyError),
}

async fn examine(
    purchases: &dyn PurchaseStore,
    workflow: &dyn Workflow,
    purchase: &Purchase,
) -> Result<Finding, ExamineError> {
    let id = &purchase.purchase_id;
    if purchase.status == PurchaseStatus::NeedsAttention {
        return Ok(Finding::Fine); // visible already; an operator decides
    }
    match workflow.describe(id).await? {
        None if purchase.is_untouched() => {
            workflow.start(id).await?;
            tracing::warn!(purchase_id = %id, "reconciler started a purchase whose workflow never started");
            Ok(Finding::Started)
        }
        None => flag(purchases, id, "Workflow", "ExecutionMissing").await,
        Some(ExecutionState::Running) => match purchase.pending_notification() {
            Some((token, decision)) => {
                deliver(purchases, workflow, id, token, decision).await?;
                Ok(Finding::Notified)
            }
            None => Ok(Finding::Running),
        },
        Some(ExecutionState::Failed) => flag(purchases, id, "Workflow", "ExecutionFailed").await,
        Some(ExecutionState::Succeeded) => {
            flag(purchases, id, "Workflow", "ExecutionEndedEarly").await
        }
    }
}

/// Makes a purchase the workflow cannot move visible to an operator.
async fn flag(
    purchases: &dyn PurchaseStore,
    id: &PurchaseId,
    failed_step: &str,
    error: &str,
) -> Result<Finding, ExamineError> {
    tracing::error!(purchase_id = %id, error, "purchase stranded without a workflow to move it");
    apply(purchases, id, |_| Command::NeedsAttention {
        failed_step,
        error,
        outcome: Outcome {
            status: PurchaseStatus::Failed,
            failure_reason: Some(FailureReason::InternalError),
        },
    })
    .await?;
    Ok(Finding::Flagged)
}
