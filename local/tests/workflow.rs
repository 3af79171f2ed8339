//! The purchase workflow, driven through the real `statemachine/purchase.asl.json`
//! by the local runner, via the HTTP API on 127.0.0.1.

mod common;

use common::*;
use shared::steps::Step;

#[tokio::test]
async fn happy_path_completes_with_every_status_telling_the_same_story() {
    let h = Harness::start().await;
    let id = h
        .create_ok(&purchase_body(&[("ebook", 2), ("mug", 1)], "tok_visa"))
        .await;
    let p = h.wait_final(&id).await;
    assert_eq!(p["status"], "COMPLETED");
    assert_eq!(line_statuses(&p), ["PROVISIONED", "PROVISIONED"]);
    assert_eq!(p["paymentStatus"], "CAPTURED");
    assert_eq!(p["shippingStatus"], "READY_TO_SHIP");
    assert_eq!(p["totalAmount"], 2 * 1000 + 1250);
    assert!(p.get("failureReason").is_none());
    let steps: Vec<_> = p["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["step"].as_str().unwrap(), e["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            ("Create", "ACCEPTED"),
            ("ReserveStock", "SUCCEEDED"),
            ("CapturePayment", "SUCCEEDED"),
            ("ProvisionProducts", "SUCCEEDED")
        ]
    );
    assert_eq!(h.stock("ebook").await, 98);
    assert_eq!(h.stock("mug").await, 99);
    assert_eq!(h.payments.captures(), 1);
    assert_eq!(h.provisioning.delivered().len(), 2);
}

#[tokio::test]
async fn digital_only_purchase_needs_no_shipping() {
    let h = Harness::start().await;
    let id = h
        .create_ok(&purchase_body(&[("ebook", 1)], "tok_visa"))
        .await;
    let p = h.wait_final(&id).await;
    assert_eq!(p["status"], "COMPLETED");
    assert_eq!(p["shippingStatus"], "NOT_REQUIRED");
}

#[tokio::test]
async fn out_of_stock_fails_without_reserving_or_charging_anything() {
    let h = Harness::start().await;
    // 1 poster in stock; ask for 2, together with an available product.
    let id = h
        .create_ok(&purchase_body(&[("ebook", 1), ("poster", 2)], "tok_visa"))
        .await;
    let p = h.wait_final(&id).await;
    assert_eq!(p["status"], "FAILED");
    assert_eq!(p["failureReason"], "OUT_OF_STOCK");
    assert_eq!(line_statuses(&p), ["CANCELLED", "OUT_OF_STOCK"]);
    assert_eq!(p["paymentStatus"], "NOT_CHARGED");
    assert_eq!(p["shippingStatus"], "CANCELLED");
    // All or nothing: the available line was not held either.
    assert_eq!(h.stock("ebook").await, 100);
    assert_eq!(h.stock("poster").await, 1);
    assert_eq!(h.payments.captures(), 0);
}

#[tokio::test]
async fn declined_payment_releases_stock() {
    let h = Harness::start().await;
    let id = h
        .create_ok(&purchase_body(
            &[("mug", 3)],
            "tok_decline_insufficient_funds",
        ))
        .await;
    let p = h.wait_final(&id).await;
    assert_eq!(p["status"], "FAILED");
    assert_eq!(p["failureReason"], "PAYMENT_DECLINED");
    assert_eq!(p["paymentStatus"], "DECLINED");
    assert_eq!(line_statuses(&p), ["RELEASED"]);
    assert_eq!(h.stock("mug").await, 100);
    assert_eq!(h.payments.captures(), 0);
}

#[tokio::test]
async fn flaky_payment_is_retried_then_completes_with_one_charge() {
    let h = Harness::start().await;
    let id = h
        .create_ok(&purchase_body(&[("ebook", 1)], "tok_flaky"))
        .await;
    let p = h.wait_final(&id).await;
    assert_eq!(p["status"], "COMPLETED");
    let retries = p["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "RETRYING")
        .count();
    assert_eq!(retries, 2, "{p:#}");
    assert_eq!((h.payments.captures(), h.payments.refunds()), (1, 0));
    h.assert_payments_asked_sensibly();
}

#[tokio::test]
async fn provisioning_failure_refunds_and_releases() {
    let h = Harness::start().await;
    let id = h
        .create_ok(&purchase_body(
            &[("mug", 1), ("fail-provision-key", 1)],
            "tok_visa",
        ))
        .await;
    let p = h.wait_final(&id).await;
    assert_eq!(p["status"], "FAILED");
    assert_eq!(p["failureReason"], "PROVISIONING_FAILED");
    assert_eq!(p["paymentStatus"], "REFUNDED");
    assert!(
        line_statuses(&p).contains(&"PROVISIONING_FAILED".to_owned()),
        "{p:#}"
    );
    assert_eq!(h.stock("mug").await, 100);
    assert_eq!(h.stock("fail-provision-key").await, 100);
    assert_eq!((h.payments.captures(), h.payments.refunds()), (1, 1));
    assert_eq!(
        h.account(&id),
        (
            p["totalAmount"].as_i64().unwrap(),
            p["totalAmount"].as_i64().unwrap()
        )
    );
    h.assert_payments_asked_sensibly();
}

/// Cancels while the workflow is paused just before `step`, then lets it go on.
async fn cancel_before(step: Step) -> (Harness, serde_json::Value) {
    let gate = Gate::new(step);
    let h = Harness::start_with(Setup {
        hook: Some(gate.clone()),
        ..Setup::default()
    })
    .await;
    let id = h.create_ok(&purchase_body(&[("mug", 2)], "tok_visa")).await;
    gate.reached().await;
    let (status, body) = h.cancel(&id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "CANCELLED");
    gate.open();
    let p = h.wait_final(&id).await;
    (h, p)
}

#[tokio::test]
async fn cancel_before_reservation_holds_nothing() {
    let (h, p) = cancel_before(Step::ReserveStock).await;
    assert_eq!(p["status"], "CANCELLED");
    assert_eq!(line_statuses(&p), ["CANCELLED"]);
    assert_eq!(p["paymentStatus"], "NOT_CHARGED");
    assert_eq!(h.stock("mug").await, 100);
}

#[tokio::test]
async fn cancel_after_reservation_releases_stock() {
    let (h, p) = cancel_before(Step::CapturePayment).await;
    assert_eq!(p["status"], "CANCELLED");
    assert_eq!(line_statuses(&p), ["RELEASED"]);
    assert_eq!(p["paymentStatus"], "NOT_CHARGED");
    assert_eq!(h.stock("mug").await, 100);
    assert_eq!(h.payments.captures(), 0);
}

#[tokio::test]
async fn cancel_after_capture_refunds() {
    let (h, p) = cancel_before(Step::ProvisionProducts).await;
    assert_eq!(p["status"], "CANCELLED");
    assert_eq!(p["paymentStatus"], "REFUNDED");
    assert_eq!(line_statuses(&p), ["RELEASED"]);
    assert_eq!(p["shippingStatus"], "CANCELLED");
    assert_eq!(h.stock("mug").await, 100);
    assert_eq!((h.payments.captures(), h.payments.refunds()), (1, 1));
    h.assert_payments_asked_sensibly();
}

#[tokio::test]
async fn cancel_of_a_completed_purchase_is_refused() {
    let h = Harness::start().await;
    let id = h
        .create_ok(&purchase_body(&[("ebook", 1)], "tok_visa"))
        .await;
    h.wait_final(&id).await;
    let (status, body) = h.cancel(&id).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["message"].as_str().unwrap().contains("COMPLETED"));
    assert_eq!(h.get(&id).await["status"], "COMPLETED");
}

#[tokio::test]
async fn parallel_purchases_never_oversell() {
    let h = Harness::start().await;
    // 5 units of "limited", 12 customers racing for one each.
    let mut tasks = Vec::new();
    let h = std::sync::Arc::new(h);
    for _ in 0..12 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            h.create_ok(&purchase_body(&[("limited", 1)], "tok_visa"))
                .await
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    let mut completed = 0;
    let mut out_of_stock = 0;
    for id in &ids {
        let p = h.wait_final(id).await;
        match (p["status"].as_str().unwrap(), p["failureReason"].as_str()) {
            ("COMPLETED", None) => completed += 1,
            ("FAILED", Some("OUT_OF_STOCK")) => out_of_stock += 1,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!((completed, out_of_stock), (5, 7));
    assert_eq!(h.stock("limited").await, 0);
    assert_eq!(h.payments.captures(), 5);
}

/// Stops the whole process state (runtime and all) mid-workflow, then starts
/// a new orchestrator on the same data: the execution resumes and completes
/// (`STANDARD`), or, lost with the process (`EXPRESS`), is replaced by the
/// reconciler's new run, which continues where the purchase stands.
#[test]
fn restart_mid_workflow_resumes_from_the_last_completed_state() {
    let gate = Gate::new(Step::CapturePayment);
    let first = tokio::runtime::Runtime::new().unwrap();
    let (id, stopped) = first.block_on(async {
        let h = Harness::start_with(Setup {
            hook: Some(gate.clone()),
            ..Setup::default()
        })
        .await;
        let id = h.create_ok(&purchase_body(&[("mug", 1)], "tok_visa")).await;
        gate.reached().await; // ReserveStock done, CapturePayment about to run
        assert_eq!(h.get(&id).await["status"], "RESERVED");
        (id, h.stop().await)
    });
    // Dropping the runtime drops the paused execution, like a crash.
    first.shutdown_timeout(std::time::Duration::from_secs(5));

    let second = tokio::runtime::Runtime::new().unwrap();
    second.block_on(async {
        let (h, _dir) = Harness::restart(stopped).await;
        if express() {
            assert!(h.system.workflow.checkpoint(&id).unwrap().is_none());
            assert_eq!(h.reconcile_now().await.restarted, 1);
        }
        let p = h.wait_final(&id).await;
        assert_eq!(p["status"], "COMPLETED", "{p:#}");
        // Reserved once, before the restart; not again after it.
        assert_eq!(h.stock("mug").await, 99);
        let reserved = p["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["step"] == "ReserveStock")
            .count();
        assert_eq!(reserved, 1);
        assert_eq!(h.payments.captures(), 1);
    });
}
