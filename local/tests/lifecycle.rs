//! The purchase lifecycle against API calls racing the workflow: every
//! reproduction an outside review found (each failed before the lifecycle
//! was rebuilt), through the real definition in the local runner, via HTTP.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use common::*;
use reqwest::Method;
use serde_json::{Value, json};
use shared::domain::purchase::TaskDecision;
use shared::ports::workflow::{
    ExecutionState, Machine, Run, Workflow, WorkflowError, WorkflowType,
};
use shared::steps::Step;

/// Stores the `default` rule set.
async fn default_rules(h: &Harness, rules: Value) {
    let (status, body, _) = h
        .send(
            Method::POST,
            "/rules",
            &h.admin_token(),
            Some(&json!({"name": "default", "rules": rules})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

async fn put(h: &Harness, id: &str, body: Value) -> (u16, Value) {
    let (status, body, _) = h
        .send(
            Method::PUT,
            &format!("/purchases/{id}"),
            &h.customer_token(CUSTOMER),
            Some(&body),
        )
        .await;
    (status, body)
}

fn address(country: &str) -> Value {
    json!({"shippingAddress": {"name": "Alice Liddell", "address": "1 Rabbit Hole", "city": "Oxford", "country": country, "postalCode": "OX1 1AA"}})
}

fn hold_rule() -> Value {
    json!({"rules": [{"id": "manual-review", "parameters": {"reason": "first order", "onViolation": "hold"}}]})
}

fn timeline(p: &Value) -> Vec<(String, String, String)> {
    p["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["step"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
                e["detail"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn waiting_for_review(p: &Value) -> bool {
    timeline(p)
        .iter()
        .any(|(step, outcome, _)| step == "AwaitReview" && outcome == "WAITING")
}

/// A purchase of `lines` put on hold before its rules run, with its
/// workflow parked in `AwaitReview`.
async fn parked(mut setup: Setup, lines: &[(&str, u32)]) -> (Harness, String) {
    let first = Gate::new(Step::EvaluateRules);
    setup.hook = Some(first.clone());
    let h = Harness::start_with(setup).await;
    let id = h.create_ok(&purchase_body(lines, "tok_visa")).await;
    first.reached().await;
    let (status, body) = h
        .admin_post(&format!("/purchases/{id}/apply-rules"), hold_rule())
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("ON_HOLD")),
        "{body}"
    );
    first.open();
    h.wait_until(&id, waiting_for_review).await;
    (h, id)
}

/// Nothing held, nothing charged, nothing delivered.
async fn assert_undone(h: &Harness, id: &str, p: &Value, stock: &[(&str, i64)]) {
    assert!(is_final(p), "{p:#}");
    for (product, expected) in stock {
        assert_eq!(h.stock(product).await, *expected, "stock of {product}");
    }
    let (captured, refunded) = h.account(id);
    assert_eq!(captured, refunded, "money kept: {p:#}");
    assert!(h.delivered(id).is_empty(), "delivered goods kept: {p:#}");
    h.assert_payments_asked_sensibly();
}

#[tokio::test]
async fn rules_are_not_bypassed_by_a_later_put_of_the_address() {
    let gate = Gate::new(Step::CapturePayment);
    let h = Harness::start_with(Setup {
        hook: Some(gate.clone()),
        ..Setup::default()
    })
    .await;
    default_rules(
        &h,
        json!([{"id": "blocked-countries", "parameters": {"countries": ["KP"]}}]),
    )
    .await;
    let id = h.create_ok(&purchase_body(&[("mug", 1)], "tok_visa")).await;
    gate.reached().await; // EvaluateRules passed (GB), stock reserved
    let (status, body) = put(&h, &id, address("KP")).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("REJECTED")),
        "{body}"
    );
    gate.open();
    let p = h.wait_final(&id).await;
    assert_eq!(p["status"], "REJECTED", "{p:#}");
    assert_eq!(p["paymentStatus"], "NOT_CHARGED");
    assert_eq!(line_statuses(&p), ["RELEASED"]);
    assert_undone(&h, &id, &p, &[("mug", 100)]).await;
}

#[tokio::test]
async fn rules_are_not_bypassed_by_a_later_put_of_the_products() {
    let gate = Gate::new(Step::ReserveStock);
    let h = Harness::start_with(Setup {
        hook: Some(gate.clone()),
        ..Setup::default()
    })
    .await;
    default_rules(
        &h,
        json!([
            {"id": "max-quantity", "parameters": {"max": 3}},
            {"id": "max-order-value", "parameters": {"amount": 10000, "currency": "EUR"}}
        ]),
    )
    .await;
    let id = h
        .create_ok(&purchase_body(&[("ebook", 1)], "tok_visa"))
        .await;
    gate.reached().await; // rules passed for 1 e-book; not reserved yet
    let (status, body) = put(
        &h,
        &id,
        json!({"products": [{"id": "ebook", "quantity": 5}]}),
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("REJECTED")),
        "{body}"
    );
    gate.open();
    let p = h.wait_final(&id).await;
    assert_eq!(p["status"], "REJECTED");
    let violated: Vec<&str> = p["ruleResults"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] == "VIOLATED")
        .map(|r| r["ruleId"].as_str().unwrap())
        .collect();
    assert_eq!(violated, ["max-quantity"], "{p:#}");
    assert_undone(&h, &id, &p, &[("ebook", 100)]).await;
    assert_eq!(h.payments.captures(), 0);
}

#[tokio::test]
async fn rules_are_not_bypassed_after_an_admin_approved_a_held_purchase() {
    let first = Gate::new(Step::EvaluateRules);
    let gate = Gate::new(Step::CapturePayment);
    let h = Harness::start_with(Setup {
        hook: Some(Arc::new(Gates(vec![first.clone(), gate.clone()]))),
        ..Setup::default()
    })
    .await;
    default_rules(
        &h,
        json!([{"id": "blocked-countries", "parameters": {"countries": ["KP"]}}]),
    )
    .await;
    let id = h.create_ok(&purchase_body(&[("mug", 1)], "tok_visa")).await;
    first.reached().await;
    let (status, body) = h
        .admin_post(&format!("/purchases/{id}/apply-rules"), hold_rule())
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("ON_HOLD")),
        "{body}"
    );
    first.open();
    h.wait_until(&id, waiting_for_review).await;
    let (status, body) = h
        .admin_post(
            &format!("/purchases/{id}/review"),
            json!({"decision": "approve", "reason": "known customer"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    gate.reached().await; // resumed and reserved; about to capture
    // The approval was of shipping to GB; KP is judged again, held again by
    // the manual review the purchase carries, and rejected by the default set.
    let (status, body) = put(&h, &id, address("KP")).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("REJECTED")),
        "{body}"
    );
    gate.open();
    let p = h.wait_final(&id).await;
    assert_eq!(p["status"], "REJECTED", "{p:#}");
    assert_undone(&h, &id, &p, &[("mug", 100)]).await;
}

#[tokio::test]
async fn a_rule_rejecting_a_purchase_parked_in_review_wakes_the_workflow() {
    let (h, id) = parked(Setup::default(), &[("mug", 2)]).await;
    let (status, body) = h.admin_post(
        &format!("/purchases/{id}/apply-rules"),
        json!({"rules": [{"id": "manual-review", "parameters": {"reason": "fraud signals", "onViolation": "reject"}}]}),
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("REJECTED")),
        "{body}"
    );
    // Not 14 days later: now.
    let p = h.wait_final(&id).await;
    assert_eq!(p["status"], "REJECTED");
    assert!(
        line_statuses(&p)
            .iter()
            .all(|s| s == "CANCELLED" || s == "RELEASED"),
        "{p:#}"
    );
    assert_undone(&h, &id, &p, &[("mug", 100)]).await;
}

#[tokio::test]
async fn customers_read_no_stock_levels_provider_bodies_or_sdk_messages() {
    let h = Harness::start().await;
    // 1 poster in stock: ask for 3.
    let out_of_stock = h
        .create_ok(&purchase_body(&[("poster", 3)], "tok_visa"))
        .await;
    let declined = h
        .create_ok(&purchase_body(
            &[("ebook", 1)],
            "tok_decline_insufficient_funds",
        ))
        .await;
    for id in [&out_of_stock, &declined] {
        let p = h.wait_final(id).await;
        for (step, outcome, detail) in timeline(&p) {
            let text = format!("{step} {outcome} {detail}");
            for leak in [
                "requested",
                "available",
                "tok_",
                "http",
                "402",
                "card declined",
            ] {
                assert!(!text.contains(leak), "the timeline leaks {leak:?}: {text}");
            }
            assert!(
                !detail.chars().any(|c| c.is_ascii_digit()),
                "numbers in a customer's timeline: {text}"
            );
        }
    }
    let p = h.get(&out_of_stock).await;
    assert!(
        timeline(&p).contains(&(
            "ReserveStock".into(),
            "OUT_OF_STOCK".into(),
            "not enough stock of poster".into()
        )),
        "{p:#}"
    );
}

#[tokio::test]
async fn a_put_of_products_before_the_reservation_is_what_gets_reserved() {
    let gate = Gate::new(Step::ReserveStock);
    let h = Harness::start_with(Setup {
        hook: Some(gate.clone()),
        ..Setup::default()
    })
    .await;
    let id = h.create_ok(&purchase_body(&[("mug", 2)], "tok_visa")).await;
    gate.reached().await;
    let (status, body) = put(
        &h,
        &id,
        json!({"products": [{"id": "ebook", "quantity": 3}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    gate.open();
    let p = h.wait_final(&id).await;
    assert_eq!(p["status"], "COMPLETED");
    assert_eq!(p["products"][0]["id"], "ebook");
    assert_eq!(
        h.stock("mug").await,
        100,
        "the old lines were never reserved"
    );
    assert_eq!(h.stock("ebook").await, 97);
    assert_eq!(h.account(&id), (3000, 0));
    // Once stock is held, the lines cannot change any more.
    let gate2 = Gate::new(Step::CapturePayment);
    let h2 = Harness::start_with(Setup {
        hook: Some(gate2.clone()),
        ..Setup::default()
    })
    .await;
    let id2 = h2
        .create_ok(&purchase_body(&[("mug", 2)], "tok_visa"))
        .await;
    gate2.reached().await;
    let (status, body) = put(
        &h2,
        &id2,
        json!({"products": [{"id": "ebook", "quantity": 1}]}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("before stock is reserved")
    );
    gate2.open();
    let p = h2.wait_final(&id2).await;
    assert_eq!(line_statuses(&p), ["PROVISIONED"]);
    assert_eq!(h2.stock("mug").await, 98);
}

/// The workflow port of the API, with `notify` failing transiently for the
/// first `failures` calls (the decision not delivered).
struct FlakyNotify {
    inner: Arc<dyn Workflow>,
    failures: AtomicU32,
}

#[async_trait]
impl Workflow for FlakyNotify {
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
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            return Err(WorkflowError::Unavailable("injected: throttled".into()));
        }
        self.inner.notify(token, decision).await
    }
    async fn redrive(&self, id: &Run) -> Result<(), WorkflowError> {
        self.inner.redrive(id).await
    }
}

#[tokio::test]
async fn a_retried_review_delivers_the_decision_the_first_attempt_could_not() {
    let (h, id) = parked(
        Setup {
            workflow: Some(Arc::new(|inner| {
                Arc::new(FlakyNotify {
                    inner,
                    failures: AtomicU32::new(1),
                })
            })),
            ..Setup::default()
        },
        &[("ebook", 1)],
    )
    .await;
    let approve = json!({"decision": "approve", "reason": "ok"});
    let (status, body) = h
        .admin_post(&format!("/purchases/{id}/review"), approve.clone())
        .await;
    assert_eq!(status, 503, "{body}");
    // The retry is not a 409: it delivers the decision again.
    let (status, body) = h
        .admin_post(&format!("/purchases/{id}/review"), approve)
        .await;
    assert_eq!(status, 200, "{body}");
    let p = h.wait_final(&id).await;
    assert_eq!(p["status"], "COMPLETED", "{p:#}");
}

/// The API's workflow port starting the execution but reporting a definite
/// failure, and claiming there is no execution: the worst a start can lie.
struct StartsButSaysFailed {
    inner: Arc<dyn Workflow>,
}

#[async_trait]
impl Workflow for StartsButSaysFailed {
    fn workflow_type(&self) -> WorkflowType {
        self.inner.workflow_type()
    }
    async fn start(&self, id: &Run) -> Result<(), WorkflowError> {
        self.inner.start(id).await?;
        Err(WorkflowError::Failed("injected: AccessDenied".into()))
    }
    async fn describe(&self, _: Machine, _: &Run) -> Result<Option<ExecutionState>, WorkflowError> {
        Ok(None)
    }
    async fn notify(&self, token: &str, decision: TaskDecision) -> Result<(), WorkflowError> {
        self.inner.notify(token, decision).await
    }
    async fn redrive(&self, id: &Run) -> Result<(), WorkflowError> {
        self.inner.redrive(id).await
    }
}

#[tokio::test]
async fn steps_do_nothing_on_a_purchase_failed_before_they_ran() {
    let gate = Gate::new(Step::EvaluateRules);
    let h = Harness::start_with(Setup {
        hook: Some(gate.clone()),
        workflow: Some(Arc::new(|inner| Arc::new(StartsButSaysFailed { inner }))),
        ..Setup::default()
    })
    .await;
    let (status, body) = h
        .create(CUSTOMER, &purchase_body(&[("mug", 1)], "tok_visa"))
        .await;
    assert_eq!(status, 500, "{body}");
    assert!(!body.to_string().contains("AccessDenied"), "{body}");
    gate.reached().await; // the execution runs after all
    let listed = h
        .send(Method::GET, "/purchases", &h.customer_token(CUSTOMER), None)
        .await
        .1;
    let id = listed["purchases"][0]["purchaseId"]
        .as_str()
        .unwrap()
        .to_owned();
    let p = h.get(&id).await;
    assert_eq!(
        (p["status"].as_str(), p["failureReason"].as_str()),
        (Some("FAILED"), Some("WORKFLOW_START_FAILED"))
    );
    gate.open();
    // Let the stray execution run its course: it must change nothing.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while h
        .system
        .workflow
        .checkpoint(&id)
        .unwrap()
        .is_none_or(|c| c.status == asl::ExecutionStatus::Running)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the stray execution never ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let after = h.get(&id).await;
    assert_eq!(after["status"], "FAILED");
    assert_eq!(after["paymentStatus"], "NOT_CHARGED");
    assert_eq!(
        h.payments.requests().len(),
        0,
        "nothing asked of the payment provider"
    );
    assert_eq!(h.stock("mug").await, 100);
    assert!(
        !timeline(&after)
            .iter()
            .any(|(_, _, d)| d.contains("AccessDenied"))
    );
}

#[tokio::test]
async fn an_idempotency_key_does_not_replay_an_answer_that_says_retry() {
    let first = Gate::new(Step::EvaluateRules);
    let h = Harness::start_with(Setup {
        hook: Some(first.clone()),
        ..Setup::default()
    })
    .await;
    let id = h
        .create_ok(&purchase_body(&[("ebook", 1)], "tok_visa"))
        .await;
    first.reached().await;
    let review = |key: &'static str| {
        let h = &h;
        let id = id.clone();
        async move {
            let response = h
                .client
                .post(format!("{}/purchases/{id}/review", h.base))
                .bearer_auth(h.admin_token())
                .header("Idempotency-Key", key)
                .json(&json!({"decision": "approve"}))
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.headers().contains_key("idempotent-replayed"),
            )
        }
    };
    // Not on hold yet: 409.
    assert_eq!(review("k-1").await, (409, false));
    h.admin_post(&format!("/purchases/{id}/apply-rules"), hold_rule())
        .await;
    first.open();
    h.wait_until(&id, waiting_for_review).await;
    // The same key now runs for real.
    assert_eq!(review("k-1").await, (200, false));
    // And its final answer is replayed.
    assert_eq!(review("k-1").await, (200, true));
}

#[tokio::test]
async fn the_timeline_stays_bounded_however_often_a_purchase_changes() {
    let h = Harness::start().await;
    let id = h
        .create_ok(&purchase_body(&[("ebook", 1)], "tok_slow"))
        .await;
    for i in 0..120 {
        let country = if i % 2 == 0 { "FR" } else { "DE" };
        let (status, body) = put(&h, &id, address(country)).await;
        assert_eq!(status, 200, "update {i}: {body}");
    }
    let p = h.get(&id).await;
    let entries = p["timeline"].as_array().unwrap();
    assert!(
        entries.len() <= shared::domain::purchase::MAX_TIMELINE_ENTRIES,
        "{}",
        entries.len()
    );
    assert_eq!(entries[0]["step"], "Earlier");
    assert_eq!(p["shippingAddress"]["country"], "DE");
    // Still writable, and still cancellable.
    let (status, _) = h.cancel(&id).await;
    assert_eq!(status, 200);
}
