//! The Step Functions endpoint as the AWS SDK (aws-sdk-sfn) sees it: the
//! operations' shapes and AWS's error names, and the project's own adapter
//! (`shared::adapters::sfn`) working against it unchanged. State machines of
//! Pass, Wait and Fail states only, so no function is involved (the purchase
//! flows through the real functions are the end-to-end suites).

mod common;

use std::time::{Duration, Instant};

use aws_local::AwsLocal;
use aws_sdk_sfn::config::retry::RetryConfig;
use aws_sdk_sfn::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sfn::error::ProvideErrorMetadata;
use aws_sdk_sfn::types::{ExecutionRedriveStatus, ExecutionStatus};
use shared::adapters::sfn::{StateMachines, StepFunctionsWorkflow};
use shared::domain::PurchaseId;
use shared::domain::purchase::{PurchaseStatus, TaskDecision};
use shared::ports::workflow::{ExecutionState, Machine, Run, Workflow, WorkflowError};

const TEMPLATE: &str = r#"
Resources:
  Waits:
    Type: AWS::Serverless::StateMachine
    Properties:
      Name: !Sub ${AWS::StackName}-waits
      Definition:
        StartAt: Wait
        States:
          Wait: {Type: Wait, Seconds: 100000, End: true}
  Quick:
    Type: AWS::Serverless::StateMachine
    Properties:
      Name: !Sub ${AWS::StackName}-quick
      Definition:
        StartAt: Done
        States:
          Done: {Type: Pass, Result: {done: true}, End: true}
  Fails:
    Type: AWS::Serverless::StateMachine
    Properties:
      Name: !Sub ${AWS::StackName}-fails
      Definition:
        StartAt: Broken
        States:
          Broken: {Type: Fail, Error: Boom, Cause: it broke}
  Parent:
    Type: AWS::Serverless::StateMachine
    Properties:
      Name: !Sub ${AWS::StackName}-parent
      DefinitionSubstitutions:
        ChildArn: !Ref Quick
        FastArn: !Ref Fast
      Definition:
        StartAt: StartChild
        States:
          StartChild:
            Type: Task
            Resource: arn:aws:states:::states:startExecution
            Parameters:
              StateMachineArn: "${ChildArn}"
              Name.$: $.child
              Input: {from: parent}
            ResultPath: $.child
            Next: StartExpress
          StartExpress:
            Type: Task
            Resource: arn:aws:states:::states:startExecution
            Parameters:
              StateMachineArn: "${FastArn}"
              Input.$: $
            ResultSelector: {"arn.$": $.ExecutionArn}
            ResultPath: $.express
            End: true
  Fast:
    Type: AWS::Serverless::StateMachine
    Properties:
      Name: !Sub ${AWS::StackName}-fast
      Type: EXPRESS
      Definition:
        StartAt: Done
        States:
          Done: {Type: Pass, End: true}
"#;

struct Endpoint {
    shape: AwsLocal,
    client: aws_sdk_sfn::Client,
    stack: String,
    _dir: tempfile::TempDir,
}

impl Endpoint {
    async fn start() -> Endpoint {
        let dir = tempfile::tempdir().unwrap();
        let template = dir.path().join("template.yaml");
        std::fs::write(&template, TEMPLATE).unwrap();
        // No tables and no functions: nothing is asked of DynamoDB.
        let options = common::options(template, dir.path().to_path_buf(), "http://127.0.0.1:9");
        let stack = options.stack_name.clone();
        let shape = AwsLocal::start(options).await.unwrap();
        // As shared::lambda::config::step_functions builds it, without the
        // SDK's retries: every call here is one request.
        let client = aws_sdk_sfn::Client::from_conf(
            aws_sdk_sfn::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .endpoint_url(&shape.states_url)
                .region(Region::new("us-east-1"))
                .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
                .retry_config(RetryConfig::disabled())
                .build(),
        );
        Endpoint {
            shape,
            client,
            stack,
            _dir: dir,
        }
    }

    fn machine(&self, name: &str) -> String {
        format!(
            "arn:aws:states:us-east-1:{}:stateMachine:{}-{name}",
            aws_local::ACCOUNT_ID,
            self.stack
        )
    }

    fn execution(&self, machine: &str, name: &str) -> String {
        format!(
            "arn:aws:states:us-east-1:{}:execution:{}-{machine}:{name}",
            aws_local::ACCOUNT_ID,
            self.stack
        )
    }

    async fn start_execution(&self, machine: &str, name: &str, input: &str) -> String {
        self.client
            .start_execution()
            .state_machine_arn(self.machine(machine))
            .name(name)
            .input(input)
            .send()
            .await
            .unwrap()
            .execution_arn()
            .to_owned()
    }

    /// Polls until the execution has stopped running.
    async fn ended(
        &self,
        arn: &str,
    ) -> aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let described = self
                .client
                .describe_execution()
                .execution_arn(arn)
                .send()
                .await
                .unwrap();
            if *described.status() != ExecutionStatus::Running {
                return described;
            }
            assert!(Instant::now() < deadline, "{arn} never ended");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

const UNKNOWN_TOKEN: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

#[tokio::test]
async fn the_sdk_reads_aws_error_names() {
    let e = Endpoint::start().await;
    let code = |error: &dyn ProvideErrorMetadata| error.code().unwrap_or_default().to_owned();

    let error = e
        .client
        .start_execution()
        .state_machine_arn(e.machine("nothing"))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(error.is_state_machine_does_not_exist(), "{error:?}");
    let error = e
        .client
        .start_execution()
        .state_machine_arn("not-an-arn")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(error.is_invalid_arn(), "{error:?}");
    let error = e
        .client
        .start_execution()
        .state_machine_arn(e.machine("waits"))
        .name("no spaces allowed")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(error.is_invalid_name(), "{error:?}");
    let error = e
        .client
        .start_execution()
        .state_machine_arn(e.machine("waits"))
        .input("{not json")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(error.is_invalid_execution_input(), "{error:?}");

    // One execution per name: the same input while it runs is the same
    // execution; anything else is refused.
    let first = e.start_execution("waits", "e-1", r#"{"a":1}"#).await;
    assert_eq!(first, e.execution("waits", "e-1"));
    assert_eq!(e.start_execution("waits", "e-1", r#"{"a":1}"#).await, first);
    let error = e
        .client
        .start_execution()
        .state_machine_arn(e.machine("waits"))
        .name("e-1")
        .input(r#"{"a":2}"#)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(error.is_execution_already_exists(), "{error:?}");

    let error = e
        .client
        .describe_execution()
        .execution_arn(e.execution("waits", "never"))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(error.is_execution_does_not_exist(), "{error:?}");

    let error = e
        .client
        .redrive_execution()
        .execution_arn(&first)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(error.is_execution_not_redrivable(), "running: {error:?}");

    for token in ["not-a-token", ""] {
        let error = e
            .client
            .send_task_success()
            .task_token(token)
            .output("{}")
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(error.is_invalid_token(), "{token:?}: {error:?}");
    }
    let error = e
        .client
        .send_task_success()
        .task_token(UNKNOWN_TOKEN)
        .output("{}")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(error.is_task_does_not_exist(), "{error:?}");
    let error = e
        .client
        .send_task_failure()
        .task_token(UNKNOWN_TOKEN)
        .error("PurchaseRejected")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(error.is_task_does_not_exist(), "{error:?}");
    let error = e
        .client
        .send_task_heartbeat()
        .task_token(UNKNOWN_TOKEN)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(error.is_task_does_not_exist(), "{error:?}");

    // Express executions are not recorded: nothing to describe.
    let express = e
        .client
        .start_execution()
        .state_machine_arn(e.machine("fast"))
        .name("x")
        .send()
        .await
        .unwrap()
        .execution_arn()
        .to_owned();
    let error = e
        .client
        .describe_execution()
        .execution_arn(&express)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(code(&error), "InvalidArn", "{error:?}");
    e.shape.shutdown().await;
}

#[tokio::test]
async fn executions_run_end_and_are_redriven_as_described() {
    let e = Endpoint::start().await;
    let arn = e
        .start_execution("quick", "q-1", r#"{"purchaseId":"p"}"#)
        .await;
    let done = e.ended(&arn).await;
    assert_eq!(*done.status(), ExecutionStatus::Succeeded);
    assert_eq!(done.name(), Some("q-1"));
    assert_eq!(done.state_machine_arn(), e.machine("quick"));
    assert_eq!(done.input(), Some(r#"{"purchaseId":"p"}"#));
    assert_eq!(done.output(), Some(r#"{"done":true}"#));
    assert!(done.stop_date().unwrap() >= done.start_date());
    let error = e
        .client
        .redrive_execution()
        .execution_arn(&arn)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(error.is_execution_not_redrivable(), "succeeded: {error:?}");

    let arn = e.start_execution("fails", "f-1", "{}").await;
    let failed = e.ended(&arn).await;
    assert_eq!(*failed.status(), ExecutionStatus::Failed);
    assert_eq!(
        (failed.error(), failed.cause()),
        (Some("Boom"), Some("it broke"))
    );
    assert_eq!(
        failed.redrive_status(),
        Some(&ExecutionRedriveStatus::Redrivable)
    );
    e.client
        .redrive_execution()
        .execution_arn(&arn)
        .send()
        .await
        .unwrap();
    assert_eq!(
        e.ended(&arn).await.error(),
        Some("Boom"),
        "redriven at the state that failed"
    );

    // Express names may be reused: each start is an execution of its own.
    let start = || {
        e.client
            .start_execution()
            .state_machine_arn(e.machine("fast"))
            .name("same")
            .send()
    };
    let one = start().await.unwrap().execution_arn().to_owned();
    let two = start().await.unwrap().execution_arn().to_owned();
    assert_ne!(one, two);
    assert!(one.contains(":express:"), "{one}");
    e.shape.shutdown().await;
}

/// The adapter as a function configured with `machine` as its purchase
/// machine (`STATE_MACHINE_ARN`) would build it.
fn adapter(e: &Endpoint, machine: &str) -> StepFunctionsWorkflow {
    StepFunctionsWorkflow::new(
        e.client.clone(),
        StateMachines {
            purchase: Some(e.machine(machine)),
            ..StateMachines::default()
        },
    )
}

#[tokio::test]
async fn the_projects_step_functions_adapter_works_against_it_unchanged() {
    let e = Endpoint::start().await;
    let waits = adapter(&e, "waits");
    let running = Run::new(PurchaseId::new("0197a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b"), 1);
    waits.start(&running).await.unwrap();
    waits.start(&running).await.unwrap();
    assert_eq!(
        waits.describe(Machine::Purchase, &running).await.unwrap(),
        Some(ExecutionState::Running)
    );
    let never = Run::new(PurchaseId::new("0197a1b2-c3d4-7e5f-8a6b-000000000000"), 1);
    assert_eq!(
        waits.describe(Machine::Purchase, &never).await.unwrap(),
        None
    );
    assert!(matches!(
        waits.redrive(&running).await,
        Err(WorkflowError::Unavailable(_))
    ));
    for token in [UNKNOWN_TOKEN, "not-a-token"] {
        let resume = TaskDecision::Resume {
            at: PurchaseStatus::Reserved,
        };
        assert!(
            matches!(
                waits.notify(token, resume).await,
                Err(WorkflowError::TaskGone(_))
            ),
            "{token}"
        );
        assert!(matches!(
            waits.notify(token, TaskDecision::Rejected).await,
            Err(WorkflowError::TaskGone(_))
        ));
    }

    let quick = adapter(&e, "quick");
    quick.start(&never).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while quick.describe(Machine::Purchase, &never).await.unwrap()
        != Some(ExecutionState::Succeeded)
    {
        assert!(Instant::now() < deadline, "the execution never succeeded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(matches!(
        quick.redrive(&never).await,
        Err(WorkflowError::NotAllowed(_))
    ));
    // A closed execution's name is taken: the adapter reads
    // ExecutionAlreadyExists as "started already".
    quick.start(&never).await.unwrap();
    e.shape.shutdown().await;
}

#[tokio::test]
async fn a_task_starts_another_machines_execution() {
    let e = Endpoint::start().await;
    let parent = e
        .start_execution("parent", "p-1", r#"{"child":"c-1"}"#)
        .await;
    let done = e.ended(&parent).await;
    assert_eq!(*done.status(), ExecutionStatus::Succeeded, "{done:?}");
    let output: serde_json::Value = serde_json::from_str(done.output().unwrap()).unwrap();
    let child = output["child"]["ExecutionArn"].as_str().unwrap();
    assert_eq!(child, e.execution("quick", "c-1"));
    assert!(output["child"]["StartDate"].is_string(), "{output}");
    assert!(
        output["express"]["arn"]
            .as_str()
            .unwrap()
            .contains(":express:")
    );
    let child = e.ended(child).await;
    assert_eq!(*child.status(), ExecutionStatus::Succeeded);
    assert_eq!(child.input(), Some(r#"{"from":"parent"}"#));

    // A second child of the same name is refused, under the name Retry and
    // Catch see for the service integration.
    let again = e
        .start_execution("parent", "p-2", r#"{"child":"c-1"}"#)
        .await;
    let failed = e.ended(&again).await;
    assert_eq!(*failed.status(), ExecutionStatus::Failed);
    assert_eq!(
        failed.error(),
        Some("StepFunctions.ExecutionAlreadyExistsException")
    );
    e.shape.shutdown().await;
}
