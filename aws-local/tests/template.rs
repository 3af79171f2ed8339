//! The workspace's `template.yaml`, read by aws-local as CloudFormation
//! would: what each function, machine and route resolves to locally.

mod common;

use std::collections::BTreeMap;

use aws_local::template::{Deployment, StateMachine, Template, WorkflowType};

fn deployment(parameters: &[(&str, &str)]) -> Deployment {
    Deployment {
        stack_name: "shop".into(),
        region: "eu-west-1".into(),
        account_id: "123456789012".into(),
        parameters: parameters
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    }
}

const LOCAL_VALUES: [(&str, &str); 4] = [
    ("JwtIssuer", "https://issuer.example"),
    ("JwksUrl", ""),
    ("PaymentUrl", "http://127.0.0.1:1/payment"),
    ("ProvisioningUrl", "http://127.0.0.1:1/provisioning"),
];

fn template() -> Template {
    Template::load(&common::template_file(), &deployment(&LOCAL_VALUES)).unwrap()
}

#[test]
fn every_function_resolves_to_a_workspace_binary_with_its_environment() {
    let template = template();
    assert!(
        template.functions.len() >= 20,
        "{}",
        template.functions.len()
    );
    for function in &template.functions {
        // `sam build` builds the binary in the function's CodeUri; aws-local
        // runs the same binary from the workspace's build.
        assert_eq!(
            function.code_uri.as_deref(),
            Some(format!("functions/{}", function.binary).as_str()),
            "{}",
            function.logical_id
        );
        let manifest = common::workspace()
            .join("functions")
            .join(&function.binary)
            .join("Cargo.toml");
        let manifest = std::fs::read_to_string(&manifest).unwrap_or_else(|e| {
            panic!(
                "{} runs binary {}, which is no workspace function ({e})",
                function.logical_id, function.binary
            )
        });
        assert!(
            manifest.contains(&format!("name = \"{}\"", function.binary)),
            "{}: functions/{}/Cargo.toml does not build binary {}",
            function.logical_id,
            function.binary,
            function.binary
        );
        // Globals' variables reach every function.
        assert_eq!(
            function.environment["PURCHASES_TABLE"],
            "shop-PurchasesTable"
        );
        assert_eq!(
            function.environment["RULE_SETS_TABLE"],
            "shop-RuleSetsTable"
        );
        assert_eq!(function.environment["RUST_LOG"], "info");
    }
    let create = template.function("CreatePurchaseFunction").unwrap();
    assert_eq!(create.name, "shop-CreatePurchaseFunction");
    assert_eq!(create.binary, "create-purchase");
    assert_eq!(create.timeout.as_secs(), 10);
    assert_eq!(create.memory_mb, 256);
    assert_eq!(
        create.environment["STATE_MACHINE_ARN"],
        "arn:aws:states:eu-west-1:123456789012:stateMachine:shop-purchase"
    );
    assert_eq!(create.environment["JWT_ISSUER"], "https://issuer.example");
    assert_eq!(create.environment["JWT_AUDIENCE"], "purchase-orchestrator");
    assert_eq!(create.environment["JWKS_URL"], "");
    assert_eq!(create.log_group, "/aws/lambda/shop/create-purchase");
    assert_eq!(create.routes.len(), 1);
    assert_eq!(
        (
            create.routes[0].method.as_str(),
            create.routes[0].path.as_str()
        ),
        ("POST", "/purchase-orchestrator/purchases")
    );
    let capture = template.function("CapturePaymentFunction").unwrap();
    assert_eq!(
        capture.environment["PAYMENT_URL"],
        "http://127.0.0.1:1/payment"
    );
    assert_eq!(capture.timeout.as_secs(), 25, "the Globals' Timeout");
    assert!(capture.routes.is_empty());
    let reconciler = template.function("ReconcilePurchasesFunction").unwrap();
    assert_eq!(reconciler.schedules.len(), 1);
    assert_eq!(reconciler.schedules[0].every.as_secs(), 300);
    assert_eq!(reconciler.environment["RECONCILE_AFTER_SECONDS"], "300");
    assert_eq!(
        reconciler.environment["REVIEW_STATE_MACHINE_ARN"],
        "arn:aws:states:eu-west-1:123456789012:stateMachine:shop-review"
    );
    for function in [create, reconciler] {
        assert_eq!(function.environment["WORKFLOW_TYPE"], "STANDARD");
    }
    let continues = template.function("ContinuePurchaseFunction").unwrap();
    assert_eq!(continues.binary, "continue-purchase");
    assert!(continues.routes.is_empty());
}

#[test]
fn the_purchase_machine_gets_every_step_function_arn() {
    let template = template();
    let machine = template
        .state_machines
        .iter()
        .find(|m| m.logical_id == "PurchaseStateMachine")
        .unwrap();
    assert_eq!(machine.name, "shop-purchase");
    assert_eq!(machine.workflow_type, WorkflowType::Standard);
    assert!(machine.definition.contains("\"StartAt\""));
    let capture = template.function("CapturePaymentFunction").unwrap();
    assert_eq!(
        machine.substitutions["CapturePaymentFunctionArn"],
        capture.arn
    );
    assert_eq!(
        capture.arn,
        "arn:aws:lambda:eu-west-1:123456789012:function:shop-CapturePaymentFunction"
    );
    for (placeholder, arn) in &machine.substitutions {
        assert!(
            template.functions.iter().any(|f| &f.arn == arn)
                || template.state_machines.iter().any(|m| &m.arn == arn),
            "{placeholder} = {arn} is no function or state machine of the template"
        );
    }
    let review = machine_of(&template, "ReviewStateMachine");
    assert_eq!(
        machine.substitutions["ReviewStateMachineArn"], review.arn,
        "the purchase machine hands holds to the review machine"
    );
}

fn machine_of<'a>(template: &'a Template, logical_id: &str) -> &'a StateMachine {
    template
        .state_machines
        .iter()
        .find(|m| m.logical_id == logical_id)
        .unwrap()
}

#[test]
fn the_review_machine_waits_for_a_decision_and_starts_the_purchase_machine_again() {
    let template = template();
    let review = machine_of(&template, "ReviewStateMachine");
    assert_eq!(review.name, "shop-review");
    assert_eq!(
        review.arn,
        "arn:aws:states:eu-west-1:123456789012:stateMachine:shop-review"
    );
    assert_eq!(review.workflow_type, WorkflowType::Standard);
    assert_eq!(
        review.substitutions["ContinuePurchaseFunctionArn"],
        template.function("ContinuePurchaseFunction").unwrap().arn
    );
    assert_eq!(
        review.substitutions["AwaitReviewFunctionArn"],
        template.function("AwaitReviewFunction").unwrap().arn
    );
    assert_eq!(
        review.substitutions["PurchaseStateMachineArn"],
        machine_of(&template, "PurchaseStateMachine").arn
    );
}

#[test]
fn workflow_type_express_makes_an_express_purchase_machine_named_apart() {
    let mut values = LOCAL_VALUES.to_vec();
    values.push(("WorkflowType", "EXPRESS"));
    let template = Template::load(&common::template_file(), &deployment(&values)).unwrap();
    let purchase = machine_of(&template, "PurchaseStateMachine");
    assert_eq!(purchase.workflow_type, WorkflowType::Express);
    assert_eq!(purchase.name, "shop-purchase-express");
    let create = template.function("CreatePurchaseFunction").unwrap();
    assert_eq!(create.environment["STATE_MACHINE_ARN"], purchase.arn);
    assert_eq!(create.environment["WORKFLOW_TYPE"], "EXPRESS");
    let review = machine_of(&template, "ReviewStateMachine");
    assert_eq!(review.workflow_type, WorkflowType::Standard);
    assert_eq!(
        review.substitutions["PurchaseStateMachineArn"],
        purchase.arn
    );
}

#[test]
fn the_api_has_its_stage_routes_and_gateway_responses() {
    let template = template();
    assert_eq!(template.api.stage, "dev");
    let missing = &template.api.gateway_responses["MISSING_AUTHENTICATION_TOKEN"];
    assert_eq!(missing.status, Some(404));
    assert!(missing.templates["application/json"].contains("$context.path"));
    assert_eq!(
        template.api.gateway_responses["REQUEST_TOO_LARGE"].status,
        Some(400)
    );
    let routes: Vec<(String, String)> = template
        .functions
        .iter()
        .flat_map(|f| f.routes.iter().map(|r| (r.method.clone(), r.path.clone())))
        .collect();
    assert!(routes.contains(&(
        "GET".into(),
        "/purchase-orchestrator/console/{proxy+}".into()
    )));
    assert!(routes.contains(&(
        "DELETE".into(),
        "/purchase-orchestrator/rules/{ruleSetName}".into()
    )));
    let tables: Vec<&str> = template.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        tables,
        vec![
            "shop-IdempotencyTable",
            "shop-ProductsTable",
            "shop-PurchasesTable",
            "shop-RuleSetsTable"
        ]
    );
    // IsProd is false for the default stage.
    assert_eq!(
        template.table("PurchasesTable").unwrap().properties["DeletionProtectionEnabled"],
        false
    );
}

#[test]
fn a_parameter_without_a_default_needs_a_local_value() {
    let error =
        Template::load(&common::template_file(), &deployment(&LOCAL_VALUES[1..])).unwrap_err();
    assert_eq!(error.at, "Parameters.JwtIssuer");
}
