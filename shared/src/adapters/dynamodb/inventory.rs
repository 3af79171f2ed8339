//! The products table: `Inventory`. Stock itself moves with the purchases
//! that hold it (`purchases.rs`).

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;

use super::codec::{from_item, to_item};
use super::errors::classify;
use super::{DynamoStore, ID};
use crate::domain::ProductId;
use crate::domain::purchase::Product;
use crate::ports::store::{Inventory, StoreError};

#[async_trait]
impl Inventory for DynamoStore {
    async fn get_products(&self, ids: &[ProductId]) -> Result<Vec<Product>, StoreError> {
        let ids: Vec<String> = ids.iter().map(|id| id.as_str().to_owned()).collect();
        self.batch_get(&self.tables.products, ID, &ids)
            .await?
            .iter()
            .map(|item| from_item(item, &[]))
            .collect()
    }

    async fn add_product_if_absent(&self, product: &Product) -> Result<(), StoreError> {
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
}
