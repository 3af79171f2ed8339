//! The embedded store for local mode: one redb file under `DATA_DIR`.
//!
//! redb gives serialisable write transactions (one writer at a time), so
//! "check then write" inside one transaction is atomic: version checks and
//! all-or-nothing stock reservation need no extra locking. redb is
//! synchronous, so every call runs on tokio's blocking pool.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::model::{Product, Purchase};
use crate::store::{
    IdempotencyRecord, IdempotencyStore, Inventory, PurchasePage, PurchaseQuery, PurchaseStore,
    RuleSetRecord, RuleSetStore, StoreError, StoredResponse,
};

/// purchaseId → Purchase (JSON). Ids are UUIDv7, so key order is creation order.
const PURCHASES: TableDefinition<&str, &[u8]> = TableDefinition::new("purchases");
/// "customerId\0purchaseId" → (); lists a customer's purchases in creation order.
const PURCHASES_BY_CUSTOMER: TableDefinition<&str, ()> =
    TableDefinition::new("purchases_by_customer");
/// productId → Product (JSON), `stock` being what is still available.
const PRODUCTS: TableDefinition<&str, &[u8]> = TableDefinition::new("products");
/// purchaseId → the lines held for it, so reserve and release are idempotent.
const RESERVATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("reservations");
/// idempotencyKey → IdempotencyRecord (JSON). Expired records are ignored on
/// read and overwritten by the next claim rather than swept.
const IDEMPOTENCY: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency");
/// name → RuleSetRecord (JSON).
const RULE_SETS: TableDefinition<&str, &[u8]> = TableDefinition::new("rule_sets");

#[derive(Serialize, Deserialize)]
struct Reservation {
    lines: Vec<(String, u32)>,
}

#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
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
        let path = data_dir.join("purchases.redb");
        let db = Database::create(&path)
            .map_err(|e| StoreError::Internal(format!("cannot open {}: {e}", path.display())))?;
        // Create every table up front so readers never see "table does not exist".
        let txn = db.begin_write().map_err(internal)?;
        {
            txn.open_table(PURCHASES).map_err(internal)?;
            txn.open_table(PURCHASES_BY_CUSTOMER).map_err(internal)?;
            txn.open_table(PRODUCTS).map_err(internal)?;
            txn.open_table(RESERVATIONS).map_err(internal)?;
            txn.open_table(IDEMPOTENCY).map_err(internal)?;
            txn.open_table(RULE_SETS).map_err(internal)?;
        }
        txn.commit().map_err(internal)?;
        Ok(EmbeddedStore { db: Arc::new(db) })
    }

    /// The underlying database, for local-mode tables that live beside the
    /// purchases (the workflow runner's execution journal).
    pub fn database(&self) -> Arc<Database> {
        Arc::clone(&self.db)
    }

    async fn blocking<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(|e| StoreError::Internal(format!("store task panicked: {e}")))?
    }
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(internal)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(internal)
}

#[async_trait]
impl PurchaseStore for EmbeddedStore {
    async fn create_purchase(&self, purchase: &Purchase) -> Result<(), StoreError> {
        let purchase = purchase.clone();
        self.blocking(move |db| {
            let bytes = encode(&purchase)?;
            let txn = db.begin_write().map_err(internal)?;
            {
                let mut purchases = txn.open_table(PURCHASES).map_err(internal)?;
                if purchases
                    .get(purchase.purchase_id.as_str())
                    .map_err(internal)?
                    .is_some()
                {
                    return Err(StoreError::AlreadyExists(purchase.purchase_id.clone()));
                }
                purchases
                    .insert(purchase.purchase_id.as_str(), bytes.as_slice())
                    .map_err(internal)?;
                let mut by_customer = txn.open_table(PURCHASES_BY_CUSTOMER).map_err(internal)?;
                by_customer
                    .insert(
                        customer_key(&purchase.customer_id, &purchase.purchase_id).as_str(),
                        (),
                    )
                    .map_err(internal)?;
            }
            txn.commit().map_err(internal)
        })
        .await
    }

    async fn get_purchase(&self, purchase_id: &str) -> Result<Option<Purchase>, StoreError> {
        let purchase_id = purchase_id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(internal)?;
            let purchases = txn.open_table(PURCHASES).map_err(internal)?;
            match purchases.get(purchase_id.as_str()).map_err(internal)? {
                Some(bytes) => decode(bytes.value()).map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    async fn update_purchase(&self, purchase: &mut Purchase) -> Result<(), StoreError> {
        let mut next = purchase.clone();
        next.version += 1;
        next.updated_at = chrono::Utc::now();
        let written = next.clone();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(internal)?;
            {
                let mut purchases = txn.open_table(PURCHASES).map_err(internal)?;
                let current: Purchase = match purchases
                    .get(written.purchase_id.as_str())
                    .map_err(internal)?
                {
                    Some(bytes) => decode(bytes.value())?,
                    None => return Err(StoreError::NotFound(written.purchase_id.clone())),
                };
                if current.version + 1 != written.version {
                    return Err(StoreError::VersionConflict);
                }
                let bytes = encode(&written)?;
                purchases
                    .insert(written.purchase_id.as_str(), bytes.as_slice())
                    .map_err(internal)?;
            }
            txn.commit().map_err(internal)
        })
        .await?;
        *purchase = next;
        Ok(())
    }

    async fn list_purchases(&self, query: &PurchaseQuery) -> Result<PurchasePage, StoreError> {
        let query = query.clone();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(internal)?;
            let purchases = txn.open_table(PURCHASES).map_err(internal)?;
            let limit = query.limit.max(1);
            let mut page = Vec::with_capacity(limit);
            let mut next_token = None;
            // Both tables sort oldest first (UUIDv7 ids), so walk them backwards.
            // The page token is the last key returned; the next page starts below it.
            let ids: Box<dyn Iterator<Item = Result<(String, String), StoreError>>> =
                match &query.customer_id {
                    Some(customer) => {
                        let index = txn.open_table(PURCHASES_BY_CUSTOMER).map_err(internal)?;
                        let low = format!("{customer}\0");
                        let high = match &query.next_token {
                            Some(token) => token.clone(),
                            None => format!("{customer}\u{1}"),
                        };
                        if !high.starts_with(&low) && query.next_token.is_some() {
                            return Err(StoreError::InvalidPageToken);
                        }
                        let range = index.range(low.as_str()..high.as_str()).map_err(internal)?;
                        Box::new(range.rev().map(|entry| {
                            let (key, _) = entry.map_err(internal)?;
                            let key = key.value().to_owned();
                            let id = key.rsplit('\0').next().unwrap_or_default().to_owned();
                            Ok((key, id))
                        }))
                    }
                    None => {
                        let range = match &query.next_token {
                            Some(token) => purchases.range(..token.as_str()).map_err(internal)?,
                            None => purchases.range::<&str>(..).map_err(internal)?,
                        };
                        Box::new(range.rev().map(|entry| {
                            let (key, _) = entry.map_err(internal)?;
                            let id = key.value().to_owned();
                            Ok((id.clone(), id))
                        }))
                    }
                };
            let mut last_key = None;
            for item in ids {
                let (key, id) = item?;
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
        })
        .await
    }
}

#[async_trait]
impl Inventory for EmbeddedStore {
    async fn get_products(&self, ids: &[String]) -> Result<Vec<Product>, StoreError> {
        let ids = ids.to_vec();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(internal)?;
            let products = txn.open_table(PRODUCTS).map_err(internal)?;
            let mut found = Vec::with_capacity(ids.len());
            for id in &ids {
                if let Some(bytes) = products.get(id.as_str()).map_err(internal)? {
                    found.push(decode(bytes.value())?);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn add_product_if_absent(&self, product: &Product) -> Result<(), StoreError> {
        let product = product.clone();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(internal)?;
            {
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
            }
            txn.commit().map_err(internal)
        })
        .await
    }

    async fn reserve_stock(
        &self,
        purchase_id: &str,
        lines: &[(String, u32)],
    ) -> Result<(), StoreError> {
        let purchase_id = purchase_id.to_owned();
        let lines = lines.to_vec();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(internal)?;
            {
                let mut reservations = txn.open_table(RESERVATIONS).map_err(internal)?;
                if reservations
                    .get(purchase_id.as_str())
                    .map_err(internal)?
                    .is_some()
                {
                    return Ok(()); // already held: a retried step
                }
                let mut products = txn.open_table(PRODUCTS).map_err(internal)?;
                // Check every line before changing any, so failure changes nothing.
                let mut updated = Vec::with_capacity(lines.len());
                for (product_id, quantity) in &lines {
                    let mut product: Product =
                        match products.get(product_id.as_str()).map_err(internal)? {
                            Some(bytes) => decode(bytes.value())?,
                            None => {
                                return Err(StoreError::OutOfStock {
                                    product_id: product_id.clone(),
                                    requested: *quantity,
                                    available: 0,
                                });
                            }
                        };
                    if product.stock < i64::from(*quantity) {
                        return Err(StoreError::OutOfStock {
                            product_id: product_id.clone(),
                            requested: *quantity,
                            available: product.stock,
                        });
                    }
                    product.stock -= i64::from(*quantity);
                    updated.push(product);
                }
                for product in &updated {
                    let bytes = encode(product)?;
                    products
                        .insert(product.id.as_str(), bytes.as_slice())
                        .map_err(internal)?;
                }
                let bytes = encode(&Reservation { lines })?;
                reservations
                    .insert(purchase_id.as_str(), bytes.as_slice())
                    .map_err(internal)?;
            }
            txn.commit().map_err(internal)
        })
        .await
    }

    async fn release_stock(&self, purchase_id: &str) -> Result<bool, StoreError> {
        let purchase_id = purchase_id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(internal)?;
            {
                let mut reservations = txn.open_table(RESERVATIONS).map_err(internal)?;
                let reservation: Reservation = match reservations
                    .remove(purchase_id.as_str())
                    .map_err(internal)?
                {
                    Some(bytes) => decode(bytes.value())?,
                    None => return Ok(false),
                };
                let mut products = txn.open_table(PRODUCTS).map_err(internal)?;
                for (product_id, quantity) in &reservation.lines {
                    let current: Option<Product> =
                        match products.get(product_id.as_str()).map_err(internal)? {
                            Some(bytes) => Some(decode(bytes.value())?),
                            None => None,
                        };
                    // A product deleted from the catalog has nothing to give back to.
                    let Some(mut product) = current else { continue };
                    product.stock += i64::from(*quantity);
                    let bytes = encode(&product)?;
                    products
                        .insert(product_id.as_str(), bytes.as_slice())
                        .map_err(internal)?;
                }
            }
            txn.commit().map_err(internal)?;
            Ok(true)
        })
        .await
    }
}

/// The record stored under `key`, unless it has expired.
fn live_record(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<IdempotencyRecord>, StoreError> {
    let Some(bytes) = table.get(key).map_err(internal)? else {
        return Ok(None);
    };
    let record: IdempotencyRecord = decode(bytes.value())?;
    Ok((record.expires_at > chrono::Utc::now()).then_some(record))
}

#[async_trait]
impl IdempotencyStore for EmbeddedStore {
    async fn put_if_absent(
        &self,
        record: &IdempotencyRecord,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let record = record.clone();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(internal)?;
            {
                let mut table = txn.open_table(IDEMPOTENCY).map_err(internal)?;
                if let Some(existing) = live_record(&table, &record.key)? {
                    return Ok(Some(existing));
                }
                let bytes = encode(&record)?;
                table
                    .insert(record.key.as_str(), bytes.as_slice())
                    .map_err(internal)?;
            }
            txn.commit().map_err(internal)?;
            Ok(None)
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        let key = key.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(internal)?;
            let table = txn.open_table(IDEMPOTENCY).map_err(internal)?;
            live_record(&table, &key)
        })
        .await
    }

    async fn complete(
        &self,
        key: &str,
        response: &StoredResponse,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError> {
        let key = key.to_owned();
        let response = response.clone();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(internal)?;
            {
                let mut table = txn.open_table(IDEMPOTENCY).map_err(internal)?;
                let Some(mut record) = live_record(&table, &key)? else {
                    return Err(StoreError::NotFound(format!("idempotency key {key}")));
                };
                record.response = Some(response);
                record.expires_at = expires_at;
                let bytes = encode(&record)?;
                table
                    .insert(key.as_str(), bytes.as_slice())
                    .map_err(internal)?;
            }
            txn.commit().map_err(internal)
        })
        .await
    }

    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(internal)?;
            {
                let mut table = txn.open_table(IDEMPOTENCY).map_err(internal)?;
                table.remove(key.as_str()).map_err(internal)?;
            }
            txn.commit().map_err(internal)
        })
        .await
    }
}

#[async_trait]
impl RuleSetStore for EmbeddedStore {
    async fn create_rule_set(&self, set: &RuleSetRecord) -> Result<(), StoreError> {
        let set = set.clone();
        self.blocking(move |db| {
            let bytes = encode(&set)?;
            let txn = db.begin_write().map_err(internal)?;
            {
                let mut table = txn.open_table(RULE_SETS).map_err(internal)?;
                if table.get(set.name.as_str()).map_err(internal)?.is_some() {
                    return Err(StoreError::AlreadyExists(set.name.clone()));
                }
                table
                    .insert(set.name.as_str(), bytes.as_slice())
                    .map_err(internal)?;
            }
            txn.commit().map_err(internal)
        })
        .await
    }

    async fn get_rule_set(&self, name: &str) -> Result<Option<RuleSetRecord>, StoreError> {
        let name = name.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(internal)?;
            let table = txn.open_table(RULE_SETS).map_err(internal)?;
            match table.get(name.as_str()).map_err(internal)? {
                Some(bytes) => decode(bytes.value()).map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    async fn replace_rule_set(&self, set: &RuleSetRecord) -> Result<(), StoreError> {
        let set = set.clone();
        self.blocking(move |db| {
            let bytes = encode(&set)?;
            let txn = db.begin_write().map_err(internal)?;
            {
                let mut table = txn.open_table(RULE_SETS).map_err(internal)?;
                let current: RuleSetRecord = match table.get(set.name.as_str()).map_err(internal)? {
                    Some(stored) => decode(stored.value())?,
                    None => return Err(StoreError::NotFound(set.name.clone())),
                };
                if current.version + 1 != set.version {
                    return Err(StoreError::VersionConflict);
                }
                table
                    .insert(set.name.as_str(), bytes.as_slice())
                    .map_err(internal)?;
            }
            txn.commit().map_err(internal)
        })
        .await
    }

    async fn delete_rule_set(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(internal)?;
            let existed = {
                let mut table = txn.open_table(RULE_SETS).map_err(internal)?;
                table.remove(name.as_str()).map_err(internal)?.is_some()
            };
            txn.commit().map_err(internal)?;
            Ok(existed)
        })
        .await
    }

    async fn list_rule_sets(&self) -> Result<Vec<RuleSetRecord>, StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(internal)?;
            let table = txn.open_table(RULE_SETS).map_err(internal)?;
            let mut sets = Vec::new();
            for entry in table.iter().map_err(internal)? {
                let (_, bytes) = entry.map_err(internal)?;
                sets.push(decode(bytes.value())?);
            }
            Ok(sets)
        })
        .await
    }
}
