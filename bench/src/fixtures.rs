//! What the handlers run on in a benchmark: real HS256 auth, a real store
//! (redb in a directory, or DynamoDB on moto), a workflow that does nothing,
//! and the requests of `events/` as `ApiRequest`s.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use shared::adapters::embedded::EmbeddedStore;
use shared::api::app::App;
use shared::api::endpoint::Endpoint;
use shared::api::request::{ApiRequest, ApiResponse};
use shared::auth::{AuthConfig, JwtAuthenticator, KeySource, Scope, mint_hs256_token};
use shared::domain::purchase::Product;
use shared::domain::purchase::TaskDecision;
use shared::ports::store::Inventory;
use shared::ports::workflow::{
    ExecutionState, Machine, Run, Workflow, WorkflowError, WorkflowType,
};
use shared::steps::{Step, StepDeps};

use crate::Result;

/// The HS256 secret every benchmark signs and verifies with (≥ 32 bytes).
pub const SECRET: &str = "bench-only-hs256-secret-0123456789abcdef";
pub const ISSUER: &str = shared::auth::DEFAULT_ISSUER;
pub const AUDIENCE: &str = shared::auth::DEFAULT_AUDIENCE;
/// The customer of `events/` (`customer-123`).
pub const CUSTOMER: &str = "customer-123";
pub const ADMIN: &str = "back-office";
/// The purchase id `events/` use; replaced by a real one per run.
pub const EVENTS_PURCHASE_ID: &str = "0197a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b";

/// A workflow port that accepts everything and does nothing: the warm
/// benchmarks measure the handler, not Step Functions.
pub struct NoopWorkflow;

#[async_trait]
impl Workflow for NoopWorkflow {
    fn workflow_type(&self) -> WorkflowType {
        WorkflowType::Standard
    }
    async fn start(&self, _: &Run) -> Result<(), WorkflowError> {
        Ok(())
    }
    async fn describe(&self, _: Machine, _: &Run) -> Result<Option<ExecutionState>, WorkflowError> {
        Ok(Some(ExecutionState::Running))
    }
    async fn notify(&self, _: &str, _: TaskDecision) -> Result<(), WorkflowError> {
        Ok(())
    }
    async fn redrive(&self, _: &Run) -> Result<(), WorkflowError> {
        Ok(())
    }
}

pub fn auth_config() -> AuthConfig {
    AuthConfig {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        leeway_seconds: 30,
        keys: KeySource::Hs256 {
            secret: SECRET.into(),
        },
    }
}

pub fn authenticator() -> Result<JwtAuthenticator> {
    Ok(JwtAuthenticator::new(auth_config())?)
}

/// A day-long token for `customer` with `scopes`.
pub fn token(customer: &str, scopes: &[Scope]) -> Result<String> {
    Ok(mint_hs256_token(
        SECRET,
        ISSUER,
        AUDIENCE,
        customer,
        scopes,
        Duration::from_secs(24 * 3600),
    )?)
}

pub fn user_token() -> Result<String> {
    token(CUSTOMER, &[Scope::Read, Scope::Write])
}

pub fn admin_token() -> Result<String> {
    token(ADMIN, &Scope::ALL)
}

/// The demo catalog with practically unlimited stock, so load tests never
/// run out.
pub fn bench_catalog() -> Result<Vec<Product>> {
    let mut products = local::catalog::load(None)?;
    for product in &mut products {
        product.stock = 1_000_000_000_000;
    }
    Ok(products)
}

pub async fn seed_catalog(inventory: &dyn Inventory) -> Result<()> {
    for product in bench_catalog()? {
        inventory.add_product_if_absent(&product).await?;
    }
    Ok(())
}

/// `POST /purchases` body of `events/create-purchase.json`: one digital and
/// one physical product, a card that is captured.
pub fn create_body() -> Value {
    json!({
        "customerId": CUSTOMER,
        "products": [{"id": "ebook-rust", "quantity": 1}, {"id": "mug-ferris", "quantity": 2}],
        "paymentDetails": {"method": "card", "transactionId": "tok_visa"},
        "shippingAddress": {"name": "Ada Lovelace", "address": "12 Example Street", "city": "Berlin", "country": "DE", "postalCode": "10115"}
    })
}

pub fn update_body() -> Value {
    json!({"shippingAddress": {"name": "Ada Lovelace", "address": "1 Harbour Road", "city": "Hamburg", "country": "DE", "postalCode": "20095"}})
}

/// Rules that pass: the purchase stays where it is, the results are stored.
pub fn passing_rules_body() -> Value {
    json!({"rules": [{"id": "max-quantity", "parameters": {"max": 10}}, {"id": "allowed-countries", "parameters": {"countries": ["DE", "FR"]}}]})
}

/// A rule that holds the purchase for review.
pub fn hold_rules_body() -> Value {
    json!({"rules": [{"id": "manual-review", "parameters": {"reason": "bench", "onViolation": "hold"}}]})
}

pub fn approve_body() -> Value {
    json!({"decision": "approve", "reason": "verified"})
}

/// An `ApiRequest` as the Lambda adapter or the local server builds it.
pub fn request(
    token: &str,
    body: Option<&Value>,
    purchase_id: Option<&str>,
    query: &[(&str, &str)],
) -> ApiRequest {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::try_from(format!("Bearer {token}")).expect("a JWT is a valid header value"),
    );
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    let body = match body {
        Some(value) => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Bytes::from(value.to_string())
        }
        None => Bytes::new(),
    };
    ApiRequest {
        headers,
        body,
        purchase_id: purchase_id.map(str::to_owned),
        query: query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        request_id: "bench".into(),
        ..ApiRequest::default()
    }
}

/// A request on `/rules/{ruleSetName}` (or `/rules` without a name).
pub fn rule_set_request(token: &str, body: Option<&Value>, name: Option<&str>) -> ApiRequest {
    let mut request = request(token, body, None, &[]);
    request.rule_set_name = name.map(str::to_owned);
    request
}

/// The body of `events/create-rule-set.json`: the default rule set, which
/// the `EvaluateRules` step applies to every purchase (these rules pass).
pub fn rule_set_body() -> Value {
    json!({"name": shared::ports::store::DEFAULT_RULE_SET, "description": "Limits for every purchase",
           "rules": [{"id": "max-quantity", "parameters": {"max": 10}},
                     {"id": "blocked-countries", "parameters": {"countries": ["KP"]}}]})
}

pub fn rule_set_update_body() -> Value {
    json!({"description": "Limits for every purchase",
           "rules": [{"id": "max-quantity", "parameters": {"max": 20}}]})
}

/// Makes sure the default rule set exists (creating it answers 409 if it does).
pub async fn ensure_rule_set(app: &App) -> Result<()> {
    let response = Endpoint::CreateRuleSet
        .handle(
            app,
            &rule_set_request(&admin_token()?, Some(&rule_set_body()), None),
        )
        .await;
    if response.status().is_success() || response.status() == StatusCode::CONFLICT {
        Ok(())
    } else {
        expect_ok(&response, "create rule set")
    }
}

/// Makes sure the default rule set does not exist.
pub async fn remove_rule_set(app: &App) -> Result<()> {
    let response = Endpoint::DeleteRuleSet
        .handle(
            app,
            &rule_set_request(
                &admin_token()?,
                None,
                Some(shared::ports::store::DEFAULT_RULE_SET),
            ),
        )
        .await;
    if response.status().is_success() || response.status() == StatusCode::NOT_FOUND {
        Ok(())
    } else {
        expect_ok(&response, "delete rule set")
    }
}

/// Adds an `Idempotency-Key` header.
pub fn with_idempotency_key(mut request: ApiRequest, key: &str) -> ApiRequest {
    request.headers.insert(
        "idempotency-key",
        HeaderValue::try_from(key).expect("uuid is a valid header value"),
    );
    request
}

/// The baseline: a hello-world handler doing the same request → response
/// conversion (look at the request, answer JSON with the shared helper).
pub async fn hello_handler(request: &ApiRequest) -> ApiResponse {
    let body = json!({
        "message": "hello",
        "bytes": request.body.len(),
        "authorized": request.headers.contains_key(header::AUTHORIZATION),
    });
    shared::api::error::json_response(StatusCode::OK, body.to_string())
}

/// The App of the local server, on an embedded store in `dir`, with the
/// bench catalog, real HS256 auth and a no-op workflow.
pub async fn embedded_app(dir: &Path) -> Result<App> {
    let store = Arc::new(EmbeddedStore::open(dir)?);
    seed_catalog(store.as_ref()).await?;
    Ok(App {
        purchases: store.clone(),
        inventory: store.clone(),
        idempotency: store.clone(),
        rule_sets: store,
        workflow: Arc::new(NoopWorkflow),
        auth: Arc::new(authenticator()?),
    })
}

/// Dependencies on DynamoDB at `endpoint` (moto), for seeding purchases in
/// the states the cold-start runs need.
pub struct DynamoFixture {
    pub app: App,
    pub steps: StepDeps,
}

impl DynamoFixture {
    pub async fn connect(endpoint: &str) -> Result<DynamoFixture> {
        let sdk = shared::lambda::config::aws_config().await?;
        let store = Arc::new(shared::lambda::config::dynamodb_store(
            &sdk,
            Some(endpoint),
            shared::adapters::dynamodb::DynamoTables::from_env(),
        ));
        store.create_tables().await?;
        seed_catalog(store.as_ref()).await?;
        let app = App {
            purchases: store.clone(),
            inventory: store.clone(),
            idempotency: store.clone(),
            rule_sets: store.clone(),
            workflow: Arc::new(NoopWorkflow),
            auth: Arc::new(authenticator()?),
        };
        let steps = StepDeps {
            purchases: store.clone(),
            rule_sets: store,
            payments: Arc::new(shared::adapters::simulators::SimulatedPaymentGateway::default()),
            provisioning: Arc::new(shared::adapters::simulators::SimulatedProvisioner::default()),
            workflow: Arc::new(NoopWorkflow),
        };
        Ok(DynamoFixture { app, steps })
    }
}

/// Creates a purchase through the handler and returns its id.
pub async fn create_purchase(app: &App) -> Result<String> {
    let response = Endpoint::CreatePurchase
        .handle(
            app,
            &request(&user_token()?, Some(&create_body()), None, &[]),
        )
        .await;
    purchase_id_of(&response)
}

/// Puts a purchase `ON_HOLD` through the apply-rules handler.
pub async fn hold(app: &App, purchase_id: &str) -> Result<()> {
    let response = Endpoint::ApplyRules
        .handle(
            app,
            &request(
                &admin_token()?,
                Some(&hold_rules_body()),
                Some(purchase_id),
                &[],
            ),
        )
        .await;
    expect_ok(&response, "apply-rules (hold)")
}

/// Runs workflow steps in-process, in order, on one purchase.
pub async fn run_steps(deps: &StepDeps, purchase_id: &str, steps: &[Step]) -> Result<()> {
    for step in steps {
        step.run(deps, json!({ "purchaseId": purchase_id }), None)
            .await
            .map_err(|e| format!("{}: {e}", step.state_name()))?;
    }
    Ok(())
}

pub fn purchase_id_of(response: &ApiResponse) -> Result<String> {
    expect_ok(response, "create")?;
    let value: Value = serde_json::from_str(response.body())?;
    value["purchaseId"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no purchaseId in {}", response.body()).into())
}

pub fn expect_ok(response: &ApiResponse, what: &str) -> Result<()> {
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("{what}: {} {}", response.status(), response.body()).into())
    }
}
