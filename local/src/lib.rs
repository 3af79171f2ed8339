//! Local mode: the whole purchase orchestrator in one process.
//!
//! - the same API handlers as the Lambdas ([`shared::api`]) behind an axum router;
//! - an embedded, persistent store ([`shared::embedded`], redb under `DATA_DIR`),
//!   or DynamoDB when `STORE=dynamodb`;
//! - the same `statemachine/purchase.asl.json` and `review.asl.json`,
//!   executed in-process by the [`asl`] runner, calling the same step
//!   functions ([`shared::steps`]), the purchase machine with the semantics
//!   of its `WORKFLOW_TYPE` ([`workflow`]), by the executions host
//!   ([`executions`]) that `aws-local`'s Step Functions endpoint runs too.

pub mod catalog;
pub mod console;
pub mod executions;
pub mod server;
pub mod workflow;

use std::path::PathBuf;
use std::sync::Arc;

use std::time::Duration;

use shared::adapters::dynamodb::DynamoTables;
use shared::adapters::embedded::EmbeddedStore;
use shared::api::app::App;
use shared::auth::{AuthConfig, JwtAuthenticator};
use shared::lambda::config::{self as config, env};
use shared::ports::payment::PaymentGateway;
use shared::ports::provisioning::Provisioner;
use shared::ports::store::{IdempotencyStore, Inventory, PurchaseStore, RuleSetStore};
use shared::ports::workflow::{Workflow, WorkflowType};
use shared::service::reconcile::{Ages, Findings, reconcile, reconcile_with};
use shared::steps::StepDeps;

pub use workflow::{Attempt, LocalWorkflow, StepHook};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LocalError(pub String);

impl LocalError {
    fn wrap(context: &str) -> impl FnOnce(String) -> LocalError + '_ {
        move |error| LocalError(format!("{context}: {error}"))
    }
}

/// Where purchases live in local mode.
#[derive(Clone)]
pub enum StoreChoice {
    /// redb under `data_dir` (the default).
    Embedded,
    /// A DynamoDB-API endpoint (`STORE=dynamodb`, with `DYNAMODB_ENDPOINT`
    /// and the table name variables); `None` is AWS itself.
    DynamoDb {
        endpoint: Option<String>,
        tables: DynamoTables,
    },
    /// redb held in memory: nothing survives the process. For tests that
    /// run thousands of short-lived systems.
    InMemory,
}

/// Everything local mode is built from. [`LocalOptions::from_env`] reads the
/// documented environment variables; tests build it directly.
#[derive(Clone)]
pub struct LocalOptions {
    pub data_dir: PathBuf,
    pub catalog_file: Option<PathBuf>,
    pub store: StoreChoice,
    pub auth: AuthConfig,
    pub payments: Arc<dyn PaymentGateway>,
    pub provisioning: Arc<dyn Provisioner>,
    /// Called before every step task runs; tests use it to stop a workflow
    /// at a chosen step.
    pub step_hook: Option<Arc<dyn StepHook>>,
    /// Wraps the stores before anything uses them; the reliability tests
    /// use it to inject faults.
    pub store_layer: Option<StoreLayer>,
    /// Wraps the workflow port the API uses (start, describe, notify,
    /// redrive); tests use it to make those calls fail.
    pub workflow_layer: Option<WorkflowLayer>,
    /// Multiplies the definition's Retry and Wait delays
    /// (`RETRY_DELAY_SCALE`, default 1: as deployed).
    pub delay_scale: f64,
    /// How often the reconciler runs (`RECONCILE_EVERY_SECONDS`, default
    /// 60; `None`: never, tests run it by hand).
    pub reconcile_every: Option<Duration>,
    /// How long a purchase must be unchanged before the reconciler looks at
    /// it (`RECONCILE_AFTER_SECONDS`, default 300).
    pub reconcile_after: Duration,
    /// How the purchase machine runs (`WORKFLOW_TYPE`, default `STANDARD`).
    pub workflow_type: WorkflowType,
}

/// The three store ports, as one bundle.
#[derive(Clone)]
pub struct Stores {
    pub purchases: Arc<dyn PurchaseStore>,
    pub inventory: Arc<dyn Inventory>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub rule_sets: Arc<dyn RuleSetStore>,
}

impl Stores {
    /// One store serving every port (both the embedded and the DynamoDB store do).
    pub fn of<S>(store: Arc<S>) -> Stores
    where
        S: PurchaseStore + Inventory + IdempotencyStore + RuleSetStore + 'static,
    {
        Stores {
            purchases: store.clone(),
            inventory: store.clone(),
            idempotency: store.clone(),
            rule_sets: store,
        }
    }
}

pub type StoreLayer = Arc<dyn Fn(Stores) -> Stores + Send + Sync>;

pub type WorkflowLayer = Arc<dyn Fn(Arc<dyn Workflow>) -> Arc<dyn Workflow> + Send + Sync>;

pub const DEFAULT_ISSUER: &str = "purchase-orchestrator-local";
pub const DEFAULT_AUDIENCE: &str = "purchase-orchestrator";

/// `RETRY_DELAY_SCALE` (default 1): what the definitions' Retry delays are
/// multiplied by in the in-process runner (task timeouts are not). Read by
/// the local server and by `aws-local`, with the same meaning.
pub fn retry_delay_scale() -> Result<f64, LocalError> {
    match env("RETRY_DELAY_SCALE") {
        None => Ok(1.0),
        Some(text) => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|scale| scale.is_finite() && *scale >= 0.0)
            .ok_or_else(|| {
                LocalError(format!(
                    "RETRY_DELAY_SCALE={text:?} is not a non-negative number"
                ))
            }),
    }
}

/// The JWT configuration: `JWKS_URL` or `JWT_HS256_SECRET` when set (as on
/// AWS); otherwise a development secret generated under `DATA_DIR`, which the
/// `token` command reads too.
pub fn auth_config(data_dir: &std::path::Path) -> Result<AuthConfig, LocalError> {
    if env("JWKS_URL").is_some() || env("JWT_HS256_SECRET").is_some() {
        return AuthConfig::from_env().map_err(|e| LocalError(e.to_string()));
    }
    let secret = shared::auth::local_dev_secret(data_dir).map_err(|e| {
        LocalError(format!(
            "development JWT secret in {}: {e}",
            data_dir.display()
        ))
    })?;
    Ok(AuthConfig {
        issuer: env("JWT_ISSUER").unwrap_or_else(|| DEFAULT_ISSUER.to_owned()),
        audience: env("JWT_AUDIENCE").unwrap_or_else(|| DEFAULT_AUDIENCE.to_owned()),
        leeway_seconds: 30,
        keys: shared::auth::KeySource::Hs256 { secret },
    })
}

impl LocalOptions {
    pub fn from_env() -> Result<LocalOptions, LocalError> {
        let data_dir = PathBuf::from(env("DATA_DIR").unwrap_or_else(|| "./.data".into()));
        let store = match env("STORE").as_deref() {
            None | Some("embedded") => StoreChoice::Embedded,
            Some("dynamodb") => StoreChoice::DynamoDb {
                endpoint: env("DYNAMODB_ENDPOINT"),
                tables: DynamoTables::from_env(),
            },
            Some(other) => {
                return Err(LocalError(format!(
                    "STORE={other:?}: expected \"embedded\" or \"dynamodb\""
                )));
            }
        };
        let simulator = Some(config::SIMULATOR);
        let seconds = |name: &str, default: u64| -> Result<u64, LocalError> {
            match env(name) {
                None => Ok(default),
                Some(text) => text.trim().parse().map_err(|_| {
                    LocalError(format!("{name}={text:?} is not a whole number of seconds"))
                }),
            }
        };
        let delay_scale = retry_delay_scale()?;
        let every = seconds("RECONCILE_EVERY_SECONDS", 60)?;
        let workflow_type = config::workflow_type().map_err(|e| LocalError(e.to_string()))?;
        Ok(LocalOptions {
            auth: auth_config(&data_dir)?,
            catalog_file: env("CATALOG_FILE").map(PathBuf::from),
            data_dir,
            store,
            payments: config::payment_gateway(simulator).map_err(|e| LocalError(e.to_string()))?,
            provisioning: config::provisioner(simulator).map_err(|e| LocalError(e.to_string()))?,
            step_hook: None,
            store_layer: None,
            workflow_layer: None,
            delay_scale,
            reconcile_every: (every > 0).then(|| Duration::from_secs(every)),
            reconcile_after: config::reconcile_after().map_err(|e| LocalError(e.to_string()))?,
            workflow_type,
        })
    }
}

/// A running local orchestrator: the API's dependencies, the step tasks'
/// dependencies, the in-process workflow runner and the reconciler.
pub struct LocalSystem {
    pub app: App,
    pub steps: StepDeps,
    pub workflow: Arc<LocalWorkflow>,
    reconcile_after: Duration,
    /// The review console's developer sign-in: only when tokens are
    /// verified with the secret generated under `DATA_DIR`.
    dev_sign_in: Option<console::DevSignIn>,
    reconciler: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl LocalSystem {
    /// Opens the store, seeds the catalog, loads the state machine, resumes
    /// every execution a previous run left unfinished and starts the
    /// reconciler.
    pub async fn start(options: LocalOptions) -> Result<LocalSystem, LocalError> {
        let dev_sign_in = console::DevSignIn::detect(&options.data_dir, &options.auth);
        let embedded = match options.store {
            StoreChoice::InMemory => EmbeddedStore::in_memory(),
            _ => EmbeddedStore::open(&options.data_dir),
        }
        .map_err(|e| LocalError(e.to_string()))?;
        let mut stores = match options.store {
            StoreChoice::Embedded | StoreChoice::InMemory => Stores::of(Arc::new(embedded.clone())),
            StoreChoice::DynamoDb { endpoint, tables } => {
                let sdk = config::aws_config()
                    .await
                    .map_err(|e| LocalError(e.to_string()))?;
                let store = config::dynamodb_store(&sdk, endpoint.as_deref(), tables);
                // Local mode owns its tables (on AWS the SAM template
                // does): create whichever are missing, keep the rest.
                store
                    .create_tables()
                    .await
                    .map_err(|e| LocalError(format!("creating DynamoDB tables: {e}")))?;
                Stores::of(Arc::new(store))
            }
        };
        if let Some(layer) = &options.store_layer {
            stores = layer(stores);
        }
        let Stores {
            purchases,
            inventory,
            idempotency,
            rule_sets,
        } = stores;
        let products =
            catalog::load(options.catalog_file.as_deref()).map_err(LocalError::wrap("catalog"))?;
        for product in &products {
            inventory
                .add_product_if_absent(product)
                .await
                .map_err(|e| LocalError(format!("seeding product {}: {e}", product.id)))?;
        }
        let callbacks = Arc::new(workflow::RunnerCallbacks::default());
        let steps = StepDeps {
            purchases: purchases.clone(),
            rule_sets: rule_sets.clone(),
            payments: options.payments.clone(),
            provisioning: options.provisioning.clone(),
            workflow: callbacks.clone(),
        };
        // The execution journal always lives in the embedded file: it is the
        // local runner's own state, like Step Functions' execution history.
        let workflow = LocalWorkflow::new(
            steps.clone(),
            callbacks,
            embedded.clone(),
            options.step_hook.clone(),
            options.delay_scale,
            options.workflow_type,
        )
        .await
        .map_err(LocalError::wrap("state machine"))?;
        let resumed = workflow
            .resume_unfinished()
            .await
            .map_err(LocalError::wrap("resuming executions"))?;
        if resumed > 0 {
            tracing::info!(resumed, "resumed unfinished executions");
        }
        tracing::info!(workflow_type = %options.workflow_type, "purchase workflow runs as {}", options.workflow_type);
        let auth =
            JwtAuthenticator::new(options.auth.clone()).map_err(|e| LocalError(e.to_string()))?;
        let api_workflow: Arc<dyn Workflow> = match &options.workflow_layer {
            Some(layer) => layer(workflow.clone()),
            None => workflow.clone(),
        };
        let app = App {
            purchases,
            inventory,
            workflow: api_workflow.clone(),
            auth: Arc::new(auth),
            idempotency,
            rule_sets,
        };
        let reconciler = options.reconcile_every.map(|every| {
            let purchases = app.purchases.clone();
            let workflow = Arc::downgrade(&api_workflow);
            let after = options.reconcile_after;
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(every);
                ticks.tick().await; // the first tick is immediate: skip it
                loop {
                    ticks.tick().await;
                    let Some(workflow) = workflow.upgrade() else {
                        return;
                    };
                    if let Err(error) =
                        reconcile(purchases.as_ref(), workflow.as_ref(), after).await
                    {
                        tracing::warn!(%error, "reconciler pass failed");
                    }
                }
            })
        });
        Ok(LocalSystem {
            app,
            steps,
            workflow,
            reconcile_after: options.reconcile_after,
            dev_sign_in,
            reconciler: std::sync::Mutex::new(reconciler),
        })
    }

    /// The API's routes and the review console's.
    pub fn router(&self) -> axum::Router {
        server::router(self.app.clone()).merge(console::router(self.dev_sign_in.clone()))
    }

    /// Whether the review console offers the developer sign-in.
    pub fn dev_sign_in_available(&self) -> bool {
        self.dev_sign_in.is_some()
    }

    /// One reconciler pass now, over purchases unchanged for `stale_after`
    /// (the configured age if `None`).
    pub async fn reconcile(&self, stale_after: Option<Duration>) -> Result<Findings, LocalError> {
        reconcile(
            self.app.purchases.as_ref(),
            self.app.workflow.as_ref(),
            stale_after.unwrap_or(self.reconcile_after),
        )
        .await
        .map_err(|e| LocalError(e.to_string()))
    }

    /// One reconciler pass now with both ages given: tests take `EXPRESS`
    /// runs for lost sooner than the ten minutes a real one may take.
    pub async fn reconcile_with(&self, ages: Ages) -> Result<Findings, LocalError> {
        reconcile_with(
            self.app.purchases.as_ref(),
            self.app.workflow.as_ref(),
            ages,
        )
        .await
        .map_err(|e| LocalError(e.to_string()))
    }

    /// Stops the reconciler and every running execution, as a process exit
    /// would (their checkpoints stay for the next start).
    pub async fn shutdown(&self) {
        let reconciler = self
            .reconciler
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(reconciler) = reconciler {
            reconciler.abort();
            let _ = reconciler.await;
        }
        self.workflow.shutdown().await;
    }
}
