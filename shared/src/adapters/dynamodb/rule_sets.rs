//! The rule-sets table: `RuleSetStore`.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;

use super::codec::{from_item, n, rule_set_key, to_item};
use super::errors::classify;
use super::{DynamoStore, RULE_SET_NAME, VERSION};
use crate::ports::store::{RuleSetRecord, RuleSetStore, StoreError};

#[async_trait]
impl RuleSetStore for DynamoStore {
    async fn create_rule_set(&self, set: &RuleSetRecord) -> Result<(), StoreError> {
        self.put_new(
            &self.tables.rule_sets,
            to_item(set)?,
            RULE_SET_NAME,
            &format!("rule set {}", set.name),
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
                        Err(StoreError::NotFound(format!("rule set {}", set.name)))
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
