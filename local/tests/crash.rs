//! Crashes at random moments: the real `purchase-orchestrator` binary, killed
//! with SIGKILL 50 times in the middle of a batch of purchases' lives and
//! restarted each time on the same data. Its payment and provisioning
//! providers live in this test process (over HTTP, through the production
//! adapters), so they remember everything across the kills, as real
//! providers would.
//!
//! At the end every purchase is final, nothing was asked of the providers
//! twice that should not have been, and money and stock balance exactly.
//! The figures go to docs/reliability.md (`scripts/reliability.sh`).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_local::providers::{PAYMENT_PATH, PROVISIONING_PATH};
use common::{assert_payment_requests_sensible, assert_provisioning_requests_sensible};
use serde_json::{Value, json};
use shared::adapters::embedded::EmbeddedStore;
use shared::adapters::simulators::{SimulatedPaymentGateway, SimulatedProvisioner};
use shared::auth::{Scope, mint_hs256_token};
use shared::domain::purchase::{PaymentDetails, PurchaseStatus};
use shared::domain::{ProductId, PurchaseId};
use shared::ports::store::{Inventory, PurchaseQuery, PurchaseStore};

const SECRET: &str = "crash-test-secret-0123456789abcdef0123";
const KILLS: usize = 50;

const CATALOG: &str = r#"[
  {"id": "book", "name": "Book", "unitPrice": 1000, "currency": "EUR", "stock": 1000, "kind": "digital"},
  {"id": "lamp", "name": "Lamp", "unitPrice": 2500, "currency": "EUR", "stock": 12, "kind": "physical"},
  {"id": "fail-provision-key", "name": "Refused key", "unitPrice": 700, "currency": "EUR", "stock": 100, "kind": "digital"}
]"#;

fn initial_stock() -> HashMap<&'static str, i64> {
    HashMap::from([("book", 1000), ("lamp", 12), ("fail-provision-key", 100)])
}

// ---------------------------------------------------------------------------
// The providers, over HTTP as the adapters speak it.

/// The simulators whose books the test reads at the end.
#[derive(Clone)]
struct Providers {
    payments: Arc<SimulatedPaymentGateway>,
    provisioning: Arc<SimulatedProvisioner>,
}

/// Serves the simulators with aws-local's provider routes: the wire the
/// production adapters speak, one implementation for both.
async fn serve_providers(providers: Providers) -> SocketAddr {
    let router = aws_local::providers::router(providers.payments, providers.provisioning);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    address
}

// ---------------------------------------------------------------------------
// The orchestrator process.

struct Orchestrator {
    port: u16,
    data_dir: std::path::PathBuf,
    catalog: std::path::PathBuf,
    providers: SocketAddr,
}

impl Orchestrator {
    fn spawn(&self) -> Child {
        Command::new(env!("CARGO_BIN_EXE_purchase-orchestrator"))
            .env("HOST", "127.0.0.1")
            .env("PORT", self.port.to_string())
            .env("DATA_DIR", &self.data_dir)
            .env("CATALOG_FILE", &self.catalog)
            .env("JWT_HS256_SECRET", SECRET)
            .env(
                "PAYMENT_URL",
                format!("http://{}{PAYMENT_PATH}", self.providers),
            )
            .env(
                "PROVISIONING_URL",
                format!("http://{}{PROVISIONING_PATH}", self.providers),
            )
            .env("RETRY_DELAY_SCALE", "0.01")
            .env("RECONCILE_EVERY_SECONDS", "1")
            .env("RECONCILE_AFTER_SECONDS", "1")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the purchase-orchestrator binary starts")
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}/purchase-orchestrator", self.port)
    }
}

fn token(customer: &str, admin: bool) -> String {
    let scopes: &[Scope] = if admin {
        &[Scope::Read, Scope::Write, Scope::Admin]
    } else {
        &[Scope::Read, Scope::Write]
    };
    mint_hs256_token(
        SECRET,
        local::DEFAULT_ISSUER,
        local::DEFAULT_AUDIENCE,
        customer,
        scopes,
        Duration::from_secs(3600),
    )
    .unwrap()
}

async fn wait_ready(client: &reqwest::Client, orchestrator: &Orchestrator) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = client
            .get(format!("{}/purchases?limit=1", orchestrator.base()))
            .bearer_auth(token("crash-admin", true))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the orchestrator did not come up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn body(n: usize) -> Value {
    let (products, token) = match n % 6 {
        0 => (json!([{"id": "book", "quantity": 1}]), "tok_visa"),
        1 => (
            json!([{"id": "lamp", "quantity": 1}, {"id": "book", "quantity": 2}]),
            "tok_visa",
        ),
        2 => (
            json!([{"id": "book", "quantity": 1}, {"id": "fail-provision-key", "quantity": 1}]),
            "tok_visa",
        ),
        3 => (json!([{"id": "lamp", "quantity": 2}]), "tok_decline"),
        4 => (json!([{"id": "book", "quantity": 3}]), "tok_flaky"),
        _ => (json!([{"id": "lamp", "quantity": 1}]), "tok_flaky"),
    };
    json!({
        "customerId": format!("c-{}", n % 3),
        "products": products,
        "paymentDetails": {"method": "card", "transactionId": token},
        "shippingAddress": {"name": "Crash", "address": "1 Test St", "city": "Berlin", "country": "DE", "postalCode": "10115"}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_fifty_times_every_purchase_ends_final_and_balanced() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    common::say(&format!(
        "crash test seed {seed} (replay the kill moments with CRASH_SEED={seed})"
    ));
    let mut dice = fastrand::Rng::with_seed(seed);
    let providers = Providers {
        payments: Arc::new(SimulatedPaymentGateway::default()),
        provisioning: Arc::new(SimulatedProvisioner::default()),
    };
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog.json");
    std::fs::write(&catalog, CATALOG).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let orchestrator = Orchestrator {
        port,
        data_dir: dir.path().join("data"),
        catalog,
        providers: serve_providers(providers.clone()).await,
    };
    let started = Instant::now();
    let mut created: HashMap<String, String> = HashMap::new(); // key → purchase id
    let mut next = 0usize;
    for round in 0..KILLS {
        let mut child = orchestrator.spawn();
        let client = reqwest::Client::new();
        wait_ready(&client, &orchestrator).await;
        // A few new purchases each round, plus the retries of any whose
        // create did not answer; a cancel now and then.
        let mut keys: Vec<String> = (0..3).map(|i| format!("order-{}", next + i)).collect();
        next += 3;
        keys.extend(
            created
                .iter()
                .filter(|(_, id)| id.is_empty())
                .map(|(k, _)| k.clone()),
        );
        let kill_after = Duration::from_millis(dice.u64(0..400));
        let work = async {
            for key in &keys {
                // Known before it is sent: the kill may land mid-request.
                created.entry(key.clone()).or_default();
                let n: usize = key.trim_start_matches("order-").parse().unwrap();
                let response = client
                    .post(format!("{}/purchases", orchestrator.base()))
                    .bearer_auth(token(&format!("c-{}", n % 3), false))
                    .header("Idempotency-Key", key)
                    .json(&body(n))
                    .send()
                    .await;
                let id = match response {
                    Ok(r) if r.status().as_u16() == 201 => r
                        .json::<Value>()
                        .await
                        .ok()
                        .and_then(|b| b["purchaseId"].as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    _ => String::new(),
                };
                let entry = created.entry(key.clone()).or_default();
                if !id.is_empty() {
                    *entry = id;
                }
            }
            if round % 7 == 3
                && let Some(id) = created.values().find(|id| !id.is_empty())
            {
                let _ = client
                    .post(format!("{}/purchases/{id}/cancel", orchestrator.base()))
                    .bearer_auth(token("crash-admin", true))
                    .send()
                    .await;
            }
            std::future::pending::<()>().await;
        };
        let _ = tokio::time::timeout(kill_after, work).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    // One last start: let everything finish.
    let mut child = orchestrator.spawn();
    let client = reqwest::Client::new();
    wait_ready(&client, &orchestrator).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let purchases = loop {
        let mut all = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let mut url = format!("{}/purchases?limit=100", orchestrator.base());
            if let Some(t) = &next_token {
                url.push_str(&format!("&nextToken={t}"));
            }
            let page: Value = client
                .get(url)
                .bearer_auth(token("crash-admin", true))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            all.extend(page["purchases"].as_array().unwrap().iter().cloned());
            match page["nextToken"].as_str() {
                Some(t) => next_token = Some(t.to_owned()),
                None => break,
            }
        }
        if all
            .iter()
            .all(|p| p.get("finalizedAt").is_some_and(|f| !f.is_null()))
        {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "not every purchase became final: {:#?}",
            all.iter()
                .filter(|p| p.get("finalizedAt").is_none())
                .map(|p| (&p["purchaseId"], &p["status"], &p["timeline"]))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let elapsed = started.elapsed();

    // No duplicates: one purchase per key at most.
    let answered = created.values().filter(|id| !id.is_empty()).count();
    assert!(
        purchases.len() <= created.len(),
        "{} purchases for {} keys",
        purchases.len(),
        created.len()
    );
    assert!(purchases.len() >= answered);
    // What the orchestrator asked of the providers.
    assert_payment_requests_sensible(
        &providers.payments.requests(),
        &providers.payments.accounts(),
    );
    assert_provisioning_requests_sensible(&providers.provisioning.requests());
    // Money and goods: kept exactly for the completed purchases.
    let accounts = providers.payments.accounts();
    let delivered = providers.provisioning.delivered();
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    for p in &purchases {
        let id = PurchaseId::new(p["purchaseId"].as_str().unwrap());
        let status = p["status"].as_str().unwrap();
        *outcomes
            .entry(format!(
                "{status}/{}",
                p["failureReason"].as_str().unwrap_or("-")
            ))
            .or_default() += 1;
        let account = accounts.get(&id).cloned().unwrap_or_default();
        let held = account.captured - account.refunded;
        let completed = status == "COMPLETED";
        let total = p["totalAmount"].as_i64().unwrap();
        assert_eq!(
            held,
            if completed { total } else { 0 },
            "money of {id} ({status})"
        );
        let goods = delivered
            .iter()
            .filter(|(purchase, _)| *purchase == id)
            .count();
        let lines = p["products"].as_array().unwrap().len();
        assert_eq!(
            goods,
            if completed { lines } else { 0 },
            "goods of {id} ({status})"
        );
    }
    // Stock: what is gone is exactly what completed purchases hold.
    let store = EmbeddedStore::open(&orchestrator.data_dir).unwrap();
    let mut everything = Vec::new();
    let mut query = PurchaseQuery {
        limit: 100,
        ..PurchaseQuery::default()
    };
    loop {
        let page = store.list_purchases(&query).await.unwrap();
        everything.extend(page.purchases);
        match page.next_token {
            Some(t) => query.next_token = Some(t),
            None => break,
        }
    }
    for (product, initial) in initial_stock() {
        let available = store
            .get_products(&[ProductId::new(product)])
            .await
            .unwrap()[0]
            .stock;
        let held: i64 = everything
            .iter()
            .filter(|p| p.status == PurchaseStatus::Completed)
            .flat_map(|p| &p.products)
            .filter(|l| l.id == product)
            .map(|l| i64::from(l.quantity))
            .sum();
        assert_eq!(initial, available + held, "stock of {product}");
    }
    let _ = PaymentDetails {
        method: String::new(),
        transaction_id: String::new(),
    };
    common::say(&format!(
        "crash test: {KILLS} kills, {} purchases ({} keys), outcomes {outcomes:?}, {} captures, {} refunds, {:.1} s",
        purchases.len(),
        created.len(),
        providers.payments.captures(),
        providers.payments.refunds(),
        elapsed.as_secs_f64()
    ));
    common::report(
        "SIGKILL at random moments (tests/crash.rs)",
        json!({
            "kills": KILLS,
            "purchases": purchases.len(),
            "keys": created.len(),
            "all final": true,
            "outcomes": outcomes,
            "captures": providers.payments.captures(),
            "refunds": providers.payments.refunds(),
            "money and stock balanced": true,
            "seed": seed,
            "seconds": elapsed.as_secs_f64(),
        }),
    );
}
