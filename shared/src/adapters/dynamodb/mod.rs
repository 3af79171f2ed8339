//! DynamoDB store: the same ports as the embedded store, on three tables.
//!
//! The table design (keys, indexes, attributes, TTL) is documented in
//! `docs/dynamodb.md` ("DynamoDB table design"); [`DynamoStore::create_tables`]
//! creates exactly that. In short:
//!
//! - purchases: one item per purchase, the whole document with the model's
//!   camelCase names as attributes; key `purchaseId`; indexes `byCustomer`,
//!   `allPurchases` and `unfinishedPurchases`, all sorted by `purchaseId`
//!   (UUIDv7: creation order), all projecting keys only (listings read the
//!   items with `BatchGetItem`), so a purchase's changes write no index.
//! - products: one item per product (key `id`, with `stock`). Stock moves in
//!   the same transaction as the purchase whose lines hold it.
//! - idempotency: one item per `Idempotency-Key`, expiring through TTL on
//!   `expiresAt`.
//! - rule-sets: one item per rule set (key `name`).
//!
//! One file per table's port (`purchases`, `inventory`, `idempotency`,
//! `rule_sets`); `codec` turns documents into items, `errors` classifies
//! failures.
//!
//! Every write that depends on current state is conditional, so concurrent
//! writers are serialised by DynamoDB itself, never by read-then-write here.
//! Condition failures become the domain's errors; throttling and transport
//! failures that outlast the SDK's retries become `StoreError::Unavailable`
//! (503 + Retry-After at the API, a retried step in the workflow).

mod codec;
mod errors;
mod idempotency;
mod inventory;
mod purchases;
mod rule_sets;

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, KeysAndAttributes, Projection, ProjectionType, ScalarAttributeType,
    TimeToLiveSpecification, TimeToLiveStatus,
};

use crate::ports::store::StoreError;
use codec::{internal, s};
use errors::{backoff, classify};

/// Table names, from `PURCHASES_TABLE`, `PRODUCTS_TABLE`, `IDEMPOTENCY_TABLE`,
/// `RULE_SETS_TABLE`.
#[derive(Debug, Clone)]
pub struct DynamoTables {
    pub purchases: String,
    pub products: String,
    pub idempotency: String,
    pub rule_sets: String,
}

impl DynamoTables {
    pub fn from_env() -> DynamoTables {
        let get = |name: &str, default: &str| {
            std::env::var(name)
                .ok()
                .filter(|value| !value.trim().is_empty())
                .unwrap_or_else(|| default.to_owned())
        };
        DynamoTables {
            purchases: get("PURCHASES_TABLE", "purchases"),
            products: get("PRODUCTS_TABLE", "products"),
            idempotency: get("IDEMPOTENCY_TABLE", "idempotency"),
            rule_sets: get("RULE_SETS_TABLE", "rule-sets"),
        }
    }
}

// Attribute names. Every one but `recordType` and `unfinished` is the
// model's JSON name, so a concept has the same name in the API, the state
// machine and the tables.
const PURCHASE_ID: &str = "purchaseId";
const CUSTOMER_ID: &str = "customerId";
const VERSION: &str = "version";
/// `Product::id`: the key of the products table.
const ID: &str = "id";
const STOCK: &str = "stock";
/// `RuleSetRecord::name`: the key of the rule-sets table.
const RULE_SET_NAME: &str = "name";
/// `IdempotencyRecord::key`: the client's `Idempotency-Key`.
const IDEMPOTENCY_KEY: &str = "key";
const EXPIRES_AT: &str = "expiresAt";
const RESPONSE: &str = "response";
const IN_FLIGHT: &str = "inFlight";
const FINGERPRINT: &str = "fingerprint";
/// Storage-only: the constant partition of the `allPurchases` index, present
/// on purchase items only.
const RECORD_TYPE: &str = "recordType";
const PURCHASE_RECORD: &str = "PURCHASE";
/// Storage-only: the partition of the sparse `unfinishedPurchases` index,
/// present only while a purchase is not final.
const UNFINISHED: &str = "unfinished";
const UNFINISHED_RECORD: &str = "UNFINISHED";

/// GSI of the purchases table: a customer's purchases, by creation.
pub const BY_CUSTOMER_INDEX: &str = "byCustomer";
/// GSI of the purchases table: every purchase, by creation (admin listing).
pub const ALL_PURCHASES_INDEX: &str = "allPurchases";
/// Sparse GSI of the purchases table: the purchases not final yet, by
/// creation (the reconciler). Keys only, so only a purchase's creation and
/// its finalization write to it.
pub const UNFINISHED_INDEX: &str = "unfinishedPurchases";

/// DynamoDB's limit of actions in one `TransactWriteItems`.
const MAX_TRANSACTION_ITEMS: usize = 100;
/// DynamoDB's limit of keys in one `BatchGetItem`.
const MAX_BATCH_GET_KEYS: usize = 100;
/// Attempts for what the SDK does not retry itself: transactions cancelled by
/// a conflicting transaction, and `BatchGetItem`'s unprocessed keys.
const MAX_STORE_ATTEMPTS: u32 = 4;
/// How long `create_tables` waits for a new table to become ACTIVE.
const TABLE_ACTIVE_TIMEOUT: Duration = Duration::from_secs(300);

type Item = HashMap<String, AttributeValue>;

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    tables: DynamoTables,
}

impl DynamoStore {
    pub fn new(client: Client, tables: DynamoTables) -> DynamoStore {
        DynamoStore { client, tables }
    }

    /// Creates the three tables as documented in `docs/dynamodb.md` (on-demand
    /// capacity, the purchases indexes, TTL on `expiresAt`), skipping any that
    /// already exist, and waits until they are ACTIVE. For tests and local
    /// mode against a DynamoDB-API server; on AWS the SAM template owns the
    /// tables and this is never called.
    pub async fn create_tables(&self) -> Result<(), StoreError> {
        let string_key = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(internal)
        };
        let key = |name: &str, key_type: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(key_type)
                .build()
                .map_err(internal)
        };
        let index = |name: &str, partition: &str, projection: ProjectionType| {
            GlobalSecondaryIndex::builder()
                .index_name(name)
                .key_schema(key(partition, KeyType::Hash)?)
                .key_schema(key(PURCHASE_ID, KeyType::Range)?)
                .projection(Projection::builder().projection_type(projection).build())
                .build()
                .map_err(internal)
        };

        let purchases = self
            .client
            .create_table()
            .table_name(&self.tables.purchases)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key(PURCHASE_ID, KeyType::Hash)?)
            .attribute_definitions(string_key(PURCHASE_ID)?)
            .attribute_definitions(string_key(CUSTOMER_ID)?)
            .attribute_definitions(string_key(RECORD_TYPE)?)
            .attribute_definitions(string_key(UNFINISHED)?)
            // Keys only, like the other two: an index that projected the
            // whole purchase would be written again with every change of it
            // (a second write unit for each of the workflow's writes); keys
            // are written once, at creation. Listings read the page's items
            // with one BatchGetItem.
            .global_secondary_indexes(index(
                BY_CUSTOMER_INDEX,
                CUSTOMER_ID,
                ProjectionType::KeysOnly,
            )?)
            // Every purchase shares one partition of this index. Keys only, so
            // only a purchase's creation writes to it, not each status change:
            // that keeps the single partition far from its write limit.
            .global_secondary_indexes(index(
                ALL_PURCHASES_INDEX,
                RECORD_TYPE,
                ProjectionType::KeysOnly,
            )?)
            .global_secondary_indexes(index(
                UNFINISHED_INDEX,
                UNFINISHED,
                ProjectionType::KeysOnly,
            )?);
        let products = self
            .client
            .create_table()
            .table_name(&self.tables.products)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key(ID, KeyType::Hash)?)
            .attribute_definitions(string_key(ID)?);
        let idempotency = self
            .client
            .create_table()
            .table_name(&self.tables.idempotency)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key(IDEMPOTENCY_KEY, KeyType::Hash)?)
            .attribute_definitions(string_key(IDEMPOTENCY_KEY)?);
        let rule_sets = self
            .client
            .create_table()
            .table_name(&self.tables.rule_sets)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key(RULE_SET_NAME, KeyType::Hash)?)
            .attribute_definitions(string_key(RULE_SET_NAME)?);

        for request in [purchases, products, idempotency, rule_sets] {
            match request.send().await {
                Ok(_) => {}
                // Already there (another process created it): keep it as is.
                Err(e)
                    if matches!(
                        e.as_service_error(),
                        Some(CreateTableError::ResourceInUseException(_))
                    ) => {}
                Err(e) => return Err(classify(e)),
            }
        }
        for table in [
            &self.tables.purchases,
            &self.tables.products,
            &self.tables.idempotency,
            &self.tables.rule_sets,
        ] {
            self.client
                .wait_until_table_exists()
                .table_name(table)
                .wait(TABLE_ACTIVE_TIMEOUT)
                .await
                .map_err(|e| {
                    StoreError::Unavailable(format!(
                        "table {table} not active: {}",
                        DisplayErrorContext(&e)
                    ))
                })?;
        }

        // Enabling TTL twice is an error on DynamoDB, so look first.
        let ttl = self
            .client
            .describe_time_to_live()
            .table_name(&self.tables.idempotency)
            .send()
            .await
            .map_err(classify)?;
        let enabled = ttl
            .time_to_live_description()
            .and_then(|d| d.time_to_live_status())
            .is_some_and(|status| {
                matches!(
                    status,
                    TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling
                )
            });
        if !enabled {
            self.client
                .update_time_to_live()
                .table_name(&self.tables.idempotency)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .enabled(true)
                        .attribute_name(EXPIRES_AT)
                        .build()
                        .map_err(internal)?,
                )
                .send()
                .await
                .map_err(classify)?;
        }
        Ok(())
    }

    /// The items of `table` whose `key_attribute` is one of `ids`, in the
    /// order of `ids`, read consistently; ids without an item are skipped.
    async fn batch_get(
        &self,
        table: &str,
        key_attribute: &str,
        ids: &[String],
    ) -> Result<Vec<Item>, StoreError> {
        let mut found: HashMap<String, Item> = HashMap::with_capacity(ids.len());
        let mut unique: Vec<&String> = ids.iter().collect();
        unique.sort();
        unique.dedup();
        for chunk in unique.chunks(MAX_BATCH_GET_KEYS) {
            let mut keys: Vec<Item> = chunk
                .iter()
                .map(|id| HashMap::from([(key_attribute.to_owned(), s(id.as_str()))]))
                .collect();
            let mut attempt = 0;
            // BatchGetItem may answer only part of the keys under load; the
            // SDK does not retry those, so ask again for the rest with backoff.
            while !keys.is_empty() {
                if attempt == MAX_STORE_ATTEMPTS {
                    return Err(StoreError::Unavailable(format!(
                        "{} keys of {table} still unprocessed after {attempt} attempts",
                        keys.len()
                    )));
                }
                if attempt > 0 {
                    backoff(attempt).await;
                }
                attempt += 1;
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut keys)))
                    .consistent_read(true)
                    .build()
                    .map_err(internal)?;
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(table, request)
                    .send()
                    .await
                    .map_err(classify)?;
                for item in output
                    .responses()
                    .and_then(|r| r.get(table))
                    .into_iter()
                    .flatten()
                {
                    if let Some(AttributeValue::S(id)) = item.get(key_attribute) {
                        found.insert(id.clone(), item.clone());
                    }
                }
                if let Some(rest) = output.unprocessed_keys().and_then(|u| u.get(table)) {
                    keys = rest.keys().to_vec();
                }
            }
        }
        Ok(ids.iter().filter_map(|id| found.get(id).cloned()).collect())
    }

    /// Writes an item whose key must not exist yet; `AlreadyExists(id)` if it does.
    async fn put_new(
        &self,
        table: &str,
        item: Item,
        key_attribute: &str,
        id: &str,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#key)")
            .expression_attribute_names("#key", key_attribute)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(PutItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Err(StoreError::AlreadyExists(id.to_owned()))
            }
            Err(e) => Err(classify(e)),
        }
    }

    async fn get_item(&self, table: &str, key: Item) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        Ok(output.item)
    }

    /// Writes `item` if the stored item with `key_attribute` = `key` is at
    /// `version - 1` (`VersionConflict` if it moved, `NotFound` if there is
    /// none): the optimistic write of purchases and rule sets.
    async fn put_next_version(
        &self,
        table: &str,
        item: Item,
        key_attribute: &str,
        key: &str,
        version: u64,
        what: &str,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .condition_expression("attribute_exists(#key) AND #version = :expected")
            .expression_attribute_names("#key", key_attribute)
            .expression_attribute_names("#version", VERSION)
            .expression_attribute_values(":expected", codec::n(version.saturating_sub(1)))
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(failed)) => Err(self
                    .conflict_or_missing(
                        table,
                        key_attribute,
                        key,
                        failed.item().is_some_and(|old| !old.is_empty()),
                        what,
                    )
                    .await?),
                _ => Err(classify(e)),
            },
        }
    }

    /// Tells "changed" from "never existed" after a failed version
    /// condition: the old item says, and a server that does not return it
    /// costs one read.
    async fn conflict_or_missing(
        &self,
        table: &str,
        key_attribute: &str,
        key: &str,
        old_item_returned: bool,
        what: &str,
    ) -> Result<StoreError, StoreError> {
        let exists = old_item_returned
            || self
                .get_item(table, HashMap::from([(key_attribute.to_owned(), s(key))]))
                .await?
                .is_some();
        Ok(if exists {
            StoreError::VersionConflict
        } else {
            StoreError::NotFound(what.to_owned())
        })
    }
}
