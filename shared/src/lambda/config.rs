//! Building a Lambda function's dependencies from environment variables,
//! once per cold start. Every variable is documented in README
//! ("Configuration").

use std::sync::Arc;
use std::time::Duration;

use crate::adapters::dynamodb::{DynamoStore, DynamoTables};
use crate::adapters::http_client::http_client;
use crate::adapters::http_payment::HttpPaymentGateway;
use crate::adapters::http_provisioning::HttpProvisioner;
use crate::adapters::sfn::{StateMachines, StepFunctionsWorkflow};
use crate::adapters::simulators::{SimulatedPaymentGateway, SimulatedProvisioner};
use crate::api::app::App;
use crate::auth::{AuthConfig, JwtAuthenticator, KeySource};
use crate::ports::payment::PaymentGateway;
use crate::ports::provisioning::Provisioner;
use crate::ports::store::PurchaseStore;
use crate::ports::workflow::{Workflow, WorkflowType};
use crate::steps::StepDeps;

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// The value of `PAYMENT_URL` / `PROVISIONING_URL` that selects the built-in simulator.
pub const SIMULATOR: &str = "simulator";

/// Set (to `1`) only by local tooling that runs the Lambda functions on one
/// machine: it allows HS256 development tokens. Never set by the template.
pub const LOCAL_DEVELOPMENT: &str = "LOCAL_DEVELOPMENT";

pub fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

/// `PAYMENT_URL`: an HTTP base URL, or `simulator`. On AWS it has no
/// default, so a deployment never simulates payments by accident.
pub fn payment_gateway(default: Option<&str>) -> Result<Arc<dyn PaymentGateway>, ConfigError> {
    match env("PAYMENT_URL").as_deref().or(default) {
        Some(SIMULATOR) => Ok(Arc::new(SimulatedPaymentGateway::default())),
        Some(url) => Ok(Arc::new(HttpPaymentGateway::new(url, client()?))),
        None => Err(ConfigError(
            "PAYMENT_URL is not set (an https URL, or \"simulator\")".into(),
        )),
    }
}

/// `PROVISIONING_URL`: an HTTP base URL, or `simulator`.
pub fn provisioner(default: Option<&str>) -> Result<Arc<dyn Provisioner>, ConfigError> {
    match env("PROVISIONING_URL").as_deref().or(default) {
        Some(SIMULATOR) => Ok(Arc::new(SimulatedProvisioner::default())),
        Some(url) => Ok(Arc::new(HttpProvisioner::new(url, client()?))),
        None => Err(ConfigError(
            "PROVISIONING_URL is not set (an https URL, or \"simulator\")".into(),
        )),
    }
}

fn client() -> Result<reqwest::Client, ConfigError> {
    http_client().map_err(|e| ConfigError(format!("HTTP client: {e}")))
}

/// The AWS SDK configuration shared by every client.
///
/// Retries: standard mode, 3 attempts with exponential backoff — the SDK's
/// default, set explicitly so it is a decision, not an accident. A request
/// still failing after that surfaces as 503 + Retry-After (API) or
/// `Transient` (steps, which Step Functions retries again).
pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3))
        .load()
        .await
}

/// The DynamoDB store as configured by `DYNAMODB_ENDPOINT` and the table
/// name variables.
pub fn dynamodb_store_from_env(sdk: &aws_config::SdkConfig) -> DynamoStore {
    dynamodb_store(
        sdk,
        env("DYNAMODB_ENDPOINT").as_deref(),
        DynamoTables::from_env(),
    )
}

/// `endpoint` points the store at a DynamoDB-API server for local runs and
/// tests (moto on 127.0.0.1); `None` is AWS.
pub fn dynamodb_store(
    sdk: &aws_config::SdkConfig,
    endpoint: Option<&str>,
    tables: DynamoTables,
) -> DynamoStore {
    let mut builder = aws_sdk_dynamodb::config::Builder::from(sdk);
    if let Some(endpoint) = endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    DynamoStore::new(aws_sdk_dynamodb::Client::from_conf(builder.build()), tables)
}

/// The JWT configuration of an API function: a JWKS on AWS. HS256 shared
/// secrets are for local development only and refused otherwise.
pub fn lambda_auth_config() -> Result<AuthConfig, ConfigError> {
    let config = AuthConfig::from_env().map_err(|e| ConfigError(e.to_string()))?;
    if matches!(config.keys, KeySource::Hs256 { .. }) && env(LOCAL_DEVELOPMENT).is_none() {
        return Err(ConfigError(
            "JWT_HS256_SECRET is for local development only; set JWKS_URL to your auth server's keys"
                .into(),
        ));
    }
    Ok(config)
}

/// Dependencies of the HTTP functions on AWS.
pub async fn lambda_app() -> Result<App, ConfigError> {
    let sdk = aws_config().await;
    let store = Arc::new(dynamodb_store_from_env(&sdk));
    let workflow = step_functions(&sdk)?;
    let auth =
        JwtAuthenticator::new(lambda_auth_config()?).map_err(|e| ConfigError(e.to_string()))?;
    Ok(App {
        purchases: store.clone(),
        inventory: store.clone(),
        idempotency: store.clone(),
        rule_sets: store,
        workflow,
        auth: Arc::new(auth),
    })
}

/// Dependencies of the step functions on AWS.
pub async fn lambda_step_deps() -> Result<StepDeps, ConfigError> {
    let sdk = aws_config().await;
    let store = Arc::new(dynamodb_store_from_env(&sdk));
    Ok(StepDeps {
        purchases: store.clone(),
        rule_sets: store,
        payments: payment_gateway(None)?,
        provisioning: provisioner(None)?,
        workflow: step_functions(&sdk)?,
    })
}

/// What the reconciler needs: the purchases, the workflow, and how long a
/// purchase must have been unchanged before it is looked at
/// (`RECONCILE_AFTER_SECONDS`, default 300).
pub struct Reconciler {
    pub purchases: Arc<dyn PurchaseStore>,
    pub workflow: Arc<dyn Workflow>,
    pub stale_after: Duration,
}

/// The default of `RECONCILE_AFTER_SECONDS`: well past any request or step
/// in flight, soon enough that a stranded purchase is noticed in minutes.
pub const DEFAULT_RECONCILE_AFTER: Duration = Duration::from_secs(300);

/// `RECONCILE_AFTER_SECONDS`, or the default.
pub fn reconcile_after() -> Result<Duration, ConfigError> {
    match env("RECONCILE_AFTER_SECONDS") {
        None => Ok(DEFAULT_RECONCILE_AFTER),
        Some(text) => text
            .trim()
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| {
                ConfigError(format!(
                    "RECONCILE_AFTER_SECONDS={text:?} is not a whole number of seconds"
                ))
            }),
    }
}

/// Dependencies of the reconciler function on AWS.
pub async fn lambda_reconciler() -> Result<Reconciler, ConfigError> {
    let sdk = aws_config().await;
    Ok(Reconciler {
        purchases: Arc::new(dynamodb_store_from_env(&sdk)),
        workflow: step_functions(&sdk)?,
        stale_after: reconcile_after()?,
    })
}

/// `WORKFLOW_TYPE`: how the purchase state machine is deployed
/// (`STANDARD`, the default, or `EXPRESS`).
pub fn workflow_type() -> Result<WorkflowType, ConfigError> {
    match env("WORKFLOW_TYPE") {
        None => Ok(WorkflowType::Standard),
        Some(text) => WorkflowType::parse(&text).ok_or_else(|| {
            ConfigError(format!(
                "WORKFLOW_TYPE={text:?}: expected \"STANDARD\" or \"EXPRESS\""
            ))
        }),
    }
}

/// Step Functions for starting, describing and redriving executions
/// (`STATE_MACHINE_ARN`, `REVIEW_STATE_MACHINE_ARN` and `WORKFLOW_TYPE`, set
/// for the functions that do) and completing review tasks (IAM decides who
/// may).
pub fn step_functions(sdk: &aws_config::SdkConfig) -> Result<Arc<dyn Workflow>, ConfigError> {
    let mut builder = aws_sdk_sfn::config::Builder::from(sdk);
    if let Some(endpoint) = env("STEP_FUNCTIONS_ENDPOINT") {
        builder = builder.endpoint_url(endpoint);
    }
    let client = aws_sdk_sfn::Client::from_conf(builder.build());
    let machines = StateMachines {
        purchase: env("STATE_MACHINE_ARN"),
        review: env("REVIEW_STATE_MACHINE_ARN"),
        workflow_type: workflow_type()?,
    };
    Ok(Arc::new(StepFunctionsWorkflow::new(client, machines)))
}
