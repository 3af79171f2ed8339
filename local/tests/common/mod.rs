//! Test harness: a real local orchestrator on 127.0.0.1 (random port) with
//! its own data directory, catalog, JWT secret and simulators.
//!
//! `PURCHASE_TEST_TARGET=aws-local` points the same tests at the AWS shape
//! instead (the `aws-local` crate): the real function binaries behind the
//! API Gateway shim and the Step Functions endpoint, tables on the moto
//! server at `AWS_TEST_ENDPOINT`, and the step functions' `PAYMENT_URL` and
//! `PROVISIONING_URL` served by this process's simulators, so the books
//! (and the step hooks) stay in the test.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod faults;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use async_trait::async_trait;
use local::{Attempt, LocalOptions, LocalSystem, StepHook, StoreChoice};
use serde_json::{Value, json};
use shared::adapters::dynamodb::DynamoTables;
use shared::adapters::sfn::{StateMachines, StepFunctionsWorkflow};
use shared::adapters::simulators::{
    PaymentRequest, ProvisioningRequest, SimulatedPaymentGateway, SimulatedProvisioner,
};
use shared::auth::{AuthConfig, KeySource, Scope};
use shared::domain::{ProductId, PurchaseId};
use shared::ports::payment::PaymentGateway;
use shared::ports::provisioning::Provisioner;
use shared::ports::store::{Inventory, PurchaseStore};
use shared::ports::workflow::{Machine, Workflow, WorkflowType};
use shared::service::reconcile::{Ages, Findings};
use shared::steps::Step;
use tokio::sync::{Notify, Semaphore};

pub const CATALOG: &str = r#"[
  {"id": "ebook", "name": "E-book", "unitPrice": 1000, "currency": "EUR", "stock": 100, "kind": "digital"},
  {"id": "mug", "name": "Mug", "unitPrice": 1250, "currency": "EUR", "stock": 100, "kind": "physical"},
  {"id": "poster", "name": "Poster", "unitPrice": 5000, "currency": "EUR", "stock": 1, "kind": "physical"},
  {"id": "limited", "name": "Limited edition", "unitPrice": 700, "currency": "EUR", "stock": 5, "kind": "digital"},
  {"id": "hundred", "name": "Hundred pieces", "unitPrice": 100, "currency": "EUR", "stock": 100, "kind": "digital"},
  {"id": "sticker", "name": "Sticker", "unitPrice": 300, "currency": "USD", "stock": 100, "kind": "physical"},
  {"id": "fail-provision-key", "name": "Refused license", "unitPrice": 900, "currency": "EUR", "stock": 100, "kind": "digital"},
  {"id": "slow-provision-course", "name": "Video course", "unitPrice": 4000, "currency": "EUR", "stock": 100, "kind": "digital"}
]"#;

/// The definition's Retry delays in tests: 1% of the real ones, so a
/// retried step waits milliseconds (task timeouts are not scaled).
pub const DELAY_SCALE: f64 = 0.01;

/// How long a `slow-provision…` product takes to deliver in tests.
pub const SLOW_DELIVERY: Duration = Duration::from_millis(700);

pub const CUSTOMER: &str = "c-alice";
pub const OTHER_CUSTOMER: &str = "c-bob";

/// What the tests drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestTarget {
    /// The local server, in this process.
    Local,
    /// The AWS shape (`aws-local`): function processes on moto.
    AwsLocal,
}

/// `PURCHASE_TEST_TARGET`: `local` (the default) or `aws-local`.
pub fn target_under_test() -> TestTarget {
    match std::env::var("PURCHASE_TEST_TARGET").as_deref() {
        Err(_) | Ok("local") => TestTarget::Local,
        Ok("aws-local") => TestTarget::AwsLocal,
        Ok(other) => panic!("PURCHASE_TEST_TARGET={other:?}: expected local or aws-local"),
    }
}

/// The in-process orchestrator, for the tests that look inside it (the
/// runner's checkpoints, the reconciler run by hand): those run against the
/// local server only.
pub struct InProcess(Option<Arc<LocalSystem>>);

impl std::ops::Deref for InProcess {
    type Target = LocalSystem;

    fn deref(&self) -> &LocalSystem {
        self.0.as_deref().expect(
            "this test looks inside the in-process orchestrator: it runs against the local server, not PURCHASE_TEST_TARGET=aws-local",
        )
    }
}

enum Running {
    Local {
        server: tokio::task::JoinHandle<()>,
        shutdown: tokio::sync::oneshot::Sender<()>,
    },
    AwsLocal(Box<aws_local::AwsLocal>),
}

pub struct Harness {
    pub base: String,
    pub client: reqwest::Client,
    pub secret: String,
    pub payments: Arc<SimulatedPaymentGateway>,
    pub provisioning: Arc<SimulatedProvisioner>,
    pub system: InProcess,
    pub data_dir: PathBuf,
    pub target: TestTarget,
    /// The store the orchestrator uses, read directly (stock, stored purchases).
    inventory: Arc<dyn Inventory>,
    purchases: Arc<dyn PurchaseStore>,
    store: StoreChoice,
    workflow_type: WorkflowType,
    stack: Option<String>,
    running: Running,
    _dir: Option<tempfile::TempDir>,
}

/// What a stopped harness leaves behind for a restart on the same data.
pub struct Stopped {
    data_dir: PathBuf,
    secret: String,
    store: StoreChoice,
    workflow_type: WorkflowType,
    target: TestTarget,
    stack: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

pub struct Setup {
    pub hook: Option<Arc<dyn StepHook>>,
    pub store_layer: Option<local::StoreLayer>,
    /// Wraps the payment simulator (fault injection); the harness keeps the
    /// simulator itself to read what the orchestrator asked for.
    pub payments: Option<PaymentLayer>,
    pub provisioning: Option<ProvisioningLayer>,
    pub workflow: Option<local::WorkflowLayer>,
    pub data_dir: Option<PathBuf>,
    pub secret: Option<String>,
    pub store: StoreChoice,
    /// `WORKFLOW_TYPE` unless a test needs one of its own.
    pub workflow_type: WorkflowType,
    pub target: TestTarget,
    /// aws-local: the template to run (`template.yaml` if `None`).
    pub template: Option<PathBuf>,
    /// aws-local: the stack (and so the tables) to run on; a new one if `None`.
    pub stack: Option<String>,
}

pub type PaymentLayer = Box<dyn FnOnce(Arc<dyn PaymentGateway>) -> Arc<dyn PaymentGateway> + Send>;
pub type ProvisioningLayer = Box<dyn FnOnce(Arc<dyn Provisioner>) -> Arc<dyn Provisioner> + Send>;

impl Default for Setup {
    fn default() -> Self {
        Setup {
            hook: None,
            store_layer: None,
            payments: None,
            provisioning: None,
            workflow: None,
            data_dir: None,
            secret: None,
            store: store_under_test(),
            workflow_type: workflow_type_under_test(),
            target: target_under_test(),
            template: None,
            stack: None,
        }
    }
}

/// The workspace's `template.yaml`.
pub fn template_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../template.yaml")
}

/// The moto server of `scripts/test.sh`.
pub fn aws_test_endpoint() -> String {
    std::env::var("AWS_TEST_ENDPOINT").expect(
        "PURCHASE_TEST_STORE=dynamodb and PURCHASE_TEST_TARGET=aws-local need AWS_TEST_ENDPOINT (scripts/test.sh starts moto)",
    )
}

/// `PURCHASE_TEST_STORE=dynamodb` runs the same tests against the DynamoDB
/// store on the moto server at `AWS_TEST_ENDPOINT` (scripts/test.sh does a
/// second run so), each harness with tables of its own.
pub fn store_under_test() -> StoreChoice {
    match std::env::var("PURCHASE_TEST_STORE").as_deref() {
        Ok("dynamodb") => {
            let endpoint = aws_test_endpoint();
            let prefix = format!("t{}", fastrand::u64(..));
            StoreChoice::DynamoDb {
                endpoint: Some(endpoint),
                tables: DynamoTables {
                    purchases: format!("{prefix}-purchases"),
                    products: format!("{prefix}-products"),
                    idempotency: format!("{prefix}-idempotency"),
                    rule_sets: format!("{prefix}-rule-sets"),
                },
            }
        }
        _ => StoreChoice::Embedded,
    }
}

/// `WORKFLOW_TYPE=EXPRESS` runs the same tests with the purchase machine's
/// `EXPRESS` semantics (scripts/test.sh does a pass so); `STANDARD` otherwise.
pub fn workflow_type_under_test() -> WorkflowType {
    shared::lambda::config::workflow_type().expect("WORKFLOW_TYPE is STANDARD or EXPRESS")
}

pub fn express() -> bool {
    workflow_type_under_test() == WorkflowType::Express
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::start_with(Setup::default()).await
    }

    pub async fn start_with(setup: Setup) -> Harness {
        let (dir, data_dir) = match setup.data_dir {
            Some(path) => (None, path),
            None => {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().to_path_buf();
                (Some(dir), path)
            }
        };
        let catalog_file = data_dir.join("catalog.json");
        if !catalog_file.exists() {
            std::fs::create_dir_all(&data_dir).unwrap();
            std::fs::write(&catalog_file, CATALOG).unwrap();
        }
        let secret = setup
            .secret
            .unwrap_or_else(|| (0..32).map(|_| fastrand::alphanumeric()).collect());
        let payments = Arc::new(SimulatedPaymentGateway::default());
        // Slow deliveries take long enough to act during, not seconds.
        let provisioning = Arc::new(SimulatedProvisioner::with_slow_delivery(SLOW_DELIVERY));
        let payment_port: Arc<dyn PaymentGateway> = match setup.payments {
            Some(layer) => layer(payments.clone()),
            None => payments.clone(),
        };
        let provisioning_port: Arc<dyn Provisioner> = match setup.provisioning {
            Some(layer) => layer(provisioning.clone()),
            None => provisioning.clone(),
        };
        if setup.target == TestTarget::AwsLocal {
            assert!(
                setup.store_layer.is_none() && setup.workflow.is_none(),
                "store and workflow layers wrap in-process ports: not against aws-local"
            );
            let stack = setup
                .stack
                .unwrap_or_else(|| format!("t{:08x}", fastrand::u32(..)));
            let shape = aws_local::AwsLocal::start(aws_local::Options {
                template: setup.template.unwrap_or_else(template_file),
                bin_dir: aws_local::bin_dir_of_test_binary().unwrap(),
                data_dir: data_dir.clone(),
                stack_name: stack.clone(),
                region: "us-east-1".into(),
                dynamodb_endpoint: aws_test_endpoint(),
                api_address: "127.0.0.1:0".parse().unwrap(),
                catalog_file: Some(catalog_file),
                auth: AuthConfig {
                    issuer: local::DEFAULT_ISSUER.into(),
                    audience: local::DEFAULT_AUDIENCE.into(),
                    leeway_seconds: 5,
                    keys: KeySource::Hs256 {
                        secret: secret.clone(),
                    },
                },
                parameters: [("WorkflowType".to_owned(), setup.workflow_type.to_string())].into(),
                payments: payment_port,
                provisioning: provisioning_port,
                step_hook: setup.hook,
                delay_scale: DELAY_SCALE,
                run_schedules: false,
                lambda_endpoint: None,
            })
            .await
            .unwrap();
            let store = shape
                .store()
                .expect("the template gives the functions their tables");
            let (inventory, purchases): (Arc<dyn Inventory>, Arc<dyn PurchaseStore>) =
                (store.clone(), store);
            return Harness {
                base: format!("{}/purchase-orchestrator", shape.api_url),
                client: reqwest::Client::new(),
                secret,
                payments,
                provisioning,
                system: InProcess(None),
                data_dir,
                target: TestTarget::AwsLocal,
                inventory,
                purchases,
                store: setup.store,
                workflow_type: setup.workflow_type,
                stack: Some(stack),
                running: Running::AwsLocal(Box::new(shape)),
                _dir: dir,
            };
        }
        let options = LocalOptions {
            data_dir: data_dir.clone(),
            catalog_file: Some(catalog_file),
            store: setup.store.clone(),
            auth: AuthConfig {
                issuer: local::DEFAULT_ISSUER.into(),
                audience: local::DEFAULT_AUDIENCE.into(),
                leeway_seconds: 5,
                keys: KeySource::Hs256 {
                    secret: secret.clone(),
                },
            },
            payments: payment_port,
            provisioning: provisioning_port,
            step_hook: setup.hook,
            store_layer: setup.store_layer,
            workflow_layer: setup.workflow,
            delay_scale: DELAY_SCALE,
            // Tests run the reconciler by hand, on purchases of any age.
            reconcile_every: None,
            reconcile_after: Duration::from_secs(300),
            workflow_type: setup.workflow_type,
        };
        let system = Arc::new(LocalSystem::start(options).await.unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let router = system.router();
        let (shutdown, stopping) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopping.await;
                })
                .await
                .unwrap();
        });
        Harness {
            base: format!("http://{address}/purchase-orchestrator"),
            client: reqwest::Client::new(),
            secret,
            payments,
            provisioning,
            inventory: system.app.inventory.clone(),
            purchases: system.app.purchases.clone(),
            system: InProcess(Some(system)),
            data_dir,
            target: TestTarget::Local,
            store: setup.store,
            workflow_type: setup.workflow_type,
            stack: None,
            running: Running::Local { server, shutdown },
            _dir: dir,
        }
    }

    /// Stops serving and running executions, as a process exit would; the
    /// data stays for [`Harness::restart`].
    pub async fn stop(self) -> Stopped {
        // Close the client's pooled connections and let the server finish
        // every connection: each holds the API (and so the database).
        drop(self.client);
        match self.running {
            Running::Local { server, shutdown } => {
                let _ = shutdown.send(());
                let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
                self.system.shutdown().await;
            }
            Running::AwsLocal(shape) => shape.shutdown().await,
        }
        drop(self.system);
        drop(self.inventory);
        drop(self.purchases);
        Stopped {
            data_dir: self.data_dir,
            secret: self.secret,
            store: self.store,
            workflow_type: self.workflow_type,
            target: self.target,
            stack: self.stack,
            _dir: self._dir,
        }
    }

    /// A new orchestrator on the data a stopped one left.
    pub async fn restart(stopped: Stopped) -> (Harness, Option<tempfile::TempDir>) {
        // A write the old system started on the blocking pool may still
        // hold its database for a moment, as a dying process would.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !databases_released(&stopped) {
            assert!(
                Instant::now() < deadline,
                "the stopped orchestrator never released its database"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let harness = Harness::start_with(Setup {
            data_dir: Some(stopped.data_dir),
            secret: Some(stopped.secret),
            store: stopped.store,
            workflow_type: stopped.workflow_type,
            target: stopped.target,
            stack: stopped.stack,
            ..Setup::default()
        })
        .await;
        (harness, stopped._dir)
    }

    /// A reconciler pass over purchases of any age. With `EXPRESS`, whose
    /// runs cannot be asked about, a purchase no review has is taken for
    /// lost at once too (instead of after the ten minutes a run may last).
    pub async fn reconcile_now(&self) -> Findings {
        self.system
            .reconcile_with(Ages {
                look_after: Duration::ZERO,
                restart_after: Duration::ZERO,
            })
            .await
            .unwrap()
    }

    /// Whether the workflow steps run as the AWS shape's function processes.
    pub fn is_aws_local(&self) -> bool {
        self.target == TestTarget::AwsLocal
    }

    /// The latest checkpoint of an execution of `machine`, as the runner
    /// running it keeps it: the in-process one, or the Step Functions
    /// endpoint's (`EXPRESS` runs too, for inspection).
    pub fn execution_checkpoint(&self, machine: Machine, name: &str) -> Option<asl::Checkpoint> {
        match &self.running {
            Running::Local { .. } => self
                .system
                .workflow
                .execution_checkpoint(machine, name)
                .unwrap(),
            Running::AwsLocal(shape) => shape
                .execution(machine_logical_id(machine), name)
                .unwrap()
                .and_then(|execution| execution.last),
        }
    }

    /// Whether an execution of `machine` of that name runs now.
    pub fn is_execution_running(&self, machine: Machine, name: &str) -> bool {
        match &self.running {
            Running::Local { .. } => self.system.workflow.is_execution_running(machine, name),
            Running::AwsLocal(shape) => shape
                .execution(machine_logical_id(machine), name)
                .unwrap()
                .is_some_and(|execution| execution.status == asl::ExecutionStatus::Running),
        }
    }

    /// The workflow port as the API's functions see it: the in-process
    /// workflow, or the project's Step Functions adapter against the
    /// shape's endpoint, configured as the template configures a function.
    pub fn workflow(&self) -> Arc<dyn Workflow> {
        match &self.running {
            Running::Local { .. } => self.system.workflow.clone(),
            Running::AwsLocal(shape) => {
                let arn = |machine| {
                    shape
                        .template()
                        .state_machines
                        .iter()
                        .find(|m| m.logical_id == machine_logical_id(machine))
                        .map(|m| m.arn.clone())
                };
                let client = aws_sdk_sfn::Client::from_conf(
                    aws_sdk_sfn::Config::builder()
                        .behavior_version(aws_sdk_sfn::config::BehaviorVersion::latest())
                        .endpoint_url(&shape.states_url)
                        .region(aws_sdk_sfn::config::Region::new("us-east-1"))
                        .credentials_provider(aws_sdk_sfn::config::Credentials::new(
                            "testing", "testing", None, None, "tests",
                        ))
                        .build(),
                );
                Arc::new(StepFunctionsWorkflow::new(
                    client,
                    StateMachines {
                        purchase: arn(Machine::Purchase),
                        review: arn(Machine::Review),
                        workflow_type: self.workflow_type,
                    },
                ))
            }
        }
    }

    pub fn token(&self, customer: &str, scopes: &[Scope]) -> String {
        shared::auth::mint_hs256_token(
            &self.secret,
            local::DEFAULT_ISSUER,
            local::DEFAULT_AUDIENCE,
            customer,
            scopes,
            Duration::from_secs(600),
        )
        .unwrap()
    }

    pub fn customer_token(&self, customer: &str) -> String {
        self.token(customer, &[Scope::Read, Scope::Write])
    }

    pub fn admin_token(&self) -> String {
        self.token("back-office", &[Scope::Read, Scope::Write, Scope::Admin])
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, json, headers)
    }

    pub async fn create(&self, customer: &str, body: &Value) -> (u16, Value) {
        let (status, json, _) = self
            .send(
                reqwest::Method::POST,
                "/purchases",
                &self.customer_token(customer),
                Some(body),
            )
            .await;
        (status, json)
    }

    /// Creates a purchase that must be accepted; returns its id.
    pub async fn create_ok(&self, body: &Value) -> String {
        let (status, json) = self.create(CUSTOMER, body).await;
        assert_eq!(status, 201, "{json}");
        json["purchaseId"].as_str().unwrap().to_owned()
    }

    /// GETs a purchase, riding out 503s (the reliability tests inject them).
    pub async fn get(&self, id: &str) -> Value {
        let (status, json) = self
            .send_riding_out_503(reqwest::Method::GET, &format!("/purchases/{id}"))
            .await;
        assert_eq!(status, 200, "{json}");
        json
    }

    /// Sends an admin request as an operator's client would: a 503 (an
    /// injected outage, an execution still ending) is retried after a
    /// moment, for up to 30 s.
    async fn send_riding_out_503(&self, method: reqwest::Method, path: &str) -> (u16, Value) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body, _) = self
                .send(method.clone(), path, &self.admin_token(), None)
                .await;
            if status != 503 || Instant::now() > deadline {
                return (status, body);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn cancel(&self, id: &str) -> (u16, Value) {
        let (status, json, _) = self
            .send(
                reqwest::Method::POST,
                &format!("/purchases/{id}/cancel"),
                &self.customer_token(CUSTOMER),
                None,
            )
            .await;
        (status, json)
    }

    /// Polls until the purchase reaches its final status and the workflow
    /// has finished with it (deadline 30 s).
    pub async fn wait_final(&self, id: &str) -> Value {
        self.wait_final_within(id, Duration::from_secs(30)).await
    }

    pub async fn wait_final_within(&self, id: &str, limit: Duration) -> Value {
        self.wait_until_within(id, limit, is_final).await
    }

    pub async fn wait_until(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        self.wait_until_within(id, Duration::from_secs(30), done)
            .await
    }

    pub async fn wait_until_within(
        &self,
        id: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let purchase = self.get(id).await;
            if done(&purchase) {
                return purchase;
            }
            assert!(
                Instant::now() < deadline,
                "purchase {id} did not get there in time: {purchase:#}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stock(&self, product: &str) -> i64 {
        let ids = [ProductId::new(product)];
        for _ in 0..100 {
            // Injected faults may refuse a read; the next one gets through.
            if let Ok(products) = self.inventory.get_products(&ids).await {
                return products[0].stock;
            }
        }
        panic!("could not read the stock of {product}");
    }

    /// Money the payment simulator moved, per purchase.
    pub fn account(&self, id: &str) -> (i64, i64) {
        let account = self
            .payments
            .accounts()
            .get(&PurchaseId::new(id))
            .cloned()
            .unwrap_or_default();
        (account.captured, account.refunded)
    }

    /// Checks what the orchestrator *asked* the payment provider for (not
    /// what the simulator let through): one capture key per purchase, no
    /// capture after a refund, never more refunded than captured.
    pub fn assert_payments_asked_sensibly(&self) {
        assert_payment_requests_sensible(&self.payments.requests(), &self.payments.accounts());
    }

    /// Checks what the orchestrator asked the provisioning service for: a
    /// purchase's lines are delivered at most once each before a revocation,
    /// and never delivered again after one.
    pub fn assert_provisioning_asked_sensibly(&self) {
        assert_provisioning_requests_sensible(&self.provisioning.requests());
    }
}

/// The template's resource for each of the two machines.
fn machine_logical_id(machine: Machine) -> &'static str {
    match machine {
        Machine::Purchase => "PurchaseStateMachine",
        Machine::Review => "ReviewStateMachine",
    }
}

/// Whether every database the stopped orchestrator kept under its data
/// directory can be opened again.
fn databases_released(stopped: &Stopped) -> bool {
    match stopped.target {
        TestTarget::Local => {
            shared::adapters::embedded::EmbeddedStore::open(&stopped.data_dir).is_ok()
        }
        TestTarget::AwsLocal => {
            let journal = aws_local::states::journal_path(&stopped.data_dir);
            !journal.exists() || redb::Database::create(&journal).is_ok()
        }
    }
}

/// See [`Harness::assert_payments_asked_sensibly`].
pub fn assert_payment_requests_sensible(
    requests: &[PaymentRequest],
    accounts: &HashMap<PurchaseId, shared::adapters::simulators::Account>,
) {
    let mut capture_keys: HashMap<&PurchaseId, &str> = HashMap::new();
    let mut refunded: std::collections::HashSet<&PurchaseId> = Default::default();
    for request in requests {
        match request {
            PaymentRequest::Capture {
                purchase_id, key, ..
            } => {
                assert!(
                    !refunded.contains(purchase_id),
                    "purchase {purchase_id}: capture asked for after a refund"
                );
                let first = capture_keys.entry(purchase_id).or_insert(key.as_str());
                assert_eq!(
                    *first, key,
                    "purchase {purchase_id}: a second capture with a new key"
                );
            }
            PaymentRequest::Refund { purchase_id, .. } => {
                refunded.insert(purchase_id);
            }
        }
    }
    for (id, account) in accounts {
        assert!(
            account.refunded <= account.captured,
            "purchase {id}: refunded {} of {} captured",
            account.refunded,
            account.captured
        );
    }
}

/// See [`Harness::assert_provisioning_asked_sensibly`].
pub fn assert_provisioning_requests_sensible(requests: &[ProvisioningRequest]) {
    let mut revoked: std::collections::HashSet<(&PurchaseId, &ProductId)> = Default::default();
    for request in requests {
        match request {
            ProvisioningRequest::Provision {
                purchase_id,
                product_id,
            } => assert!(
                !revoked.contains(&(purchase_id, product_id)),
                "purchase {purchase_id}: {product_id} delivered again after it was revoked"
            ),
            ProvisioningRequest::Revoke {
                purchase_id,
                product_id,
            } => {
                revoked.insert((purchase_id, product_id));
            }
        }
    }
}

impl Harness {
    /// The lines delivered (and not taken back) for a purchase.
    pub fn delivered(&self, id: &str) -> Vec<String> {
        let mut lines: Vec<String> = self
            .provisioning
            .delivered()
            .into_iter()
            .filter(|(purchase, _)| purchase.as_str() == id)
            .map(|(_, product)| product.to_string())
            .collect();
        lines.sort();
        lines
    }
}

/// Writes a line to the terminal past the test harness's output capture (a
/// direct write, not `println!`), so CI logs show it for passing tests too:
/// seeds to replay, case counts, figures.
pub fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Appends a test's figures to `RELIABILITY_REPORT` (a JSON line), when set:
/// `scripts/reliability.sh` turns them into docs/reliability.md.
pub fn report(check: &str, numbers: Value) {
    let Ok(path) = std::env::var("RELIABILITY_REPORT") else {
        return;
    };
    let line = json!({ "check": check, "numbers": numbers, "store": std::env::var("PURCHASE_TEST_STORE").unwrap_or_else(|_| "embedded".into()) });
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    std::io::Write::write_all(&mut file, format!("{line}\n").as_bytes()).unwrap();
}

/// The timeline as (step, outcome) pairs, oldest first.
pub fn timeline_steps(p: &Value) -> Vec<(String, String)> {
    p["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["step"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

impl Harness {
    /// The stored purchase, as the lifecycle sees it (its run, its token).
    pub async fn stored(&self, id: &str) -> shared::domain::purchase::Purchase {
        self.purchases
            .get_purchase(&PurchaseId::new(id))
            .await
            .unwrap()
            .unwrap()
    }

    /// POSTs `body` as an admin; answers the status and the JSON body.
    pub async fn admin_post(&self, path: &str, body: Value) -> (u16, Value) {
        let (status, json, _) = self
            .send(
                reqwest::Method::POST,
                path,
                &self.admin_token(),
                Some(&body),
            )
            .await;
        (status, json)
    }

    /// An operator's review decision (`approve` or `reject`) on a held
    /// purchase.
    pub async fn review(&self, id: &str, decision: &str) -> (u16, Value) {
        self.admin_post(
            &format!("/purchases/{id}/review"),
            json!({"decision": decision, "reason": "checked"}),
        )
        .await
    }

    /// Redrives as an operator's client would: a 503 (the execution still
    /// ending) is retried after a moment.
    pub async fn redrive(&self, id: &str) -> (u16, Value) {
        self.send_riding_out_503(reqwest::Method::POST, &format!("/purchases/{id}/redrive"))
            .await
    }
}

/// The workflow is done with it: completed, or stopped and fully undone.
pub fn is_final(p: &Value) -> bool {
    p.get("finalizedAt").is_some_and(|at| !at.is_null())
}

pub fn purchase_body(products: &[(&str, u32)], token: &str) -> Value {
    json!({
        "customerId": CUSTOMER,
        "products": products.iter().map(|(id, q)| json!({"id": id, "quantity": q})).collect::<Vec<_>>(),
        "paymentDetails": {"method": "card", "transactionId": token},
        "shippingAddress": {"name": "Alice Liddell", "address": "1 Rabbit Hole", "city": "Oxford", "country": "GB", "postalCode": "OX1 1AA"}
    })
}

/// Pauses every workflow just before `step` until released, and says when
/// one got there: lets a test act "while the workflow is at step X".
pub struct Gate {
    step: Step,
    reached: Notify,
    release: Semaphore,
}

impl Gate {
    pub fn new(step: Step) -> Arc<Gate> {
        Arc::new(Gate {
            step,
            reached: Notify::new(),
            release: Semaphore::new(0),
        })
    }

    pub async fn reached(&self) {
        tokio::time::timeout(Duration::from_secs(30), self.reached.notified())
            .await
            .expect("the workflow never reached the gated step");
    }

    pub fn open(&self) {
        // Plenty of permits: retries of the step pass straight through.
        self.release.add_permits(1_000);
    }
}

#[async_trait]
impl StepHook for Gate {
    async fn before(&self, step: Step, _: &str) -> Attempt {
        if step == self.step {
            self.reached.notify_one();
            if let Ok(permit) = self.release.acquire().await {
                permit.forget();
            }
        }
        Attempt::Run
    }
}

/// Several gates at once, each pausing before its own step.
pub struct Gates(pub Vec<Arc<Gate>>);

#[async_trait]
impl StepHook for Gates {
    async fn before(&self, step: Step, purchase_id: &str) -> Attempt {
        for gate in &self.0 {
            gate.before(step, purchase_id).await;
        }
        Attempt::Run
    }
}

pub fn line_statuses(purchase: &Value) -> Vec<String> {
    purchase["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["status"].as_str().unwrap().to_owned())
        .collect()
}
