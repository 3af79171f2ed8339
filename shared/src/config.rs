//! Building the dependencies from environment variables, once per cold start.
//! Every variable is documented in README ("Configuration").

use std::sync::Arc;

use async_trait::async_trait;

use crate::api::App;
use crate::auth::{AuthConfig, JwtAuthenticator};
use crate::dynamodb::{DynamoStore, DynamoTables};
use crate::payment::{HttpPaymentGateway, PaymentGateway, SimulatedPaymentGateway, http_client};
use crate::provisioning::{HttpProvisioner, Provisioner, SimulatedProvisioner};
use crate::sfn::StepFunctionsWorkflow;
use crate::steps::StepDeps;
use crate::workflow::{Workflow, WorkflowError};

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// The value of `PAYMENT_URL` / `PROVISIONING_URL` that selects the built-in simulator.
pub const SIMULATOR: &str = "simulator";

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

/// A workflow port that refuses everything: for tests and tools that must
/// never touch a workflow.
pub struct NoWorkflow;

#[async_trait]
impl Workflow for NoWorkflow {
    async fn start(&self, _: &str) -> Result<(), WorkflowError> {
        Err(WorkflowError::Internal(
            "STATE_MACHINE_ARN is not configured for this function".into(),
        ))
    }

    async fn send_task_success(&self, _: &str, _: serde_json::Value) -> Result<(), WorkflowError> {
        Err(WorkflowError::Internal(
            "this function may not complete workflow tasks".into(),
        ))
    }

    async fn send_task_failure(&self, _: &str, _: &str, _: &str) -> Result<(), WorkflowError> {
        Err(WorkflowError::Internal(
            "this function may not complete workflow tasks".into(),
        ))
    }
}

/// Dependencies of the HTTP functions on AWS.
pub async fn lambda_app() -> Result<App, ConfigError> {
    let sdk = aws_config().await;
    let store = Arc::new(dynamodb_store_from_env(&sdk));
    let workflow = step_functions(&sdk);
    let auth_config = AuthConfig::from_env().map_err(|e| ConfigError(e.to_string()))?;
    let auth = JwtAuthenticator::new(auth_config).map_err(|e| ConfigError(e.to_string()))?;
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
        inventory: store.clone(),
        rule_sets: store,
        payments: payment_gateway(None)?,
        provisioning: provisioner(None)?,
        workflow: step_functions(&sdk),
    })
}

/// Step Functions for starting executions (`STATE_MACHINE_ARN`, only the
/// create function has it) and completing review tasks (IAM decides who may).
fn step_functions(sdk: &aws_config::SdkConfig) -> Arc<dyn Workflow> {
    let client = aws_sdk_sfn::Client::new(sdk);
    match env("STATE_MACHINE_ARN") {
        Some(arn) => Arc::new(StepFunctionsWorkflow::new(client, Some(arn))),
        None => Arc::new(StepFunctionsWorkflow::new(client, None)),
    }
}
