//! Fault injection for the reliability tests: wrappers around the store,
//! payment and provisioning ports that fail a share of calls, either before
//! doing the work (the request never arrived) or after it (the work
//! happened, the answer was lost — the case that tests idempotency for real).
//!
//! The dice are seeded: the seed is printed, and `FAULT_SEED=<n>` replays the
//! same sequence of rolls (the interleaving of concurrent purchases may
//! still differ between runs).
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use local::Stores;
use shared::domain::lifecycle::StockChange;
use shared::domain::purchase::{Product, Purchase, PurchaseLine};
use shared::domain::{ProductId, PurchaseId};
use shared::ports::payment::{
    Capture, CaptureRequest, PaymentError, PaymentGateway, RefundOutcome, RefundRequest,
};
use shared::ports::provisioning::{Provisioner, ProvisioningError};
use shared::ports::store::{
    Claim, Completion, IdempotencyRecord, IdempotencyStore, Inventory, PurchasePage, PurchaseQuery,
    PurchaseStore, RuleSetRecord, RuleSetStore, StoreError,
};

/// Decides which calls fail. `percent` of calls fail, half of them after
/// the work was done.
pub struct Faults {
    percent: u32,
    pub seed: u64,
    dice: Mutex<fastrand::Rng>,
    pub injected: AtomicU64,
}

enum Fault {
    None,
    Before,
    After,
}

impl Faults {
    /// Seeded from `FAULT_SEED` when set (to replay a failure), at random
    /// otherwise; the seed is printed either way.
    pub fn new(percent: u32) -> Arc<Faults> {
        let seed = std::env::var("FAULT_SEED")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| fastrand::u64(..));
        super::say(&format!(
            "fault dice seed: {seed} (replay with FAULT_SEED={seed})"
        ));
        Arc::new(Faults {
            percent,
            seed,
            dice: Mutex::new(fastrand::Rng::with_seed(seed)),
            injected: AtomicU64::new(0),
        })
    }

    fn roll(&self) -> Fault {
        let dice = match self.dice.lock() {
            Ok(mut rng) => rng.u32(0..200),
            Err(_) => return Fault::None,
        };
        if dice >= self.percent * 2 {
            return Fault::None;
        }
        self.injected.fetch_add(1, Ordering::Relaxed);
        if dice % 2 == 0 {
            Fault::Before
        } else {
            Fault::After
        }
    }

    pub fn count(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }
}

fn throttled() -> StoreError {
    StoreError::Unavailable("injected: throttled".into())
}

/// Runs `work` under a fault: fails before it, runs it and then fails, or just runs it.
macro_rules! faulty {
    ($faults:expr, $error:expr, $work:expr) => {{
        match $faults.roll() {
            Fault::Before => Err($error),
            Fault::After => {
                let _ = $work;
                Err($error)
            }
            Fault::None => $work,
        }
    }};
}

pub struct FaultyStores {
    inner: Stores,
    faults: Arc<Faults>,
}

/// A store layer for [`local::LocalOptions::store_layer`].
pub fn store_layer(faults: Arc<Faults>) -> local::StoreLayer {
    Arc::new(move |inner: Stores| {
        let faulty = Arc::new(FaultyStores {
            inner,
            faults: faults.clone(),
        });
        Stores::of(faulty)
    })
}

#[async_trait]
impl PurchaseStore for FaultyStores {
    async fn create_purchase(
        &self,
        purchase: &Purchase,
        completion: Option<&Completion>,
    ) -> Result<bool, StoreError> {
        faulty!(
            self.faults,
            throttled(),
            self.inner
                .purchases
                .create_purchase(purchase, completion)
                .await
        )
    }
    async fn get_purchase(&self, id: &PurchaseId) -> Result<Option<Purchase>, StoreError> {
        faulty!(
            self.faults,
            throttled(),
            self.inner.purchases.get_purchase(id).await
        )
    }
    async fn save_purchase(
        &self,
        purchase: &Purchase,
        stock: &StockChange,
    ) -> Result<(), StoreError> {
        faulty!(
            self.faults,
            throttled(),
            self.inner.purchases.save_purchase(purchase, stock).await
        )
    }
    async fn list_purchases(&self, query: &PurchaseQuery) -> Result<PurchasePage, StoreError> {
        faulty!(
            self.faults,
            throttled(),
            self.inner.purchases.list_purchases(query).await
        )
    }
    async fn unfinished_purchases(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Purchase>, StoreError> {
        faulty!(
            self.faults,
            throttled(),
            self.inner
                .purchases
                .unfinished_purchases(before, limit)
                .await
        )
    }
}

#[async_trait]
impl Inventory for FaultyStores {
    async fn get_products(&self, ids: &[ProductId]) -> Result<Vec<Product>, StoreError> {
        faulty!(
            self.faults,
            throttled(),
            self.inner.inventory.get_products(ids).await
        )
    }
    async fn add_product_if_absent(&self, product: &Product) -> Result<(), StoreError> {
        self.inner.inventory.add_product_if_absent(product).await
    }
}

#[async_trait]
impl IdempotencyStore for FaultyStores {
    async fn claim(&self, record: &IdempotencyRecord) -> Result<Claim, StoreError> {
        faulty!(
            self.faults,
            throttled(),
            self.inner.idempotency.claim(record).await
        )
    }
    async fn get(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.inner.idempotency.get(key).await
    }
    async fn complete(&self, completion: &Completion) -> Result<(), StoreError> {
        faulty!(
            self.faults,
            throttled(),
            self.inner.idempotency.complete(completion).await
        )
    }
    async fn release(&self, key: &str, expires_at: DateTime<Utc>) -> Result<(), StoreError> {
        faulty!(
            self.faults,
            throttled(),
            self.inner.idempotency.release(key, expires_at).await
        )
    }
}

/// A payment provider that times out on a share of calls, sometimes after
/// having captured or refunded.
pub struct FaultyPayments {
    pub inner: Arc<dyn PaymentGateway>,
    pub faults: Arc<Faults>,
}

fn timeout() -> PaymentError {
    PaymentError::Transient("injected: provider timeout".into())
}

#[async_trait]
impl PaymentGateway for FaultyPayments {
    async fn capture(&self, request: &CaptureRequest) -> Result<Capture, PaymentError> {
        faulty!(self.faults, timeout(), self.inner.capture(request).await)
    }
    async fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome, PaymentError> {
        faulty!(self.faults, timeout(), self.inner.refund(request).await)
    }
}

/// A provisioning service that times out on a share of calls, sometimes
/// after having delivered or taken back.
pub struct FaultyProvisioning {
    pub inner: Arc<dyn Provisioner>,
    pub faults: Arc<Faults>,
}

fn unavailable() -> ProvisioningError {
    ProvisioningError::Transient("injected: provisioning timeout".into())
}

#[async_trait]
impl Provisioner for FaultyProvisioning {
    async fn provision(
        &self,
        purchase_id: &PurchaseId,
        line: &PurchaseLine,
    ) -> Result<(), ProvisioningError> {
        faulty!(
            self.faults,
            unavailable(),
            self.inner.provision(purchase_id, line).await
        )
    }
    async fn revoke(
        &self,
        purchase_id: &PurchaseId,
        line: &PurchaseLine,
    ) -> Result<(), ProvisioningError> {
        faulty!(
            self.faults,
            unavailable(),
            self.inner.revoke(purchase_id, line).await
        )
    }
}

#[async_trait]
impl RuleSetStore for FaultyStores {
    async fn create_rule_set(&self, set: &RuleSetRecord) -> Result<(), StoreError> {
        self.inner.rule_sets.create_rule_set(set).await
    }
    async fn get_rule_set(&self, name: &str) -> Result<Option<RuleSetRecord>, StoreError> {
        faulty!(
            self.faults,
            throttled(),
            self.inner.rule_sets.get_rule_set(name).await
        )
    }
    async fn replace_rule_set(&self, set: &RuleSetRecord) -> Result<(), StoreError> {
        self.inner.rule_sets.replace_rule_set(set).await
    }
    async fn delete_rule_set(&self, name: &str) -> Result<bool, StoreError> {
        self.inner.rule_sets.delete_rule_set(name).await
    }
    async fn list_rule_sets(&self) -> Result<Vec<RuleSetRecord>, StoreError> {
        self.inner.rule_sets.list_rule_sets().await
    }
}

/// A provider outage that lasts until the test ends it: while `down`, every
/// refund and revocation fails transiently (captures and deliveries work).
#[derive(Default)]
pub struct Outage {
    down: std::sync::atomic::AtomicBool,
}

impl Outage {
    pub fn start(&self) {
        self.down.store(true, Ordering::SeqCst);
    }
    pub fn end(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
    fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }
}

/// The payment port with refunds subject to an [`Outage`].
pub struct RefundOutage {
    pub inner: Arc<dyn PaymentGateway>,
    pub outage: Arc<Outage>,
}

impl RefundOutage {
    /// For [`Setup::payments`](super::Setup): the harness's gateway, its
    /// refunds subject to `outage`.
    pub fn layer(outage: Arc<Outage>) -> super::PaymentLayer {
        Box::new(move |inner| Arc::new(RefundOutage { inner, outage }))
    }
}

#[async_trait]
impl PaymentGateway for RefundOutage {
    async fn capture(&self, request: &CaptureRequest) -> Result<Capture, PaymentError> {
        self.inner.capture(request).await
    }
    async fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome, PaymentError> {
        if self.outage.is_down() {
            return Err(PaymentError::Transient("injected: refunds are down".into()));
        }
        self.inner.refund(request).await
    }
}

/// The provisioning port with revocations subject to an [`Outage`].
pub struct RevokeOutage {
    pub inner: Arc<dyn Provisioner>,
    pub outage: Arc<Outage>,
}

impl RevokeOutage {
    /// For [`Setup::provisioning`](super::Setup): the harness's provisioner,
    /// its revocations subject to `outage`.
    pub fn layer(outage: Arc<Outage>) -> super::ProvisioningLayer {
        Box::new(move |inner| Arc::new(RevokeOutage { inner, outage }))
    }
}

#[async_trait]
impl Provisioner for RevokeOutage {
    async fn provision(
        &self,
        purchase_id: &PurchaseId,
        line: &PurchaseLine,
    ) -> Result<(), ProvisioningError> {
        self.inner.provision(purchase_id, line).await
    }
    async fn revoke(
        &self,
        purchase_id: &PurchaseId,
        line: &PurchaseLine,
    ) -> Result<(), ProvisioningError> {
        if self.outage.is_down() {
            return Err(ProvisioningError::Transient(
                "injected: revocations are down".into(),
            ));
        }
        self.inner.revoke(purchase_id, line).await
    }
}
