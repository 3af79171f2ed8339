//! Documents: serde JSON ⇄ DynamoDB attribute values, field for field, and
//! the items and keys of each table.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{
    ID, IDEMPOTENCY_KEY, Item, PURCHASE_ID, PURCHASE_RECORD, RECORD_TYPE, RULE_SET_NAME,
    UNFINISHED, UNFINISHED_RECORD,
};
use crate::domain::purchase::Purchase;
use crate::ports::store::StoreError;

pub(super) fn internal(error: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(error.to_string())
}

pub(super) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(super) fn n(value: impl std::fmt::Display) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// A struct as a DynamoDB item: one attribute per top-level JSON field.
pub(super) fn to_item<T: Serialize>(value: &T) -> Result<Item, StoreError> {
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
pub(super) fn from_item<T: DeserializeOwned>(item: &Item, skip: &[&str]) -> Result<T, StoreError> {
    let fields = item
        .iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .map(|(k, v)| Ok((k.clone(), from_attribute(v)?)))
        .collect::<Result<serde_json::Map<_, _>, StoreError>>()?;
    serde_json::from_value(Value::Object(fields)).map_err(internal)
}

pub(super) fn number_attribute(item: &Item, name: &str) -> Option<i64> {
    match item.get(name) {
        Some(AttributeValue::N(number)) => number.parse().ok(),
        _ => None,
    }
}

/// A purchase as its item: the document, plus the index attributes that
/// only storage knows (`recordType` always; `unfinished` while not final).
pub(super) fn purchase_item(purchase: &Purchase) -> Result<Item, StoreError> {
    let mut item = to_item(purchase)?;
    item.insert(RECORD_TYPE.to_owned(), s(PURCHASE_RECORD));
    if !purchase.is_final() {
        item.insert(UNFINISHED.to_owned(), s(UNFINISHED_RECORD));
    }
    Ok(item)
}

pub(super) fn purchase_from_item(item: &Item) -> Result<Purchase, StoreError> {
    from_item(item, &[RECORD_TYPE, UNFINISHED])
}

pub(super) fn purchase_key(purchase_id: &str) -> Item {
    HashMap::from([(PURCHASE_ID.to_owned(), s(purchase_id))])
}

pub(super) fn product_key(product_id: &str) -> Item {
    HashMap::from([(ID.to_owned(), s(product_id))])
}

pub(super) fn idempotency_key(key: &str) -> Item {
    HashMap::from([(IDEMPOTENCY_KEY.to_owned(), s(key))])
}

pub(super) fn rule_set_key(name: &str) -> Item {
    HashMap::from([(RULE_SET_NAME.to_owned(), s(name))])
}

pub(super) fn now_seconds() -> i64 {
    chrono::Utc::now().timestamp()
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
}
