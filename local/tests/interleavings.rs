//! Generated interleavings: random sequences of API requests (create with
//! and without keys, update products or address, cancel, apply-rules hold
//! or reject, review, redrive), workflow steps (run, crashed before doing
//! anything, crashed after doing everything, crashed between the port call
//! and its write, held back while everything else goes on), provider outages
//! and reconciler passes — with the purchases' invariants checked after
//! every one of them:
//!
//! - stock: per product, initial = available + what lines hold;
//! - money: what the provider holds for a purchase is its total or nothing,
//!   matches its payment status, and once final is kept only if `COMPLETED`;
//!   the orchestrator never asks for a second capture, a capture after a
//!   refund, or more back than was captured;
//! - rules: a `COMPLETED` purchase passes its rules on its final contents
//!   (holds only with the reviewer's approval of exactly those contents);
//! - goods: nothing delivered stays with a purchase that is not `COMPLETED`
//!   once it is final, and what a purchase says it delivered was delivered;
//! - a way forward: every purchase that is not final has an execution
//!   running (at a step, or its review parked with a token a decision can
//!   reach) or needs attention with a redrivable execution (`STANDARD`; an
//!   `EXPRESS` one is redriven by a new run);
//! - no request ever gets a 5xx (but a redrive's "retry in a moment" while
//!   the execution still runs), and every timeline stays bounded.
//!
//! At the end every purchase is driven to a final status and money and
//! stock must balance exactly.
//!
//! `INTERLEAVING_CASES` sets the number of cases (600 by default;
//! `scripts/test.sh` runs 2000 on the embedded store, 40 on DynamoDB and 200
//! with `WORKFLOW_TYPE=EXPRESS`).
//! Failures shrink to a minimal sequence and are kept in
//! `interleavings.proptest-regressions`, replayed first on every run.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use common::faults::{Outage, RefundOutage, RevokeOutage};
use common::{assert_payment_requests_sensible, assert_provisioning_requests_sensible};
use http::{HeaderMap, HeaderValue, header};
use local::{Attempt, LocalOptions, LocalSystem, StepHook, StoreChoice, Stores};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
use serde_json::{Value, json};
use shared::adapters::simulators::{
    PaymentRequest, ProvisioningRequest, SimulatedPaymentGateway, SimulatedProvisioner,
};
use shared::api::endpoint::Endpoint;
use shared::api::request::ApiRequest;
use shared::auth::{AuthConfig, KeySource, Scope, mint_hs256_token};
use shared::domain::lifecycle::StockChange;
use shared::domain::purchase::{
    LineStatus, MAX_TIMELINE_ENTRIES, PaymentStatus, Purchase, PurchaseStatus,
};
use shared::domain::rules::Contents;
use shared::domain::{ProductId, PurchaseId};
use shared::ports::store::{Completion, PurchasePage, PurchaseQuery, PurchaseStore, StoreError};
use shared::ports::workflow::{Machine, Run};
use shared::steps::Step;

const SECRET: &str = "interleavings-test-secret-0123456789abcdef";
const CUSTOMER: &str = "c-model";

/// The catalog: small stocks, so purchases compete for them.
const CATALOG: &str = r#"[
  {"id": "book", "name": "Book", "unitPrice": 1000, "currency": "EUR", "stock": 6, "kind": "digital"},
  {"id": "lamp", "name": "Lamp", "unitPrice": 2500, "currency": "EUR", "stock": 3, "kind": "physical"},
  {"id": "fail-provision-key", "name": "Refused key", "unitPrice": 700, "currency": "EUR", "stock": 5, "kind": "digital"}
]"#;

fn initial_stock() -> HashMap<&'static str, i64> {
    HashMap::from([("book", 6), ("lamp", 3), ("fail-provision-key", 5)])
}

/// Product choices for creates and updates.
const LINES: [&[(&str, u32)]; 5] = [
    &[("book", 1)],
    &[("lamp", 2)],
    &[("book", 4), ("lamp", 1)],
    &[("book", 1), ("fail-provision-key", 1)],
    &[("lamp", 3), ("book", 2)],
];

const TOKENS: [&str; 3] = ["tok_visa", "tok_decline", "tok_flaky"];
const COUNTRIES: [&str; 3] = ["DE", "FR", "KP"];

/// The `default` rule set of every case: no shipping to KP, at most 3 of a
/// product.
fn default_rules() -> Value {
    json!({"name": "default", "rules": [
        {"id": "blocked-countries", "parameters": {"countries": ["KP"]}},
        {"id": "max-quantity", "parameters": {"max": 3}}
    ]})
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    /// The attempt runs.
    Run,
    /// It fails before doing anything (the function crashed on start).
    CrashBefore,
    /// It runs, and its answer is lost (crashed after everything).
    CrashAfter,
    /// Its purchase write fails after the port call (crashed in between).
    FailWrite,
}

#[derive(Debug, Clone)]
enum Op {
    Create {
        lines: usize,
        token: usize,
        key: Option<u8>,
    },
    UpdateAddress {
        p: usize,
        country: usize,
    },
    UpdateProducts {
        p: usize,
        lines: usize,
    },
    Cancel {
        p: usize,
        key: Option<u8>,
    },
    ApplyRules {
        p: usize,
        hold: bool,
    },
    Review {
        p: usize,
        approve: bool,
        key: Option<u8>,
    },
    Redrive {
        p: usize,
    },
    Step {
        p: usize,
        mode: Mode,
    },
    Drain {
        p: usize,
    },
    Outage {
        refunds: bool,
        down: bool,
    },
    Reconcile,
}

fn op() -> impl Strategy<Value = Op> {
    let key = proptest::option::of(0u8..2);
    let p = 0usize..4;
    let mode = prop_oneof![
        4 => Just(Mode::Run),
        1 => Just(Mode::CrashBefore),
        1 => Just(Mode::CrashAfter),
        1 => Just(Mode::FailWrite),
    ];
    prop_oneof![
        3 => (0..LINES.len(), 0..TOKENS.len(), key.clone())
            .prop_map(|(lines, token, key)| Op::Create { lines, token, key }),
        2 => (p.clone(), 0..COUNTRIES.len()).prop_map(|(p, country)| Op::UpdateAddress { p, country }),
        1 => (p.clone(), 0..LINES.len()).prop_map(|(p, lines)| Op::UpdateProducts { p, lines }),
        1 => (p.clone(), key.clone()).prop_map(|(p, key)| Op::Cancel { p, key }),
        1 => (p.clone(), any::<bool>()).prop_map(|(p, hold)| Op::ApplyRules { p, hold }),
        2 => (p.clone(), any::<bool>(), key).prop_map(|(p, approve, key)| Op::Review { p, approve, key }),
        1 => p.clone().prop_map(|p| Op::Redrive { p }),
        10 => (p.clone(), mode).prop_map(|(p, mode)| Op::Step { p, mode }),
        2 => p.prop_map(|p| Op::Drain { p }),
        1 => (any::<bool>(), any::<bool>()).prop_map(|(refunds, down)| Op::Outage { refunds, down }),
        1 => Just(Op::Reconcile),
    ]
}

// ---------------------------------------------------------------------------
// The conductor: every step attempt waits for the test's word.

#[derive(Default)]
struct Lane {
    /// The attempt waiting at `before`, and how to let it go.
    waiting: Option<(Step, tokio::sync::oneshot::Sender<Attempt>)>,
    /// Let every attempt run without waiting (draining).
    free: bool,
    /// The next attempt's answer is lost.
    lose_answer: bool,
    /// The last attempt that finished, and whether it succeeded.
    last_finished: Option<(Step, bool)>,
}

#[derive(Default)]
struct Conductor {
    lanes: Mutex<HashMap<String, Lane>>,
}

impl Conductor {
    fn lanes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lane>> {
        self.lanes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn lost_answer() -> asl::TaskFailure {
    asl::TaskFailure::new("Lambda.Unknown", "injected: the function's answer was lost")
}

#[async_trait]
impl StepHook for Conductor {
    async fn before(&self, step: Step, purchase_id: &str) -> Attempt {
        let receiver = {
            let mut lanes = self.lanes();
            let lane = lanes.entry(purchase_id.to_owned()).or_default();
            if lane.free {
                return Attempt::Run;
            }
            let (sender, receiver) = tokio::sync::oneshot::channel();
            lane.waiting = Some((step, sender));
            receiver
        };
        receiver.await.unwrap_or(Attempt::Run)
    }

    async fn after(
        &self,
        step: Step,
        purchase_id: &str,
        result: &Result<Value, asl::TaskFailure>,
    ) -> Option<asl::TaskFailure> {
        let mut lanes = self.lanes();
        let lane = lanes.entry(purchase_id.to_owned()).or_default();
        lane.last_finished = Some((step, result.is_ok()));
        if std::mem::take(&mut lane.lose_answer) {
            lane.last_finished = Some((step, false));
            return Some(lost_answer());
        }
        None
    }
}

// ---------------------------------------------------------------------------
// A store that fails one purchase write on demand (the crash between a
// provider call and the write that records it).

struct WriteFault {
    inner: Stores,
    armed: Mutex<Option<PurchaseId>>,
}

impl WriteFault {
    fn arm(&self, id: &PurchaseId) {
        *self.armed.lock().unwrap() = Some(id.clone());
    }
    fn disarm(&self) {
        *self.armed.lock().unwrap() = None;
    }
}

#[async_trait]
impl PurchaseStore for WriteFault {
    async fn create_purchase(
        &self,
        purchase: &Purchase,
        completion: Option<&Completion>,
    ) -> Result<bool, StoreError> {
        self.inner
            .purchases
            .create_purchase(purchase, completion)
            .await
    }
    async fn get_purchase(&self, id: &PurchaseId) -> Result<Option<Purchase>, StoreError> {
        self.inner.purchases.get_purchase(id).await
    }
    async fn save_purchase(
        &self,
        purchase: &Purchase,
        stock: &StockChange,
    ) -> Result<(), StoreError> {
        let hit = {
            let mut armed = self.armed.lock().unwrap();
            if armed.as_ref() == Some(&purchase.purchase_id) {
                *armed = None;
                true
            } else {
                false
            }
        };
        if hit {
            return Err(StoreError::Unavailable(
                "injected: the write was lost".into(),
            ));
        }
        self.inner.purchases.save_purchase(purchase, stock).await
    }
    async fn list_purchases(&self, query: &PurchaseQuery) -> Result<PurchasePage, StoreError> {
        self.inner.purchases.list_purchases(query).await
    }
    async fn unfinished_purchases(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Purchase>, StoreError> {
        self.inner
            .purchases
            .unfinished_purchases(before, limit)
            .await
    }
}

// ---------------------------------------------------------------------------
// One case: a system, the purchases it made, and the checks.

struct World {
    system: LocalSystem,
    /// `WORKFLOW_TYPE=EXPRESS`: purchase runs cannot be redriven.
    express: bool,
    conductor: Arc<Conductor>,
    writes: Arc<WriteFault>,
    payments: Arc<SimulatedPaymentGateway>,
    provisioning: Arc<SimulatedProvisioner>,
    refunds: Arc<Outage>,
    revocations: Arc<Outage>,
    purchases: Vec<PurchaseId>,
    _dir: tempfile::TempDir,
}

/// The store under test: DynamoDB on moto with `PURCHASE_TEST_STORE=dynamodb`,
/// otherwise redb held in memory (thousands of cases, no disk).
fn store_choice() -> StoreChoice {
    match common::store_under_test() {
        StoreChoice::Embedded => StoreChoice::InMemory,
        dynamodb => dynamodb,
    }
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let catalog = dir.path().join("catalog.json");
        std::fs::write(&catalog, CATALOG).unwrap();
        let conductor = Arc::new(Conductor::default());
        let payments = Arc::new(SimulatedPaymentGateway::default());
        let provisioning = Arc::new(SimulatedProvisioner::default());
        let refunds = Arc::new(Outage::default());
        let revocations = Arc::new(Outage::default());
        let writes_cell: Arc<Mutex<Option<Arc<WriteFault>>>> = Arc::default();
        let cell = writes_cell.clone();
        let options = LocalOptions {
            data_dir: dir.path().to_path_buf(),
            catalog_file: Some(catalog),
            store: store_choice(),
            auth: AuthConfig {
                issuer: local::DEFAULT_ISSUER.into(),
                audience: local::DEFAULT_AUDIENCE.into(),
                leeway_seconds: 5,
                keys: KeySource::Hs256 {
                    secret: SECRET.into(),
                },
            },
            payments: Arc::new(RefundOutage {
                inner: payments.clone(),
                outage: refunds.clone(),
            }),
            provisioning: Arc::new(RevokeOutage {
                inner: provisioning.clone(),
                outage: revocations.clone(),
            }),
            step_hook: Some(conductor.clone()),
            store_layer: Some(Arc::new(move |inner: Stores| {
                let fault = Arc::new(WriteFault {
                    inner: inner.clone(),
                    armed: Mutex::new(None),
                });
                *cell.lock().unwrap() = Some(fault.clone());
                Stores {
                    purchases: fault,
                    ..inner
                }
            })),
            workflow_layer: None,
            // Retries without waiting: the test decides when each attempt runs.
            delay_scale: 0.0,
            reconcile_every: None,
            reconcile_after: Duration::from_secs(300),
            workflow_type: common::workflow_type_under_test(),
        };
        let system = LocalSystem::start(options).await.unwrap();
        let writes = writes_cell.lock().unwrap().clone().unwrap();
        let world = World {
            system,
            express: common::express(),
            conductor,
            writes,
            payments,
            provisioning,
            refunds,
            revocations,
            purchases: Vec::new(),
            _dir: dir,
        };
        let (status, body) = world
            .call(
                Endpoint::CreateRuleSet,
                None,
                Some(default_rules()),
                None,
                true,
            )
            .await;
        assert_eq!(status, 201, "{body}");
        world
    }

    fn token(&self, admin: bool) -> String {
        let (who, scopes): (&str, &[Scope]) = if admin {
            ("back-office", &[Scope::Read, Scope::Write, Scope::Admin])
        } else {
            (CUSTOMER, &[Scope::Read, Scope::Write])
        };
        mint_hs256_token(
            SECRET,
            local::DEFAULT_ISSUER,
            local::DEFAULT_AUDIENCE,
            who,
            scopes,
            Duration::from_secs(3600),
        )
        .unwrap()
    }

    /// One API request, straight to the handler the Lambda and the local
    /// server both run. No request may ever get a 5xx here.
    async fn call(
        &self,
        endpoint: Endpoint,
        id: Option<&PurchaseId>,
        body: Option<Value>,
        key: Option<u8>,
        admin: bool,
    ) -> (u16, Value) {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {}", self.token(admin))).unwrap(),
        );
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(key) = key {
            headers.insert(
                "idempotency-key",
                HeaderValue::from_str(&format!("key-{key}")).unwrap(),
            );
        }
        let request = ApiRequest {
            headers,
            body: body.map(|b| Bytes::from(b.to_string())).unwrap_or_default(),
            purchase_id: id.map(|id| id.to_string()),
            rule_set_name: None,
            query: Vec::new(),
            request_id: "model".into(),
        };
        let response = endpoint.handle(&self.system.app, &request).await;
        let status = response.status().as_u16();
        let value = serde_json::from_str(response.body()).unwrap_or(Value::Null);
        // The one 5xx a request may get here: a redrive while the execution
        // still runs (being redriven, or still ending) is "retry in a moment".
        let retry_later = endpoint == Endpoint::RedrivePurchase && status == 503;
        assert!(
            status < 500 || retry_later,
            "{endpoint:?} answered {status}: {value}"
        );
        (status, value)
    }

    fn pick(&self, p: usize) -> Option<PurchaseId> {
        (!self.purchases.is_empty()).then(|| self.purchases[p % self.purchases.len()].clone())
    }

    async fn load(&self, id: &PurchaseId) -> Purchase {
        self.system
            .app
            .purchases
            .get_purchase(id)
            .await
            .unwrap()
            .unwrap()
    }

    /// The latest checkpoint of the purchase machine's current run.
    fn checkpoint(&self, p: &Purchase) -> Option<asl::Checkpoint> {
        self.system
            .workflow
            .checkpoint(&Run::current(p).name())
            .unwrap()
    }

    /// The executions of the purchase (its runs, their reviews) running
    /// now, with their latest checkpoints.
    fn executions(&self, id: &PurchaseId) -> Vec<(Machine, String, Option<asl::Checkpoint>)> {
        let workflow = &self.system.workflow;
        workflow
            .running_executions(id)
            .into_iter()
            .map(|(machine, name)| {
                let checkpoint = workflow.execution_checkpoint(machine, &name).unwrap();
                (machine, name, checkpoint)
            })
            .collect()
    }

    /// A review execution of the purchase parked in `AwaitReview` (its
    /// function returned) on the token the purchase knows, so a decision
    /// can reach it.
    fn parked(&self, p: &Purchase) -> bool {
        let reviewed = self
            .conductor
            .lanes()
            .get(p.purchase_id.as_str())
            .is_some_and(|l| l.last_finished == Some((Step::AwaitReview, true)));
        reviewed
            && self
                .executions(&p.purchase_id)
                .into_iter()
                .any(|(machine, _, c)| {
                    machine == Machine::Review
                        && c.is_some_and(|c| {
                            c.state_name == "AwaitReview"
                                && c.task_token.is_some()
                                && p.review_token == c.task_token
                        })
                })
    }

    /// Whether a purchase's executions are at rest: one waits at a step, or
    /// none is between steps (all ended, or its review parked on a token
    /// the purchase knows). Right after a decision reached the parked task,
    /// the review is still at `AwaitReview` for a moment, but the purchase
    /// no longer holds its token: not at rest yet; nor is a run handing the
    /// purchase over, or a review starting the next run.
    async fn settled(&self, id: &PurchaseId) -> bool {
        let waiting = self
            .conductor
            .lanes()
            .get(id.as_str())
            .is_some_and(|l| l.waiting.is_some());
        if waiting {
            return true;
        }
        let running = self.executions(id);
        running.is_empty() || (running.len() == 1 && self.parked(&self.load(id).await))
    }

    /// Waits until no step attempt is in flight: each execution waits at a
    /// step, is parked, or has ended.
    async fn quiesce(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut all = true;
            for id in &self.purchases {
                all &= self.settled(id).await;
            }
            if all {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the workflow never came to rest: {}",
                self.describe_all()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn describe_all(&self) -> String {
        self.purchases
            .iter()
            .map(|id| format!("{id}: {}", self.describe(id)))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The purchase's running executions, where each is.
    fn describe(&self, id: &PurchaseId) -> String {
        format!(
            "{:?}",
            self.executions(id)
                .into_iter()
                .map(|(machine, name, c)| (machine, name, c.map(|c| (c.state_name, c.status))))
                .collect::<Vec<_>>()
        )
    }

    /// Lets the attempt waiting for purchase `id` go, as `mode` says.
    async fn step(&self, id: &PurchaseId, mode: Mode) {
        let waiting = {
            let mut lanes = self.conductor.lanes();
            let lane = lanes.entry(id.to_string()).or_default();
            if let Mode::CrashAfter = mode {
                lane.lose_answer = lane.waiting.is_some();
            }
            lane.waiting.take()
        };
        let Some((_, go)) = waiting else { return };
        let attempt = match mode {
            Mode::CrashBefore => Attempt::Fail(asl::TaskFailure::new(
                "Lambda.Unknown",
                "injected: crashed on start",
            )),
            Mode::FailWrite => {
                self.writes.arm(id);
                Attempt::Run
            }
            _ => Attempt::Run,
        };
        let _ = go.send(attempt);
        self.quiesce().await;
        self.writes.disarm();
    }

    /// Lets purchase `id` run freely until it ends or parks.
    async fn drain(&self, id: &PurchaseId) {
        let waiting = {
            let mut lanes = self.conductor.lanes();
            let lane = lanes.entry(id.to_string()).or_default();
            lane.free = true;
            lane.waiting.take()
        };
        if let Some((_, go)) = waiting {
            let _ = go.send(Attempt::Run);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // Free: no attempt waits, so at rest means ended or parked.
            if self.settled(id).await {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "purchase {id} never came to rest: {}",
                self.describe_all()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.conductor
            .lanes()
            .entry(id.to_string())
            .or_default()
            .free = false;
        self.quiesce().await;
    }

    async fn apply(&mut self, op: &Op) {
        match op {
            Op::Create { lines, token, key } => {
                let body = json!({
                    "customerId": CUSTOMER,
                    "products": LINES[*lines].iter().map(|(id, q)| json!({"id": id, "quantity": q})).collect::<Vec<_>>(),
                    "paymentDetails": {"method": "card", "transactionId": TOKENS[*token]},
                    "shippingAddress": {"name": "Model", "address": "1 Test St", "city": "Berlin", "country": "DE", "postalCode": "10115"}
                });
                let (status, answer) = self
                    .call(Endpoint::CreatePurchase, None, Some(body), *key, false)
                    .await;
                if status == 201 {
                    let id = PurchaseId::new(answer["purchaseId"].as_str().unwrap());
                    if !self.purchases.contains(&id) {
                        self.purchases.push(id);
                    }
                } else {
                    // A key reused for another request: nothing made.
                    assert!(
                        matches!(status, 409 | 422),
                        "create answered {status}: {answer}"
                    );
                }
            }
            Op::UpdateAddress { p, country } => {
                let Some(id) = self.pick(*p) else { return };
                let body = json!({"shippingAddress": {"name": "Model", "address": "2 Test St", "city": "Paris", "country": COUNTRIES[*country], "postalCode": "75001"}});
                self.call(Endpoint::UpdatePurchase, Some(&id), Some(body), None, false)
                    .await;
            }
            Op::UpdateProducts { p, lines } => {
                let Some(id) = self.pick(*p) else { return };
                let body = json!({"products": LINES[*lines].iter().map(|(id, q)| json!({"id": id, "quantity": q})).collect::<Vec<_>>()});
                self.call(Endpoint::UpdatePurchase, Some(&id), Some(body), None, false)
                    .await;
            }
            Op::Cancel { p, key } => {
                let Some(id) = self.pick(*p) else { return };
                self.call(Endpoint::CancelPurchase, Some(&id), None, *key, false)
                    .await;
            }
            Op::ApplyRules { p, hold } => {
                let Some(id) = self.pick(*p) else { return };
                let on_violation = if *hold { "hold" } else { "reject" };
                let body = json!({"rules": [{"id": "manual-review", "parameters": {"reason": "model", "onViolation": on_violation}}]});
                self.call(Endpoint::ApplyRules, Some(&id), Some(body), None, true)
                    .await;
            }
            Op::Review { p, approve, key } => {
                let Some(id) = self.pick(*p) else { return };
                let decision = if *approve { "approve" } else { "reject" };
                self.call(
                    Endpoint::ReviewPurchase,
                    Some(&id),
                    Some(json!({"decision": decision})),
                    *key,
                    true,
                )
                .await;
            }
            Op::Redrive { p } => {
                let Some(id) = self.pick(*p) else { return };
                self.call(Endpoint::RedrivePurchase, Some(&id), None, None, true)
                    .await;
            }
            Op::Step { p, mode } => {
                let Some(id) = self.pick(*p) else { return };
                self.step(&id, *mode).await;
            }
            Op::Drain { p } => {
                let Some(id) = self.pick(*p) else { return };
                self.drain(&id).await;
            }
            Op::Outage { refunds, down } => {
                let outage = if *refunds {
                    &self.refunds
                } else {
                    &self.revocations
                };
                if *down { outage.start() } else { outage.end() }
            }
            Op::Reconcile => {
                self.system.reconcile(Some(Duration::ZERO)).await.unwrap();
            }
        }
        self.quiesce().await;
    }

    /// Everything that must hold whenever no step attempt is in flight.
    async fn check(&self) -> Result<(), TestCaseError> {
        let purchases = {
            let mut all = Vec::new();
            for id in &self.purchases {
                all.push(self.load(id).await);
            }
            all
        };
        // Stock: initial = available + what lines hold.
        for (product, initial) in initial_stock() {
            let available = self
                .system
                .app
                .inventory
                .get_products(&[ProductId::new(product)])
                .await
                .unwrap()[0]
                .stock;
            let held: i64 = purchases
                .iter()
                .flat_map(|p| &p.products)
                .filter(|l| l.id == product && l.status.holds_stock())
                .map(|l| i64::from(l.quantity))
                .sum();
            prop_assert_eq!(initial, available + held, "stock of {}", product);
            prop_assert!(available >= 0);
        }
        assert_payment_requests_sensible(&self.payments.requests(), &self.payments.accounts());
        assert_provisioning_requests_sensible(&self.provisioning.requests());
        let accounts = self.payments.accounts();
        let delivered = self.provisioning.delivered();
        for p in &purchases {
            let id = &p.purchase_id;
            let account = accounts.get(id).cloned().unwrap_or_default();
            let held = account.captured - account.refunded;
            // Money: all of it or none of it.
            prop_assert!(
                held == 0 || held == p.total_amount,
                "{id}: provider holds {held} of {}",
                p.total_amount
            );
            let refund_asked = self.payments.requests().iter().any(
                |r| matches!(r, PaymentRequest::Refund { purchase_id, .. } if purchase_id == id),
            );
            match p.payment_status {
                // A refund whose write was lost leaves CAPTURED on record
                // until its retry reads "nothing to refund".
                PaymentStatus::Captured | PaymentStatus::RefundFailed => prop_assert!(
                    held == p.total_amount || refund_asked,
                    "{id} recorded a capture the provider does not hold"
                ),
                PaymentStatus::Refunded | PaymentStatus::NotCharged | PaymentStatus::Declined => {
                    prop_assert_eq!(held, 0, "{} holds money it says it does not", id)
                }
                PaymentStatus::Pending => {}
            }
            // Goods: what the purchase says it delivered was delivered (or
            // is being taken back: a revocation whose write was lost).
            let revocations = self.provisioning.requests();
            for line in &p.products {
                let out = delivered.contains(&(id.clone(), line.id.clone()));
                let revoke_asked = revocations.iter().any(|r| matches!(r, ProvisioningRequest::Revoke { purchase_id, product_id } if purchase_id == id && *product_id == line.id));
                if line.status == LineStatus::Provisioned {
                    prop_assert!(
                        out || revoke_asked,
                        "{id}: {} PROVISIONED but not delivered",
                        line.id
                    );
                }
                if matches!(
                    line.status,
                    LineStatus::Revoked
                        | LineStatus::Released
                        | LineStatus::Cancelled
                        | LineStatus::Pending
                        | LineStatus::OutOfStock
                        | LineStatus::ProvisioningFailed
                ) {
                    prop_assert!(
                        !out,
                        "{id}: {} is {:?} but still delivered",
                        line.id,
                        line.status
                    );
                }
            }
            prop_assert!(p.timeline.len() <= MAX_TIMELINE_ENTRIES);
            if p.is_final() {
                let completed = p.status == PurchaseStatus::Completed;
                prop_assert_eq!(
                    held != 0,
                    completed,
                    "{} final {:?} with {} held",
                    id,
                    p.status,
                    held
                );
                let any_delivered = delivered.iter().any(|(purchase, _)| purchase == id);
                prop_assert_eq!(
                    any_delivered,
                    completed,
                    "{} final {:?}: delivered goods",
                    id,
                    p.status
                );
                if completed {
                    // The rules' verdict holds for what was fulfilled.
                    prop_assert!(p.shipping_address.country != "KP", "{id} completed to KP");
                    prop_assert!(
                        p.products.iter().all(|l| l.quantity <= 3),
                        "{id} completed over max-quantity"
                    );
                    let rejected = p.applied_rules.iter().any(|r| {
                        r.parameters
                            .as_ref()
                            .is_some_and(|v| v["onViolation"] == "reject")
                    });
                    prop_assert!(!rejected, "{id} completed although a rule rejected it");
                    let held_by_rule = p.applied_rules.iter().any(|r| {
                        r.parameters
                            .as_ref()
                            .is_some_and(|v| v["onViolation"] == "hold")
                    });
                    if held_by_rule {
                        prop_assert_eq!(
                            p.approved_contents.clone(),
                            Some(Contents::of(p).fingerprint()),
                            "{} completed on contents nobody approved",
                            id
                        );
                    }
                }
            } else {
                // A way forward.
                let checkpoint = self.checkpoint(p);
                let waiting = self
                    .conductor
                    .lanes()
                    .get(id.as_str())
                    .is_some_and(|l| l.waiting.is_some());
                let forward = match p.status {
                    // An EXPRESS purchase is redriven by a new run.
                    PurchaseStatus::NeedsAttention if self.express => true,
                    // Redrivable, or being redriven.
                    PurchaseStatus::NeedsAttention => {
                        checkpoint
                            .as_ref()
                            .is_some_and(|c| c.status == asl::ExecutionStatus::Failed)
                            || waiting
                    }
                    _ => {
                        waiting
                            || (self.parked(p)
                                && (p.status == PurchaseStatus::OnHold && p.review_token.is_some()
                                    || p.pending_notification().is_some()))
                    }
                };
                prop_assert!(
                    forward,
                    "{id} ({:?}, token {:?}, run {}) has no way forward: {:?} running {}; timeline {:?}",
                    p.status,
                    p.review_token,
                    p.run,
                    checkpoint.map(|c| (c.state_name, c.status, c.task_token)),
                    self.describe(id),
                    p.timeline
                        .iter()
                        .map(|e| format!("{} {}", e.step, e.outcome))
                        .collect::<Vec<_>>()
                );
            }
        }
        Ok(())
    }

    /// Drives every purchase to a final status, as operators would: reject
    /// what waits for review, end the outages, redrive what needs attention.
    async fn finish(&mut self) -> Result<(), TestCaseError> {
        self.refunds.end();
        self.revocations.end();
        for _round in 0..6 {
            for id in self.purchases.clone() {
                let p = self.load(&id).await;
                match p.status {
                    PurchaseStatus::OnHold => {
                        self.call(
                            Endpoint::ReviewPurchase,
                            Some(&id),
                            Some(json!({"decision": "reject"})),
                            None,
                            true,
                        )
                        .await;
                    }
                    PurchaseStatus::NeedsAttention => {
                        self.call(Endpoint::RedrivePurchase, Some(&id), None, None, true)
                            .await;
                    }
                    _ => {}
                }
                if !self.load(&id).await.is_final() {
                    self.drain(&id).await;
                }
            }
            self.check().await?;
            let mut all_final = true;
            for id in &self.purchases {
                all_final &= self.load(id).await.is_final();
            }
            if all_final {
                break;
            }
        }
        for id in &self.purchases {
            let p = self.load(id).await;
            prop_assert!(
                p.is_final(),
                "{id} never became final: {:?} {:?} running {}",
                p.status,
                self.checkpoint(&p).map(|c| (c.state_name, c.status)),
                self.describe(id)
            );
        }
        self.check().await
    }
}

fn run_case(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut world = World::new().await;
        for op in &ops {
            world.apply(op).await;
            world.check().await?;
        }
        world.finish().await?;
        world.system.shutdown().await;
        Ok(())
    })
}

#[test]
fn generated_interleavings_keep_every_invariant() {
    let cases: u32 = std::env::var("INTERLEAVING_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(600);
    let seed = std::env::var("INTERLEAVING_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    common::say(&format!(
        "interleavings: {cases} cases, seed {seed} (replay with INTERLEAVING_SEED={seed})"
    ));
    let config = Config {
        cases,
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    };
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        config,
        proptest::test_runner::TestRng::from_seed(
            proptest::test_runner::RngAlgorithm::ChaCha,
            &seed_bytes,
        ),
    );
    let started = Instant::now();
    let result = runner.run(&proptest::collection::vec(op(), 1..40), run_case);
    let seconds = started.elapsed().as_secs_f64();
    common::say(&format!("interleavings: {cases} cases in {seconds:.1} s"));
    common::report(
        "generated interleavings (tests/interleavings.rs)",
        json!({"cases": cases, "seed": seed, "seconds": seconds, "passed": result.is_ok()}),
    );
    if let Err(error) = result {
        panic!("{error}");
    }
}
