//! Nothing stuck, nothing kept: delivered goods are revoked when a purchase
//! does not complete, an undoing step that keeps failing parks the purchase
//! in NEEDS_ATTENTION until an operator redrives it, and the reconciler moves
//! purchases no execution moves. Through the real definition in the local
//! runner, via HTTP.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::faults::{Outage, RefundOutage, RevokeOutage};
use common::*;
use reqwest::Method;
use serde_json::{Value, json};
use shared::domain::purchase::TaskDecision;
use shared::ports::workflow::{
    ExecutionState, Machine, Run, Workflow, WorkflowError, WorkflowType,
};
use shared::steps::Step;

fn steps(p: &Value) -> Vec<(String, String)> {
    timeline_steps(p)
}

fn line(p: &Value, id: &str) -> String {
    p["products"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == id)
        .map(|l| l["status"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn redrive(h: &Harness, id: &str) -> (u16, Value) {
    h.redrive(id).await
}

/// The purchase's execution once it has failed (polled: the failure is
/// recorded just after the step that caused it returns).
async fn failed_execution(h: &Harness, id: &str) -> asl::Checkpoint {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let checkpoint = h.execution_checkpoint(Machine::Purchase, id).unwrap();
        if checkpoint.status == asl::ExecutionStatus::Failed {
            return checkpoint;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the execution of {id} never failed: {checkpoint:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Money and goods balance: what was captured is refunded unless the
/// purchase completed, and nothing is delivered unless it completed.
fn assert_balanced(h: &Harness, id: &str, p: &Value) {
    let (captured, refunded) = h.account(id);
    if p["status"] == "COMPLETED" {
        assert_eq!(
            (captured, refunded),
            (p["totalAmount"].as_i64().unwrap(), 0)
        );
    } else {
        assert_eq!(captured, refunded, "money kept: {p:#}");
        assert!(h.delivered(id).is_empty(), "goods kept: {p:#}");
    }
    h.assert_payments_asked_sensibly();
    h.assert_provisioning_asked_sensibly();
}

#[tokio::test]
async fn lines_delivered_before_a_provisioning_failure_are_revoked() {
    let h = Harness::start().await;
    // Delivered in the order given: the e-book first, then the refused key.
    let id = h
        .create_ok(&purchase_body(
            &[("ebook", 1), ("fail-provision-key", 1)],
            "tok_visa",
        ))
        .await;
    let p = h.wait_final(&id).await;
    assert_eq!(
        (p["status"].as_str(), p["failureReason"].as_str()),
        (Some("FAILED"), Some("PROVISIONING_FAILED"))
    );
    assert_eq!(line(&p, "ebook"), "REVOKED", "{p:#}");
    assert_eq!(line(&p, "fail-provision-key"), "PROVISIONING_FAILED");
    assert_eq!(p["paymentStatus"], "REFUNDED");
    assert_eq!(h.stock("ebook").await, 100);
    assert_eq!(h.stock("fail-provision-key").await, 100);
    assert!(steps(&p).contains(&("RevokeProducts".into(), "REVOKED".into())));
    assert_balanced(&h, &id, &p);
}

#[tokio::test]
async fn a_cancel_during_a_slow_provisioning_takes_back_what_was_delivered() {
    let h = Harness::start().await;
    let id = h
        .create_ok(&purchase_body(
            &[("slow-provision-course", 1), ("ebook", 1)],
            "tok_visa",
        ))
        .await;
    // The course's delivery has started (it takes SLOW_DELIVERY): a cancel
    // now must take it back. Waiting only for the capture would race the
    // step, which may not have asked for the delivery yet.
    let course = shared::adapters::simulators::ProvisioningRequest::Provision {
        purchase_id: shared::domain::PurchaseId::new(id.clone()),
        product_id: shared::domain::ProductId::new("slow-provision-course"),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !h.provisioning.requests().contains(&course) {
        assert!(
            std::time::Instant::now() < deadline,
            "the course's delivery never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let (status, body) = h.cancel(&id).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("CANCELLED")),
        "{body}"
    );
    let p = h.wait_final(&id).await;
    assert_eq!(p["status"], "CANCELLED");
    assert_eq!(line(&p, "slow-provision-course"), "REVOKED", "{p:#}");
    assert_eq!(line(&p, "ebook"), "RELEASED", "never delivered: {p:#}");
    assert_eq!(p["paymentStatus"], "REFUNDED");
    assert_eq!(h.stock("slow-provision-course").await, 100);
    assert_eq!(h.stock("ebook").await, 100);
    assert_balanced(&h, &id, &p);
}

#[tokio::test]
async fn a_revocation_that_keeps_failing_needs_attention_until_redriven() {
    let outage = Arc::new(Outage::default());
    outage.start();
    let h = Harness::start_with(Setup {
        provisioning: Some(RevokeOutage::layer(outage.clone())),
        ..Setup::default()
    })
    .await;
    let id = h
        .create_ok(&purchase_body(
            &[("ebook", 1), ("fail-provision-key", 1)],
            "tok_visa",
        ))
        .await;
    let stuck = h
        .wait_until(&id, |p| p["status"] == "NEEDS_ATTENTION")
        .await;
    assert_eq!(
        stuck["attention"]["failedStep"], "RevokeProducts",
        "{stuck:#}"
    );
    assert!(!is_final(&stuck));
    assert_eq!(line(&stuck, "ebook"), "PROVISIONED");
    // The execution fails (just after the step recorded the purchase)
    // where a redrive resumes it.
    let checkpoint = failed_execution(&h, &id).await;
    assert_eq!(checkpoint.state_name, "NeedsAttention");
    outage.end();
    let (status, body) = redrive(&h, &id).await;
    assert_eq!(status, 200, "{body}");
    let p = h.wait_final(&id).await;
    assert_eq!(
        (p["status"].as_str(), p["failureReason"].as_str()),
        (Some("FAILED"), Some("PROVISIONING_FAILED"))
    );
    assert_eq!(line(&p, "ebook"), "REVOKED");
    assert_eq!(p["paymentStatus"], "REFUNDED");
    assert!(p.get("attention").is_none());
    assert_eq!(h.stock("ebook").await, 100);
    assert_balanced(&h, &id, &p);
    // Nothing left to redrive.
    assert_eq!(redrive(&h, &id).await.0, 409);
}

#[tokio::test]
async fn a_refund_that_keeps_failing_needs_attention_until_redriven() {
    let outage = Arc::new(Outage::default());
    outage.start();
    let gate = Gate::new(Step::ProvisionProducts);
    let h = Harness::start_with(Setup {
        hook: Some(gate.clone()),
        payments: Some(RefundOutage::layer(outage.clone())),
        ..Setup::default()
    })
    .await;
    let id = h.create_ok(&purchase_body(&[("mug", 1)], "tok_visa")).await;
    gate.reached().await; // paid
    assert_eq!(h.cancel(&id).await.0, 200);
    gate.open();
    let stuck = h
        .wait_until(&id, |p| p["status"] == "NEEDS_ATTENTION")
        .await;
    assert_eq!(stuck["attention"]["failedStep"], "RefundPayment");
    assert_eq!(stuck["paymentStatus"], "REFUND_FAILED");
    assert!(
        steps(&stuck).contains(&("NeedsAttention".into(), "WAITING".into())),
        "{stuck:#}"
    );
    outage.end();
    assert_eq!(redrive(&h, &id).await.0, 200);
    let p = h.wait_final(&id).await;
    assert_eq!(p["status"], "CANCELLED");
    assert_eq!(p["paymentStatus"], "REFUNDED");
    assert_eq!(line(&p, "mug"), "RELEASED");
    assert_eq!(h.stock("mug").await, 100);
    assert_balanced(&h, &id, &p);
}

/// The API's workflow port, with its first `start` misbehaving as the test
/// says (later ones, the reconciler's, work).
struct BadStart {
    inner: Arc<dyn Workflow>,
    /// Whether the execution really starts before the error is reported.
    starts: bool,
    misbehaved: std::sync::atomic::AtomicBool,
}

impl BadStart {
    fn layer(starts: bool) -> local::WorkflowLayer {
        Arc::new(move |inner| {
            Arc::new(BadStart {
                inner,
                starts,
                misbehaved: std::sync::atomic::AtomicBool::new(false),
            })
        })
    }
}

#[async_trait]
impl Workflow for BadStart {
    fn workflow_type(&self) -> WorkflowType {
        self.inner.workflow_type()
    }
    async fn start(&self, id: &Run) -> Result<(), WorkflowError> {
        if self
            .misbehaved
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return self.inner.start(id).await;
        }
        if self.starts {
            self.inner.start(id).await?;
        }
        Err(WorkflowError::Unavailable("injected: timed out".into()))
    }
    async fn describe(
        &self,
        machine: Machine,
        id: &Run,
    ) -> Result<Option<ExecutionState>, WorkflowError> {
        self.inner.describe(machine, id).await
    }
    async fn notify(&self, token: &str, decision: TaskDecision) -> Result<(), WorkflowError> {
        self.inner.notify(token, decision).await
    }
    async fn redrive(&self, id: &Run) -> Result<(), WorkflowError> {
        self.inner.redrive(id).await
    }
}

async fn create_with_key(h: &Harness, key: &str, body: &Value) -> (u16, Value) {
    let response = h
        .client
        .post(format!("{}/purchases", h.base))
        .bearer_auth(h.customer_token(CUSTOMER))
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn only_purchase(h: &Harness) -> String {
    let (_, list, _) = h
        .send(Method::GET, "/purchases", &h.customer_token(CUSTOMER), None)
        .await;
    let purchases = list["purchases"].as_array().unwrap();
    assert_eq!(purchases.len(), 1, "{list:#}");
    purchases[0]["purchaseId"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_start_that_failed_ambiguously_is_not_declared_failed_and_ends_once() {
    let h = Harness::start_with(Setup {
        workflow: Some(BadStart::layer(true)),
        ..Setup::default()
    })
    .await;
    let body = purchase_body(&[("mug", 1)], "tok_visa");
    let (status, answer) = create_with_key(&h, "order-1", &body).await;
    assert_eq!(status, 503, "{answer}");
    let id = only_purchase(&h).await;
    // The execution did start: the purchase completes, charged once.
    let p = h.wait_final(&id).await;
    assert_eq!(p["status"], "COMPLETED", "{p:#}");
    // The client's retry with the same key continues with the same purchase.
    let (status, answer) = create_with_key(&h, "order-1", &body).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["purchaseId"], id.as_str());
    assert_eq!(only_purchase(&h).await, id);
    let findings = h.reconcile_now().await;
    assert_eq!(started(&findings), 0, "{findings:?}");
    assert_eq!(h.payments.captures(), 1);
    assert_balanced(&h, &id, &p);
}

/// Runs the reconciler started: a never-started first run (`STANDARD`) or a
/// new run for a lost one (`EXPRESS`).
fn started(findings: &shared::service::reconcile::Findings) -> usize {
    findings.started + findings.restarted
}

#[tokio::test]
async fn the_reconciler_starts_a_purchase_whose_workflow_never_started() {
    let h = Harness::start_with(Setup {
        workflow: Some(BadStart::layer(false)),
        ..Setup::default()
    })
    .await;
    let (status, _) = h
        .create(CUSTOMER, &purchase_body(&[("mug", 1)], "tok_visa"))
        .await;
    assert_eq!(status, 503);
    let id = only_purchase(&h).await;
    assert_eq!(h.get(&id).await["status"], "PENDING");
    // Younger than the age the reconciler waits for: left alone.
    let findings = h
        .system
        .reconcile(Some(Duration::from_secs(300)))
        .await
        .unwrap();
    assert_eq!(findings.examined, 0);
    // STANDARD: no execution, nothing happened to it: its first run starts.
    // EXPRESS: no execution to ask about, unchanged for long: a new run.
    let findings = h.reconcile_now().await;
    assert_eq!(started(&findings), 1, "{findings:?}");
    let p = h.wait_final(&id).await;
    assert_eq!(p["status"], "COMPLETED");
    // Once moving, a second pass starts nothing again.
    let findings = h.reconcile_now().await;
    assert_eq!(started(&findings), 0);
    assert_eq!(h.payments.captures(), 1);
    assert_balanced(&h, &id, &p);
}

#[tokio::test]
async fn a_purchase_stranded_by_a_process_that_died_before_its_first_checkpoint_is_reconciled() {
    let h = Harness::start_with(Setup {
        workflow: Some(BadStart::layer(false)),
        ..Setup::default()
    })
    .await;
    let (status, _) = h
        .create(CUSTOMER, &purchase_body(&[("ebook", 2)], "tok_visa"))
        .await;
    assert_eq!(status, 503);
    let id = only_purchase(&h).await;
    // The process dies with the purchase stored and no execution journaled.
    let (h, _dir) = Harness::restart(h.stop().await).await;
    assert!(h.system.workflow.checkpoint(&id).unwrap().is_none());
    let findings = h.reconcile_now().await;
    assert_eq!(started(&findings), 1, "{findings:?}");
    let p = h.wait_final(&id).await;
    assert_eq!(p["status"], "COMPLETED");
    assert_eq!(h.stock("ebook").await, 98);
    assert_eq!(h.payments.captures(), 1);
}

/// The API's workflow port refusing to deliver decisions (access denied)
/// until `healed`.
struct DeniedNotify {
    inner: Arc<dyn Workflow>,
    healed: Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait]
impl Workflow for DeniedNotify {
    fn workflow_type(&self) -> WorkflowType {
        self.inner.workflow_type()
    }
    async fn start(&self, id: &Run) -> Result<(), WorkflowError> {
        self.inner.start(id).await
    }
    async fn describe(
        &self,
        machine: Machine,
        id: &Run,
    ) -> Result<Option<ExecutionState>, WorkflowError> {
        self.inner.describe(machine, id).await
    }
    async fn notify(&self, token: &str, decision: TaskDecision) -> Result<(), WorkflowError> {
        if !self.healed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(WorkflowError::Failed(
                "injected: AccessDeniedException".into(),
            ));
        }
        self.inner.notify(token, decision).await
    }
    async fn redrive(&self, id: &Run) -> Result<(), WorkflowError> {
        self.inner.redrive(id).await
    }
}

#[tokio::test]
async fn a_callback_that_is_refused_fails_loudly_and_keeps_the_token() {
    let healed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let layer_healed = healed.clone();
    let first = Gate::new(Step::EvaluateRules);
    let h = Harness::start_with(Setup {
        hook: Some(first.clone()),
        workflow: Some(Arc::new(move |inner| {
            Arc::new(DeniedNotify {
                inner,
                healed: layer_healed.clone(),
            })
        })),
        ..Setup::default()
    })
    .await;
    let id = h
        .create_ok(&purchase_body(&[("ebook", 1)], "tok_visa"))
        .await;
    first.reached().await;
    let hold = json!({"rules": [{"id": "manual-review", "parameters": {"reason": "check", "onViolation": "hold"}}]});
    let (status, _, _) = h
        .send(
            Method::POST,
            &format!("/purchases/{id}/apply-rules"),
            &h.admin_token(),
            Some(&hold),
        )
        .await;
    assert_eq!(status, 200);
    first.open();
    h.wait_until(&id, |p| {
        steps(p).contains(&("AwaitReview".into(), "WAITING".into()))
    })
    .await;
    let review = json!({"decision": "approve"});
    let (status, body, _) = h
        .send(
            Method::POST,
            &format!("/purchases/{id}/review"),
            &h.admin_token(),
            Some(&review),
        )
        .await;
    // Not "gone": a 5xx, and the workflow still waits for this decision.
    assert_eq!(status, 500, "{body}");
    assert!(!body.to_string().contains("AccessDenied"));
    // The review of the hold of run 1 is named like it.
    let parked = h
        .system
        .workflow
        .execution_checkpoint(Machine::Review, &id)
        .unwrap()
        .unwrap();
    assert_eq!(parked.state_name, "AwaitReview");
    healed.store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, body, _) = h
        .send(
            Method::POST,
            &format!("/purchases/{id}/review"),
            &h.admin_token(),
            Some(&review),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let p = h.wait_final(&id).await;
    assert_eq!(p["status"], "COMPLETED");
}
