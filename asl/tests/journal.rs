//! Checkpoints, resuming after a restart, and `.waitForTaskToken` callbacks.

mod common;

use std::sync::Arc;
use std::time::Duration;

use asl::{Checkpoint, ExecutionOutcome, ExecutionStatus, InMemoryJournal, Runner, TaskTokenError};
use common::{Reply, Scripted, failed, machine, runner, succeeded};
use serde_json::{Value, json};
use tokio::sync::mpsc;

fn three_steps() -> Value {
    json!({
        "StartAt": "Prepare",
        "States": {
            "Prepare": {"Type": "Pass", "Result": "prepared", "ResultPath": "$.step", "Next": "Work"},
            "Work": {"Type": "Task", "Resource": "work", "ResultPath": "$.work", "Next": "Finish"},
            "Finish": {"Type": "Succeed"}
        }
    })
}

#[tokio::test]
async fn a_checkpoint_is_saved_before_each_state_and_at_the_end() {
    let (runner, journal) = runner(&three_steps(), Scripted::returning(json!("worked")));
    let output = succeeded(runner.start("exec-1", json!({"order": 1})).await);
    assert_eq!(
        output,
        json!({"order": 1, "step": "prepared", "work": "worked"})
    );

    let saves = journal.saves();
    let summary: Vec<(String, ExecutionStatus, Value)> = saves
        .iter()
        .map(|c| (c.state_name.clone(), c.status, c.state_input.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "Prepare".to_owned(),
                ExecutionStatus::Running,
                json!({"order": 1})
            ),
            (
                "Work".to_owned(),
                ExecutionStatus::Running,
                json!({"order": 1, "step": "prepared"})
            ),
            (
                "Finish".to_owned(),
                ExecutionStatus::Running,
                output.clone()
            ),
            (
                "Finish".to_owned(),
                ExecutionStatus::Succeeded,
                output.clone()
            ),
        ]
    );
    let last = journal.latest("exec-1").expect("latest checkpoint");
    assert_eq!(last.output, Some(output));
    assert!(saves.iter().all(|c| c.execution_name == "exec-1"
        && c.execution_input == json!({"order": 1})
        && c.started_at == saves[0].started_at));
}

#[tokio::test]
async fn a_failed_execution_records_its_error() {
    let (runner, journal) = runner(
        &three_steps(),
        Scripted::new(|_| Reply::fail("OutOfStock", "sku 42")),
    );
    let (error, cause) = failed(runner.start("exec-2", json!({})).await);
    assert_eq!((error.as_str(), cause.as_str()), ("OutOfStock", "sku 42"));
    let last = journal.latest("exec-2").expect("latest checkpoint");
    assert_eq!(last.status, ExecutionStatus::Failed);
    assert_eq!(last.state_name, "Work");
    assert_eq!(
        last.error,
        Some(asl::TaskFailure::new("OutOfStock", "sku 42"))
    );
}

#[tokio::test]
async fn resume_continues_from_the_checkpointed_state() {
    // First process: the task crashes the "process" (we simply stop after its checkpoint).
    let (first, first_journal) = runner(&three_steps(), Scripted::returning(json!("worked")));
    first.start("exec-3", json!({"order": 3})).await;
    let before_work = first_journal
        .saves()
        .into_iter()
        .find(|c| c.state_name == "Work")
        .expect("checkpoint before Work");

    // The checkpoint survives serialization, as a journal would store it.
    let stored = serde_json::to_string(&before_work).expect("serialize");
    let restored: Checkpoint = serde_json::from_str(&stored).expect("deserialize");
    assert_eq!(restored, before_work);

    // Second process: a new runner resumes; Prepare does not run again.
    let task = Scripted::returning(json!("worked again"));
    let (second, second_journal) = runner(&three_steps(), task.clone());
    let output = succeeded(second.resume(restored).await);
    assert_eq!(
        output,
        json!({"order": 3, "step": "prepared", "work": "worked again"})
    );
    assert_eq!(task.calls().len(), 1);
    assert_eq!(task.calls()[0].ctx.execution_name, "exec-3");
    let states: Vec<String> = second_journal
        .saves()
        .iter()
        .map(|c| c.state_name.clone())
        .collect();
    assert_eq!(states, ["Work", "Finish", "Finish"]);
    // The execution keeps its original start time and input.
    assert!(second_journal.saves().iter().all(
        |c| c.started_at == before_work.started_at && c.execution_input == json!({"order": 3})
    ));
}

#[tokio::test]
async fn resuming_a_finished_checkpoint_returns_its_outcome() {
    let (runner, journal) = runner(&three_steps(), Scripted::returning(json!("w")));
    let outcome = runner.start("exec-4", json!({})).await;
    let task = Scripted::returning(json!("never"));
    let (again, _) = common::runner(&three_steps(), task.clone());
    let last = journal.latest("exec-4").expect("latest");
    assert_eq!(again.resume(last).await, outcome);
    assert!(task.calls().is_empty());
}

fn approval() -> Value {
    json!({
        "StartAt": "Approve",
        "States": {
            "Approve": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
                "Parameters": {"token.$": "$$.Task.Token", "order.$": "$.order"},
                "ResultPath": "$.approval",
                "TimeoutSeconds": 3600,
                "Catch": [{"ErrorEquals": ["Declined"], "Next": "Declined", "ResultPath": "$.error"}],
                "End": true
            },
            "Declined": {"Type": "Fail", "Error": "Declined", "Cause": "approver said no"}
        }
    })
}

/// An invoker for callback tasks: forwards each token it is given to the test.
fn token_forwarder() -> (Arc<Scripted>, mpsc::UnboundedReceiver<(String, Value)>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let invoker = Scripted::new(move |call| {
        let token = call.ctx.task_token.clone().unwrap_or_default();
        // The token is both in the TaskContext and, via `$$.Task.Token`, in the payload.
        assert_eq!(call.input["token"], json!(token));
        let _ = sender.send((token, call.input.clone()));
        Reply::ok(json!("ignored: callback tasks complete via send_task_*"))
    });
    (invoker, receiver)
}

async fn next_token(receiver: &mut mpsc::UnboundedReceiver<(String, Value)>) -> String {
    tokio::time::timeout(Duration::from_secs(10), receiver.recv())
        .await
        .expect("the task was invoked in time")
        .expect("invoker alive")
        .0
}

fn spawn(runner: &Runner, name: &str, input: Value) -> tokio::task::JoinHandle<ExecutionOutcome> {
    let runner = runner.clone();
    let name = name.to_owned();
    tokio::spawn(async move { runner.start(&name, input).await })
}

#[tokio::test]
async fn wait_for_task_token_completes_via_send_task_success() {
    let (invoker, mut tokens) = token_forwarder();
    let (runner, journal) = runner(&approval(), invoker);
    let execution = spawn(&runner, "exec-5", json!({"order": 5}));
    let token = next_token(&mut tokens).await;

    // The token is checkpointed, so a restarted server could resume waiting on it.
    let saved = journal.latest("exec-5").expect("checkpoint");
    assert_eq!(saved.task_token.as_deref(), Some(token.as_str()));
    assert_eq!(saved.status, ExecutionStatus::Running);

    assert_eq!(
        runner.send_task_success("not-a-token", json!({})),
        Err(TaskTokenError::Unknown("not-a-token".to_owned()))
    );
    runner
        .send_task_success(&token, json!({"approved": true}))
        .expect("token accepted");
    let outcome = tokio::time::timeout(Duration::from_secs(10), execution)
        .await
        .expect("execution finished")
        .expect("no panic");
    assert_eq!(
        succeeded(outcome),
        json!({"order": 5, "approval": {"approved": true}})
    );
    // A token can only be used once.
    assert!(runner.send_task_success(&token, json!({})).is_err());
}

#[tokio::test]
async fn wait_for_task_token_fails_via_send_task_failure() {
    let (invoker, mut tokens) = token_forwarder();
    let (runner, _) = runner(&approval(), invoker);
    let execution = spawn(&runner, "exec-6", json!({"order": 6}));
    let token = next_token(&mut tokens).await;
    runner
        .send_task_failure(&token, "Declined", "over budget")
        .expect("token accepted");
    let outcome = tokio::time::timeout(Duration::from_secs(10), execution)
        .await
        .expect("execution finished")
        .expect("no panic");
    // Caught by the Declined catcher, which leads to the Fail state.
    assert_eq!(
        outcome,
        ExecutionOutcome::Failed {
            error: "Declined".to_owned(),
            cause: "approver said no".to_owned()
        }
    );
}

#[tokio::test]
async fn an_uncaught_send_task_failure_fails_the_execution_with_its_error() {
    let (invoker, mut tokens) = token_forwarder();
    let (runner, _) = runner(&approval(), invoker);
    let execution = spawn(&runner, "exec-7", json!({"order": 7}));
    let token = next_token(&mut tokens).await;
    runner
        .send_task_failure(&token, "PaymentGatewayDown", "503 from gateway")
        .expect("token accepted");
    let outcome = tokio::time::timeout(Duration::from_secs(10), execution)
        .await
        .expect("finished")
        .expect("no panic");
    assert_eq!(
        outcome,
        ExecutionOutcome::Failed {
            error: "PaymentGatewayDown".to_owned(),
            cause: "503 from gateway".to_owned()
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_callback_that_never_comes_times_out_and_its_token_expires() {
    let definition = json!({
        "StartAt": "Approve",
        "States": {
            "Approve": {
                "Type": "Task",
                "Resource": "approve.waitForTaskToken",
                "Parameters": {"token.$": "$$.Task.Token"},
                "TimeoutSeconds": 30,
                "End": true
            }
        }
    });
    let (invoker, mut tokens) = token_forwarder();
    let (runner, _) = runner(&definition, invoker);
    let outcome = runner.start("exec-8", json!({})).await;
    assert_eq!(failed(outcome).0, "States.Timeout");
    let token = next_token(&mut tokens).await;
    assert!(runner.send_task_success(&token, json!({})).is_err());
}

#[tokio::test]
async fn a_resumed_callback_task_waits_for_the_same_token() {
    // First process: the task is invoked and the token checkpointed; then the process dies.
    let (invoker, mut tokens) = token_forwarder();
    let journal = Arc::new(InMemoryJournal::new());
    let first = Runner::new(machine(&approval()), invoker, journal.clone());
    let dead = spawn(&first, "exec-9", json!({"order": 9}));
    let token = next_token(&mut tokens).await;
    dead.abort();
    let checkpoint = journal.latest("exec-9").expect("checkpoint");
    assert_eq!(checkpoint.task_token.as_deref(), Some(token.as_str()));

    // Second process: resume re-invokes the (idempotent) task with the same token, and
    // the callback the outside world sends with that token completes the execution.
    let (invoker, mut resumed_tokens) = token_forwarder();
    let second = Runner::new(
        machine(&approval()),
        invoker,
        Arc::new(InMemoryJournal::new()),
    );
    let resumed = {
        let second = second.clone();
        tokio::spawn(async move { second.resume(checkpoint).await })
    };
    assert_eq!(next_token(&mut resumed_tokens).await, token);
    second
        .send_task_success(&token, json!("approved"))
        .expect("same token accepted after resume");
    let outcome = tokio::time::timeout(Duration::from_secs(10), resumed)
        .await
        .expect("finished")
        .expect("no panic");
    assert_eq!(
        succeeded(outcome),
        json!({"order": 9, "approval": "approved"})
    );
}

#[tokio::test]
async fn runner_clones_share_the_token_registry() {
    let (invoker, mut tokens) = token_forwarder();
    let (runner, _) = runner(&approval(), invoker);
    let http_handle = runner.clone();
    let execution = spawn(&runner, "exec-10", json!({"order": 10}));
    let token = next_token(&mut tokens).await;
    http_handle
        .send_task_success(&token, json!(1))
        .expect("accepted through a clone");
    let outcome = tokio::time::timeout(Duration::from_secs(10), execution)
        .await
        .expect("finished")
        .expect("no panic");
    assert_eq!(succeeded(outcome)["approval"], json!(1));
}
