//! Every endpoint through the local server's HTTP interface on 127.0.0.1:
//! status codes, bodies and headers as `openapi.yaml` documents them.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};
use shared::auth::Scope;
use shared::steps::Step;

async fn purchase_count(h: &Harness) -> usize {
    let (status, body, _) = h
        .send(Method::GET, "/purchases?limit=100", &h.admin_token(), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body["purchases"].as_array().unwrap().len()
}

#[tokio::test]
async fn create_answers_201_with_location_and_get_shows_the_spec_fields() {
    let h = Harness::start().await;
    let (status, body, headers) = h
        .send(
            Method::POST,
            "/purchases",
            &h.customer_token(CUSTOMER),
            Some(&purchase_body(&[("ebook", 1)], "tok_visa")),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["purchaseId"].as_str().unwrap();
    assert_eq!(body["status"], "PENDING");
    assert!(body["message"].as_str().unwrap().len() > 10);
    // A relative reference: it resolves against the request's URL, so it
    // stays right under an API Gateway stage prefix too.
    let location = headers["location"].to_str().unwrap();
    let resolved = reqwest::Url::parse(&format!("{}/purchases", h.base))
        .unwrap()
        .join(location)
        .unwrap();
    assert_eq!(resolved.as_str(), format!("{}/purchases/{id}", h.base));
    let staged = reqwest::Url::parse(
        "https://abc.execute-api.eu-west-1.amazonaws.com/prod/purchase-orchestrator/purchases",
    )
    .unwrap()
    .join(location)
    .unwrap();
    assert_eq!(
        staged.path(),
        format!("/prod/purchase-orchestrator/purchases/{id}")
    );

    let (status, p, headers) = h
        .send(
            Method::GET,
            &format!("/purchases/{id}"),
            &h.customer_token(CUSTOMER),
            None,
        )
        .await;
    assert_eq!(status, 200);
    for field in [
        "purchaseId",
        "status",
        "products",
        "paymentStatus",
        "shippingStatus",
    ] {
        assert!(p.get(field).is_some(), "GET lacks {field}: {p}");
    }
    assert_eq!(p["products"][0]["id"], "ebook");
    assert_eq!(p["products"][0]["quantity"], 1);
    assert!(p["products"][0]["status"].is_string());
    assert_eq!(headers["etag"], format!("\"{}\"", p["version"]));
    assert!(
        p.get("reviewToken").is_none(),
        "internal fields stay internal"
    );
}

#[tokio::test]
async fn every_invalid_create_is_a_400_naming_the_field_and_stores_nothing() {
    let h = Harness::start().await;
    let valid = purchase_body(&[("ebook", 1)], "tok_visa");
    let mut cases: Vec<(Value, &str)> = Vec::new();
    let mut with = |path: &[&str], value: Value, field: &'static str| {
        let mut body = valid.clone();
        let mut target = &mut body;
        for key in &path[..path.len() - 1] {
            target = target.get_mut(*key).unwrap();
        }
        target[path[path.len() - 1]] = value;
        cases.push((body, field));
    };
    with(&["products"], json!([]), "products");
    with(
        &["products"],
        json!([{"id": "ebook", "quantity": 0}]),
        "products[0].quantity",
    );
    with(
        &["products"],
        json!([{"id": "ebook", "quantity": 100000}]),
        "products[0].quantity",
    );
    with(
        &["products"],
        json!([{"id": "nope", "quantity": 1}]),
        "products[0].id",
    );
    with(
        &["products"],
        json!([{"id": "ebook", "quantity": 1}, {"id": "ebook", "quantity": 1}]),
        "products[1].id",
    );
    with(
        &["products"],
        json!([{"id": "ebook", "quantity": 1}, {"id": "sticker", "quantity": 1}]),
        "products[1].id",
    );
    with(
        &["shippingAddress", "city"],
        json!("  "),
        "shippingAddress.city",
    );
    with(
        &["shippingAddress", "country"],
        json!("XX"),
        "shippingAddress.country",
    );
    with(
        &["paymentDetails", "transactionId"],
        json!(""),
        "paymentDetails.transactionId",
    );
    with(&["coupon"], json!("FREE"), "coupon");
    with(&["products"], json!("ebook"), "products");
    for (body, field) in cases {
        let (status, answer) = h.create(CUSTOMER, &body).await;
        assert_eq!(status, 400, "{field}: {answer}");
        assert_eq!(answer["error"], "VALIDATION_FAILED");
        let fields: Vec<_> = answer["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["field"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(fields, [field], "{answer}");
    }

    // Transport-level problems: malformed JSON, wrong content type, oversized body.
    let token = h.customer_token(CUSTOMER);
    let raw = |content_type: &'static str, body: Vec<u8>| {
        h.client
            .post(format!("{}/purchases", h.base))
            .bearer_auth(&token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    for (content_type, body, field) in [
        ("application/json", b"{\"customerId\": ".to_vec(), "body"),
        (
            "text/plain",
            serde_json::to_vec(&valid).unwrap(),
            "Content-Type",
        ),
        ("application/json", vec![b' '; 70 * 1024], "body"),
        ("application/json", vec![b' '; 5 * 1024 * 1024], "body"),
    ] {
        let response = raw(content_type, body).await.unwrap();
        assert_eq!(response.status(), 400);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["details"][0]["field"], field, "{answer}");
    }
    assert_eq!(
        purchase_count(&h).await,
        0,
        "rejected requests stored something"
    );
}

#[tokio::test]
async fn unknown_ids_answer_404_on_every_endpoint() {
    let h = Harness::start().await;
    let admin = h.admin_token();
    let id = "01890000-0000-7000-8000-000000000000";
    let update = json!({"shippingAddress": {"name": "A", "address": "B", "city": "C", "country": "DE", "postalCode": "1"}});
    let rules = json!({"rules": [{"id": "max-quantity", "parameters": {"max": 3}}]});
    let review = json!({"decision": "approve"});
    for (method, path, body) in [
        (Method::GET, format!("/purchases/{id}"), None),
        (Method::PUT, format!("/purchases/{id}"), Some(&update)),
        (Method::POST, format!("/purchases/{id}/cancel"), None),
        (
            Method::POST,
            format!("/purchases/{id}/apply-rules"),
            Some(&rules),
        ),
        (
            Method::POST,
            format!("/purchases/{id}/review"),
            Some(&review),
        ),
    ] {
        let (status, body, _) = h.send(method.clone(), &path, &admin, body).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert_eq!(body["error"], "NOT_FOUND");
    }
}

/// A purchase whose workflow is parked before `ReserveStock`, so it stays
/// PENDING while the test updates it.
async fn pending_purchase() -> (Harness, std::sync::Arc<Gate>, String) {
    let gate = Gate::new(Step::ReserveStock);
    let h = Harness::start_with(Setup {
        hook: Some(gate.clone()),
        ..Setup::default()
    })
    .await;
    let id = h
        .create_ok(&purchase_body(&[("ebook", 1)], "tok_visa"))
        .await;
    gate.reached().await;
    (h, gate, id)
}

#[tokio::test]
async fn update_changes_products_and_address_and_honours_if_match() {
    let (h, gate, id) = pending_purchase().await;
    let token = h.customer_token(CUSTOMER);
    let change = json!({
        "products": [{"id": "mug", "quantity": 2}],
        "shippingAddress": {"name": "Alice", "address": "2 Looking Glass Ln", "city": "Oxford", "country": "GB", "postalCode": "OX2 2BB"}
    });
    let (_, before, headers) = h
        .send(Method::GET, &format!("/purchases/{id}"), &token, None)
        .await;
    let etag = headers["etag"].to_str().unwrap().to_owned();

    let response = h
        .client
        .put(format!("{}/purchases/{id}", h.base))
        .bearer_auth(&token)
        .header("if-match", "\"999\"")
        .json(&change)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 412);

    let response = h
        .client
        .put(format!("{}/purchases/{id}", h.base))
        .bearer_auth(&token)
        .header("if-match", &etag)
        .json(&change)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let new_etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["purchaseId"], id);
    assert_eq!(body["status"], "PENDING");
    assert_ne!(new_etag, etag);

    let p = h.get(&id).await;
    assert_eq!(p["products"][0]["id"], "mug");
    assert_eq!(p["products"][0]["quantity"], 2);
    assert_eq!(p["totalAmount"], 2500);
    assert_eq!(
        p["shippingStatus"], "PENDING",
        "a physical product now needs shipping"
    );
    assert_eq!(p["shippingAddress"]["address"], "2 Looking Glass Ln");
    assert_ne!(p["version"], before["version"]);

    // The old ETag is stale now.
    let response = h
        .client
        .put(format!("{}/purchases/{id}", h.base))
        .bearer_auth(&token)
        .header("if-match", &etag)
        .json(&change)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 412);

    // Invalid update: 400 naming the field, nothing changed.
    let (status, body, _) = h
        .send(
            Method::PUT,
            &format!("/purchases/{id}"),
            &token,
            Some(&json!({"products": [{"id": "mug", "quantity": -1}]})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["details"][0]["field"], "products[0].quantity");
    assert_eq!(h.get(&id).await["version"], p["version"]);

    // The workflow then runs on the updated purchase.
    gate.open();
    let p = h.wait_final(&id).await;
    assert_eq!(p["status"], "COMPLETED");
    assert_eq!(h.stock("mug").await, 98);
    assert_eq!(h.stock("ebook").await, 100);
}

#[tokio::test]
async fn update_of_a_completed_purchase_is_a_409() {
    let h = Harness::start().await;
    let id = h
        .create_ok(&purchase_body(&[("ebook", 1)], "tok_visa"))
        .await;
    h.wait_final(&id).await;
    let (status, body, _) = h
        .send(
            Method::PUT,
            &format!("/purchases/{id}"),
            &h.customer_token(CUSTOMER),
            Some(&json!({"products": [{"id": "ebook", "quantity": 2}]})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "CONFLICT");
    assert!(body["message"].as_str().unwrap().contains("COMPLETED"));
}

#[tokio::test]
async fn cancel_is_idempotent() {
    let (h, gate, id) = pending_purchase().await;
    let (status, first) = h.cancel(&id).await;
    assert_eq!((status, first["status"].as_str()), (200, Some("CANCELLED")));
    let (status, second) = h.cancel(&id).await;
    assert_eq!(
        (status, second["status"].as_str()),
        (200, Some("CANCELLED"))
    );
    assert!(second["message"].as_str().unwrap().contains("already"));
    gate.open();
    assert_eq!(h.wait_final(&id).await["status"], "CANCELLED");
}

#[tokio::test]
async fn customers_cannot_see_or_touch_each_others_purchases() {
    let (h, gate, id) = pending_purchase().await;
    let bob = h.customer_token(OTHER_CUSTOMER);
    let update = json!({"products": [{"id": "ebook", "quantity": 2}]});
    for (method, path, body) in [
        (Method::GET, format!("/purchases/{id}"), None),
        (Method::PUT, format!("/purchases/{id}"), Some(&update)),
        (Method::POST, format!("/purchases/{id}/cancel"), None),
    ] {
        let (status, answer, _) = h.send(method.clone(), &path, &bob, body).await;
        assert_eq!(status, 404, "{method} {path} by another customer: {answer}");
    }
    // Buying on someone else's behalf is refused.
    let (status, _) = h
        .create(OTHER_CUSTOMER, &purchase_body(&[("ebook", 1)], "tok_visa"))
        .await;
    assert_eq!(status, 403);
    // Bob's listing does not show Alice's purchase, and he cannot ask for hers.
    let (status, list, _) = h.send(Method::GET, "/purchases", &bob, None).await;
    assert_eq!(status, 200);
    assert_eq!(list["purchases"].as_array().unwrap().len(), 0);
    let (status, _, _) = h
        .send(
            Method::GET,
            &format!("/purchases?customerId={CUSTOMER}"),
            &bob,
            None,
        )
        .await;
    assert_eq!(status, 403);
    gate.open();
    assert_eq!(
        h.wait_final(&id).await["status"],
        "COMPLETED",
        "Bob's attempts changed nothing"
    );
}

#[tokio::test]
async fn requests_without_valid_credentials_or_scope_are_refused() {
    let h = Harness::start().await;
    let response = h
        .client
        .get(format!("{}/purchases", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    let response = h
        .client
        .get(format!("{}/purchases", h.base))
        .bearer_auth("not.a.jwt")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let read_only = h.token(CUSTOMER, &[Scope::Read]);
    let (status, _, _) = h
        .send(
            Method::POST,
            "/purchases",
            &read_only,
            Some(&purchase_body(&[("ebook", 1)], "tok_visa")),
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(purchase_count(&h).await, 0);
}

#[tokio::test]
async fn listing_is_newest_first_paginated_and_filtered() {
    let h = Harness::start().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            h.create_ok(&purchase_body(&[("ebook", 1)], "tok_visa"))
                .await,
        );
    }
    let failed = h
        .create_ok(&purchase_body(&[("ebook", 1)], "tok_decline"))
        .await;
    for id in ids.iter().chain([&failed]) {
        h.wait_final(id).await;
    }
    let token = h.customer_token(CUSTOMER);
    let mut seen = Vec::new();
    let mut path = "/purchases?limit=2".to_owned();
    loop {
        let (status, page, _) = h.send(Method::GET, &path, &token, None).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(
            page["purchases"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["purchaseId"].as_str().unwrap().to_owned()),
        );
        match page["nextToken"].as_str() {
            Some(next) => path = format!("/purchases?limit=2&nextToken={next}"),
            None => break,
        }
    }
    let mut expected: Vec<String> = ids.iter().chain([&failed]).cloned().collect();
    expected.reverse();
    assert_eq!(seen, expected);

    let (_, page, _) = h
        .send(Method::GET, "/purchases?status=FAILED", &token, None)
        .await;
    let only: Vec<_> = page["purchases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["purchaseId"].as_str().unwrap())
        .collect();
    assert_eq!(only, [failed.as_str()]);

    for bad in [
        "/purchases?status=DONE",
        "/purchases?limit=0",
        "/purchases?limit=1000",
        "/purchases?nextToken=zz",
        "/purchases?sort=asc",
    ] {
        let (status, body, _) = h.send(Method::GET, bad, &token, None).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}

#[tokio::test]
async fn purchases_survive_a_restart() {
    let h = Harness::start().await;
    let completed = h.create_ok(&purchase_body(&[("mug", 1)], "tok_visa")).await;
    let failed = h
        .create_ok(&purchase_body(&[("mug", 1)], "tok_decline"))
        .await;
    let before_completed = h.wait_final(&completed).await;
    let before_failed = h.wait_final(&failed).await;
    let (h, _dir) = Harness::restart(h.stop().await).await;
    assert_eq!(h.get(&completed).await, before_completed);
    assert_eq!(h.get(&failed).await, before_failed);
    // Stock consumed before the restart is not reset by re-seeding the catalog.
    assert_eq!(h.stock("mug").await, 99);
}

#[tokio::test]
async fn unknown_routes_answer_json_404() {
    let h = Harness::start().await;
    let response = h
        .client
        .get(format!("{}/nothing-here", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "NOT_FOUND");
}
