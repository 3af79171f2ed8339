//! Reliability under retries, races and faults. Each test asserts the
//! property and, when `RELIABILITY_REPORT` names a file, appends its numbers
//! there as one JSON line (`scripts/reliability.sh` turns them into
//! docs/reliability.md).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::faults::{Faults, FaultyPayments, store_layer};
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shared::payment::SimulatedPaymentGateway;
use shared::steps::Step;

fn report(check: &str, numbers: Value) {
    let Ok(path) = std::env::var("RELIABILITY_REPORT") else {
        return;
    };
    let line = json!({ "check": check, "numbers": numbers, "store": std::env::var("PURCHASE_TEST_STORE").unwrap_or_else(|_| "embedded".into()) });
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    std::io::Write::write_all(&mut file, format!("{line}\n").as_bytes()).unwrap();
}

/// Creates with an Idempotency-Key, retrying like a well-behaved client
/// (503 and in-flight 409 are retried with the same key).
async fn create_with_retries(h: &Harness, key: &str, body: &Value) -> (String, u32) {
    let token = h.customer_token(CUSTOMER);
    for attempt in 1..=50 {
        let response = h
            .client
            .post(format!("{}/purchases", h.base))
            .bearer_auth(&token)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .unwrap();
        match response.status() {
            StatusCode::CREATED => {
                let answer: Value = response.json().await.unwrap();
                return (answer["purchaseId"].as_str().unwrap().to_owned(), attempt);
            }
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::CONFLICT => {
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
            other => panic!(
                "create answered {other}: {}",
                response.text().await.unwrap()
            ),
        }
    }
    panic!("create never succeeded for key {key}");
}

#[tokio::test]
async fn duplicate_posts_with_one_key_make_one_purchase_and_one_charge() {
    let h = Arc::new(Harness::start().await);
    let body = purchase_body(&[("ebook", 1)], "tok_visa");
    let mut ids = std::collections::BTreeSet::new();
    let mut sent = 0;
    for _ in 0..5 {
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let (h, body) = (h.clone(), body.clone());
                tokio::spawn(async move { create_with_retries(&h, "duplicate-key", &body).await })
            })
            .collect();
        for task in tasks {
            ids.insert(task.await.unwrap().0);
            sent += 1;
        }
    }
    assert_eq!(ids.len(), 1);
    let id = ids.into_iter().next().unwrap();
    assert_eq!(h.wait_final(&id).await["status"], "COMPLETED");
    let (_, list, _) = h
        .send(Method::GET, "/purchases?limit=100", &h.admin_token(), None)
        .await;
    let purchases = list["purchases"].as_array().unwrap().len();
    let charges = h.payments.ledger().captures;
    assert_eq!((purchases, charges), (1, 1));
    report(
        "duplicate POSTs, one Idempotency-Key",
        json!({"requests": sent, "purchases": purchases, "charges": charges}),
    );
}

#[tokio::test]
async fn concurrent_puts_lose_no_update() {
    let gate = Gate::new(Step::ReserveStock);
    let h = Arc::new(
        Harness::start_with(Setup {
            hook: Some(gate.clone()),
            ..Setup::default()
        })
        .await,
    );
    let id = h.create_ok(&purchase_body(&[("mug", 1)], "tok_visa")).await;
    gate.reached().await;
    let before = h.get(&id).await["version"].as_u64().unwrap();
    let writers = 200;
    let tasks: Vec<_> = (0..writers)
        .map(|i| {
            let (h, id) = (h.clone(), id.clone());
            tokio::spawn(async move {
                let change = json!({"shippingAddress": {"name": format!("writer-{i}"), "address": "1 Main St", "city": "Oxford", "country": "GB", "postalCode": "OX1 1AA"}});
                // A well-behaved client: a 409 ("changed concurrently too
                // often") is an explicit "try again", never a silent loss.
                let mut conflicts = 0u64;
                loop {
                    let status = h.send(Method::PUT, &format!("/purchases/{id}"), &h.customer_token(CUSTOMER), Some(&change)).await.0;
                    if status != 409 || conflicts == 50 {
                        return (status, conflicts);
                    }
                    conflicts += 1;
                }
            })
        })
        .collect();
    let mut statuses = BTreeMap::new();
    let mut retried_conflicts = 0;
    for task in tasks {
        let (status, conflicts) = task.await.unwrap();
        *statuses.entry(status).or_insert(0u64) += 1;
        retried_conflicts += conflicts;
    }
    let p = h.get(&id).await;
    let applied = p["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["step"] == "Update")
        .count() as u64;
    let after = p["version"].as_u64().unwrap();
    let succeeded = statuses.get(&200).copied().unwrap_or(0);
    // Every 200 is one applied change and one version: nothing overwritten unseen.
    assert_eq!(succeeded, writers, "{statuses:?}");
    assert_eq!(applied, succeeded);
    assert_eq!(after - before, succeeded);
    report(
        "200 concurrent PUTs",
        json!({"writers": writers, "succeeded": succeeded, "applied": applied, "versions advanced": after - before, "lost updates": succeeded - applied, "409s retried by the client": retried_conflicts}),
    );
    gate.open();
    h.wait_final(&id).await;
}

#[tokio::test]
async fn a_thousand_buyers_for_a_hundred_units() {
    let h = Arc::new(Harness::start().await);
    let buyers = 1000;
    let started = Instant::now();
    let tasks: Vec<_> = (0..buyers)
        .map(|i| {
            let h = h.clone();
            tokio::spawn(async move {
                create_with_retries(
                    &h,
                    &format!("buyer-{i}"),
                    &purchase_body(&[("hundred", 1)], "tok_visa"),
                )
                .await
                .0
            })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    let mut outcomes = BTreeMap::new();
    for id in &ids {
        let p = h.wait_final_within(id, Duration::from_secs(300)).await;
        let key = format!(
            "{}{}",
            p["status"].as_str().unwrap(),
            p["failureReason"]
                .as_str()
                .map(|r| format!("/{r}"))
                .unwrap_or_default()
        );
        *outcomes.entry(key).or_insert(0u64) += 1;
    }
    let elapsed = started.elapsed();
    let completed = outcomes.get("COMPLETED").copied().unwrap_or(0);
    let ledger = h.payments.ledger();
    let stock = h.stock("hundred").await;
    assert_eq!(completed, 100, "{outcomes:?}");
    assert_eq!(
        outcomes.get("FAILED/OUT_OF_STOCK").copied().unwrap_or(0),
        900,
        "{outcomes:?}"
    );
    assert_eq!(stock, 0);
    assert_eq!(ledger.captures, completed);
    assert_eq!(ledger.refunds, 0, "nobody failed after capture");
    report(
        "1,000 concurrent purchases, 100 units",
        json!({"purchases": buyers, "completed": completed, "out of stock": outcomes.get("FAILED/OUT_OF_STOCK"), "final stock": stock, "charges": ledger.captures, "refunds": ledger.refunds, "seconds": elapsed.as_secs_f64()}),
    );
}

/// Store and payment faults on ~10% of calls each, half of them after the
/// work was done: every purchase still ends in a final state, and stock and
/// money balance against what the purchases say.
#[tokio::test]
async fn injected_faults_leave_every_purchase_final_and_the_books_balanced() {
    let store_faults = Faults::new(10);
    let payment_faults = Faults::new(10);
    let simulator = Arc::new(SimulatedPaymentGateway::default());
    let h = Arc::new(
        Harness::start_with(Setup {
            store_layer: Some(store_layer(store_faults.clone())),
            payments: Some(Arc::new(FaultyPayments {
                inner: simulator.clone(),
                faults: payment_faults.clone(),
            })),
            ..Setup::default()
        })
        .await,
    );
    let initial: BTreeMap<&str, i64> =
        [("mug", 100), ("ebook", 100), ("fail-provision-key", 100)].into();
    let mix: [(&[(&str, u32)], &str); 4] = [
        (&[("mug", 1), ("ebook", 2)], "tok_visa"),
        (&[("ebook", 1)], "tok_flaky"),
        (&[("mug", 2)], "tok_decline"),
        (&[("mug", 1), ("fail-provision-key", 1)], "tok_visa"),
    ];
    let started = Instant::now();
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let h = h.clone();
            let (products, token) = mix[i % mix.len()];
            let body = purchase_body(products, token);
            tokio::spawn(
                async move { create_with_retries(&h, &format!("faulty-{i}"), &body).await },
            )
        })
        .collect();
    let mut create_attempts = 0;
    let mut ids = Vec::new();
    for task in tasks {
        let (id, attempts) = task.await.unwrap();
        create_attempts += attempts;
        ids.push(id);
    }
    let mut purchases = Vec::new();
    for id in &ids {
        purchases.push(h.wait_final_within(id, Duration::from_secs(180)).await);
    }
    let elapsed = started.elapsed();

    // Stock: what left the shelf is exactly what purchases still hold.
    for (product, start) in &initial {
        let held: i64 = purchases
            .iter()
            .flat_map(|p| p["products"].as_array().unwrap().clone())
            .filter(|l| {
                l["id"] == *product
                    && matches!(l["status"].as_str(), Some("RESERVED" | "PROVISIONED"))
            })
            .map(|l| l["quantity"].as_i64().unwrap())
            .sum();
        assert_eq!(
            start - h.stock(product).await,
            held,
            "stock of {product} does not balance"
        );
    }
    // Money: what the provider holds is exactly what purchases say was kept.
    let kept: i64 = purchases
        .iter()
        .filter(|p| {
            matches!(
                p["paymentStatus"].as_str(),
                Some("CAPTURED" | "REFUND_FAILED")
            )
        })
        .map(|p| p["totalAmount"].as_i64().unwrap())
        .sum();
    let ledger = simulator.ledger();
    assert_eq!(
        ledger.captured.values().sum::<i64>(),
        kept,
        "payments do not balance"
    );
    for p in &purchases {
        if p["status"] == "COMPLETED" {
            assert_eq!(p["paymentStatus"], "CAPTURED", "{p:#}");
        }
    }
    let mut outcomes = BTreeMap::new();
    for p in &purchases {
        let key = format!(
            "{}{}",
            p["status"].as_str().unwrap(),
            p["failureReason"]
                .as_str()
                .map(|r| format!("/{r}"))
                .unwrap_or_default()
        );
        *outcomes.entry(key).or_insert(0u64) += 1;
    }
    assert!(store_faults.count() > 0 && payment_faults.count() > 0);
    report(
        "injected faults (10% of store and payment calls)",
        json!({
            "purchases": ids.len(),
            "final": purchases.len(),
            "outcomes": outcomes,
            "store faults": store_faults.count(),
            "payment faults": payment_faults.count(),
            "create attempts": create_attempts,
            "captures": ledger.captures,
            "refunds": ledger.refunds,
            "stock balanced": true,
            "payments balanced": true,
            "seconds": elapsed.as_secs_f64()
        }),
    );
}
