//! Warm handler cost (issue 9, section 2): per-invocation time of every
//! endpoint handler with real HS256 auth, validation and the embedded store
//! (redb), a no-op workflow, against a hello-world handler doing the same
//! request → response conversion.
//!
//! - `handler/disk`, `handler/tmpfs`: `Endpoint::handle(&app, &ApiRequest)`,
//!   the store in a directory on disk or on tmpfs (`/dev/shm`, where fsync
//!   costs nothing): the difference is what redb's durable commits cost.
//! - `invocation`: the whole warm Lambda invocation minus the Runtime API
//!   round trip: API Gateway event JSON → `lambda_http` → handler → response JSON.
//! - `parts`: JWT verification, a redb commit (durable and not), the
//!   blocking-pool hop every store call takes.
//!
//! Run with `cargo bench -p bench` (scripts/bench.sh does).

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bench::fixtures::{self, hello_handler};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use lambda_http::{Context, LambdaEvent, Request, Service, service_fn};
use serde_json::{Value, json};
use shared::api::app::App;
use shared::api::endpoint::Endpoint;
use shared::api::request::ApiRequest;
use tokio::runtime::Runtime;

struct Bench {
    app: &'static App,
    user: String,
    admin: String,
    get_id: String,
}

fn block<F: std::future::Future>(rt: &Runtime, future: F) -> F::Output {
    rt.block_on(future)
}

fn setup(rt: &Runtime, dir: &Path) -> Bench {
    let app = block(rt, fixtures::embedded_app(dir)).expect("embedded app");
    let app: &'static App = Box::leak(Box::new(app));
    // A full first page for the list benchmark, and one purchase to GET.
    for _ in 0..25 {
        block(rt, fixtures::create_purchase(app)).expect("seed purchase");
    }
    let get_id = block(rt, fixtures::create_purchase(app)).expect("purchase to GET");
    Bench {
        app,
        user: fixtures::user_token().expect("token"),
        admin: fixtures::admin_token().expect("token"),
        get_id,
    }
}

fn fresh(rt: &Runtime, bench: &Bench) -> String {
    block(rt, fixtures::create_purchase(bench.app)).expect("fresh purchase")
}

fn handle(rt: &Runtime, bench: &Bench, endpoint: Endpoint, request: &ApiRequest) {
    let response = block(rt, endpoint.handle(bench.app, request));
    assert!(
        response.status().is_success(),
        "{endpoint:?}: {} {}",
        response.status(),
        response.body()
    );
}

fn handler_group(c: &mut Criterion, rt: &Runtime, label: &str, dir: &Path) {
    let bench = setup(rt, dir);
    let mut group = c.benchmark_group(format!("handler/{label}"));
    let user = bench.user.clone();
    let admin = bench.admin.clone();
    let create = fixtures::create_body();

    let hello = fixtures::request(&user, Some(&create), None, &[]);
    group.bench_function("hello", |b| {
        b.iter(|| block(rt, hello_handler(&hello)));
    });
    let get = fixtures::request(&user, None, Some(&bench.get_id), &[]);
    group.bench_function("get_purchase", |b| {
        b.iter(|| handle(rt, &bench, Endpoint::GetPurchase, &get));
    });
    let list = fixtures::request(&user, None, None, &[("limit", "20")]);
    group.bench_function("list_purchases", |b| {
        b.iter(|| handle(rt, &bench, Endpoint::ListPurchases, &list));
    });
    let create_request = fixtures::request(&user, Some(&create), None, &[]);
    group.bench_function("create_purchase", |b| {
        b.iter(|| handle(rt, &bench, Endpoint::CreatePurchase, &create_request));
    });
    group.bench_function("create_purchase_idempotency_key", |b| {
        b.iter_batched(
            || {
                let key = uuid::Uuid::now_v7().to_string();
                fixtures::with_idempotency_key(create_request.clone(), &key)
            },
            |request| handle(rt, &bench, Endpoint::CreatePurchase, &request),
            BatchSize::SmallInput,
        );
    });
    let per_purchase = |endpoint: Endpoint, token: &str, body: Option<Value>, hold: bool| {
        let bench = &bench;
        let token = token.to_owned();
        move || {
            let id = fresh(rt, bench);
            if hold {
                block(rt, fixtures::hold(bench.app, &id)).expect("hold");
            }
            (
                endpoint,
                fixtures::request(&token, body.as_ref(), Some(&id), &[]),
            )
        }
    };
    for (name, endpoint, token, body, hold) in [
        (
            "update_purchase",
            Endpoint::UpdatePurchase,
            &user,
            Some(fixtures::update_body()),
            false,
        ),
        (
            "cancel_purchase",
            Endpoint::CancelPurchase,
            &user,
            None,
            false,
        ),
        (
            "apply_rules",
            Endpoint::ApplyRules,
            &admin,
            Some(fixtures::passing_rules_body()),
            false,
        ),
        (
            "review_purchase",
            Endpoint::ReviewPurchase,
            &admin,
            Some(fixtures::approve_body()),
            true,
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched(
                per_purchase(endpoint, token, body.clone(), hold),
                |(endpoint, request)| handle(rt, &bench, endpoint, &request),
                BatchSize::SmallInput,
            );
        });
    }
    block(rt, fixtures::ensure_rule_set(bench.app)).expect("default rule set");
    let rule_set = Some(shared::ports::store::DEFAULT_RULE_SET);
    let list_rule_sets = fixtures::rule_set_request(&admin, None, None);
    group.bench_function("list_rule_sets", |b| {
        b.iter(|| handle(rt, &bench, Endpoint::ListRuleSets, &list_rule_sets));
    });
    let get_rule_set = fixtures::rule_set_request(&admin, None, rule_set);
    group.bench_function("get_rule_set", |b| {
        b.iter(|| handle(rt, &bench, Endpoint::GetRuleSet, &get_rule_set));
    });
    let update_rule_set =
        fixtures::rule_set_request(&admin, Some(&fixtures::rule_set_update_body()), rule_set);
    group.bench_function("update_rule_set", |b| {
        b.iter(|| handle(rt, &bench, Endpoint::UpdateRuleSet, &update_rule_set));
    });
    group.finish();
}

/// An API Gateway REST proxy event as Lambda delivers it.
fn event(method: &str, path: &str, token: &str, body: Option<&Value>, id: Option<&str>) -> Vec<u8> {
    let resource = if id.is_some() {
        "/purchase-orchestrator/purchases/{purchaseId}"
    } else {
        "/purchase-orchestrator/purchases"
    };
    let headers = json!({
        "Accept": "application/json",
        "Authorization": format!("Bearer {token}"),
        "Content-Type": "application/json",
        "Host": "abcdef1234.execute-api.us-east-1.amazonaws.com",
        "User-Agent": "curl/8.5.0",
        "X-Amzn-Trace-Id": "Root=1-6744a1b0-0123456789abcdef01234561",
        "X-Forwarded-For": "203.0.113.10",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https"
    });
    let multi: serde_json::Map<String, Value> = headers
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), json!([v]))).collect())
        .unwrap_or_default();
    serde_json::to_vec(&json!({
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": multi,
        "queryStringParameters": null,
        "multiValueQueryStringParameters": null,
        "pathParameters": id.map(|id| json!({"purchaseId": id})),
        "stageVariables": null,
        "requestContext": {
            "resourceId": "a1b2c3", "resourcePath": resource, "httpMethod": method,
            "extendedRequestId": "AbCdEfGhIjKlMn1=", "requestTime": "25/Nov/2026:12:00:00 +0000",
            "path": format!("/dev{path}"), "accountId": "123456789012", "protocol": "HTTP/1.1",
            "stage": "dev", "domainPrefix": "abcdef1234", "requestTimeEpoch": 1795608000001u64,
            "requestId": "5f0c2d9e-1a3b-4c5d-8e7f-000000000001",
            "identity": {"sourceIp": "203.0.113.10", "userAgent": "curl/8.5.0"},
            "domainName": "abcdef1234.execute-api.us-east-1.amazonaws.com", "apiId": "abcdef1234"
        },
        "body": body.map(|b| b.to_string()),
        "isBase64Encoded": false
    }))
    .expect("event JSON")
}

/// One warm invocation without the Runtime API round trip: decode the
/// event, run it through `lambda_http`'s adapter, encode the response.
async fn invoke(app: &'static App, endpoint: Option<Endpoint>, event: &[u8]) -> Vec<u8> {
    let payload: lambda_http::request::LambdaRequest =
        serde_json::from_slice(event).expect("API Gateway event");
    let handler = service_fn(move |request: Request| async move {
        let response = match endpoint {
            Some(endpoint) => {
                endpoint
                    .handle(app, &shared::lambda::api_request(request))
                    .await
            }
            None => hello_handler(&shared::lambda::api_request(request)).await,
        };
        Ok::<_, Infallible>(response)
    });
    let mut adapter = lambda_http::Adapter::from(handler);
    let response = adapter
        .call(LambdaEvent::new(payload, Context::default()))
        .await
        .expect("infallible");
    serde_json::to_vec(&response).expect("response JSON")
}

fn invocation_group(c: &mut Criterion, rt: &Runtime, dir: &Path) {
    let bench = setup(rt, dir);
    let app = bench.app;
    let mut group = c.benchmark_group("invocation");
    let create = fixtures::create_body();
    let get_path = format!("/purchase-orchestrator/purchases/{}", bench.get_id);
    let hello = event("GET", &get_path, &bench.user, None, Some(&bench.get_id));
    group.bench_function("hello", |b| {
        b.iter(|| block(rt, invoke(app, None, &hello)));
    });
    group.bench_function("get_purchase", |b| {
        b.iter(|| block(rt, invoke(app, Some(Endpoint::GetPurchase), &hello)));
    });
    let list = event(
        "GET",
        "/purchase-orchestrator/purchases",
        &bench.user,
        None,
        None,
    );
    group.bench_function("list_purchases", |b| {
        b.iter(|| block(rt, invoke(app, Some(Endpoint::ListPurchases), &list)));
    });
    let post = event(
        "POST",
        "/purchase-orchestrator/purchases",
        &bench.user,
        Some(&create),
        None,
    );
    group.bench_function("create_purchase", |b| {
        b.iter(|| block(rt, invoke(app, Some(Endpoint::CreatePurchase), &post)));
    });
    group.finish();
}

fn parts_group(c: &mut Criterion, rt: &Runtime, disk: &Path, tmpfs: Option<&Path>) {
    let mut group = c.benchmark_group("parts");
    let auth = fixtures::authenticator().expect("authenticator");
    let token = fixtures::user_token().expect("token");
    group.bench_function("jwt_verify_hs256", |b| {
        b.iter(|| block(rt, auth.verify(&token)).expect("valid token"));
    });
    group.bench_function("spawn_blocking_hop", |b| {
        b.iter(|| block(rt, async { tokio::task::spawn_blocking(|| 1).await }).expect("join"));
    });
    let table: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("t");
    let mut dirs = vec![("disk", disk.to_path_buf())];
    if let Some(tmpfs) = tmpfs {
        dirs.push(("tmpfs", tmpfs.to_path_buf()));
    }
    for (label, dir) in dirs {
        let db = redb::Database::create(dir.join("commit.redb")).expect("redb");
        let value = vec![7u8; 1500]; // about one purchase's JSON
        for (durability, name) in [
            (redb::Durability::Immediate, "immediate"),
            (redb::Durability::None, "none"),
        ] {
            group.bench_function(format!("redb_commit_{name}/{label}"), |b| {
                let mut i = 0u64;
                b.iter(|| {
                    i += 1;
                    let mut txn = db.begin_write().expect("write txn");
                    txn.set_durability(durability).expect("durability");
                    {
                        let mut t = txn.open_table(table).expect("table");
                        t.insert(format!("k{}", i % 1000).as_str(), value.as_slice())
                            .expect("insert");
                    }
                    txn.commit().expect("commit");
                });
            });
        }
    }
    group.finish();
}

fn tempdir_in(base: &Path) -> tempfile::TempDir {
    std::fs::create_dir_all(base).expect("bench temp base");
    tempfile::tempdir_in(base).expect("temp dir")
}

fn benches(c: &mut Criterion) {
    let rt = Runtime::new().expect("tokio runtime");
    // On disk: the target directory's tmp (same file system as a real DATA_DIR).
    let disk_base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-handlers");
    let tmpfs_base = Path::new("/dev/shm");
    let tmpfs = tmpfs_base.is_dir().then(|| tempdir_in(tmpfs_base));

    let disk = tempdir_in(&disk_base);
    handler_group(c, &rt, "disk", &disk.path().join("handler"));
    if let Some(tmpfs) = &tmpfs {
        handler_group(c, &rt, "tmpfs", &tmpfs.path().join("handler"));
    }
    invocation_group(c, &rt, &disk.path().join("invocation"));
    parts_group(c, &rt, disk.path(), tmpfs.as_ref().map(|t| t.path()));
}

fn config() -> Criterion {
    let seconds = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    Criterion::default()
        .warm_up_time(Duration::from_secs(seconds("BENCH_WARMUP_SECS", 1)))
        .measurement_time(Duration::from_secs(seconds("BENCH_MEASURE_SECS", 3)))
        .sample_size(30)
        .without_plots()
}

criterion_group! {
    name = handlers;
    config = config();
    targets = benches
}
criterion_main!(handlers);
