//! aws-local creates the tables from the template; tests and local mode on
//! DynamoDB create them with `DynamoStore::create_tables`. Both must be the
//! same tables, or one of them tests something that is not deployed.

mod common;

use std::collections::BTreeMap;

use aws_local::template::{Deployment, Template};
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput;
use shared::adapters::dynamodb::{DynamoStore, DynamoTables};

fn client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
            .endpoint_url(endpoint)
            .build(),
    )
}

/// What makes a table the table the code expects: keys, attribute types,
/// indexes (keys and projection), billing, time to live.
async fn shape(client: &aws_sdk_dynamodb::Client, name: &str) -> String {
    let DescribeTableOutput { table, .. } = client
        .describe_table()
        .table_name(name)
        .send()
        .await
        .unwrap();
    let table = table.unwrap();
    let mut attributes: Vec<String> = table
        .attribute_definitions()
        .iter()
        .map(|a| format!("{}:{}", a.attribute_name(), a.attribute_type().as_str()))
        .collect();
    attributes.sort();
    let keys: Vec<String> = table
        .key_schema()
        .iter()
        .map(|k| format!("{}:{}", k.attribute_name(), k.key_type().as_str()))
        .collect();
    let mut indexes: Vec<String> = table
        .global_secondary_indexes()
        .iter()
        .map(|index| {
            let keys: Vec<String> = index
                .key_schema()
                .iter()
                .map(|k| format!("{}:{}", k.attribute_name(), k.key_type().as_str()))
                .collect();
            format!(
                "{} {:?} {:?}",
                index.index_name().unwrap_or_default(),
                keys,
                index.projection().and_then(|p| p.projection_type())
            )
        })
        .collect();
    indexes.sort();
    let billing = table
        .billing_mode_summary()
        .and_then(|b| b.billing_mode())
        .map(|b| b.as_str().to_owned());
    let ttl = client
        .describe_time_to_live()
        .table_name(name)
        .send()
        .await
        .unwrap()
        .time_to_live_description()
        .filter(|d| {
            d.time_to_live_status()
                .is_some_and(|s| s.as_str() == "ENABLED")
        })
        .and_then(|d| d.attribute_name().map(str::to_owned));
    format!(
        "keys {keys:?} attributes {attributes:?} indexes {indexes:?} billing {billing:?} ttl {ttl:?}"
    )
}

#[tokio::test]
async fn the_templates_tables_are_the_ones_the_store_creates() {
    let Some(endpoint) = common::moto("the_templates_tables_are_the_ones_the_store_creates") else {
        return;
    };
    let client = client(&endpoint);
    let stack = format!("t{:08x}", fastrand::u32(..));
    let template = Template::load(
        &common::template_file(),
        &Deployment {
            stack_name: stack.clone(),
            region: "us-east-1".into(),
            account_id: aws_local::ACCOUNT_ID.into(),
            parameters: BTreeMap::from([
                ("JwtIssuer".into(), "i".into()),
                ("JwksUrl".into(), String::new()),
                ("PaymentUrl".into(), "simulator".into()),
                ("ProvisioningUrl".into(), "simulator".into()),
            ]),
        },
    )
    .unwrap();
    aws_local::tables::create(&client, &template.tables)
        .await
        .unwrap();
    // Twice is fine: existing tables are kept.
    aws_local::tables::create(&client, &template.tables)
        .await
        .unwrap();

    let store_tables = DynamoTables {
        purchases: format!("{stack}-store-purchases"),
        products: format!("{stack}-store-products"),
        idempotency: format!("{stack}-store-idempotency"),
        rule_sets: format!("{stack}-store-rule-sets"),
    };
    DynamoStore::new(client.clone(), store_tables.clone())
        .create_tables()
        .await
        .unwrap();

    for (logical_id, store_name) in [
        ("PurchasesTable", &store_tables.purchases),
        ("ProductsTable", &store_tables.products),
        ("IdempotencyTable", &store_tables.idempotency),
        ("RuleSetsTable", &store_tables.rule_sets),
    ] {
        let from_template = shape(&client, &template.table(logical_id).unwrap().name).await;
        let from_store = shape(&client, store_name).await;
        assert_eq!(from_template, from_store, "{logical_id}");
    }
    // And the purchases table is the one with the three indexes.
    let purchases = shape(&client, &template.table("PurchasesTable").unwrap().name).await;
    for index in ["byCustomer", "allPurchases", "unfinishedPurchases"] {
        assert!(purchases.contains(index), "{purchases}");
    }
}
