//! aws-local: the AWS face of the purchase orchestrator, run for real on one
//! machine. The same wiring as a deployment of `template.yaml`, with local
//! stand-ins for what AWS provides:
//!
//! - [`template`]: the template read the way CloudFormation would, resolved
//!   to local values (table names, ARNs, parameters, pseudo-parameters);
//! - [`tables`]: its DynamoDB tables created on a DynamoDB-API endpoint (moto);
//! - [`lambda`]: the Lambda service: the Invoke API over pools of the real
//!   function binaries, each process with a Runtime API of its own and the
//!   environment the template gives that function (and nothing else, so a
//!   variable the template forgets is missing here too);
//! - [`states`]: a Step Functions endpoint running the template's state
//!   machines on local mode's executions host (`local::executions`, the
//!   project's ASL runner with Step Functions' STANDARD/EXPRESS rules), their
//!   tasks invoking the functions through the Invoke API;
//! - [`gateway`]: an API Gateway REST shim routing the template's `Api`
//!   events to the functions as proxy integration events;
//! - [`providers`]: the payment and provisioning simulators over HTTP, the
//!   providers `PAYMENT_URL` and `PROVISIONING_URL` point at.
//!
//! [`AwsLocal::start`] starts all of it; `main.rs` is the command
//! (`scripts/aws-local.sh` runs it with moto).

pub mod gateway;
pub mod lambda;
pub mod providers;
pub mod states;
pub mod tables;
pub mod template;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use local::StepHook;
use shared::adapters::dynamodb::{DynamoStore, DynamoTables};
use shared::auth::{AuthConfig, KeySource};
use shared::ports::payment::PaymentGateway;
use shared::ports::provisioning::Provisioner;
use shared::ports::store::Inventory;
use tokio::task::JoinSet;

use lambda::client::LambdaClient;
use lambda::{FunctionSpec, LambdaService};
use shared::adapters::simulators::{SimulatedPaymentGateway, SimulatedProvisioner};
use shared::lambda::config::env;
use states::StepFunctionsService;
use states::tasks::TaskRunner;
use template::{Deployment, Template};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AwsLocalError(pub String);

fn error(context: &str) -> impl FnOnce(String) -> AwsLocalError + '_ {
    move |message| AwsLocalError(format!("{context}: {message}"))
}

/// The stand-in account, and the fake credentials every function gets.
pub const ACCOUNT_ID: &str = "123456789012";
const FAKE_ACCESS_KEY: &str = "testing";
/// Instances per function at most; each serves one invocation at a time.
pub const MAX_INSTANCES: usize = 8;

/// Everything the shape is built from. `main.rs` reads it from the
/// environment; tests build it directly.
#[derive(Clone)]
pub struct Options {
    pub template: PathBuf,
    /// Where the function binaries are (`<target>/debug`).
    pub bin_dir: PathBuf,
    /// The Step Functions journal lives here.
    pub data_dir: PathBuf,
    /// CloudFormation's stack name: physical names derive from it.
    pub stack_name: String,
    pub region: String,
    /// The DynamoDB-API endpoint (moto).
    pub dynamodb_endpoint: String,
    /// Where the API listens (`127.0.0.1:0` for any port).
    pub api_address: SocketAddr,
    /// Products seeded into the products table (the demo catalog if `None`).
    pub catalog_file: Option<PathBuf>,
    /// How API functions verify tokens: HS256 (they get `LOCAL_DEVELOPMENT`
    /// and the secret) or a JWKS URL (the `JwksUrl` parameter).
    pub auth: AuthConfig,
    /// Further parameter values (they win over the template's defaults).
    pub parameters: BTreeMap<String, String>,
    /// The providers served over HTTP to the step functions.
    pub payments: Arc<dyn PaymentGateway>,
    pub provisioning: Arc<dyn Provisioner>,
    /// Called around every step task invocation (tests steer workflows).
    pub step_hook: Option<Arc<dyn StepHook>>,
    /// Multiplies the definitions' Retry and Wait delays (`RETRY_DELAY_SCALE`).
    pub delay_scale: f64,
    /// Run the functions' `rate(...)` schedules (the reconciler).
    pub run_schedules: bool,
    /// The Invoke API Step Functions and the shim call (ours if `None`).
    pub lambda_endpoint: Option<String>,
}

impl Options {
    /// The command's options, from the environment (README, "Try the AWS
    /// deployment without AWS"): `DYNAMODB_ENDPOINT` (required: moto),
    /// `PORT`/`HOST`, `DATA_DIR`, `CATALOG_FILE`, `JWT_HS256_SECRET`,
    /// `JWT_ISSUER`, `JWT_AUDIENCE`, `JWKS_URL`, `TEMPLATE_FILE`,
    /// `STACK_NAME`, `AWS_REGION`, `RETRY_DELAY_SCALE`, `LAMBDA_ENDPOINT`,
    /// `RUST_LOG` (also the functions' `LogLevel`), `WORKFLOW_TYPE` (the
    /// template's `WorkflowType`). The function binaries are those next to the running binary.
    pub fn from_env() -> Result<Options, String> {
        let data_dir = PathBuf::from(env("DATA_DIR").unwrap_or_else(|| "./.data".into()));
        let dynamodb_endpoint = env("DYNAMODB_ENDPOINT").ok_or(
            "DYNAMODB_ENDPOINT is not set: the DynamoDB-API endpoint (scripts/aws-local.sh starts moto and sets it)",
        )?;
        let host = env("HOST").unwrap_or_else(|| "127.0.0.1".into());
        let port = env("PORT").unwrap_or_else(|| "3000".into());
        let api_address = format!("{host}:{port}")
            .parse()
            .map_err(|e| format!("HOST/PORT {host}:{port}: {e}"))?;
        let delay_scale = local::retry_delay_scale().map_err(|e| e.to_string())?;
        // The functions run next to this binary: the same `cargo build`.
        let bin_dir = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(PathBuf::from))
            .ok_or("cannot tell where the aws-local binary is")?;
        Ok(Options {
            template: PathBuf::from(env("TEMPLATE_FILE").unwrap_or_else(|| "template.yaml".into())),
            bin_dir,
            // The same development secret the `purchase-orchestrator token`
            // command reads, so its tokens work here too.
            auth: local::auth_config(&data_dir).map_err(|e| e.to_string())?,
            data_dir,
            stack_name: env("STACK_NAME").unwrap_or_else(|| "purchase-orchestrator-local".into()),
            region: env("AWS_REGION").unwrap_or_else(|| "us-east-1".into()),
            dynamodb_endpoint,
            api_address,
            catalog_file: env("CATALOG_FILE").map(PathBuf::from),
            // As for the local server: RUST_LOG is the functions'
            // LogLevel, WORKFLOW_TYPE the purchase machine's WorkflowType.
            parameters: [
                ("LogLevel", env("RUST_LOG")),
                ("WorkflowType", env("WORKFLOW_TYPE")),
            ]
            .into_iter()
            .filter_map(|(parameter, value)| Some((parameter.to_owned(), value?)))
            .collect(),
            payments: Arc::new(SimulatedPaymentGateway::default()),
            provisioning: Arc::new(SimulatedProvisioner::default()),
            step_hook: None,
            delay_scale,
            run_schedules: true,
            lambda_endpoint: env("LAMBDA_ENDPOINT"),
        })
    }
}

/// A running shape.
pub struct AwsLocal {
    /// `http://<api address>`: the API is under `/purchase-orchestrator/`.
    pub api_url: String,
    pub lambda_url: String,
    pub states_url: String,
    pub providers_url: String,
    template: Template,
    tables: Option<DynamoTables>,
    dynamodb: aws_sdk_dynamodb::Client,
    lambda: Arc<LambdaService>,
    states: Arc<StepFunctionsService>,
    background: JoinSet<()>,
}

async fn listen(address: SocketAddr) -> Result<(tokio::net::TcpListener, String), AwsLocalError> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| AwsLocalError(format!("cannot listen on {address}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| AwsLocalError(e.to_string()))?;
    Ok((listener, format!("http://{bound}")))
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// The tables every function is told about (the Globals' variables), if
/// the template tells them.
fn table_names(template: &Template) -> Option<DynamoTables> {
    let environment = template
        .functions
        .iter()
        .map(|f| &f.environment)
        .find(|env| env.contains_key("PURCHASES_TABLE"))?;
    let name = |variable: &str| environment.get(variable).cloned();
    Some(DynamoTables {
        purchases: name("PURCHASES_TABLE")?,
        products: name("PRODUCTS_TABLE")?,
        idempotency: name("IDEMPOTENCY_TABLE")?,
        rule_sets: name("RULE_SETS_TABLE")?,
    })
}

impl AwsLocal {
    /// Starts the providers, reads the template with their addresses and
    /// the local values, creates the tables and seeds the catalog, then
    /// starts the Lambda service, the Step Functions endpoint (resuming
    /// executions a previous run left) and the API shim.
    pub async fn start(options: Options) -> Result<AwsLocal, AwsLocalError> {
        let mut background = JoinSet::new();
        let serve = |background: &mut JoinSet<()>, listener, router: axum::Router| {
            background.spawn(async move {
                let _ = axum::serve(
                    listener,
                    router.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .await;
            });
        };

        let (providers_listener, providers_url) = listen(loopback()).await?;
        serve(
            &mut background,
            providers_listener,
            providers::router(options.payments.clone(), options.provisioning.clone()),
        );
        let (lambda_listener, lambda_url) = listen(loopback()).await?;
        let (states_listener, states_url) = listen(loopback()).await?;

        let mut parameters = BTreeMap::from([
            (
                "PaymentUrl".to_owned(),
                format!("{providers_url}{}", providers::PAYMENT_PATH),
            ),
            (
                "ProvisioningUrl".to_owned(),
                format!("{providers_url}{}", providers::PROVISIONING_PATH),
            ),
            ("JwtIssuer".to_owned(), options.auth.issuer.clone()),
            ("JwtAudience".to_owned(), options.auth.audience.clone()),
            // No JWKS server here: an empty URL, and HS256 development
            // tokens (below); a configured JWKS URL is used as it is.
            (
                "JwksUrl".to_owned(),
                match &options.auth.keys {
                    KeySource::Jwks { url } => url.clone(),
                    KeySource::Hs256 { .. } => String::new(),
                },
            ),
        ]);
        parameters.extend(options.parameters.clone());
        let deployment = Deployment {
            stack_name: options.stack_name.clone(),
            region: options.region.clone(),
            account_id: ACCOUNT_ID.to_owned(),
            parameters,
        };
        let template = Template::load(&options.template, &deployment)
            .map_err(|e| AwsLocalError(e.to_string()))?;

        let missing: Vec<String> = template
            .functions
            .iter()
            .map(|f| options.bin_dir.join(&f.binary))
            .filter(|path| !path.is_file())
            .map(|path| path.display().to_string())
            .collect();
        if !missing.is_empty() {
            return Err(AwsLocalError(format!(
                "function binaries missing (build them: cargo build --workspace --bins): {}",
                missing.join(", ")
            )));
        }

        let dynamodb = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new(options.region.clone()))
                .credentials_provider(Credentials::new(
                    FAKE_ACCESS_KEY,
                    FAKE_ACCESS_KEY,
                    None,
                    None,
                    "aws-local",
                ))
                .endpoint_url(&options.dynamodb_endpoint)
                .build(),
        );
        tables::create(&dynamodb, &template.tables)
            .await
            .map_err(error("creating tables"))?;
        let tables = table_names(&template);
        if let Some(tables) = &tables {
            let store = DynamoStore::new(dynamodb.clone(), tables.clone());
            let products =
                local::catalog::load(options.catalog_file.as_deref()).map_err(error("catalog"))?;
            for product in &products {
                store
                    .add_product_if_absent(product)
                    .await
                    .map_err(|e| AwsLocalError(format!("seeding product {}: {e}", product.id)))?;
            }
        }

        let specs = template
            .functions
            .iter()
            .map(|function| FunctionSpec {
                function: function.clone(),
                program: options.bin_dir.join(&function.binary),
                environment: environment(function, &options, &states_url),
                max_instances: MAX_INSTANCES,
            })
            .collect();
        let lambda = Arc::new(LambdaService::new(specs, &options.region, ACCOUNT_ID));
        serve(&mut background, lambda_listener, lambda.router());

        let invoke_endpoint = options
            .lambda_endpoint
            .clone()
            .unwrap_or_else(|| lambda_url.clone());
        let client = LambdaClient::new(&invoke_endpoint).map_err(AwsLocalError)?;
        let tasks = Arc::new(TaskRunner::new(
            client.clone(),
            StepFunctionsService::binaries(&template.functions),
            options.step_hook.clone(),
        ));
        let states = StepFunctionsService::start(
            &template.state_machines,
            tasks,
            &options.data_dir,
            options.delay_scale,
            &options.region,
            ACCOUNT_ID,
        )
        .await
        .map_err(error("Step Functions"))?;
        serve(
            &mut background,
            states_listener,
            states::api::router(states.clone()),
        );

        if options.run_schedules {
            for function in &template.functions {
                for schedule in &function.schedules {
                    let client = client.clone();
                    let name = function.name.clone();
                    let input = schedule.input.to_string();
                    let every = schedule.every;
                    background.spawn(async move {
                        let mut ticks = tokio::time::interval(every);
                        ticks.tick().await; // the first tick is immediate: skip it
                        loop {
                            ticks.tick().await;
                            if let Err(e) = client.invoke(&name, input.clone().into()).await {
                                tracing::warn!(function = %name, error = %e, "scheduled invocation failed");
                            }
                        }
                    });
                }
            }
        }

        let gateway = Arc::new(gateway::Gateway::new(
            &template.functions,
            template.api.clone(),
            client,
            ACCOUNT_ID,
        ));
        let (api_listener, api_url) = listen(options.api_address).await?;
        serve(&mut background, api_listener, gateway.router());

        Ok(AwsLocal {
            api_url,
            lambda_url,
            states_url,
            providers_url,
            template,
            tables,
            dynamodb,
            lambda,
            states,
            background,
        })
    }

    pub fn template(&self) -> &Template {
        &self.template
    }

    /// The table names the functions are given, if the template gives them.
    pub fn tables(&self) -> Option<&DynamoTables> {
        self.tables.as_ref()
    }

    /// The store the functions use, read directly (tests read stock and
    /// stored purchases so).
    pub fn store(&self) -> Option<Arc<DynamoStore>> {
        let tables = self.tables.clone()?;
        Some(Arc::new(DynamoStore::new(self.dynamodb.clone(), tables)))
    }

    /// An execution of the template's machine `logical_id`, as the Step
    /// Functions endpoint's runner keeps it (EXPRESS ones too, which the
    /// API does not describe): what tests inspect.
    pub fn execution(
        &self,
        logical_id: &str,
        name: &str,
    ) -> Result<Option<local::executions::ExecutionRecord>, String> {
        let machine = self
            .template
            .state_machines
            .iter()
            .find(|m| m.logical_id == logical_id)
            .ok_or_else(|| format!("the template has no state machine {logical_id}"))?;
        self.states.inspect(&machine.arn, name)
    }

    /// Function processes alive now.
    pub fn live_instances(&self) -> usize {
        self.lambda.live_instances()
    }

    /// Stops serving, stops every execution (STANDARD ones resume on the
    /// next start, as after a crash) and kills every function process,
    /// waiting until each is gone.
    pub async fn shutdown(mut self) {
        self.background.abort_all();
        while self.background.join_next().await.is_some() {}
        self.states.shutdown().await;
        self.lambda.shutdown().await;
    }
}

/// A function process's whole environment (but the Runtime API's address):
/// the template's variables for it, plus what stands in for AWS.
pub fn environment(
    function: &template::Function,
    options: &Options,
    states_url: &str,
) -> BTreeMap<String, String> {
    let mut environment = function.environment.clone();
    let bin_dir = options.bin_dir.display().to_string();
    let runtime = [
        ("AWS_LAMBDA_FUNCTION_NAME", function.name.clone()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            function.memory_mb.to_string(),
        ),
        ("AWS_LAMBDA_LOG_GROUP_NAME", function.log_group.clone()),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_owned()),
        ("_HANDLER", function.handler.clone()),
        ("LAMBDA_TASK_ROOT", bin_dir.clone()),
        ("LAMBDA_RUNTIME_DIR", bin_dir),
        ("TZ", ":UTC".to_owned()),
        ("LANG", "en_US.UTF-8".to_owned()),
        ("PATH", "/usr/local/bin:/usr/bin/:/bin:/opt/bin".to_owned()),
        ("AWS_REGION", options.region.clone()),
        ("AWS_DEFAULT_REGION", options.region.clone()),
        ("AWS_ACCESS_KEY_ID", FAKE_ACCESS_KEY.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", FAKE_ACCESS_KEY.to_owned()),
        ("AWS_SESSION_TOKEN", FAKE_ACCESS_KEY.to_owned()),
        // The endpoints standing in for DynamoDB and Step Functions.
        ("DYNAMODB_ENDPOINT", options.dynamodb_endpoint.clone()),
        ("STEP_FUNCTIONS_ENDPOINT", states_url.to_owned()),
    ];
    for (name, value) in runtime {
        environment.insert(name.to_owned(), value);
    }
    // Where the template makes a function verify tokens against a JWKS,
    // there is none here: development tokens, which the code accepts on a
    // Lambda only with LOCAL_DEVELOPMENT set.
    if environment.contains_key("JWKS_URL")
        && let KeySource::Hs256 { secret } = &options.auth.keys
    {
        environment.insert(
            shared::lambda::config::LOCAL_DEVELOPMENT.to_owned(),
            "1".to_owned(),
        );
        environment.insert(shared::auth::ENV_HS256_SECRET.to_owned(), secret.clone());
    }
    environment
}

/// Where the workspace's debug binaries are for a test binary
/// (`<target>/debug/deps/<test>`): `<target>/debug`.
pub fn bin_dir_of_test_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?;
    deps.parent().map(Path::to_path_buf)
}
