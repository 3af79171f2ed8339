//! The AWS face of the project, checked offline against the Rust code:
//!
//! 1. `template.yaml`: every function is a workspace binary and every
//!    workspace binary a function; each HTTP function's Api event is its
//!    `Endpoint::route()`; environment and IAM follow the rules in
//!    docs/deploy.md ("IAM").
//! 2. The state machine's `${...}` placeholders and `DefinitionSubstitutions`
//!    name each other, and the step functions.
//! 3. `openapi.yaml`: its paths and methods are the served routes, its enums
//!    the Rust enums' serde names, its bounds `validation::limits`.
//! 4. Every `events/*.json` goes through the real `lambda_http` adapter (API
//!    Gateway REST proxy event → `http::Request` → handler → proxy response)
//!    or the step's input type, and gets the status docs/deploy.md documents;
//!    response bodies and headers are checked against `openapi.yaml`.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lambda_http::aws_lambda_events::apigw::ApiGatewayProxyRequest;
use lambda_http::request::{LambdaRequest, RequestOrigin};
use lambda_http::{Adapter, Context, LambdaEvent, Request, Service, service_fn};
use serde::Serialize;
use serde_json::{Value, json};
use serde_yaml_ng::Value as Yaml;
use shared::api::{App, BASE_PATH, DEFAULT_PAGE_SIZE, Endpoint, MAX_PAGE_SIZE};
use shared::auth::{AuthConfig, JwtAuthenticator, KeySource, Scope, mint_hs256_token};
use shared::embedded::EmbeddedStore;
use shared::error::ApiError;
use shared::model::{
    FailureReason, LineStatus, PaymentStatus, Product, ProductKind, PurchaseStatus, ShippingStatus,
};
use shared::payment::SimulatedPaymentGateway;
use shared::provisioning::SimulatedProvisioner;
use shared::rules::{MAX_RULES, OnViolation, RULE_IDS, RuleOutcome};
use shared::steps::{Step, StepDeps, StepError};
use shared::store::Inventory;
use shared::validation::limits;
use shared::workflow::{Workflow, WorkflowError};

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

// ---------------------------------------------------------------- template model

struct TemplateFunction {
    logical_id: String,
    binary: String,
    properties: Yaml,
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
    let in_rust: BTreeSet<String> = Endpoint::ALL
        .iter()
        .map(|e| e.function_name().to_owned())
        .chain(Step::ALL.iter().map(|s| s.function_name().to_owned()))
        .collect();
    assert_eq!(
        in_workspace, in_rust,
        "functions/* (left) vs Endpoint::ALL + Step::ALL (right)"
    );

    // One shared workspace build: CodeUri is the workspace root everywhere.
    let globals = &template["Globals"]["Function"];
    for function in &functions {
        let code_uri = text(&function.properties, &["CodeUri"]).or(text(globals, &["CodeUri"]));
        assert_eq!(code_uri, Some("."), "{}: CodeUri", function.logical_id);
    }
    assert_eq!(text(globals, &["Runtime"]), Some("provided.al2023"));
    assert_eq!(text(globals, &["Handler"]), Some("bootstrap"));
    assert_eq!(
        globals["Architectures"],
        serde_yaml_ng::from_str::<Yaml>("[arm64]").unwrap()
    );
    assert_eq!(text(globals, &["Tracing"]), Some("Active"));
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
        let rest_api = tagged(&event["Properties"]["RestApiId"]);
        assert_eq!(
            rest_api.map(|(tag, v)| (tag, v.as_str().map(str::to_owned))),
            Some(("Ref".to_owned(), Some("Api".to_owned()))),
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
    let api = resources(&template)
        .into_iter()
        .find(|(id, _)| id == "Api")
        .expect("Api resource")
        .1;
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
fn environment_and_iam_follow_the_deployment_rules() {
    let template = template();
    let functions = template_functions(&template);
    let raw = read("template.yaml");
    assert!(
        !raw.contains("JWT_HS256_SECRET"),
        "HS256 secrets never go to AWS: use JWKS_URL"
    );
    assert!(!read("samconfig.toml").contains("JWT_HS256_SECRET"));

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
    for function in &functions {
        let env = &function.properties["Environment"]["Variables"];
        let has = |name: &str| env.get(name).is_some();
        let is_endpoint = Endpoint::ALL
            .iter()
            .any(|e| e.function_name() == function.binary);
        if is_endpoint {
            for variable in ["JWT_ISSUER", "JWT_AUDIENCE", "JWKS_URL"] {
                assert!(has(variable), "{}: {variable}", function.logical_id);
            }
        } else {
            // shared::config::lambda_step_deps builds both clients at cold start.
            for variable in ["PAYMENT_URL", "PROVISIONING_URL"] {
                assert!(has(variable), "{}: {variable}", function.logical_id);
            }
        }
        let creates = function.binary == Endpoint::CreatePurchase.function_name();
        assert_eq!(
            has("STATE_MACHINE_ARN"),
            creates,
            "{}: STATE_MACHINE_ARN",
            function.logical_id
        );

        let granted = granted_actions(function);
        assert!(!granted.is_empty(), "{}: no policy", function.logical_id);
        for (action, resource) in &granted {
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
            assert!(
                action.starts_with("dynamodb:") || action.starts_with("states:"),
                "{}: unexpected {action}",
                function.logical_id
            );
        }
        let starts = granted.iter().any(|(a, _)| a == "states:StartExecution");
        assert_eq!(
            starts, creates,
            "{}: only create-purchase may start executions",
            function.logical_id
        );
    }
    // And nothing else in the template grants it either.
    assert_eq!(
        raw.matches("states:StartExecution").count(),
        1,
        "states:StartExecution granted once"
    );
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

/// A policy `Resource` as a short name: `!GetAtt PurchasesTable.Arn` →
/// `PurchasesTable`, `!Sub ${PurchasesTable.Arn}/index/byCustomer` →
/// `PurchasesTable/index/byCustomer`, `!Ref PurchaseStateMachine` and the
/// state machine's ARN built from its name → `PurchaseStateMachine`.
fn resource_names(resource: &Yaml, machine_name: &str) -> Vec<String> {
    if let Some(list) = resource.as_sequence() {
        return list
            .iter()
            .flat_map(|r| resource_names(r, machine_name))
            .collect();
    }
    let (tag, value) =
        tagged(resource).unwrap_or_else(|| panic!("Resource {resource:?}: use !GetAtt/!Sub/!Ref"));
    let value = value.as_str().expect("a string");
    let name = match tag.as_str() {
        "GetAtt" => value.strip_suffix(".Arn").expect("X.Arn").to_owned(),
        "Ref" => value.to_owned(),
        "Sub" if value.starts_with("${") => value
            .replacen(".Arn}", "", 1)
            .trim_start_matches("${")
            .to_owned(),
        "Sub" => {
            let expected = format!(
                "arn:${{AWS::Partition}}:states:${{AWS::Region}}:${{AWS::AccountId}}:stateMachine:{machine_name}"
            );
            assert_eq!(value, expected, "a state machine ARN built from its Name");
            "PurchaseStateMachine".to_owned()
        }
        other => panic!("Resource !{other}"),
    };
    vec![name]
}

/// What each function may do, and nothing more: the DynamoDB calls
/// `DynamoStore` makes for its handler or step (docs/dynamodb.md), and the
/// Step Functions calls. docs/deploy.md ("IAM") shows the same table.
fn expected_grants(function: &str) -> BTreeSet<(&'static str, &'static str)> {
    const PURCHASE_WRITE: [(&str, &str); 2] = [
        ("dynamodb:GetItem", "PurchasesTable"),
        ("dynamodb:PutItem", "PurchasesTable"),
    ];
    const IDEMPOTENCY: [(&str, &str); 4] = [
        ("dynamodb:GetItem", "IdempotencyTable"),
        ("dynamodb:PutItem", "IdempotencyTable"),
        ("dynamodb:UpdateItem", "IdempotencyTable"),
        ("dynamodb:DeleteItem", "IdempotencyTable"),
    ];
    const CALLBACK: [(&str, &str); 2] = [
        ("states:SendTaskSuccess", "PurchaseStateMachine"),
        ("states:SendTaskFailure", "PurchaseStateMachine"),
    ];
    let mut grants: BTreeSet<(&str, &str)> = BTreeSet::new();
    match function {
        "create-purchase" => {
            grants.extend(PURCHASE_WRITE);
            grants.extend(IDEMPOTENCY);
            grants.insert(("dynamodb:BatchGetItem", "ProductsTable"));
            grants.insert(("states:StartExecution", "PurchaseStateMachine"));
        }
        "list-purchases" => {
            grants.insert(("dynamodb:Query", "PurchasesTable/index/byCustomer"));
            grants.insert(("dynamodb:Query", "PurchasesTable/index/allPurchases"));
            grants.insert(("dynamodb:BatchGetItem", "PurchasesTable"));
        }
        "get-purchase" => {
            grants.insert(("dynamodb:GetItem", "PurchasesTable"));
        }
        "update-purchase" => {
            grants.extend(PURCHASE_WRITE);
            grants.insert(("dynamodb:BatchGetItem", "ProductsTable"));
        }
        "cancel-purchase" => {
            grants.extend(PURCHASE_WRITE);
            grants.extend(IDEMPOTENCY);
            grants.extend(CALLBACK);
        }
        "apply-rules" => {
            grants.extend(PURCHASE_WRITE);
            grants.insert(("dynamodb:Query", "PurchasesTable/index/byCustomer"));
        }
        "review-purchase" | "await-review" => {
            grants.extend(PURCHASE_WRITE);
            grants.extend(CALLBACK);
        }
        "reserve-stock" => {
            grants.extend(PURCHASE_WRITE);
            grants.extend([
                ("dynamodb:GetItem", "ProductsTable"),
                ("dynamodb:PutItem", "ProductsTable"),
                ("dynamodb:UpdateItem", "ProductsTable"),
            ]);
        }
        "release-stock" => {
            grants.extend(PURCHASE_WRITE);
            grants.extend([
                ("dynamodb:GetItem", "ProductsTable"),
                ("dynamodb:DeleteItem", "ProductsTable"),
                ("dynamodb:UpdateItem", "ProductsTable"),
            ]);
        }
        "capture-payment" | "provision-products" | "refund-payment" | "finalize-purchase" => {
            grants.extend(PURCHASE_WRITE);
        }
        "evaluate-rules" => {
            grants.extend(PURCHASE_WRITE);
            grants.insert(("dynamodb:Query", "PurchasesTable/index/byCustomer"));
            grants.insert(("dynamodb:GetItem", "RuleSetsTable"));
        }
        "list-rule-sets" => {
            grants.insert(("dynamodb:Scan", "RuleSetsTable"));
        }
        "create-rule-set" => {
            grants.insert(("dynamodb:Scan", "RuleSetsTable"));
            grants.insert(("dynamodb:PutItem", "RuleSetsTable"));
        }
        "get-rule-set" => {
            grants.insert(("dynamodb:GetItem", "RuleSetsTable"));
        }
        "update-rule-set" => {
            grants.insert(("dynamodb:GetItem", "RuleSetsTable"));
            grants.insert(("dynamodb:PutItem", "RuleSetsTable"));
        }
        "delete-rule-set" => {
            grants.insert(("dynamodb:DeleteItem", "RuleSetsTable"));
        }
        other => panic!("no expected grants for {other}: add them here and in docs/deploy.md"),
    }
    grants
}

#[test]
fn iam_grants_are_exactly_what_each_function_calls() {
    let template = template();
    let machine_name = resources(&template)
        .into_iter()
        .find(|(id, _)| id == "PurchaseStateMachine")
        .and_then(|(_, r)| {
            tagged(&r["Properties"]["Name"]).map(|(_, v)| v.as_str().unwrap().to_owned())
        })
        .expect("PurchaseStateMachine with a !Sub Name");
    let mut granted_anywhere = BTreeSet::new();
    for function in template_functions(&template) {
        let mut granted = BTreeSet::new();
        for (action, resource) in granted_actions(&function) {
            for name in resource_names(&resource, &machine_name) {
                granted.insert((action.clone(), name));
            }
        }
        let expected: BTreeSet<(String, String)> = expected_grants(&function.binary)
            .into_iter()
            .map(|(a, r)| (a.to_owned(), r.to_owned()))
            .collect();
        assert_eq!(
            granted, expected,
            "{}: granted (left) vs needed (right)",
            function.logical_id
        );
        granted_anywhere.extend(granted.into_iter().map(|(action, _)| action));
    }
    // A DynamoDB call the store starts making must be granted to someone.
    // (TransactWriteItems needs the Put/Update/Delete of its actions.)
    let store = read("shared/src/dynamodb.rs");
    for (call, action) in [
        (".get_item()", "dynamodb:GetItem"),
        (".put_item()", "dynamodb:PutItem"),
        (".update_item()", "dynamodb:UpdateItem"),
        (".delete_item()", "dynamodb:DeleteItem"),
        (".query()", "dynamodb:Query"),
        (".scan()", "dynamodb:Scan"),
        (".batch_get_item()", "dynamodb:BatchGetItem"),
        (".batch_write_item()", "dynamodb:BatchWriteItem"),
        (".transact_get_items()", "dynamodb:GetItem"),
    ] {
        if store.contains(call) {
            assert!(
                granted_anywhere.contains(action),
                "DynamoStore calls {call} but no function may {action}"
            );
        }
    }
}

#[test]
fn tables_follow_the_dynamodb_design() {
    let template = template();
    let table = |id: &str| -> Value {
        let (_, resource) = resources(&template)
            .into_iter()
            .find(|(i, _)| i == id)
            .expect(id);
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
    let purchases = table("PurchasesTable");
    assert_eq!(purchases["key"], json!([key("purchaseId", "HASH")]));
    let indexes: BTreeMap<String, Value> = purchases["indexes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["IndexName"].as_str().unwrap().to_owned(), i.clone()))
        .collect();
    use shared::dynamodb::{ALL_PURCHASES_INDEX, BY_CUSTOMER_INDEX};
    assert_eq!(indexes.keys().collect::<Vec<_>>(), {
        let mut names = vec![ALL_PURCHASES_INDEX, BY_CUSTOMER_INDEX];
        names.sort_unstable();
        names
    });
    assert_eq!(
        indexes[BY_CUSTOMER_INDEX]["KeySchema"],
        json!([key("customerId", "HASH"), key("purchaseId", "RANGE")])
    );
    assert_eq!(
        indexes[BY_CUSTOMER_INDEX]["Projection"]["ProjectionType"],
        "ALL"
    );
    assert_eq!(
        indexes[ALL_PURCHASES_INDEX]["KeySchema"],
        json!([key("recordType", "HASH"), key("purchaseId", "RANGE")])
    );
    assert_eq!(
        indexes[ALL_PURCHASES_INDEX]["Projection"]["ProjectionType"],
        "KEYS_ONLY"
    );
    assert_eq!(table("ProductsTable")["key"], json!([key("id", "HASH")]));
    assert_eq!(table("RuleSetsTable")["key"], json!([key("name", "HASH")]));
    let idempotency = table("IdempotencyTable");
    assert_eq!(idempotency["key"], json!([key("key", "HASH")]));
    assert_eq!(
        idempotency["ttl"],
        json!({"AttributeName": "expiresAt", "Enabled": true})
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

#[test]
fn definition_placeholders_and_substitutions_match() {
    let template = template();
    let functions = template_functions(&template);
    let (_, machine) = resources(&template)
        .into_iter()
        .find(|(_, r)| text(r, &["Type"]) == Some("AWS::Serverless::StateMachine"))
        .expect("a state machine");
    let properties = &machine["Properties"];
    let uri = text(properties, &["DefinitionUri"]).expect("DefinitionUri");
    assert_eq!(uri, "statemachine/purchase.asl.json");
    let definition = read(uri);
    serde_json::from_str::<Value>(&definition).expect("the definition is JSON");

    let used = placeholders(&definition);
    let substitutions = properties["DefinitionSubstitutions"]
        .as_mapping()
        .expect("DefinitionSubstitutions");
    let defined: BTreeSet<String> = substitutions
        .keys()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    let missing: Vec<_> = used.difference(&defined).collect();
    let unused: Vec<_> = defined.difference(&used).collect();
    assert!(
        missing.is_empty(),
        "placeholders without a DefinitionSubstitutions entry: {missing:?}"
    );
    assert!(
        unused.is_empty(),
        "DefinitionSubstitutions the definition never uses: {unused:?}"
    );

    let steps: BTreeSet<String> = Step::ALL.iter().map(|s| s.arn_placeholder()).collect();
    assert_eq!(
        defined, steps,
        "DefinitionSubstitutions (left) vs Step::arn_placeholder (right)"
    );

    let invoke_policies: BTreeSet<String> = properties["Policies"]
        .as_sequence()
        .expect("state machine Policies")
        .iter()
        .filter_map(|p| p.get("LambdaInvokePolicy"))
        .map(|p| {
            let (tag, name) = tagged(&p["FunctionName"]).expect("FunctionName: !Ref");
            assert_eq!(tag, "Ref");
            name.as_str().unwrap().to_owned()
        })
        .collect();
    for step in Step::ALL {
        let function = function_for(&functions, step.function_name());
        let value = &substitutions[step.arn_placeholder().as_str()];
        let (tag, target) = tagged(value).expect("!GetAtt");
        assert_eq!(tag, "GetAtt");
        assert_eq!(
            target.as_str(),
            Some(format!("{}.Arn", function.logical_id).as_str()),
            "{} must be the ARN of the function building {}",
            step.arn_placeholder(),
            step.function_name()
        );
        assert!(
            invoke_policies.contains(&function.logical_id),
            "state machine lacks LambdaInvokePolicy for {}",
            function.logical_id
        );
    }
    assert_eq!(
        invoke_policies.len(),
        Step::ALL.len(),
        "LambdaInvokePolicy for step functions only"
    );
    assert_eq!(text(properties, &["Type"]), Some("STANDARD"));
    assert_eq!(
        get(properties, &["Tracing", "Enabled"]).and_then(Yaml::as_bool),
        Some(true)
    );
    assert!(
        get(properties, &["Logging", "Destinations"]).is_some(),
        "state machine logging"
    );
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
    let enums: Vec<(&str, Vec<String>)> = vec![
        ("PurchaseStatus", wire_names(&PurchaseStatus::ALL)),
        (
            "LineStatus",
            wire_names(
                &all_variants!(LineStatus: Pending, Reserved, Provisioned, OutOfStock, ProvisioningFailed, Released, Cancelled),
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
    let list = &openapi["paths"]["/purchases"]["get"]["parameters"];
    let limit = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .expect("limit parameter");
    assert_eq!(limit["schema"]["maximum"], json!(MAX_PAGE_SIZE));
    assert_eq!(limit["schema"]["default"], json!(DEFAULT_PAGE_SIZE));
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
}

/// The subset of JSON Schema openapi.yaml uses for responses: `$ref`, `type`,
/// `enum`, `required`, `properties`, `additionalProperties: false`, `items`,
/// `oneOf`. Returns every mismatch, each with its JSON path.
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
    let (_, api) = resources(&template)
        .into_iter()
        .find(|(id, _)| id == "Api")
        .expect("Api");
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

/// Accepts everything: no Step Functions here.
struct NoopWorkflow;

#[async_trait]
impl Workflow for NoopWorkflow {
    async fn start(&self, _: &str) -> Result<(), WorkflowError> {
        Ok(())
    }
    async fn send_task_success(&self, _: &str, _: Value) -> Result<(), WorkflowError> {
        Ok(())
    }
    async fn send_task_failure(&self, _: &str, _: &str, _: &str) -> Result<(), WorkflowError> {
        Ok(())
    }
}

struct Harness {
    app: App,
    steps: StepDeps,
    openapi: Value,
    invocations: u32,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
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
        let workflow: Arc<dyn Workflow> = Arc::new(NoopWorkflow);
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
                inventory: store.clone(),
                rule_sets: store,
                payments: Arc::new(SimulatedPaymentGateway::default()),
                provisioning: Arc::new(SimulatedProvisioner::default()),
                workflow,
            },
            openapi: openapi(),
            invocations: 0,
            _dir: dir,
        }
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
        assert!(
            typed.request_context.stage.is_some(),
            "{name}: requestContext.stage"
        );
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
        for headers in ["headers", "multiValueHeaders"] {
            let auth = &event[headers]["Authorization"];
            let auth = auth.as_array().and_then(|a| a.first()).unwrap_or(auth);
            assert_eq!(
                auth, AUTH_PLACEHOLDER,
                "{name}: {headers}.Authorization must stay a placeholder (no tokens in the repo)"
            );
        }
        let operation = &self.openapi["paths"][route][method.as_str().to_lowercase()];
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
    /// checked against the operation's documented response.
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
        let (method, path) = endpoint.route();
        let operation = &self.openapi["paths"][path][method.as_str().to_lowercase()];
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

async fn create_purchase(h: &mut Harness) -> String {
    let endpoint = Endpoint::CreatePurchase;
    let event = prepare(
        h.api_event(endpoint),
        &h.token(endpoint),
        None,
        h.invocations,
    );
    let (status, _, body) = h.invoke(endpoint, event).await;
    assert_eq!(status, 201, "{body}");
    body["purchaseId"].as_str().unwrap().to_owned()
}

#[test]
fn every_function_has_exactly_one_event_file() {
    let expected: BTreeSet<String> = Endpoint::ALL
        .iter()
        .map(|e| e.function_name().to_owned())
        .chain(Step::ALL.iter().map(|s| s.function_name().to_owned()))
        .collect();
    assert_eq!(
        event_names(),
        expected,
        "events/*.json (left) vs functions (right)"
    );
}

#[tokio::test]
async fn api_events_reach_the_handlers_and_get_the_documented_status() {
    let mut h = Harness::new().await;

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
        let event = prepare(
            h.api_event(endpoint),
            &h.token(endpoint),
            None,
            h.invocations,
        );
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
            assert_eq!(headers["location"], format!("{BASE_PATH}/purchases/{id}"));
            created = Some(id);
        }
        if status == 404 {
            assert_eq!(body["error"], "NOT_FOUND");
        }
    }
    let id = created.unwrap();

    // With the id of that purchase, in the order a user would try them.
    let sequence = [
        (Endpoint::GetPurchase, 200, "PENDING"),
        (Endpoint::UpdatePurchase, 200, "PENDING"),
        (Endpoint::ApplyRules, 200, "ON_HOLD"),
        (Endpoint::ReviewPurchase, 200, "PENDING"),
        (Endpoint::CancelPurchase, 200, "CANCELLED"),
        (Endpoint::CancelPurchase, 200, "CANCELLED"),
        (Endpoint::UpdatePurchase, 409, ""),
        (Endpoint::ListPurchases, 200, ""),
    ];
    for (endpoint, expected, purchase_status) in sequence {
        let event = prepare(
            h.api_event(endpoint),
            &h.token(endpoint),
            Some(&id),
            h.invocations,
        );
        let (status, headers, body) = h.invoke(endpoint, event).await;
        assert_eq!(
            status,
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
            _ => {}
        }
    }

    // Invoking the create event twice with its Idempotency-Key (as two
    // `sam local invoke`s would) creates one purchase and replays the answer.
    let endpoint = Endpoint::CreatePurchase;
    let event = prepare(h.api_event(endpoint), &h.token(endpoint), None, u32::MAX);
    let (first_status, _, first) = h.invoke(endpoint, event.clone()).await;
    let (again_status, again_headers, again) = h.invoke(endpoint, event).await;
    assert_eq!(
        (first_status, again_status),
        (201, 201),
        "{first} / {again}"
    );
    assert_eq!(first, again, "the replay is the first answer");
    assert_eq!(
        again_headers.get("idempotent-replayed").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        again_headers["location"],
        format!(
            "{BASE_PATH}/purchases/{}",
            first["purchaseId"].as_str().unwrap()
        )
    );
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
        let event = prepare(
            h.api_event(endpoint),
            &h.token(endpoint),
            None,
            h.invocations,
        );
        let (status, headers, body) = h.invoke(endpoint, event).await;
        assert_eq!(status, expected, "{}: {body}", endpoint.function_name());
        match (endpoint, status) {
            (Endpoint::CreateRuleSet, 201) => {
                created = true;
                assert_eq!(
                    headers["location"],
                    format!("{BASE_PATH}/rules/{EVENT_RULE_SET}")
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

#[tokio::test]
async fn step_events_deserialize_as_step_input_and_drive_the_steps() {
    let mut h = Harness::new().await;
    let steps: BTreeMap<&str, Step> = Step::ALL.iter().map(|s| (s.function_name(), *s)).collect();

    // As shipped (the placeholder id): each is read as the step's input and
    // fails only because no such purchase exists — the errorType Step
    // Functions would see.
    for step in Step::ALL {
        let payload: Value =
            serde_json::from_str(&read(&format!("events/{}.json", step.function_name()))).unwrap();
        assert_eq!(
            payload["purchaseId"],
            EVENT_PURCHASE_ID,
            "{}",
            step.function_name()
        );
        let error = step
            .run(&h.steps, payload)
            .await
            .expect_err("no purchase yet");
        let diagnostic = lambda_runtime::Diagnostic::from(error.clone());
        assert_eq!(
            diagnostic.error_type,
            "PurchaseNotFound",
            "{}: {error} (InvalidInput would mean the event is not the step's input)",
            step.function_name()
        );
        assert!(!matches!(error, StepError::InvalidInput(_)));
    }

    // On real purchases: the forward path, then the compensation path.
    let forward = create_purchase(&mut h).await;
    let compensated = create_purchase(&mut h).await;
    let run = [
        (&forward, "evaluate-rules", "PENDING"),
        (&forward, "reserve-stock", "RESERVED"),
        (&forward, "capture-payment", "PAID"),
        (&forward, "provision-products", "COMPLETED"),
        (&compensated, "evaluate-rules", "PENDING"),
        (&compensated, "reserve-stock", "RESERVED"),
        (&compensated, "capture-payment", "PAID"),
        (&compensated, "await-review", "PAID"),
        (&compensated, "refund-payment", "PAID"),
        (&compensated, "release-stock", "PAID"),
        (&compensated, "finalize-purchase", "FAILED"),
    ];
    for (id, name, expected) in run {
        let mut payload = event(name);
        payload["purchaseId"] = json!(id);
        let output = steps[name]
            .run(&h.steps, payload)
            .await
            .unwrap_or_else(|e| panic!("{name} on {id}: {e}"));
        assert_eq!(output["status"], expected, "{name}: {output}");
    }
    let get = Endpoint::GetPurchase;
    let event = prepare(
        h.api_event(get),
        &h.token(get),
        Some(&compensated),
        h.invocations,
    );
    let (_, _, purchase) = h.invoke(get, event).await;
    assert_eq!(purchase["paymentStatus"], "REFUNDED", "{purchase}");
    assert_eq!(
        purchase["failureReason"], "PROVISIONING_FAILED",
        "{purchase}"
    );
    assert!(
        purchase["products"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["status"] == "RELEASED"),
        "{purchase}"
    );
}
