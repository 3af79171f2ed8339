//! The reconciler: nothing stays stuck without somebody noticing.
//!
//! It looks at purchases that are not final and have not changed for a
//! while, and asks the workflow about the purchase's current run (see
//! `ports::workflow`): the purchase machine's execution of it, and the
//! review machine's, which moves a purchase on hold (the purchase run ends
//! when it hands the purchase over) until it starts the next run.
//!
//! `STANDARD` purchase machine, every execution can be described:
//!
//! - none: the workflow never started (a start that failed ambiguously, a
//!   process that died between storing the purchase and starting it). A
//!   purchase nothing has happened to is started now; one that moved
//!   without an execution to move it is flagged `NEEDS_ATTENTION`.
//! - running, or a review running: fine (a review may wait for days). A
//!   decision its parked task has not heard yet is delivered.
//! - failed: fine if the purchase already says `NEEDS_ATTENTION`; otherwise
//!   the execution failed without saying so, and the purchase is flagged.
//! - succeeded while the purchase is not final and no review has it: flagged.
//!
//! `EXPRESS` purchase machine: its executions keep no history, so they
//! cannot be asked about, and one may be lost (at-least-once, at most five
//! minutes, gone with its state when it times out). A purchase no review
//! has, unchanged for longer than any run can last ([`EXPRESS_RESTART_AFTER`]),
//! is not moving: a new run is started, which continues where the purchase
//! stands (every step skips what is done). After [`MAX_RESTARTS`] of them it
//! is flagged instead: something keeps killing its runs.
//!
//! It runs every few minutes: an EventBridge schedule on AWS
//! (`functions/reconcile-purchases`), a background task in local mode.

use std::time::Duration;

use chrono::Utc;

use crate::domain::PurchaseId;
use crate::domain::lifecycle::{Command, Effect, Outcome};
use crate::domain::purchase::{FailureReason, MAX_RESTARTS, Purchase, PurchaseStatus};
use crate::ports::store::{PurchaseStore, StoreError};
use crate::ports::workflow::{ExecutionState, Machine, Run, Workflow, WorkflowError, WorkflowType};

use super::{apply, deliver};

/// How many purchases one pass looks at, at most.
pub const BATCH: usize = 100;

/// How long an `EXPRESS` purchase must be unchanged before its run is taken
/// for lost: an Express execution runs five minutes at most, and every run
/// writes to the purchase within seconds of its start (the write that began
/// it comes first), so after ten minutes no run of it can still be going.
pub const EXPRESS_RESTART_AFTER: Duration = Duration::from_secs(600);

/// How long purchases must have been unchanged before the reconciler acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ages {
    /// Before it looks at a purchase at all (`RECONCILE_AFTER_SECONDS`).
    pub look_after: Duration,
    /// Before it takes an `EXPRESS` run for lost and starts a new one.
    pub restart_after: Duration,
}

impl Ages {
    /// `look_after` as configured, and restarts never before
    /// [`EXPRESS_RESTART_AFTER`].
    pub fn new(look_after: Duration) -> Ages {
        Ages {
            look_after,
            restart_after: look_after.max(EXPRESS_RESTART_AFTER),
        }
    }
}

/// What one pass found, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    pub examined: usize,
    pub started: usize,
    /// New runs started for `EXPRESS` runs taken for lost.
    pub restarted: usize,
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
    reconcile_with(purchases, workflow, Ages::new(stale_after)).await
}

/// One pass, with both ages given (tests shorten the restart age).
pub async fn reconcile_with(
    purchases: &dyn PurchaseStore,
    workflow: &dyn Workflow,
    ages: Ages,
) -> Result<Findings, StoreError> {
    let before = Utc::now() - chrono_duration(ages.look_after);
    let stale = purchases.unfinished_purchases(before, BATCH).await?;
    let mut findings = Findings::default();
    for purchase in stale {
        findings.examined += 1;
        let id = purchase.purchase_id.clone();
        match examine(purchases, workflow, &purchase, ages).await {
            Ok(Finding::Started) => findings.started += 1,
            Ok(Finding::Restarted) => findings.restarted += 1,
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

fn chrono_duration(age: Duration) -> chrono::Duration {
    chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX)
}

enum Finding {
    Started,
    Restarted,
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
    ages: Ages,
) -> Result<Finding, ExamineError> {
    if purchase.status == PurchaseStatus::NeedsAttention {
        return Ok(Finding::Fine); // visible already; an operator decides
    }
    match workflow.workflow_type() {
        WorkflowType::Standard => examine_standard(purchases, workflow, purchase).await,
        WorkflowType::Express => examine_express(purchases, workflow, purchase, ages).await,
    }
}

async fn examine_standard(
    purchases: &dyn PurchaseStore,
    workflow: &dyn Workflow,
    purchase: &Purchase,
) -> Result<Finding, ExamineError> {
    let id = &purchase.purchase_id;
    let run = Run::current(purchase);
    let state = workflow.describe(Machine::Purchase, &run).await?;
    match state {
        None if purchase.is_untouched() && run.number == 1 => {
            workflow.start(&run).await?;
            tracing::warn!(purchase_id = %id, "reconciler started a purchase whose workflow never started");
            return Ok(Finding::Started);
        }
        Some(ExecutionState::Running) => return moving(purchases, workflow, purchase).await,
        Some(ExecutionState::Failed) => {
            return flag(purchases, id, "Workflow", "ExecutionFailed").await;
        }
        None | Some(ExecutionState::Succeeded) => {}
    }
    // The run handed the purchase over to a review (and ended there), or a
    // review is about to start it.
    if in_review(workflow, &run).await? {
        return moving(purchases, workflow, purchase).await;
    }
    let error = match state {
        None => "ExecutionMissing",
        _ => "ExecutionEndedEarly",
    };
    flag(purchases, id, "Workflow", error).await
}

async fn examine_express(
    purchases: &dyn PurchaseStore,
    workflow: &dyn Workflow,
    purchase: &Purchase,
    ages: Ages,
) -> Result<Finding, ExamineError> {
    let id = &purchase.purchase_id;
    let run = Run::current(purchase);
    // The review machine is STANDARD: it can be asked.
    if in_review(workflow, &run).await? {
        return moving(purchases, workflow, purchase).await;
    }
    let unchanged = Utc::now() - purchase.updated_at;
    if unchanged < chrono_duration(ages.restart_after) {
        return Ok(Finding::Running); // a run may still be going
    }
    if purchase.restarts >= MAX_RESTARTS {
        return flag(purchases, id, "Workflow", "ExecutionLost").await;
    }
    let transition = apply(purchases, id, |_| Command::RestartRun { after: run.number }).await?;
    for effect in &transition.effects {
        if let Effect::StartRun(number) = effect {
            let next = Run::new(id.clone(), *number);
            workflow.start(&next).await?;
            tracing::warn!(purchase_id = %id, run = number, "reconciler started a new run: the last one was lost");
            return Ok(Finding::Restarted);
        }
    }
    Ok(Finding::Fine) // started by a pass racing this one, or final meanwhile
}

/// Whether a review execution moves the purchase: the review of `run`'s
/// hold, or the one of the run before, still starting `run`.
async fn in_review(workflow: &dyn Workflow, run: &Run) -> Result<bool, WorkflowError> {
    if workflow.describe(Machine::Review, run).await? == Some(ExecutionState::Running) {
        return Ok(true);
    }
    if run.number > 1 {
        let before = Run::new(run.purchase_id.clone(), run.number - 1);
        return Ok(
            workflow.describe(Machine::Review, &before).await? == Some(ExecutionState::Running)
        );
    }
    Ok(false)
}

/// An execution moves the purchase: fine, but a decision its parked task
/// has not heard is delivered.
async fn moving(
    purchases: &dyn PurchaseStore,
    workflow: &dyn Workflow,
    purchase: &Purchase,
) -> Result<Finding, ExamineError> {
    match purchase.pending_notification() {
        Some((token, decision)) => {
            deliver(purchases, workflow, &purchase.purchase_id, token, decision).await?;
            Ok(Finding::Notified)
        }
        None => Ok(Finding::Running),
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
