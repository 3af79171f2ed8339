//! Building a Lambda function's dependencies from environment variables,
//! once per cold start. Every variable is documented in README
//! ("Configuration").
//!
//! Each constructor exists when the crate features it builds from are
//! enabled (`lambda_app`: `api`, `dynamodb`, `sfn`; `lambda_step_deps`:
//! `steps`, `dynamodb`, `sfn`; `lambda_reconciler`: `dynamodb`, `sfn`), so
//! a function links only what it runs. And a cold start builds only what
//! it needs before its first request: the AWS SDK clients trust five
//! compiled-in roots instead of parsing the machine's CA store, and the
//! providers' and the JWKS's HTTPS clients are built by their first call.

use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "aws-sdk")]
use crate::adapters::aws_sdk::{AwsSdkError, SdkSettings, sdk_config};
#[cfg(feature = "dynamodb")]
use crate::adapters::dynamodb::{DynamoStore, DynamoTables};
#[cfg(feature = "steps")]
use crate::adapters::http_client::LazyHttpClient;
#[cfg(feature = "steps")]
use crate::adapters::http_payment::HttpPaymentGateway;
#[cfg(feature = "steps")]
use crate::adapters::http_provisioning::HttpProvisioner;
#[cfg(feature = "sfn")]
use crate::adapters::sfn::{StateMachines, StepFunctionsWorkflow};
#[cfg(all(feature = "steps", feature = "simulators"))]
use crate::adapters::simulators::{SimulatedPaymentGateway, SimulatedProvisioner};
#[cfg(all(feature = "api", feature = "dynamodb", feature = "sfn"))]
use crate::api::app::App;
#[cfg(all(feature = "api", feature = "dynamodb", feature = "sfn"))]
use crate::auth::JwtAuthenticator;
#[cfg(feature = "api")]
use crate::auth::{AuthConfig, KeySource};
#[cfg(feature = "steps")]
use crate::ports::payment::PaymentGateway;
#[cfg(feature = "steps")]
use crate::ports::provisioning::Provisioner;
use crate::ports::store::PurchaseStore;
use crate::ports::workflow::{Workflow, WorkflowType};
#[cfg(all(feature = "steps", feature = "dynamodb", feature = "sfn"))]
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

/// `PAYMENT_URL`: an HTTP base URL, or `simulator` (in a build with the
/// `simulators` feature). On AWS it has no default, so a deployment never
/// simulates payments by accident. The HTTPS client is built by the first
/// call to the provider.
#[cfg(feature = "steps")]
pub fn payment_gateway(default: Option<&str>) -> Result<Arc<dyn PaymentGateway>, ConfigError> {
    match env("PAYMENT_URL").as_deref().or(default) {
        #[cfg(feature = "simulators")]
        Some(SIMULATOR) => Ok(Arc::new(SimulatedPaymentGateway::default())),
        #[cfg(not(feature = "simulators"))]
        Some(SIMULATOR) => Err(no_simulators("PAYMENT_URL")),
        Some(url) => Ok(Arc::new(HttpPaymentGateway::new(
            url,
            LazyHttpClient::default(),
        ))),
        None => Err(ConfigError(
            "PAYMENT_URL is not set (an https URL, or \"simulator\")".into(),
        )),
    }
}

/// `PROVISIONING_URL`: an HTTP base URL, or `simulator` (as for
/// [`payment_gateway`]).
#[cfg(feature = "steps")]
pub fn provisioner(default: Option<&str>) -> Result<Arc<dyn Provisioner>, ConfigError> {
    match env("PROVISIONING_URL").as_deref().or(default) {
        #[cfg(feature = "simulators")]
        Some(SIMULATOR) => Ok(Arc::new(SimulatedProvisioner::default())),
        #[cfg(not(feature = "simulators"))]
        Some(SIMULATOR) => Err(no_simulators("PROVISIONING_URL")),
        Some(url) => Ok(Arc::new(HttpProvisioner::new(
            url,
            LazyHttpClient::default(),
        ))),
        None => Err(ConfigError(
            "PROVISIONING_URL is not set (an https URL, or \"simulator\")".into(),
        )),
    }
}

#[cfg(all(feature = "steps", not(feature = "simulators")))]
fn no_simulators(variable: &str) -> ConfigError {
    ConfigError(format!(
        "{variable}={SIMULATOR}, but this build has no simulators (crate feature `simulators`)"
    ))
}

/// The AWS SDK configuration every client is built from ([`sdk_config`]:
/// retries, one HTTPS client trusting Amazon's roots), from the
/// environment:
///
/// - `AWS_REGION` (always set on Lambda), else the SDK's region chain;
/// - `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (with
///   `AWS_SESSION_TOKEN`; always set on Lambda): used directly, so the
///   SDK's default credentials chain, and the STS client it builds, are not
///   built at all. Without them (a developer's profile, SSO): the default
///   chain;
/// - `AWS_CA_BUNDLE`: the path of a PEM bundle trusted besides Amazon's
///   roots (a TLS-inspecting proxy), as for the AWS CLI and SDKs.
#[cfg(feature = "aws-sdk")]
pub async fn aws_config() -> Result<aws_config::SdkConfig, ConfigError> {
    let ca_bundle = env("AWS_CA_BUNDLE");
    let extra_roots_pem = match &ca_bundle {
        Some(path) => Some(
            std::fs::read(path).map_err(|e| ConfigError(format!("AWS_CA_BUNDLE={path:?}: {e}")))?,
        ),
        None => None,
    };
    let credentials =
        (env("AWS_ACCESS_KEY_ID").is_some() && env("AWS_SECRET_ACCESS_KEY").is_some()).then(|| {
            aws_credential_types::provider::SharedCredentialsProvider::new(
                aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
            )
        });
    sdk_config(SdkSettings {
        region: env("AWS_REGION"),
        credentials,
        extra_roots_pem,
    })
    .await
    .map_err(|e| match (&e, &ca_bundle) {
        (AwsSdkError::CaBundle(_), Some(path)) => {
            ConfigError(format!("AWS_CA_BUNDLE={path:?}: {e}"))
        }
        _ => ConfigError(format!("AWS SDK: {e}")),
    })
}

/// The DynamoDB store as configured by `DYNAMODB_ENDPOINT` and the table
/// name variables.
#[cfg(feature = "dynamodb")]
pub fn dynamodb_store_from_env(sdk: &aws_config::SdkConfig) -> DynamoStore {
    dynamodb_store(
        sdk,
        env("DYNAMODB_ENDPOINT").as_deref(),
        DynamoTables::from_env(),
    )
}

/// `endpoint` points the store at a DynamoDB-API server for local runs and
/// tests (moto on 127.0.0.1); `None` is AWS.
#[cfg(feature = "dynamodb")]
pub fn dynamodb_store(
    sdk: &aws_config::SdkConfig,
    endpoint: Option<&str>,
    tables: DynamoTables,
) -> DynamoStore {
    DynamoStore::new(dynamodb_client(sdk, endpoint), tables)
}

/// The DynamoDB client of [`dynamodb_store`].
#[cfg(feature = "dynamodb")]
pub fn dynamodb_client(
    sdk: &aws_config::SdkConfig,
    endpoint: Option<&str>,
) -> aws_sdk_dynamodb::Client {
    let mut builder = aws_sdk_dynamodb::config::Builder::from(sdk);
    if let Some(endpoint) = endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    aws_sdk_dynamodb::Client::from_conf(builder.build())
}

/// The JWT configuration of an API function: a JWKS on AWS. HS256 shared
/// secrets are for local development only and refused otherwise.
#[cfg(feature = "api")]
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
#[cfg(all(feature = "api", feature = "dynamodb", feature = "sfn"))]
pub async fn lambda_app() -> Result<App, ConfigError> {
    let sdk = aws_config().await?;
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
#[cfg(all(feature = "steps", feature = "dynamodb", feature = "sfn"))]
pub async fn lambda_step_deps() -> Result<StepDeps, ConfigError> {
    let sdk = aws_config().await?;
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
#[cfg(all(feature = "dynamodb", feature = "sfn"))]
pub async fn lambda_reconciler() -> Result<Reconciler, ConfigError> {
    let sdk = aws_config().await?;
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
#[cfg(feature = "sfn")]
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
