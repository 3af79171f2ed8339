//! The idempotency table: `IdempotencyStore`.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use chrono::{DateTime, Utc};

use super::codec::{from_item, idempotency_key, n, now_seconds, to_item};
use super::errors::classify;
use super::{
    DynamoStore, EXPIRES_AT, FINGERPRINT, IDEMPOTENCY_KEY, IN_FLIGHT, MAX_STORE_ATTEMPTS, RESPONSE,
};
use crate::ports::store::{Claim, Completion, IdempotencyRecord, IdempotencyStore, StoreError};

/// A record a claim may take over, keeping its `resourceId`.
enum Takeover {
    /// Released (no final answer) by a request with the same fingerprint.
    Released,
    /// Still marked in flight but expired: the same request's attempt died.
    Abandoned,
}

/// Records a request's final answer on its key: alone (`complete`), or in
/// the transaction that creates a purchase (`create_purchase`).
pub(super) const COMPLETE: &str =
    "SET #response = :response, #expiresAt = :expiresAt, #inFlight = :false";
/// A live record holds the key. An expired one is absent, as TTL may not
/// have deleted it yet.
pub(super) const KEY_IS_HELD: &str = "attribute_exists(#key) AND #expiresAt > :now";

/// The attribute names and values an update expression uses.
pub(super) struct ExpressionAttributes {
    pub(super) names: HashMap<String, String>,
    pub(super) values: HashMap<String, AttributeValue>,
}

/// The names and values [`COMPLETE`] and [`KEY_IS_HELD`] use.
pub(super) fn completion_attributes(
    completion: &Completion,
) -> Result<ExpressionAttributes, StoreError> {
    let names = HashMap::from([
        ("#key".to_owned(), IDEMPOTENCY_KEY.to_owned()),
        ("#expiresAt".to_owned(), EXPIRES_AT.to_owned()),
        ("#response".to_owned(), RESPONSE.to_owned()),
        ("#inFlight".to_owned(), IN_FLIGHT.to_owned()),
    ]);
    let values = HashMap::from([
        (":now".to_owned(), n(now_seconds())),
        (":false".to_owned(), AttributeValue::Bool(false)),
        (
            ":response".to_owned(),
            AttributeValue::M(to_item(&completion.response)?),
        ),
        (
            ":expiresAt".to_owned(),
            n(completion.expires_at.timestamp()),
        ),
    ]);
    Ok(ExpressionAttributes { names, values })
}

impl DynamoStore {
    /// Takes over a record of the same request (see [`Takeover`]), keeping
    /// its `resourceId`. `None` if it is no longer such a record.
    async fn take_over(
        &self,
        record: &IdempotencyRecord,
        kind: Takeover,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let condition = match kind {
            Takeover::Released => {
                "#inFlight = :false AND attribute_not_exists(#response) \
                 AND #fingerprint = :fingerprint AND #expiresAt > :now"
            }
            Takeover::Abandoned => {
                "#inFlight = :true AND attribute_not_exists(#response) \
                 AND #fingerprint = :fingerprint AND #expiresAt <= :now"
            }
        };
        let mut request = self
            .client
            .update_item()
            .table_name(&self.tables.idempotency)
            .set_key(Some(idempotency_key(&record.key)))
            .update_expression("SET #inFlight = :true, #expiresAt = :expiresAt")
            .condition_expression(condition)
            .expression_attribute_names("#inFlight", IN_FLIGHT)
            .expression_attribute_names("#expiresAt", EXPIRES_AT)
            .expression_attribute_names("#response", RESPONSE)
            .expression_attribute_names("#fingerprint", FINGERPRINT)
            .expression_attribute_values(":true", AttributeValue::Bool(true));
        if let Takeover::Released = kind {
            // DynamoDB refuses values the expressions do not use.
            request = request.expression_attribute_values(":false", AttributeValue::Bool(false));
        }
        let result = request
            .expression_attribute_values(
                ":fingerprint",
                AttributeValue::S(record.fingerprint.clone()),
            )
            .expression_attribute_values(":expiresAt", n(record.expires_at.timestamp()))
            .expression_attribute_values(":now", n(now_seconds()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => match output.attributes() {
                Some(item) => Ok(Some(from_item(item, &[])?)),
                None => Ok(None),
            },
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(classify(e)),
        }
    }

    /// The record stored under `key`, expired or not.
    async fn stored_record(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        match self
            .get_item(&self.tables.idempotency, idempotency_key(key))
            .await?
        {
            Some(item) => Ok(Some(from_item(&item, &[])?)),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl IdempotencyStore for DynamoStore {
    async fn claim(&self, record: &IdempotencyRecord) -> Result<Claim, StoreError> {
        let table = &self.tables.idempotency;
        for _ in 0..MAX_STORE_ATTEMPTS {
            // An expired record may still be stored (TTL deletes lazily): it
            // no longer holds the key, so the condition lets it be replaced —
            // unless it is the same request's attempt that died in flight,
            // whose resource the claim must continue with.
            let result = self
                .client
                .put_item()
                .table_name(table)
                .set_item(Some(to_item(record)?))
                .condition_expression(
                    "attribute_not_exists(#key) OR (#expiresAt <= :now \
                     AND NOT (#inFlight = :true AND #fingerprint = :fingerprint))",
                )
                .expression_attribute_names("#key", IDEMPOTENCY_KEY)
                .expression_attribute_names("#expiresAt", EXPIRES_AT)
                .expression_attribute_names("#inFlight", IN_FLIGHT)
                .expression_attribute_names("#fingerprint", FINGERPRINT)
                .expression_attribute_values(":now", n(now_seconds()))
                .expression_attribute_values(":true", AttributeValue::Bool(true))
                .expression_attribute_values(
                    ":fingerprint",
                    AttributeValue::S(record.fingerprint.clone()),
                )
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            let existing = match result {
                Ok(_) => return Ok(Claim::Claimed(record.clone())),
                Err(e) => match e.as_service_error() {
                    Some(PutItemError::ConditionalCheckFailedException(failed)) => {
                        match failed.item() {
                            Some(item) => Some(from_item::<IdempotencyRecord>(item, &[])?),
                            None => self.stored_record(&record.key).await?,
                        }
                    }
                    _ => return Err(classify(e)),
                },
            };
            // None: the holder was deleted in between; claim again.
            let Some(existing) = existing else { continue };
            let same_request =
                existing.fingerprint == record.fingerprint && existing.response.is_none();
            let expired = existing.expires_at.timestamp() <= now_seconds();
            let takeover = match (same_request, existing.in_flight, expired) {
                (true, false, false) => Some(Takeover::Released),
                (true, true, true) => Some(Takeover::Abandoned),
                _ => None,
            };
            if let Some(kind) = takeover {
                match self.take_over(record, kind).await? {
                    Some(claimed) => return Ok(Claim::Claimed(claimed)),
                    None => continue, // changed meanwhile: look again
                }
            }
            if expired {
                continue; // expired between the put and now: claim again
            }
            return Ok(Claim::Taken(existing));
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
        Ok((record.expires_at > Utc::now()).then_some(record))
    }

    async fn complete(&self, completion: &Completion) -> Result<(), StoreError> {
        let ExpressionAttributes { names, values } = completion_attributes(completion)?;
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.idempotency)
            .set_key(Some(idempotency_key(&completion.key)))
            .update_expression(COMPLETE)
            .condition_expression(KEY_IS_HELD)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
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
                Err(StoreError::NotFound(format!(
                    "idempotency key {}",
                    completion.key
                )))
            }
            Err(e) => Err(classify(e)),
        }
    }

    async fn release(&self, key: &str, expires_at: DateTime<Utc>) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.idempotency)
            .set_key(Some(idempotency_key(key)))
            .update_expression("SET #inFlight = :false, #expiresAt = :expiresAt REMOVE #response")
            // An expired record is absent, as TTL may not have deleted it
            // yet: releasing it must not bring it back for another day.
            .condition_expression("attribute_exists(#key) AND #expiresAt > :now")
            .expression_attribute_names("#key", IDEMPOTENCY_KEY)
            .expression_attribute_names("#expiresAt", EXPIRES_AT)
            .expression_attribute_names("#response", RESPONSE)
            .expression_attribute_names("#inFlight", IN_FLIGHT)
            .expression_attribute_values(":now", n(now_seconds()))
            .expression_attribute_values(":false", AttributeValue::Bool(false))
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
                Ok(()) // nothing (live) to release
            }
            Err(e) => Err(classify(e)),
        }
    }
}
