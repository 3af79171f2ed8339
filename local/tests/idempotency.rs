//! `Idempotency-Key` on create and cancel: one purchase, one charge, however
//! often a client retries.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::Value;

async fn post_with_key(
    h: &Harness,
    path: &str,
    customer: &str,
    key: &str,
    body: Option<&Value>,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let mut request = h
        .client
        .post(format!("{}{path}", h.base))
        .bearer_auth(h.customer_token(customer))
        .header("Idempotency-Key", key);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, response.json().await.unwrap(), headers)
}

async fn all_purchases(h: &Harness) -> Vec<Value> {
    let (_, body, _) = h
        .send(
            reqwest::Method::GET,
            "/purchases?limit=100",
            &h.admin_token(),
            None,
        )
        .await;
    body["purchases"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_retried_create_returns_the_first_response_and_charges_once() {
    let h = Harness::start().await;
    let body = purchase_body(&[("ebook", 1)], "tok_visa");
    let (status, first, _) =
        post_with_key(&h, "/purchases", CUSTOMER, "order-42", Some(&body)).await;
    assert_eq!(status, 201);
    let id = first["purchaseId"].as_str().unwrap().to_owned();
    h.wait_final(&id).await;
    for _ in 0..3 {
        let (status, again, headers) =
            post_with_key(&h, "/purchases", CUSTOMER, "order-42", Some(&body)).await;
        assert_eq!(status, 201);
        assert_eq!(again, first, "the first response, byte for byte");
        assert_eq!(headers["idempotent-replayed"], "true");
        assert_eq!(headers["location"], format!("purchases/{id}"));
    }
    assert_eq!(all_purchases(&h).await.len(), 1);
    assert_eq!(h.payments.captures(), 1);
    h.assert_payments_asked_sensibly();
}

#[tokio::test]
async fn concurrent_duplicates_create_one_purchase() {
    let h = std::sync::Arc::new(Harness::start().await);
    let body = purchase_body(&[("ebook", 1)], "tok_visa");
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (h, body) = (h.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            post_with_key(&h, "/purchases", CUSTOMER, "burst-1", Some(&body)).await
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    for task in tasks {
        let (status, answer, _) = task.await.unwrap();
        match status {
            StatusCode::CREATED => {
                ids.insert(answer["purchaseId"].as_str().unwrap().to_owned());
            }
            // Still in flight when the duplicate arrived: the client retries later.
            StatusCode::CONFLICT => {
                assert!(answer["message"].as_str().unwrap().contains("in progress"))
            }
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(all_purchases(&h).await.len(), 1);
}

#[tokio::test]
async fn reusing_a_key_for_a_different_request_is_a_422() {
    let h = Harness::start().await;
    let (status, _, _) = post_with_key(
        &h,
        "/purchases",
        CUSTOMER,
        "k-1",
        Some(&purchase_body(&[("ebook", 1)], "tok_visa")),
    )
    .await;
    assert_eq!(status, 201);
    let (status, answer, _) = post_with_key(
        &h,
        "/purchases",
        CUSTOMER,
        "k-1",
        Some(&purchase_body(&[("ebook", 2)], "tok_visa")),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"], "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(all_purchases(&h).await.len(), 1);
}

#[tokio::test]
async fn keys_belong_to_one_customer() {
    let h = Harness::start().await;
    let (status, _, _) = post_with_key(
        &h,
        "/purchases",
        CUSTOMER,
        "same-key",
        Some(&purchase_body(&[("ebook", 1)], "tok_visa")),
    )
    .await;
    assert_eq!(status, 201);
    let mut bobs = purchase_body(&[("ebook", 1)], "tok_visa");
    bobs["customerId"] = OTHER_CUSTOMER.into();
    let (status, answer, headers) =
        post_with_key(&h, "/purchases", OTHER_CUSTOMER, "same-key", Some(&bobs)).await;
    assert_eq!(status, 201, "{answer}");
    assert!(headers.get("idempotent-replayed").is_none());
    assert_eq!(all_purchases(&h).await.len(), 2);
}

#[tokio::test]
async fn a_retried_cancel_replays_its_first_answer() {
    let gate = Gate::new(shared::steps::Step::CapturePayment);
    let h = Harness::start_with(Setup {
        hook: Some(gate.clone()),
        ..Setup::default()
    })
    .await;
    let id = h.create_ok(&purchase_body(&[("mug", 1)], "tok_visa")).await;
    gate.reached().await;
    let path = format!("/purchases/{id}/cancel");
    let (status, first, _) = post_with_key(&h, &path, CUSTOMER, "cancel-1", None).await;
    assert_eq!(status, 200);
    let (status, again, headers) = post_with_key(&h, &path, CUSTOMER, "cancel-1", None).await;
    assert_eq!((status, &again), (StatusCode::OK, &first));
    assert_eq!(headers["idempotent-replayed"], "true");
    gate.open();
    assert_eq!(h.wait_final(&id).await["status"], "CANCELLED");
}

#[tokio::test]
async fn malformed_keys_are_400s() {
    let h = Harness::start().await;
    let long = "k".repeat(256);
    for key in [long.as_str(), "has space"] {
        let (status, answer, _) = post_with_key(
            &h,
            "/purchases",
            CUSTOMER,
            key,
            Some(&purchase_body(&[("ebook", 1)], "tok_visa")),
        )
        .await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["details"][0]["field"], "Idempotency-Key");
    }
    assert!(all_purchases(&h).await.is_empty());
}
