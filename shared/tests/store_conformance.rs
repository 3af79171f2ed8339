//! One suite of store behaviour, run against both stores: the embedded redb
//! store (a fresh file per test) and the DynamoDB store against the
//! DynamoDB-API server at `DYNAMODB_TEST_ENDPOINT` (fresh tables per test).
//!
//! `scripts/test.sh` starts that server (moto) and sets the variable. Without
//! it the DynamoDB half prints a notice and passes, except in CI (`CI=true`),
//! where a missing server fails every DynamoDB test instead of skipping it.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use shared::dynamodb::{DynamoStore, DynamoTables};
use shared::embedded::EmbeddedStore;
use shared::model::{
    LineStatus, PaymentDetails, PaymentStatus, Product, ProductKind, Purchase, PurchaseLine,
    PurchaseStatus, ShippingAddress, ShippingStatus, TimelineEntry,
};
use shared::rules::{OnViolation, RuleOutcome, RuleResult};
use shared::store::{
    IdempotencyRecord, IdempotencyStore, Inventory, PurchaseQuery, PurchaseStore, RuleSetRecord,
    RuleSetStore, StoreError, StoredResponse,
};

/// The three ports of one store, plus whatever must live as long as it.
struct Stores {
    purchases: Arc<dyn PurchaseStore>,
    inventory: Arc<dyn Inventory>,
    idempotency: Arc<dyn IdempotencyStore>,
    rule_sets: Arc<dyn RuleSetStore>,
    _dir: Option<TempDir>,
}

/// A directory under cargo's per-test scratch space, removed afterwards.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn embedded_stores() -> Stores {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("store-{}", uuid::Uuid::now_v7()));
    let store = Arc::new(EmbeddedStore::open(&dir).expect("open embedded store"));
    Stores {
        purchases: store.clone(),
        inventory: store.clone(),
        idempotency: store.clone(),
        rule_sets: store,
        _dir: Some(TempDir(dir)),
    }
}

/// The test server's endpoint; `None` (after a notice) when it is not set
/// outside CI. In CI a missing server fails the test instead.
fn test_endpoint(test: &str) -> Option<String> {
    let endpoint = std::env::var("DYNAMODB_TEST_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty());
    if endpoint.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "DYNAMODB_TEST_ENDPOINT is not set: in CI the DynamoDB tests must run (scripts/test.sh starts moto)"
            );
        }
        eprintln!(
            "note: {test}: DYNAMODB_TEST_ENDPOINT is not set, skipping the DynamoDB run (scripts/test.sh starts moto)"
        );
    }
    endpoint
}

/// The DynamoDB store on fresh tables named after the test.
async fn dynamodb_stores(test: &str) -> Option<Stores> {
    let store = dynamo_store(&test_endpoint(test)?, test);
    store.create_tables().await.expect("create tables");
    let store = Arc::new(store);
    Some(Stores {
        purchases: store.clone(),
        inventory: store.clone(),
        idempotency: store.clone(),
        rule_sets: store,
        _dir: None,
    })
}

/// A client with fake credentials and the production retry settings.
fn dynamo_store(endpoint: &str, test: &str) -> DynamoStore {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "test",
            "test",
            None,
            None,
            "store-conformance",
        ))
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::standard().with_max_attempts(3))
        .endpoint_url(endpoint)
        .build();
    let unique = format!("{test}-{}", uuid::Uuid::now_v7().simple());
    let tables = DynamoTables {
        purchases: format!("{unique}-purchases"),
        products: format!("{unique}-products"),
        idempotency: format!("{unique}-idempotency"),
        rule_sets: format!("{unique}-rule-sets"),
    };
    DynamoStore::new(aws_sdk_dynamodb::Client::from_conf(config), tables)
}

/// Each behaviour is written once, below, and run against both stores.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::embedded_stores()).await;
                }
            )*
        }
        mod dynamodb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(stores) = super::dynamodb_stores(stringify!($name)).await {
                        super::$name(stores).await;
                    }
                }
            )*
        }
    };
}

conformance!(
    create_then_get_returns_the_whole_purchase,
    get_of_an_unknown_id_is_none,
    creating_a_taken_id_is_already_exists_and_keeps_the_original,
    update_bumps_the_version_and_a_stale_update_conflicts,
    update_of_a_missing_purchase_is_not_found,
    add_product_if_absent_never_resets_stock,
    get_products_returns_only_existing_products,
    reservation_takes_stock_for_every_line,
    reservation_is_all_or_nothing_across_lines,
    reserving_an_unknown_product_is_out_of_stock,
    reserving_twice_for_one_purchase_holds_stock_once,
    release_restores_stock_once,
    concurrent_reservations_of_the_last_unit_have_one_winner,
    listing_is_newest_first_and_pages_without_gaps_or_repeats,
    listing_filters_by_status_across_pages,
    listing_is_isolated_per_customer,
    listing_without_customer_covers_every_customer,
    idempotency_key_is_claimed_once,
    idempotency_complete_stores_the_response,
    idempotency_record_expires,
    idempotency_remove_frees_the_key,
    rule_sets_are_created_once_replaced_by_version_and_deleted,
);

// ---------------------------------------------------------------------------
// Fixtures.

fn purchase(customer: &str, status: PurchaseStatus) -> Purchase {
    let now = Utc::now();
    Purchase {
        purchase_id: uuid::Uuid::now_v7().to_string(),
        customer_id: customer.to_owned(),
        status,
        products: vec![
            PurchaseLine {
                id: "book".into(),
                quantity: 2,
                status: LineStatus::Pending,
                unit_price: 1250,
                kind: ProductKind::Physical,
            },
            PurchaseLine {
                id: "ebook".into(),
                quantity: 1,
                status: LineStatus::Reserved,
                unit_price: 999,
                kind: ProductKind::Digital,
            },
        ],
        currency: "EUR".into(),
        total_amount: 3499,
        payment_details: PaymentDetails {
            method: "card".into(),
            transaction_id: "tx-1".into(),
        },
        payment_status: PaymentStatus::Pending,
        payment_reference: None,
        shipping_address: ShippingAddress {
            name: "Zoë Ñandú".into(),
            address: "1 \"Quoted\" Street".into(),
            city: "Zürich".into(),
            country: "CH".into(),
            postal_code: "8001".into(),
        },
        shipping_status: ShippingStatus::Pending,
        failure_reason: None,
        review_token: None,
        held_from: None,
        timeline: vec![TimelineEntry {
            step: "create".into(),
            outcome: "ok".into(),
            at: now,
            detail: Some(String::new()),
        }],
        rule_results: vec![RuleResult {
            rule_id: "max-amount".into(),
            parameters: serde_json::json!({"max": 50000, "ratio": 0.5, "tags": ["a", ""], "none": null}),
            outcome: RuleOutcome::Passed,
            on_violation: OnViolation::Hold,
            reason: "under the limit".into(),
            evaluated_at: now,
            evaluated_by: "system".into(),
        }],
        version: 1,
        created_at: now,
        updated_at: now,
    }
}

fn product(id: &str, stock: i64) -> Product {
    Product {
        id: id.to_owned(),
        name: format!("Product {id}"),
        unit_price: 1000,
        currency: "EUR".into(),
        stock,
        kind: ProductKind::Physical,
    }
}

async fn seed(stores: &Stores, products: &[(&str, i64)]) {
    for (id, stock) in products {
        stores
            .inventory
            .add_product_if_absent(&product(id, *stock))
            .await
            .unwrap();
    }
}

async fn stock(stores: &Stores, id: &str) -> i64 {
    let found = stores
        .inventory
        .get_products(&[id.to_owned()])
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "product {id} should exist");
    found[0].stock
}

fn lines(items: &[(&str, u32)]) -> Vec<(String, u32)> {
    items.iter().map(|(id, q)| ((*id).to_owned(), *q)).collect()
}

/// A whole second, so the record survives `expiresAt`'s epoch seconds unchanged.
fn at(offset: Duration) -> DateTime<Utc> {
    let when = Utc::now() + offset;
    DateTime::from_timestamp(when.timestamp(), 0).unwrap()
}

fn record(key: &str, fingerprint: &str, expires_at: DateTime<Utc>) -> IdempotencyRecord {
    IdempotencyRecord {
        key: key.to_owned(),
        fingerprint: fingerprint.to_owned(),
        response: None,
        expires_at,
    }
}

async fn create_all(stores: &Stores, purchases: &[Purchase]) {
    for p in purchases {
        stores.purchases.create_purchase(p).await.unwrap();
    }
}

/// Every page of a listing, following tokens until the last page.
async fn all_pages(stores: &Stores, mut query: PurchaseQuery) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    loop {
        let page = stores.purchases.list_purchases(&query).await.unwrap();
        assert!(
            page.purchases.len() <= query.limit,
            "a page never exceeds the limit"
        );
        pages.push(
            page.purchases
                .iter()
                .map(|p| p.purchase_id.clone())
                .collect(),
        );
        match page.next_token {
            Some(token) => query.next_token = Some(token),
            None => return pages,
        }
        assert!(pages.len() < 100, "pagination does not terminate");
    }
}

fn newest_first(purchases: &[&Purchase]) -> Vec<String> {
    purchases
        .iter()
        .rev()
        .map(|p| p.purchase_id.clone())
        .collect()
}

// ---------------------------------------------------------------------------
// Purchases.

async fn create_then_get_returns_the_whole_purchase(stores: Stores) {
    let p = purchase("alice", PurchaseStatus::Pending);
    stores.purchases.create_purchase(&p).await.unwrap();
    let got = stores.purchases.get_purchase(&p.purchase_id).await.unwrap();
    assert_eq!(got, Some(p), "every field survives the round trip");
}

async fn get_of_an_unknown_id_is_none(stores: Stores) {
    let got = stores
        .purchases
        .get_purchase("no-such-purchase")
        .await
        .unwrap();
    assert_eq!(got, None);
}

async fn creating_a_taken_id_is_already_exists_and_keeps_the_original(stores: Stores) {
    let original = purchase("alice", PurchaseStatus::Pending);
    stores.purchases.create_purchase(&original).await.unwrap();
    let mut impostor = purchase("mallory", PurchaseStatus::Completed);
    impostor.purchase_id = original.purchase_id.clone();
    let error = stores
        .purchases
        .create_purchase(&impostor)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::AlreadyExists(id) if *id == original.purchase_id),
        "{error:?}"
    );
    let stored = stores
        .purchases
        .get_purchase(&original.purchase_id)
        .await
        .unwrap();
    assert_eq!(stored, Some(original));
}

async fn update_bumps_the_version_and_a_stale_update_conflicts(stores: Stores) {
    let p = purchase("alice", PurchaseStatus::Pending);
    stores.purchases.create_purchase(&p).await.unwrap();

    // Two writers read version 1; the first one's write wins.
    let mut first = p.clone();
    let mut second = p.clone();
    first.status = PurchaseStatus::Reserved;
    stores.purchases.update_purchase(&mut first).await.unwrap();
    assert_eq!(first.version, 2);
    assert_eq!(
        stores
            .purchases
            .get_purchase(&p.purchase_id)
            .await
            .unwrap()
            .as_ref(),
        Some(&first)
    );

    second.status = PurchaseStatus::Cancelled;
    let error = stores
        .purchases
        .update_purchase(&mut second)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::VersionConflict), "{error:?}");
    assert_eq!(
        second.version, 1,
        "a failed update leaves the caller's copy as it was"
    );
    let stored = stores
        .purchases
        .get_purchase(&p.purchase_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.status,
        PurchaseStatus::Reserved,
        "the lost write changed nothing"
    );
    assert_eq!(stored.version, 2);

    // Re-read and retry: the usual way out of a conflict.
    let mut retry = stored;
    retry.status = PurchaseStatus::Cancelled;
    stores.purchases.update_purchase(&mut retry).await.unwrap();
    assert_eq!(retry.version, 3);
}

async fn update_of_a_missing_purchase_is_not_found(stores: Stores) {
    let mut p = purchase("alice", PurchaseStatus::Pending);
    let error = stores.purchases.update_purchase(&mut p).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::NotFound(id) if *id == p.purchase_id),
        "{error:?}"
    );
    assert_eq!(
        stores.purchases.get_purchase(&p.purchase_id).await.unwrap(),
        None,
        "no purchase was created"
    );
}

// ---------------------------------------------------------------------------
// Inventory.

async fn add_product_if_absent_never_resets_stock(stores: Stores) {
    seed(&stores, &[("book", 5)]).await;
    stores
        .inventory
        .reserve_stock("p-1", &lines(&[("book", 2)]))
        .await
        .unwrap();
    // Re-seeding the catalog at start-up.
    seed(&stores, &[("book", 5)]).await;
    assert_eq!(stock(&stores, "book").await, 3);
}

async fn get_products_returns_only_existing_products(stores: Stores) {
    seed(&stores, &[("book", 5), ("pen", 7)]).await;
    let ids = vec!["pen".to_owned(), "ghost".to_owned(), "book".to_owned()];
    let found = stores.inventory.get_products(&ids).await.unwrap();
    assert_eq!(found, vec![product("pen", 7), product("book", 5)]);
}

async fn reservation_takes_stock_for_every_line(stores: Stores) {
    seed(&stores, &[("book", 5), ("pen", 7)]).await;
    stores
        .inventory
        .reserve_stock("p-1", &lines(&[("book", 5), ("pen", 2)]))
        .await
        .unwrap();
    assert_eq!(
        stock(&stores, "book").await,
        0,
        "the last units can be reserved"
    );
    assert_eq!(stock(&stores, "pen").await, 5);
}

async fn reservation_is_all_or_nothing_across_lines(stores: Stores) {
    seed(&stores, &[("book", 5), ("pen", 1), ("mug", 9)]).await;
    let error = stores
        .inventory
        .reserve_stock("p-1", &lines(&[("book", 2), ("pen", 3), ("mug", 1)]))
        .await
        .unwrap_err();
    match error {
        StoreError::OutOfStock {
            product_id,
            requested,
            available,
        } => {
            assert_eq!((product_id.as_str(), requested, available), ("pen", 3, 1));
        }
        other => panic!("expected OutOfStock, got {other:?}"),
    }
    for (id, expected) in [("book", 5), ("pen", 1), ("mug", 9)] {
        assert_eq!(
            stock(&stores, id).await,
            expected,
            "{id} is untouched by the failed reservation"
        );
    }
    // Nothing is held for the purchase, so a later reservation is not a no-op.
    assert!(!stores.inventory.release_stock("p-1").await.unwrap());
    stores
        .inventory
        .reserve_stock("p-1", &lines(&[("book", 2), ("pen", 1)]))
        .await
        .unwrap();
    assert_eq!(stock(&stores, "book").await, 3);
    assert_eq!(stock(&stores, "pen").await, 0);
}

async fn reserving_an_unknown_product_is_out_of_stock(stores: Stores) {
    seed(&stores, &[("book", 5)]).await;
    let error = stores
        .inventory
        .reserve_stock("p-1", &lines(&[("book", 1), ("ghost", 1)]))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::OutOfStock { product_id, available: 0, .. } if product_id == "ghost"),
        "{error:?}"
    );
    assert_eq!(stock(&stores, "book").await, 5);
    assert!(
        stores
            .inventory
            .get_products(&["ghost".to_owned()])
            .await
            .unwrap()
            .is_empty(),
        "no product is invented"
    );
}

async fn reserving_twice_for_one_purchase_holds_stock_once(stores: Stores) {
    seed(&stores, &[("book", 5)]).await;
    stores
        .inventory
        .reserve_stock("p-1", &lines(&[("book", 2)]))
        .await
        .unwrap();
    // A retried step: succeeds without taking stock again.
    stores
        .inventory
        .reserve_stock("p-1", &lines(&[("book", 2)]))
        .await
        .unwrap();
    assert_eq!(stock(&stores, "book").await, 3);
    // Even when the stock left could not cover it a second time.
    stores
        .inventory
        .reserve_stock("p-2", &lines(&[("book", 3)]))
        .await
        .unwrap();
    stores
        .inventory
        .reserve_stock("p-2", &lines(&[("book", 3)]))
        .await
        .unwrap();
    assert_eq!(stock(&stores, "book").await, 0);
}

async fn release_restores_stock_once(stores: Stores) {
    seed(&stores, &[("book", 5), ("pen", 7)]).await;
    stores
        .inventory
        .reserve_stock("p-1", &lines(&[("book", 2), ("pen", 3)]))
        .await
        .unwrap();
    stores
        .inventory
        .reserve_stock("p-2", &lines(&[("book", 1)]))
        .await
        .unwrap();

    assert!(
        stores.inventory.release_stock("p-1").await.unwrap(),
        "the first release gives stock back"
    );
    assert_eq!(
        (stock(&stores, "book").await, stock(&stores, "pen").await),
        (4, 7)
    );
    assert!(
        !stores.inventory.release_stock("p-1").await.unwrap(),
        "a repeated release is a no-op"
    );
    assert_eq!(
        (stock(&stores, "book").await, stock(&stores, "pen").await),
        (4, 7)
    );
    assert!(
        !stores
            .inventory
            .release_stock("never-reserved")
            .await
            .unwrap()
    );
    assert_eq!(stock(&stores, "book").await, 4, "p-2's hold is untouched");
}

async fn concurrent_reservations_of_the_last_unit_have_one_winner(stores: Stores) {
    seed(&stores, &[("last", 1)]).await;
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let inventory = stores.inventory.clone();
            tokio::spawn(async move {
                inventory
                    .reserve_stock(&format!("p-{i}"), &lines(&[("last", 1)]))
                    .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(()) => winners.push(i),
            Err(StoreError::OutOfStock {
                product_id,
                requested: 1,
                available: 0,
            }) if product_id == "last" => {}
            Err(other) => panic!("task {i}: expected Ok or OutOfStock, got {other:?}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one reservation wins: {winners:?}"
    );
    assert_eq!(stock(&stores, "last").await, 0, "never oversold");
    // Only the winner holds anything.
    for i in 0..10 {
        let released = stores
            .inventory
            .release_stock(&format!("p-{i}"))
            .await
            .unwrap();
        assert_eq!(released, winners.contains(&i), "p-{i}");
    }
    assert_eq!(stock(&stores, "last").await, 1);
}

// ---------------------------------------------------------------------------
// Listing.

async fn listing_is_newest_first_and_pages_without_gaps_or_repeats(stores: Stores) {
    let created: Vec<Purchase> = (0..7)
        .map(|_| purchase("alice", PurchaseStatus::Pending))
        .collect();
    create_all(&stores, &created).await;
    let query = PurchaseQuery {
        customer_id: Some("alice".into()),
        limit: 3,
        ..PurchaseQuery::default()
    };
    let pages = all_pages(&stores, query.clone()).await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![3, 3, 1]
    );
    assert_eq!(
        pages.concat(),
        newest_first(&created.iter().collect::<Vec<_>>())
    );

    // A limit that divides the total exactly: the last full page has no token.
    let pages = all_pages(
        &stores,
        PurchaseQuery {
            limit: 7,
            ..query.clone()
        },
    )
    .await;
    assert_eq!(pages.len(), 1);

    // The listed purchases are whole purchases, not just ids.
    let first = stores
        .purchases
        .list_purchases(&PurchaseQuery { limit: 1, ..query })
        .await
        .unwrap();
    assert_eq!(first.purchases, vec![created[6].clone()]);
}

async fn listing_filters_by_status_across_pages(stores: Stores) {
    // Matches are sparse and uneven, so a page must read past non-matching
    // purchases to fill up.
    let statuses = [
        PurchaseStatus::Completed,
        PurchaseStatus::Pending,
        PurchaseStatus::Pending,
        PurchaseStatus::Completed,
        PurchaseStatus::Failed,
        PurchaseStatus::Pending,
        PurchaseStatus::Pending,
        PurchaseStatus::Pending,
        PurchaseStatus::Completed,
        PurchaseStatus::Pending,
    ];
    let created: Vec<Purchase> = statuses.iter().map(|s| purchase("alice", *s)).collect();
    create_all(&stores, &created).await;

    let completed: Vec<&Purchase> = created
        .iter()
        .filter(|p| p.status == PurchaseStatus::Completed)
        .collect();
    let query = PurchaseQuery {
        customer_id: Some("alice".into()),
        status: Some(PurchaseStatus::Completed),
        limit: 2,
        next_token: None,
    };
    let pages = all_pages(&stores, query).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 1]);
    assert_eq!(pages.concat(), newest_first(&completed));

    let none = PurchaseQuery {
        customer_id: Some("alice".into()),
        status: Some(PurchaseStatus::Rejected),
        limit: 2,
        next_token: None,
    };
    assert_eq!(all_pages(&stores, none).await, vec![Vec::<String>::new()]);
}

async fn listing_is_isolated_per_customer(stores: Stores) {
    let alice: Vec<Purchase> = (0..3)
        .map(|_| purchase("alice", PurchaseStatus::Pending))
        .collect();
    let bob: Vec<Purchase> = (0..3)
        .map(|_| purchase("bob", PurchaseStatus::Pending))
        .collect();
    // Interleaved, so isolation is not an accident of ordering.
    for (a, b) in alice.iter().zip(&bob) {
        create_all(&stores, &[a.clone(), b.clone()]).await;
    }
    let query = |customer: &str| PurchaseQuery {
        customer_id: Some(customer.to_owned()),
        limit: 2,
        ..PurchaseQuery::default()
    };
    assert_eq!(
        all_pages(&stores, query("alice")).await.concat(),
        newest_first(&alice.iter().collect::<Vec<_>>())
    );
    assert_eq!(
        all_pages(&stores, query("bob")).await.concat(),
        newest_first(&bob.iter().collect::<Vec<_>>())
    );
    assert_eq!(
        all_pages(&stores, query("carol")).await,
        vec![Vec::<String>::new()]
    );

    // Alice's page token does not open Bob's purchases.
    let page = stores
        .purchases
        .list_purchases(&query("alice"))
        .await
        .unwrap();
    let stolen = PurchaseQuery {
        next_token: page.next_token,
        ..query("bob")
    };
    match stores.purchases.list_purchases(&stolen).await {
        Err(_) => {}
        Ok(page) => assert!(
            page.purchases.iter().all(|p| p.customer_id == "bob"),
            "a foreign token never yields another customer's purchases"
        ),
    }
}

async fn listing_without_customer_covers_every_customer(stores: Stores) {
    let created = vec![
        purchase("alice", PurchaseStatus::Pending),
        purchase("bob", PurchaseStatus::Completed),
        purchase("carol", PurchaseStatus::Pending),
        purchase("alice", PurchaseStatus::Completed),
        purchase("dave", PurchaseStatus::Pending),
    ];
    create_all(&stores, &created).await;
    let query = PurchaseQuery {
        limit: 2,
        ..PurchaseQuery::default()
    };
    let pages = all_pages(&stores, query.clone()).await;
    assert_eq!(
        pages.concat(),
        newest_first(&created.iter().collect::<Vec<_>>())
    );

    let completed = all_pages(
        &stores,
        PurchaseQuery {
            status: Some(PurchaseStatus::Completed),
            limit: 1,
            ..query
        },
    )
    .await;
    assert_eq!(
        completed,
        vec![
            vec![created[3].purchase_id.clone()],
            vec![created[1].purchase_id.clone()]
        ]
    );
}

// ---------------------------------------------------------------------------
// Idempotency records.

async fn idempotency_key_is_claimed_once(stores: Stores) {
    let first = record("key-1", "body-a", at(Duration::hours(24)));
    assert_eq!(
        stores.idempotency.put_if_absent(&first).await.unwrap(),
        None,
        "the first request claims the key"
    );
    let retry = record("key-1", "body-b", at(Duration::hours(24)));
    let existing = stores.idempotency.put_if_absent(&retry).await.unwrap();
    assert_eq!(
        existing,
        Some(first.clone()),
        "a second claim sees the first, in flight"
    );
    assert_eq!(
        stores.idempotency.get("key-1").await.unwrap(),
        Some(first),
        "the first claim is kept"
    );
    assert_eq!(stores.idempotency.get("key-2").await.unwrap(), None);
}

async fn idempotency_complete_stores_the_response(stores: Stores) {
    // Claimed for as long as a request may run; kept for a day once answered.
    let claim = record("key-1", "body-a", at(Duration::seconds(60)));
    let kept_until = at(Duration::hours(24));
    stores.idempotency.put_if_absent(&claim).await.unwrap();
    let response = StoredResponse {
        status_code: 201,
        body: r#"{"purchaseId":"p-1","status":"PENDING"}"#.into(),
    };
    stores
        .idempotency
        .complete("key-1", &response, kept_until)
        .await
        .unwrap();
    let expected = IdempotencyRecord {
        response: Some(response.clone()),
        expires_at: kept_until,
        ..claim
    };
    assert_eq!(
        stores.idempotency.get("key-1").await.unwrap(),
        Some(expected.clone())
    );
    let retry = record("key-1", "body-a", at(Duration::hours(24)));
    assert_eq!(
        stores.idempotency.put_if_absent(&retry).await.unwrap(),
        Some(expected),
        "a retry replays it"
    );

    let error = stores
        .idempotency
        .complete("never-claimed", &response, kept_until)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::NotFound(_)), "{error:?}");
}

async fn idempotency_record_expires(stores: Stores) {
    // A record whose 24 hours are over, as if written a day ago: it is
    // ignored even though nothing has deleted it yet.
    let old = record("key-1", "body-a", at(Duration::seconds(-1)));
    assert_eq!(stores.idempotency.put_if_absent(&old).await.unwrap(), None);
    assert_eq!(
        stores.idempotency.get("key-1").await.unwrap(),
        None,
        "an expired record is invisible"
    );
    let response = StoredResponse {
        status_code: 201,
        body: "{}".into(),
    };
    let error = stores
        .idempotency
        .complete("key-1", &response, at(Duration::hours(24)))
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::NotFound(_)),
        "an expired record cannot be completed: {error:?}"
    );

    // The key is free again for a new request.
    let fresh = record("key-1", "body-b", at(Duration::hours(24)));
    assert_eq!(
        stores.idempotency.put_if_absent(&fresh).await.unwrap(),
        None
    );
    assert_eq!(stores.idempotency.get("key-1").await.unwrap(), Some(fresh));
}

async fn idempotency_remove_frees_the_key(stores: Stores) {
    let claim = record("key-1", "body-a", at(Duration::hours(24)));
    stores.idempotency.put_if_absent(&claim).await.unwrap();
    stores.idempotency.remove("key-1").await.unwrap();
    assert_eq!(stores.idempotency.get("key-1").await.unwrap(), None);
    let again = record("key-1", "body-b", at(Duration::hours(24)));
    assert_eq!(
        stores.idempotency.put_if_absent(&again).await.unwrap(),
        None,
        "a retry can claim it"
    );
    stores.idempotency.remove("never-claimed").await.unwrap();
}

// ---------------------------------------------------------------------------
// DynamoDB only: provisioning and failure mapping.

#[tokio::test]
async fn dynamodb_create_tables_is_idempotent() {
    let Some(endpoint) = test_endpoint("create_tables_twice") else {
        return;
    };
    let store = dynamo_store(&endpoint, "create_tables_twice");
    store.create_tables().await.unwrap();
    store
        .add_product_if_absent(&product("book", 3))
        .await
        .unwrap();
    // A second run (a restarted local server) keeps the tables and their data.
    store.create_tables().await.unwrap();
    assert_eq!(
        store.get_products(&["book".to_owned()]).await.unwrap(),
        vec![product("book", 3)]
    );
}

#[tokio::test]
async fn dynamodb_unreachable_endpoint_is_unavailable_not_internal() {
    // A port nothing listens on: bind one, then close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = dynamo_store(&format!("http://127.0.0.1:{port}"), "unreachable");
    let error = store.get_purchase("p-1").await.unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    let error = store
        .reserve_stock("p-1", &lines(&[("book", 1)]))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
}

fn rule_set(name: &str, version: u64, max: u32) -> RuleSetRecord {
    RuleSetRecord {
        name: name.to_owned(),
        description: "limits for ünïcode shoppers".into(),
        rules: vec![
            serde_json::json!({"id": "max-quantity", "parameters": {"max": max, "onViolation": "hold"}}),
        ],
        version,
        updated_at: DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap(),
        updated_by: "admin-1".into(),
    }
}

async fn rule_sets_are_created_once_replaced_by_version_and_deleted(stores: Stores) {
    let store = &stores.rule_sets;
    assert_eq!(store.get_rule_set("default").await.unwrap(), None);
    let first = rule_set("default", 1, 3);
    store.create_rule_set(&first).await.unwrap();
    assert!(
        matches!(store.create_rule_set(&rule_set("default", 1, 9)).await, Err(StoreError::AlreadyExists(name)) if name == "default")
    );
    assert_eq!(
        store.get_rule_set("default").await.unwrap(),
        Some(first.clone())
    );

    let second = rule_set("default", 2, 5);
    store.replace_rule_set(&second).await.unwrap();
    // A writer that read version 1 too lost the race.
    assert!(matches!(
        store.replace_rule_set(&rule_set("default", 2, 7)).await,
        Err(StoreError::VersionConflict)
    ));
    assert!(matches!(
        store.replace_rule_set(&rule_set("nope", 2, 7)).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        store.get_rule_set("default").await.unwrap(),
        Some(second.clone())
    );

    store
        .create_rule_set(&rule_set("b2b", 1, 100))
        .await
        .unwrap();
    let names: Vec<String> = store
        .list_rule_sets()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["b2b", "default"]);

    assert!(store.delete_rule_set("default").await.unwrap());
    assert!(!store.delete_rule_set("default").await.unwrap());
    assert_eq!(store.get_rule_set("default").await.unwrap(), None);
}
