//! Store ports: what the orchestrator needs from persistence, with no
//! storage types in the signatures. Implemented by the embedded store (local
//! mode, `adapters::embedded`) and the DynamoDB store (AWS,
//! `adapters::dynamodb`); one conformance suite (`shared/tests/store_conformance.rs`)
//! holds both to the same behaviour.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::lifecycle::StockChange;
use crate::domain::purchase::{Product, Purchase, PurchaseStatus};
use crate::domain::rules::RuleRequest;
use crate::domain::{CustomerId, ProductId, PurchaseId};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0} not found")]
    NotFound(String),
    /// A conditional write lost against a concurrent writer.
    #[error("the stored version changed concurrently")]
    VersionConflict,
    /// Taking stock failed: too few units of this product (or no such
    /// product) to hold. Nothing was written. The numbers are for logs only.
    #[error("not enough stock of {product_id}: {requested} requested, {available} available")]
    OutOfStock {
        product_id: ProductId,
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
    pub customer_id: Option<CustomerId>,
    pub status: Option<PurchaseStatus>,
    /// Oldest first instead of newest first.
    pub oldest_first: bool,
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
    ///
    /// With `completion`, the `Idempotency-Key` of the request that creates
    /// it is completed in the same atomic write, so the create's answer costs
    /// no write (and no round trip) of its own. Answers whether it was: a
    /// key no longer held (its claim expired) is left alone and the purchase
    /// stored anyway.
    async fn create_purchase(
        &self,
        purchase: &Purchase,
        completion: Option<&Completion>,
    ) -> Result<bool, StoreError>;

    async fn get_purchase(&self, purchase_id: &PurchaseId) -> Result<Option<Purchase>, StoreError>;

    /// Writes `purchase` if the stored copy is still at `purchase.version - 1`
    /// (`VersionConflict` otherwise, `NotFound` if there is none), and takes
    /// or gives back `stock` in the same atomic write: all of it or nothing.
    /// Taking more than is available is `OutOfStock` and writes nothing, so
    /// stock is never oversold and always matches the lines holding it.
    async fn save_purchase(
        &self,
        purchase: &Purchase,
        stock: &StockChange,
    ) -> Result<(), StoreError>;

    async fn list_purchases(&self, query: &PurchaseQuery) -> Result<PurchasePage, StoreError>;

    /// Purchases that are not final and have not changed since `before`,
    /// oldest first, at most `limit`: what the reconciler looks at.
    async fn unfinished_purchases(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Purchase>, StoreError>;
}

/// Products and their stock. Stock is taken and given back only with the
/// purchase whose lines hold it ([`PurchaseStore::save_purchase`]).
#[async_trait]
pub trait Inventory: Send + Sync {
    /// The products among `ids` that exist (missing ids are simply absent).
    async fn get_products(&self, ids: &[ProductId]) -> Result<Vec<Product>, StoreError>;

    /// Adds a product unless one with that id exists, so re-seeding a catalog
    /// at start-up never resets stock that purchases have consumed.
    async fn add_product_if_absent(&self, product: &Product) -> Result<(), StoreError>;
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
    /// The resource the request made (the purchase id of a create), known
    /// before it is made: a retry after a request that failed half-way
    /// continues with it rather than making a second one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// `None` while the first request is still in flight (or after it was
    /// released).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<StoredResponse>,
    /// Claimed by a request running now; `false` once released.
    #[serde(default = "claimed")]
    pub in_flight: bool,
    #[serde(with = "chrono::serde::ts_seconds")]
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

fn claimed() -> bool {
    true
}
/// A request's final answer, recorded for its `Idempotency-Key` (the
/// record's `response`) until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub key: String,
    pub response: StoredResponse,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// The answer to a claim of an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This request holds the key now. The record is as stored: a claim
    /// taken over from a released request keeps that request's
    /// `resource_id`.
    Claimed(IdempotencyRecord),
    /// A live record holds the key: a request in flight, a finished one, or
    /// a released one made for a different request (its fingerprint says).
    Taken(IdempotencyRecord),
}

/// Idempotency records with an expiry. An expired record is treated as
/// absent by every method, whether or not the store has deleted it yet
/// (DynamoDB's TTL deletes lazily, up to days later).
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims `record.key` for the request `record` describes, atomically:
    /// taken when absent or expired, and taken over when the live record was
    /// released by a request with the same fingerprint.
    async fn claim(&self, record: &IdempotencyRecord) -> Result<Claim, StoreError>;

    /// The live record for `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError>;

    /// Stores the response of the request that claimed `key` and keeps it
    /// until `expires_at` (a claim lives only as long as a request may run;
    /// a response lives as long as retries are honoured). `NotFound` if no
    /// live record holds the key.
    async fn complete(&self, completion: &Completion) -> Result<(), StoreError>;

    /// Frees `key` for a retry (the claiming request gave no final answer)
    /// until `expires_at`. The record's `resource_id` stays, so the retry
    /// continues with the same resource instead of making another. Releasing
    /// an absent key is not an error.
    async fn release(
        &self,
        key: &str,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError>;
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
    pub rules: Vec<RuleRequest>,
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
