//! One suite of store behaviour, run against both stores: the embedded redb
//! store (a fresh file per test) and the DynamoDB store against the
//! DynamoDB-API server at `AWS_TEST_ENDPOINT` (fresh tables per test).
//!
//! `scripts/test.sh` starts that server (moto, `scripts/moto.sh`) and sets the
//! variable (and its older name `DYNAMODB_TEST_ENDPOINT`, also read here).
//! Without it the DynamoDB half prints a notice and passes, except in CI
//! (`CI=true`), where a missing server fails every DynamoDB test instead of
//! skipping it.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use shared::adapters::dynamodb::{DynamoStore, DynamoTables};
use shared::adapters::embedded::EmbeddedStore;
use shared::domain::lifecycle::StockChange;
use shared::domain::purchase::{
    Attention, FailureReason, LineStatus, PaymentDetails, PaymentStatus, Product, ProductKind,
    Purchase, PurchaseLine, PurchaseStatus, ShippingAddress, ShippingStatus, TimelineEntry,
};
use shared::domain::rules::{OnViolation, RuleOutcome, RuleRequest, RuleResult};
use shared::domain::{Currency, CustomerId, ProductId, PurchaseId};
use shared::ports::store::{
    Claim, Completion, IdempotencyRecord, IdempotencyStore, Inventory, PurchaseQuery,
    PurchaseStore, RuleSetRecord, RuleSetStore, StoreError, StoredResponse,
};

/// The four ports of one store, plus whatever must live as long as it.
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
    let endpoint = ["AWS_TEST_ENDPOINT", "DYNAMODB_TEST_ENDPOINT"]
        .into_iter()
        .find_map(|name| std::env::var(name).ok().filter(|e| !e.is_empty()));
    if endpoint.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "AWS_TEST_ENDPOINT is not set: in CI the DynamoDB tests must run (scripts/test.sh starts moto)"
            );
        }
        let _ = test;
        skipping_notice();
    }
    endpoint
}

/// Says plainly, once per run and past the test harness's output capture
/// (a direct write to stderr, not `eprintln!`), how many tests pass without
/// running and why.
fn skipping_notice() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use std::io::Write;
        // Every behaviour's DynamoDB run, plus the two DynamoDB-only tests.
        let skipped = dynamodb::BEHAVIOURS + 2;
        let _ = writeln!(
            std::io::stderr(),
            "\nnote: store_conformance: {skipped} DynamoDB tests pass WITHOUT RUNNING: AWS_TEST_ENDPOINT is not set \
             (scripts/test.sh starts moto; with CI=true they fail instead)\n"
        );
    });
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
    // Table names allow 255 characters: keep the test's name readable but short.
    let test: String = test.chars().take(150).collect();
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
            /// How many behaviours run on DynamoDB.
            pub const BEHAVIOURS: usize = [$(stringify!($name)),*].len();
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
    // Purchases.
    create_then_get_returns_the_whole_purchase,
    get_of_an_unknown_id_is_none,
    creating_a_taken_id_is_already_exists_and_keeps_the_original,
    save_writes_the_next_version_and_a_stale_save_conflicts,
    save_must_be_exactly_one_version_ahead,
    save_of_a_missing_purchase_is_not_found_and_moves_no_stock,
    concurrent_saves_of_one_purchase_have_one_winner_and_take_stock_once,
    // Inventory, and stock moving with the purchase.
    add_product_if_absent_never_resets_stock,
    get_products_returns_only_existing_products,
    take_moves_stock_for_every_line_with_the_purchase,
    take_is_all_or_nothing_across_lines_and_the_purchase,
    taking_an_unknown_product_is_out_of_stock,
    take_with_a_stale_version_conflicts_and_takes_nothing,
    take_counts_repeated_lines_of_one_product_together,
    concurrent_takes_never_oversell,
    give_back_returns_stock_with_the_purchase,
    give_back_skips_products_no_longer_in_the_catalog,
    give_back_with_a_stale_version_conflicts_and_gives_nothing,
    // Listing.
    listing_is_newest_first_and_pages_without_gaps_or_repeats,
    listing_oldest_first_pages_without_gaps_or_repeats,
    listing_filters_by_status_across_pages_in_both_orders,
    listing_is_isolated_per_customer,
    listing_without_customer_covers_every_customer_in_both_orders,
    listing_reflects_the_latest_save,
    page_tokens_from_another_listing_are_refused,
    // The reconciler's view.
    unfinished_purchases_are_the_stale_ones_not_final_oldest_first,
    unfinished_purchases_follow_saves,
    // Idempotency records.
    idempotency_key_is_claimed_once,
    concurrent_claims_of_one_key_have_one_winner,
    idempotency_complete_stores_the_response,
    a_create_completes_its_key_in_the_same_write,
    idempotency_release_lets_the_same_request_take_over_with_its_resource_id,
    concurrent_takeovers_of_a_released_key_have_one_winner,
    idempotency_released_key_is_taken_for_a_different_request,
    idempotency_expired_record_is_absent_and_claimable,
    idempotency_claim_abandoned_in_flight_is_continued_by_the_same_request,
    idempotency_release_of_an_absent_or_expired_key_is_a_no_op,
    // Rule sets.
    rule_sets_are_created_once_replaced_by_version_and_deleted,
    rule_sets_keep_their_rules_as_sent,
);

// ---------------------------------------------------------------------------
// Fixtures.

fn purchase(customer: &str, status: PurchaseStatus) -> Purchase {
    let now = Utc::now();
    Purchase {
        purchase_id: PurchaseId::generate(),
        customer_id: CustomerId::from(customer),
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
                status: LineStatus::Pending,
                unit_price: 999,
                kind: ProductKind::Digital,
            },
        ],
        currency: Currency::new("EUR"),
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
        attention: None,
        judged_contents: None,
        approved_contents: None,
        finalized_at: None,
        // A later run, restarted once: both round-trip.
        run: 3,
        restarts: 1,
        timeline: vec![TimelineEntry {
            step: "create".into(),
            outcome: "ok".into(),
            at: now,
            detail: Some(String::new()),
        }],
        rule_results: vec![RuleResult {
            rule_id: "max-amount".into(),
            parameters: json!({"max": 50000, "ratio": 0.5, "tags": ["a", ""], "none": null}),
            outcome: RuleOutcome::Passed,
            on_violation: OnViolation::Hold,
            reason: "under the limit".into(),
            evaluated_at: now,
            evaluated_by: "system".into(),
        }],
        applied_rules: Vec::new(),
        version: 1,
        created_at: now,
        updated_at: now,
    }
}

/// The next version of `p` as a writer would save it: changed by `change`,
/// version bumped, `updatedAt` moved on.
fn next(p: &Purchase, change: impl FnOnce(&mut Purchase)) -> Purchase {
    let mut next = p.clone();
    change(&mut next);
    next.version = p.version + 1;
    next.updated_at = Utc::now();
    next
}

fn reserved(p: &mut Purchase) {
    p.status = PurchaseStatus::Reserved;
    for line in &mut p.products {
        line.status = LineStatus::Reserved;
    }
}

fn cancelled(p: &mut Purchase) {
    p.status = PurchaseStatus::Cancelled;
    p.payment_status = PaymentStatus::NotCharged;
    for line in &mut p.products {
        line.status = LineStatus::Released;
    }
    p.finalized_at = Some(Utc::now());
}

/// Some change that is not a decision: a timeline entry.
fn touched(p: &mut Purchase) {
    p.timeline.push(TimelineEntry {
        step: "Touched".into(),
        outcome: "ok".into(),
        at: Utc::now(),
        detail: None,
    });
}

fn product(id: &str, stock: i64) -> Product {
    Product {
        id: ProductId::from(id),
        name: format!("Product {id}"),
        unit_price: 1000,
        currency: Currency::new("EUR"),
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
        .get_products(&[ProductId::from(id)])
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "product {id} should exist");
    found[0].stock
}

async fn stocks<const N: usize>(stores: &Stores, ids: [&str; N]) -> [i64; N] {
    let mut found = [0; N];
    for (slot, id) in found.iter_mut().zip(ids) {
        *slot = stock(stores, id).await;
    }
    found
}

fn lines(items: &[(&str, u32)]) -> Vec<(ProductId, u32)> {
    items
        .iter()
        .map(|(id, q)| (ProductId::from(*id), *q))
        .collect()
}

fn take(items: &[(&str, u32)]) -> StockChange {
    StockChange::Take(lines(items))
}

fn give_back(items: &[(&str, u32)]) -> StockChange {
    StockChange::GiveBack(lines(items))
}

async fn stored(stores: &Stores, p: &Purchase) -> Purchase {
    stores
        .purchases
        .get_purchase(&p.purchase_id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("purchase {} should exist", p.purchase_id))
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
        resource_id: None,
        response: None,
        in_flight: true,
        expires_at,
    }
}

fn with_resource(record: IdempotencyRecord, resource_id: &str) -> IdempotencyRecord {
    IdempotencyRecord {
        resource_id: Some(resource_id.to_owned()),
        ..record
    }
}

async fn create_all(stores: &Stores, purchases: &[Purchase]) {
    for p in purchases {
        stores.purchases.create_purchase(p, None).await.unwrap();
    }
}

/// Every page of a listing, following tokens until the last page.
async fn all_pages(stores: &Stores, mut query: PurchaseQuery) -> Vec<Vec<PurchaseId>> {
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

fn ids<'a>(purchases: impl IntoIterator<Item = &'a Purchase>) -> Vec<PurchaseId> {
    purchases
        .into_iter()
        .map(|p| p.purchase_id.clone())
        .collect()
}

fn newest_first<'a>(
    purchases: impl IntoIterator<Item = &'a Purchase, IntoIter: DoubleEndedIterator>,
) -> Vec<PurchaseId> {
    ids(purchases.into_iter().rev())
}

fn page_sizes(pages: &[Vec<PurchaseId>]) -> Vec<usize> {
    pages.iter().map(Vec::len).collect()
}

fn query(customer: Option<&str>, limit: usize) -> PurchaseQuery {
    PurchaseQuery {
        customer_id: customer.map(CustomerId::from),
        limit,
        ..PurchaseQuery::default()
    }
}

// ---------------------------------------------------------------------------
// Purchases.

async fn create_then_get_returns_the_whole_purchase(stores: Stores) {
    // Every optional field set, so none is lost on the way in or out.
    let mut p = purchase("alice", PurchaseStatus::NeedsAttention);
    p.payment_status = PaymentStatus::RefundFailed;
    p.payment_reference = Some("pay-ref-1".into());
    p.shipping_status = ShippingStatus::Cancelled;
    p.failure_reason = Some(FailureReason::ProvisioningFailed);
    p.review_token = Some("task-token/with+odd=chars".into());
    p.held_from = Some(PurchaseStatus::Paid);
    p.attention = Some(Attention {
        failed_step: "RefundPayment".into(),
        error: "PaymentUnavailable".into(),
        since: Utc::now(),
        resume_status: PurchaseStatus::Failed,
    });
    p.judged_contents = Some("sha256:9a8b…".into());
    p.approved_contents = Some("sha256:0f1e…".into());
    p.applied_rules = vec![
        RuleRequest {
            id: Some("max-quantity".into()),
            parameters: Some(json!({"max": 3, "onViolation": "hold"})),
        },
        RuleRequest {
            id: Some("no-parameters".into()),
            parameters: None,
        },
    ];
    stores.purchases.create_purchase(&p, None).await.unwrap();
    assert_eq!(stored(&stores, &p).await, p, "every field survives");

    // And through a save, including a purchase becoming final.
    let done = next(&p, |p| p.finalized_at = Some(Utc::now()));
    stores
        .purchases
        .save_purchase(&done, &StockChange::None)
        .await
        .unwrap();
    assert_eq!(stored(&stores, &p).await, done);
}

async fn get_of_an_unknown_id_is_none(stores: Stores) {
    let got = stores
        .purchases
        .get_purchase(&PurchaseId::from("no-such-purchase"))
        .await
        .unwrap();
    assert_eq!(got, None);
}

async fn creating_a_taken_id_is_already_exists_and_keeps_the_original(stores: Stores) {
    let original = purchase("alice", PurchaseStatus::Pending);
    stores
        .purchases
        .create_purchase(&original, None)
        .await
        .unwrap();
    let mut impostor = purchase("mallory", PurchaseStatus::Completed);
    impostor.purchase_id = original.purchase_id.clone();
    let error = stores
        .purchases
        .create_purchase(&impostor, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::AlreadyExists(what) if what.contains(original.purchase_id.as_str())),
        "{error:?}"
    );
    assert_eq!(stored(&stores, &original).await, original);
    // The impostor is not listed for its customer either.
    let page = stores
        .purchases
        .list_purchases(&query(Some("mallory"), 10))
        .await
        .unwrap();
    assert!(page.purchases.is_empty(), "{page:?}");
}

async fn save_writes_the_next_version_and_a_stale_save_conflicts(stores: Stores) {
    let p = purchase("alice", PurchaseStatus::Pending);
    stores.purchases.create_purchase(&p, None).await.unwrap();

    // Two writers read version 1; the first one's write wins.
    let first = next(&p, reserved);
    let second = next(&p, |p| p.status = PurchaseStatus::Cancelled);
    stores
        .purchases
        .save_purchase(&first, &StockChange::None)
        .await
        .unwrap();
    assert_eq!(stored(&stores, &p).await, first);

    let error = stores
        .purchases
        .save_purchase(&second, &StockChange::None)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::VersionConflict), "{error:?}");
    assert_eq!(
        stored(&stores, &p).await,
        first,
        "the lost write changed nothing"
    );

    // Re-read and retry: the usual way out of a conflict.
    let retry = next(&stored(&stores, &p).await, cancelled);
    stores
        .purchases
        .save_purchase(&retry, &StockChange::None)
        .await
        .unwrap();
    let now = stored(&stores, &p).await;
    assert_eq!((now.version, now.status), (3, PurchaseStatus::Cancelled));
}

async fn save_must_be_exactly_one_version_ahead(stores: Stores) {
    let p = purchase("alice", PurchaseStatus::Pending);
    stores.purchases.create_purchase(&p, None).await.unwrap();
    for version in [1, 3, 10] {
        let mut skipped = next(&p, reserved);
        skipped.version = version;
        let error = stores
            .purchases
            .save_purchase(&skipped, &StockChange::None)
            .await
            .unwrap_err();
        assert!(
            matches!(error, StoreError::VersionConflict),
            "version {version}: {error:?}"
        );
    }
    assert_eq!(stored(&stores, &p).await, p);
}

async fn save_of_a_missing_purchase_is_not_found_and_moves_no_stock(stores: Stores) {
    seed(&stores, &[("book", 5)]).await;
    let never_created = purchase("alice", PurchaseStatus::Pending);
    let p = next(&never_created, reserved);
    for change in [
        StockChange::None,
        take(&[("book", 2)]),
        give_back(&[("book", 2)]),
    ] {
        let error = stores
            .purchases
            .save_purchase(&p, &change)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, StoreError::NotFound(what) if what.contains(p.purchase_id.as_str())),
            "{change:?}: {error:?}"
        );
    }
    assert_eq!(
        stores.purchases.get_purchase(&p.purchase_id).await.unwrap(),
        None,
        "no purchase was created"
    );
    assert_eq!(stock(&stores, "book").await, 5, "no stock moved");
}

async fn concurrent_saves_of_one_purchase_have_one_winner_and_take_stock_once(stores: Stores) {
    seed(&stores, &[("book", 5)]).await;
    let p = purchase("alice", PurchaseStatus::Pending);
    stores.purchases.create_purchase(&p, None).await.unwrap();
    // Ten retries of one step, all having read version 1.
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let purchases = stores.purchases.clone();
            let write = next(&p, |p| {
                reserved(p);
                p.payment_reference = Some(format!("writer-{i}"));
            });
            tokio::spawn(async move {
                let result = purchases.save_purchase(&write, &take(&[("book", 2)])).await;
                (write, result)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (write, Ok(())) => winners.push(write),
            (_, Err(StoreError::VersionConflict)) => {}
            (_, Err(other)) => panic!("expected Ok or VersionConflict, got {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one write wins");
    assert_eq!(stored(&stores, &p).await, winners[0]);
    assert_eq!(stock(&stores, "book").await, 3, "stock is taken once");
}

// ---------------------------------------------------------------------------
// Inventory, and stock moving with the purchase that holds it.

async fn add_product_if_absent_never_resets_stock(stores: Stores) {
    seed(&stores, &[("book", 5)]).await;
    let p = purchase("alice", PurchaseStatus::Pending);
    stores.purchases.create_purchase(&p, None).await.unwrap();
    stores
        .purchases
        .save_purchase(&next(&p, reserved), &take(&[("book", 2)]))
        .await
        .unwrap();
    // Re-seeding the catalog at start-up, even with other details.
    let mut reseeded = product("book", 5);
    reseeded.name = "Renamed".into();
    reseeded.unit_price = 1;
    stores
        .inventory
        .add_product_if_absent(&reseeded)
        .await
        .unwrap();
    assert_eq!(
        stores
            .inventory
            .get_products(&[ProductId::from("book")])
            .await
            .unwrap(),
        vec![product("book", 3)]
    );
}

async fn get_products_returns_only_existing_products(stores: Stores) {
    seed(&stores, &[("book", 5), ("pen", 7)]).await;
    let ids = vec![
        ProductId::from("pen"),
        ProductId::from("ghost"),
        ProductId::from("book"),
    ];
    let found = stores.inventory.get_products(&ids).await.unwrap();
    assert_eq!(found, vec![product("pen", 7), product("book", 5)]);
    assert!(stores.inventory.get_products(&[]).await.unwrap().is_empty());
}

async fn take_moves_stock_for_every_line_with_the_purchase(stores: Stores) {
    seed(&stores, &[("book", 5), ("pen", 7), ("mug", 1)]).await;
    let p = purchase("alice", PurchaseStatus::Pending);
    stores.purchases.create_purchase(&p, None).await.unwrap();
    let saved = next(&p, reserved);
    stores
        .purchases
        .save_purchase(&saved, &take(&[("book", 5), ("pen", 2)]))
        .await
        .unwrap();
    assert_eq!(stored(&stores, &p).await, saved);
    assert_eq!(
        stocks(&stores, ["book", "pen", "mug"]).await,
        [0, 5, 1],
        "the last units can be taken; other products are untouched"
    );
}

async fn take_is_all_or_nothing_across_lines_and_the_purchase(stores: Stores) {
    seed(&stores, &[("book", 5), ("pen", 1), ("mug", 9)]).await;
    let p = purchase("alice", PurchaseStatus::Pending);
    stores.purchases.create_purchase(&p, None).await.unwrap();
    let error = stores
        .purchases
        .save_purchase(
            &next(&p, reserved),
            &take(&[("book", 2), ("pen", 3), ("mug", 1)]),
        )
        .await
        .unwrap_err();
    match error {
        StoreError::OutOfStock {
            product_id,
            requested,
            available,
        } => assert_eq!((product_id.as_str(), requested, available), ("pen", 3, 1)),
        other => panic!("expected OutOfStock, got {other:?}"),
    }
    assert_eq!(
        stocks(&stores, ["book", "pen", "mug"]).await,
        [5, 1, 9],
        "no line took stock"
    );
    assert_eq!(stored(&stores, &p).await, p, "the purchase was not written");

    // The same version can be saved once the lines fit.
    let saved = next(&p, reserved);
    stores
        .purchases
        .save_purchase(&saved, &take(&[("book", 2), ("pen", 1)]))
        .await
        .unwrap();
    assert_eq!(stocks(&stores, ["book", "pen", "mug"]).await, [3, 0, 9]);
    assert_eq!(stored(&stores, &p).await, saved);
}

async fn taking_an_unknown_product_is_out_of_stock(stores: Stores) {
    seed(&stores, &[("book", 5)]).await;
    let p = purchase("alice", PurchaseStatus::Pending);
    stores.purchases.create_purchase(&p, None).await.unwrap();
    let error = stores
        .purchases
        .save_purchase(&next(&p, reserved), &take(&[("book", 1), ("ghost", 1)]))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::OutOfStock { product_id, requested: 1, available: 0 } if *product_id == "ghost"),
        "{error:?}"
    );
    assert_eq!(stock(&stores, "book").await, 5);
    assert_eq!(stored(&stores, &p).await, p);
    assert!(
        stores
            .inventory
            .get_products(&[ProductId::from("ghost")])
            .await
            .unwrap()
            .is_empty(),
        "no product is invented"
    );
}

async fn take_with_a_stale_version_conflicts_and_takes_nothing(stores: Stores) {
    seed(&stores, &[("book", 5)]).await;
    let p = purchase("alice", PurchaseStatus::Pending);
    stores.purchases.create_purchase(&p, None).await.unwrap();
    let moved_on = next(&p, touched);
    stores
        .purchases
        .save_purchase(&moved_on, &StockChange::None)
        .await
        .unwrap();
    // A writer that still holds version 1; a conflict wins over a shortage.
    for change in [take(&[("book", 2)]), take(&[("book", 99)])] {
        let error = stores
            .purchases
            .save_purchase(&next(&p, reserved), &change)
            .await
            .unwrap_err();
        assert!(
            matches!(error, StoreError::VersionConflict),
            "{change:?}: {error:?}"
        );
    }
    assert_eq!(stock(&stores, "book").await, 5);
    assert_eq!(stored(&stores, &p).await, moved_on);
}

async fn take_counts_repeated_lines_of_one_product_together(stores: Stores) {
    seed(&stores, &[("book", 5)]).await;
    let p = purchase("alice", PurchaseStatus::Pending);
    stores.purchases.create_purchase(&p, None).await.unwrap();
    let error = stores
        .purchases
        .save_purchase(&next(&p, reserved), &take(&[("book", 3), ("book", 3)]))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::OutOfStock { product_id, .. } if *product_id == "book"),
        "{error:?}"
    );
    assert_eq!(stock(&stores, "book").await, 5);
    stores
        .purchases
        .save_purchase(&next(&p, reserved), &take(&[("book", 3), ("book", 2)]))
        .await
        .unwrap();
    assert_eq!(stock(&stores, "book").await, 0);
}

async fn concurrent_takes_never_oversell(stores: Stores) {
    seed(&stores, &[("widget", 10)]).await;
    let created: Vec<Purchase> = (0..20)
        .map(|_| purchase("alice", PurchaseStatus::Pending))
        .collect();
    create_all(&stores, &created).await;
    let tasks: Vec<_> = created
        .iter()
        .map(|p| {
            let purchases = stores.purchases.clone();
            let write = next(p, reserved);
            tokio::spawn(async move {
                purchases
                    .save_purchase(&write, &take(&[("widget", 1)]))
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
                ..
            }) if product_id == "widget" => {}
            Err(other) => panic!("purchase {i}: expected Ok or OutOfStock, got {other:?}"),
        }
    }
    assert_eq!(winners.len(), 10, "exactly the stock's worth: {winners:?}");
    assert_eq!(stock(&stores, "widget").await, 0, "never oversold");
    // Exactly the winners were written.
    for (i, p) in created.iter().enumerate() {
        let expected = if winners.contains(&i) { 2 } else { 1 };
        assert_eq!(stored(&stores, p).await.version, expected, "purchase {i}");
    }
}

async fn give_back_returns_stock_with_the_purchase(stores: Stores) {
    seed(&stores, &[("book", 5), ("pen", 7)]).await;
    let p = purchase("alice", PurchaseStatus::Pending);
    stores.purchases.create_purchase(&p, None).await.unwrap();
    let held = next(&p, reserved);
    stores
        .purchases
        .save_purchase(&held, &take(&[("book", 2), ("pen", 3)]))
        .await
        .unwrap();
    assert_eq!(stocks(&stores, ["book", "pen"]).await, [3, 4]);

    let released = next(&held, cancelled);
    stores
        .purchases
        .save_purchase(&released, &give_back(&[("book", 2), ("pen", 3)]))
        .await
        .unwrap();
    assert_eq!(stocks(&stores, ["book", "pen"]).await, [5, 7]);
    assert_eq!(stored(&stores, &p).await, released);
}

async fn give_back_skips_products_no_longer_in_the_catalog(stores: Stores) {
    seed(&stores, &[("book", 5)]).await;
    let p = purchase("alice", PurchaseStatus::Pending);
    stores.purchases.create_purchase(&p, None).await.unwrap();
    let held = next(&p, reserved);
    stores
        .purchases
        .save_purchase(&held, &take(&[("book", 2)]))
        .await
        .unwrap();

    // "gone" was in the catalog when the purchase took it; it is not now.
    let released = next(&held, cancelled);
    stores
        .purchases
        .save_purchase(&released, &give_back(&[("gone", 4), ("book", 2)]))
        .await
        .unwrap();
    assert_eq!(stock(&stores, "book").await, 5);
    assert_eq!(stored(&stores, &p).await, released);
    assert!(
        stores
            .inventory
            .get_products(&[ProductId::from("gone")])
            .await
            .unwrap()
            .is_empty(),
        "giving back never creates a product"
    );

    // Only missing products: the purchase is still written.
    let again = next(&released, touched);
    stores
        .purchases
        .save_purchase(&again, &give_back(&[("gone", 1)]))
        .await
        .unwrap();
    assert_eq!(stored(&stores, &p).await, again);
    assert!(
        stores
            .inventory
            .get_products(&[ProductId::from("gone")])
            .await
            .unwrap()
            .is_empty()
    );
}

async fn give_back_with_a_stale_version_conflicts_and_gives_nothing(stores: Stores) {
    seed(&stores, &[("book", 5)]).await;
    let p = purchase("alice", PurchaseStatus::Pending);
    stores.purchases.create_purchase(&p, None).await.unwrap();
    let held = next(&p, reserved);
    stores
        .purchases
        .save_purchase(&held, &take(&[("book", 2)]))
        .await
        .unwrap();
    // A second release from a writer that read the purchase before the first.
    let released = next(&held, cancelled);
    stores
        .purchases
        .save_purchase(&released, &give_back(&[("book", 2)]))
        .await
        .unwrap();
    let error = stores
        .purchases
        .save_purchase(&next(&held, cancelled), &give_back(&[("book", 2)]))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::VersionConflict), "{error:?}");
    assert_eq!(stock(&stores, "book").await, 5, "given back once");
    assert_eq!(stored(&stores, &p).await, released);
}

// ---------------------------------------------------------------------------
// Listing.

async fn listing_is_newest_first_and_pages_without_gaps_or_repeats(stores: Stores) {
    let created: Vec<Purchase> = (0..7)
        .map(|_| purchase("alice", PurchaseStatus::Pending))
        .collect();
    create_all(&stores, &created).await;
    for customer in [Some("alice"), None] {
        let pages = all_pages(&stores, query(customer, 3)).await;
        assert_eq!(page_sizes(&pages), [3, 3, 1], "{customer:?}");
        assert_eq!(pages.concat(), newest_first(&created), "{customer:?}");

        // A limit that divides the total exactly: the last full page has no token.
        let pages = all_pages(&stores, query(customer, 7)).await;
        assert_eq!(page_sizes(&pages), [7], "{customer:?}");

        // The listed purchases are whole purchases, not just ids.
        let first = stores
            .purchases
            .list_purchases(&query(customer, 1))
            .await
            .unwrap();
        assert_eq!(first.purchases, [created[6].clone()], "{customer:?}");
    }
}

async fn listing_oldest_first_pages_without_gaps_or_repeats(stores: Stores) {
    let created: Vec<Purchase> = (0..7)
        .map(|_| purchase("alice", PurchaseStatus::Pending))
        .collect();
    create_all(&stores, &created).await;
    for customer in [Some("alice"), None] {
        let oldest_first = |limit| PurchaseQuery {
            oldest_first: true,
            ..query(customer, limit)
        };
        let pages = all_pages(&stores, oldest_first(3)).await;
        assert_eq!(page_sizes(&pages), [3, 3, 1], "{customer:?}");
        assert_eq!(pages.concat(), ids(&created), "{customer:?}");

        let pages = all_pages(&stores, oldest_first(7)).await;
        assert_eq!(page_sizes(&pages), [7], "{customer:?}");

        let pages = all_pages(&stores, oldest_first(1)).await;
        assert_eq!(pages.len(), 7, "{customer:?}");
        assert_eq!(pages.concat(), ids(&created), "{customer:?}");

        let first = stores
            .purchases
            .list_purchases(&oldest_first(2))
            .await
            .unwrap();
        assert_eq!(first.purchases, created[..2], "{customer:?}");
    }
}

async fn listing_filters_by_status_across_pages_in_both_orders(stores: Stores) {
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

    for customer in [Some("alice"), None] {
        for oldest_first in [false, true] {
            let filtered = |status, limit| PurchaseQuery {
                status: Some(status),
                oldest_first,
                ..query(customer, limit)
            };
            let context = format!("customer {customer:?}, oldest first {oldest_first}");
            let expected = if oldest_first {
                ids(completed.iter().copied())
            } else {
                newest_first(completed.iter().copied())
            };
            let pages = all_pages(&stores, filtered(PurchaseStatus::Completed, 2)).await;
            assert_eq!(page_sizes(&pages), [2, 1], "{context}");
            assert_eq!(pages.concat(), expected, "{context}");

            let pages = all_pages(&stores, filtered(PurchaseStatus::Completed, 3)).await;
            assert_eq!(page_sizes(&pages), [3], "{context}");

            let pages = all_pages(&stores, filtered(PurchaseStatus::Rejected, 2)).await;
            assert_eq!(pages, [Vec::<PurchaseId>::new()], "{context}");
        }
    }
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
    for oldest_first in [false, true] {
        let of = |customer: &str| PurchaseQuery {
            oldest_first,
            ..query(Some(customer), 2)
        };
        let in_order = |purchases: &[Purchase]| {
            if oldest_first {
                ids(purchases)
            } else {
                newest_first(purchases)
            }
        };
        assert_eq!(
            all_pages(&stores, of("alice")).await.concat(),
            in_order(&alice)
        );
        assert_eq!(all_pages(&stores, of("bob")).await.concat(), in_order(&bob));
        assert_eq!(
            all_pages(&stores, of("carol")).await,
            [Vec::<PurchaseId>::new()]
        );
    }
}

async fn listing_without_customer_covers_every_customer_in_both_orders(stores: Stores) {
    let created = vec![
        purchase("alice", PurchaseStatus::Pending),
        purchase("bob", PurchaseStatus::Completed),
        purchase("carol", PurchaseStatus::Pending),
        purchase("alice", PurchaseStatus::Completed),
        purchase("dave", PurchaseStatus::Pending),
    ];
    create_all(&stores, &created).await;
    assert_eq!(
        all_pages(&stores, query(None, 2)).await.concat(),
        newest_first(&created)
    );
    assert_eq!(
        all_pages(
            &stores,
            PurchaseQuery {
                oldest_first: true,
                ..query(None, 2)
            }
        )
        .await
        .concat(),
        ids(&created)
    );

    let completed = |oldest_first| PurchaseQuery {
        status: Some(PurchaseStatus::Completed),
        oldest_first,
        ..query(None, 1)
    };
    assert_eq!(
        all_pages(&stores, completed(false)).await,
        [
            [created[3].purchase_id.clone()],
            [created[1].purchase_id.clone()]
        ]
    );
    assert_eq!(
        all_pages(&stores, completed(true)).await,
        [
            [created[1].purchase_id.clone()],
            [created[3].purchase_id.clone()]
        ]
    );
}

async fn listing_reflects_the_latest_save(stores: Stores) {
    let p = purchase("alice", PurchaseStatus::Pending);
    let other = purchase("alice", PurchaseStatus::Pending);
    create_all(&stores, &[p.clone(), other.clone()]).await;
    let saved = next(&p, reserved);
    stores
        .purchases
        .save_purchase(&saved, &StockChange::None)
        .await
        .unwrap();
    for customer in [Some("alice"), None] {
        let listed = |status| PurchaseQuery {
            status,
            ..query(customer, 10)
        };
        let all = stores
            .purchases
            .list_purchases(&listed(None))
            .await
            .unwrap();
        assert_eq!(
            all.purchases,
            [other.clone(), saved.clone()],
            "{customer:?}"
        );
        let reserved = stores
            .purchases
            .list_purchases(&listed(Some(PurchaseStatus::Reserved)))
            .await
            .unwrap();
        assert_eq!(
            reserved.purchases,
            std::slice::from_ref(&saved),
            "{customer:?}"
        );
        let pending = stores
            .purchases
            .list_purchases(&listed(Some(PurchaseStatus::Pending)))
            .await
            .unwrap();
        assert_eq!(
            pending.purchases,
            std::slice::from_ref(&other),
            "{customer:?}"
        );
    }
}

async fn page_tokens_from_another_listing_are_refused(stores: Stores) {
    let created: Vec<Purchase> = ["alice", "bob", "alice", "bob", "alice", "bob"]
        .iter()
        .map(|c| purchase(c, PurchaseStatus::Pending))
        .collect();
    create_all(&stores, &created).await;
    let token_of = async |query: PurchaseQuery| {
        stores
            .purchases
            .list_purchases(&query)
            .await
            .unwrap()
            .next_token
            .expect("a first page with more to come")
    };
    let alice_token = token_of(query(Some("alice"), 1)).await;
    let everyone_token = token_of(query(None, 1)).await;

    let refused = [
        // Alice's place in her own listing does not open Bob's purchases.
        (Some("bob"), Some(alice_token.clone())),
        // Nor does a place in another listing, either way round.
        (Some("bob"), Some(everyone_token.clone())),
        (None, Some(alice_token.clone())),
        // Nor anything the store never handed out.
        (Some("alice"), Some("not a token".to_owned())),
        (None, Some("not a token".to_owned())),
        (Some("alice"), Some(String::new())),
        (None, Some(String::new())),
    ];
    for (customer, next_token) in refused {
        let listing = PurchaseQuery {
            next_token: next_token.clone(),
            ..query(customer, 2)
        };
        match stores.purchases.list_purchases(&listing).await {
            Err(StoreError::InvalidPageToken) => {}
            other => panic!("{customer:?} with token {next_token:?}: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// The reconciler's view.

async fn unfinished_purchases_are_the_stale_ones_not_final_oldest_first(stores: Stores) {
    let now = Utc::now();
    let last_touched = |status, hours_ago: i64, finalized: bool| {
        let mut p = purchase("alice", status);
        p.created_at = now - Duration::hours(hours_ago);
        p.updated_at = p.created_at;
        if finalized {
            p.finalized_at = Some(p.updated_at);
        }
        p
    };
    // In creation order, which is also the order they were last changed.
    let created = vec![
        last_touched(PurchaseStatus::Pending, 9, false), // 0: stale
        last_touched(PurchaseStatus::Completed, 8, true), // 1: final
        last_touched(PurchaseStatus::NeedsAttention, 7, false), // 2: stale
        last_touched(PurchaseStatus::Cancelled, 6, true), // 3: final
        // A decision taken, not yet undone: not final.
        last_touched(PurchaseStatus::Cancelled, 5, false), // 4: stale
        last_touched(PurchaseStatus::Paid, 0, false),      // 5: recent
    ];
    create_all(&stores, &created).await;

    let before = |hours: i64| now - Duration::hours(hours);
    let unfinished = |before, limit| {
        let purchases = stores.purchases.clone();
        async move { ids(&purchases.unfinished_purchases(before, limit).await.unwrap()) }
    };
    let stale = ids([&created[0], &created[2], &created[4]]);
    assert_eq!(unfinished(before(1), 10).await, stale);
    assert_eq!(unfinished(before(1), 3).await, stale);
    assert_eq!(unfinished(before(1), 2).await, stale[..2]);
    assert_eq!(unfinished(before(1), 1).await, stale[..1]);
    // `before` is exclusive and honoured.
    assert_eq!(unfinished(before(7), 10).await, stale[..1]);
    assert_eq!(
        unfinished(created[2].updated_at, 10).await,
        stale[..1],
        "changed exactly at `before` is not before it"
    );
    assert_eq!(unfinished(before(10), 10).await, Vec::<PurchaseId>::new());
    // Everything not final, recent ones too, once `before` is later.
    assert_eq!(
        unfinished(now + Duration::seconds(1), 10).await,
        ids([&created[0], &created[2], &created[4], &created[5]])
    );
    // The whole purchases, not just their ids.
    let found = stores
        .purchases
        .unfinished_purchases(before(1), 1)
        .await
        .unwrap();
    assert_eq!(found, [created[0].clone()]);
}

async fn unfinished_purchases_follow_saves(stores: Stores) {
    seed(&stores, &[("book", 5)]).await;
    let hours_ago = |h| Utc::now() - Duration::hours(h);
    let mut created: Vec<Purchase> = (0..3)
        .map(|_| purchase("alice", PurchaseStatus::Pending))
        .collect();
    for p in &mut created {
        p.updated_at = hours_ago(2);
    }
    create_all(&stores, &created).await;
    let unfinished = async || {
        ids(&stores
            .purchases
            .unfinished_purchases(hours_ago(1), 10)
            .await
            .unwrap())
    };
    assert_eq!(unfinished().await, ids(&created));

    // 0 is touched now: no longer stale.
    let touched = next(&created[0], reserved);
    stores
        .purchases
        .save_purchase(&touched, &StockChange::None)
        .await
        .unwrap();
    // 1 becomes final (long ago), giving its stock back in the same write.
    let mut held = next(&created[1], reserved);
    held.updated_at = hours_ago(3);
    stores
        .purchases
        .save_purchase(&held, &take(&[("book", 2)]))
        .await
        .unwrap();
    let mut done = next(&held, cancelled);
    done.updated_at = hours_ago(3);
    stores
        .purchases
        .save_purchase(&done, &give_back(&[("book", 2)]))
        .await
        .unwrap();
    // 2 changes but stays stale and unfinished: it is returned as saved.
    let mut parked = next(&created[2], |p| p.status = PurchaseStatus::NeedsAttention);
    parked.updated_at = hours_ago(3);
    stores
        .purchases
        .save_purchase(&parked, &StockChange::None)
        .await
        .unwrap();

    let found = stores
        .purchases
        .unfinished_purchases(hours_ago(1), 10)
        .await
        .unwrap();
    assert_eq!(found, [parked]);
    assert_eq!(stock(&stores, "book").await, 5);
}

// ---------------------------------------------------------------------------
// Idempotency records.

async fn idempotency_key_is_claimed_once(stores: Stores) {
    let first = with_resource(record("key-1", "body-a", at(Duration::hours(24))), "p-1");
    assert_eq!(
        stores.idempotency.claim(&first).await.unwrap(),
        Claim::Claimed(first.clone()),
        "the first request claims the key, as sent"
    );
    // A retry of the same request, and a different request, while in flight.
    for fingerprint in ["body-a", "body-b"] {
        let retry = with_resource(record("key-1", fingerprint, at(Duration::hours(24))), "p-2");
        assert_eq!(
            stores.idempotency.claim(&retry).await.unwrap(),
            Claim::Taken(first.clone()),
            "{fingerprint}: a second claim sees the first, in flight"
        );
    }
    assert_eq!(
        stores.idempotency.get("key-1").await.unwrap(),
        Some(first),
        "the first claim is kept"
    );
    assert_eq!(stores.idempotency.get("key-2").await.unwrap(), None);
}

async fn concurrent_claims_of_one_key_have_one_winner(stores: Stores) {
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let idempotency = stores.idempotency.clone();
            let claim = with_resource(
                record("key-1", "body-a", at(Duration::hours(24))),
                &format!("p-{i}"),
            );
            tokio::spawn(async move { idempotency.claim(&claim).await.unwrap() })
        })
        .collect();
    let mut winners = Vec::new();
    let mut seen = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Claim::Claimed(record) => winners.push(record),
            Claim::Taken(existing) => seen.push(existing),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one claim wins");
    assert!(
        seen.iter().all(|existing| *existing == winners[0]),
        "the others see the winner's claim"
    );
    assert_eq!(
        stores.idempotency.get("key-1").await.unwrap().as_ref(),
        Some(&winners[0])
    );
}

/// A keyed create records its answer with the purchase: both or neither.
async fn a_create_completes_its_key_in_the_same_write(stores: Stores) {
    let p = purchase("alice", PurchaseStatus::Pending);
    let claim = with_resource(
        record("key-1", "body-a", at(Duration::seconds(60))),
        p.purchase_id.as_str(),
    );
    stores.idempotency.claim(&claim).await.unwrap();
    let completion = Completion {
        key: "key-1".into(),
        response: StoredResponse {
            status_code: 201,
            body: format!(r#"{{"purchaseId":"{}"}}"#, p.purchase_id),
        },
        expires_at: at(Duration::hours(24)),
    };
    assert!(
        stores
            .purchases
            .create_purchase(&p, Some(&completion))
            .await
            .unwrap(),
        "a held key is completed"
    );
    assert_eq!(stored(&stores, &p).await, p);
    let expected = IdempotencyRecord {
        response: Some(completion.response.clone()),
        in_flight: false,
        expires_at: completion.expires_at,
        ..claim.clone()
    };
    assert_eq!(
        stores.idempotency.get("key-1").await.unwrap(),
        Some(expected.clone())
    );

    // The purchase exists already (a retry): nothing is written, and the
    // key keeps what it had.
    let other = Completion {
        response: StoredResponse {
            status_code: 201,
            body: "{}".into(),
        },
        ..completion.clone()
    };
    let error = stores
        .purchases
        .create_purchase(&p, Some(&other))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::AlreadyExists(_)), "{error:?}");
    assert_eq!(
        stores.idempotency.get("key-1").await.unwrap(),
        Some(expected)
    );

    // A key nobody holds (its claim expired) is left alone; the purchase is
    // stored all the same.
    let q = purchase("alice", PurchaseStatus::Pending);
    let unheld = Completion {
        key: "never-claimed".into(),
        ..completion
    };
    assert!(
        !stores
            .purchases
            .create_purchase(&q, Some(&unheld))
            .await
            .unwrap()
    );
    assert_eq!(stored(&stores, &q).await, q);
    assert_eq!(stores.idempotency.get("never-claimed").await.unwrap(), None);
}

async fn idempotency_complete_stores_the_response(stores: Stores) {
    // Claimed for as long as a request may run; kept for a day once answered.
    let claim = with_resource(record("key-1", "body-a", at(Duration::seconds(60))), "p-1");
    let kept_until = at(Duration::hours(24));
    stores.idempotency.claim(&claim).await.unwrap();
    let response = StoredResponse {
        status_code: 201,
        body: r#"{"purchaseId":"p-1","status":"PENDING","note":"ünïcode \"quoted\""}"#.into(),
    };
    stores
        .idempotency
        .complete(&Completion {
            key: "key-1".into(),
            response: response.clone(),
            expires_at: kept_until,
        })
        .await
        .unwrap();
    let expected = IdempotencyRecord {
        response: Some(response.clone()),
        in_flight: false,
        expires_at: kept_until,
        ..claim
    };
    assert_eq!(
        stores.idempotency.get("key-1").await.unwrap(),
        Some(expected.clone())
    );
    // A retry replays it; a different request sees it is not its own.
    for fingerprint in ["body-a", "body-b"] {
        let retry = record("key-1", fingerprint, at(Duration::seconds(60)));
        assert_eq!(
            stores.idempotency.claim(&retry).await.unwrap(),
            Claim::Taken(expected.clone()),
            "{fingerprint}"
        );
    }

    let error = stores
        .idempotency
        .complete(&Completion {
            key: "never-claimed".into(),
            response: response.clone(),
            expires_at: kept_until,
        })
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::NotFound(_)), "{error:?}");
    assert_eq!(stores.idempotency.get("never-claimed").await.unwrap(), None);
}

async fn idempotency_release_lets_the_same_request_take_over_with_its_resource_id(stores: Stores) {
    let first = with_resource(
        record("key-1", "body-a", at(Duration::seconds(60))),
        "p-first",
    );
    stores.idempotency.claim(&first).await.unwrap();
    // The first attempt gave no final answer (a 5xx, a 409 that says retry).
    let remembered_until = at(Duration::hours(24));
    stores
        .idempotency
        .release("key-1", remembered_until)
        .await
        .unwrap();
    let released = IdempotencyRecord {
        in_flight: false,
        expires_at: remembered_until,
        ..first.clone()
    };
    assert_eq!(
        stores.idempotency.get("key-1").await.unwrap(),
        Some(released),
        "released: not in flight, no response, the resource remembered"
    );

    // The retry takes the key over and continues with the first's resource.
    let retry = with_resource(
        record("key-1", "body-a", at(Duration::seconds(90))),
        "p-retry",
    );
    let taken_over = IdempotencyRecord {
        resource_id: Some("p-first".into()),
        ..retry.clone()
    };
    assert_eq!(
        stores.idempotency.claim(&retry).await.unwrap(),
        Claim::Claimed(taken_over.clone())
    );
    assert_eq!(
        stores.idempotency.get("key-1").await.unwrap(),
        Some(taken_over.clone())
    );
    // In flight again: a third attempt has to wait.
    assert_eq!(
        stores.idempotency.claim(&retry).await.unwrap(),
        Claim::Taken(taken_over)
    );

    // A response after a takeover is kept like any other.
    let response = StoredResponse {
        status_code: 201,
        body: r#"{"purchaseId":"p-first"}"#.into(),
    };
    stores
        .idempotency
        .complete(&Completion {
            key: "key-1".into(),
            response: response.clone(),
            expires_at: remembered_until,
        })
        .await
        .unwrap();
    let done = stores.idempotency.get("key-1").await.unwrap().unwrap();
    assert_eq!(
        (done.response, done.in_flight, done.resource_id),
        (Some(response), false, Some("p-first".into()))
    );
}

async fn concurrent_takeovers_of_a_released_key_have_one_winner(stores: Stores) {
    let first = with_resource(
        record("key-1", "body-a", at(Duration::seconds(60))),
        "p-first",
    );
    stores.idempotency.claim(&first).await.unwrap();
    stores
        .idempotency
        .release("key-1", at(Duration::hours(24)))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let idempotency = stores.idempotency.clone();
            let claim = with_resource(
                record("key-1", "body-a", at(Duration::seconds(60))),
                &format!("p-{i}"),
            );
            tokio::spawn(async move { idempotency.claim(&claim).await.unwrap() })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Claim::Claimed(record) => winners.push(record),
            Claim::Taken(existing) => assert!(existing.in_flight, "{existing:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one retry takes over");
    assert_eq!(winners[0].resource_id.as_deref(), Some("p-first"));
    assert!(winners[0].in_flight);
}

async fn idempotency_released_key_is_taken_for_a_different_request(stores: Stores) {
    let first = with_resource(
        record("key-1", "body-a", at(Duration::seconds(60))),
        "p-first",
    );
    stores.idempotency.claim(&first).await.unwrap();
    stores
        .idempotency
        .release("key-1", at(Duration::hours(24)))
        .await
        .unwrap();
    let released = stores.idempotency.get("key-1").await.unwrap().unwrap();
    let other = with_resource(
        record("key-1", "body-b", at(Duration::seconds(60))),
        "p-other",
    );
    assert_eq!(
        stores.idempotency.claim(&other).await.unwrap(),
        Claim::Taken(released.clone()),
        "reusing a key for a different request never takes it"
    );
    assert_eq!(
        stores.idempotency.get("key-1").await.unwrap(),
        Some(released),
        "and changes nothing"
    );
}

async fn idempotency_claim_abandoned_in_flight_is_continued_by_the_same_request(stores: Stores) {
    // A request claimed the key, chose its purchase, and died in flight: the
    // claim's time ran out without a release.
    let died = with_resource(
        record("key-1", "body-a", at(Duration::seconds(-1))),
        "p-first",
    );
    assert_eq!(
        stores.idempotency.claim(&died).await.unwrap(),
        Claim::Claimed(died.clone())
    );
    // Its retry continues with the purchase the first attempt chose.
    let retry = with_resource(
        record("key-1", "body-a", at(Duration::seconds(60))),
        "p-second",
    );
    let Claim::Claimed(claimed) = stores.idempotency.claim(&retry).await.unwrap() else {
        panic!("the retry must hold the key");
    };
    assert_eq!(claimed.resource_id.as_deref(), Some("p-first"));
    assert!(claimed.in_flight);
    assert_eq!(claimed.expires_at.timestamp(), retry.expires_at.timestamp());
    // Another request with the expired key starts afresh.
    let other_died = with_resource(record("key-2", "body-a", at(Duration::seconds(-1))), "p-a");
    stores.idempotency.claim(&other_died).await.unwrap();
    let other = with_resource(record("key-2", "body-b", at(Duration::seconds(60))), "p-b");
    assert_eq!(
        stores.idempotency.claim(&other).await.unwrap(),
        Claim::Claimed(other.clone())
    );
}

async fn idempotency_expired_record_is_absent_and_claimable(stores: Stores) {
    // A record whose time is over, as if written a day ago: it is ignored
    // even though nothing has deleted it yet.
    let old = with_resource(
        record("key-1", "body-a", at(Duration::seconds(-1))),
        "p-old",
    );
    assert_eq!(
        stores.idempotency.claim(&old).await.unwrap(),
        Claim::Claimed(old.clone())
    );
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
        .complete(&Completion {
            key: "key-1".into(),
            response: response.clone(),
            expires_at: at(Duration::hours(24)),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::NotFound(_)),
        "an expired record cannot be completed: {error:?}"
    );

    // The key is free again, for any request.
    let fresh = with_resource(
        record("key-1", "body-b", at(Duration::hours(24))),
        "p-fresh",
    );
    assert_eq!(
        stores.idempotency.claim(&fresh).await.unwrap(),
        Claim::Claimed(fresh.clone())
    );
    assert_eq!(stores.idempotency.get("key-1").await.unwrap(), Some(fresh));

    // A released record that expired is forgotten with its resource: a
    // claim with the same fingerprint starts afresh.
    let claim = with_resource(
        record("key-2", "body-a", at(Duration::seconds(60))),
        "p-old",
    );
    stores.idempotency.claim(&claim).await.unwrap();
    stores
        .idempotency
        .release("key-2", at(Duration::seconds(-1)))
        .await
        .unwrap();
    assert_eq!(stores.idempotency.get("key-2").await.unwrap(), None);
    let again = with_resource(
        record("key-2", "body-a", at(Duration::seconds(60))),
        "p-new",
    );
    assert_eq!(
        stores.idempotency.claim(&again).await.unwrap(),
        Claim::Claimed(again)
    );
}

async fn idempotency_release_of_an_absent_or_expired_key_is_a_no_op(stores: Stores) {
    stores
        .idempotency
        .release("never-claimed", at(Duration::hours(24)))
        .await
        .unwrap();
    assert_eq!(stores.idempotency.get("never-claimed").await.unwrap(), None);

    // A claim that outlived its time, released afterwards: it stays gone
    // rather than coming back for another day.
    let stale = with_resource(
        record("key-1", "body-a", at(Duration::seconds(-1))),
        "p-stale",
    );
    stores.idempotency.claim(&stale).await.unwrap();
    stores
        .idempotency
        .release("key-1", at(Duration::hours(24)))
        .await
        .unwrap();
    assert_eq!(stores.idempotency.get("key-1").await.unwrap(), None);
    let other = record("key-1", "body-b", at(Duration::seconds(60)));
    assert_eq!(
        stores.idempotency.claim(&other).await.unwrap(),
        Claim::Claimed(other),
        "any request may claim it"
    );
}

// ---------------------------------------------------------------------------
// Rule sets.

fn rule_set(name: &str, version: u64, max: u32) -> RuleSetRecord {
    RuleSetRecord {
        name: name.to_owned(),
        description: "limits for ünïcode shoppers".into(),
        rules: vec![RuleRequest {
            id: Some("max-quantity".into()),
            parameters: Some(json!({"max": max, "onViolation": "hold"})),
        }],
        version,
        updated_at: DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap(),
        updated_by: "admin-1".into(),
    }
}

async fn rule_sets_are_created_once_replaced_by_version_and_deleted(stores: Stores) {
    let store = &stores.rule_sets;
    assert_eq!(store.get_rule_set("default").await.unwrap(), None);
    assert_eq!(store.list_rule_sets().await.unwrap(), []);
    let first = rule_set("default", 1, 3);
    store.create_rule_set(&first).await.unwrap();
    let error = store
        .create_rule_set(&rule_set("default", 1, 9))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::AlreadyExists(what) if what.contains("default")),
        "{error:?}"
    );
    assert_eq!(
        store.get_rule_set("default").await.unwrap(),
        Some(first.clone())
    );

    let second = rule_set("default", 2, 5);
    store.replace_rule_set(&second).await.unwrap();
    // A writer that read version 1 too lost the race; so does one that
    // skips a version.
    for version in [2, 4] {
        let error = store
            .replace_rule_set(&rule_set("default", version, 7))
            .await
            .unwrap_err();
        assert!(
            matches!(error, StoreError::VersionConflict),
            "{version}: {error:?}"
        );
    }
    let error = store
        .replace_rule_set(&rule_set("nope", 2, 7))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::NotFound(what) if what.contains("nope")),
        "{error:?}"
    );
    assert_eq!(
        store.get_rule_set("nope").await.unwrap(),
        None,
        "not created"
    );
    assert_eq!(
        store.get_rule_set("default").await.unwrap(),
        Some(second.clone())
    );

    let b2b = rule_set("b2b", 1, 100);
    store.create_rule_set(&b2b).await.unwrap();
    assert_eq!(store.list_rule_sets().await.unwrap(), [b2b, second]);

    assert!(store.delete_rule_set("default").await.unwrap());
    assert!(!store.delete_rule_set("default").await.unwrap());
    assert_eq!(store.get_rule_set("default").await.unwrap(), None);
    // The name is free again.
    store.create_rule_set(&first).await.unwrap();
}

async fn rule_sets_keep_their_rules_as_sent(stores: Stores) {
    let set = RuleSetRecord {
        rules: vec![
            RuleRequest {
                id: Some("max-amount".into()),
                parameters: Some(json!({
                    "max": 50000,
                    "currency": "EUR",
                    "ratio": 0.25,
                    "onViolation": "reject",
                    "nested": {"list": [1, "two", null, true], "empty": {}},
                    "blank": ""
                })),
            },
            // Parameters are optional, and so (until validated) is the id.
            RuleRequest {
                id: Some("no-parameters".into()),
                parameters: None,
            },
            RuleRequest {
                id: None,
                parameters: Some(json!({})),
            },
        ],
        description: String::new(),
        ..rule_set("mixed", 1, 0)
    };
    stores.rule_sets.create_rule_set(&set).await.unwrap();
    assert_eq!(
        stores.rule_sets.get_rule_set("mixed").await.unwrap(),
        Some(set.clone())
    );
    let emptied = RuleSetRecord {
        rules: Vec::new(),
        version: 2,
        ..set
    };
    stores.rule_sets.replace_rule_set(&emptied).await.unwrap();
    assert_eq!(stores.rule_sets.list_rule_sets().await.unwrap(), [emptied]);
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
        store
            .get_products(&[ProductId::from("book")])
            .await
            .unwrap(),
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
    let error = store
        .get_purchase(&PurchaseId::from("p-1"))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    let p = next(&purchase("alice", PurchaseStatus::Pending), reserved);
    let error = store
        .save_purchase(&p, &take(&[("book", 1)]))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    let error = store
        .claim(&record("key-1", "body-a", at(Duration::seconds(60))))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
}
