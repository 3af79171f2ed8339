//! Reliability under retries, races and faults. Each test asserts the
//! property and, when `RELIABILITY_REPORT` names a file, appends its numbers
//! there as one JSON line (`scripts/reliability.sh` turns them into
//! docs/reliability.md).
//!
//! Every check here is on what the orchestrator *did*: the outcome of each
//! purchase, the requests it sent the payment provider (not only what the
//! simulator let through), the versions its writes produced. The fault
//! dice are seeded and print their seed; `FAULT_SEED=<n>` replays them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use common::faults::{Faults, FaultyPayments, FaultyProvisioning, store_layer};
use common::*;
use local::Stores;
use reqwest::Method;
use serde_json::{Value, json};
use shared::adapters::simulators::PaymentRequest;
use shared::api::idempotency::IN_FLIGHT_TTL;
use shared::domain::PurchaseId;
use shared::domain::lifecycle::StockChange;
use shared::domain::purchase::Purchase;
use shared::ports::store::{
    Claim, Completion, IdempotencyRecord, IdempotencyStore, PurchasePage, PurchaseQuery,
    PurchaseStore, StoreError,
};
use tokio::sync::Barrier;

/// One `POST /purchases` with an `Idempotency-Key`: status, body, and
/// whether the answer was a replay.
async fn post_create(h: &Harness, token: &str, key: &str, body: &Value) -> (u16, Value, bool) {
    let response = h
        .client
        .post(format!("{}/purchases", h.base))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, json, replayed)
}

/// What a client got from creating with one key.
struct Created {
    id: String,
    /// The status of every attempt, in order.
    statuses: Vec<u16>,
}

/// Creates with an Idempotency-Key, retrying like a well-behaved client:
/// 503 and the in-flight 409 are retried with the same key. A key whose
/// request died without freeing it answers 409 for [`IN_FLIGHT_TTL`], so the
/// client is that patient, even for a key that gets stuck twice.
async fn create_with_retries(h: &Harness, key: &str, body: &Value) -> Created {
    let token = h.customer_token(CUSTOMER);
    let deadline = Instant::now() + IN_FLIGHT_TTL * 3;
    let mut statuses = Vec::new();
    loop {
        let (status, answer, _) = post_create(h, &token, key, body).await;
        statuses.push(status);
        match status {
            201 => {
                return Created {
                    id: answer["purchaseId"].as_str().unwrap().to_owned(),
                    statuses,
                };
            }
            503 | 409 => {
                assert!(
                    Instant::now() < deadline,
                    "create with key {key} never succeeded: {}, last {answer}",
                    runs(&statuses)
                );
                let pause = (20 * statuses.len() as u64).min(500);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            other => panic!("create with key {key} answered {other}: {answer}"),
        }
    }
}

/// `[503, 409, 409, 201]` → `503, 409×2, 201`.
fn runs(statuses: &[u16]) -> String {
    let mut out: Vec<(u16, usize)> = Vec::new();
    for status in statuses {
        match out.last_mut() {
            Some((last, n)) if last == status => *n += 1,
            _ => out.push((*status, 1)),
        }
    }
    out.iter()
        .map(|(s, n)| {
            if *n == 1 {
                s.to_string()
            } else {
                format!("{s}×{n}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every purchase, through the API (admin, all pages), riding out 503s.
async fn all_purchases(h: &Harness) -> Vec<Value> {
    let token = h.admin_token();
    let mut purchases = Vec::new();
    let mut path = "/purchases?limit=100".to_owned();
    loop {
        let mut tries = 0;
        let page = loop {
            let (status, page, _) = h.send(Method::GET, &path, &token, None).await;
            tries += 1;
            if status == 503 && tries < 200 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            assert_eq!(status, 200, "GET {path}: {page}");
            break page;
        };
        purchases.extend(page["purchases"].as_array().unwrap().iter().cloned());
        match page["nextToken"].as_str() {
            Some(next) => path = format!("/purchases?limit=100&nextToken={next}"),
            None => return purchases,
        }
    }
}

/// `COMPLETED`, `FAILED/PAYMENT_DECLINED`, ...
fn outcome(p: &Value) -> String {
    format!(
        "{}{}",
        p["status"].as_str().unwrap(),
        p["failureReason"]
            .as_str()
            .map(|r| format!("/{r}"))
            .unwrap_or_default()
    )
}

fn address(name: &str) -> Value {
    json!({"shippingAddress": {"name": name, "address": "1 Main St", "city": "Oxford", "country": "GB", "postalCode": "OX1 1AA"}})
}

fn version_of(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    headers
        .get("etag")?
        .to_str()
        .ok()?
        .trim_matches('"')
        .parse()
        .ok()
}

/// Waves of concurrent POSTs with one `Idempotency-Key`: the key runs
/// once, every other answer is a replay (or "in progress", then a replay),
/// and the provider is asked for one capture, with one key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_posts_with_one_key_make_one_purchase_and_one_charge() {
    let h = Arc::new(Harness::start().await);
    let body = purchase_body(&[("ebook", 1)], "tok_visa");
    let per_wave = 12;
    // Wave 1 races for the key; wave 2 right after it (the workflow
    // typically still running); wave 3 once the purchase is final. Within a
    // wave every request starts at the same instant. Each answer: (status
    // of the first attempt, whether the final 201 was a replay, id).
    let mut waves: Vec<Vec<(u16, bool, String)>> = Vec::new();
    for wave in 0..3 {
        let start = Arc::new(Barrier::new(per_wave));
        let tasks: Vec<_> = (0..per_wave)
            .map(|_| {
                let (h, body, start) = (h.clone(), body.clone(), start.clone());
                tokio::spawn(async move {
                    let token = h.customer_token(CUSTOMER);
                    start.wait().await;
                    let mut first = None;
                    // A 409 says "in progress": retry the same key until answered.
                    for _ in 0..500 {
                        let (status, answer, replayed) =
                            post_create(&h, &token, "duplicate-key", &body).await;
                        let first = *first.get_or_insert(status);
                        match status {
                            201 => {
                                let id = answer["purchaseId"].as_str().unwrap().to_owned();
                                return (first, replayed, id);
                            }
                            409 => tokio::time::sleep(Duration::from_millis(5)).await,
                            other => panic!("duplicate POST answered {other}: {answer}"),
                        }
                    }
                    panic!("the key stayed in progress");
                })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap());
        }
        waves.push(answers);
        if wave == 1 {
            h.wait_final(&waves[0][0].2).await;
        }
    }
    let id = waves[0][0].2.clone();
    let ids: BTreeSet<&str> = waves.iter().flatten().map(|a| a.2.as_str()).collect();
    assert_eq!(ids.len(), 1, "one key, one purchase id: {ids:?}");
    let first_statuses: Vec<Vec<u16>> = waves
        .iter()
        .map(|w| w.iter().map(|a| a.0).collect())
        .collect();
    // The key ran once: exactly one answer in all waves was not a replay.
    let ran = waves.iter().flatten().filter(|a| !a.1).count();
    assert_eq!(ran, 1, "answers that were not replays: {waves:?}");
    assert!(
        waves[1..].iter().flatten().all(|a| a.0 == 201 && a.1),
        "later waves must get the first answer replayed: {waves:?}"
    );
    assert!(
        first_statuses
            .iter()
            .flatten()
            .all(|s| *s == 201 || *s == 409),
        "{first_statuses:?}"
    );
    let in_progress = first_statuses[0].iter().filter(|s| **s == 409).count();
    assert!(
        in_progress > 0,
        "wave 1 did not race: no request found the key in progress: {first_statuses:?}"
    );
    let p = h.wait_final(&id).await;
    assert_eq!(p["status"], "COMPLETED");
    let purchases = all_purchases(&h).await.len();
    assert_eq!(purchases, 1, "one key, one purchase");
    // What the orchestrator asked the provider for: one capture key, one
    // capture, nothing refunded, the purchase's total.
    h.assert_payments_asked_sensibly();
    assert_eq!(h.payments.captures(), 1, "{:?}", h.payments.requests());
    assert_eq!(h.account(&id), (1000, 0));
    let capture_keys: BTreeSet<String> = h
        .payments
        .requests()
        .into_iter()
        .filter_map(|r| match r {
            PaymentRequest::Capture { key, .. } => Some(key),
            PaymentRequest::Refund { .. } => None,
        })
        .collect();
    assert_eq!(capture_keys.len(), 1, "{capture_keys:?}");
    report(
        "duplicate POSTs, one Idempotency-Key",
        json!({"waves": waves.len(), "requests per wave": per_wave, "wave 1 in progress (409)": in_progress, "purchases": purchases, "charges": h.payments.captures()}),
    );
}

/// One PUT a racing writer sent.
#[derive(Debug)]
struct Put {
    status: u16,
    /// The version the PUT wrote (its ETag), for a 200.
    version: Option<u64>,
    name: String,
    message: String,
}

/// Writer `w` of purchase `i`: address changes until the purchase's budget
/// of PUTs is spent or the purchase is decided (409). Writer 0 is a
/// careful client: it sends `If-Match` with the version it last saw, and
/// reads again on a 412.
async fn writer(
    h: Arc<Harness>,
    id: String,
    (i, w): (usize, usize),
    start: Arc<Barrier>,
    budget: Arc<AtomicU32>,
) -> Vec<Put> {
    let token = h.customer_token(CUSTOMER);
    let conditional = w == 0;
    let path = format!("/purchases/{id}");
    let mut seen = version_of(&h.send(Method::GET, &path, &token, None).await.2);
    start.wait().await;
    let mut puts = Vec::new();
    while budget
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        let name = format!("p{i}-w{w}-{}", puts.len());
        let mut request = h
            .client
            .put(format!("{}{path}", h.base))
            .bearer_auth(&token)
            .json(&address(&name));
        if conditional && let Some(version) = seen {
            request = request.header("if-match", format!("\"{version}\""));
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let version = version_of(response.headers());
        let body: Value = response.json().await.unwrap();
        let message = body["message"].as_str().unwrap_or_default().to_owned();
        let decided = status == 409 && !message.contains("concurrently");
        match status {
            200 => seen = version,
            412 => seen = version_of(&h.send(Method::GET, &path, &token, None).await.2),
            409 => {}
            other => panic!("PUT {path} answered {other}: {body}"),
        }
        puts.push(Put {
            status,
            version: if status == 200 { version } else { None },
            name,
            message,
        });
        if decided {
            // Nothing more to write (and the canceller stops waiting).
            budget.store(0, Ordering::SeqCst);
            break;
        }
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..6))).await;
    }
    puts
}

/// PUTs (address changes) and a cancel race *live* workflows: no gate, the
/// payment is `tok_flaky` so CapturePayment fails twice and retries while
/// the writers write, and a `default` rule set makes every change be judged
/// again. Nothing is lost: every 200 is exactly one version step and one
/// `Update` in the timeline, the address is the last one written, nothing
/// changes a cancelled or shipped purchase, and money and stock balance.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn puts_and_cancels_racing_live_workflows_lose_no_update() {
    const PURCHASES: usize = 8;
    const WRITERS: usize = 3;
    // Each applied change adds `Update` and `Rules` to the timeline; the
    // budget keeps it under MAX_TIMELINE_ENTRIES (50), so no entry is folded
    // and the count below is exact.
    const PUTS_PER_PURCHASE: u32 = 16;
    let h = Arc::new(Harness::start().await);
    let (status, body, _) = h
        .send(
            Method::POST,
            "/rules",
            &h.admin_token(),
            Some(&json!({"name": "default", "rules": [{"id": "blocked-countries", "parameters": {"countries": ["KP"]}}]})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let everyone = Arc::new(Barrier::new(PURCHASES));
    let started = Instant::now();
    let tasks: Vec<_> = (0..PURCHASES)
        .map(|i| {
            let (h, everyone) = (h.clone(), everyone.clone());
            tokio::spawn(async move {
                everyone.wait().await;
                let id = h
                    .create_ok(&purchase_body(&[("mug", 1)], "tok_flaky"))
                    .await;
                let cancels = i % 2 == 0;
                let racers = Arc::new(Barrier::new(WRITERS + usize::from(cancels)));
                let budget = Arc::new(AtomicU32::new(PUTS_PER_PURCHASE));
                let writers: Vec<_> = (0..WRITERS)
                    .map(|w| {
                        tokio::spawn(writer(
                            h.clone(),
                            id.clone(),
                            (i, w),
                            racers.clone(),
                            budget.clone(),
                        ))
                    })
                    .collect();
                let cancel = if cancels {
                    let (h, id, racers, budget) =
                        (h.clone(), id.clone(), racers.clone(), budget.clone());
                    Some(tokio::spawn(async move {
                        racers.wait().await;
                        // Cancel halfway through the writers' budget, so
                        // PUTs land on both sides of it.
                        while budget.load(Ordering::SeqCst) > PUTS_PER_PURCHASE / 2 {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        h.cancel(&id).await
                    }))
                } else {
                    None
                };
                let mut puts = Vec::new();
                for writer in writers {
                    puts.extend(writer.await.unwrap());
                }
                let cancel = match cancel {
                    Some(task) => Some(task.await.unwrap()),
                    None => None,
                };
                (id, puts, cancel)
            })
        })
        .collect();
    let mut races = Vec::new();
    for task in tasks {
        races.push(task.await.unwrap());
    }

    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let (mut interleaved, mut refused_as_cancelled, mut completed) = (0, 0, 0);
    let mut versions_advanced = 0;
    let mut applied_total = 0;
    for (id, puts, cancel) in &races {
        let p = h.wait_final(id).await;
        let steps = timeline_steps(&p);
        let context =
            format!("purchase {id}: puts {puts:#?}\ncancel {cancel:?}\ntimeline {steps:?}");
        assert!(
            !steps.iter().any(|(s, _)| s == "Earlier"),
            "the timeline folded: the test's budget is too large; {context}"
        );
        for put in puts {
            let key = match put.status {
                409 if put.message.contains("CANCELLED") => "409 cancelled".to_owned(),
                409 if put.message.contains("ready to ship")
                    || put.message.contains("COMPLETED") =>
                {
                    "409 shipped".to_owned()
                }
                other => other.to_string(),
            };
            *statuses.entry(key).or_default() += 1;
        }
        let ok: Vec<&Put> = puts.iter().filter(|p| p.status == 200).collect();
        applied_total += ok.len();
        // Each 200 is its own version step: no two claim the same version.
        let versions: BTreeSet<u64> = ok.iter().map(|p| p.version.unwrap()).collect();
        assert_eq!(
            versions.len(),
            ok.len(),
            "two 200 PUTs share a version; {context}"
        );
        // ...and its own Update in the timeline.
        let updates: Vec<usize> = steps
            .iter()
            .enumerate()
            .filter(|(_, (s, _))| s == "Update")
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            updates.len(),
            ok.len(),
            "a 200 PUT is missing (or extra) in the timeline; {context}"
        );
        // The address is the one the last successful PUT wrote.
        let expected_name = ok
            .iter()
            .max_by_key(|p| p.version)
            .map(|p| p.name.as_str())
            .unwrap_or("Alice Liddell");
        assert_eq!(p["shippingAddress"]["name"], expected_name, "{context}");
        let version = p["version"].as_u64().unwrap();
        assert!(
            versions.iter().all(|v| *v <= version),
            "a PUT reported a version beyond the final one; {context}"
        );
        versions_advanced += version - 1;
        // Nothing changes a decided purchase: no Update after the cancel or
        // after the purchase was completed (ready to ship).
        if let Some(decided) = steps.iter().position(|(s, o)| {
            (s == "Cancel" && o == "REQUESTED") || (s == "ProvisionProducts" && o == "SUCCEEDED")
        }) {
            assert!(
                updates.iter().all(|n| *n < decided),
                "an address change was applied after the purchase was decided; {context}"
            );
        }
        // The race was live: a workflow step wrote between two applied PUTs.
        let workflow_between = match (updates.first(), updates.last()) {
            (Some(first), Some(last)) => steps[*first..*last].iter().any(|(s, _)| {
                matches!(
                    s.as_str(),
                    "EvaluateRules" | "ReserveStock" | "CapturePayment" | "ProvisionProducts"
                )
            }),
            _ => false,
        };
        interleaved += usize::from(workflow_between);
        let cancelled = matches!(cancel, Some((200, _)));
        if cancelled {
            assert_eq!(p["status"], "CANCELLED", "{context}");
            assert!(
                matches!(
                    p["paymentStatus"].as_str(),
                    Some("REFUNDED" | "NOT_CHARGED")
                ),
                "{context}"
            );
            let (captured, refunded) = h.account(id);
            assert_eq!(captured, refunded, "{context}");
            if puts
                .iter()
                .any(|p| p.status == 409 && p.message.contains("CANCELLED"))
            {
                refused_as_cancelled += 1;
            }
        } else {
            if let Some((status, body)) = cancel {
                assert_eq!(*status, 409, "{body}");
            }
            assert_eq!(outcome(&p), "COMPLETED", "{context}");
            assert_eq!(p["shippingStatus"], "READY_TO_SHIP", "{context}");
            assert_eq!(h.account(id), (1250, 0), "{context}");
            completed += 1;
        }
    }
    // The races happened: writes interleaved with live steps, a careful
    // writer's version moved under it, a PUT met a cancel.
    assert!(
        interleaved > 0,
        "no PUT landed between two workflow steps: {statuses:?}"
    );
    assert!(
        statuses.get("412").copied().unwrap_or(0) > 0,
        "no conditional PUT ever found the version moved: {statuses:?}"
    );
    assert!(
        refused_as_cancelled > 0,
        "no PUT was refused because a racing cancel landed first: {statuses:?}"
    );
    assert!(versions_advanced > applied_total as u64);
    // Stock and money balance with what the purchases say.
    assert_eq!(h.stock("mug").await, 100 - completed as i64);
    h.assert_payments_asked_sensibly();
    report(
        "PUTs and cancels racing live workflows",
        json!({"purchases": PURCHASES, "writers per purchase": WRITERS, "PUT answers": statuses, "purchases with PUTs between workflow steps": interleaved, "versions advanced": versions_advanced, "updates applied": applied_total, "lost updates": 0, "completed": completed, "seconds": started.elapsed().as_secs_f64()}),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
                .id
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
        *outcomes.entry(outcome(&p)).or_insert(0u64) += 1;
    }
    let elapsed = started.elapsed();
    let completed = outcomes.get("COMPLETED").copied().unwrap_or(0);
    let stock = h.stock("hundred").await;
    assert_eq!(completed, 100, "{outcomes:?}");
    assert_eq!(
        outcomes.get("FAILED/OUT_OF_STOCK").copied().unwrap_or(0),
        900,
        "{outcomes:?}"
    );
    assert_eq!(stock, 0);
    assert_eq!(h.payments.captures() as u64, completed);
    assert_eq!(h.payments.refunds(), 0, "nobody failed after capture");
    h.assert_payments_asked_sensibly();
    report(
        "1,000 concurrent purchases, 100 units",
        json!({"purchases": buyers, "completed": completed, "out of stock": outcomes.get("FAILED/OUT_OF_STOCK"), "final stock": stock, "charges": h.payments.captures(), "refunds": h.payments.refunds(), "seconds": elapsed.as_secs_f64()}),
    );
}

/// The share of calls the fault test fails. A claim of an idempotency key
/// whose write lands but whose answer is lost (half the claim faults)
/// locks that key for [`IN_FLIGHT_TTL`] (15 s): its client can only get
/// through after that. At 5% (60 purchases, ~85 faults a run) a run takes
/// 1 s, or 15–30 s when a key is locked once or twice.
const FAULT_PERCENT: u32 = 5;

/// A kind of purchase in the fault test, and how it must end: every fault
/// injected is transient, so the outcome is decided by the inputs alone.
struct Kind {
    products: &'static [(&'static str, u32)],
    token: &'static str,
    outcome: &'static str,
}

const KINDS: [Kind; 4] = [
    Kind {
        products: &[("mug", 1), ("ebook", 2)],
        token: "tok_visa",
        outcome: "COMPLETED",
    },
    Kind {
        products: &[("ebook", 1)],
        token: "tok_flaky",
        outcome: "COMPLETED",
    },
    Kind {
        products: &[("mug", 2)],
        token: "tok_decline",
        outcome: "FAILED/PAYMENT_DECLINED",
    },
    Kind {
        products: &[("mug", 1), ("fail-provision-key", 1)],
        token: "tok_visa",
        outcome: "FAILED/PROVISIONING_FAILED",
    },
];

/// Transient faults on [`FAULT_PERCENT`] of calls to every port — purchases (listing
/// included), stock, rule sets, idempotency keys (claim, complete,
/// release), payments and provisioning — half of them after the work was
/// done. One seeded die decides them all (`FAULT_SEED` replays it). Every
/// purchase ends exactly as its inputs say, each key makes exactly one
/// purchase, and stock and money balance to the unit.
#[tokio::test]
async fn injected_faults_change_no_outcome_and_leave_the_books_balanced() {
    let faults = Faults::new(FAULT_PERCENT);
    let seed = faults.seed;
    let (payment_faults, provisioning_faults) = (faults.clone(), faults.clone());
    let h = Arc::new(
        Harness::start_with(Setup {
            store_layer: Some(store_layer(faults.clone())),
            payments: Some(Box::new(move |inner| {
                Arc::new(FaultyPayments {
                    inner,
                    faults: payment_faults,
                })
            })),
            provisioning: Some(Box::new(move |inner| {
                Arc::new(FaultyProvisioning {
                    inner,
                    faults: provisioning_faults,
                })
            })),
            ..Setup::default()
        })
        .await,
    );
    let initial: BTreeMap<&str, i64> =
        [("mug", 100), ("ebook", 100), ("fail-provision-key", 100)].into();
    let count = 60;
    let started = Instant::now();
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let h = h.clone();
            let kind = &KINDS[i % KINDS.len()];
            let body = purchase_body(kind.products, kind.token);
            let key = format!("faulty-{i}");
            tokio::spawn(async move {
                let created = create_with_retries(&h, &key, &body).await;
                (key, created)
            })
        })
        .collect();
    let mut created = Vec::new();
    for task in tasks {
        created.push(task.await.unwrap());
    }
    let replay = format!("(replay with FAULT_SEED={seed})");
    let mut purchases = Vec::new();
    for (_, c) in &created {
        purchases.push(h.wait_final_within(&c.id, Duration::from_secs(180)).await);
    }
    let elapsed = started.elapsed();

    // Each purchase ends as its inputs say, with the parts to match.
    let mut outcomes = BTreeMap::new();
    for (i, ((key, c), p)) in created.iter().zip(&purchases).enumerate() {
        let kind = &KINDS[i % KINDS.len()];
        let context = format!(
            "{key} ({} with {:?}) {replay}: {p:#}",
            kind.token, kind.products
        );
        *outcomes.entry(outcome(p)).or_insert(0u64) += 1;
        assert_eq!(outcome(p), kind.outcome, "{context}");
        let total = p["totalAmount"].as_i64().unwrap();
        let lines = line_statuses(p);
        match kind.outcome {
            "COMPLETED" => {
                assert_eq!(p["paymentStatus"], "CAPTURED", "{context}");
                assert!(lines.iter().all(|l| l == "PROVISIONED"), "{context}");
                assert_eq!(h.account(&c.id), (total, 0), "{context}");
                let mut wanted: Vec<String> =
                    kind.products.iter().map(|(id, _)| id.to_string()).collect();
                wanted.sort();
                assert_eq!(h.delivered(&c.id), wanted, "{context}");
            }
            "FAILED/PAYMENT_DECLINED" => {
                assert_eq!(p["paymentStatus"], "DECLINED", "{context}");
                assert!(lines.iter().all(|l| l == "RELEASED"), "{context}");
                assert_eq!(h.account(&c.id), (0, 0), "{context}");
            }
            "FAILED/PROVISIONING_FAILED" => {
                assert_eq!(p["paymentStatus"], "REFUNDED", "{context}");
                assert_eq!(lines, ["REVOKED", "PROVISIONING_FAILED"], "{context}");
                assert_eq!(h.account(&c.id), (total, total), "{context}");
                assert!(h.delivered(&c.id).is_empty(), "{context}");
            }
            other => unreachable!("{other}"),
        }
    }

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
            "stock of {product} does not balance {replay}"
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
    let held: i64 = h
        .payments
        .accounts()
        .values()
        .map(|a| a.captured - a.refunded)
        .sum();
    assert_eq!(held, kept, "payments do not balance {replay}");
    h.assert_payments_asked_sensibly();
    h.assert_provisioning_asked_sensibly();
    assert!(faults.count() > 0, "no fault was injected {replay}");
    // One key, one purchase: a create retried after a 503 continued with
    // the purchase its first attempt chose.
    let listed: BTreeMap<String, Value> = all_purchases(&h)
        .await
        .into_iter()
        .map(|p| (p["purchaseId"].as_str().unwrap().to_owned(), p))
        .collect();
    let answered: BTreeSet<&str> = created.iter().map(|(_, c)| c.id.as_str()).collect();
    assert_eq!(
        answered.len(),
        count,
        "two keys got the same purchase {replay}"
    );
    let extra: Vec<String> = listed
        .iter()
        .filter(|(id, _)| !answered.contains(id.as_str()))
        .map(|(id, p)| format!("{id} ({}, created {})", outcome(p), p["createdAt"]))
        .collect();
    let missing: Vec<&&str> = answered
        .iter()
        .filter(|id| !listed.contains_key(**id))
        .collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{count} keys made {} purchases; stored but answered to nobody: {extra:?}; answered but not stored: {missing:?}; create attempts per key: {:?} {replay}",
        listed.len(),
        created
            .iter()
            .filter(|(_, c)| c.statuses.len() > 1)
            .map(|(k, c)| format!("{k}: {}", runs(&c.statuses)))
            .collect::<Vec<_>>()
    );

    let attempts: usize = created.iter().map(|(_, c)| c.statuses.len()).sum();
    let retried: usize = created.iter().filter(|(_, c)| c.statuses.len() > 1).count();
    report(
        "injected faults (on every store, payment and provisioning port)",
        json!({
            "seed": seed,
            "percent of calls faulted": FAULT_PERCENT,
            "purchases": count,
            "final": purchases.len(),
            "outcomes": outcomes,
            "outcomes as the inputs say": true,
            "faults injected": faults.count(),
            "create attempts": attempts,
            "creates retried": retried,
            "answers to retried creates": created
                .iter()
                .filter(|(_, c)| c.statuses.len() > 1)
                .map(|(k, c)| format!("{k}: {}", runs(&c.statuses)))
                .collect::<Vec<_>>(),
            "captures": h.payments.captures(),
            "refunds": h.payments.refunds(),
            "stock balanced": true,
            "payments balanced": true,
            "seconds": elapsed.as_secs_f64()
        }),
    );
}

/// The purchase store with the answer to the first create lost *after* the
/// purchase was stored (a timeout, a crash after the write).
struct LoseFirstCreateAnswer {
    inner: Arc<dyn PurchaseStore>,
    armed: AtomicBool,
}

#[async_trait]
impl PurchaseStore for LoseFirstCreateAnswer {
    async fn create_purchase(
        &self,
        purchase: &Purchase,
        completion: Option<&Completion>,
    ) -> Result<bool, StoreError> {
        let completed = self.inner.create_purchase(purchase, completion).await?;
        if self.armed.swap(false, Ordering::SeqCst) {
            return Err(StoreError::Unavailable("injected: answer lost".into()));
        }
        Ok(completed)
    }
    async fn get_purchase(&self, id: &PurchaseId) -> Result<Option<Purchase>, StoreError> {
        self.inner.get_purchase(id).await
    }
    async fn save_purchase(
        &self,
        purchase: &Purchase,
        stock: &StockChange,
    ) -> Result<(), StoreError> {
        self.inner.save_purchase(purchase, stock).await
    }
    async fn list_purchases(&self, query: &PurchaseQuery) -> Result<PurchasePage, StoreError> {
        self.inner.list_purchases(query).await
    }
    async fn unfinished_purchases(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Purchase>, StoreError> {
        self.inner.unfinished_purchases(before, limit).await
    }
}

/// The idempotency store with the first release lost (the request's
/// process died, or the store throttled it).
struct LoseFirstRelease {
    inner: Arc<dyn IdempotencyStore>,
    armed: AtomicBool,
}

#[async_trait]
impl IdempotencyStore for LoseFirstRelease {
    async fn claim(&self, record: &IdempotencyRecord) -> Result<Claim, StoreError> {
        self.inner.claim(record).await
    }
    async fn get(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.inner.get(key).await
    }
    async fn complete(&self, completion: &Completion) -> Result<(), StoreError> {
        self.inner.complete(completion).await
    }
    async fn release(&self, key: &str, expires_at: DateTime<Utc>) -> Result<(), StoreError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            return Err(StoreError::Unavailable("injected: release lost".into()));
        }
        self.inner.release(key, expires_at).await
    }
}

/// The random fault test's rarest path, made certain: the first attempt
/// stores the purchase — and with it, in the same write, the create's
/// answer for its key — then loses that answer (503) and cannot free its key
/// either. The retry gets the recorded answer replayed: the same purchase,
/// never a second one, as `shared::api::idempotency` promises. The failed
/// attempt never started the workflow; the reconciler does, so the purchase
/// still has its way forward.
#[tokio::test]
async fn a_create_whose_answer_and_release_were_lost_is_replayed_and_reconciled() {
    let h = Harness::start_with(Setup {
        store_layer: Some(Arc::new(|stores: Stores| Stores {
            purchases: Arc::new(LoseFirstCreateAnswer {
                inner: stores.purchases.clone(),
                armed: AtomicBool::new(true),
            }),
            idempotency: Arc::new(LoseFirstRelease {
                inner: stores.idempotency.clone(),
                armed: AtomicBool::new(true),
            }),
            ..stores
        })),
        ..Setup::default()
    })
    .await;
    let created = create_with_retries(
        &h,
        "lost-release",
        &purchase_body(&[("ebook", 1)], "tok_visa"),
    )
    .await;
    // The scenario played as set up: 503, then the recorded answer.
    assert_eq!(created.statuses, vec![503, 201]);
    let purchases: Vec<(String, String)> = all_purchases(&h)
        .await
        .iter()
        .map(|p| {
            (
                p["purchaseId"].as_str().unwrap().to_owned(),
                p["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        purchases,
        vec![(created.id.clone(), "PENDING".to_owned())],
        "one Idempotency-Key, one purchase, not started yet"
    );
    let findings = h.system.reconcile(Some(Duration::ZERO)).await.unwrap();
    assert_eq!(findings.started, 1, "{findings:?}");
    assert_eq!(h.wait_final(&created.id).await["status"], "COMPLETED");
    assert_eq!(h.payments.captures(), 1);
}
