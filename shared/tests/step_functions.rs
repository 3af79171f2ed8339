//! The Step Functions adapter (`shared::adapters::sfn`), twice over:
//!
//! - against moto's server speaking the Step Functions API on 127.0.0.1
//!   (started by scripts/test.sh, address in `AWS_TEST_ENDPOINT`; skipped
//!   when unset, except in CI where that is an error): start, a repeated
//!   start, runs named after the purchase, describe, and what moto does with
//!   task tokens and redrives;
//! - against a scripted server in this file, answering what Step Functions
//!   answers and moto cannot (an unknown or expired task token, throttling,
//!   access denied, `ExecutionNotRedrivable`), which checks the adapter's one
//!   classification of errors and the requests it sends, and that with an
//!   `EXPRESS` purchase machine it never asks what Express cannot answer.
//!
//! What moto 5.1 does differently from Step Functions, as these tests found:
//! `SendTaskSuccess`/`SendTaskFailure` accept any token and do nothing
//! (Step Functions answers `InvalidToken`/`TaskDoesNotExist`), and
//! `RedriveExecution` is not implemented (a 500).

use std::sync::{Arc, Mutex};

use aws_sdk_sfn::config::retry::RetryConfig;
use aws_sdk_sfn::config::{BehaviorVersion, Credentials, Region};
use serde_json::{Value, json};
use shared::adapters::sfn::{StateMachines, StepFunctionsWorkflow};
use shared::domain::PurchaseId;
use shared::domain::purchase::{PurchaseStatus, TaskDecision};
use shared::ports::workflow::{
    DEFINITION, ExecutionState, Machine, REVIEW_DEFINITION, Run, Workflow, WorkflowError,
    WorkflowType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How many tests here need moto (each starts with `endpoint()`).
const MOTO_TESTS: usize = 4;

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
            // Once per run, past the harness's output capture (a direct
            // write, not `eprintln!`): how many tests pass without running.
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "\nnote: step_functions: {MOTO_TESTS} Step Functions tests pass WITHOUT RUNNING: AWS_TEST_ENDPOINT is not set \
                     (scripts/test.sh starts moto; with CI=true they fail instead)\n"
                );
            });
            None
        }
    }
}

/// A client for `endpoint`, as `shared::lambda::config::step_functions`
/// builds one with `STEP_FUNCTIONS_ENDPOINT` set, but without the SDK's
/// retries: every call here is one request, so errors surface at once and
/// request counts are exact. (Retries are the SDK's, configured in
/// `lambda::config::aws_config`; the adapter classifies what is left.)
fn client(endpoint: &str) -> aws_sdk_sfn::Client {
    let config = aws_sdk_sfn::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_sfn::Client::from_conf(config)
}

async fn state_machine(client: &aws_sdk_sfn::Client, definition: &str, kind: &str) -> String {
    // Every `${...}` a plausible ARN; moto does not run the definition.
    let definition = definition
        .replace("${", "arn:aws:lambda:us-east-1:123456789012:function:")
        .replace("Arn}", "");
    let name = format!("{kind}-{}", fastrand::u64(..));
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

/// The adapter on moto with fresh state machines, and its raw client and
/// the purchase machine's ARN.
async fn on_moto(endpoint: &str) -> (StepFunctionsWorkflow, aws_sdk_sfn::Client, String) {
    let client = client(endpoint);
    let arn = state_machine(&client, DEFINITION, "purchase").await;
    let review = state_machine(&client, REVIEW_DEFINITION, "review").await;
    let machines = StateMachines {
        purchase: Some(arn.clone()),
        review: Some(review),
        workflow_type: WorkflowType::Standard,
    };
    let workflow = StepFunctionsWorkflow::new(client.clone(), machines);
    (workflow, client, arn)
}

fn first_run(purchase_id: &PurchaseId) -> Run {
    Run::new(purchase_id.clone(), 1)
}

const DECISIONS: [TaskDecision; 3] = [
    TaskDecision::Resume {
        at: PurchaseStatus::Reserved,
    },
    TaskDecision::Rejected,
    TaskDecision::Stopped,
];

// ---------------------------------------------------------------- moto

#[tokio::test]
async fn starting_twice_runs_one_execution_per_run_named_after_the_purchase() {
    let Some(endpoint) = endpoint() else { return };
    let (workflow, client, arn) = on_moto(&endpoint).await;
    let purchase_id = PurchaseId::generate();

    workflow.start(&first_run(&purchase_id)).await.unwrap();
    // A retried start (SDK retry, client retry, the reconciler) must not run
    // the purchase twice: Step Functions (and moto) answer
    // ExecutionAlreadyExists, which the adapter takes as done.
    workflow.start(&first_run(&purchase_id)).await.unwrap();
    // A later run has a name of its own.
    let second = Run::new(purchase_id.clone(), 2);
    workflow.start(&second).await.unwrap();

    let mut executions = client
        .list_executions()
        .state_machine_arn(&arn)
        .send()
        .await
        .unwrap()
        .executions;
    executions.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<&str> = executions.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, [purchase_id.to_string(), format!("{purchase_id}-2")]);
    assert_eq!(
        executions[0].execution_arn,
        arn.replace(":stateMachine:", ":execution:") + ":" + purchase_id.as_str()
    );
    for execution in &executions {
        let described = client
            .describe_execution()
            .execution_arn(&execution.execution_arn)
            .send()
            .await
            .unwrap();
        let input: Value = serde_json::from_str(described.input().unwrap()).unwrap();
        assert_eq!(input, json!({ "purchaseId": purchase_id }));
    }
}

#[tokio::test]
async fn describe_knows_never_started_and_running_executions() {
    let Some(endpoint) = endpoint() else { return };
    let (workflow, _client, _arn) = on_moto(&endpoint).await;
    let purchase_id = PurchaseId::generate();

    let run = first_run(&purchase_id);
    assert_eq!(workflow.describe(Machine::Purchase, &run).await, Ok(None));
    workflow.start(&run).await.unwrap();
    // moto never runs the definition: the execution stays RUNNING.
    assert_eq!(
        workflow.describe(Machine::Purchase, &run).await,
        Ok(Some(ExecutionState::Running))
    );
    // Another purchase on the same state machine is still unknown, and so is
    // a review nobody started.
    let other = first_run(&PurchaseId::generate());
    assert_eq!(workflow.describe(Machine::Purchase, &other).await, Ok(None));
    assert_eq!(workflow.describe(Machine::Review, &run).await, Ok(None));
}

#[tokio::test]
async fn moto_accepts_any_task_token() {
    let Some(endpoint) = endpoint() else { return };
    let (workflow, _client, _arn) = on_moto(&endpoint).await;
    // Step Functions answers InvalidToken for a token it never issued
    // (TaskGone: see `an_unknown_or_expired_task_is_gone` below). moto's
    // SendTaskSuccess and SendTaskFailure are no-ops that accept anything,
    // so all this shows is that the adapter's requests are well-formed.
    for decision in DECISIONS {
        assert_eq!(
            workflow.notify("no-such-token", decision).await,
            Ok(()),
            "{decision:?}"
        );
    }
}

#[tokio::test]
async fn moto_cannot_redrive() {
    let Some(endpoint) = endpoint() else { return };
    let (workflow, _client, _arn) = on_moto(&endpoint).await;
    let running = first_run(&PurchaseId::generate());
    workflow.start(&running).await.unwrap();
    // moto 5.1 does not implement RedriveExecution and answers 500, which
    // the adapter reads as "may succeed later". Step Functions answers
    // ExecutionNotRedrivable for a running execution (the adapter: a no-op)
    // and ExecutionDoesNotExist for a never-started one (a failure): both
    // are checked against the scripted server below. If moto learns to
    // redrive, this test says so.
    for run in [running, first_run(&PurchaseId::generate())] {
        match workflow.redrive(&run).await {
            Err(WorkflowError::Unavailable(detail)) => {
                assert!(detail.contains("500"), "{detail}");
            }
            other => panic!("moto learned RedriveExecution? it answered {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_function_without_the_state_machine_arn_cannot_start_executions() {
    // Fails before any request: no server needed.
    let workflow =
        StepFunctionsWorkflow::new(client("http://127.0.0.1:9"), StateMachines::default());
    let run = first_run(&PurchaseId::new("p-1"));
    assert!(matches!(
        workflow.start(&run).await,
        Err(WorkflowError::Failed(_))
    ));
    for machine in [Machine::Purchase, Machine::Review] {
        assert!(matches!(
            workflow.describe(machine, &run).await,
            Err(WorkflowError::Failed(_))
        ));
    }
    assert!(matches!(
        workflow.redrive(&run).await,
        Err(WorkflowError::Failed(_))
    ));
}

#[tokio::test]
async fn an_unreachable_service_is_unavailable_not_failed() {
    // Nothing listens on port 9 of loopback: a dispatch failure, which the
    // API answers with 503 + Retry-After.
    let workflow = StepFunctionsWorkflow::new(
        client("http://127.0.0.1:9"),
        StateMachines {
            purchase: Some("arn:aws:states:us-east-1:123456789012:stateMachine:x".into()),
            ..StateMachines::default()
        },
    );
    let run = first_run(&PurchaseId::new("p-1"));
    assert!(matches!(
        workflow.start(&run).await,
        Err(WorkflowError::Unavailable(_))
    ));
    assert!(matches!(
        workflow.notify("token", DECISIONS[0]).await,
        Err(WorkflowError::Unavailable(_))
    ));
}

// ---------------------------------------------------------------- scripted

/// One request as the scripted server saw it: the operation
/// (`X-Amz-Target: AWSStepFunctions.<Operation>`) and the JSON body.
#[derive(Debug, Clone)]
struct Seen {
    operation: String,
    body: Value,
}

/// A server on 127.0.0.1 speaking just enough of the Step Functions JSON
/// protocol: it answers each request with the next scripted (status, body)
/// and records what it was asked.
struct ScriptedSfn {
    endpoint: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptedSfn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An error answer in the JSON protocol.
fn error(status: u16, code: &str) -> (u16, Value) {
    (
        status,
        json!({ "__type": format!("com.amazonaws.swf.service.v2.model#{code}"), "message": format!("scripted {code}") }),
    )
}

fn ok(body: Value) -> (u16, Value) {
    (200, body)
}

fn execution(status: &str) -> (u16, Value) {
    ok(json!({
        "executionArn": format!("{MACHINE_PREFIX}execution:purchase:p-1"),
        "stateMachineArn": MACHINE,
        "status": status,
        "startDate": 1_700_000_000,
    }))
}

const MACHINE_PREFIX: &str = "arn:aws:states:us-east-1:123456789012:";
const MACHINE: &str = "arn:aws:states:us-east-1:123456789012:stateMachine:purchase";
const REVIEW_MACHINE: &str = "arn:aws:states:us-east-1:123456789012:stateMachine:review";

impl ScriptedSfn {
    async fn start(answers: Vec<(u16, Value)>) -> ScriptedSfn {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(answers.into_iter()));
        let task = tokio::spawn({
            let seen = seen.clone();
            async move {
                while let Ok((mut socket, _)) = listener.accept().await {
                    let (seen, answers) = (seen.clone(), answers.clone());
                    tokio::spawn(async move {
                        let Some((target, body)) = read_request(&mut socket).await else {
                            return;
                        };
                        seen.lock().unwrap().push(Seen {
                            operation: target.trim_start_matches("AWSStepFunctions.").to_owned(),
                            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                        });
                        let next = answers.lock().unwrap().next();
                        let (status, body) =
                            next.unwrap_or_else(|| error(500, "UnscriptedRequest"));
                        let body = body.to_string();
                        let response = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = socket.write_all(response.as_bytes()).await;
                        let _ = socket.shutdown().await;
                    });
                }
            }
        });
        ScriptedSfn {
            endpoint,
            seen,
            task,
        }
    }

    fn workflow(&self) -> StepFunctionsWorkflow {
        self.workflow_of(WorkflowType::Standard)
    }

    fn workflow_of(&self, workflow_type: WorkflowType) -> StepFunctionsWorkflow {
        let machines = StateMachines {
            purchase: Some(MACHINE.to_owned()),
            review: Some(REVIEW_MACHINE.to_owned()),
            workflow_type,
        };
        StepFunctionsWorkflow::new(client(&self.endpoint), machines)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn operations(&self) -> Vec<String> {
        self.seen().into_iter().map(|seen| seen.operation).collect()
    }
}

/// Reads one HTTP/1.1 request: its `X-Amz-Target` and its body.
async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut data = Vec::new();
    let mut buffer = [0u8; 4096];
    let header_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => return None,
            Ok(read) => data.extend_from_slice(&buffer[..read]),
        }
    };
    let head = String::from_utf8_lossy(&data[..header_end]).to_string();
    let header = |name: &str| {
        head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while data.len() < header_end + length {
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => return None,
            Ok(read) => data.extend_from_slice(&buffer[..read]),
        }
    }
    Some((
        header("x-amz-target").unwrap_or_default(),
        data[header_end..header_end + length].to_vec(),
    ))
}

#[tokio::test]
async fn notify_sends_the_decision_the_definition_expects() {
    let server = ScriptedSfn::start(vec![ok(json!({})), ok(json!({})), ok(json!({}))]).await;
    let workflow = server.workflow();
    for decision in DECISIONS {
        workflow.notify("token-1", decision).await.unwrap();
    }
    let seen = server.seen();
    assert_eq!(
        server.operations(),
        ["SendTaskSuccess", "SendTaskFailure", "SendTaskFailure"]
    );
    assert_eq!(seen[0].body["taskToken"], "token-1");
    let output: Value = serde_json::from_str(seen[0].body["output"].as_str().unwrap()).unwrap();
    assert_eq!(output, json!({ "resumeAt": "RESERVED" }));
    // The error names the review machine's AwaitReview state catches.
    assert_eq!(seen[1].body["taskToken"], "token-1");
    assert_eq!(seen[1].body["error"], "PurchaseRejected");
    assert_eq!(seen[2].body["error"], "PurchaseStopped");
    assert!(REVIEW_DEFINITION.contains("\"PurchaseRejected\""));
    assert!(REVIEW_DEFINITION.contains("\"PurchaseStopped\""));
}

#[tokio::test]
async fn an_unknown_or_expired_task_is_gone() {
    for code in ["TaskDoesNotExist", "TaskTimedOut", "InvalidToken"] {
        for decision in DECISIONS {
            let server = ScriptedSfn::start(vec![error(400, code)]).await;
            let result = server.workflow().notify("token-1", decision).await;
            assert!(
                matches!(result, Err(WorkflowError::TaskGone(_))),
                "{code} on {decision:?}: {result:?}"
            );
        }
    }
}

#[tokio::test]
async fn throttling_and_outages_are_unavailable() {
    let cases = [
        error(400, "ThrottlingException"),
        error(400, "KmsThrottlingException"),
        error(500, "InternalFailure"),
        error(503, "ServiceUnavailable"),
        // A 5xx with a code nobody listed is still an outage.
        error(502, "SomethingNew"),
    ];
    for answer in cases {
        let code = answer.1["__type"].clone();
        for operation in ["start", "describe", "notify", "redrive"] {
            let server = ScriptedSfn::start(vec![answer.clone()]).await;
            let workflow = server.workflow();
            let run = first_run(&PurchaseId::new("p-1"));
            let result = match operation {
                "start" => workflow.start(&run).await,
                "describe" => workflow.describe(Machine::Purchase, &run).await.map(|_| ()),
                "notify" => workflow.notify("token-1", DECISIONS[1]).await,
                _ => workflow.redrive(&run).await,
            };
            assert!(
                matches!(result, Err(WorkflowError::Unavailable(_))),
                "{code} on {operation}: {result:?}"
            );
        }
    }
}

#[tokio::test]
async fn other_errors_are_failures_never_a_gone_task() {
    for code in [
        "AccessDeniedException",
        "KmsAccessDeniedException",
        "KmsInvalidStateException",
        "ValidationException",
        "InvalidOutput",
        "UnrecognizedClientException",
    ] {
        for decision in DECISIONS {
            let server = ScriptedSfn::start(vec![error(400, code)]).await;
            let result = server.workflow().notify("token-1", decision).await;
            assert!(
                matches!(result, Err(WorkflowError::Failed(_))),
                "{code} on {decision:?}: {result:?}"
            );
        }
        let server = ScriptedSfn::start(vec![error(400, code)]).await;
        let result = server
            .workflow()
            .start(&first_run(&PurchaseId::new("p-1")))
            .await;
        assert!(
            matches!(result, Err(WorkflowError::Failed(_))),
            "{code} on start: {result:?}"
        );
    }
}

#[tokio::test]
async fn start_names_the_execution_after_the_run_and_ignores_a_duplicate() {
    let server = ScriptedSfn::start(vec![
        ok(json!({ "executionArn": format!("{MACHINE_PREFIX}execution:purchase:p-1"), "startDate": 1_700_000_000 })),
        error(400, "ExecutionAlreadyExists"),
        error(400, "StateMachineDoesNotExist"),
        ok(json!({ "executionArn": format!("{MACHINE_PREFIX}execution:purchase:p-1-3"), "startDate": 1_700_000_000 })),
    ])
    .await;
    let workflow = server.workflow();
    let run = first_run(&PurchaseId::new("p-1"));
    assert_eq!(workflow.start(&run).await, Ok(()));
    assert_eq!(workflow.start(&run).await, Ok(()), "already started: done");
    assert!(matches!(
        workflow.start(&run).await,
        Err(WorkflowError::Failed(_))
    ));
    workflow
        .start(&Run::new(PurchaseId::new("p-1"), 3))
        .await
        .unwrap();
    let seen = server.seen();
    assert_eq!(seen[0].operation, "StartExecution");
    assert_eq!(seen[0].body["stateMachineArn"], MACHINE);
    assert_eq!(seen[0].body["name"], "p-1");
    let input: Value = serde_json::from_str(seen[0].body["input"].as_str().unwrap()).unwrap();
    assert_eq!(input, json!({ "purchaseId": "p-1" }));
    assert_eq!(seen[3].body["name"], "p-1-3");
    let input: Value = serde_json::from_str(seen[3].body["input"].as_str().unwrap()).unwrap();
    assert_eq!(
        input,
        json!({ "purchaseId": "p-1" }),
        "every run the same input"
    );
}

#[tokio::test]
async fn describe_reads_every_status() {
    let cases = [
        ("RUNNING", Some(ExecutionState::Running)),
        ("PENDING_REDRIVE", Some(ExecutionState::Running)),
        ("SUCCEEDED", Some(ExecutionState::Succeeded)),
        ("FAILED", Some(ExecutionState::Failed)),
        ("TIMED_OUT", Some(ExecutionState::Failed)),
        ("ABORTED", Some(ExecutionState::Failed)),
    ];
    let run = first_run(&PurchaseId::new("p-1"));
    for (status, expected) in cases {
        let server = ScriptedSfn::start(vec![execution(status)]).await;
        let described = server.workflow().describe(Machine::Purchase, &run).await;
        assert_eq!(described, Ok(expected), "{status}");
        let seen = server.seen();
        assert_eq!(seen[0].operation, "DescribeExecution");
        assert_eq!(
            seen[0].body["executionArn"],
            format!("{MACHINE_PREFIX}execution:purchase:p-1")
        );
    }
    // A review: the review machine's execution of that run's name.
    let second = Run::new(PurchaseId::new("p-1"), 2);
    let server = ScriptedSfn::start(vec![execution("RUNNING")]).await;
    let described = server.workflow().describe(Machine::Review, &second).await;
    assert_eq!(described, Ok(Some(ExecutionState::Running)));
    assert_eq!(
        server.seen()[0].body["executionArn"],
        format!("{MACHINE_PREFIX}execution:review:p-1-2")
    );
    let server = ScriptedSfn::start(vec![error(400, "ExecutionDoesNotExist")]).await;
    assert_eq!(
        server.workflow().describe(Machine::Purchase, &run).await,
        Ok(None)
    );
}

#[tokio::test]
async fn redrive_is_done_once_and_refused_while_running_or_not_redrivable() {
    let id = first_run(&PurchaseId::new("p-1"));

    let server = ScriptedSfn::start(vec![ok(json!({ "redriveDate": 1_700_000_000 }))]).await;
    assert_eq!(server.workflow().redrive(&id).await, Ok(()));
    let seen = server.seen();
    assert_eq!(seen[0].operation, "RedriveExecution");
    assert_eq!(
        seen[0].body["executionArn"],
        format!("{MACHINE_PREFIX}execution:purchase:p-1")
    );

    // Not redrivable because it still runs (ending, or redriven already):
    // not now, retry in a moment.
    let server = ScriptedSfn::start(vec![
        error(400, "ExecutionNotRedrivable"),
        execution("RUNNING"),
    ])
    .await;
    let result = server.workflow().redrive(&id).await;
    assert!(
        matches!(result, Err(WorkflowError::Unavailable(_))),
        "{result:?}"
    );
    assert_eq!(
        server.operations(),
        ["RedriveExecution", "DescribeExecution"]
    );

    // Not redrivable for any other reason: refused.
    for status in ["SUCCEEDED", "FAILED", "ABORTED"] {
        let server = ScriptedSfn::start(vec![
            error(400, "ExecutionNotRedrivable"),
            execution(status),
        ])
        .await;
        let result = server.workflow().redrive(&id).await;
        assert!(
            matches!(result, Err(WorkflowError::NotAllowed(_))),
            "{status}: {result:?}"
        );
    }

    // Never started: Step Functions answers ExecutionDoesNotExist, which the
    // adapter does not single out, so it is a failure (the API only redrives
    // a purchase that needs attention, whose execution must exist).
    let server = ScriptedSfn::start(vec![error(400, "ExecutionDoesNotExist")]).await;
    let result = server.workflow().redrive(&id).await;
    assert!(
        matches!(result, Err(WorkflowError::Failed(_))),
        "{result:?}"
    );
}

/// An `EXPRESS` purchase machine: runs are started as on `STANDARD`, but
/// never described or redriven (Step Functions refuses: no history), so the
/// adapter does not ask; reviews (always `STANDARD`) are described.
#[tokio::test]
async fn express_runs_are_started_but_never_described_or_redriven() {
    let server = ScriptedSfn::start(vec![
        ok(json!({ "executionArn": format!("{MACHINE_PREFIX}express:purchase:p-1-2:x"), "startDate": 1_700_000_000 })),
        execution("RUNNING"),
    ])
    .await;
    let workflow = server.workflow_of(WorkflowType::Express);
    assert_eq!(workflow.workflow_type(), WorkflowType::Express);
    let run = Run::new(PurchaseId::new("p-1"), 2);
    workflow.start(&run).await.unwrap();
    assert!(matches!(
        workflow.describe(Machine::Purchase, &run).await,
        Err(WorkflowError::Failed(_))
    ));
    assert!(matches!(
        workflow.redrive(&run).await,
        Err(WorkflowError::NotAllowed(_))
    ));
    assert_eq!(
        workflow.describe(Machine::Review, &run).await,
        Ok(Some(ExecutionState::Running))
    );
    assert_eq!(server.operations(), ["StartExecution", "DescribeExecution"]);
    assert_eq!(server.seen()[0].body["name"], "p-1-2");
    assert_eq!(
        server.seen()[1].body["executionArn"],
        format!("{MACHINE_PREFIX}execution:review:p-1-2")
    );
}

#[test]
fn the_count_of_tests_needing_moto_is_right() {
    let source = include_str!("step_functions.rs");
    let needle = ["let Some(endpoint) = ", "endpoint() else"].concat();
    assert_eq!(source.matches(&needle).count(), MOTO_TESTS);
}
