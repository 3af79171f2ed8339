//! The AWS face of the project, checked offline against the Rust code:
//!
//! 1. `template.yaml`: every function is a workspace binary and every
//!    workspace binary a function; each HTTP function's Api event is its
//!    `Endpoint::route()`; the reconciler has its schedule; environment,
//!    timeouts and IAM follow the rules in docs/deploy.md ("IAM"); the tables
//!    are the ones `DynamoStore::create_tables` makes; the alarms watch what
//!    the code emits.
//! 2. The two state machines' `${...}` placeholders and
//!    `DefinitionSubstitutions` name each other, the step functions and the
//!    other machine; the purchase machine's type is the `WorkflowType`
//!    parameter and each machine may start the other, nothing more; each
//!    task state's input is its step's event file; each function stops
//!    before its state times out.
//! 3. `openapi.yaml`: its paths and methods are the served routes, its enums
//!    the Rust enums' serde names, its bounds `validation::limits`.
//! 4. Every `events/*.json` goes through the real `lambda_http` adapter (API
//!    Gateway REST proxy event → `http::Request` → handler → proxy response)
//!    or the step's input type, and gets the status docs/deploy.md documents;
//!    response bodies and headers are checked against `openapi.yaml`. Every
//!    store and workflow call a function makes on the way is checked against
//!    the IAM grants the template gives that function.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lambda_http::aws_lambda_events::apigw::ApiGatewayProxyRequest;
use lambda_http::request::{LambdaRequest, RequestOrigin};
use lambda_http::{Adapter, Context, LambdaEvent, Request, Service, service_fn};
use serde::Serialize;
use serde_json::{Value, json};
use serde_yaml_ng::Value as Yaml;
use shared::adapters::dynamodb::{ALL_PURCHASES_INDEX, BY_CUSTOMER_INDEX, UNFINISHED_INDEX};
use shared::adapters::embedded::EmbeddedStore;
use shared::adapters::simulators::{SimulatedPaymentGateway, SimulatedProvisioner};
use shared::api::app::App;
use shared::api::endpoint::Endpoint;
use shared::api::error::ApiError;
use shared::api::purchases::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use shared::api::request::BASE_PATH;
use shared::auth::{AuthConfig, JwtAuthenticator, KeySource, Scope, mint_hs256_token};
use shared::domain::lifecycle::StockChange;
use shared::domain::purchase::{
    FailureReason, LineStatus, PaymentStatus, Product, ProductKind, Purchase, PurchaseStatus,
    ShippingStatus, TaskDecision,
};
use shared::domain::rules::{MAX_RULES, OnViolation, RULE_IDS, RuleOutcome};
use shared::domain::validation::limits;
use shared::domain::{ProductId, PurchaseId};
use shared::lambda::config::{DEFAULT_RECONCILE_AFTER, LOCAL_DEVELOPMENT};
use shared::observability::metrics::{NAMESPACE, PurchaseEvent, metric_name};
use shared::ports::store::{
    Claim, Completion, IdempotencyRecord, IdempotencyStore, Inventory, PurchasePage, PurchaseQuery,
    PurchaseStore, RuleSetRecord, RuleSetStore, StoreError,
};
use shared::ports::workflow::{
    DEFINITION, ExecutionState, Machine, REVIEW_DEFINITION, Run, Workflow, WorkflowError,
    WorkflowType,
};
use shared::service::reconcile::Ages;
use shared::steps::{Step, StepDeps, StepError};

/// The scheduled function that is neither an endpoint nor a step
/// (`functions/reconcile-purchases`, `shared::lambda::run_reconciler`).
const RECONCILER: &str = "reconcile-purchases";
/// The review console's static files (`functions/console`): no endpoint of
/// the API, no step, no AWS calls.
const CONSOLE: &str = "console";

// ---------------------------------------------------------------- files

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("shared/ lives in the workspace root")
        .to_path_buf()
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(relative: &str) -> Yaml {
    serde_yaml_ng::from_str(&read(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// CloudFormation short forms (`!Ref X`, `!GetAtt X.Arn`, `!Sub ...`) parse
/// as tagged values: (tag without `!`, value).
fn tagged(value: &Yaml) -> Option<(String, &Yaml)> {
    match value {
        Yaml::Tagged(tagged) => Some((
            tagged.tag.to_string().trim_start_matches('!').to_owned(),
            &tagged.value,
        )),
        _ => None,
    }
}

fn get<'a>(value: &'a Yaml, path: &[&str]) -> Option<&'a Yaml> {
    path.iter().try_fold(value, |v, key| v.get(*key))
}

fn text<'a>(value: &'a Yaml, path: &[&str]) -> Option<&'a str> {
    get(value, path).and_then(Yaml::as_str)
}

/// `!Ref X` → `X`.
fn reference(value: &Yaml) -> Option<&str> {
    match tagged(value) {
        Some((tag, target)) if tag == "Ref" => target.as_str(),
        _ => None,
    }
}

// ---------------------------------------------------------------- template model

struct TemplateFunction {
    logical_id: String,
    binary: String,
    properties: Yaml,
}

impl TemplateFunction {
    /// `Timeout`, its own or the Globals'.
    fn timeout(&self, template: &Yaml) -> u64 {
        self.properties
            .get("Timeout")
            .or_else(|| get(template, &["Globals", "Function", "Timeout"]))
            .and_then(Yaml::as_u64)
            .unwrap_or_else(|| panic!("{}: Timeout", self.logical_id))
    }

    fn has_env(&self, name: &str) -> bool {
        get(&self.properties, &["Environment", "Variables", name]).is_some()
    }
}

fn template() -> Yaml {
    yaml("template.yaml")
}

fn resources(template: &Yaml) -> Vec<(String, &Yaml)> {
    template["Resources"]
        .as_mapping()
        .expect("Resources")
        .iter()
        .map(|(k, v)| (k.as_str().expect("logical id").to_owned(), v))
        .collect()
}

fn resource<'a>(template: &'a Yaml, logical_id: &str) -> &'a Yaml {
    resources(template)
        .into_iter()
        .find(|(id, _)| id == logical_id)
        .unwrap_or_else(|| panic!("template.yaml: no resource {logical_id}"))
        .1
}

fn template_functions(template: &Yaml) -> Vec<TemplateFunction> {
    resources(template)
        .into_iter()
        .filter(|(_, r)| text(r, &["Type"]) == Some("AWS::Serverless::Function"))
        .map(|(logical_id, r)| {
            assert_eq!(
                text(r, &["Metadata", "BuildMethod"]),
                Some("rust-cargolambda"),
                "{logical_id}: Metadata.BuildMethod"
            );
            let binary = text(r, &["Metadata", "BuildProperties", "Binary"])
                .unwrap_or_else(|| panic!("{logical_id}: Metadata.BuildProperties.Binary"))
                .to_owned();
            TemplateFunction {
                logical_id,
                binary,
                properties: r["Properties"].clone(),
            }
        })
        .collect()
}

fn function_for<'a>(functions: &'a [TemplateFunction], binary: &str) -> &'a TemplateFunction {
    functions
        .iter()
        .find(|f| f.binary == binary)
        .unwrap_or_else(|| panic!("no function in template.yaml builds binary {binary}"))
}

/// What the Rust code says the functions are: one per endpoint, one per
/// step, and the reconciler.
fn rust_functions() -> BTreeSet<String> {
    Endpoint::ALL
        .iter()
        .map(|e| e.function_name().to_owned())
        .chain(Step::ALL.iter().map(|s| s.function_name().to_owned()))
        .chain([RECONCILER.to_owned(), CONSOLE.to_owned()])
        .collect()
}

fn is_endpoint(binary: &str) -> bool {
    Endpoint::ALL.iter().any(|e| e.function_name() == binary)
}

fn is_step(binary: &str) -> bool {
    Step::from_function_name(binary).is_some()
}

/// `functions/<dir>/Cargo.toml` packages with a `src/main.rs`: the binaries.
fn workspace_binaries() -> BTreeSet<String> {
    let dir = root().join("functions");
    let mut binaries = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("functions/") {
        let path = entry.expect("dir entry").path();
        let manifest = path.join("Cargo.toml");
        if !manifest.is_file() {
            continue;
        }
        let dir_name = path.file_name().unwrap().to_string_lossy().into_owned();
        let toml = std::fs::read_to_string(&manifest).unwrap();
        let package_name = toml
            .lines()
            .skip_while(|line| line.trim() != "[package]")
            .find_map(|line| {
                let (key, value) = line.split_once('=')?;
                (key.trim() == "name").then(|| value.trim().trim_matches('"').to_owned())
            })
            .unwrap_or_else(|| panic!("{}: no package name", manifest.display()));
        assert_eq!(
            package_name,
            dir_name,
            "{}: binary name = crate dir name",
            manifest.display()
        );
        assert!(
            path.join("src/main.rs").is_file(),
            "{dir_name}: src/main.rs"
        );
        binaries.insert(dir_name);
    }
    binaries
}

fn scope_for(endpoint: Endpoint) -> Scope {
    match endpoint {
        Endpoint::ListPurchases | Endpoint::GetPurchase => Scope::Read,
        Endpoint::CreatePurchase | Endpoint::UpdatePurchase | Endpoint::CancelPurchase => {
            Scope::Write
        }
        Endpoint::ApplyRules
        | Endpoint::ReviewPurchase
        | Endpoint::RedrivePurchase
        | Endpoint::ListRuleSets
        | Endpoint::CreateRuleSet
        | Endpoint::GetRuleSet
        | Endpoint::UpdateRuleSet
        | Endpoint::DeleteRuleSet => Scope::Admin,
    }
}

/// Every IAM action granted in a function's inline policy statements.
fn granted_actions(function: &TemplateFunction) -> Vec<(String, Yaml)> {
    let mut granted = Vec::new();
    for policy in function.properties["Policies"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        for statement in policy["Statement"].as_sequence().into_iter().flatten() {
            assert_eq!(
                text(statement, &["Effect"]),
                Some("Allow"),
                "{}",
                function.logical_id
            );
            let actions: Vec<String> = match &statement["Action"] {
                Yaml::String(action) => vec![action.clone()],
                Yaml::Sequence(list) => list
                    .iter()
                    .map(|a| a.as_str().unwrap().to_owned())
                    .collect(),
                other => panic!("{}: Action {other:?}", function.logical_id),
            };
            for action in actions {
                granted.push((action, statement["Resource"].clone()));
            }
        }
    }
    granted
}

/// The state machines' logical ids.
const STATE_MACHINES: [&str; 2] = [MACHINE, REVIEW_MACHINE];

/// A state machine's `Name` (a `!Sub`), from which policies build its ARN
/// (and the execution ARNs they name). The purchase machine's is
/// `!If [IsExpress, <express name>, <name>]`: this is the `STANDARD` one,
/// the one whose executions can be described and redriven.
fn machine_name(template: &Yaml, logical_id: &str) -> String {
    let sub = |value: &Yaml| {
        tagged(value)
            .and_then(|(tag, v)| (tag == "Sub").then(|| v.as_str().unwrap().to_owned()))
            .unwrap_or_else(|| panic!("{logical_id}: a !Sub name, not {value:?}"))
    };
    let name = &resource(template, logical_id)["Properties"]["Name"];
    match tagged(name) {
        Some((tag, branches)) if tag == "If" => {
            let branches = branches.as_sequence().expect("!If [condition, then, else]");
            assert_eq!(branches[0].as_str(), Some("IsExpress"), "{logical_id}");
            let (express, standard) = (sub(&branches[1]), sub(&branches[2]));
            assert_eq!(express, format!("{standard}-express"), "{logical_id}");
            standard
        }
        _ => sub(name),
    }
}

/// The ARN of a state machine, or of its executions, built from its fixed
/// name as policies and substitutions write it (`!Sub ...`).
fn arn_from_name(template: &Yaml, logical_id: &str, executions: bool) -> String {
    let prefix = "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:";
    let name = machine_name(template, logical_id);
    if executions {
        format!("{prefix}execution:{name}:*")
    } else {
        format!("{prefix}stateMachine:{name}")
    }
}

/// A policy `Resource` as a short name: `!GetAtt PurchasesTable.Arn` →
/// `PurchasesTable`, `!Sub ${PurchasesTable.Arn}/index/byCustomer` →
/// `PurchasesTable/index/byCustomer`, `!Ref PurchaseStateMachine` and a
/// state machine's ARN built from its name → `PurchaseStateMachine` (or
/// `ReviewStateMachine`), the ARN of its executions →
/// `PurchaseStateMachine/execution`.
fn resource_names(resource: &Yaml, template: &Yaml) -> Vec<String> {
    if let Some(list) = resource.as_sequence() {
        return list
            .iter()
            .flat_map(|r| resource_names(r, template))
            .collect();
    }
    let (tag, value) =
        tagged(resource).unwrap_or_else(|| panic!("Resource {resource:?}: use !GetAtt/!Sub/!Ref"));
    let value = value.as_str().expect("a string");
    let machine_arn = STATE_MACHINES.into_iter().find_map(|id| {
        if value == arn_from_name(template, id, false) {
            Some(id.to_owned())
        } else if value == arn_from_name(template, id, true) {
            Some(format!("{id}/execution"))
        } else {
            None
        }
    });
    let name = match tag.as_str() {
        "GetAtt" => value.strip_suffix(".Arn").expect("X.Arn").to_owned(),
        "Ref" => value.to_owned(),
        "Sub" if value.starts_with("${") => value
            .replacen(".Arn}", "", 1)
            .trim_start_matches("${")
            .to_owned(),
        "Sub" => machine_arn.unwrap_or_else(|| {
            panic!(
                "Resource !Sub {value}: only a state machine's ARN or its executions', \
                 built from its Name"
            )
        }),
        other => panic!("Resource !{other}"),
    };
    vec![name]
}

type Grant = (String, String);

/// Every (action, resource name) each function's policies grant, by binary.
fn grants_by_function(template: &Yaml) -> BTreeMap<String, BTreeSet<Grant>> {
    template_functions(template)
        .iter()
        .map(|function| {
            let mut granted = BTreeSet::new();
            for (action, resource) in granted_actions(function) {
                for name in resource_names(&resource, template) {
                    granted.insert((action.clone(), name));
                }
            }
            (function.binary.clone(), granted)
        })
        .collect()
}

const PURCHASES: &str = "PurchasesTable";
const PRODUCTS: &str = "ProductsTable";
const IDEMPOTENCY: &str = "IdempotencyTable";
const RULE_SETS: &str = "RuleSetsTable";
const MACHINE: &str = "PurchaseStateMachine";
const EXECUTIONS: &str = "PurchaseStateMachine/execution";
const REVIEW_MACHINE: &str = "ReviewStateMachine";
const REVIEW_EXECUTIONS: &str = "ReviewStateMachine/execution";

fn index(name: &str) -> String {
    format!("{PURCHASES}/index/{name}")
}

// ---------------------------------------------------------------- 1. template ↔ workspace

#[test]
fn every_template_function_is_a_workspace_binary_and_every_binary_is_in_the_template() {
    let template = template();
    let functions = template_functions(&template);
    let in_template: BTreeSet<String> = functions.iter().map(|f| f.binary.clone()).collect();
    assert_eq!(
        in_template.len(),
        functions.len(),
        "two template functions build the same binary"
    );
    let in_workspace = workspace_binaries();
    assert_eq!(
        in_template, in_workspace,
        "template.yaml functions (left) vs functions/* crates (right)"
    );
    assert_eq!(
        in_workspace,
        rust_functions(),
        "functions/* (left) vs Endpoint::ALL + Step::ALL + the reconciler + the console (right)"
    );
    let main = read(&format!("functions/{RECONCILER}/src/main.rs"));
    assert!(
        main.contains("run_reconciler"),
        "functions/{RECONCILER} runs shared::lambda::run_reconciler"
    );

    // Each function is built alone, in its own crate's directory, so that
    // cargo gives it only its own `shared` features (in the workspace root,
    // `cargo lambda build --bin <name>` would build with every member's;
    // docs/deploy.md "Build").
    let globals = &template["Globals"]["Function"];
    assert_eq!(
        text(globals, &["CodeUri"]),
        None,
        "Globals.Function.CodeUri"
    );
    for function in &functions {
        assert_eq!(
            text(&function.properties, &["CodeUri"]),
            Some(format!("functions/{}", function.binary).as_str()),
            "{}: CodeUri",
            function.logical_id
        );
    }
    assert_eq!(text(globals, &["Runtime"]), Some("provided.al2023"));
    assert_eq!(text(globals, &["Handler"]), Some("bootstrap"));
    assert_eq!(
        globals["Architectures"],
        serde_yaml_ng::from_str::<Yaml>("[arm64]").unwrap()
    );
    assert_eq!(text(globals, &["Tracing"]), Some("Active"));

    // Every function logs to its own group with the stack's retention.
    for function in &functions {
        let group = reference(&function.properties["LoggingConfig"]["LogGroup"])
            .unwrap_or_else(|| panic!("{}: LoggingConfig.LogGroup: !Ref", function.logical_id));
        let group = resource(&template, group);
        assert_eq!(text(group, &["Type"]), Some("AWS::Logs::LogGroup"));
        let name = tagged(&group["Properties"]["LogGroupName"])
            .and_then(|(_, v)| v.as_str())
            .unwrap();
        assert_eq!(
            name,
            format!("/aws/lambda/${{AWS::StackName}}/{}", function.binary),
            "{}",
            function.logical_id
        );
        assert_eq!(
            reference(&group["Properties"]["RetentionInDays"]),
            Some("LogRetentionDays")
        );
    }
}

#[test]
fn each_http_function_is_routed_exactly_as_endpoint_route() {
    let template = template();
    let functions = template_functions(&template);
    for endpoint in Endpoint::ALL {
        let function = function_for(&functions, endpoint.function_name());
        let events = function.properties["Events"]
            .as_mapping()
            .unwrap_or_else(|| panic!("{}: no Events", function.logical_id));
        assert_eq!(events.len(), 1, "{}: one Api event", function.logical_id);
        let event = events.values().next().unwrap();
        assert_eq!(
            text(event, &["Type"]),
            Some("Api"),
            "{}",
            function.logical_id
        );
        let (method, path) = endpoint.route();
        assert_eq!(
            text(event, &["Properties", "Path"]),
            Some(format!("{BASE_PATH}{path}").as_str()),
            "{}: Path",
            function.logical_id
        );
        assert_eq!(
            text(event, &["Properties", "Method"]).map(str::to_uppercase),
            Some(method.to_string()),
            "{}: Method",
            function.logical_id
        );
        assert_eq!(
            reference(&event["Properties"]["RestApiId"]),
            Some("Api"),
            "{}: RestApiId must be !Ref Api (else SAM makes an implicit API)",
            function.logical_id
        );
    }
    for step in Step::ALL {
        let function = function_for(&functions, step.function_name());
        assert!(
            function.properties.get("Events").is_none(),
            "{}: step tasks are invoked by Step Functions only",
            function.logical_id
        );
    }
    // The API's inline body exists for GatewayResponses only: no methods
    // there, so the events above stay the one definition of the routes.
    let api = resource(&template, "Api");
    assert_eq!(
        get(api, &["Properties", "MergeDefinitions"]).and_then(Yaml::as_bool),
        Some(true),
        "without MergeDefinitions SAM ignores the Api events of an inline DefinitionBody"
    );
    let paths = get(api, &["Properties", "DefinitionBody", "paths"])
        .and_then(Yaml::as_mapping)
        .expect("DefinitionBody.paths");
    // SAM's merge (translator 1.115) drops every event route when `paths` is {}.
    assert!(!paths.is_empty(), "DefinitionBody.paths must not be empty");
    for (path, item) in paths {
        assert!(
            item.as_mapping().is_none_or(|m| m.is_empty()),
            "DefinitionBody path {path:?} defines methods; routes belong in the functions' Api events"
        );
    }
}

#[test]
fn the_reconciler_runs_every_five_minutes_on_an_eventbridge_schedule() {
    let template = template();
    let functions = template_functions(&template);
    let reconciler = function_for(&functions, RECONCILER);
    let events = reconciler.properties["Events"]
        .as_mapping()
        .expect("the reconciler's Events");
    assert_eq!(events.len(), 1, "one schedule");
    let schedule = events.values().next().unwrap();
    assert_eq!(
        text(schedule, &["Type"]),
        Some("ScheduleV2"),
        "EventBridge Scheduler (SAM's ScheduleV2 makes the AWS::Scheduler::Schedule and its role)"
    );
    let properties = &schedule["Properties"];
    assert_eq!(
        text(properties, &["ScheduleExpression"]),
        Some("rate(5 minutes)")
    );
    assert_ne!(text(properties, &["State"]), Some("DISABLED"));
    // Two stacks (dev, prod) may share an account and region: no fixed name.
    assert!(
        get(properties, &["Name"]).is_none()
            && get(properties, &["OmitName"]).and_then(Yaml::as_bool) == Some(true),
        "the schedule's name must be generated (OmitName: true)"
    );
    // What the schedule sends is the event file, and the function takes any JSON.
    let input: Value = serde_json::from_str(text(properties, &["Input"]).expect("Input"))
        .expect("the schedule's Input is JSON");
    assert_eq!(input, event(RECONCILER), "events/{RECONCILER}.json");
    // A pass takes less than the period, so passes do not pile up.
    assert!(
        reconciler.timeout(&template) < 300,
        "{}: Timeout below the 5-minute period",
        reconciler.logical_id
    );
    assert_eq!(
        get(
            &reconciler.properties,
            &["EventInvokeConfig", "MaximumRetryAttempts"]
        )
        .and_then(Yaml::as_u64),
        Some(0),
        "a failed pass is not retried: the next one comes anyway"
    );
    // RECONCILE_AFTER_SECONDS: a parameter defaulting to the code's default.
    let variable = &reconciler.properties["Environment"]["Variables"]["RECONCILE_AFTER_SECONDS"];
    let parameter = reference(variable).expect("RECONCILE_AFTER_SECONDS: !Ref a parameter");
    assert_eq!(
        template["Parameters"][parameter]["Default"].as_u64(),
        Some(DEFAULT_RECONCILE_AFTER.as_secs()),
        "{parameter}: Default"
    );
}

#[test]
fn environment_follows_the_deployment_rules() {
    let template = template();
    let functions = template_functions(&template);
    let raw = read("template.yaml");
    let samconfig = read("samconfig.toml");
    // HS256 is for local development only: the template never allows it.
    for forbidden in ["JWT_HS256_SECRET", LOCAL_DEVELOPMENT] {
        assert!(
            !raw.contains(forbidden),
            "template.yaml must never set {forbidden}: tokens are verified against JWKS_URL"
        );
        assert!(
            !samconfig.contains(forbidden),
            "samconfig.toml: {forbidden}"
        );
    }

    let globals = &template["Globals"]["Function"]["Environment"]["Variables"];
    for variable in [
        "PURCHASES_TABLE",
        "PRODUCTS_TABLE",
        "IDEMPOTENCY_TABLE",
        "RULE_SETS_TABLE",
        "RUST_LOG",
    ] {
        assert!(globals.get(variable).is_some(), "Globals: {variable}");
    }
    let grants = grants_by_function(&template);
    for function in &functions {
        let has = |name: &str| function.has_env(name);
        let binary = function.binary.as_str();
        // lambda_app: JWT verification (lambda::config::lambda_auth_config).
        for variable in ["JWT_ISSUER", "JWT_AUDIENCE", "JWKS_URL"] {
            assert_eq!(
                has(variable),
                is_endpoint(binary),
                "{}: {variable}",
                function.logical_id
            );
        }
        // lambda_step_deps builds both provider clients at cold start.
        for variable in ["PAYMENT_URL", "PROVISIONING_URL"] {
            assert_eq!(
                has(variable),
                is_step(binary),
                "{}: {variable}",
                function.logical_id
            );
        }
        assert_eq!(
            has("RECONCILE_AFTER_SECONDS"),
            binary == RECONCILER,
            "{}: RECONCILE_AFTER_SECONDS",
            function.logical_id
        );
        // Whoever starts, describes or redrives purchase runs needs the ARN
        // and the workflow type (task tokens alone need neither); whoever
        // describes reviews, the review machine's ARN.
        let calls = |resources: &[&str]| {
            grants[binary].iter().any(|(action, resource)| {
                [
                    "states:StartExecution",
                    "states:DescribeExecution",
                    "states:RedriveExecution",
                ]
                .contains(&action.as_str())
                    && resources.contains(&resource.as_str())
            })
        };
        let variables = &function.properties["Environment"]["Variables"];
        for (variable, needed, value) in [
            ("STATE_MACHINE_ARN", calls(&[MACHINE, EXECUTIONS]), MACHINE),
            (
                "WORKFLOW_TYPE",
                calls(&[MACHINE, EXECUTIONS]),
                "WorkflowType",
            ),
            (
                "REVIEW_STATE_MACHINE_ARN",
                calls(&[REVIEW_MACHINE, REVIEW_EXECUTIONS]),
                REVIEW_MACHINE,
            ),
        ] {
            assert_eq!(has(variable), needed, "{}: {variable}", function.logical_id);
            if needed {
                assert_eq!(
                    reference(&variables[variable]),
                    Some(value),
                    "{}: {variable}",
                    function.logical_id
                );
            }
        }
    }
}

#[test]
fn timeouts_fit_the_definition_and_api_gateway() {
    let template = template();
    let functions = template_functions(&template);
    let definitions: Vec<Value> = [DEFINITION, REVIEW_DEFINITION]
        .into_iter()
        .map(|text| serde_json::from_str(text).unwrap())
        .collect();
    for step in Step::ALL {
        let function = function_for(&functions, step.function_name());
        let state = definitions
            .iter()
            .map(|d| &d["States"][step.state_name()])
            .find(|state| !state.is_null())
            .unwrap_or_else(|| panic!("no state {}", step.state_name()));
        let timeout = function.timeout(&template);
        let state_timeout = state["TimeoutSeconds"]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: TimeoutSeconds", step.state_name()));
        if state["Resource"]
            .as_str()
            .is_some_and(|r| r.ends_with(".waitForTaskToken"))
        {
            // The state's timeout is the wait for the decision; the
            // invocation itself only stores the token.
            assert!(timeout <= 30, "{}: Timeout {timeout}", function.logical_id);
        } else {
            // The function stops first, so a timeout is Lambda's clean error
            // (retried), never a Step Functions timeout racing a live invocation.
            assert!(
                timeout < state_timeout,
                "{}: Timeout {timeout} must be below {}'s TimeoutSeconds {state_timeout}",
                function.logical_id,
                step.state_name()
            );
        }
    }
    for endpoint in Endpoint::ALL {
        let function = function_for(&functions, endpoint.function_name());
        assert!(
            function.timeout(&template) < 29,
            "{}: API Gateway gives up after 29 s",
            function.logical_id
        );
    }
}

/// `[env.command.parameters]` → key → raw value (strings unquoted, arrays as
/// their unquoted items). Enough TOML for samconfig.toml; checked by SAM in CI.
fn samconfig() -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut sections: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    let mut open_array: Option<String> = None;
    for line in read("samconfig.toml").lines() {
        let line = line.split(" #").next().unwrap().trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let unquote = |v: &str| {
            v.trim()
                .trim_end_matches(',')
                .trim()
                .trim_matches('"')
                .to_owned()
        };
        if let Some(key) = &open_array {
            if line == "]" {
                open_array = None;
            } else {
                sections
                    .get_mut(&section)
                    .unwrap()
                    .get_mut(key)
                    .unwrap()
                    .push(unquote(line));
            }
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            sections.entry(section.clone()).or_default();
            continue;
        }
        let (key, value) = line.split_once('=').expect("key = value");
        let (key, value) = (key.trim().to_owned(), value.trim());
        let entry = sections.entry(section.clone()).or_default();
        if value == "[" {
            entry.insert(key.clone(), Vec::new());
            open_array = Some(key);
        } else {
            entry.insert(key, vec![unquote(value)]);
        }
    }
    sections
}

#[test]
fn samconfig_environments_deploy_the_template() {
    let template = template();
    let parameters = template["Parameters"].as_mapping().expect("Parameters");
    let required: BTreeSet<String> = parameters
        .iter()
        .filter(|(_, p)| p.get("Default").is_none())
        .map(|(k, _)| k.as_str().unwrap().to_owned())
        .collect();
    let config = samconfig();
    assert_eq!(config[""]["version"], ["0.1"]);
    for env in ["default", "dev", "prod"] {
        let global = &config[&format!("{env}.global.parameters")];
        assert!(
            global.contains_key("stack_name") && global.contains_key("region"),
            "{env}: stack and region"
        );
        let deploy = &config[&format!("{env}.deploy.parameters")];
        assert_eq!(deploy["capabilities"], ["CAPABILITY_IAM"], "{env}");
        assert_eq!(deploy["resolve_s3"], ["true"], "{env}");
        assert_eq!(
            deploy["confirm_changeset"],
            [if env == "prod" { "true" } else { "false" }],
            "{env}"
        );
        let overrides: BTreeMap<String, String> = deploy["parameter_overrides"]
            .iter()
            .map(|kv| {
                let (k, v) = kv.split_once('=').expect("Key=Value");
                (k.to_owned(), v.to_owned())
            })
            .collect();
        for key in overrides.keys() {
            assert!(
                parameters.contains_key(key.as_str()),
                "{env}: {key} is not a template parameter"
            );
        }
        let missing: BTreeSet<&String> = required
            .iter()
            .filter(|k| !overrides.contains_key(*k))
            .collect();
        if env == "prod" {
            // No simulator in prod, and no default either: the operator sets the real endpoints.
            let expected: BTreeSet<&str> = ["PaymentUrl", "ProvisioningUrl"].into();
            assert_eq!(
                missing.iter().map(|k| k.as_str()).collect::<BTreeSet<_>>(),
                expected,
                "prod"
            );
            assert!(
                !overrides.values().any(|v| v == "simulator"),
                "prod must not simulate"
            );
        } else {
            assert!(
                missing.is_empty(),
                "{env} lacks required parameters {missing:?}"
            );
            assert_eq!(
                overrides["PaymentUrl"], "simulator",
                "{env}: the simulator is the dev default"
            );
            assert_eq!(overrides["ProvisioningUrl"], "simulator", "{env}");
        }
        assert_eq!(
            overrides["Stage"],
            if env == "prod" { "prod" } else { "dev" },
            "{env}"
        );
    }
}

/// What each function may do, and nothing more: the DynamoDB calls
/// `DynamoStore` makes for its handler or step (docs/dynamodb.md), and the
/// Step Functions calls. docs/deploy.md ("IAM") shows the same table; the
/// event tests below check that every call the handlers really make is in it.
fn expected_grants(function: &str) -> BTreeSet<Grant> {
    let purchase_write = [
        ("dynamodb:GetItem", PURCHASES),
        ("dynamodb:PutItem", PURCHASES),
    ];
    // Claim (PutItem), read (GetItem), take over, complete, release (UpdateItem).
    let idempotency = [
        ("dynamodb:GetItem", IDEMPOTENCY),
        ("dynamodb:PutItem", IDEMPOTENCY),
        ("dynamodb:UpdateItem", IDEMPOTENCY),
    ];
    // Only reviews wait on task tokens.
    let deliver_decision = [
        ("states:SendTaskSuccess", REVIEW_MACHINE),
        ("states:SendTaskFailure", REVIEW_MACHINE),
    ];
    // The purchase's Put and one Update per product, in one TransactWriteItems.
    let move_stock = [("dynamodb:UpdateItem", PRODUCTS)];
    let by_customer = index(BY_CUSTOMER_INDEX);
    let all_purchases = index(ALL_PURCHASES_INDEX);
    let unfinished = index(UNFINISHED_INDEX);
    let mut grants: Vec<(&str, &str)> = Vec::new();
    match function {
        "create-purchase" => {
            grants.extend(purchase_write);
            grants.extend(idempotency);
            grants.push(("dynamodb:BatchGetItem", PRODUCTS));
            grants.push(("states:StartExecution", MACHINE));
            grants.push(("states:DescribeExecution", EXECUTIONS));
        }
        "list-purchases" => {
            grants.push(("dynamodb:Query", by_customer.as_str()));
            grants.push(("dynamodb:Query", all_purchases.as_str()));
            grants.push(("dynamodb:BatchGetItem", PURCHASES));
        }
        "get-purchase" => grants.push(("dynamodb:GetItem", PURCHASES)),
        "update-purchase" => {
            grants.extend(purchase_write);
            grants.push(("dynamodb:BatchGetItem", PRODUCTS));
            grants.push(("dynamodb:Query", by_customer.as_str()));
            // byCustomer projects keys only: the history is read after.
            grants.push(("dynamodb:BatchGetItem", PURCHASES));
            grants.push(("dynamodb:GetItem", RULE_SETS));
            grants.extend(deliver_decision);
        }
        "cancel-purchase" | "review-purchase" => {
            grants.extend(purchase_write);
            grants.extend(idempotency);
            grants.extend(deliver_decision);
        }
        "apply-rules" => {
            grants.extend(purchase_write);
            grants.push(("dynamodb:Query", by_customer.as_str()));
            // byCustomer projects keys only: the history is read after.
            grants.push(("dynamodb:BatchGetItem", PURCHASES));
            grants.extend(deliver_decision);
        }
        "redrive-purchase" => {
            grants.extend(purchase_write);
            grants.extend(idempotency);
            grants.push(("states:RedriveExecution", EXECUTIONS));
            grants.push(("states:DescribeExecution", EXECUTIONS));
            // EXPRESS: a new run instead.
            grants.push(("states:StartExecution", MACHINE));
        }
        "list-rule-sets" => grants.push(("dynamodb:Scan", RULE_SETS)),
        "create-rule-set" => {
            grants.push(("dynamodb:Scan", RULE_SETS));
            grants.push(("dynamodb:PutItem", RULE_SETS));
        }
        "get-rule-set" => grants.push(("dynamodb:GetItem", RULE_SETS)),
        "update-rule-set" => {
            grants.push(("dynamodb:GetItem", RULE_SETS));
            grants.push(("dynamodb:PutItem", RULE_SETS));
        }
        "delete-rule-set" => grants.push(("dynamodb:DeleteItem", RULE_SETS)),
        "evaluate-rules" => {
            grants.extend(purchase_write);
            grants.push(("dynamodb:Query", by_customer.as_str()));
            // byCustomer projects keys only: the history is read after.
            grants.push(("dynamodb:BatchGetItem", PURCHASES));
            grants.push(("dynamodb:GetItem", RULE_SETS));
        }
        // Stock moves: taken (reserve), given back for a refused line
        // (provision), a taken-back line (revoke) or held lines (release).
        "reserve-stock" | "provision-products" | "revoke-products" | "release-stock" => {
            grants.extend(purchase_write);
            grants.extend(move_stock);
        }
        "capture-payment" | "refund-payment" | "needs-attention" | "finalize-purchase"
        | "continue-purchase" => grants.extend(purchase_write),
        "await-review" => {
            grants.extend(purchase_write);
            grants.extend(deliver_decision);
        }
        RECONCILER => {
            grants.push(("dynamodb:Query", unfinished.as_str()));
            grants.push(("dynamodb:BatchGetItem", PURCHASES));
            grants.extend(purchase_write);
            grants.push(("states:StartExecution", MACHINE));
            grants.push(("states:DescribeExecution", EXECUTIONS));
            grants.push(("states:DescribeExecution", REVIEW_EXECUTIONS));
            grants.extend(deliver_decision);
        }
        CONSOLE => {} // serves embedded files only
        other => panic!("no expected grants for {other}: add them here and in docs/deploy.md"),
    }
    grants
        .into_iter()
        .map(|(a, r)| (a.to_owned(), r.to_owned()))
        .collect()
}

#[test]
fn iam_grants_are_exactly_what_each_function_calls() {
    let template = template();
    let grants = grants_by_function(&template);
    let mut granted_anywhere = BTreeSet::new();
    for function in template_functions(&template) {
        let granted = &grants[&function.binary];
        assert_eq!(
            granted,
            &expected_grants(&function.binary),
            "{}: granted (left) vs needed (right)",
            function.logical_id
        );
        for (action, resource) in granted_actions(&function) {
            assert!(
                !action.contains('*'),
                "{}: wildcard action {action}",
                function.logical_id
            );
            assert_ne!(
                resource.as_str(),
                Some("*"),
                "{}: {action} on *",
                function.logical_id
            );
        }
        granted_anywhere.extend(granted.iter().map(|(action, _)| action.clone()));
    }
    let starters: BTreeSet<&str> = grants
        .iter()
        .filter(|(_, g)| g.iter().any(|(a, _)| a == "states:StartExecution"))
        .map(|(binary, _)| binary.as_str())
        .collect();
    assert_eq!(
        starters,
        [
            Endpoint::CreatePurchase.function_name(),
            Endpoint::RedrivePurchase.function_name(),
            RECONCILER
        ]
        .into(),
        "only create-purchase, redrive-purchase (EXPRESS) and the reconciler start runs"
    );
    // And nothing else in the template grants it either (but the two state
    // machines, which start each other: definition_placeholders_and_substitutions_match).
    assert_eq!(
        read("template.yaml")
            .matches("states:StartExecution")
            .count(),
        starters.len() + STATE_MACHINES.len(),
        "states:StartExecution granted once per starter"
    );

    // A call the adapters start making must be granted to someone.
    // (TransactWriteItems needs the Put/Update/Delete of its actions.)
    let dynamodb_dir = root().join("shared/src/adapters/dynamodb");
    let mut store = String::new();
    for entry in std::fs::read_dir(&dynamodb_dir).expect("shared/src/adapters/dynamodb") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            store.push_str(&std::fs::read_to_string(path).unwrap());
        }
    }
    let sfn = read("shared/src/adapters/sfn.rs");
    for (source, call, actions) in [
        (&store, ".get_item()", &["dynamodb:GetItem"][..]),
        (&store, ".put_item()", &["dynamodb:PutItem"]),
        (&store, ".update_item()", &["dynamodb:UpdateItem"]),
        (&store, ".delete_item()", &["dynamodb:DeleteItem"]),
        (&store, ".query()", &["dynamodb:Query"]),
        (&store, ".scan()", &["dynamodb:Scan"]),
        (&store, ".batch_get_item()", &["dynamodb:BatchGetItem"]),
        (&store, ".batch_write_item()", &["dynamodb:BatchWriteItem"]),
        (&store, ".transact_get_items()", &["dynamodb:GetItem"]),
        (
            &store,
            ".transact_write_items()",
            &["dynamodb:PutItem", "dynamodb:UpdateItem"],
        ),
        (&sfn, ".start_execution()", &["states:StartExecution"]),
        (&sfn, ".describe_execution()", &["states:DescribeExecution"]),
        (&sfn, ".redrive_execution()", &["states:RedriveExecution"]),
        (&sfn, ".send_task_success()", &["states:SendTaskSuccess"]),
        (&sfn, ".send_task_failure()", &["states:SendTaskFailure"]),
        (
            &sfn,
            ".send_task_heartbeat()",
            &["states:SendTaskHeartbeat"],
        ),
        (&sfn, ".stop_execution()", &["states:StopExecution"]),
    ] {
        if source.contains(call) {
            for action in actions {
                assert!(
                    granted_anywhere.contains(*action),
                    "the adapters call {call} but no function may {action}"
                );
            }
        }
    }
}

#[test]
fn tables_follow_the_dynamodb_design() {
    let template = template();
    let table = |id: &str| -> Value {
        let resource = resource(&template, id);
        assert_eq!(text(resource, &["Type"]), Some("AWS::DynamoDB::Table"));
        let properties = &resource["Properties"];
        assert_eq!(
            text(properties, &["BillingMode"]),
            Some("PAY_PER_REQUEST"),
            "{id}"
        );
        assert_eq!(
            get(
                properties,
                &[
                    "PointInTimeRecoverySpecification",
                    "PointInTimeRecoveryEnabled"
                ]
            )
            .and_then(Yaml::as_bool),
            Some(true),
            "{id}: point-in-time recovery"
        );
        assert_eq!(
            get(properties, &["SSESpecification", "SSEEnabled"]).and_then(Yaml::as_bool),
            Some(true),
            "{id}: KMS encryption"
        );
        // Tags (!If) would not survive serde_json; the plain parts are enough.
        let plain = |key: &str| serde_json::to_value(&properties[key]).unwrap_or(Value::Null);
        json!({
            "key": plain("KeySchema"),
            "attributes": plain("AttributeDefinitions"),
            "indexes": plain("GlobalSecondaryIndexes"),
            "ttl": plain("TimeToLiveSpecification"),
        })
    };
    let key = |name: &str, kind: &str| json!({"AttributeName": name, "KeyType": kind});
    let string_attributes = |table: &Value| -> BTreeSet<String> {
        table["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                assert_eq!(a["AttributeType"], "S", "{a}");
                a["AttributeName"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    // As DynamoStore::create_tables makes them (shared/src/adapters/dynamodb/mod.rs).
    let purchases = table("PurchasesTable");
    assert_eq!(purchases["key"], json!([key("purchaseId", "HASH")]));
    assert_eq!(
        string_attributes(&purchases),
        ["purchaseId", "customerId", "recordType", "unfinished"]
            .map(String::from)
            .into(),
        "PurchasesTable: AttributeDefinitions (keys of the table and its indexes only)"
    );
    let indexes: BTreeMap<String, Value> = purchases["indexes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["IndexName"].as_str().unwrap().to_owned(), i.clone()))
        .collect();
    let expected: BTreeMap<&str, (&str, &str)> = [
        (BY_CUSTOMER_INDEX, ("customerId", "KEYS_ONLY")),
        (ALL_PURCHASES_INDEX, ("recordType", "KEYS_ONLY")),
        (UNFINISHED_INDEX, ("unfinished", "KEYS_ONLY")),
    ]
    .into();
    assert_eq!(
        indexes.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        expected.keys().copied().collect::<BTreeSet<_>>(),
        "PurchasesTable: GlobalSecondaryIndexes"
    );
    for (name, (partition, projection)) in expected {
        assert_eq!(
            indexes[name]["KeySchema"],
            json!([key(partition, "HASH"), key("purchaseId", "RANGE")]),
            "{name}"
        );
        assert_eq!(
            indexes[name]["Projection"],
            json!({"ProjectionType": projection}),
            "{name}"
        );
    }
    let products = table("ProductsTable");
    assert_eq!(products["key"], json!([key("id", "HASH")]));
    assert!(products["indexes"].is_null());
    assert_eq!(table("RuleSetsTable")["key"], json!([key("name", "HASH")]));
    let idempotency = table("IdempotencyTable");
    assert_eq!(idempotency["key"], json!([key("key", "HASH")]));
    assert_eq!(
        idempotency["ttl"],
        json!({"AttributeName": "expiresAt", "Enabled": true})
    );
}

#[test]
fn alarms_watch_failed_executions_the_api_and_purchases_needing_attention() {
    let template = template();
    let alarms: Vec<(String, &Yaml)> = resources(&template)
        .into_iter()
        .filter(|(_, r)| text(r, &["Type"]) == Some("AWS::CloudWatch::Alarm"))
        .collect();
    for (id, alarm) in &alarms {
        for actions in ["AlarmActions", "OKActions"] {
            let targets: Vec<Option<&str>> = alarm["Properties"][actions]
                .as_sequence()
                .unwrap_or_else(|| panic!("{id}: {actions}"))
                .iter()
                .map(reference)
                .collect();
            assert_eq!(targets, [Some("AlarmTopic")], "{id}: {actions}");
        }
    }
    let watching = |namespace: &str, metric: &str| {
        alarms.iter().find(|(_, a)| {
            text(a, &["Properties", "Namespace"]) == Some(namespace)
                && text(a, &["Properties", "MetricName"]) == Some(metric)
        })
    };
    // Both workflows' failed executions.
    let watched: BTreeSet<&str> = alarms
        .iter()
        .filter(|(_, a)| {
            text(a, &["Properties", "Namespace"]) == Some("AWS/States")
                && text(a, &["Properties", "MetricName"]) == Some("ExecutionsFailed")
        })
        .filter_map(|(_, a)| reference(&a["Properties"]["Dimensions"][0]["Value"]))
        .collect();
    assert_eq!(watched, BTreeSet::from(STATE_MACHINES));
    // The business metric the functions emit (EMF, no dimensions): one
    // purchase needing an operator is enough.
    let metric = metric_name(PurchaseEvent::NeedsAttention);
    let (id, attention) =
        watching(NAMESPACE, metric).unwrap_or_else(|| panic!("an alarm on {NAMESPACE} {metric}"));
    let properties = &attention["Properties"];
    assert!(
        properties.get("Dimensions").is_none(),
        "{id}: the EMF metric has no dimensions"
    );
    assert_eq!(text(properties, &["Statistic"]), Some("Sum"), "{id}");
    assert_eq!(properties["Threshold"].as_f64(), Some(1.0), "{id}");
    assert_eq!(
        text(properties, &["ComparisonOperator"]),
        Some("GreaterThanOrEqualToThreshold"),
        "{id}"
    );
    assert_eq!(
        text(properties, &["TreatMissingData"]),
        Some("notBreaching"),
        "{id}"
    );
    assert!(
        alarms.iter().any(|(id, _)| id == "Api5xxRateAlarm"),
        "the API's 5xx alarm"
    );
}

// ---------------------------------------------------------------- 2. definition ↔ substitutions

fn placeholders(definition: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = definition;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let end = after.find('}').expect("unclosed ${ in the definition");
        found.insert(after[..end].to_owned());
        rest = &after[end + 1..];
    }
    found
}

/// Each machine in the template: logical id, definition file, the definition
/// compiled into `shared`, and the machine it starts.
const MACHINE_FILES: [(&str, &str, &str, &str); 2] = [
    (
        MACHINE,
        "statemachine/purchase.asl.json",
        DEFINITION,
        REVIEW_MACHINE,
    ),
    (
        REVIEW_MACHINE,
        "statemachine/review.asl.json",
        REVIEW_DEFINITION,
        MACHINE,
    ),
];

#[test]
fn definition_placeholders_and_substitutions_match() {
    let template = template();
    let functions = template_functions(&template);
    let mut steps_used = BTreeSet::new();
    for (logical_id, file, definition, other) in MACHINE_FILES {
        let machine = resource(&template, logical_id);
        assert_eq!(
            text(machine, &["Type"]),
            Some("AWS::Serverless::StateMachine")
        );
        let properties = &machine["Properties"];
        let uri = text(properties, &["DefinitionUri"]).expect("DefinitionUri");
        assert_eq!(uri, file, "{logical_id}");
        // The file deployed is the one the local runner has compiled in.
        assert_eq!(read(uri), definition, "{uri} vs shared::ports::workflow");
        serde_json::from_str::<Value>(definition).expect("the definition is JSON");

        let used = placeholders(definition);
        let substitutions = properties["DefinitionSubstitutions"]
            .as_mapping()
            .expect("DefinitionSubstitutions");
        let defined: BTreeSet<String> = substitutions
            .keys()
            .map(|k| k.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            defined, used,
            "{logical_id}: DefinitionSubstitutions (left) vs the placeholders of {uri} (right)"
        );

        // The other machine: the review machine by the ARN built from its
        // fixed name (a !Ref would be a cycle: each starts the other), the
        // purchase machine by !Ref (its name depends on its type).
        let other_placeholder = format!("{other}Arn");
        let other_arn = &substitutions[other_placeholder.as_str()];
        assert_eq!(
            resource_names(other_arn, &template),
            [other],
            "{logical_id}: {other_placeholder}"
        );
        if other == REVIEW_MACHINE {
            assert_eq!(
                tagged(other_arn).map(|(tag, _)| tag).as_deref(),
                Some("Sub"),
                "{logical_id}: {other_placeholder}"
            );
        }

        let invoke_policies: BTreeSet<String> = properties["Policies"]
            .as_sequence()
            .expect("state machine Policies")
            .iter()
            .filter_map(|p| p.get("LambdaInvokePolicy"))
            .map(|p| {
                reference(&p["FunctionName"])
                    .expect("FunctionName: !Ref")
                    .to_owned()
            })
            .collect();
        let mut invoked = BTreeSet::new();
        for step in Step::ALL {
            let placeholder = step.arn_placeholder();
            if !used.contains(&placeholder) {
                continue;
            }
            assert!(
                steps_used.insert(step.function_name()),
                "{placeholder} is used by both machines"
            );
            let function = function_for(&functions, step.function_name());
            let (tag, target) = tagged(&substitutions[placeholder.as_str()]).expect("!GetAtt");
            assert_eq!(tag, "GetAtt");
            assert_eq!(
                target.as_str(),
                Some(format!("{}.Arn", function.logical_id).as_str()),
                "{placeholder} must be the ARN of the function building {}",
                step.function_name()
            );
            invoked.insert(function.logical_id.clone());
        }
        assert_eq!(
            invoke_policies, invoked,
            "{logical_id}: LambdaInvokePolicy for its own step functions only"
        );
        // Least privilege: a machine may start the other, and nothing else.
        let mut starts = BTreeSet::new();
        for policy in properties["Policies"].as_sequence().unwrap() {
            for statement in policy["Statement"].as_sequence().into_iter().flatten() {
                if statement["Action"].as_str() == Some("states:StartExecution")
                    || statement["Action"].as_sequence().is_some_and(|a| {
                        a.iter()
                            .any(|a| a.as_str() == Some("states:StartExecution"))
                    })
                {
                    starts.extend(resource_names(&statement["Resource"], &template));
                }
                let actions = match &statement["Action"] {
                    Yaml::String(a) => vec![a.clone()],
                    Yaml::Sequence(list) => list
                        .iter()
                        .map(|a| a.as_str().unwrap().to_owned())
                        .collect(),
                    other => panic!("{logical_id}: Action {other:?}"),
                };
                for action in actions {
                    assert!(
                        action == "states:StartExecution" || action.starts_with("logs:"),
                        "{logical_id}: {action}"
                    );
                }
            }
        }
        assert_eq!(
            starts,
            BTreeSet::from([other.to_owned()]),
            "{logical_id} starts {other} only"
        );
        assert_eq!(
            get(properties, &["Tracing", "Enabled"]).and_then(Yaml::as_bool),
            Some(true)
        );
        // An EXPRESS execution keeps no history: its logs are all there is.
        assert!(
            get(properties, &["Logging", "Destinations"]).is_some(),
            "{logical_id}: state machine logging"
        );
        assert_eq!(
            reference(&properties["Logging"]["Level"]),
            Some("WorkflowLogLevel"),
            "{logical_id}"
        );
        assert_eq!(
            properties["Logging"]["IncludeExecutionData"].as_bool(),
            Some(false),
            "{logical_id}: inputs hold addresses"
        );
    }
    assert_eq!(
        steps_used,
        Step::ALL
            .into_iter()
            .map(Step::function_name)
            .collect::<BTreeSet<_>>(),
        "every step function is invoked by one machine"
    );

    // The purchase machine's type is the parameter; the review machine
    // waits for days on a task token: always STANDARD.
    let purchase = &resource(&template, MACHINE)["Properties"];
    assert_eq!(reference(&purchase["Type"]), Some("WorkflowType"));
    let review = &resource(&template, REVIEW_MACHINE)["Properties"];
    assert_eq!(text(review, &["Type"]), Some("STANDARD"));
    let parameter = &template["Parameters"]["WorkflowType"];
    assert_eq!(text(parameter, &["Default"]), Some("STANDARD"));
    let allowed: Vec<&str> = parameter["AllowedValues"]
        .as_sequence()
        .expect("WorkflowType AllowedValues")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        allowed,
        [
            WorkflowType::Standard.as_str(),
            WorkflowType::Express.as_str()
        ]
    );
    // The fixed names the policies and substitutions build ARNs from.
    assert_eq!(
        machine_name(&template, MACHINE),
        "${AWS::StackName}-purchase"
    );
    assert_eq!(
        machine_name(&template, REVIEW_MACHINE),
        "${AWS::StackName}-review"
    );
}

/// The Lambda task states of both definitions, by the step whose function
/// they invoke, with the input they give it (their `Parameters`, or the
/// callback's `Payload`). The machines' `states:startExecution` tasks invoke
/// no function.
fn task_inputs() -> BTreeMap<&'static str, Value> {
    let mut inputs = BTreeMap::new();
    for text in [DEFINITION, REVIEW_DEFINITION] {
        let definition: Value = serde_json::from_str(text).unwrap();
        for (name, state) in definition["States"].as_object().unwrap() {
            if state["Type"] != "Task"
                || state["Resource"] == "arn:aws:states:::states:startExecution"
            {
                continue;
            }
            let callback = state["Resource"]
                .as_str()
                .is_some_and(|r| r.ends_with(".waitForTaskToken"));
            let (placeholder, input) = if callback {
                (
                    &state["Parameters"]["FunctionName"],
                    &state["Parameters"]["Payload"],
                )
            } else {
                (&state["Resource"], &state["Parameters"])
            };
            let placeholder = placeholder.as_str().unwrap_or_default();
            let step = Step::ALL
                .into_iter()
                .find(|s| placeholder == format!("${{{}}}", s.arn_placeholder()))
                .unwrap_or_else(|| panic!("task state {name} invokes no step function"));
            assert_eq!(name, step.state_name(), "the state is named after its step");
            inputs.insert(step.function_name(), input.clone());
        }
    }
    inputs
}

#[test]
fn each_step_event_is_what_its_task_state_sends() {
    let inputs = task_inputs();
    assert_eq!(
        inputs.keys().copied().collect::<BTreeSet<_>>(),
        Step::ALL.iter().map(|s| s.function_name()).collect(),
        "one task state per step"
    );
    for (function, input) in inputs {
        let sent: BTreeSet<String> = input
            .as_object()
            .unwrap_or_else(|| panic!("{function}: Parameters"))
            .keys()
            .map(|k| k.trim_end_matches(".$").to_owned())
            .collect();
        let shipped: BTreeSet<String> = event(function)
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            shipped, sent,
            "events/{function}.json (left) vs what its task state passes (right)"
        );
    }
}

// ---------------------------------------------------------------- 3. openapi.yaml

fn openapi() -> Value {
    // Through serde_json's Value: plain JSON types for the schema checks below.
    let yaml = yaml("openapi.yaml");
    serde_json::to_value(&yaml).expect("openapi.yaml is plain data")
}

fn schema<'a>(openapi: &'a Value, name: &str) -> &'a Value {
    let schema = &openapi["components"]["schemas"][name];
    assert!(
        schema.is_object(),
        "openapi.yaml: components.schemas.{name}"
    );
    schema
}

fn operation(openapi: &Value, endpoint: Endpoint) -> &Value {
    let (method, path) = endpoint.route();
    &openapi["paths"][path][method.as_str().to_lowercase()]
}

fn wire_names<T: Serialize>(values: &[T]) -> Vec<String> {
    values
        .iter()
        .map(|v| {
            serde_json::to_value(v)
                .unwrap()
                .as_str()
                .expect("a unit variant")
                .to_owned()
        })
        .collect()
}

/// Every variant of a fieldless enum; the match makes a new variant a compile
/// error here until it is listed (and so checked against openapi.yaml).
macro_rules! all_variants {
    ($ty:ident: $($variant:ident),+ $(,)?) => {{
        #[allow(dead_code)]
        fn exhaustive(value: $ty) {
            match value {
                $($ty::$variant => {}),+
            }
        }
        vec![$($ty::$variant),+]
    }};
}

#[test]
fn openapi_paths_and_methods_are_the_served_routes() {
    let openapi = openapi();
    let mut documented = BTreeSet::new();
    for (path, item) in openapi["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            if ["get", "put", "post", "delete", "patch", "head", "options"]
                .contains(&method.as_str())
            {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let served: BTreeSet<(String, String)> = Endpoint::ALL
        .iter()
        .map(|e| {
            let (method, path) = e.route();
            (method.to_string(), path.to_owned())
        })
        .collect();
    assert_eq!(
        documented, served,
        "openapi.yaml (left) vs Endpoint::route() (right)"
    );
    let servers: Vec<&str> = openapi["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["url"].as_str().unwrap())
        .collect();
    assert!(
        servers.contains(&format!("http://127.0.0.1:3000{BASE_PATH}").as_str()),
        "{servers:?}"
    );
    assert!(
        servers
            .iter()
            .any(|s| s.contains("execute-api") && s.ends_with(BASE_PATH)),
        "{servers:?}"
    );
}

#[test]
fn openapi_enums_are_the_rust_serde_names() {
    let openapi = openapi();
    let statuses = all_variants!(PurchaseStatus: Pending, Reserved, Paid, Completed, OnHold, NeedsAttention, Failed, Cancelled, Rejected);
    assert_eq!(statuses, PurchaseStatus::ALL, "PurchaseStatus::ALL");
    let enums: Vec<(&str, Vec<String>)> = vec![
        ("PurchaseStatus", wire_names(&statuses)),
        (
            "LineStatus",
            wire_names(
                &all_variants!(LineStatus: Pending, Reserved, Provisioned, OutOfStock, ProvisioningFailed, Released, Revoked, Cancelled),
            ),
        ),
        (
            "PaymentStatus",
            wire_names(
                &all_variants!(PaymentStatus: Pending, Captured, Declined, Refunded, NotCharged, RefundFailed),
            ),
        ),
        (
            "ShippingStatus",
            wire_names(
                &all_variants!(ShippingStatus: Pending, NotRequired, ReadyToShip, Cancelled),
            ),
        ),
        (
            "FailureReason",
            wire_names(
                &all_variants!(FailureReason: OutOfStock, PaymentDeclined, ProvisioningFailed, WorkflowStartFailed, InternalError, CompensationFailed),
            ),
        ),
        (
            "ProductKind",
            wire_names(&all_variants!(ProductKind: Digital, Physical)),
        ),
        (
            "RuleOutcome",
            wire_names(&all_variants!(RuleOutcome: Passed, Violated)),
        ),
        (
            "OnViolation",
            wire_names(&all_variants!(OnViolation: Reject, Hold)),
        ),
        ("RuleId", RULE_IDS.iter().map(|id| id.to_string()).collect()),
    ];
    for (name, rust) in enums {
        let documented: Vec<String> = schema(&openapi, name)["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: enum"))
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            documented, rust,
            "openapi.yaml {name} (left) vs Rust (right)"
        );
    }
    // `status` filters by the same names `PurchaseStatus::parse` reads.
    for status in PurchaseStatus::ALL {
        assert_eq!(PurchaseStatus::parse(status.as_str()), Some(status));
        assert_eq!(wire_names(&[status]), [status.as_str()]);
    }
    // Every rule id has parameters documented in exactly one Rule variant.
    let mapping = schema(&openapi, "Rule")["discriminator"]["mapping"]
        .as_object()
        .unwrap();
    let mapped: Vec<&str> = mapping.keys().map(String::as_str).collect();
    let mut ids = RULE_IDS.to_vec();
    ids.sort_unstable();
    let mut mapped_sorted = mapped.clone();
    mapped_sorted.sort_unstable();
    assert_eq!(mapped_sorted, ids, "Rule discriminator mapping vs RULE_IDS");
}

fn all_errors() -> Vec<ApiError> {
    let errors = vec![
        ApiError::Validation(vec![]),
        ApiError::Unauthorized {
            reason: String::new(),
        },
        ApiError::Forbidden {
            reason: String::new(),
        },
        ApiError::NotFound(String::new()),
        ApiError::Conflict(String::new()),
        ApiError::PreconditionFailed(String::new()),
        ApiError::Unprocessable(String::new()),
        ApiError::Unavailable {
            retry_after_seconds: 1,
            reason: String::new(),
        },
        ApiError::Internal(String::new()),
    ];
    // A new variant fails to compile here until it is listed above.
    for error in &errors {
        match error {
            ApiError::Validation(_)
            | ApiError::Unauthorized { .. }
            | ApiError::Forbidden { .. }
            | ApiError::NotFound(_)
            | ApiError::Conflict(_)
            | ApiError::PreconditionFailed(_)
            | ApiError::Unprocessable(_)
            | ApiError::Unavailable { .. }
            | ApiError::Internal(_) => {}
        }
    }
    errors
}

/// Follows `$ref`s within openapi.yaml.
fn resolve<'a>(openapi: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').expect("local $ref");
            resolve(
                openapi,
                openapi
                    .pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling $ref {reference}")),
            )
        }
        None => value,
    }
}

#[test]
fn openapi_error_codes_and_statuses_are_the_served_ones() {
    let openapi = openapi();
    let codes: Vec<String> = schema(&openapi, "ErrorCode")["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let served: Vec<String> = all_errors().iter().map(|e| e.code().to_owned()).collect();
    assert_eq!(
        codes.iter().collect::<BTreeSet<_>>(),
        served.iter().collect::<BTreeSet<_>>()
    );
    // Each code is documented under its own status by at least one operation,
    // in a response that names it.
    for error in all_errors() {
        let status = error.status().as_u16().to_string();
        let documented = openapi["paths"].as_object().unwrap().values().any(|item| {
            item.as_object().unwrap().values().any(|operation| {
                operation["responses"].get(&status).is_some_and(|response| {
                    let response = resolve(&openapi, response);
                    response["description"]
                        .as_str()
                        .unwrap_or("")
                        .contains(&format!("`{}`", error.code()))
                })
            })
        });
        assert!(
            documented,
            "{} ({status}) is not documented under {status}",
            error.code()
        );
    }
}

/// The operations that document `Idempotency-Key`.
fn idempotent_endpoints(openapi: &Value) -> BTreeSet<&'static str> {
    Endpoint::ALL
        .into_iter()
        .filter(|e| {
            operation(openapi, *e)["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| resolve(openapi, p)["name"] == "Idempotency-Key")
        })
        .map(|e| e.function_name())
        .collect()
}

#[test]
fn openapi_bounds_are_the_validation_limits() {
    let openapi = openapi();
    let number = |name: &str, path: &str| -> u64 {
        schema(&openapi, name)
            .pointer(path)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("{name}{path}"))
    };
    let as_u64 = |n: usize| n as u64;
    assert_eq!(
        number("ProductRequest", "/properties/id/maxLength"),
        as_u64(limits::MAX_ID_CHARS)
    );
    assert_eq!(
        number("ProductRequest", "/properties/quantity/maximum"),
        u64::from(limits::MAX_QUANTITY)
    );
    assert_eq!(
        number("Products", "/maxItems"),
        as_u64(limits::MAX_PRODUCTS)
    );
    assert_eq!(
        number("CreatePurchaseRequest", "/properties/customerId/maxLength"),
        as_u64(limits::MAX_CUSTOMER_ID_CHARS)
    );
    assert_eq!(
        number("PaymentDetails", "/properties/method/maxLength"),
        as_u64(limits::MAX_METHOD_CHARS)
    );
    assert_eq!(
        number("PaymentDetails", "/properties/transactionId/maxLength"),
        as_u64(limits::MAX_TRANSACTION_ID_CHARS)
    );
    assert_eq!(
        number("ShippingAddress", "/properties/name/maxLength"),
        as_u64(limits::MAX_NAME_CHARS)
    );
    assert_eq!(
        number("ShippingAddress", "/properties/address/maxLength"),
        as_u64(limits::MAX_ADDRESS_CHARS)
    );
    assert_eq!(
        number("ShippingAddress", "/properties/city/maxLength"),
        as_u64(limits::MAX_CITY_CHARS)
    );
    assert_eq!(
        number("ShippingAddress", "/properties/postalCode/maxLength"),
        as_u64(limits::MAX_POSTAL_CODE_CHARS)
    );
    assert_eq!(
        schema(&openapi, "ShippingAddress")["properties"]["country"]["pattern"],
        "^[A-Z]{2}$"
    );
    assert_eq!(
        number("ApplyRulesRequest", "/properties/rules/maxItems"),
        as_u64(MAX_RULES)
    );
    for name in [
        "ProductRequest",
        "PaymentDetails",
        "ShippingAddress",
        "CreatePurchaseRequest",
        "UpdatePurchaseRequest",
    ] {
        assert_eq!(
            schema(&openapi, name)["additionalProperties"],
            false,
            "{name}: unknown fields are refused"
        );
    }
    let list = operation(&openapi, Endpoint::ListPurchases)["parameters"]
        .as_array()
        .unwrap();
    let parameter = |name: &str| {
        list.iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("list purchases: parameter {name}"))
    };
    assert_eq!(
        parameter("limit")["schema"]["maximum"],
        json!(MAX_PAGE_SIZE)
    );
    assert_eq!(
        parameter("limit")["schema"]["default"],
        json!(DEFAULT_PAGE_SIZE)
    );
    assert_eq!(
        parameter("order")["schema"],
        json!({"type": "string", "enum": ["newest", "oldest"], "default": "newest"})
    );
    let validation = resolve(
        &openapi,
        &openapi["components"]["responses"]["ValidationFailed"],
    );
    assert!(
        validation["description"]
            .as_str()
            .unwrap()
            .contains(&limits::MAX_BODY_BYTES.to_string()),
        "ValidationFailed names the body limit"
    );
    let key = resolve(
        &openapi,
        &openapi["components"]["parameters"]["IdempotencyKey"],
    );
    assert_eq!(
        key["schema"]["maxLength"],
        json!(shared::api::idempotency::MAX_KEY_CHARS)
    );
}

/// The subset of JSON Schema openapi.yaml uses for responses: `$ref`, `type`,
/// `enum`, `required`, `properties`, `additionalProperties: false`, `items`,
/// `oneOf`, `format: date-time`. Returns every mismatch, each with its JSON path.
fn check_schema(
    openapi: &Value,
    schema: &Value,
    value: &Value,
    at: &str,
    problems: &mut Vec<String>,
) {
    let schema = resolve(openapi, schema);
    if let Some(options) = schema["oneOf"].as_array() {
        let fits = options.iter().any(|option| {
            let mut inner = Vec::new();
            check_schema(openapi, option, value, at, &mut inner);
            inner.is_empty()
        });
        if !fits {
            problems.push(format!("{at}: matches no oneOf option"));
        }
        return;
    }
    let type_ok = match schema["type"].as_str() {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !type_ok {
        problems.push(format!("{at}: {value} is not a {}", schema["type"]));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        problems.push(format!("{at}: {value} not in {allowed:?}"));
    }
    if schema["format"] == "date-time"
        && let Some(text) = value.as_str()
        && DateTime::parse_from_rfc3339(text).is_err()
    {
        problems.push(format!("{at}: {text:?} is not a date-time"));
    }
    if let Some(object) = value.as_object() {
        let properties = schema["properties"].as_object();
        for required in schema["required"].as_array().into_iter().flatten() {
            if !object.contains_key(required.as_str().unwrap()) {
                problems.push(format!("{at}: missing {required}"));
            }
        }
        for (key, field) in object {
            match properties.and_then(|p| p.get(key)) {
                Some(field_schema) => check_schema(
                    openapi,
                    field_schema,
                    field,
                    &format!("{at}.{key}"),
                    problems,
                ),
                None if schema["additionalProperties"] == false => {
                    problems.push(format!("{at}: {key} is not documented"))
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (index, item) in array.iter().enumerate() {
            check_schema(openapi, items, item, &format!("{at}[{index}]"), problems);
        }
    }
}

#[test]
fn api_gateway_errors_use_the_documented_error_body() {
    let template = template();
    let openapi = openapi();
    let api = resource(&template, "Api");
    let responses = api["Properties"]["GatewayResponses"]
        .as_mapping()
        .expect("GatewayResponses");
    assert!(!responses.is_empty());
    for (kind, response) in responses {
        let kind = kind.as_str().unwrap();
        let body = text(response, &["ResponseTemplates", "application/json"])
            .unwrap_or_else(|| panic!("{kind}: an application/json template"));
        // $context variables are filled in by API Gateway: any string will do here.
        let mut filled = String::new();
        let mut rest = body;
        while let Some(start) = rest.find("$context.") {
            filled.push_str(&rest[..start]);
            let after = &rest[start + "$context.".len()..];
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.'))
                .unwrap_or(after.len());
            filled.push_str("ctx");
            rest = &after[end..];
        }
        filled.push_str(rest);
        let body: Value =
            serde_json::from_str(&filled).unwrap_or_else(|e| panic!("{kind}: {e}: {filled}"));
        let mut problems = Vec::new();
        check_schema(
            &openapi,
            schema(&openapi, "Error"),
            &body,
            kind,
            &mut problems,
        );
        assert!(problems.is_empty(), "{kind}: {problems:?}");
        assert_eq!(
            text(response, &["ResponseParameters", "Headers", "Content-Type"]),
            Some("'application/json'"),
            "{kind}"
        );
        // The status the code stands for (5xx ones keep API Gateway's 502/504).
        let code = body["error"].as_str().unwrap();
        let error = all_errors().into_iter().find(|e| e.code() == code).unwrap();
        match text(response, &["StatusCode"]) {
            Some(status) => assert_eq!(status, error.status().as_str(), "{kind}: {code}"),
            None => assert_eq!(
                code, "INTERNAL_ERROR",
                "{kind}: keeps API Gateway's 5xx status"
            ),
        }
        if code == "SERVICE_UNAVAILABLE" {
            assert!(
                get(response, &["ResponseParameters", "Headers", "Retry-After"]).is_some(),
                "{kind}: Retry-After"
            );
        }
    }
    let url = tagged(&template["Outputs"]["ApiUrl"]["Value"])
        .expect("ApiUrl: !Sub")
        .1
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        url.ends_with(&format!("/${{Stage}}{BASE_PATH}/")),
        "ApiUrl {url}"
    );
}

// ---------------------------------------------------------------- 4. events

const AUTH_PLACEHOLDER: &str = "Bearer PLACEHOLDER-mint-a-token-see-docs-deploy-md";
const EVENT_PURCHASE_ID: &str = "0197a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b";
const EVENT_RULE_SET: &str = "default";
const ISSUER: &str = "https://idp.test/";
const AUDIENCE: &str = "purchase-orchestrator";
const SECRET: &str = "deployment-test-secret-0123456789abcdef";
const CUSTOMER: &str = "customer-123";

fn event(name: &str) -> Value {
    serde_json::from_str(&read(&format!("events/{name}.json")))
        .unwrap_or_else(|e| panic!("events/{name}.json: {e}"))
}

fn event_names() -> BTreeSet<String> {
    std::fs::read_dir(root().join("events"))
        .expect("events/")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// The IAM (action, resource) each port call needs on AWS, as the DynamoDB
/// and Step Functions adapters make it: the calls a function makes while it
/// handles an event must all be granted to it.
type Calls = Arc<Mutex<BTreeSet<Grant>>>;

fn need(calls: &Calls, needed: &[(&str, &str)]) {
    let mut calls = calls.lock().unwrap();
    for (action, resource) in needed {
        calls.insert(((*action).to_owned(), (*resource).to_owned()));
    }
}

/// The embedded store behind every port, recording what each call would
/// need from DynamoDB (`shared/src/adapters/dynamodb`).
struct RecordingStore {
    inner: EmbeddedStore,
    calls: Calls,
}

#[async_trait]
impl PurchaseStore for RecordingStore {
    async fn create_purchase(
        &self,
        purchase: &Purchase,
        completion: Option<&Completion>,
    ) -> Result<bool, StoreError> {
        need(&self.calls, &[("dynamodb:PutItem", PURCHASES)]);
        if completion.is_some() {
            // One TransactWriteItems: IAM authorizes each of its actions.
            need(&self.calls, &[("dynamodb:UpdateItem", IDEMPOTENCY)]);
        }
        self.inner.create_purchase(purchase, completion).await
    }

    async fn get_purchase(&self, purchase_id: &PurchaseId) -> Result<Option<Purchase>, StoreError> {
        need(&self.calls, &[("dynamodb:GetItem", PURCHASES)]);
        self.inner.get_purchase(purchase_id).await
    }

    async fn save_purchase(
        &self,
        purchase: &Purchase,
        stock: &StockChange,
    ) -> Result<(), StoreError> {
        // A conditional PutItem (in a TransactWriteItems with one UpdateItem
        // per product when stock moves); a failed condition reads the item.
        need(
            &self.calls,
            &[
                ("dynamodb:PutItem", PURCHASES),
                ("dynamodb:GetItem", PURCHASES),
            ],
        );
        if !matches!(stock, StockChange::None) {
            need(&self.calls, &[("dynamodb:UpdateItem", PRODUCTS)]);
        }
        self.inner.save_purchase(purchase, stock).await
    }

    async fn list_purchases(&self, query: &PurchaseQuery) -> Result<PurchasePage, StoreError> {
        let listing = match query.customer_id {
            Some(_) => BY_CUSTOMER_INDEX,
            None => ALL_PURCHASES_INDEX,
        };
        // Every index projects keys only: the page's items are read after.
        need(
            &self.calls,
            &[
                ("dynamodb:Query", index(listing).as_str()),
                ("dynamodb:BatchGetItem", PURCHASES),
            ],
        );
        self.inner.list_purchases(query).await
    }

    async fn unfinished_purchases(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Purchase>, StoreError> {
        need(
            &self.calls,
            &[
                ("dynamodb:Query", index(UNFINISHED_INDEX).as_str()),
                ("dynamodb:BatchGetItem", PURCHASES),
            ],
        );
        self.inner.unfinished_purchases(before, limit).await
    }
}

#[async_trait]
impl Inventory for RecordingStore {
    async fn get_products(&self, ids: &[ProductId]) -> Result<Vec<Product>, StoreError> {
        need(&self.calls, &[("dynamodb:BatchGetItem", PRODUCTS)]);
        self.inner.get_products(ids).await
    }

    async fn add_product_if_absent(&self, product: &Product) -> Result<(), StoreError> {
        need(&self.calls, &[("dynamodb:PutItem", PRODUCTS)]);
        self.inner.add_product_if_absent(product).await
    }
}

#[async_trait]
impl IdempotencyStore for RecordingStore {
    async fn claim(&self, record: &IdempotencyRecord) -> Result<Claim, StoreError> {
        // PutItem; the holder is read on a failed condition and a released
        // key is taken over with UpdateItem.
        need(
            &self.calls,
            &[
                ("dynamodb:PutItem", IDEMPOTENCY),
                ("dynamodb:GetItem", IDEMPOTENCY),
                ("dynamodb:UpdateItem", IDEMPOTENCY),
            ],
        );
        self.inner.claim(record).await
    }

    async fn get(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        need(&self.calls, &[("dynamodb:GetItem", IDEMPOTENCY)]);
        self.inner.get(key).await
    }

    async fn complete(&self, completion: &Completion) -> Result<(), StoreError> {
        need(&self.calls, &[("dynamodb:UpdateItem", IDEMPOTENCY)]);
        self.inner.complete(completion).await
    }

    async fn release(&self, key: &str, expires_at: DateTime<Utc>) -> Result<(), StoreError> {
        need(&self.calls, &[("dynamodb:UpdateItem", IDEMPOTENCY)]);
        self.inner.release(key, expires_at).await
    }
}

#[async_trait]
impl RuleSetStore for RecordingStore {
    async fn create_rule_set(&self, set: &RuleSetRecord) -> Result<(), StoreError> {
        need(&self.calls, &[("dynamodb:PutItem", RULE_SETS)]);
        self.inner.create_rule_set(set).await
    }

    async fn get_rule_set(&self, name: &str) -> Result<Option<RuleSetRecord>, StoreError> {
        need(&self.calls, &[("dynamodb:GetItem", RULE_SETS)]);
        self.inner.get_rule_set(name).await
    }

    async fn replace_rule_set(&self, set: &RuleSetRecord) -> Result<(), StoreError> {
        need(
            &self.calls,
            &[
                ("dynamodb:PutItem", RULE_SETS),
                ("dynamodb:GetItem", RULE_SETS),
            ],
        );
        self.inner.replace_rule_set(set).await
    }

    async fn delete_rule_set(&self, name: &str) -> Result<bool, StoreError> {
        need(&self.calls, &[("dynamodb:DeleteItem", RULE_SETS)]);
        self.inner.delete_rule_set(name).await
    }

    async fn list_rule_sets(&self) -> Result<Vec<RuleSetRecord>, StoreError> {
        need(&self.calls, &[("dynamodb:Scan", RULE_SETS)]);
        self.inner.list_rule_sets().await
    }
}

/// No Step Functions here: executions are remembered by machine and name
/// (a purchase's runs and their reviews), and every call is recorded as
/// the IAM action it needs. `refuse_starts` makes starts fail as throttled;
/// `workflow_type` is the `WORKFLOW_TYPE` the functions are given.
#[derive(Default)]
struct RecordingWorkflow {
    calls: Calls,
    executions: Mutex<BTreeMap<(&'static str, String), ExecutionState>>,
    refuse_starts: Mutex<bool>,
    workflow_type: Mutex<WorkflowType>,
}

fn machine_id(machine: Machine) -> &'static str {
    match machine {
        Machine::Purchase => MACHINE,
        Machine::Review => REVIEW_MACHINE,
    }
}

impl RecordingWorkflow {
    fn set(&self, machine: Machine, run: &Run, state: ExecutionState) {
        self.executions
            .lock()
            .unwrap()
            .insert((machine_id(machine), run.name()), state);
    }
}

#[async_trait]
impl Workflow for RecordingWorkflow {
    fn workflow_type(&self) -> WorkflowType {
        *self.workflow_type.lock().unwrap()
    }

    async fn start(&self, run: &Run) -> Result<(), WorkflowError> {
        need(&self.calls, &[("states:StartExecution", MACHINE)]);
        if *self.refuse_starts.lock().unwrap() {
            return Err(WorkflowError::Unavailable("throttled (test)".into()));
        }
        self.executions
            .lock()
            .unwrap()
            .entry((MACHINE, run.name()))
            .or_insert(ExecutionState::Running);
        Ok(())
    }

    async fn describe(
        &self,
        machine: Machine,
        run: &Run,
    ) -> Result<Option<ExecutionState>, WorkflowError> {
        let executions = match machine {
            Machine::Purchase => EXECUTIONS,
            Machine::Review => REVIEW_EXECUTIONS,
        };
        need(&self.calls, &[("states:DescribeExecution", executions)]);
        Ok(self
            .executions
            .lock()
            .unwrap()
            .get(&(machine_id(machine), run.name()))
            .copied())
    }

    async fn notify(&self, _: &str, decision: TaskDecision) -> Result<(), WorkflowError> {
        let action = match decision {
            TaskDecision::Resume { .. } => "states:SendTaskSuccess",
            TaskDecision::Rejected | TaskDecision::Stopped => "states:SendTaskFailure",
        };
        // Only reviews wait on task tokens.
        need(&self.calls, &[(action, REVIEW_MACHINE)]);
        Ok(())
    }

    async fn redrive(&self, run: &Run) -> Result<(), WorkflowError> {
        // An execution that is not redrivable is described before answering.
        need(
            &self.calls,
            &[
                ("states:RedriveExecution", EXECUTIONS),
                ("states:DescribeExecution", EXECUTIONS),
            ],
        );
        self.set(Machine::Purchase, run, ExecutionState::Running);
        Ok(())
    }
}

struct Harness {
    app: App,
    steps: StepDeps,
    store: Arc<RecordingStore>,
    workflow: Arc<RecordingWorkflow>,
    calls: Calls,
    /// What the template grants each function, by binary.
    grants: BTreeMap<String, BTreeSet<Grant>>,
    openapi: Value,
    invocations: u32,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let calls = Calls::default();
        let store = Arc::new(RecordingStore {
            inner: EmbeddedStore::open(dir.path()).unwrap(),
            calls: calls.clone(),
        });
        let catalog: Vec<Product> = serde_json::from_str(&read("catalog/demo.json")).unwrap();
        for product in &catalog {
            store.add_product_if_absent(product).await.unwrap();
        }
        let auth = JwtAuthenticator::new(AuthConfig {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            leeway_seconds: 30,
            keys: KeySource::Hs256 {
                secret: SECRET.into(),
            },
        })
        .unwrap();
        let workflow = Arc::new(RecordingWorkflow {
            calls: calls.clone(),
            ..RecordingWorkflow::default()
        });
        calls.lock().unwrap().clear();
        Harness {
            app: App {
                purchases: store.clone(),
                inventory: store.clone(),
                workflow: workflow.clone(),
                auth: Arc::new(auth),
                idempotency: store.clone(),
                rule_sets: store.clone(),
            },
            steps: StepDeps {
                purchases: store.clone(),
                rule_sets: store.clone(),
                payments: Arc::new(SimulatedPaymentGateway::default()),
                provisioning: Arc::new(SimulatedProvisioner::default()),
                workflow: workflow.clone(),
            },
            store,
            workflow,
            calls,
            grants: grants_by_function(&template()),
            openapi: openapi(),
            invocations: 0,
            _dir: dir,
        }
    }

    /// Every AWS call `function` made since the last check must be granted
    /// to it by the template.
    fn check_granted(&self, function: &str) {
        let made = std::mem::take(&mut *self.calls.lock().unwrap());
        let granted = &self.grants[function];
        let missing: Vec<&Grant> = made.difference(granted).collect();
        assert!(
            missing.is_empty(),
            "{function} calls what template.yaml does not grant it: {missing:?}"
        );
    }

    /// The event file, checked to be a real API Gateway REST proxy event for
    /// `endpoint`, with `Authorization` still the placeholder.
    fn api_event(&self, endpoint: Endpoint) -> Value {
        let name = endpoint.function_name();
        let event = event(name);
        let typed: ApiGatewayProxyRequest =
            serde_json::from_value(event.clone()).unwrap_or_else(|e| {
                panic!("events/{name}.json is not an API Gateway REST proxy event: {e}")
            });
        let (method, route) = endpoint.route();
        let resource = format!("{BASE_PATH}{route}");
        assert_eq!(typed.http_method, method, "{name}: httpMethod");
        assert_eq!(
            typed.resource.as_deref(),
            Some(resource.as_str()),
            "{name}: resource"
        );
        assert_eq!(
            typed.request_context.http_method, method,
            "{name}: requestContext.httpMethod"
        );
        assert_eq!(
            typed.request_context.resource_path.as_deref(),
            Some(resource.as_str()),
            "{name}: requestContext.resourcePath"
        );
        assert!(
            typed.request_context.request_id.is_some(),
            "{name}: requestContext.requestId"
        );
        let stage = typed
            .request_context
            .stage
            .clone()
            .unwrap_or_else(|| panic!("{name}: requestContext.stage"));
        for (parameter, value) in [
            ("purchaseId", EVENT_PURCHASE_ID),
            ("ruleSetName", EVENT_RULE_SET),
        ] {
            let in_route = route.contains(&format!("{{{parameter}}}"));
            assert_eq!(
                typed.path_parameters.get(parameter).map(String::as_str),
                in_route.then_some(value),
                "{name}: pathParameters.{parameter}"
            );
        }
        let path = resource
            .replace("{purchaseId}", EVENT_PURCHASE_ID)
            .replace("{ruleSetName}", EVENT_RULE_SET);
        assert_eq!(typed.path.as_deref(), Some(path.as_str()), "{name}: path");
        assert_eq!(
            typed.request_context.path.as_deref(),
            Some(format!("/{stage}{path}").as_str()),
            "{name}: requestContext.path"
        );
        for headers in ["headers", "multiValueHeaders"] {
            let auth = &event[headers]["Authorization"];
            let auth = auth.as_array().and_then(|a| a.first()).unwrap_or(auth);
            assert_eq!(
                auth, AUTH_PLACEHOLDER,
                "{name}: {headers}.Authorization must stay a placeholder (no tokens in the repo)"
            );
        }
        // An operation that takes an Idempotency-Key shows it in its event.
        let idempotent = idempotent_endpoints(&self.openapi).contains(name);
        for headers in ["headers", "multiValueHeaders"] {
            assert_eq!(
                event[headers].get("Idempotency-Key").is_some(),
                idempotent,
                "{name}: {headers}.Idempotency-Key (documented: {idempotent})"
            );
        }
        let operation = operation(&self.openapi, endpoint);
        let request_schema = &operation["requestBody"]["content"]["application/json"]["schema"];
        match &typed.body {
            Some(body) => {
                assert_eq!(
                    event["headers"]["Content-Type"], "application/json",
                    "{name}: Content-Type"
                );
                let body: Value = serde_json::from_str(body).expect("a JSON body");
                let mut problems = Vec::new();
                check_schema(&self.openapi, request_schema, &body, "body", &mut problems);
                assert!(
                    problems.is_empty(),
                    "{name}: body differs from openapi.yaml: {problems:?}"
                );
                // The documented example, too.
                let example = &operation["requestBody"]["content"]["application/json"]["example"];
                check_schema(
                    &self.openapi,
                    request_schema,
                    example,
                    "example",
                    &mut problems,
                );
                assert!(
                    problems.is_empty(),
                    "{name}: openapi.yaml example: {problems:?}"
                );
            }
            None => assert!(
                request_schema.is_null(),
                "{name}: the operation takes a body"
            ),
        }
        assert!(!typed.is_base64_encoded);
        event
    }

    /// Invokes the handler the way `lambda_http::run` does (the event JSON
    /// through `LambdaRequest` and `Adapter`, the same service as
    /// `shared::lambda::run_endpoint`) and returns (status, headers, body),
    /// checked against the operation's documented response and the
    /// function's IAM grants.
    async fn invoke(
        &mut self,
        endpoint: Endpoint,
        event: Value,
    ) -> (u16, BTreeMap<String, String>, Value) {
        self.invocations += 1;
        let request: LambdaRequest = serde_json::from_value(event).unwrap();
        assert!(
            matches!(request.request_origin(), RequestOrigin::ApiGatewayV1),
            "{}: lambda_http must read it as a REST API (v1) event",
            endpoint.function_name()
        );
        let mut context = Context::default();
        context.request_id = format!("test-invocation-{}", self.invocations);
        let app = &self.app;
        let mut adapter = Adapter::from(service_fn(move |request: Request| async move {
            Ok::<_, Infallible>(
                endpoint
                    .handle(app, &shared::lambda::api_request(request))
                    .await,
            )
        }));
        let response = adapter
            .call(LambdaEvent::new(request, context))
            .await
            .unwrap();
        self.check_granted(endpoint.function_name());
        let response = serde_json::to_value(&response).unwrap();
        let status = response["statusCode"].as_u64().expect("statusCode") as u16;
        let mut headers = BTreeMap::new();
        for source in ["headers", "multiValueHeaders"] {
            for (name, value) in response[source].as_object().into_iter().flatten() {
                let value = value.as_array().and_then(|a| a.first()).unwrap_or(value);
                headers.insert(
                    name.to_lowercase(),
                    value.as_str().unwrap_or_default().to_owned(),
                );
            }
        }
        // No body (204) reads as null.
        let body: Value = match response["body"].as_str().unwrap_or("") {
            "" => Value::Null,
            text => serde_json::from_str(text).expect("JSON body"),
        };
        self.check_documented(endpoint, status, &headers, &body);
        (status, headers, body)
    }

    fn check_documented(
        &self,
        endpoint: Endpoint,
        status: u16,
        headers: &BTreeMap<String, String>,
        body: &Value,
    ) {
        let operation = operation(&self.openapi, endpoint);
        let documented = operation["responses"]
            .get(status.to_string())
            .unwrap_or_else(|| {
                panic!(
                    "{}: status {status} is not documented in openapi.yaml: {body}",
                    endpoint.function_name()
                )
            });
        let documented = resolve(&self.openapi, documented);
        let schema = &documented["content"]["application/json"]["schema"];
        let mut problems = Vec::new();
        check_schema(&self.openapi, schema, body, "body", &mut problems);
        assert!(
            problems.is_empty(),
            "{} {status}: body differs from openapi.yaml: {problems:?}\n{body}",
            endpoint.function_name()
        );
        for (header, _) in documented["headers"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, spec)| resolve(&self.openapi, spec)["required"] == true)
        {
            assert!(
                headers.contains_key(&header.to_lowercase()),
                "{} {status}: documented header {header} missing",
                endpoint.function_name()
            );
        }
        if headers.contains_key("idempotent-replayed") {
            assert!(
                documented["headers"].get("Idempotent-Replayed").is_some(),
                "{} {status}: Idempotent-Replayed is not documented",
                endpoint.function_name()
            );
        }
        if schema.is_null() {
            assert!(
                body.is_null(),
                "{} {status}: undocumented body {body}",
                endpoint.function_name()
            );
        } else {
            assert_eq!(
                headers.get("content-type").map(String::as_str),
                Some("application/json")
            );
        }
    }

    fn token(&self, endpoint: Endpoint) -> String {
        let token = mint_hs256_token(
            SECRET,
            ISSUER,
            AUDIENCE,
            CUSTOMER,
            &[scope_for(endpoint)],
            Duration::from_secs(300),
        )
        .unwrap();
        format!("Bearer {token}")
    }

    /// The event of `endpoint` with a real token, a fresh `Idempotency-Key`
    /// and optionally another purchase id.
    fn prepared(&self, endpoint: Endpoint, purchase_id: Option<&str>) -> Value {
        prepare(
            self.api_event(endpoint),
            &self.token(endpoint),
            purchase_id,
            self.invocations,
        )
    }

    /// Runs a step's event (with another purchase id, and `changes` merged
    /// in) the way `shared::lambda::run_step` does, checked against the
    /// step function's IAM grants.
    async fn step(
        &self,
        step: Step,
        purchase_id: &str,
        changes: Value,
    ) -> Result<Value, StepError> {
        let mut payload = event(step.function_name());
        payload["purchaseId"] = json!(purchase_id);
        for (key, value) in changes.as_object().into_iter().flatten() {
            payload[key] = value.clone();
        }
        let result = step.run(&self.steps, payload, None).await;
        self.check_granted(step.function_name());
        result
    }

    /// The stored purchase (not an AWS call of any function).
    async fn stored(&self, purchase_id: &str) -> Purchase {
        self.store
            .inner
            .get_purchase(&PurchaseId::new(purchase_id))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("purchase {purchase_id}"))
    }

    async fn stock(&self, product: &str) -> i64 {
        self.store
            .inner
            .get_products(&[ProductId::new(product)])
            .await
            .unwrap()[0]
            .stock
    }
}

/// The event with a real token instead of the placeholder, a fresh
/// `Idempotency-Key` if it has one, and optionally another purchase id.
fn prepare(mut event: Value, token: &str, purchase_id: Option<&str>, invocation: u32) -> Value {
    for headers in ["headers", "multiValueHeaders"] {
        let Some(map) = event[headers].as_object_mut() else {
            continue;
        };
        for (name, value) in map.iter_mut() {
            let replacement = match name.as_str() {
                "Authorization" => token.to_owned(),
                "Idempotency-Key" => format!("deployment-test-{invocation}"),
                _ => continue,
            };
            *value = if value.is_array() {
                json!([replacement])
            } else {
                json!(replacement)
            };
        }
    }
    if let Some(id) = purchase_id {
        for pointer in ["/path", "/requestContext/path"] {
            if let Some(Value::String(path)) = event.pointer_mut(pointer) {
                *path = path.replace(EVENT_PURCHASE_ID, id);
            }
        }
        if let Some(params) = event["pathParameters"].as_object_mut() {
            params.insert("purchaseId".into(), json!(id));
        }
    }
    event
}

/// Sets a query parameter in both of an event's query maps.
fn with_query(mut event: Value, name: &str, value: &str) -> Value {
    for (field, new) in [
        ("queryStringParameters", json!(value)),
        ("multiValueQueryStringParameters", json!([value])),
    ] {
        if !event[field].is_object() {
            event[field] = json!({});
        }
        event[field][name] = new;
    }
    event
}

/// A `Location` (a relative reference) resolved against the URL of the
/// request that answered it (RFC 3986 §5.2: replace the last segment).
fn resolved(request_url: &str, location: &str) -> String {
    assert!(
        !location.starts_with('/') && !location.contains("://"),
        "Location {location:?} must be relative, so it holds under the stage prefix"
    );
    let base = request_url.rsplit_once('/').unwrap().0;
    format!("{base}/{location}")
}

/// Creates a purchase with `events/create-purchase.json` (the body's
/// products replaced if given).
async fn create_purchase(h: &mut Harness, products: Option<Value>) -> String {
    let endpoint = Endpoint::CreatePurchase;
    let mut event = h.prepared(endpoint, None);
    if let Some(products) = products {
        let mut body: Value = serde_json::from_str(event["body"].as_str().unwrap()).unwrap();
        body["products"] = products;
        event["body"] = json!(body.to_string());
    }
    let (status, _, body) = h.invoke(endpoint, event).await;
    assert_eq!(status, 201, "{body}");
    body["purchaseId"].as_str().unwrap().to_owned()
}

#[test]
fn every_function_has_exactly_one_event_file() {
    assert_eq!(
        event_names(),
        rust_functions(),
        "events/*.json (left) vs functions (right)"
    );
}

/// The URL API Gateway received an event at: `https://<Host>/<stage><path>`.
fn request_url(event: &Value) -> String {
    format!(
        "https://{}/{}{}",
        event["headers"]["Host"].as_str().unwrap(),
        event["requestContext"]["stage"].as_str().unwrap(),
        event["path"].as_str().unwrap()
    )
}

/// Invokes an event a second time, as a client's retry with the same
/// `Idempotency-Key`: a final answer is replayed, anything else runs again.
async fn retry(
    h: &mut Harness,
    endpoint: Endpoint,
    event: Value,
    first: &(u16, BTreeMap<String, String>, Value),
) {
    let name = endpoint.function_name();
    let (status, headers, body) = h.invoke(endpoint, event).await;
    let replayed = headers.get("idempotent-replayed").map(String::as_str) == Some("true");
    let final_answer =
        shared::api::idempotency::is_final(http::StatusCode::from_u16(first.0).unwrap());
    assert_eq!(
        replayed, final_answer,
        "{name}: a retry of a {} answer (replayed: {replayed})",
        first.0
    );
    assert_eq!(status, first.0, "{name}: the retry's status");
    if final_answer {
        assert_eq!(body, first.2, "{name}: the replay is the first answer");
    }
}

#[tokio::test]
async fn api_events_reach_the_handlers_and_get_the_documented_status() {
    let mut h = Harness::new().await;
    let idempotent = idempotent_endpoints(&h.openapi);
    assert_eq!(
        idempotent,
        [
            Endpoint::CreatePurchase,
            Endpoint::CancelPurchase,
            Endpoint::ReviewPurchase,
            Endpoint::RedrivePurchase
        ]
        .map(Endpoint::function_name)
        .into(),
        "the endpoints that act take an Idempotency-Key"
    );

    // As shipped: the placeholder token is refused before anything else.
    for endpoint in Endpoint::ALL {
        let event = h.api_event(endpoint);
        let (status, headers, body) = h.invoke(endpoint, event).await;
        assert_eq!(
            status,
            401,
            "{} as shipped: {body}",
            endpoint.function_name()
        );
        assert_eq!(body["error"], "UNAUTHORIZED");
        assert!(headers.contains_key("www-authenticate"));
    }

    // With a token: create and list work, the placeholder id is unknown.
    let mut created = None;
    for endpoint in Endpoint::ALL
        .into_iter()
        .filter(|e| e.route().1.starts_with("/purchases"))
    {
        let event = h.prepared(endpoint, None);
        let url = request_url(&event);
        let (status, headers, body) = h.invoke(endpoint, event).await;
        let expected = match endpoint {
            Endpoint::CreatePurchase => 201,
            Endpoint::ListPurchases => 200,
            _ => 404,
        };
        assert_eq!(
            status,
            expected,
            "{} with a token: {body}",
            endpoint.function_name()
        );
        if endpoint == Endpoint::CreatePurchase {
            assert_eq!(body["status"], "PENDING");
            let id = body["purchaseId"].as_str().unwrap().to_owned();
            // Relative, so it resolves under the stage prefix to the new purchase.
            assert_eq!(headers["location"], format!("purchases/{id}"));
            assert_eq!(
                resolved(&url, &headers["location"]),
                format!("{url}/{id}"),
                "Location"
            );
            created = Some(id);
        }
        if status == 404 {
            assert_eq!(body["error"], "NOT_FOUND");
        }
    }
    let id = created.unwrap();

    // With the id of that purchase, in the order a user would try them; the
    // endpoints that take an Idempotency-Key are retried with the same key.
    let sequence = [
        (Endpoint::GetPurchase, 200, "PENDING"),
        (Endpoint::UpdatePurchase, 200, "PENDING"),
        (Endpoint::ApplyRules, 200, "ON_HOLD"),
        (Endpoint::ReviewPurchase, 200, "PENDING"),
        (Endpoint::RedrivePurchase, 409, ""),
        (Endpoint::CancelPurchase, 200, "CANCELLED"),
        (Endpoint::CancelPurchase, 200, "CANCELLED"),
        (Endpoint::UpdatePurchase, 409, ""),
        (Endpoint::ReviewPurchase, 409, ""),
        (Endpoint::ListPurchases, 200, ""),
    ];
    for (endpoint, expected, purchase_status) in sequence {
        let event = h.prepared(endpoint, Some(&id));
        let answer = h.invoke(endpoint, event.clone()).await;
        let (status, headers, body) = &answer;
        assert_eq!(
            *status,
            expected,
            "{} on {id}: {body}",
            endpoint.function_name()
        );
        if !purchase_status.is_empty() {
            assert_eq!(
                body["status"],
                purchase_status,
                "{}: {body}",
                endpoint.function_name()
            );
            assert_eq!(body["purchaseId"], id.as_str());
        }
        match endpoint {
            Endpoint::GetPurchase => {
                assert_eq!(headers["etag"], "\"1\"");
                assert_eq!(body["customerId"], CUSTOMER);
            }
            Endpoint::ListPurchases => {
                assert_eq!(body["purchases"][0]["purchaseId"], id.as_str());
            }
            Endpoint::RedrivePurchase => {
                assert!(
                    body["message"]
                        .as_str()
                        .unwrap()
                        .contains("nothing to redrive"),
                    "{body}"
                );
            }
            _ => {}
        }
        if idempotent.contains(endpoint.function_name()) {
            retry(&mut h, endpoint, event, &answer).await;
        }
    }

    // Invoking the create event twice with its Idempotency-Key (as two
    // `sam local invoke`s would) creates one purchase and replays the answer.
    let endpoint = Endpoint::CreatePurchase;
    let event = prepare(h.api_event(endpoint), &h.token(endpoint), None, u32::MAX);
    let first = h.invoke(endpoint, event.clone()).await;
    assert_eq!(first.0, 201, "{}", first.2);
    let newest = first.2["purchaseId"].as_str().unwrap().to_owned();
    retry(&mut h, endpoint, event.clone(), &first).await;
    let (_, again_headers, _) = h.invoke(endpoint, event).await;
    assert_eq!(again_headers["location"], format!("purchases/{newest}"));

    // Newest first, or oldest first with `order=oldest`; anything else is a 400.
    let endpoint = Endpoint::ListPurchases;
    for (order, first) in [
        (None, &newest),
        (Some("newest"), &newest),
        (Some("oldest"), &id),
    ] {
        let mut event = h.prepared(endpoint, None);
        if let Some(order) = order {
            event = with_query(event, "order", order);
        }
        let (status, _, body) = h.invoke(endpoint, event).await;
        assert_eq!(status, 200, "order={order:?}: {body}");
        assert_eq!(
            body["purchases"][0]["purchaseId"],
            first.as_str(),
            "order={order:?}"
        );
    }
    let event = with_query(h.prepared(endpoint, None), "order", "sideways");
    let (status, _, body) = h.invoke(endpoint, event).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["details"][0]["field"], "order");
}

#[tokio::test]
async fn rule_set_events_reach_the_handlers_and_get_the_documented_status() {
    let mut h = Harness::new().await;
    // The events all name the rule set `default`: before create, after it,
    // and after delete.
    let sequence = [
        (Endpoint::ListRuleSets, 200),
        (Endpoint::GetRuleSet, 404),
        (Endpoint::UpdateRuleSet, 404),
        (Endpoint::DeleteRuleSet, 404),
        (Endpoint::CreateRuleSet, 201),
        (Endpoint::CreateRuleSet, 409),
        (Endpoint::GetRuleSet, 200),
        (Endpoint::ListRuleSets, 200),
        (Endpoint::UpdateRuleSet, 200),
        (Endpoint::DeleteRuleSet, 204),
        (Endpoint::GetRuleSet, 404),
    ];
    let mut created = false;
    for (endpoint, expected) in sequence {
        let event = h.prepared(endpoint, None);
        let url = request_url(&event);
        let (status, headers, body) = h.invoke(endpoint, event).await;
        assert_eq!(status, expected, "{}: {body}", endpoint.function_name());
        match (endpoint, status) {
            (Endpoint::CreateRuleSet, 201) => {
                created = true;
                assert_eq!(headers["location"], format!("rules/{EVENT_RULE_SET}"));
                assert_eq!(
                    resolved(&url, &headers["location"]),
                    format!("{url}/{EVENT_RULE_SET}"),
                    "Location"
                );
                assert_eq!(headers["etag"], "\"1\"");
                assert_eq!(body["name"], EVENT_RULE_SET);
            }
            (Endpoint::GetRuleSet, 200) => assert_eq!(headers["etag"], "\"1\""),
            (Endpoint::UpdateRuleSet, 200) => {
                assert_eq!(headers["etag"], "\"2\"");
                assert_eq!(body["version"], 2);
            }
            (Endpoint::ListRuleSets, 200) => {
                assert_eq!(
                    body["ruleSets"].as_array().unwrap().len(),
                    usize::from(created)
                );
            }
            (_, 404 | 409) => assert!(body["error"].is_string(), "{body}"),
            _ => {}
        }
    }
}

fn error_type(error: StepError) -> String {
    lambda_runtime::Diagnostic::from(error).error_type
}

fn line_statuses(purchase: &Purchase) -> Vec<LineStatus> {
    purchase.products.iter().map(|l| l.status).collect()
}

/// The steps the definition's `ResumeUndoing` choice can resume at.
fn resumable_steps() -> BTreeSet<String> {
    let definition: Value = serde_json::from_str(DEFINITION).unwrap();
    definition["States"]["ResumeUndoing"]["Choices"]
        .as_array()
        .expect("ResumeUndoing choices")
        .iter()
        .map(|c| c["StringEquals"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn step_events_deserialize_as_step_input_and_drive_the_steps() {
    use PurchaseStatus as S;
    use Step::*;
    let mut h = Harness::new().await;

    // As shipped (the placeholder id): each is read as the step's input and
    // fails only because no such purchase exists — the errorType Step
    // Functions would see.
    for step in Step::ALL {
        let payload = event(step.function_name());
        assert_eq!(
            payload["purchaseId"],
            EVENT_PURCHASE_ID,
            "{}",
            step.function_name()
        );
        let error = step
            .run(&h.steps, payload, None)
            .await
            .expect_err("no purchase yet");
        h.check_granted(step.function_name());
        assert_eq!(
            error_type(error.clone()),
            "PurchaseNotFound",
            "{}: {error} (InvalidInput would mean the event is not the step's input)",
            step.function_name()
        );
    }

    // The forward path.
    let forward = create_purchase(&mut h, None).await;
    for (step, status) in [
        (EvaluateRules, S::Pending),
        (ReserveStock, S::Reserved),
        (CapturePayment, S::Paid),
        (ProvisionProducts, S::Completed),
    ] {
        let output = h
            .step(step, &forward, json!({}))
            .await
            .unwrap_or_else(|e| panic!("{} on {forward}: {e}", step.function_name()));
        assert_eq!(output, json!({"purchaseId": forward}));
        assert_eq!(h.stored(&forward).await.status, status, "after {step:?}");
    }
    assert!(h.stored(&forward).await.finalized_at.is_some());
    // Undoing never touches a completed purchase.
    h.step(RevokeProducts, &forward, json!({})).await.unwrap();
    let completed = h.stored(&forward).await;
    assert_eq!(completed.status, S::Completed);
    assert!(
        line_statuses(&completed)
            .iter()
            .all(|s| *s == LineStatus::Provisioned)
    );

    // The undoing path, stuck on a step until an operator redrives it.
    let undone = create_purchase(&mut h, None).await;
    let mugs = h.stock("mug-ferris").await;
    for (step, status) in [
        (EvaluateRules, S::Pending),
        (ReserveStock, S::Reserved),
        (CapturePayment, S::Paid),
        // Not on hold: the step completes its own task at once.
        (AwaitReview, S::Paid),
        // The review is over (the event: approved): the next run begins.
        (ContinuePurchase, S::Paid),
        // The events' outcome: FAILED / PROVISIONING_FAILED.
        (RevokeProducts, S::Failed),
        (RefundPayment, S::Failed),
        (ReleaseStock, S::Failed),
    ] {
        // ContinuePurchase's run: the one that handed the purchase over.
        let output = h
            .step(step, &undone, json!({"run": undone}))
            .await
            .unwrap_or_else(|e| panic!("{} on {undone}: {e}", step.function_name()));
        assert_eq!(h.stored(&undone).await.status, status, "after {step:?}");
        if step == ContinuePurchase {
            // StartPurchaseRun starts the execution named so.
            assert_eq!(output["executionName"], format!("{undone}-2"), "{output}");
            assert_eq!(h.stored(&undone).await.run, 2);
        }
    }
    let purchase = h.stored(&undone).await;
    assert_eq!(purchase.payment_status, PaymentStatus::Refunded);
    assert!(
        line_statuses(&purchase)
            .iter()
            .all(|s| *s == LineStatus::Released)
    );
    assert_eq!(h.stock("mug-ferris").await, mugs, "released stock is back");

    // As if an undoing step had failed for good: the execution fails in
    // NeedsAttention and the purchase says why.
    let error = h
        .step(NeedsAttention, &undone, json!({}))
        .await
        .expect_err("NeedsAttention fails the execution on purpose");
    assert_eq!(error_type(error), "NeedsAttention");
    assert_eq!(h.stored(&undone).await.status, S::NeedsAttention);
    let get = Endpoint::GetPurchase;
    let (status, _, body) = h.invoke(get, h.prepared(get, Some(&undone))).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "NEEDS_ATTENTION");
    let failed_step = event(NeedsAttention.function_name())["failedStep"].clone();
    assert_eq!(body["attention"]["failedStep"], failed_step, "{body}");
    assert_eq!(
        body["attention"]["error"],
        event(NeedsAttention.function_name())["error"]
    );
    let cancel = Endpoint::CancelPurchase;
    let (status, _, body) = h.invoke(cancel, h.prepared(cancel, Some(&undone))).await;
    assert_eq!(status, 409, "a failed purchase cannot be cancelled: {body}");

    // The operator redrives it (the redrive event, retried once)...
    let redrive = Endpoint::RedrivePurchase;
    let event_ = h.prepared(redrive, Some(&undone));
    let answer = h.invoke(redrive, event_.clone()).await;
    assert_eq!(answer.0, 200, "{}", answer.2);
    assert_eq!(answer.2["status"], "NEEDS_ATTENTION");
    assert!(
        answer.2["message"]
            .as_str()
            .unwrap()
            .contains(failed_step.as_str().unwrap()),
        "{}",
        answer.2
    );
    retry(&mut h, redrive, event_, &answer).await;
    // ...so Step Functions runs NeedsAttention again, which resumes at the
    // failed step, and the undoing finishes.
    let output = h.step(NeedsAttention, &undone, json!({})).await.unwrap();
    assert_eq!(output["resumeAt"], failed_step, "{output}");
    assert!(
        resumable_steps().contains(failed_step.as_str().unwrap()),
        "ResumeUndoing resumes at {failed_step}"
    );
    assert_eq!(h.stored(&undone).await.status, S::Failed);
    for step in [RefundPayment, ReleaseStock, FinalizePurchase] {
        h.step(step, &undone, json!({})).await.unwrap();
    }
    let purchase = h.stored(&undone).await;
    assert_eq!(purchase.status, S::Failed);
    assert_eq!(
        purchase.failure_reason,
        Some(FailureReason::ProvisioningFailed)
    );
    assert_eq!(purchase.payment_status, PaymentStatus::Refunded);
    assert!(purchase.finalized_at.is_some() && purchase.attention.is_none());
    let (status, _, body) = h.invoke(redrive, h.prepared(redrive, Some(&undone))).await;
    assert_eq!(status, 409, "nothing left to redrive: {body}");

    // Delivered, then taken back: a product the provider refuses fails the
    // purchase after the first line was delivered.
    let lines = json!([
        {"id": "ebook-rust", "quantity": 1},
        {"id": "fail-provision-license", "quantity": 1}
    ]);
    let revoked = create_purchase(&mut h, Some(lines)).await;
    let ebooks = h.stock("ebook-rust").await;
    let licenses = h.stock("fail-provision-license").await;
    for step in [EvaluateRules, ReserveStock, CapturePayment] {
        h.step(step, &revoked, json!({})).await.unwrap();
    }
    let error = h
        .step(ProvisionProducts, &revoked, json!({}))
        .await
        .expect_err("the license is refused");
    assert_eq!(error_type(error), "ProvisioningFailed");
    assert_eq!(
        line_statuses(&h.stored(&revoked).await),
        [LineStatus::Provisioned, LineStatus::ProvisioningFailed]
    );
    for step in [
        RevokeProducts,
        RefundPayment,
        ReleaseStock,
        FinalizePurchase,
    ] {
        h.step(step, &revoked, json!({})).await.unwrap();
    }
    let (status, _, body) = h.invoke(get, h.prepared(get, Some(&revoked))).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "FAILED");
    assert_eq!(body["failureReason"], "PROVISIONING_FAILED");
    assert_eq!(body["paymentStatus"], "REFUNDED");
    assert_eq!(body["products"][0]["status"], "REVOKED", "{body}");
    assert!(body["finalizedAt"].is_string(), "{body}");
    assert_eq!(
        h.stock("ebook-rust").await,
        ebooks,
        "a revoked line's stock is given back"
    );
    assert_eq!(
        h.stock("fail-provision-license").await,
        licenses,
        "a refused line's stock is given back"
    );
}

#[tokio::test]
async fn the_reconciler_starts_stranded_purchases_and_flags_failed_executions() {
    let mut h = Harness::new().await;
    // The scheduled event carries nothing the reconciler reads: any JSON
    // object is a pass (`shared::lambda::run_reconciler`).
    let _: LambdaEvent<Value> = LambdaEvent::new(event(RECONCILER), Context::default());

    // A create whose workflow start was throttled: 503, the purchase stays
    // PENDING for the retry or the reconciler.
    *h.workflow.refuse_starts.lock().unwrap() = true;
    let create = Endpoint::CreatePurchase;
    let (status, headers, body) = h.invoke(create, h.prepared(create, None)).await;
    assert_eq!(status, 503, "{body}");
    assert!(headers.contains_key("retry-after"));
    *h.workflow.refuse_starts.lock().unwrap() = false;
    let page = h
        .store
        .inner
        .list_purchases(&PurchaseQuery {
            limit: 10,
            ..PurchaseQuery::default()
        })
        .await
        .unwrap();
    let [stranded] = page.purchases.as_slice() else {
        panic!("one purchase: {:?}", page.purchases);
    };
    let stranded = stranded.purchase_id.clone();
    let first = Run::new(stranded.clone(), 1);
    assert_eq!(
        h.workflow
            .describe(Machine::Purchase, &first)
            .await
            .unwrap(),
        None
    );
    h.calls.lock().unwrap().clear();

    let pass = |h: &Harness| {
        let store = h.store.clone();
        let workflow = h.workflow.clone();
        async move {
            shared::service::reconcile::reconcile(store.as_ref(), workflow.as_ref(), Duration::ZERO)
                .await
                .unwrap()
        }
    };
    let findings = pass(&h).await;
    h.check_granted(RECONCILER);
    assert_eq!(
        (findings.examined, findings.started),
        (1, 1),
        "{findings:?}"
    );
    assert_eq!(
        h.workflow
            .describe(Machine::Purchase, &first)
            .await
            .unwrap(),
        Some(ExecutionState::Running)
    );
    h.calls.lock().unwrap().clear();
    let findings = pass(&h).await;
    h.check_granted(RECONCILER);
    assert_eq!(findings.running, 1, "{findings:?}");

    // A run handed the purchase over to a review (and ended): fine while
    // the review runs.
    h.workflow
        .set(Machine::Purchase, &first, ExecutionState::Succeeded);
    h.workflow
        .set(Machine::Review, &first, ExecutionState::Running);
    let findings = pass(&h).await;
    h.check_granted(RECONCILER);
    assert_eq!(findings.running, 1, "{findings:?}");

    // An execution that failed without the purchase saying so is flagged.
    h.workflow
        .set(Machine::Purchase, &first, ExecutionState::Failed);
    let findings = pass(&h).await;
    h.check_granted(RECONCILER);
    assert_eq!(findings.flagged, 1, "{findings:?}");
    let get = Endpoint::GetPurchase;
    let (status, _, body) = h
        .invoke(get, h.prepared(get, Some(stranded.as_str())))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "NEEDS_ATTENTION", "{body}");
    assert!(body["attention"]["failedStep"].is_string(), "{body}");
}

/// With `WORKFLOW_TYPE=EXPRESS` the functions neither describe nor redrive
/// purchase runs: the reconciler asks about the review only and starts a
/// new run for a lost one, a redrive starts a new run. What they call is
/// still what the template grants them.
#[tokio::test]
async fn with_express_runs_the_reconciler_and_a_redrive_start_new_runs_as_granted() {
    let mut h = Harness::new().await;
    *h.workflow.workflow_type.lock().unwrap() = WorkflowType::Express;
    let lost = create_purchase(&mut h, None).await;
    h.step(Step::ReserveStock, &lost, json!({})).await.unwrap();
    h.calls.lock().unwrap().clear();
    let ages = Ages {
        look_after: Duration::ZERO,
        restart_after: Duration::ZERO,
    };
    let findings =
        shared::service::reconcile::reconcile_with(h.store.as_ref(), h.workflow.as_ref(), ages)
            .await
            .unwrap();
    h.check_granted(RECONCILER);
    assert_eq!(findings.restarted, 1, "{findings:?}");
    let id = PurchaseId::new(lost.as_str());
    assert_eq!(
        h.workflow
            .executions
            .lock()
            .unwrap()
            .get(&(MACHINE, Run::new(id, 2).name())),
        Some(&ExecutionState::Running),
        "the new run, named after the purchase"
    );

    // A purchase stuck undoing: the redrive starts a new run, as granted.
    let stuck = create_purchase(&mut h, None).await;
    for step in [Step::ReserveStock, Step::CapturePayment] {
        h.step(step, &stuck, json!({})).await.unwrap();
    }
    h.step(Step::NeedsAttention, &stuck, json!({}))
        .await
        .expect_err("NeedsAttention fails the execution on purpose");
    let redrive = Endpoint::RedrivePurchase;
    let (status, _, body) = h.invoke(redrive, h.prepared(redrive, Some(&stuck))).await;
    assert_eq!(status, 200, "{body}");
    let stored = h.stored(&stuck).await;
    assert_eq!((stored.status, stored.run), (PurchaseStatus::Failed, 2));
}
