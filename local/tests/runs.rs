//! Runs: a held purchase's review in the review workflow and the new run it
//! starts (approve, reject, cancel, the wait timing out), for a `STANDARD`
//! and an `EXPRESS` purchase workflow alike; and what `EXPRESS` changes:
//! duplicate starts run side by side, runs cannot be described or redriven,
//! the reconciler replaces a lost run and flags a purchase whose runs keep
//! getting lost, and a redrive starts a new run that undoes the purchase.
//! Through the real definitions in the local runner, via HTTP.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::faults::{Outage, RevokeOutage};
use common::*;
use local::{Attempt, StepHook};
use reqwest::Method;
use serde_json::{Value, json};
use shared::domain::PurchaseId;
use shared::domain::purchase::Purchase;
use shared::ports::workflow::{
    ExecutionState, Machine, Run, Workflow, WorkflowError, WorkflowType,
};
use shared::service::reconcile::Ages;
use shared::steps::Step;

const BOTH: [WorkflowType; 2] = [WorkflowType::Standard, WorkflowType::Express];

async fn harness(workflow_type: WorkflowType, hook: Option<Arc<dyn StepHook>>) -> Harness {
    Harness::start_with(Setup {
        workflow_type,
        hook,
        ..Setup::default()
    })
    .await
}

/// Every purchase is held for review by the `default` rule set, at its
/// first step.
async fn hold_every_purchase(h: &Harness) {
    let rules = json!({"name": "default", "rules": [
        {"id": "manual-review", "parameters": {"reason": "every order is checked", "onViolation": "hold"}}
    ]});
    let (status, body, _) = h
        .send(Method::POST, "/rules", &h.admin_token(), Some(&rules))
        .await;
    assert_eq!(status, 201, "{body}");
}

async fn stored(h: &Harness, id: &str) -> Purchase {
    h.stored(id).await
}

fn steps(p: &Value) -> Vec<(String, String)> {
    timeline_steps(p)
}

fn has_step(p: &Value, step: &str, outcome: &str) -> bool {
    steps(p).contains(&(step.to_owned(), outcome.to_owned()))
}

/// A new purchase of one mug, held by the rules and waiting in its review.
async fn held(h: &Harness) -> String {
    let id = h.create_ok(&purchase_body(&[("mug", 1)], "tok_visa")).await;
    let p = h
        .wait_until(&id, |p| has_step(p, "AwaitReview", "WAITING"))
        .await;
    assert_eq!(p["status"], "ON_HOLD", "{p:#}");
    id
}

/// Waits until `machine` ran an execution of that name to its end.
async fn ended(h: &Harness, machine: Machine, name: &str) -> asl::Checkpoint {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let checkpoint = h.execution_checkpoint(machine, name);
        if let Some(c) = &checkpoint
            && c.status != asl::ExecutionStatus::Running
            && !h.is_execution_running(machine, name)
        {
            return c.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{machine:?} execution {name} never ended: {checkpoint:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Nothing kept: no money, no goods, the stock back.
async fn assert_undone(h: &Harness, id: &str, p: &Value) {
    assert!(is_final(p), "{p:#}");
    let (captured, refunded) = h.account(id);
    assert_eq!(captured, refunded, "money kept: {p:#}");
    assert!(h.delivered(id).is_empty(), "goods kept: {p:#}");
    assert_eq!(h.stock("mug").await, 100);
}

#[tokio::test]
async fn an_approved_hold_continues_in_the_next_run_where_it_was_held() {
    for workflow_type in BOTH {
        let h = harness(workflow_type, None).await;
        hold_every_purchase(&h).await;
        let id = held(&h).await;
        // Run 1 handed the purchase over and ended there; its review waits,
        // named after it.
        let first = ended(&h, Machine::Purchase, &id).await;
        assert_eq!(
            (first.state_name.as_str(), first.status),
            ("HandedOverToReview", asl::ExecutionStatus::Succeeded),
            "{workflow_type}"
        );
        let parked = h.execution_checkpoint(Machine::Review, &id).unwrap();
        assert_eq!(parked.state_name, "AwaitReview");
        assert_eq!(
            h.workflow()
                .describe(Machine::Review, &Run::new(PurchaseId::new(&id), 1))
                .await,
            Ok(Some(ExecutionState::Running))
        );
        assert_eq!(stored(&h, &id).await.run, 1);

        let (status, body) = h.review(&id, "approve").await;
        assert_eq!(status, 200, "{body}");
        let p = h.wait_final(&id).await;
        assert_eq!(p["status"], "COMPLETED", "{workflow_type}: {p:#}");
        // The review ended by starting run 2, which did the rest once.
        let review_end = ended(&h, Machine::Review, &id).await;
        assert_eq!(review_end.state_name, "PurchaseContinued");
        assert_eq!(stored(&h, &id).await.run, 2);
        let second = ended(&h, Machine::Purchase, &format!("{id}-2")).await;
        assert_eq!(second.status, asl::ExecutionStatus::Succeeded);
        assert_eq!(h.account(&id), (1250, 0));
        assert_eq!(h.stock("mug").await, 99);
        let reserved = steps(&p)
            .iter()
            .filter(|(step, _)| step == "ReserveStock")
            .count();
        assert_eq!(reserved, 1, "{p:#}");
        h.assert_payments_asked_sensibly();
    }
}

#[tokio::test]
async fn a_rejected_or_cancelled_hold_is_undone_by_the_next_run() {
    for workflow_type in BOTH {
        let h = harness(workflow_type, None).await;
        hold_every_purchase(&h).await;

        let rejected = held(&h).await;
        assert_eq!(h.review(&rejected, "reject").await.0, 200);
        let p = h.wait_final(&rejected).await;
        assert_eq!(p["status"], "REJECTED", "{workflow_type}: {p:#}");
        assert_undone(&h, &rejected, &p).await;
        assert_eq!(stored(&h, &rejected).await.run, 2);

        let cancelled = held(&h).await;
        let (status, body) = h.cancel(&cancelled).await;
        assert_eq!(status, 200, "{body}");
        let p = h.wait_final(&cancelled).await;
        assert_eq!(p["status"], "CANCELLED", "{workflow_type}: {p:#}");
        assert_undone(&h, &cancelled, &p).await;
        assert_eq!(stored(&h, &cancelled).await.run, 2);
        // Told once: the review got the decision, and let go of its token.
        assert_eq!(stored(&h, &cancelled).await.review_token, None);
    }
}

/// The review's wait running out, as the runner reports it when the task's
/// `TimeoutSeconds` (14 days) pass: `States.Timeout`, once the review's
/// function has parked the purchase.
struct ReviewsTimeOut;

#[async_trait]
impl StepHook for ReviewsTimeOut {
    async fn before(&self, _: Step, _: &str) -> Attempt {
        Attempt::Run
    }

    async fn after(
        &self,
        step: Step,
        _: &str,
        _: &Result<Value, asl::TaskFailure>,
    ) -> Option<asl::TaskFailure> {
        (step == Step::AwaitReview)
            .then(|| asl::TaskFailure::new("States.Timeout", "the review waited 14 days (test)"))
    }
}

#[tokio::test]
async fn a_hold_nobody_reviews_in_time_is_rejected_and_undone() {
    for workflow_type in BOTH {
        let h = harness(workflow_type, Some(Arc::new(ReviewsTimeOut))).await;
        hold_every_purchase(&h).await;
        let id = h.create_ok(&purchase_body(&[("mug", 1)], "tok_visa")).await;
        let p = h.wait_final(&id).await;
        assert_eq!(p["status"], "REJECTED", "{workflow_type}: {p:#}");
        assert!(has_step(&p, "AwaitReview", "TIMED_OUT"), "{p:#}");
        assert_undone(&h, &id, &p).await;
        let purchase = stored(&h, &id).await;
        assert_eq!((purchase.run, purchase.review_token), (2, None));
        // A review that comes too late finds nothing to review.
        assert_eq!(h.review(&id, "approve").await.0, 409);
    }
}

#[tokio::test]
async fn express_runs_cannot_be_described_or_redriven_and_a_duplicate_start_runs_harmlessly() {
    let gate = Gate::new(Step::ReserveStock);
    let h = harness(WorkflowType::Express, Some(gate.clone())).await;
    let id = h.create_ok(&purchase_body(&[("mug", 2)], "tok_visa")).await;
    gate.reached().await;
    let run = Run::new(PurchaseId::new(&id), 1);
    let workflow = &h.system.workflow;
    assert!(matches!(
        workflow.describe(Machine::Purchase, &run).await,
        Err(WorkflowError::Failed(_))
    ));
    assert!(matches!(
        workflow.redrive(&run).await,
        Err(WorkflowError::NotAllowed(_))
    ));
    // Express does not refuse a second start of a name: both run.
    workflow.start(&run).await.unwrap();
    let running = workflow.running_executions(&PurchaseId::new(&id));
    assert_eq!(
        running,
        [
            (Machine::Purchase, id.clone()),
            (Machine::Purchase, id.clone())
        ]
    );
    gate.open();
    let p = h.wait_final(&id).await;
    assert_eq!(p["status"], "COMPLETED", "{p:#}");
    // Each step found the other's work done: one reservation, one capture.
    assert_eq!(h.stock("mug").await, 98);
    assert_eq!(h.payments.captures(), 1);
    assert_eq!(h.account(&id), (2500, 0));
    h.assert_payments_asked_sensibly();
    h.assert_provisioning_asked_sensibly();
}

/// Every attempt of `step` hangs: its run never moves again, as an Express
/// execution lost at that step (ended by its time limit, or with the
/// process).
struct Hangs(Step);

#[async_trait]
impl StepHook for Hangs {
    async fn before(&self, step: Step, _: &str) -> Attempt {
        if step == self.0 {
            std::future::pending::<()>().await;
        }
        Attempt::Run
    }
}

#[tokio::test]
async fn the_reconciler_replaces_lost_express_runs_then_flags_the_purchase() {
    let h = harness(
        WorkflowType::Express,
        Some(Arc::new(Hangs(Step::CapturePayment))),
    )
    .await;
    let id = h.create_ok(&purchase_body(&[("mug", 1)], "tok_visa")).await;
    h.wait_until(&id, |p| p["status"] == "RESERVED").await;
    // A run may last five minutes: a purchase unchanged for less is left alone.
    let findings = h
        .system
        .reconcile_with(Ages::new(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(
        (findings.examined, findings.restarted),
        (1, 0),
        "{findings:?}"
    );
    // Taken for lost: a new run, named after the purchase, continues where
    // it stands (reserved: it goes on to the capture).
    for restart in 1..=3u32 {
        let findings = h.reconcile_now().await;
        assert_eq!(findings.restarted, 1, "restart {restart}: {findings:?}");
        let purchase = stored(&h, &id).await;
        assert_eq!((purchase.run, purchase.restarts), (restart + 1, restart));
        let name = Run::new(PurchaseId::new(&id), restart + 1).name();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while h
            .system
            .workflow
            .checkpoint(&name)
            .unwrap()
            .is_none_or(|c| c.state_name != "CapturePayment")
        {
            assert!(std::time::Instant::now() < deadline, "{name} never ran");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert_eq!(h.stock("mug").await, 99, "reserved once");
    // Lost a fourth time: an operator must look.
    let findings = h.reconcile_now().await;
    assert_eq!(
        (findings.flagged, findings.restarted),
        (1, 0),
        "{findings:?}"
    );
    let p = h.get(&id).await;
    assert_eq!(p["status"], "NEEDS_ATTENTION", "{p:#}");
    assert_eq!(p["attention"]["error"], "ExecutionLost");
    // Flagged is visible already: later passes leave it alone.
    assert_eq!(h.reconcile_now().await.restarted, 0);
    // The operator's redrive: a new run undoes it (nothing was charged).
    let (status, body) = h.redrive(&id).await;
    assert_eq!(status, 200, "{body}");
    let p = h.wait_final(&id).await;
    assert_eq!(
        (p["status"].as_str(), p["failureReason"].as_str()),
        (Some("FAILED"), Some("INTERNAL_ERROR")),
        "{p:#}"
    );
    assert_eq!(stored(&h, &id).await.run, 5);
    assert_undone(&h, &id, &p).await;
}

#[tokio::test]
async fn a_redrive_resumes_a_standard_run_and_starts_a_new_express_one() {
    for workflow_type in BOTH {
        let outage = Arc::new(Outage::default());
        outage.start();
        let h = Harness::start_with(Setup {
            workflow_type,
            provisioning: Some(RevokeOutage::layer(outage.clone())),
            ..Setup::default()
        })
        .await;
        // The e-book is delivered, the key refused: the e-book's revocation
        // keeps failing.
        let id = h
            .create_ok(&purchase_body(
                &[("ebook", 1), ("fail-provision-key", 1)],
                "tok_visa",
            ))
            .await;
        h.wait_until(&id, |p| p["status"] == "NEEDS_ATTENTION")
            .await;
        // Run 1 fails in NeedsAttention, both ways (Express: visible in its
        // logs only).
        let failed = ended(&h, Machine::Purchase, &id).await;
        assert_eq!(
            (failed.state_name.as_str(), failed.status),
            ("NeedsAttention", asl::ExecutionStatus::Failed)
        );
        outage.end();
        let (status, body) = h.redrive(&id).await;
        assert_eq!(status, 200, "{workflow_type}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("RevokeProducts is tried again"),
            "{body}"
        );
        let p = h.wait_final(&id).await;
        assert_eq!(
            (p["status"].as_str(), p["failureReason"].as_str()),
            (Some("FAILED"), Some("PROVISIONING_FAILED")),
            "{workflow_type}: {p:#}"
        );
        assert_eq!(line_statuses(&p), ["REVOKED", "PROVISIONING_FAILED"]);
        assert!(h.delivered(&id).is_empty());
        let (captured, refunded) = h.account(&id);
        assert_eq!(captured, refunded);
        let purchase = stored(&h, &id).await;
        match workflow_type {
            // RedriveExecution: the same run, resumed at the failed step.
            WorkflowType::Standard => {
                assert_eq!(purchase.run, 1);
                let redriven = ended(&h, Machine::Purchase, &id).await;
                assert_eq!(redriven.status, asl::ExecutionStatus::Failed);
                assert_eq!(redriven.state_name, "PurchaseFailed");
            }
            // A new run, taking the undoing path from its start.
            WorkflowType::Express => {
                assert_eq!(purchase.run, 2);
                let second = ended(&h, Machine::Purchase, &format!("{id}-2")).await;
                assert_eq!(second.state_name, "PurchaseFailed");
            }
        }
        // Nothing left to redrive.
        assert_eq!(h.redrive(&id).await.0, 409);
    }
}
