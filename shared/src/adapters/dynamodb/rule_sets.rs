//! The rule-sets table: `RuleSetStore`.

use async_trait::async_trait;

use super::codec::{from_item, rule_set_key, to_item};
use super::errors::classify;
use super::{DynamoStore, RULE_SET_NAME};
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
        self.put_next_version(
            &self.tables.rule_sets,
            to_item(set)?,
            RULE_SET_NAME,
            &set.name,
            set.version,
            &format!("rule set {}", set.name),
        )
        .await
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
