//! Fault injection for the reliability tests: wrappers around the store and
//! payment ports that fail a share of calls, either before doing the work
//! (the request never arrived) or after it (the work happened, the answer
//! was lost — the case that tests idempotency for real).
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use local::Stores;
use shared::model::{Product, Purchase};
use shared::payment::{Capture, CaptureRequest, PaymentError, PaymentGateway, RefundOutcome};
use shared::store::{
    IdempotencyRecord, IdempotencyStore, Inventory, PurchasePage, PurchaseQuery, PurchaseStore,
    RuleSetRecord, RuleSetStore, StoreError, StoredResponse,
};

/// Decides which calls fail. `percent` of calls fail, half of them after
/// the work was done.
pub struct Faults {
    percent: u32,
    pub injected: AtomicU64,
}

enum Fault {
    None,
    Before,
    After,
}

impl Faults {
    pub fn new(percent: u32) -> Arc<Faults> {
        Arc::new(Faults {
            percent,
            injected: AtomicU64::new(0),
        })
    }

    fn roll(&self) -> Fault {
        let dice = fastrand::u32(0..200);
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
    async fn create_purchase(&self, purchase: &Purchase) -> Result<(), StoreError> {
        faulty!(
            self.faults,
            throttled(),
            self.inner.purchases.create_purchase(purchase).await
        )
    }
    async fn get_purchase(&self, id: &str) -> Result<Option<Purchase>, StoreError> {
        faulty!(
            self.faults,
            throttled(),
            self.inner.purchases.get_purchase(id).await
        )
    }
    async fn update_purchase(&self, purchase: &mut Purchase) -> Result<(), StoreError> {
        faulty!(
            self.faults,
            throttled(),
            self.inner.purchases.update_purchase(purchase).await
        )
    }
    async fn list_purchases(&self, query: &PurchaseQuery) -> Result<PurchasePage, StoreError> {
        self.inner.purchases.list_purchases(query).await
    }
}

#[async_trait]
impl Inventory for FaultyStores {
    async fn get_products(&self, ids: &[String]) -> Result<Vec<Product>, StoreError> {
        faulty!(
            self.faults,
            throttled(),
            self.inner.inventory.get_products(ids).await
        )
    }
    async fn add_product_if_absent(&self, product: &Product) -> Result<(), StoreError> {
        self.inner.inventory.add_product_if_absent(product).await
    }
    async fn reserve_stock(
        &self,
        purchase_id: &str,
        lines: &[(String, u32)],
    ) -> Result<(), StoreError> {
        faulty!(
            self.faults,
            throttled(),
            self.inner.inventory.reserve_stock(purchase_id, lines).await
        )
    }
    async fn release_stock(&self, purchase_id: &str) -> Result<bool, StoreError> {
        faulty!(
            self.faults,
            throttled(),
            self.inner.inventory.release_stock(purchase_id).await
        )
    }
}

#[async_trait]
impl IdempotencyStore for FaultyStores {
    async fn put_if_absent(
        &self,
        record: &IdempotencyRecord,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.inner.idempotency.put_if_absent(record).await
    }
    async fn get(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.inner.idempotency.get(key).await
    }
    async fn complete(
        &self,
        key: &str,
        response: &StoredResponse,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError> {
        self.inner
            .idempotency
            .complete(key, response, expires_at)
            .await
    }
    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        self.inner.idempotency.remove(key).await
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
    async fn refund(&self, purchase_id: &str) -> Result<RefundOutcome, PaymentError> {
        faulty!(self.faults, timeout(), self.inner.refund(purchase_id).await)
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
