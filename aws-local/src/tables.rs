//! The template's DynamoDB tables, created as CloudFormation would create
//! them (keys, attribute definitions, global secondary indexes, billing
//! mode, deletion protection, time to live) on a DynamoDB-API endpoint.
//! Point-in-time recovery and encryption settings have no meaning on a
//! local endpoint and are left out. A table that exists already is kept.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ProvisionedThroughput, ScalarAttributeType, TimeToLiveSpecification,
    TimeToLiveStatus,
};
use serde_json::Value;

use crate::template::Table;

const TABLE_ACTIVE_TIMEOUT: Duration = Duration::from_secs(60);

fn field<'a>(value: &'a Value, name: &str, at: &str) -> Result<&'a Value, String> {
    value
        .get(name)
        .ok_or_else(|| format!("{at}: {name} is missing"))
}

fn text<'a>(value: &'a Value, name: &str, at: &str) -> Result<&'a str, String> {
    field(value, name, at)?
        .as_str()
        .ok_or_else(|| format!("{at}: {name} must be a string"))
}

fn list<'a>(value: &'a Value, name: &str, at: &str) -> Result<&'a [Value], String> {
    field(value, name, at)?
        .as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| format!("{at}: {name} must be a list"))
}

fn key_schema(value: &Value, at: &str) -> Result<Vec<KeySchemaElement>, String> {
    list(value, "KeySchema", at)?
        .iter()
        .map(|key| {
            KeySchemaElement::builder()
                .attribute_name(text(key, "AttributeName", at)?)
                .key_type(KeyType::from(text(key, "KeyType", at)?))
                .build()
                .map_err(|e| format!("{at}: {e}"))
        })
        .collect()
}

fn throughput(value: &Value, at: &str) -> Result<Option<ProvisionedThroughput>, String> {
    let Some(throughput) = value.get("ProvisionedThroughput") else {
        return Ok(None);
    };
    let units = |name: &str| {
        field(throughput, name, at)?
            .as_i64()
            .or_else(|| throughput[name].as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| format!("{at}: {name} must be a number"))
    };
    ProvisionedThroughput::builder()
        .read_capacity_units(units("ReadCapacityUnits")?)
        .write_capacity_units(units("WriteCapacityUnits")?)
        .build()
        .map(Some)
        .map_err(|e| format!("{at}: {e}"))
}

/// Creates every table that does not exist yet, waits until all are
/// ACTIVE, and turns time to live on where the template does.
pub async fn create(client: &Client, tables: &[Table]) -> Result<(), String> {
    for table in tables {
        let at = format!("table {} ({})", table.logical_id, table.name);
        let properties = &table.properties;
        if properties.get("LocalSecondaryIndexes").is_some() {
            return Err(format!(
                "{at}: LocalSecondaryIndexes are not supported by aws-local"
            ));
        }
        let mut request = client.create_table().table_name(&table.name);
        for definition in list(properties, "AttributeDefinitions", &at)? {
            request = request.attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(text(definition, "AttributeName", &at)?)
                    .attribute_type(ScalarAttributeType::from(text(
                        definition,
                        "AttributeType",
                        &at,
                    )?))
                    .build()
                    .map_err(|e| format!("{at}: {e}"))?,
            );
        }
        request = request.set_key_schema(Some(key_schema(properties, &at)?));
        let billing = properties
            .get("BillingMode")
            .and_then(Value::as_str)
            .unwrap_or("PROVISIONED");
        request = request
            .billing_mode(BillingMode::from(billing))
            .set_provisioned_throughput(throughput(properties, &at)?);
        for index in properties
            .get("GlobalSecondaryIndexes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = text(index, "IndexName", &at)?;
            let at = format!("{at} index {name}");
            let projection = field(index, "Projection", &at)?;
            let mut built = Projection::builder().projection_type(ProjectionType::from(text(
                projection,
                "ProjectionType",
                &at,
            )?));
            for attribute in projection
                .get("NonKeyAttributes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                built = built.non_key_attributes(attribute);
            }
            request = request.global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(name)
                    .set_key_schema(Some(key_schema(index, &at)?))
                    .projection(built.build())
                    .set_provisioned_throughput(throughput(index, &at)?)
                    .build()
                    .map_err(|e| format!("{at}: {e}"))?,
            );
        }
        if let Some(protected) = properties
            .get("DeletionProtectionEnabled")
            .and_then(Value::as_bool)
        {
            request = request.deletion_protection_enabled(protected);
        }
        match request.send().await {
            Ok(_) => tracing::info!(table = %table.name, "table created"),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(CreateTableError::ResourceInUseException(_))
                ) =>
            {
                tracing::info!(table = %table.name, "table exists; kept as it is");
            }
            Err(e) => return Err(format!("{at}: {}", DisplayErrorContext(&e))),
        }
    }
    for table in tables {
        client
            .wait_until_table_exists()
            .table_name(&table.name)
            .wait(TABLE_ACTIVE_TIMEOUT)
            .await
            .map_err(|e| {
                format!(
                    "table {} not active: {}",
                    table.name,
                    DisplayErrorContext(&e)
                )
            })?;
        let Some(ttl) = table.properties.get("TimeToLiveSpecification") else {
            continue;
        };
        if ttl.get("Enabled").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let attribute = text(ttl, "AttributeName", &table.name)?;
        // Enabling it twice is an error on DynamoDB: look first.
        let current = client
            .describe_time_to_live()
            .table_name(&table.name)
            .send()
            .await
            .map_err(|e| format!("table {}: {}", table.name, DisplayErrorContext(&e)))?;
        let enabled = current
            .time_to_live_description()
            .and_then(|d| d.time_to_live_status())
            .is_some_and(|s| matches!(s, TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling));
        if !enabled {
            client
                .update_time_to_live()
                .table_name(&table.name)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .attribute_name(attribute)
                        .enabled(true)
                        .build()
                        .map_err(|e| format!("table {}: {e}", table.name))?,
                )
                .send()
                .await
                .map_err(|e| format!("table {}: {}", table.name, DisplayErrorContext(&e)))?;
        }
    }
    Ok(())
}
