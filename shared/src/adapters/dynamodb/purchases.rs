//! The purchases table: `PurchaseStore`.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use chrono::{DateTime, Utc};

use super::codec::{
    idempotency_key, internal, n, number_attribute, product_key, purchase_from_item, purchase_item,
    purchase_key, s,
};
use super::errors::{
    TransactionFailure, backoff, classify, condition_failed, is_transient_reason,
    transaction_failure,
};
use super::idempotency::{COMPLETE, ExpressionAttributes, KEY_IS_HELD, completion_attributes};
use super::{
    ALL_PURCHASES_INDEX, BY_CUSTOMER_INDEX, CUSTOMER_ID, DynamoStore, ID, Item, MAX_STORE_ATTEMPTS,
    MAX_TRANSACTION_ITEMS, PURCHASE_ID, PURCHASE_RECORD, RECORD_TYPE, STOCK, UNFINISHED,
    UNFINISHED_INDEX, UNFINISHED_RECORD, VERSION,
};
use crate::domain::lifecycle::StockChange;
use crate::domain::purchase::Purchase;
use crate::domain::{ProductId, PurchaseId};
use crate::ports::store::{Completion, PurchasePage, PurchaseQuery, PurchaseStore, StoreError};

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

/// The lines with one entry per product, quantities summed: a transaction
/// may touch each item only once.
fn merge_lines(lines: &[(ProductId, u32)]) -> Vec<(ProductId, u32)> {
    let mut merged: Vec<(ProductId, u32)> = Vec::with_capacity(lines.len());
    for (product_id, quantity) in lines {
        match merged.iter_mut().find(|(id, _)| id == product_id) {
            Some((_, total)) => *total = total.saturating_add(*quantity),
            None => merged.push((product_id.clone(), *quantity)),
        }
    }
    merged
}

/// One action of a stock change: take (only if enough is left) or give back
/// (only to a product that still exists: `ADD` would create a bare item).
fn stock_action(
    table: &str,
    product_id: &ProductId,
    quantity: u32,
    take: bool,
) -> Result<TransactWriteItem, StoreError> {
    let update = Update::builder()
        .table_name(table)
        .set_key(Some(product_key(product_id.as_str())))
        .expression_attribute_names("#stock", STOCK)
        .expression_attribute_values(":quantity", n(quantity))
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
    let update = if take {
        // Fails on a missing product too: a missing attribute compares false.
        update
            .update_expression("SET #stock = #stock - :quantity")
            .condition_expression("#stock >= :quantity")
    } else {
        update
            .update_expression("ADD #stock :quantity")
            .condition_expression("attribute_exists(#id)")
            .expression_attribute_names("#id", ID)
    };
    Ok(TransactWriteItem::builder()
        .update(update.build().map_err(internal)?)
        .build())
}

impl DynamoStore {
    /// The purchase alone: one conditional `PutItem`.
    async fn put_purchase(&self, purchase: &Purchase) -> Result<(), StoreError> {
        let id = purchase.purchase_id.as_str();
        self.put_next_version(
            &self.tables.purchases,
            purchase_item(purchase)?,
            PURCHASE_ID,
            id,
            purchase.version,
            &format!("purchase {id}"),
        )
        .await
    }

    /// The purchase and its stock: one `TransactWriteItems`, all or nothing.
    async fn put_purchase_with_stock(
        &self,
        purchase: &Purchase,
        lines: &[(ProductId, u32)],
        take: bool,
    ) -> Result<(), StoreError> {
        let mut lines = merge_lines(lines);
        if lines.len() + 1 > MAX_TRANSACTION_ITEMS {
            return Err(StoreError::Internal(format!(
                "{} products exceed one transaction ({MAX_TRANSACTION_ITEMS} actions)",
                lines.len()
            )));
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let put = Put::builder()
                .table_name(&self.tables.purchases)
                .set_item(Some(purchase_item(purchase)?))
                .condition_expression("attribute_exists(#id) AND #version = :expected")
                .expression_attribute_names("#id", PURCHASE_ID)
                .expression_attribute_names("#version", VERSION)
                .expression_attribute_values(":expected", n(purchase.version.saturating_sub(1)))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .build()
                .map_err(internal)?;
            let mut actions = vec![TransactWriteItem::builder().put(put).build()];
            for (product_id, quantity) in &lines {
                actions.push(stock_action(
                    &self.tables.products,
                    product_id,
                    *quantity,
                    take,
                )?);
            }
            // The SDK gives the request a ClientRequestToken, so its own
            // retries of a transaction that did commit are not applied twice.
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(actions))
                .send()
                .await;
            let reasons = match result {
                Ok(_) => return Ok(()),
                Err(e) => match transaction_failure(e) {
                    TransactionFailure::Cancelled(reasons) => reasons,
                    TransactionFailure::Other(error) => return Err(error),
                },
            };
            if let Some(first) = reasons.first()
                && condition_failed(first)
            {
                let id = purchase.purchase_id.as_str();
                return Err(self
                    .conflict_or_missing(
                        &self.tables.purchases,
                        PURCHASE_ID,
                        id,
                        first.item().is_some_and(|old| !old.is_empty()),
                        &format!("purchase {id}"),
                    )
                    .await?);
            }
            let short: Vec<(usize, Option<i64>)> = reasons
                .iter()
                .skip(1)
                .enumerate()
                .filter(|(_, reason)| condition_failed(reason))
                .map(|(i, reason)| {
                    (
                        i,
                        reason.item().and_then(|old| number_attribute(old, STOCK)),
                    )
                })
                .collect();
            if take && let Some((index, available)) = short.first() {
                let (product_id, quantity) = &lines[*index];
                return Err(StoreError::OutOfStock {
                    product_id: product_id.clone(),
                    requested: *quantity,
                    available: available.unwrap_or(0),
                });
            }
            let transient = reasons.iter().any(|r| is_transient_reason(r.code()));
            if (!short.is_empty() || transient) && attempt < MAX_STORE_ATTEMPTS {
                // Giving back to a product removed from the catalog: there is
                // nothing to give back to, so leave it out.
                let gone: Vec<usize> = short.iter().map(|(i, _)| *i).collect();
                lines = lines
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| !gone.contains(i))
                    .map(|(_, line)| line)
                    .collect();
                if transient {
                    backoff(attempt).await;
                }
                if lines.is_empty() {
                    return self.put_purchase(purchase).await;
                }
                continue;
            }
            let codes: Vec<&str> = reasons.iter().map(|r| r.code().unwrap_or("?")).collect();
            return Err(if transient {
                StoreError::Unavailable(format!("purchase write cancelled: {codes:?}"))
            } else {
                StoreError::Internal(format!("purchase write cancelled: {codes:?}"))
            });
        }
    }

    /// A new purchase alone: one conditional `PutItem`.
    async fn put_new_purchase(&self, purchase: &Purchase) -> Result<(), StoreError> {
        self.put_new(
            &self.tables.purchases,
            purchase_item(purchase)?,
            PURCHASE_ID,
            &format!("purchase {}", purchase.purchase_id),
        )
        .await
    }

    /// A new purchase and the completion of the key that asked for it: one
    /// `TransactWriteItems`, so the create costs one round trip and its
    /// answer is recorded exactly when the purchase exists.
    async fn put_new_purchase_completing(
        &self,
        purchase: &Purchase,
        completion: &Completion,
    ) -> Result<bool, StoreError> {
        let id = purchase.purchase_id.as_str();
        let ExpressionAttributes { names, values } = completion_attributes(completion)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let put = Put::builder()
                .table_name(&self.tables.purchases)
                .set_item(Some(purchase_item(purchase)?))
                .condition_expression("attribute_not_exists(#id)")
                .expression_attribute_names("#id", PURCHASE_ID)
                .build()
                .map_err(internal)?;
            let complete = Update::builder()
                .table_name(&self.tables.idempotency)
                .set_key(Some(idempotency_key(&completion.key)))
                .update_expression(COMPLETE)
                .condition_expression(KEY_IS_HELD)
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .build()
                .map_err(internal)?;
            let result = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(put).build())
                .transact_items(TransactWriteItem::builder().update(complete).build())
                .send()
                .await;
            let reasons = match result {
                Ok(_) => return Ok(true),
                Err(e) => match transaction_failure(e) {
                    TransactionFailure::Cancelled(reasons) => reasons,
                    TransactionFailure::Other(error) => return Err(error),
                },
            };
            match (reasons.first(), reasons.get(1)) {
                (Some(taken), _) if condition_failed(taken) => {
                    return Err(StoreError::AlreadyExists(format!("purchase {id}")));
                }
                // The key's claim expired meanwhile: the purchase is stored
                // all the same, and the caller completes the key its way.
                (_, Some(not_held)) if condition_failed(not_held) => {
                    return self.put_new_purchase(purchase).await.map(|()| false);
                }
                _ => {}
            }
            let transient = reasons.iter().any(|r| is_transient_reason(r.code()));
            if transient && attempt < MAX_STORE_ATTEMPTS {
                backoff(attempt).await;
                continue;
            }
            let codes: Vec<&str> = reasons.iter().map(|r| r.code().unwrap_or("?")).collect();
            return Err(if transient {
                StoreError::Unavailable(format!("purchase create cancelled: {codes:?}"))
            } else {
                StoreError::Internal(format!("purchase create cancelled: {codes:?}"))
            });
        }
    }

    /// The purchases an index page of keys names, in that order.
    async fn purchases_of_keys(&self, keys: &[Item]) -> Result<Vec<Purchase>, StoreError> {
        let ids: Vec<String> = keys
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
            .collect()
    }
}

#[async_trait]
impl PurchaseStore for DynamoStore {
    async fn create_purchase(
        &self,
        purchase: &Purchase,
        completion: Option<&Completion>,
    ) -> Result<bool, StoreError> {
        match completion {
            Some(completion) => self.put_new_purchase_completing(purchase, completion).await,
            None => self.put_new_purchase(purchase).await.map(|()| false),
        }
    }

    async fn get_purchase(&self, purchase_id: &PurchaseId) -> Result<Option<Purchase>, StoreError> {
        // Consistent read: a workflow step must see the write of the step before.
        self.get_item(&self.tables.purchases, purchase_key(purchase_id.as_str()))
            .await?
            .as_ref()
            .map(purchase_from_item)
            .transpose()
    }

    async fn save_purchase(
        &self,
        purchase: &Purchase,
        stock: &StockChange,
    ) -> Result<(), StoreError> {
        match stock {
            StockChange::None => self.put_purchase(purchase).await,
            StockChange::Take(lines) => self.put_purchase_with_stock(purchase, lines, true).await,
            StockChange::GiveBack(lines) => {
                self.put_purchase_with_stock(purchase, lines, false).await
            }
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
            let output = self
                .client
                .query()
                .table_name(&self.tables.purchases)
                .index_name(index)
                .key_condition_expression("#partition = :partition")
                .expression_attribute_names("#partition", partition)
                .expression_attribute_values(":partition", s(partition_value))
                .scan_index_forward(query.oldest_first)
                .limit(read_size)
                .set_exclusive_start_key(exclusive_start.take())
                .send()
                .await
                .map_err(classify)?;
            // The indexes project keys only (whichever projection a stack
            // has, the items are read from the table): the status filter
            // applies to the items.
            found.extend(
                self.purchases_of_keys(output.items())
                    .await?
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
                Some(last) => Some(page_token(
                    partition,
                    partition_value,
                    last.purchase_id.as_str(),
                )?),
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

    async fn unfinished_purchases(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Purchase>, StoreError> {
        let mut found = Vec::new();
        let mut exclusive_start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.tables.purchases)
                .index_name(UNFINISHED_INDEX)
                .key_condition_expression("#partition = :partition")
                .expression_attribute_names("#partition", UNFINISHED)
                .expression_attribute_values(":partition", s(UNFINISHED_RECORD))
                .scan_index_forward(true)
                .limit(100)
                .set_exclusive_start_key(exclusive_start.take())
                .send()
                .await
                .map_err(classify)?;
            for purchase in self.purchases_of_keys(output.items()).await? {
                // The index is eventually consistent: check the item itself.
                if !purchase.is_final() && purchase.updated_at < before {
                    found.push(purchase);
                    if found.len() == limit {
                        return Ok(found);
                    }
                }
            }
            match output.last_evaluated_key() {
                Some(key) => exclusive_start = Some(key.clone()),
                None => return Ok(found),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(merged, vec![("a".into(), 4), ("b".into(), 2)]);
    }
}
