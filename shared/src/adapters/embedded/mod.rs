//! The embedded store for local mode: one redb file under `DATA_DIR`.
//!
//! redb gives serialisable write transactions (one writer at a time), so
//! "check then write" inside one transaction is atomic: version checks and
//! all-or-nothing stock changes need no extra locking. Reads are short and
//! run in place, on the caller's thread.
//!
//! Writes go through one writer thread that commits them in groups
//! ([`writer`]): every write still gets a transaction of its own (a failed
//! one changes nothing), but the durable commit — the `fsync`, milliseconds
//! on a disk against microseconds for the rest — is shared by every write
//! that queued meanwhile. A caller is answered only once its write is on
//! disk, so an acknowledged write survives a crash exactly as before.

mod writer;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::domain::lifecycle::StockChange;
use crate::domain::purchase::{Product, Purchase};
use crate::domain::{ProductId, PurchaseId};
use crate::ports::store::{
    Claim, Completion, IdempotencyRecord, IdempotencyStore, Inventory, PurchasePage, PurchaseQuery,
    PurchaseStore, RuleSetRecord, RuleSetStore, StoreError,
};

/// purchaseId → Purchase (JSON). Ids are UUIDv7, so key order is creation order.
const PURCHASES: TableDefinition<&str, &[u8]> = TableDefinition::new("purchases");
/// "customerId\0purchaseId" → (); lists a customer's purchases in creation order.
const PURCHASES_BY_CUSTOMER: TableDefinition<&str, ()> =
    TableDefinition::new("purchases_by_customer");
/// purchaseId → () while the purchase is not final: what the reconciler reads.
const UNFINISHED: TableDefinition<&str, ()> = TableDefinition::new("unfinished_purchases");
/// productId → Product (JSON), `stock` being what is still available.
const PRODUCTS: TableDefinition<&str, &[u8]> = TableDefinition::new("products");
/// idempotencyKey → IdempotencyRecord (JSON). Expired records are ignored on
/// read and overwritten by the next claim rather than swept.
const IDEMPOTENCY: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency");
/// name → RuleSetRecord (JSON).
const RULE_SETS: TableDefinition<&str, &[u8]> = TableDefinition::new("rule_sets");

#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    writer: Arc<writer::Writer>,
}

fn internal(error: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(error.to_string())
}

fn customer_key(customer_id: &str, purchase_id: &str) -> String {
    format!("{customer_id}\0{purchase_id}")
}

impl EmbeddedStore {
    /// Opens (or creates) `<data_dir>/purchases.redb`.
    pub fn open(data_dir: &Path) -> Result<EmbeddedStore, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Internal(format!(
                "cannot create data dir {}: {e}",
                data_dir.display()
            ))
        })?;
        EmbeddedStore::open_file(&data_dir.join("purchases.redb"))
    }

    /// Opens (or creates) the database file at `path`, its folder existing:
    /// for a database of its own beside `DATA_DIR`'s (aws-local's execution
    /// journal, whose purchases live in DynamoDB).
    pub fn open_file(path: &Path) -> Result<EmbeddedStore, StoreError> {
        let db = Database::create(path)
            .map_err(|e| StoreError::Internal(format!("cannot open {}: {e}", path.display())))?;
        EmbeddedStore::with_database(db)
    }

    /// A store held in memory only: for tests that run thousands of cases.
    pub fn in_memory() -> Result<EmbeddedStore, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(internal)?;
        EmbeddedStore::with_database(db)
    }

    fn with_database(db: Database) -> Result<EmbeddedStore, StoreError> {
        // Create every table up front so readers never see "table does not exist".
        let txn = db.begin_write().map_err(internal)?;
        {
            txn.open_table(PURCHASES).map_err(internal)?;
            txn.open_table(PURCHASES_BY_CUSTOMER).map_err(internal)?;
            txn.open_table(UNFINISHED).map_err(internal)?;
            txn.open_table(PRODUCTS).map_err(internal)?;
            txn.open_table(IDEMPOTENCY).map_err(internal)?;
            txn.open_table(RULE_SETS).map_err(internal)?;
        }
        txn.commit().map_err(internal)?;
        let db = Arc::new(db);
        let writer = Arc::new(writer::Writer::start(Arc::clone(&db))?);
        Ok(EmbeddedStore { db, writer })
    }

    /// The underlying database, for local-mode tables that live beside the
    /// purchases (the workflow runner's execution journal).
    pub fn database(&self) -> Arc<Database> {
        Arc::clone(&self.db)
    }

    /// Runs `work` in a write transaction of its own on the writer thread
    /// and answers once it is durable: committed, or dropped with nothing
    /// written if `work` fails. Local-mode tables that live beside the
    /// purchases (the workflow runner's execution journal) write through
    /// here too, so their commits share the same `fsync`s.
    pub async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        self.writer.write(work).await
    }

    fn read_purchase(&self, purchase_id: &str) -> Result<Option<Purchase>, StoreError> {
        let txn = self.db.begin_read().map_err(internal)?;
        let purchases = txn.open_table(PURCHASES).map_err(internal)?;
        match purchases.get(purchase_id).map_err(internal)? {
            Some(bytes) => decode(bytes.value()).map(Some),
            None => Ok(None),
        }
    }
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(internal)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(internal)
}

/// Applies a stock change inside `txn`: all lines or none (the transaction
/// is dropped on error).
fn change_stock(txn: &WriteTransaction, stock: &StockChange) -> Result<(), StoreError> {
    let (lines, sign) = match stock {
        StockChange::None => return Ok(()),
        StockChange::Take(lines) => (lines, -1),
        StockChange::GiveBack(lines) => (lines, 1),
    };
    let mut products = txn.open_table(PRODUCTS).map_err(internal)?;
    for (product_id, quantity) in lines {
        let current: Option<Product> = match products.get(product_id.as_str()).map_err(internal)? {
            Some(bytes) => Some(decode(bytes.value())?),
            None => None,
        };
        let quantity = i64::from(*quantity);
        let Some(mut product) = current else {
            if sign < 0 {
                return Err(StoreError::OutOfStock {
                    product_id: product_id.clone(),
                    requested: quantity as u32,
                    available: 0,
                });
            }
            continue; // removed from the catalog: nothing to give back to
        };
        if sign < 0 && product.stock < quantity {
            return Err(StoreError::OutOfStock {
                product_id: product_id.clone(),
                requested: quantity as u32,
                available: product.stock,
            });
        }
        product.stock += sign * quantity;
        let bytes = encode(&product)?;
        products
            .insert(product_id.as_str(), bytes.as_slice())
            .map_err(internal)?;
    }
    Ok(())
}

#[async_trait]
impl PurchaseStore for EmbeddedStore {
    async fn create_purchase(
        &self,
        purchase: &Purchase,
        completion: Option<&Completion>,
    ) -> Result<bool, StoreError> {
        let purchase = purchase.clone();
        let completion = completion.cloned();
        self.write(move |txn| {
            let bytes = encode(&purchase)?;
            let id = purchase.purchase_id.as_str();
            let mut purchases = txn.open_table(PURCHASES).map_err(internal)?;
            if purchases.get(id).map_err(internal)?.is_some() {
                return Err(StoreError::AlreadyExists(format!("purchase {id}")));
            }
            purchases.insert(id, bytes.as_slice()).map_err(internal)?;
            let mut by_customer = txn.open_table(PURCHASES_BY_CUSTOMER).map_err(internal)?;
            by_customer
                .insert(customer_key(purchase.customer_id.as_str(), id).as_str(), ())
                .map_err(internal)?;
            if !purchase.is_final() {
                let mut unfinished = txn.open_table(UNFINISHED).map_err(internal)?;
                unfinished.insert(id, ()).map_err(internal)?;
            }
            match &completion {
                Some(completion) => complete_key(txn, completion),
                None => Ok(false),
            }
        })
        .await
    }

    async fn get_purchase(&self, purchase_id: &PurchaseId) -> Result<Option<Purchase>, StoreError> {
        self.read_purchase(purchase_id.as_str())
    }

    async fn save_purchase(
        &self,
        purchase: &Purchase,
        stock: &StockChange,
    ) -> Result<(), StoreError> {
        let purchase = purchase.clone();
        let stock = stock.clone();
        self.write(move |txn| {
            let id = purchase.purchase_id.as_str();
            {
                let mut purchases = txn.open_table(PURCHASES).map_err(internal)?;
                let current: Purchase = match purchases.get(id).map_err(internal)? {
                    Some(bytes) => decode(bytes.value())?,
                    None => return Err(StoreError::NotFound(format!("purchase {id}"))),
                };
                if current.version + 1 != purchase.version {
                    return Err(StoreError::VersionConflict);
                }
                let bytes = encode(&purchase)?;
                purchases.insert(id, bytes.as_slice()).map_err(internal)?;
            }
            change_stock(txn, &stock)?;
            let mut unfinished = txn.open_table(UNFINISHED).map_err(internal)?;
            if purchase.is_final() {
                unfinished.remove(id).map_err(internal)?;
            } else {
                unfinished.insert(id, ()).map_err(internal)?;
            }
            Ok(())
        })
        .await
    }

    async fn list_purchases(&self, query: &PurchaseQuery) -> Result<PurchasePage, StoreError> {
        let txn = self.db.begin_read().map_err(internal)?;
        let purchases = txn.open_table(PURCHASES).map_err(internal)?;
        let limit = query.limit.max(1);
        let mut page = Vec::with_capacity(limit);
        let mut next_token = None;
        // Both tables sort oldest first (UUIDv7 ids); newest first walks them
        // backwards. The page token is the last key returned; the next page
        // continues past it.
        type Keys<'a> = Box<dyn Iterator<Item = Result<(String, String), StoreError>> + 'a>;
        let index;
        let keys: Keys = match &query.customer_id {
            Some(customer) => {
                index = txn.open_table(PURCHASES_BY_CUSTOMER).map_err(internal)?;
                let low = format!("{customer}\0");
                let high = format!("{customer}\u{1}");
                let range = match &query.next_token {
                    Some(token) if !token.starts_with(&low) => {
                        return Err(StoreError::InvalidPageToken);
                    }
                    Some(token) if query.oldest_first => index.range(token.as_str()..high.as_str()),
                    Some(token) => index.range(low.as_str()..token.as_str()),
                    None => index.range(low.as_str()..high.as_str()),
                }
                .map_err(internal)?;
                let entries = range.map(|entry| {
                    let (key, _) = entry.map_err(internal)?;
                    let key = key.value().to_owned();
                    let id = key.rsplit('\0').next().unwrap_or_default().to_owned();
                    Ok((key, id))
                });
                if query.oldest_first {
                    Box::new(entries)
                } else {
                    Box::new(entries.rev())
                }
            }
            None => {
                // A token here is the id of the last purchase returned, so
                // it names a stored purchase (none is ever deleted); anything
                // else was not handed out by this listing.
                if let Some(token) = &query.next_token
                    && purchases.get(token.as_str()).map_err(internal)?.is_none()
                {
                    return Err(StoreError::InvalidPageToken);
                }
                let range = match &query.next_token {
                    Some(token) if query.oldest_first => purchases.range(token.as_str()..),
                    Some(token) => purchases.range(..token.as_str()),
                    None => purchases.range::<&str>(..),
                }
                .map_err(internal)?;
                let entries = range.map(|entry| {
                    let (key, _) = entry.map_err(internal)?;
                    let id = key.value().to_owned();
                    Ok((id.clone(), id))
                });
                if query.oldest_first {
                    Box::new(entries)
                } else {
                    Box::new(entries.rev())
                }
            }
        };
        let mut last_key = None;
        for item in keys {
            let (key, id) = item?;
            // An oldest-first range starts *at* the token: skip it.
            if query.oldest_first && query.next_token.as_deref() == Some(key.as_str()) {
                continue;
            }
            let Some(bytes) = purchases.get(id.as_str()).map_err(internal)? else {
                continue;
            };
            let purchase: Purchase = decode(bytes.value())?;
            if query.status.is_some_and(|status| status != purchase.status) {
                continue;
            }
            if page.len() == limit {
                // One more match exists, so there is a next page.
                next_token = last_key;
                break;
            }
            page.push(purchase);
            last_key = Some(key);
        }
        Ok(PurchasePage {
            purchases: page,
            next_token,
        })
    }

    async fn unfinished_purchases(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Purchase>, StoreError> {
        let txn = self.db.begin_read().map_err(internal)?;
        let unfinished = txn.open_table(UNFINISHED).map_err(internal)?;
        let purchases = txn.open_table(PURCHASES).map_err(internal)?;
        let mut found = Vec::new();
        for entry in unfinished.iter().map_err(internal)? {
            let (key, _) = entry.map_err(internal)?;
            let Some(bytes) = purchases.get(key.value()).map_err(internal)? else {
                continue;
            };
            let purchase: Purchase = decode(bytes.value())?;
            if purchase.updated_at < before {
                found.push(purchase);
                if found.len() == limit {
                    break;
                }
            }
        }
        Ok(found)
    }
}

#[async_trait]
impl Inventory for EmbeddedStore {
    async fn get_products(&self, ids: &[ProductId]) -> Result<Vec<Product>, StoreError> {
        let txn = self.db.begin_read().map_err(internal)?;
        let products = txn.open_table(PRODUCTS).map_err(internal)?;
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(bytes) = products.get(id.as_str()).map_err(internal)? {
                found.push(decode(bytes.value())?);
            }
        }
        Ok(found)
    }

    async fn add_product_if_absent(&self, product: &Product) -> Result<(), StoreError> {
        let product = product.clone();
        self.write(move |txn| {
            let mut products = txn.open_table(PRODUCTS).map_err(internal)?;
            if products
                .get(product.id.as_str())
                .map_err(internal)?
                .is_none()
            {
                let bytes = encode(&product)?;
                products
                    .insert(product.id.as_str(), bytes.as_slice())
                    .map_err(internal)?;
            }
            Ok(())
        })
        .await
    }
}

/// The record stored under `key`, expired or not.
fn stored_record(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<IdempotencyRecord>, StoreError> {
    match table.get(key).map_err(internal)? {
        Some(bytes) => decode(bytes.value()).map(Some),
        None => Ok(None),
    }
}

/// The record stored under `key`, unless it has expired.
fn live_record(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<IdempotencyRecord>, StoreError> {
    Ok(stored_record(table, key)?.filter(|record| record.expires_at > Utc::now()))
}

/// Records a request's final answer on its key, if a live record holds
/// it; whether one did.
fn complete_key(txn: &WriteTransaction, completion: &Completion) -> Result<bool, StoreError> {
    let mut table = txn.open_table(IDEMPOTENCY).map_err(internal)?;
    let Some(mut record) = live_record(&table, &completion.key)? else {
        return Ok(false);
    };
    record.response = Some(completion.response.clone());
    record.in_flight = false;
    record.expires_at = completion.expires_at;
    let bytes = encode(&record)?;
    table
        .insert(completion.key.as_str(), bytes.as_slice())
        .map_err(internal)?;
    Ok(true)
}

#[async_trait]
impl IdempotencyStore for EmbeddedStore {
    async fn claim(&self, record: &IdempotencyRecord) -> Result<Claim, StoreError> {
        let record = record.clone();
        self.write(move |txn| {
            let mut table = txn.open_table(IDEMPOTENCY).map_err(internal)?;
            let mut claimed = record.clone();
            match stored_record(&table, &record.key)? {
                Some(existing) if existing.expires_at > Utc::now() => {
                    let released = !existing.in_flight && existing.response.is_none();
                    if !released || existing.fingerprint != record.fingerprint {
                        return Ok(Claim::Taken(existing));
                    }
                    claimed.resource_id = existing.resource_id.or(claimed.resource_id);
                }
                // The same request, whose attempt died in flight: continue
                // with what it chose (it may have stored it already).
                Some(existing)
                    if existing.in_flight && existing.fingerprint == record.fingerprint =>
                {
                    claimed.resource_id = existing.resource_id.or(claimed.resource_id);
                }
                _ => {}
            }
            let bytes = encode(&claimed)?;
            table
                .insert(claimed.key.as_str(), bytes.as_slice())
                .map_err(internal)?;
            Ok(Claim::Claimed(claimed))
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(internal)?;
        let table = txn.open_table(IDEMPOTENCY).map_err(internal)?;
        live_record(&table, key)
    }

    async fn complete(&self, completion: &Completion) -> Result<(), StoreError> {
        let completion = completion.clone();
        self.write(move |txn| match complete_key(txn, &completion)? {
            true => Ok(()),
            false => Err(StoreError::NotFound(format!(
                "idempotency key {}",
                completion.key
            ))),
        })
        .await
    }

    async fn release(&self, key: &str, expires_at: DateTime<Utc>) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.write(move |txn| {
            let mut table = txn.open_table(IDEMPOTENCY).map_err(internal)?;
            let Some(mut record) = live_record(&table, &key)? else {
                return Ok(());
            };
            record.in_flight = false;
            record.response = None;
            record.expires_at = expires_at;
            let bytes = encode(&record)?;
            table
                .insert(key.as_str(), bytes.as_slice())
                .map_err(internal)?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl RuleSetStore for EmbeddedStore {
    async fn create_rule_set(&self, set: &RuleSetRecord) -> Result<(), StoreError> {
        let set = set.clone();
        self.write(move |txn| {
            let bytes = encode(&set)?;
            let mut table = txn.open_table(RULE_SETS).map_err(internal)?;
            if table.get(set.name.as_str()).map_err(internal)?.is_some() {
                return Err(StoreError::AlreadyExists(format!("rule set {}", set.name)));
            }
            table
                .insert(set.name.as_str(), bytes.as_slice())
                .map_err(internal)?;
            Ok(())
        })
        .await
    }

    async fn get_rule_set(&self, name: &str) -> Result<Option<RuleSetRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(internal)?;
        let table = txn.open_table(RULE_SETS).map_err(internal)?;
        match table.get(name).map_err(internal)? {
            Some(bytes) => decode(bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    async fn replace_rule_set(&self, set: &RuleSetRecord) -> Result<(), StoreError> {
        let set = set.clone();
        self.write(move |txn| {
            let bytes = encode(&set)?;
            let mut table = txn.open_table(RULE_SETS).map_err(internal)?;
            let current: RuleSetRecord = match table.get(set.name.as_str()).map_err(internal)? {
                Some(stored) => decode(stored.value())?,
                None => return Err(StoreError::NotFound(format!("rule set {}", set.name))),
            };
            if current.version + 1 != set.version {
                return Err(StoreError::VersionConflict);
            }
            table
                .insert(set.name.as_str(), bytes.as_slice())
                .map_err(internal)?;
            Ok(())
        })
        .await
    }

    async fn delete_rule_set(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.write(move |txn| {
            let mut table = txn.open_table(RULE_SETS).map_err(internal)?;
            let existed = table.remove(name.as_str()).map_err(internal)?.is_some();
            Ok(existed)
        })
        .await
    }

    async fn list_rule_sets(&self) -> Result<Vec<RuleSetRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(internal)?;
        let table = txn.open_table(RULE_SETS).map_err(internal)?;
        let mut sets = Vec::new();
        for entry in table.iter().map_err(internal)? {
            let (_, bytes) = entry.map_err(internal)?;
            sets.push(decode(bytes.value())?);
        }
        Ok(sets)
    }
}
