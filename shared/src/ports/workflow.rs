//! The workflow port: the two state machines a purchase runs through.
//!
//! - The **purchase machine** (`statemachine/purchase.asl.json`): rules,
//!   availability, payment, provisioning, and the undoing path. Deployed as
//!   a `STANDARD` or an `EXPRESS` workflow ([`WorkflowType`]); the same
//!   definition either way.
//! - The **review machine** (`statemachine/review.asl.json`), always
//!   `STANDARD`: a purchase put on hold is handed to it (the purchase run
//!   ends there), it waits for the review (up to 14 days, which an `EXPRESS`
//!   workflow cannot), then starts the purchase machine again as a new run.
//!
//! A purchase's executions are *runs*, numbered from 1 and named after the
//! purchase ([`Run::name`]): run 1 is `<purchaseId>` (the name every
//! purchase had before runs existed), run n is `<purchaseId>-<n>`. The
//! review execution of a hold is named after the run that handed it over.
//! Names are deterministic, so a repeated start is harmless: a `STANDARD`
//! machine refuses a second execution of a name, and the steps of an
//! `EXPRESS` one (which runs duplicates) are idempotent.
//!
//! On AWS this is Step Functions (`adapters::sfn`); in local mode the local
//! server runs the same definitions in-process (`local::workflow`).

use async_trait::async_trait;

use crate::domain::PurchaseId;
use crate::domain::purchase::{PurchaseStatus, TaskDecision};

/// The purchase machine's definition, shared by the SAM template (by path)
/// and the local runner (compiled in here, so both always run the same file).
pub const DEFINITION: &str = include_str!("../../../statemachine/purchase.asl.json");

/// The review machine's definition.
pub const REVIEW_DEFINITION: &str = include_str!("../../../statemachine/review.asl.json");

/// How the purchase machine is deployed (`WORKFLOW_TYPE`, the template's
/// `WorkflowType` parameter). The review machine is always `STANDARD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkflowType {
    /// Exactly-once, execution history for 90 days, `DescribeExecution` and
    /// `RedriveExecution`, up to a year per execution.
    #[default]
    Standard,
    /// At-least-once, no execution history (CloudWatch Logs only), at most
    /// five minutes per execution, a fraction of the price. A lost or failed
    /// execution is replaced by a new run.
    Express,
}

impl WorkflowType {
    /// The name Step Functions and the template use.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowType::Standard => "STANDARD",
            WorkflowType::Express => "EXPRESS",
        }
    }

    pub fn parse(text: &str) -> Option<WorkflowType> {
        match text.trim() {
            "STANDARD" => Some(WorkflowType::Standard),
            "EXPRESS" => Some(WorkflowType::Express),
            _ => None,
        }
    }
}

impl std::fmt::Display for WorkflowType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The two state machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Machine {
    Purchase,
    Review,
}

/// One run of a purchase: run `number` of its workflow, and (named alike)
/// the review of a hold during that run.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Run {
    pub purchase_id: PurchaseId,
    pub number: u32,
}

impl Run {
    pub fn new(purchase_id: PurchaseId, number: u32) -> Run {
        Run {
            purchase_id,
            number,
        }
    }

    /// The run the purchase is at now.
    pub fn current(purchase: &crate::domain::purchase::Purchase) -> Run {
        Run::new(purchase.purchase_id.clone(), purchase.run)
    }

    /// The execution name: `<purchaseId>` for run 1, `<purchaseId>-<n>`
    /// after. Purchase ids are UUIDs (36 characters, one fixed shape), so a
    /// run's name is never another purchase's id, and stays well inside
    /// Step Functions' 80 characters.
    pub fn name(&self) -> String {
        if self.number <= 1 {
            self.purchase_id.to_string()
        } else {
            format!("{}-{}", self.purchase_id, self.number)
        }
    }

    /// The run an execution name stands for, if it is one of `purchase_id`'s.
    pub fn parse(purchase_id: &PurchaseId, name: &str) -> Option<Run> {
        let rest = name.strip_prefix(purchase_id.as_str())?;
        let number = match rest {
            "" => 1,
            _ => rest.strip_prefix('-')?.parse().ok().filter(|n| *n >= 2)?,
        };
        Some(Run::new(purchase_id.clone(), number))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

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
    /// The execution is not in a state that allows this
    /// (`ExecutionNotRedrivable`, or an `EXPRESS` execution).
    #[error("{0}")]
    NotAllowed(String),
    /// Anything else (access denied, a validation error, a missing ARN):
    /// nothing happened, and retrying will not help until someone fixes it.
    #[error("workflow failure: {0}")]
    Failed(String),
}

/// Where an execution stands, as the workflow service knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionState {
    Running,
    Succeeded,
    /// Failed, timed out or aborted: redrivable.
    Failed,
}

#[async_trait]
pub trait Workflow: Send + Sync {
    /// How the purchase machine is deployed: what it can answer.
    fn workflow_type(&self) -> WorkflowType;

    /// Starts a run of the purchase machine. Starting a run again is
    /// harmless: `STANDARD` answers "already exists" (taken as done),
    /// `EXPRESS` runs a duplicate whose steps find their work done.
    async fn start(&self, run: &Run) -> Result<(), WorkflowError>;

    /// The execution of `run` on `machine`, or `None` if there is none.
    /// Purchase runs of an `EXPRESS` machine cannot be described (no
    /// history): `Failed`, as for any call that can never succeed.
    async fn describe(
        &self,
        machine: Machine,
        run: &Run,
    ) -> Result<Option<ExecutionState>, WorkflowError>;

    /// Tells a parked task (`.waitForTaskToken`) a decision: approval
    /// completes it (`SendTaskSuccess` with `{"resumeAt": STATUS}`), anything
    /// else fails it with the error name the definition catches.
    async fn notify(&self, task_token: &str, decision: TaskDecision) -> Result<(), WorkflowError>;

    /// Restarts a failed purchase run at the step that failed
    /// (`RedriveExecution`). One still running (ending, or redriven
    /// already) is `Unavailable`: retry in a moment. An `EXPRESS` run cannot
    /// be redriven (`NotAllowed`): a new run replaces it.
    async fn redrive(&self, run: &Run) -> Result<(), WorkflowError>;
}

/// The error name a parked task fails with for a decision, or `None` when
/// the decision completes it. The review machine's `AwaitReview` catches these.
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

/// The input of every purchase run: everything else is read from the store
/// by each step, so a retried step always sees the latest purchase, and a
/// new run continues where the purchase stands.
pub fn execution_input(purchase_id: &PurchaseId) -> serde_json::Value {
    serde_json::json!({ "purchaseId": purchase_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_names_are_the_purchase_id_then_numbered() {
        let id = PurchaseId::new("0190b8a1-7c2e-7d3f-9a1b-2c3d4e5f6a7b");
        assert_eq!(Run::new(id.clone(), 1).name(), id.as_str());
        assert_eq!(
            Run::new(id.clone(), 2).name(),
            "0190b8a1-7c2e-7d3f-9a1b-2c3d4e5f6a7b-2"
        );
        for number in [1, 2, 10, 4000] {
            let run = Run::new(id.clone(), number);
            assert_eq!(Run::parse(&id, &run.name()), Some(run));
        }
        for other in [
            "0190b8a1-7c2e-7d3f-9a1b-2c3d4e5f6a7b-1",
            "0190b8a1-7c2e-7d3f-9a1b-2c3d4e5f6a7b-0",
            "0190b8a1-7c2e-7d3f-9a1b-2c3d4e5f6a7b-x",
            "0190b8a1-7c2e-7d3f-9a1b-2c3d4e5f6a7b2",
            "other",
        ] {
            assert_eq!(Run::parse(&id, other), None, "{other}");
        }
    }

    #[test]
    fn workflow_types_read_as_the_template_spells_them() {
        for kind in [WorkflowType::Standard, WorkflowType::Express] {
            assert_eq!(WorkflowType::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(WorkflowType::parse("express"), None);
    }
}
