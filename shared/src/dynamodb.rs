//! DynamoDB store (being written).

use async_trait::async_trait;

use crate::model::{Product, Purchase};
use crate::store::{Inventory, PurchasePage, PurchaseQuery, PurchaseStore, StoreError};

/// Table names, from `PURCHASES_TABLE`, `PRODUCTS_TABLE`, `IDEMPOTENCY_TABLE`.
#[derive(Debug, Clone)]
pub struct DynamoTables {
    pub purchases: String,
    pub products: String,
    pub idempotency: String,
}

impl DynamoTables {
    pub fn from_env() -> DynamoTables {
        let get = |name: &str, default: &str| crate::config::env(name).unwrap_or_else(|| default.to_owned());
        DynamoTables {
            purchases: get("PURCHASES_TABLE", "purchases"),
            products: get("PRODUCTS_TABLE", "products"),
            idempotency: get("IDEMPOTENCY_TABLE", "idempotency"),
        }
    }
}

#[derive(Clone)]
pub struct DynamoStore {
    client: aws_sdk_dynamodb::Client,
    tables: DynamoTables,
}

impl DynamoStore {
    pub fn new(client: aws_sdk_dynamodb::Client, tables: DynamoTables) -> DynamoStore {
        DynamoStore { client, tables }
    }
}

fn pending() -> StoreError {
    StoreError::Internal("the DynamoDB store is not implemented yet".into())
}

#[async_trait]
impl PurchaseStore for DynamoStore {
    async fn create_purchase(&self, _: &Purchase) -> Result<(), StoreError> {
        let _ = (&self.client, &self.tables);
        Err(pending())
    }
    async fn get_purchase(&self, _: &str) -> Result<Option<Purchase>, StoreError> {
        Err(pending())
    }
    async fn update_purchase(&self, _: &mut Purchase) -> Result<(), StoreError> {
        Err(pending())
    }
    async fn list_purchases(&self, _: &PurchaseQuery) -> Result<PurchasePage, StoreError> {
        Err(pending())
    }
}

#[async_trait]
impl Inventory for DynamoStore {
    async fn get_products(&self, _: &[String]) -> Result<Vec<Product>, StoreError> {
        Err(pending())
    }
    async fn add_product_if_absent(&self, _: &Product) -> Result<(), StoreError> {
        Err(pending())
    }
    async fn reserve_stock(&self, _: &str, _: &[(String, u32)]) -> Result<(), StoreError> {
        Err(pending())
    }
    async fn release_stock(&self, _: &str) -> Result<bool, StoreError> {
        Err(pending())
    }
}
