//! Store ports: what the domain needs from persistence, with no storage
//! types in the signatures. Implemented by the embedded store (local mode)
//! and the DynamoDB store (AWS).

use async_trait::async_trait;

use crate::model::{Product, Purchase, PurchaseStatus};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("purchase {0} already exists")]
    AlreadyExists(String),
    #[error("purchase {0} not found")]
    NotFound(String),
    /// A conditional write lost against a concurrent writer.
    #[error("the stored version changed concurrently")]
    VersionConflict,
    #[error("not enough stock of {product_id}: {requested} requested, {available} available")]
    OutOfStock {
        product_id: String,
        requested: u32,
        available: i64,
    },
    /// A `next_token` this store did not hand out (or for another listing).
    #[error("invalid page token")]
    InvalidPageToken,
    /// Throttling or a passing outage; retrying later may succeed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store failure: {0}")]
    Internal(String),
}

/// Filters and paging for listing purchases, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurchaseQuery {
    pub customer_id: Option<String>,
    pub status: Option<PurchaseStatus>,
    pub limit: usize,
    /// Opaque token from the previous page's `next_token`.
    pub next_token: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurchasePage {
    pub purchases: Vec<Purchase>,
    pub next_token: Option<String>,
}

#[async_trait]
pub trait PurchaseStore: Send + Sync {
    /// Stores a new purchase; `AlreadyExists` if the id is taken.
    async fn create_purchase(&self, purchase: &Purchase) -> Result<(), StoreError>;

    async fn get_purchase(&self, purchase_id: &str) -> Result<Option<Purchase>, StoreError>;

    /// Writes `purchase` only if the stored version still equals
    /// `purchase.version`; on success bumps `purchase.version` (and the stored
    /// copy) by one. `VersionConflict` otherwise.
    async fn update_purchase(&self, purchase: &mut Purchase) -> Result<(), StoreError>;

    async fn list_purchases(&self, query: &PurchaseQuery) -> Result<PurchasePage, StoreError>;
}

/// Products, their stock, and the stock held for each purchase.
#[async_trait]
pub trait Inventory: Send + Sync {
    /// The products among `ids` that exist (missing ids are simply absent).
    async fn get_products(&self, ids: &[String]) -> Result<Vec<Product>, StoreError>;

    /// Adds a product unless one with that id exists, so re-seeding a catalog
    /// at start-up never resets stock that purchases have consumed.
    async fn add_product_if_absent(&self, product: &Product) -> Result<(), StoreError>;

    /// Holds stock for every line of a purchase, all or nothing, never
    /// overselling. Idempotent: a second call for the same purchase is a no-op.
    async fn reserve_stock(
        &self,
        purchase_id: &str,
        lines: &[(String, u32)],
    ) -> Result<(), StoreError>;

    /// Gives back what `reserve_stock` held for this purchase. Idempotent;
    /// returns whether anything was released by this call.
    async fn release_stock(&self, purchase_id: &str) -> Result<bool, StoreError>;
}

/// What a finished request answered, replayed for a retry with the same key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredResponse {
    pub status_code: u16,
    pub body: String,
}

/// One `Idempotency-Key`: the request that claimed it and, once it finished,
/// its response. Serialised with the same camelCase names in both stores;
/// `expiresAt` is epoch seconds because DynamoDB's TTL only reads numbers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdempotencyRecord {
    /// The client's `Idempotency-Key`.
    pub key: String,
    /// A digest of the request, so reusing the key for a different request
    /// can be told apart from a retry.
    pub fingerprint: String,
    /// `None` while the first request is still in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<StoredResponse>,
    #[serde(with = "chrono::serde::ts_seconds")]
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// Idempotency records with an expiry. An expired record is treated as
/// absent by every method, whether or not the store has deleted it yet
/// (DynamoDB's TTL deletes lazily, up to days later).
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims `record.key` unless a live record holds it.
    /// `Ok(None)` when this call claimed the key; `Ok(Some(existing))` otherwise.
    async fn put_if_absent(
        &self,
        record: &IdempotencyRecord,
    ) -> Result<Option<IdempotencyRecord>, StoreError>;

    /// The live record for `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError>;

    /// Stores the response of the request that claimed `key` and keeps it
    /// until `expires_at` (a claim lives only as long as a request may run;
    /// a response lives as long as retries are honoured). `NotFound` if no
    /// live record holds the key.
    async fn complete(
        &self,
        key: &str,
        response: &StoredResponse,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError>;

    /// Frees `key` so a retry can run again (the claiming request failed
    /// without side effects). Removing an absent key is not an error.
    async fn remove(&self, key: &str) -> Result<(), StoreError>;
}

/// A named, stored list of rules. The one named [`DEFAULT_RULE_SET`] is
/// evaluated by the workflow's first step for every purchase.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleSetRecord {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// As sent (`{"id", "parameters"}`), validated on every write.
    pub rules: Vec<serde_json::Value>,
    pub version: u64,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub updated_by: String,
}

pub const DEFAULT_RULE_SET: &str = "default";

/// At most this many rule sets exist, so listing them is one small read.
pub const MAX_RULE_SETS: usize = 100;

#[async_trait]
pub trait RuleSetStore: Send + Sync {
    /// Stores a new rule set; `AlreadyExists(name)` if the name is taken.
    async fn create_rule_set(&self, set: &RuleSetRecord) -> Result<(), StoreError>;

    async fn get_rule_set(&self, name: &str) -> Result<Option<RuleSetRecord>, StoreError>;

    /// Replaces a rule set if its stored version is still `set.version - 1`;
    /// `NotFound(name)` if it does not exist, `VersionConflict` if it changed.
    async fn replace_rule_set(&self, set: &RuleSetRecord) -> Result<(), StoreError>;

    /// Deletes a rule set; whether it existed.
    async fn delete_rule_set(&self, name: &str) -> Result<bool, StoreError>;

    /// Every rule set, by name.
    async fn list_rule_sets(&self) -> Result<Vec<RuleSetRecord>, StoreError>;
}
