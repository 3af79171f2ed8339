//! Business rules through the API: apply-rules' reject and hold paths through
//! the real workflow definition, and the admin review of held purchases.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};
use shared::steps::Step;

async fn apply(h: &Harness, id: &str, token: &str, rules: Value) -> (u16, Value) {
    let (status, body, _) = h
        .send(
            Method::POST,
            &format!("/purchases/{id}/apply-rules"),
            token,
            Some(&json!({ "rules": rules })),
        )
        .await;
    (status, body)
}

/// A purchase parked just before `step`.
async fn parked_before(
    step: Step,
    products: &[(&str, u32)],
) -> (Harness, std::sync::Arc<Gate>, String) {
    let gate = Gate::new(step);
    let h = Harness::start_with(Setup {
        hook: Some(gate.clone()),
        ..Setup::default()
    })
    .await;
    let id = h.create_ok(&purchase_body(products, "tok_visa")).await;
    gate.reached().await;
    (h, gate, id)
}

#[tokio::test]
async fn a_reject_violation_rejects_and_the_workflow_compensates() {
    let (h, gate, id) = parked_before(Step::CapturePayment, &[("mug", 3)]).await;
    assert_eq!(h.stock("mug").await, 97, "reserved before the rules ran");
    let (status, body) = apply(
        &h,
        &id,
        &h.admin_token(),
        json!([
            {"id": "max-quantity", "parameters": {"max": 2}},
            {"id": "allowed-countries", "parameters": {"countries": ["GB", "IE"]}}
        ]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["purchaseId"], id);
    assert_eq!(body["status"], "REJECTED");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("max-quantity") && !message.contains("allowed-countries"),
        "{message}"
    );
    gate.open();
    let p = h.wait_final(&id).await;
    assert_eq!(p["status"], "REJECTED");
    assert_eq!(line_statuses(&p), ["RELEASED"]);
    assert_eq!(p["paymentStatus"], "NOT_CHARGED");
    assert_eq!(h.stock("mug").await, 100);
    let results = p["ruleResults"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["ruleId"], "max-quantity");
    assert_eq!(results[0]["outcome"], "VIOLATED");
    assert_eq!(results[0]["parameters"], json!({"max": 2}));
    assert_eq!(results[0]["evaluatedBy"], "back-office");
    assert_eq!(results[1]["outcome"], "PASSED");
}

#[tokio::test]
async fn a_hold_parks_the_workflow_until_approved() {
    let (h, gate, id) = parked_before(Step::CapturePayment, &[("mug", 1)]).await;
    let (status, body) = apply(&h, &id, &h.admin_token(), json!([
        {"id": "manual-review", "parameters": {"reason": "first order to this address", "onViolation": "hold"}}
    ])).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("ON_HOLD")),
        "{body}"
    );
    gate.open();
    // The workflow reaches AwaitReview and waits there.
    h.wait_until(&id, |p| {
        p["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["step"] == "AwaitReview")
    })
    .await;
    assert_eq!(h.get(&id).await["status"], "ON_HOLD");
    assert_eq!(h.payments.captures(), 0, "nothing charged while held");

    let (status, body) = h.review(&id, "approve").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("RESERVED")),
        "{body}"
    );
    let p = h.wait_final(&id).await;
    assert_eq!(p["status"], "COMPLETED");
    assert_eq!(h.payments.captures(), 1);
    assert_eq!(
        h.stock("mug").await,
        99,
        "reserved once, not again after the review"
    );
}

#[tokio::test]
async fn a_rejected_review_compensates() {
    let (h, gate, id) = parked_before(Step::ProvisionProducts, &[("mug", 1)]).await;
    let (status, _) = apply(&h, &id, &h.admin_token(), json!([
        {"id": "max-order-value", "parameters": {"amount": 1000, "currency": "EUR", "onViolation": "hold"}}
    ])).await;
    assert_eq!(status, 200);
    gate.open();
    h.wait_until(&id, |p| {
        p["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["step"] == "AwaitReview")
    })
    .await;
    let (status, body) = h.review(&id, "reject").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("REJECTED")),
        "{body}"
    );
    let p = h.wait_final(&id).await;
    assert_eq!(p["status"], "REJECTED");
    assert_eq!(p["paymentStatus"], "REFUNDED");
    assert_eq!(h.stock("mug").await, 100);
    assert_eq!((h.payments.captures(), h.payments.refunds()), (1, 1));
    h.assert_payments_asked_sensibly();
}

#[tokio::test]
async fn cancelling_a_held_purchase_releases_the_waiting_workflow() {
    let (h, gate, id) = parked_before(Step::CapturePayment, &[("mug", 1)]).await;
    apply(&h, &id, &h.admin_token(), json!([{"id": "manual-review", "parameters": {"reason": "fraud check", "onViolation": "hold"}}])).await;
    gate.open();
    h.wait_until(&id, |p| {
        p["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["step"] == "AwaitReview")
    })
    .await;
    let (status, _) = h.cancel(&id).await;
    assert_eq!(status, 200);
    let p = h.wait_final(&id).await;
    assert_eq!(p["status"], "CANCELLED");
    assert_eq!(h.stock("mug").await, 100);
}

#[tokio::test]
async fn passing_rules_leave_the_purchase_where_it_was() {
    let (h, gate, id) = parked_before(Step::CapturePayment, &[("ebook", 2)]).await;
    let (status, body) = apply(
        &h,
        &id,
        &h.admin_token(),
        json!([
            {"id": "max-total-items", "parameters": {"max": 5}},
            {"id": "min-order-value", "parameters": {"amount": 500, "currency": "EUR"}},
            {"id": "blocked-countries", "parameters": {"countries": ["KP"]}},
            {"id": "max-purchases-per-customer", "parameters": {"max": 3, "windowHours": 24}}
        ]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "RESERVED");
    assert_eq!(body["message"], "all 4 rules passed");
    gate.open();
    assert_eq!(h.wait_final(&id).await["status"], "COMPLETED");
}

#[tokio::test]
async fn max_purchases_per_customer_counts_the_customers_recent_purchases() {
    let (h, _gate, first) = parked_before(Step::ReserveStock, &[("ebook", 1)]).await;
    let second = h
        .create_ok(&purchase_body(&[("ebook", 1)], "tok_visa"))
        .await;
    let third = h
        .create_ok(&purchase_body(&[("ebook", 1)], "tok_visa"))
        .await;
    // Another customer's purchases do not count.
    let mut bobs = purchase_body(&[("ebook", 1)], "tok_visa");
    bobs["customerId"] = json!(OTHER_CUSTOMER);
    assert_eq!(h.create(OTHER_CUSTOMER, &bobs).await.0, 201);
    let rule = |max: u32| json!([{"id": "max-purchases-per-customer", "parameters": {"max": max, "windowHours": 1}}]);
    let (_, body) = apply(&h, &third, &h.admin_token(), rule(3)).await;
    assert_eq!(body["status"], "PENDING", "3 purchases, at most 3: {body}");
    let (_, body) = apply(&h, &third, &h.admin_token(), rule(2)).await;
    assert_eq!(body["status"], "REJECTED", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("3 purchases"),
        "{body}"
    );
    let _ = (first, second);
}

#[tokio::test]
async fn rules_on_a_terminal_purchase_are_a_409() {
    let h = Harness::start().await;
    let id = h
        .create_ok(&purchase_body(&[("ebook", 1)], "tok_visa"))
        .await;
    h.wait_final(&id).await;
    let (status, body) = apply(
        &h,
        &id,
        &h.admin_token(),
        json!([{"id": "max-quantity", "parameters": {"max": 5}}]),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        h.get(&id).await["ruleResults"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn invalid_rules_are_400s_naming_the_rule_and_parameter_and_change_nothing() {
    let (h, _gate, id) = parked_before(Step::CapturePayment, &[("ebook", 1)]).await;
    let version = h.get(&id).await["version"].clone();
    let admin = h.admin_token();
    for (rules, field) in [
        (json!([{"id": "no-such-rule"}]), "rules[0].id"),
        (json!([{"parameters": {"max": 1}}]), "rules[0].id"),
        (
            json!([{"id": "max-quantity", "parameters": {"max": "two"}}]),
            "rules[0].parameters.max",
        ),
        (
            json!([{"id": "max-quantity", "parameters": {"max": 0}}]),
            "rules[0].parameters.max",
        ),
        (
            json!([{"id": "max-quantity", "parameters": {}}]),
            "rules[0].parameters",
        ),
        (
            json!([{"id": "max-quantity", "parameters": {"max": 1, "extra": true}}]),
            "rules[0].parameters.extra",
        ),
        (
            json!([{"id": "max-total-items", "parameters": {"max": 3}}, {"id": "allowed-countries", "parameters": {"countries": ["GB", "XX"]}}]),
            "rules[1].parameters.countries[1]",
        ),
        (
            json!([{"id": "min-order-value", "parameters": {"amount": 100, "currency": "euro"}}]),
            "rules[0].parameters.currency",
        ),
        (
            json!([{"id": "manual-review", "parameters": {"reason": "x", "onViolation": "maybe"}}]),
            "rules[0].parameters.onViolation",
        ),
        (
            json!([{"id": "max-purchases-per-customer", "parameters": {"max": 1, "windowHours": 0}}]),
            "rules[0].parameters.windowHours",
        ),
        (json!([]), "rules"),
    ] {
        let (status, body) = apply(&h, &id, &admin, rules.clone()).await;
        assert_eq!(status, 400, "{rules}: {body}");
        assert_eq!(body["details"][0]["field"], field, "{rules}: {body}");
    }
    assert_eq!(
        h.get(&id).await["version"],
        version,
        "invalid rules stored something"
    );
}

#[tokio::test]
async fn only_admins_apply_rules_or_review() {
    let (h, _gate, id) = parked_before(Step::CapturePayment, &[("ebook", 1)]).await;
    let customer = h.customer_token(CUSTOMER);
    let (status, _) = apply(
        &h,
        &id,
        &customer,
        json!([{"id": "max-quantity", "parameters": {"max": 1}}]),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _, _) = h
        .send(
            Method::POST,
            &format!("/purchases/{id}/review"),
            &customer,
            Some(&json!({"decision": "approve"})),
        )
        .await;
    assert_eq!(status, 403);
    // Reviewing a purchase that is not on hold is a conflict.
    let (status, body) = h.review(&id, "approve").await;
    assert_eq!(status, 409, "{body}");
}

async fn admin(
    h: &Harness,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    h.send(method, path, &h.admin_token(), body).await
}

#[tokio::test]
async fn rule_sets_are_managed_by_admins() {
    let h = Harness::start().await;
    let set = json!({"name": "b2b", "description": "bulk buyers", "rules": [{"id": "max-quantity", "parameters": {"max": 500}}]});
    let (status, created, headers) = admin(&h, Method::POST, "/rules", Some(&set)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        headers["location"], "rules/b2b",
        "relative: it resolves under a stage too"
    );
    assert_eq!(headers["etag"], "\"1\"");
    assert_eq!(created["rules"], set["rules"]);
    assert_eq!(created["updatedBy"], "back-office");
    let (status, _, _) = admin(&h, Method::POST, "/rules", Some(&set)).await;
    assert_eq!(status, 409, "names are unique");

    let (status, fetched, _) = admin(&h, Method::GET, "/rules/b2b", None).await;
    assert_eq!((status, &fetched), (200, &created));
    let (_, list, _) = admin(&h, Method::GET, "/rules", None).await;
    assert_eq!(list["ruleSets"].as_array().unwrap().len(), 1);

    let change = json!({"rules": [{"id": "max-quantity", "parameters": {"max": 100}}]});
    let stale = h
        .client
        .put(format!("{}/rules/b2b", h.base))
        .bearer_auth(h.admin_token())
        .header("if-match", "\"7\"")
        .json(&change)
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 412);
    let fresh = h
        .client
        .put(format!("{}/rules/b2b", h.base))
        .bearer_auth(h.admin_token())
        .header("if-match", "\"1\"")
        .json(&change)
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), 200);
    let updated: Value = fresh.json().await.unwrap();
    assert_eq!(
        (updated["version"].as_u64(), &updated["rules"]),
        (Some(2), &change["rules"])
    );

    for (path, body, field) in [
        ("/rules", json!({"name": "Bad Name!", "rules": []}), "name"),
        (
            "/rules",
            json!({"name": "ok", "rules": [{"id": "max-quantity", "parameters": {"max": -1}}]}),
            "rules[0].parameters.max",
        ),
        ("/rules", json!({"name": "ok"}), "rules"),
    ] {
        let (status, answer, _) = admin(&h, Method::POST, path, Some(&body)).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["details"][0]["field"], field, "{answer}");
    }
    let (status, _, _) = h
        .send(Method::GET, "/rules", &h.customer_token(CUSTOMER), None)
        .await;
    assert_eq!(status, 403, "customers do not manage rules");

    let (status, _, _) = admin(&h, Method::DELETE, "/rules/b2b", None).await;
    assert_eq!(status, 204);
    let (status, _, _) = admin(&h, Method::GET, "/rules/b2b", None).await;
    assert_eq!(status, 404);
    let (status, _, _) = admin(&h, Method::DELETE, "/rules/b2b", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_default_rule_set_is_the_workflows_first_step() {
    let h = Harness::start().await;
    let default = json!({"name": "default", "rules": [
        {"id": "max-quantity", "parameters": {"max": 2}},
        {"id": "max-order-value", "parameters": {"amount": 3000, "currency": "EUR", "onViolation": "hold"}}
    ]});
    assert_eq!(
        admin(&h, Method::POST, "/rules", Some(&default)).await.0,
        201
    );

    // Rejected before anything is held or charged.
    let rejected = h.create_ok(&purchase_body(&[("mug", 3)], "tok_visa")).await;
    let p = h.wait_final(&rejected).await;
    assert_eq!(p["status"], "REJECTED");
    assert_eq!(p["timeline"][1]["step"], "EvaluateRules");
    assert_eq!(p["ruleResults"][0]["evaluatedBy"], "rule set default v1");
    assert_eq!(h.stock("mug").await, 100);
    assert_eq!(h.payments.captures(), 0);

    // Held for review, then approved: completes.
    let held = h
        .create_ok(&purchase_body(&[("poster", 1)], "tok_visa"))
        .await;
    h.wait_until(&held, |p| {
        p["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["step"] == "AwaitReview")
    })
    .await;
    assert_eq!(h.get(&held).await["status"], "ON_HOLD");
    let (status, body) = h.review(&held, "approve").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("PENDING")),
        "{body}"
    );
    assert_eq!(h.wait_final(&held).await["status"], "COMPLETED");

    // Within the rules: straight through.
    let fine = h
        .create_ok(&purchase_body(&[("ebook", 2)], "tok_visa"))
        .await;
    assert_eq!(h.wait_final(&fine).await["status"], "COMPLETED");
}
