//! The same story on both faces: a purchase's timeline, failure reason and
//! final statuses are identical whether the in-process local server runs it
//! or the AWS shape (aws-local: the function binaries invoked by the Step
//! Functions endpoint, behind the API Gateway shim) — ids, timestamps and
//! versions aside.
//!
//! Needs the moto server at `AWS_TEST_ENDPOINT` and the function binaries
//! (`cargo build --workspace --bins`); scripts/test.sh provides both.

mod common;

use std::sync::Arc;

use common::{Gate, Harness, Setup, TestTarget, purchase_body};
use serde_json::{Map, Value, json};
use shared::steps::Step;

/// Fields that differ between any two runs of the same story.
const INCIDENTAL: [&str; 8] = [
    "purchaseId",
    "version",
    "createdAt",
    "updatedAt",
    "at",
    "since",
    "evaluatedAt",
    "finalizedAt",
];

/// The purchase without what differs run to run (`finalizedAt` kept as
/// "is final").
fn story(purchase: &Value) -> Value {
    fn strip(value: &Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(
                map.iter()
                    .filter(|(key, _)| !INCIDENTAL.contains(&key.as_str()))
                    .map(|(key, value)| (key.clone(), strip(value)))
                    .collect::<Map<_, _>>(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(strip).collect()),
            other => other.clone(),
        }
    }
    let mut told = strip(purchase);
    told["final"] = json!(common::is_final(purchase));
    told
}

#[derive(Debug, Clone, Copy)]
enum Scenario {
    Completed,
    Declined,
    ProvisioningFailed,
    CancelledBeforePayment,
    HeldThenApproved,
    HeldThenRejected,
}

fn in_review(p: &Value) -> bool {
    p["timeline"]
        .as_array()
        .is_some_and(|entries| entries.iter().any(|e| e["step"] == "AwaitReview"))
}

/// Runs `scenario` on `target` and tells its story.
async fn run(target: TestTarget, scenario: Scenario) -> Value {
    let gate = Gate::new(Step::CapturePayment);
    let h = Harness::start_with(Setup {
        target,
        hook: Some(gate.clone() as Arc<dyn local::StepHook>),
        ..Setup::default()
    })
    .await;
    let body = match scenario {
        Scenario::Declined => purchase_body(&[("mug", 1), ("ebook", 1)], "tok_decline"),
        Scenario::ProvisioningFailed => {
            purchase_body(&[("ebook", 1), ("fail-provision-key", 1)], "tok_visa")
        }
        _ => purchase_body(&[("mug", 1), ("ebook", 1)], "tok_visa"),
    };
    let id = h.create_ok(&body).await;
    gate.reached().await;
    match scenario {
        Scenario::CancelledBeforePayment => {
            let (status, _) = h.cancel(&id).await;
            assert_eq!(status, 200);
        }
        Scenario::HeldThenApproved | Scenario::HeldThenRejected => {
            let (status, answer) = h.admin_post(
                &format!("/purchases/{id}/apply-rules"),
                json!({"rules": [{"id": "manual-review", "parameters": {"reason": "first order", "onViolation": "hold"}}]}),
            )
            .await;
            assert_eq!(status, 200, "{answer}");
        }
        _ => {}
    }
    gate.open();
    if let Scenario::HeldThenApproved | Scenario::HeldThenRejected = scenario {
        h.wait_until(&id, in_review).await;
        let decision = if matches!(scenario, Scenario::HeldThenApproved) {
            "approve"
        } else {
            "reject"
        };
        let (status, answer) = h.review(&id, decision).await;
        assert_eq!(status, 200, "{answer}");
    }
    let p = h.wait_final(&id).await;
    h.assert_payments_asked_sensibly();
    let told = story(&p);
    let _ = h.stop().await;
    told
}

async fn same_story(scenario: Scenario) {
    if std::env::var("AWS_TEST_ENDPOINT").is_err() && std::env::var("CI").as_deref() != Ok("true") {
        common::say(&format!(
            "note: same_story {scenario:?} passes WITHOUT RUNNING: AWS_TEST_ENDPOINT is not set (scripts/test.sh starts moto; with CI=true it fails instead)"
        ));
        return;
    }
    let local = run(TestTarget::Local, scenario).await;
    let aws = run(TestTarget::AwsLocal, scenario).await;
    let expected = match scenario {
        Scenario::Completed | Scenario::HeldThenApproved => ("COMPLETED", Value::Null),
        Scenario::Declined => ("FAILED", json!("PAYMENT_DECLINED")),
        Scenario::ProvisioningFailed => ("FAILED", json!("PROVISIONING_FAILED")),
        Scenario::CancelledBeforePayment => ("CANCELLED", Value::Null),
        Scenario::HeldThenRejected => ("REJECTED", Value::Null),
    };
    assert_eq!(
        (aws["status"].as_str(), &aws["failureReason"]),
        (Some(expected.0), &expected.1),
        "{aws:#}"
    );
    assert!(
        aws["timeline"].as_array().is_some_and(|t| t.len() >= 3),
        "a story of several steps: {aws:#}"
    );
    assert_eq!(
        local, aws,
        "{scenario:?}: the local server and aws-local tell different stories"
    );
}

#[tokio::test]
async fn a_completed_purchase_tells_the_same_story_on_both_faces() {
    same_story(Scenario::Completed).await;
}

#[tokio::test]
async fn a_declined_payment_tells_the_same_story_on_both_faces() {
    same_story(Scenario::Declined).await;
}

#[tokio::test]
async fn a_provisioning_failure_tells_the_same_story_on_both_faces() {
    same_story(Scenario::ProvisioningFailed).await;
}

#[tokio::test]
async fn a_cancel_tells_the_same_story_on_both_faces() {
    same_story(Scenario::CancelledBeforePayment).await;
}

#[tokio::test]
async fn a_held_then_approved_purchase_tells_the_same_story_on_both_faces() {
    same_story(Scenario::HeldThenApproved).await;
}

#[tokio::test]
async fn a_held_then_rejected_purchase_tells_the_same_story_on_both_faces() {
    same_story(Scenario::HeldThenRejected).await;
}
