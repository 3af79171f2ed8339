//! The Step Functions adapter against a real server speaking the Step
//! Functions API on 127.0.0.1 (moto, started by scripts/test.sh, whose
//! address is in `AWS_TEST_ENDPOINT`).

use aws_sdk_sfn::config::{BehaviorVersion, Credentials, Region};
use shared::sfn::StepFunctionsWorkflow;
use shared::workflow::{DEFINITION, Workflow, WorkflowError};

/// The moto endpoint, or `None` outside CI when it is not running.
fn endpoint() -> Option<String> {
    match std::env::var("AWS_TEST_ENDPOINT") {
        Ok(endpoint) => Some(endpoint),
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!(
                "AWS_TEST_ENDPOINT is not set: in CI these tests must run (scripts/test.sh starts moto)"
            )
        }
        Err(_) => {
            eprintln!("note: AWS_TEST_ENDPOINT is not set; skipping (scripts/test.sh starts moto)");
            None
        }
    }
}

fn client(endpoint: &str) -> aws_sdk_sfn::Client {
    let config = aws_sdk_sfn::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .build();
    aws_sdk_sfn::Client::from_conf(config)
}

async fn state_machine(client: &aws_sdk_sfn::Client) -> String {
    let definition = DEFINITION
        .replace("${", "arn:aws:lambda:us-east-1:123456789012:function:")
        .replace("FunctionArn}", "");
    let name = format!("purchase-{}", fastrand::u64(..));
    client
        .create_state_machine()
        .name(name)
        .definition(definition)
        .role_arn("arn:aws:iam::123456789012:role/purchase-workflow")
        .send()
        .await
        .unwrap()
        .state_machine_arn
}

#[tokio::test]
async fn starting_twice_runs_one_execution_named_after_the_purchase() {
    let Some(endpoint) = endpoint() else { return };
    let client = client(&endpoint);
    let arn = state_machine(&client).await;
    let workflow = StepFunctionsWorkflow::new(client.clone(), Some(arn.clone()));
    let purchase_id = format!("01a2-{}", fastrand::u32(..));

    workflow.start(&purchase_id).await.unwrap();
    // A retried start (SDK retry, client retry) must not run the purchase twice.
    workflow.start(&purchase_id).await.unwrap();

    let executions = client
        .list_executions()
        .state_machine_arn(&arn)
        .send()
        .await
        .unwrap()
        .executions;
    assert_eq!(executions.len(), 1);
    assert_eq!(executions[0].name, purchase_id);
    let described = client
        .describe_execution()
        .execution_arn(&executions[0].execution_arn)
        .send()
        .await
        .unwrap();
    let input: serde_json::Value = serde_json::from_str(described.input().unwrap()).unwrap();
    assert_eq!(input, serde_json::json!({ "purchaseId": purchase_id }));
}

#[tokio::test]
async fn a_function_without_the_state_machine_arn_cannot_start_executions() {
    let Some(endpoint) = endpoint() else { return };
    let workflow = StepFunctionsWorkflow::new(client(&endpoint), None);
    assert!(matches!(
        workflow.start("p-1").await,
        Err(WorkflowError::Internal(_))
    ));
}

#[tokio::test]
async fn an_unreachable_service_is_unavailable_not_internal() {
    // Nothing listens on port 9 of loopback: a dispatch failure, which the
    // API answers with 503 + Retry-After.
    let workflow = StepFunctionsWorkflow::new(
        client("http://127.0.0.1:9"),
        Some("arn:aws:states:us-east-1:123456789012:stateMachine:x".into()),
    );
    assert!(matches!(
        workflow.start("p-1").await,
        Err(WorkflowError::Unavailable(_))
    ));
}
