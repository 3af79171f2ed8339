//! DynamoDB store: the same ports as the embedded store, on three tables.
//!
//! The table design (keys, indexes, attributes, TTL) is documented in
//! `docs/dynamodb.md` ("DynamoDB table design"); [`DynamoStore::create_tables`]
//! creates exactly that. In short:
//!
//! - purchases: one item per purchase, the whole document with the model's
//!   camelCase names as attributes; key `purchaseId`; indexes `byCustomer`
//!   and `allPurchases`, both sorted by `purchaseId` (UUIDv7: creation order).
//! - products: one item per product (key `id`, with `stock`), plus one
//!   reservation item per purchase holding stock (key `reservation#<purchaseId>`).
//! - idempotency: one item per `Idempotency-Key`, expiring through TTL on
//!   `expiresAt`.
//!
//! Every write that depends on current state is conditional, so concurrent
//! writers are serialised by DynamoDB itself, never by read-then-write here.
//! Condition failures become the domain's errors; throttling and transport
//! failures that outlast the SDK's retries become `StoreError::Unavailable`
//! (503 + Retry-After at the API, a retried step in the workflow).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, CancellationReason, Delete,
    GlobalSecondaryIndex, KeySchemaElement, KeyType, KeysAndAttributes, Projection, ProjectionType,
    Put, ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TimeToLiveSpecification,
    TimeToLiveStatus, TransactWriteItem, Update,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::model::{Product, Purchase};
use crate::store::{
    IdempotencyRecord, IdempotencyStore, Inventory, PurchasePage, PurchaseQuery, PurchaseStore,
    RuleSetRecord, RuleSetStore, StoreError, StoredResponse,
};

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
            crate::config::env(name).unwrap_or_else(|| default.to_owned())
        };
        DynamoTables {
            purchases: get("PURCHASES_TABLE", "purchases"),
            products: get("PRODUCTS_TABLE", "products"),
            idempotency: get("IDEMPOTENCY_TABLE", "idempotency"),
            rule_sets: get("RULE_SETS_TABLE", "rule-sets"),
        }
    }
}

// Attribute names. Every one but `recordType` is the model's JSON name, so a
// concept has the same name in the API, the state machine and the tables.
const PURCHASE_ID: &str = "purchaseId";
const CUSTOMER_ID: &str = "customerId";
const STATUS: &str = "status";
const VERSION: &str = "version";
/// `Product::id`: the key of the products table (product and reservation items).
const ID: &str = "id";
const STOCK: &str = "stock";
/// `RuleSetRecord::name`: the key of the rule-sets table.
const RULE_SET_NAME: &str = "name";
const PRODUCTS: &str = "products";
const QUANTITY: &str = "quantity";
/// `IdempotencyRecord::key`: the client's `Idempotency-Key`.
const IDEMPOTENCY_KEY: &str = "key";
const EXPIRES_AT: &str = "expiresAt";
const RESPONSE: &str = "response";
/// Storage-only: the constant partition of the `allPurchases` index, present
/// on purchase items only.
const RECORD_TYPE: &str = "recordType";
const PURCHASE_RECORD: &str = "PURCHASE";

/// GSI of the purchases table: a customer's purchases, newest first.
pub const BY_CUSTOMER_INDEX: &str = "byCustomer";
/// GSI of the purchases table: every purchase, newest first (admin listing).
pub const ALL_PURCHASES_INDEX: &str = "allPurchases";

/// Reservation items share the products table; this prefix keeps their keys
/// apart from product ids, so catalog ids must not start with it.
const RESERVATION_PREFIX: &str = "reservation#";

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
            // A customer's listing reads whole purchases straight from the index.
            .global_secondary_indexes(index(BY_CUSTOMER_INDEX, CUSTOMER_ID, ProjectionType::All)?)
            // Every purchase shares one partition of this index. Keys only, so
            // only a purchase's creation writes to it, not each status change:
            // that keeps the single partition far from its write limit.
            .global_secondary_indexes(index(
                ALL_PURCHASES_INDEX,
                RECORD_TYPE,
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

    async fn stock_of(&self, product_id: &str) -> Result<i64, StoreError> {
        let item = self
            .get_item(&self.tables.products, product_key(product_id))
            .await?;
        Ok(item
            .as_ref()
            .and_then(|item| number_attribute(item, STOCK))
            .unwrap_or(0))
    }
}

// ---------------------------------------------------------------------------
// Documents: serde JSON ⇄ DynamoDB attribute values, field for field.

fn internal(error: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(error.to_string())
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl std::fmt::Display) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// A struct as a DynamoDB item: one attribute per top-level JSON field.
fn to_item<T: Serialize>(value: &T) -> Result<Item, StoreError> {
    match serde_json::to_value(value).map_err(internal)? {
        Value::Object(fields) => Ok(fields
            .into_iter()
            .map(|(k, v)| (k, to_attribute(v)))
            .collect()),
        other => Err(internal(format!(
            "expected a JSON object to store, got {other}"
        ))),
    }
}

fn to_attribute(value: Value) -> AttributeValue {
    match value {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(b),
        Value::Number(number) => AttributeValue::N(number.to_string()),
        Value::String(text) => AttributeValue::S(text),
        Value::Array(items) => AttributeValue::L(items.into_iter().map(to_attribute).collect()),
        Value::Object(fields) => AttributeValue::M(
            fields
                .into_iter()
                .map(|(k, v)| (k, to_attribute(v)))
                .collect(),
        ),
    }
}

fn from_attribute(value: &AttributeValue) -> Result<Value, StoreError> {
    Ok(match value {
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::N(number) => parse_number(number)?,
        AttributeValue::S(text) => Value::String(text.clone()),
        AttributeValue::L(items) => {
            Value::Array(items.iter().map(from_attribute).collect::<Result<_, _>>()?)
        }
        AttributeValue::M(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| Ok((k.clone(), from_attribute(v)?)))
                .collect::<Result<_, StoreError>>()?,
        ),
        other => {
            return Err(internal(format!(
                "unexpected attribute type in a stored document: {other:?}"
            )));
        }
    })
}

/// DynamoDB numbers are decimal strings; the model only holds integers, but
/// keep fractions readable rather than failing on them.
fn parse_number(text: &str) -> Result<Value, StoreError> {
    if let Ok(int) = text.parse::<i64>() {
        return Ok(Value::from(int));
    }
    if let Ok(uint) = text.parse::<u64>() {
        return Ok(Value::from(uint));
    }
    text.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .ok_or_else(|| internal(format!("stored number {text:?} is not representable")))
}

/// An item as a struct, ignoring the storage-only attributes named in `skip`.
fn from_item<T: DeserializeOwned>(item: &Item, skip: &[&str]) -> Result<T, StoreError> {
    let fields = item
        .iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .map(|(k, v)| Ok((k.clone(), from_attribute(v)?)))
        .collect::<Result<serde_json::Map<_, _>, StoreError>>()?;
    serde_json::from_value(Value::Object(fields)).map_err(internal)
}

fn number_attribute(item: &Item, name: &str) -> Option<i64> {
    match item.get(name) {
        Some(AttributeValue::N(number)) => number.parse().ok(),
        _ => None,
    }
}

fn purchase_item(purchase: &Purchase) -> Result<Item, StoreError> {
    let mut item = to_item(purchase)?;
    item.insert(RECORD_TYPE.to_owned(), s(PURCHASE_RECORD));
    Ok(item)
}

fn purchase_from_item(item: &Item) -> Result<Purchase, StoreError> {
    from_item(item, &[RECORD_TYPE])
}

fn purchase_key(purchase_id: &str) -> Item {
    HashMap::from([(PURCHASE_ID.to_owned(), s(purchase_id))])
}

fn product_key(product_id: &str) -> Item {
    HashMap::from([(ID.to_owned(), s(product_id))])
}

fn reservation_key(purchase_id: &str) -> Item {
    product_key(&format!("{RESERVATION_PREFIX}{purchase_id}"))
}

fn idempotency_key(key: &str) -> Item {
    HashMap::from([(IDEMPOTENCY_KEY.to_owned(), s(key))])
}

fn rule_set_key(name: &str) -> Item {
    HashMap::from([(RULE_SET_NAME.to_owned(), s(name))])
}

fn now_seconds() -> i64 {
    chrono::Utc::now().timestamp()
}

// ---------------------------------------------------------------------------
// Errors.

/// Maps a failed call that is not a condition failure the caller handles:
/// throttling, server errors and transport failures (after the SDK's own
/// retries) are `Unavailable`, so the API answers 503 + Retry-After and the
/// workflow retries the step; anything else is a bug or misconfiguration.
fn classify<E>(error: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let detail = DisplayErrorContext(&error).to_string();
    let transient = match &error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => {
            is_transient_code(service.err().code()) || service.raw().status().is_server_error()
        }
        _ => false,
    };
    if transient {
        StoreError::Unavailable(detail)
    } else {
        StoreError::Internal(detail)
    }
}

/// DynamoDB error codes that mean "try again later", as opposed to a request
/// that can never succeed.
fn is_transient_code(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "ProvisionedThroughputExceededException"
                | "RequestLimitExceeded"
                | "ThrottlingException"
                | "TransactionConflictException"
                | "TransactionInProgressException"
                | "InternalServerError"
                | "ServiceUnavailable"
        )
    )
}

/// Cancellation reason codes of `TransactWriteItems` that a retry may clear.
fn is_transient_reason(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "TransactionConflict"
                | "ThrottlingError"
                | "ProvisionedThroughputExceeded"
                | "RequestLimitExceeded"
        )
    )
}

fn condition_failed(reason: &CancellationReason) -> bool {
    reason.code() == Some("ConditionalCheckFailed")
}

/// Why a transaction did not commit.
enum TransactionFailure {
    /// Cancelled; one reason per action, in request order.
    Cancelled(Vec<CancellationReason>),
    Other(StoreError),
}

fn transaction_failure(
    error: SdkError<TransactWriteItemsError, HttpResponse>,
) -> TransactionFailure {
    match error.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
            TransactionFailure::Cancelled(cancelled.cancellation_reasons().to_vec())
        }
        _ => TransactionFailure::Other(classify(error)),
    }
}

/// Jittered exponential backoff for the store's own retries: ~25, 50, 100 ms.
async fn backoff(attempt: u32) {
    let base = 25u64 << attempt.saturating_sub(1).min(6);
    tokio::time::sleep(Duration::from_millis(
        base / 2 + fastrand::u64(0..=base / 2),
    ))
    .await;
}

// ---------------------------------------------------------------------------
// Page tokens: the key of the last purchase returned, as JSON, which is also
// the index's ExclusiveStartKey for the next page.

fn page_token(
    partition: &str,
    partition_value: &str,
    purchase_id: &str,
) -> Result<String, StoreError> {
    let key = BTreeMap::from([(partition, partition_value), (PURCHASE_ID, purchase_id)]);
    serde_json::to_string(&key).map_err(internal)
}

/// The start key a token stands for. A token from another listing (another
/// customer, or a different index) is refused rather than passed on, so it
/// cannot reach into someone else's partition.
fn start_key(token: &str, partition: &str, partition_value: &str) -> Result<Item, StoreError> {
    let invalid = || StoreError::InvalidPageToken;
    let key: BTreeMap<String, String> = serde_json::from_str(token).map_err(|_| invalid())?;
    if key.len() != 2 || key.get(partition).map(String::as_str) != Some(partition_value) {
        return Err(invalid());
    }
    let purchase_id = key.get(PURCHASE_ID).ok_or_else(invalid)?;
    Ok(HashMap::from([
        (partition.to_owned(), s(partition_value)),
        (PURCHASE_ID.to_owned(), s(purchase_id.as_str())),
    ]))
}

#[async_trait]
impl PurchaseStore for DynamoStore {
    async fn create_purchase(&self, purchase: &Purchase) -> Result<(), StoreError> {
        self.put_new(
            &self.tables.purchases,
            purchase_item(purchase)?,
            PURCHASE_ID,
            &purchase.purchase_id,
        )
        .await
    }

    async fn get_purchase(&self, purchase_id: &str) -> Result<Option<Purchase>, StoreError> {
        // Consistent read: a workflow step must see the write of the step before.
        self.get_item(&self.tables.purchases, purchase_key(purchase_id))
            .await?
            .as_ref()
            .map(purchase_from_item)
            .transpose()
    }

    async fn update_purchase(&self, purchase: &mut Purchase) -> Result<(), StoreError> {
        let mut next = purchase.clone();
        next.version += 1;
        next.updated_at = chrono::Utc::now();
        let result = self
            .client
            .put_item()
            .table_name(&self.tables.purchases)
            .set_item(Some(purchase_item(&next)?))
            .condition_expression("attribute_exists(#id) AND #version = :expected")
            .expression_attribute_names("#id", PURCHASE_ID)
            .expression_attribute_names("#version", VERSION)
            .expression_attribute_values(":expected", n(purchase.version))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => {
                *purchase = next;
                Ok(())
            }
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(failed)) => {
                    // The old item tells "changed" from "never existed"; a
                    // server that does not return it costs one extra read.
                    let exists = match failed.item() {
                        Some(_) => true,
                        None => self
                            .get_item(&self.tables.purchases, purchase_key(&purchase.purchase_id))
                            .await?
                            .is_some(),
                    };
                    if exists {
                        Err(StoreError::VersionConflict)
                    } else {
                        Err(StoreError::NotFound(purchase.purchase_id.clone()))
                    }
                }
                _ => Err(classify(e)),
            },
        }
    }

    async fn list_purchases(&self, query: &PurchaseQuery) -> Result<PurchasePage, StoreError> {
        let limit = query.limit.max(1);
        let (index, partition, partition_value) = match &query.customer_id {
            Some(customer) => (BY_CUSTOMER_INDEX, CUSTOMER_ID, customer.as_str()),
            None => (ALL_PURCHASES_INDEX, RECORD_TYPE, PURCHASE_RECORD),
        };
        let mut exclusive_start = match &query.next_token {
            Some(token) => Some(start_key(token, partition, partition_value)?),
            None => None,
        };
        // Read one match more than the page: it proves a next page exists, so
        // the last page never carries a token leading to an empty page. With
        // a status filter DynamoDB's Limit counts items read before
        // filtering, so read bigger pages and keep going until enough match.
        let read_size = if query.status.is_some() {
            (limit + 1).max(100)
        } else {
            limit + 1
        };
        let read_size = i32::try_from(read_size).unwrap_or(i32::MAX);
        let mut found: Vec<Purchase> = Vec::with_capacity(limit + 1);
        loop {
            let mut request = self
                .client
                .query()
                .table_name(&self.tables.purchases)
                .index_name(index)
                .key_condition_expression("#partition = :partition")
                .expression_attribute_names("#partition", partition)
                .expression_attribute_values(":partition", s(partition_value))
                .scan_index_forward(false)
                .limit(read_size)
                .set_exclusive_start_key(exclusive_start.take());
            // Only `byCustomer` projects `status`; `allPurchases` is filtered
            // after fetching the items below.
            if let (Some(status), BY_CUSTOMER_INDEX) = (query.status, index) {
                request = request
                    .filter_expression("#status = :status")
                    .expression_attribute_names("#status", STATUS)
                    .expression_attribute_values(":status", s(status.as_str()));
            }
            let output = request.send().await.map_err(classify)?;
            let purchases: Vec<Purchase> = if index == BY_CUSTOMER_INDEX {
                output
                    .items()
                    .iter()
                    .map(purchase_from_item)
                    .collect::<Result<_, _>>()?
            } else {
                let ids: Vec<String> = output
                    .items()
                    .iter()
                    .filter_map(|key| match key.get(PURCHASE_ID) {
                        Some(AttributeValue::S(id)) => Some(id.clone()),
                        _ => None,
                    })
                    .collect();
                self.batch_get(&self.tables.purchases, PURCHASE_ID, &ids)
                    .await?
                    .iter()
                    .map(purchase_from_item)
                    .collect::<Result<_, _>>()?
            };
            found.extend(
                purchases
                    .into_iter()
                    .filter(|p| query.status.is_none_or(|status| p.status == status)),
            );
            if found.len() > limit {
                break;
            }
            match output.last_evaluated_key() {
                Some(key) => exclusive_start = Some(key.clone()),
                None => break,
            }
        }
        let next_token = if found.len() > limit {
            found.truncate(limit);
            match found.last() {
                Some(last) => Some(page_token(partition, partition_value, &last.purchase_id)?),
                None => None,
            }
        } else {
            None
        };
        Ok(PurchasePage {
            purchases: found,
            next_token,
        })
    }
}

/// The lines with one entry per product, quantities summed: a transaction
/// may touch each item only once.
fn merge_lines(lines: &[(String, u32)]) -> Vec<(String, u32)> {
    let mut merged: Vec<(String, u32)> = Vec::with_capacity(lines.len());
    for (product_id, quantity) in lines {
        match merged.iter_mut().find(|(id, _)| id == product_id) {
            Some((_, total)) => *total = total.saturating_add(*quantity),
            None => merged.push((product_id.clone(), *quantity)),
        }
    }
    merged
}

fn reservation_lines(item: &Item) -> Result<Vec<(String, u32)>, StoreError> {
    let Some(AttributeValue::L(lines)) = item.get(PRODUCTS) else {
        return Err(internal("reservation item without products"));
    };
    lines
        .iter()
        .map(|line| {
            let AttributeValue::M(line) = line else {
                return Err(internal("reservation line is not a map"));
            };
            let id = match line.get(ID) {
                Some(AttributeValue::S(id)) => id.clone(),
                _ => return Err(internal("reservation line without id")),
            };
            let quantity = number_attribute(line, QUANTITY)
                .and_then(|q| u32::try_from(q).ok())
                .ok_or_else(|| internal("reservation line without quantity"))?;
            Ok((id, quantity))
        })
        .collect()
}

fn build_put(table: &str, item: Item, condition: &str) -> Result<TransactWriteItem, StoreError> {
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression(condition)
        .expression_attribute_names("#id", ID)
        .build()
        .map_err(internal)?;
    Ok(TransactWriteItem::builder().put(put).build())
}

#[async_trait]
impl Inventory for DynamoStore {
    async fn get_products(&self, ids: &[String]) -> Result<Vec<Product>, StoreError> {
        // Reservation items live in the same table and are not products.
        let ids: Vec<String> = ids
            .iter()
            .filter(|id| !id.starts_with(RESERVATION_PREFIX))
            .cloned()
            .collect();
        self.batch_get(&self.tables.products, ID, &ids)
            .await?
            .iter()
            .map(|item| from_item(item, &[]))
            .collect()
    }

    async fn add_product_if_absent(&self, product: &Product) -> Result<(), StoreError> {
        if product.id.starts_with(RESERVATION_PREFIX) {
            return Err(StoreError::Internal(format!(
                "product id {:?} uses the reserved prefix {RESERVATION_PREFIX:?}",
                product.id
            )));
        }
        let result = self
            .client
            .put_item()
            .table_name(&self.tables.products)
            .set_item(Some(to_item(product)?))
            .condition_expression("attribute_not_exists(#id)")
            .expression_attribute_names("#id", ID)
            .send()
            .await;
        match result {
            // Present already: its stock reflects sales and must stay.
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(PutItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(classify(e)),
            Ok(_) => Ok(()),
        }
    }

    async fn reserve_stock(
        &self,
        purchase_id: &str,
        lines: &[(String, u32)],
    ) -> Result<(), StoreError> {
        let lines = merge_lines(lines);
        if lines.len() + 1 > MAX_TRANSACTION_ITEMS {
            return Err(StoreError::Internal(format!(
                "{} products exceed one transaction ({MAX_TRANSACTION_ITEMS} actions)",
                lines.len()
            )));
        }
        let table = &self.tables.products;
        // Action 0 records the reservation, so a repeated call is detected by
        // its condition; actions 1.. take each line's stock if enough is left.
        let mut reservation = reservation_key(purchase_id);
        reservation.insert(PURCHASE_ID.to_owned(), s(purchase_id));
        reservation.insert(
            PRODUCTS.to_owned(),
            AttributeValue::L(
                lines
                    .iter()
                    .map(|(id, quantity)| {
                        AttributeValue::M(HashMap::from([
                            (ID.to_owned(), s(id.as_str())),
                            (QUANTITY.to_owned(), n(quantity)),
                        ]))
                    })
                    .collect(),
            ),
        );
        let mut actions = vec![build_put(table, reservation, "attribute_not_exists(#id)")?];
        for (product_id, quantity) in &lines {
            let update = Update::builder()
                .table_name(table)
                .set_key(Some(product_key(product_id)))
                .update_expression("SET #stock = #stock - :quantity")
                // Fails on a missing product too: a missing attribute compares false.
                .condition_expression("#stock >= :quantity")
                .expression_attribute_names("#stock", STOCK)
                .expression_attribute_values(":quantity", n(quantity))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .build()
                .map_err(internal)?;
            actions.push(TransactWriteItem::builder().update(update).build());
        }

        let mut attempt = 0;
        loop {
            attempt += 1;
            // The SDK gives the request a ClientRequestToken, so its own
            // retries of a transaction that did commit are not applied twice.
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(actions.clone()))
                .send()
                .await;
            let reasons = match result {
                Ok(_) => return Ok(()),
                Err(e) => match transaction_failure(e) {
                    TransactionFailure::Cancelled(reasons) => reasons,
                    TransactionFailure::Other(error) => return Err(error),
                },
            };
            if reasons.first().is_some_and(condition_failed) {
                return Ok(()); // held already: a retried step
            }
            let short = reasons
                .iter()
                .skip(1)
                .zip(&lines)
                .find(|(reason, _)| condition_failed(reason));
            if let Some((reason, (product_id, quantity))) = short {
                let available = match reason.item() {
                    Some(item) => number_attribute(item, STOCK).unwrap_or(0),
                    None => self.stock_of(product_id).await?,
                };
                return Err(StoreError::OutOfStock {
                    product_id: product_id.clone(),
                    requested: *quantity,
                    available,
                });
            }
            // A concurrent transaction on the same product (the last units
            // selling out) cancels ours without deciding anything: retry.
            if reasons.iter().any(|r| is_transient_reason(r.code())) && attempt < MAX_STORE_ATTEMPTS
            {
                backoff(attempt).await;
                continue;
            }
            let codes: Vec<&str> = reasons.iter().map(|r| r.code().unwrap_or("?")).collect();
            return Err(if reasons.iter().any(|r| is_transient_reason(r.code())) {
                StoreError::Unavailable(format!("stock reservation cancelled: {codes:?}"))
            } else {
                StoreError::Internal(format!("stock reservation cancelled: {codes:?}"))
            });
        }
    }

    async fn release_stock(&self, purchase_id: &str) -> Result<bool, StoreError> {
        let table = &self.tables.products;
        let Some(reservation) = self.get_item(table, reservation_key(purchase_id)).await? else {
            return Ok(false); // nothing held, or released already
        };
        let mut lines = reservation_lines(&reservation)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let delete = Delete::builder()
                .table_name(table)
                .set_key(Some(reservation_key(purchase_id)))
                .condition_expression("attribute_exists(#id)")
                .expression_attribute_names("#id", ID)
                .build()
                .map_err(internal)?;
            let mut actions = vec![TransactWriteItem::builder().delete(delete).build()];
            for (product_id, quantity) in &lines {
                let update = Update::builder()
                    .table_name(table)
                    .set_key(Some(product_key(product_id)))
                    .update_expression("ADD #stock :quantity")
                    // ADD would create a bare item for a product removed from
                    // the catalog; there is nothing to give back to then.
                    .condition_expression("attribute_exists(#id)")
                    .expression_attribute_names("#id", ID)
                    .expression_attribute_names("#stock", STOCK)
                    .expression_attribute_values(":quantity", n(quantity))
                    .build()
                    .map_err(internal)?;
                actions.push(TransactWriteItem::builder().update(update).build());
            }
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(actions))
                .send()
                .await;
            let reasons = match result {
                Ok(_) => return Ok(true),
                Err(e) => match transaction_failure(e) {
                    TransactionFailure::Cancelled(reasons) => reasons,
                    TransactionFailure::Other(error) => return Err(error),
                },
            };
            if reasons.first().is_some_and(condition_failed) {
                return Ok(false); // a concurrent release won
            }
            let gone: Vec<String> = reasons
                .iter()
                .skip(1)
                .zip(&lines)
                .filter(|(reason, _)| condition_failed(reason))
                .map(|(_, (id, _))| id.clone())
                .collect();
            let transient = reasons.iter().any(|r| is_transient_reason(r.code()));
            if (!gone.is_empty() || transient) && attempt < MAX_STORE_ATTEMPTS {
                lines.retain(|(id, _)| !gone.contains(id));
                if transient {
                    backoff(attempt).await;
                }
                continue;
            }
            let codes: Vec<&str> = reasons.iter().map(|r| r.code().unwrap_or("?")).collect();
            return Err(if transient {
                StoreError::Unavailable(format!("stock release cancelled: {codes:?}"))
            } else {
                StoreError::Internal(format!("stock release cancelled: {codes:?}"))
            });
        }
    }
}

#[async_trait]
impl IdempotencyStore for DynamoStore {
    async fn put_if_absent(
        &self,
        record: &IdempotencyRecord,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let table = &self.tables.idempotency;
        for _ in 0..MAX_STORE_ATTEMPTS {
            // An expired record may still be stored (TTL deletes lazily): it
            // no longer holds the key, so the condition lets it be replaced.
            let result = self
                .client
                .put_item()
                .table_name(table)
                .set_item(Some(to_item(record)?))
                .condition_expression("attribute_not_exists(#key) OR #expiresAt <= :now")
                .expression_attribute_names("#key", IDEMPOTENCY_KEY)
                .expression_attribute_names("#expiresAt", EXPIRES_AT)
                .expression_attribute_values(":now", n(now_seconds()))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            match result {
                Ok(_) => return Ok(None),
                Err(e) => match e.as_service_error() {
                    Some(PutItemError::ConditionalCheckFailedException(failed)) => {
                        let existing = match failed.item() {
                            Some(item) => Some(from_item::<IdempotencyRecord>(item, &[])?),
                            None => self.get(&record.key).await?,
                        };
                        // None: the holder expired or was removed in between; claim again.
                        if existing.is_some() {
                            return Ok(existing);
                        }
                    }
                    _ => return Err(classify(e)),
                },
            }
        }
        Err(StoreError::Unavailable(format!(
            "idempotency key {} kept changing while being claimed",
            record.key
        )))
    }

    async fn get(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        let Some(item) = self
            .get_item(&self.tables.idempotency, idempotency_key(key))
            .await?
        else {
            return Ok(None);
        };
        let record: IdempotencyRecord = from_item(&item, &[])?;
        Ok((record.expires_at > chrono::Utc::now()).then_some(record))
    }

    async fn complete(
        &self,
        key: &str,
        response: &StoredResponse,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.idempotency)
            .set_key(Some(idempotency_key(key)))
            .update_expression("SET #response = :response, #expiresAt = :expiresAt")
            .condition_expression("attribute_exists(#key) AND #expiresAt > :now")
            .expression_attribute_names("#key", IDEMPOTENCY_KEY)
            .expression_attribute_names("#expiresAt", EXPIRES_AT)
            .expression_attribute_names("#response", RESPONSE)
            .expression_attribute_values(":now", n(now_seconds()))
            .expression_attribute_values(":response", AttributeValue::M(to_item(response)?))
            .expression_attribute_values(":expiresAt", n(expires_at.timestamp()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Err(StoreError::NotFound(format!("idempotency key {key}")))
            }
            Err(e) => Err(classify(e)),
        }
    }

    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.tables.idempotency)
            .set_key(Some(idempotency_key(key)))
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }
}

#[async_trait]
impl RuleSetStore for DynamoStore {
    async fn create_rule_set(&self, set: &RuleSetRecord) -> Result<(), StoreError> {
        self.put_new(
            &self.tables.rule_sets,
            to_item(set)?,
            RULE_SET_NAME,
            &set.name,
        )
        .await
    }

    async fn get_rule_set(&self, name: &str) -> Result<Option<RuleSetRecord>, StoreError> {
        self.get_item(&self.tables.rule_sets, rule_set_key(name))
            .await?
            .as_ref()
            .map(|item| from_item(item, &[]))
            .transpose()
    }

    async fn replace_rule_set(&self, set: &RuleSetRecord) -> Result<(), StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.tables.rule_sets)
            .set_item(Some(to_item(set)?))
            .condition_expression("attribute_exists(#name) AND #version = :expected")
            .expression_attribute_names("#name", RULE_SET_NAME)
            .expression_attribute_names("#version", VERSION)
            .expression_attribute_values(":expected", n(set.version.saturating_sub(1)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(failure)) => {
                    if failure.item().is_some_and(|old| !old.is_empty()) {
                        Err(StoreError::VersionConflict)
                    } else if self.get_rule_set(&set.name).await?.is_some() {
                        // Servers that do not return the old item: look.
                        Err(StoreError::VersionConflict)
                    } else {
                        Err(StoreError::NotFound(set.name.clone()))
                    }
                }
                _ => Err(classify(e)),
            },
        }
    }

    async fn delete_rule_set(&self, name: &str) -> Result<bool, StoreError> {
        let output = self
            .client
            .delete_item()
            .table_name(&self.tables.rule_sets)
            .set_key(Some(rule_set_key(name)))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(classify)?;
        Ok(output.attributes().is_some_and(|old| !old.is_empty()))
    }

    async fn list_rule_sets(&self) -> Result<Vec<RuleSetRecord>, StoreError> {
        // At most MAX_RULE_SETS small items: one scan page holds them all.
        let output = self
            .client
            .scan()
            .table_name(&self.tables.rule_sets)
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        let mut sets: Vec<RuleSetRecord> = output
            .items()
            .iter()
            .map(|item| from_item(item, &[]))
            .collect::<Result<_, _>>()?;
        sets.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(sets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_round_trip_through_attribute_values() {
        let value = serde_json::json!({
            "text": "", "int": -5, "big": u64::MAX, "flag": true, "none": null,
            "list": [1, "two", {"three": 3}], "map": {"nested": []}
        });
        let item = to_item(&value).unwrap();
        assert_eq!(item["int"], AttributeValue::N("-5".into()));
        let back: Value = from_item(&item, &[]).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn storage_only_attributes_are_dropped_on_read() {
        let item = HashMap::from([
            ("a".to_owned(), n(1)),
            (RECORD_TYPE.to_owned(), s(PURCHASE_RECORD)),
        ]);
        let back: Value = from_item(&item, &[RECORD_TYPE]).unwrap();
        assert_eq!(back, serde_json::json!({"a": 1}));
    }

    #[test]
    fn throttling_and_server_errors_are_transient() {
        for code in [
            "ProvisionedThroughputExceededException",
            "RequestLimitExceeded",
            "ThrottlingException",
        ] {
            assert!(is_transient_code(Some(code)), "{code}");
        }
        for code in [
            "ConditionalCheckFailedException",
            "ValidationException",
            "ResourceNotFoundException",
        ] {
            assert!(!is_transient_code(Some(code)), "{code}");
        }
        assert!(is_transient_reason(Some("TransactionConflict")));
        assert!(!is_transient_reason(Some("ConditionalCheckFailed")));
    }

    #[test]
    fn page_tokens_only_open_their_own_partition() {
        let token = page_token(CUSTOMER_ID, "alice", "p-1").unwrap();
        let key = start_key(&token, CUSTOMER_ID, "alice").unwrap();
        assert_eq!(key[PURCHASE_ID], s("p-1"));
        assert!(start_key(&token, CUSTOMER_ID, "mallory").is_err());
        assert!(start_key(&token, RECORD_TYPE, PURCHASE_RECORD).is_err());
        assert!(start_key("not json", CUSTOMER_ID, "alice").is_err());
    }

    #[test]
    fn duplicate_lines_are_merged_for_one_transaction() {
        let merged = merge_lines(&[("a".into(), 1), ("b".into(), 2), ("a".into(), 3)]);
        assert_eq!(merged, vec![("a".to_owned(), 4), ("b".to_owned(), 2)]);
    }
}
