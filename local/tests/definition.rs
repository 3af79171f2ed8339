//! The contract between the two definitions (`statemachine/purchase.asl.json`
//! and `review.asl.json`) and the code: error names, task resources,
//! timeouts and catch-alls, and the hand-over between the machines.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use shared::ports::workflow::{DEFINITION, REVIEW_DEFINITION};
use shared::steps::{Step, StepError};

/// The Step Functions integration the machines start each other with.
const START_EXECUTION: &str = "arn:aws:states:::states:startExecution";

/// The error a repeated start of a `STANDARD` execution name gets.
const ALREADY_EXISTS: &str = "StepFunctions.ExecutionAlreadyExistsException";

/// The error a function that ran past its `Timeout` reaches the
/// `lambda:invoke` integration with: Lambda answers `FunctionError:
/// Unhandled` with `{"errorType": "Sandbox.Timedout", "errorMessage":
/// "RequestId: ... Error: Task timed out after N.00 seconds"}`, and Step
/// Functions names the error by `errorType`. (Step Functions' guide still
/// says a timeout is `Lambda.Unknown`, the name for a payload without an
/// `errorType`; the transient retriers list both.)
const LAMBDA_TIMEOUT: &str = "Sandbox.Timedout";

const MACHINES: [(&str, &str); 2] = [
    ("purchase.asl.json", DEFINITION),
    ("review.asl.json", REVIEW_DEFINITION),
];

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

fn states_of(text: &str) -> Vec<(String, Value)> {
    parse(text)["States"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Every state of both machines, with the file it is in.
fn states() -> Vec<(&'static str, String, Value)> {
    MACHINES
        .into_iter()
        .flat_map(|(file, text)| {
            states_of(text)
                .into_iter()
                .map(move |(name, state)| (file, name, state))
        })
        .collect()
}

fn is_start_execution(state: &Value) -> bool {
    state["Resource"] == START_EXECUTION
}

/// Names the definitions' Retry/Catch use that our code must raise
/// (`States.*`, `Lambda.*` and `StepFunctions.*` come from Step Functions,
/// `Sandbox.Timedout` from Lambda: see [`LAMBDA_TIMEOUT`]).
fn our_error_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (_, text) in MACHINES {
        let machine =
            asl::StateMachine::from_json(text, &local::workflow::local_substitutions()).unwrap();
        names.extend(machine.error_names().into_iter().filter(|name| {
            !name.starts_with("States.")
                && !name.starts_with("Lambda.")
                && !name.starts_with("StepFunctions.")
                && name != LAMBDA_TIMEOUT
        }));
    }
    names
}

#[test]
fn every_error_the_definitions_handle_is_raised_by_a_step() {
    let raised: BTreeSet<String> = StepError::NAMES.iter().map(|n| n.to_string()).collect();
    let handled = our_error_names();
    let unknown: Vec<_> = handled.difference(&raised).collect();
    assert!(
        unknown.is_empty(),
        "the definitions handle errors no step raises: {unknown:?}"
    );
}

/// The one error that ends an execution on purpose: `NeedsAttention` fails
/// it at a redrivable state so the alarm sees it.
const ENDS_THE_EXECUTION: &str = "NeedsAttention";

#[test]
fn every_error_a_step_raises_is_handled_by_name() {
    let handled = our_error_names();
    let unhandled: Vec<_> = StepError::NAMES
        .iter()
        .filter(|n| !handled.contains(**n) && **n != ENDS_THE_EXECUTION)
        .collect();
    assert!(
        unhandled.is_empty(),
        "step errors only a catch-all sees: {unhandled:?}"
    );
}

#[test]
fn step_error_names_are_stable_and_match_their_variants() {
    let samples = [
        StepError::OutOfStock(String::new()),
        StepError::PaymentDeclined(String::new()),
        StepError::ProvisioningFailed(String::new()),
        StepError::PurchaseStopped(String::new()),
        StepError::PurchaseOnHold(String::new()),
        StepError::PurchaseRejected(String::new()),
        StepError::PurchaseNotFound(String::new()),
        StepError::InvalidInput(String::new()),
        StepError::Transient(String::new()),
        StepError::NeedsAttention(String::new()),
        StepError::Internal(String::new()),
    ];
    let names: Vec<&str> = samples.iter().map(StepError::name).collect();
    assert_eq!(names, StepError::NAMES);
    // What Lambda reports as errorType is this name, not the Rust type name.
    let diagnostic = lambda_runtime::Diagnostic::from(StepError::OutOfStock("x".into()));
    assert_eq!(diagnostic.error_type, "OutOfStock");
}

#[test]
fn every_task_has_a_timeout_retries_and_a_catch_all() {
    for (file, name, state) in states() {
        if state["Type"] != "Task" {
            continue;
        }
        assert!(
            state["TimeoutSeconds"].as_u64().is_some_and(|t| t > 0),
            "{file}: {name} has no TimeoutSeconds"
        );
        assert!(
            state["Retry"].as_array().is_some_and(|r| !r.is_empty()),
            "{file}: {name} has no Retry"
        );
        if name == Step::NeedsAttention.state_name() {
            // The exception, on purpose: its failure is the execution's, at
            // a state a redrive runs again. A catch-all would end the
            // execution somewhere a redrive cannot resume from.
            assert!(state.get("Catch").is_none(), "{name} must not catch");
            continue;
        }
        let catches = state["Catch"]
            .as_array()
            .unwrap_or_else(|| panic!("{file}: {name} has no Catch"));
        let last = catches.last().unwrap();
        assert_eq!(
            last["ErrorEquals"],
            json!(["States.ALL"]),
            "{file}: {name}'s last Catch is not a catch-all"
        );
    }
}

/// The `${...}` placeholders a definition uses.
fn placeholders(text: &str) -> BTreeSet<String> {
    text.match_indices("${")
        .map(|(i, _)| text[i + 2..].split('}').next().unwrap().to_owned())
        .collect()
}

#[test]
fn every_task_resource_is_a_step_function_or_the_other_machine_and_every_step_is_used() {
    let mut used = BTreeSet::new();
    for (file, text) in MACHINES {
        used.extend(placeholders(text));
        // Each machine starts the other one, and nothing else.
        let other = if text == DEFINITION {
            "ReviewStateMachineArn"
        } else {
            "PurchaseStateMachineArn"
        };
        let machines: BTreeSet<String> = placeholders(text)
            .into_iter()
            .filter(|p| p.ends_with("StateMachineArn"))
            .collect();
        assert_eq!(machines, BTreeSet::from([other.to_owned()]), "{file}");
    }
    let mut known: BTreeSet<String> = Step::ALL.into_iter().map(Step::arn_placeholder).collect();
    known.insert("PurchaseStateMachineArn".into());
    known.insert("ReviewStateMachineArn".into());
    assert_eq!(used, known);
}

#[test]
fn every_lambda_task_state_is_named_after_its_step() {
    // The timeline's `step` and the state names are one vocabulary.
    let names: BTreeSet<String> = states()
        .into_iter()
        .filter(|(_, _, s)| s["Type"] == "Task" && !is_start_execution(s))
        .map(|(_, n, _)| n)
        .collect();
    let steps: BTreeSet<String> = Step::ALL
        .into_iter()
        .map(|s| s.state_name().to_owned())
        .collect();
    assert_eq!(names, steps);
}

/// What a retrier waits at most over all its attempts, in seconds.
fn worst_case_wait(retrier: &Value) -> f64 {
    let interval = retrier["IntervalSeconds"].as_f64().unwrap_or(1.0);
    let rate = retrier["BackoffRate"].as_f64().unwrap_or(2.0);
    let cap = retrier["MaxDelaySeconds"].as_f64().unwrap_or(f64::MAX);
    let attempts = retrier["MaxAttempts"].as_u64().unwrap_or(3) as i32;
    (0..attempts)
        .map(|n| (interval * rate.powi(n)).min(cap))
        .sum()
}

#[test]
fn idempotent_steps_retry_lambda_timeouts_and_ride_out_a_minute_of_provider_trouble() {
    for (file, name, state) in states() {
        if state["Type"] != "Task" || is_start_execution(&state) {
            continue;
        }
        let retriers = state["Retry"].as_array().unwrap();
        let transient = retriers
            .iter()
            .find(|r| {
                r["ErrorEquals"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e == "Transient")
            })
            .unwrap_or_else(|| panic!("{file}: {name} does not retry Transient"));
        let errors = transient["ErrorEquals"].as_array().unwrap();
        // Every step is idempotent: a function that timed out
        // (`Sandbox.Timedout`) or died without naming its error, out of
        // memory say (`Lambda.Unknown`), is simply run again.
        for lambda_error in ["Lambda.Unknown", LAMBDA_TIMEOUT] {
            assert!(
                errors.iter().any(|e| e == lambda_error),
                "{file}: {name} does not retry {lambda_error}"
            );
        }
        // With FULL jitter each wait is drawn from [0, computed]; the
        // computed waits must add up to well over a minute (see README).
        let worst = worst_case_wait(transient);
        assert!(worst >= 180.0, "{name} retries for at most {worst} s");
        assert_ne!(
            errors.iter().find(|e| *e == ENDS_THE_EXECUTION),
            Some(&Value::from(ENDS_THE_EXECUTION)),
            "{name} must not retry {ENDS_THE_EXECUTION}"
        );
    }
}

/// A start of the other machine: a repeated one (a retry, a duplicate
/// `EXPRESS` run) is caught as done, never retried; anything else is
/// retried like a step, then caught.
#[test]
fn a_start_that_exists_already_counts_as_done_and_other_failures_are_retried() {
    let starts: Vec<_> = states()
        .into_iter()
        .filter(|(_, _, s)| is_start_execution(s))
        .collect();
    let names: BTreeSet<&str> = starts.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(names, BTreeSet::from(["StartReview", "StartPurchaseRun"]));
    for (file, name, state) in &starts {
        let retriers = state["Retry"].as_array().unwrap();
        assert_eq!(
            retriers[0],
            json!({"ErrorEquals": [ALREADY_EXISTS], "MaxAttempts": 0}),
            "{file}: {name}: the first retrier (the one consulted) must not retry {ALREADY_EXISTS}"
        );
        let others = retriers
            .iter()
            .find(|r| r["ErrorEquals"] == json!(["States.TaskFailed", "States.Timeout"]))
            .unwrap_or_else(|| panic!("{file}: {name} does not retry failed starts"));
        assert!(worst_case_wait(others) >= 180.0, "{file}: {name}");
        let caught = &state["Catch"][0];
        assert_eq!(
            caught["ErrorEquals"],
            json!([ALREADY_EXISTS]),
            "{file}: {name}"
        );
        assert_eq!(
            caught["Next"], state["Next"],
            "{file}: {name}: as if started"
        );
        let text = MACHINES.iter().find(|(f, _)| f == file).unwrap().1;
        let next = &parse(text)["States"][caught["Next"].as_str().unwrap()];
        assert_eq!(next["Type"], "Succeed", "{file}: {name}");
    }
}

#[test]
fn the_purchase_machine_can_run_as_express() {
    for (name, state) in states_of(DEFINITION) {
        let resource = state["Resource"].as_str().unwrap_or_default();
        // Express workflows cannot wait for a callback or a job.
        assert!(
            !resource.ends_with(".waitForTaskToken") && !resource.contains(".sync"),
            "{name}: {resource} cannot run in an EXPRESS workflow"
        );
        // Nor wait: nothing here may outlast an Express execution's five minutes.
        assert_ne!(state["Type"], "Wait", "{name}");
        if let Some(timeout) = state["TimeoutSeconds"].as_u64() {
            assert!(timeout < 300, "{name}: TimeoutSeconds {timeout}");
        }
    }
}

#[test]
fn a_hold_goes_to_the_review_machine_which_continues_the_purchase_as_a_new_run() {
    let purchase = parse(DEFINITION);
    // Every forward step's hold hands the purchase over, and the run ends.
    let held: BTreeSet<String> = states_of(DEFINITION)
        .into_iter()
        .filter(|(_, s)| {
            s["Catch"].as_array().into_iter().flatten().any(|c| {
                c["ErrorEquals"]
                    .as_array()
                    .unwrap()
                    .contains(&json!("PurchaseOnHold"))
            })
        })
        .map(|(name, _)| name)
        .collect();
    let forward = [
        Step::EvaluateRules,
        Step::ReserveStock,
        Step::CapturePayment,
        Step::ProvisionProducts,
    ]
    .map(|s| s.state_name().to_owned());
    assert_eq!(held, BTreeSet::from(forward));
    for name in &held {
        let catch = purchase["States"][name]["Catch"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["ErrorEquals"] == json!(["PurchaseOnHold"]))
            .unwrap()
            .clone();
        assert_eq!(catch["Next"], "StartReview", "{name}");
    }
    // Named after the run: one review per hold, whatever repeats it.
    let start_review = &purchase["States"]["StartReview"];
    assert_eq!(
        start_review["Parameters"],
        json!({
            "StateMachineArn": "${ReviewStateMachineArn}",
            "Name.$": "$$.Execution.Name",
            "Input": {"purchaseId.$": "$.purchaseId", "run.$": "$$.Execution.Name"}
        })
    );
    assert_eq!(
        purchase["States"][start_review["Next"].as_str().unwrap()]["Type"],
        "Succeed"
    );
    // The review machine: wait, then continue however the wait ended.
    let review = parse(REVIEW_DEFINITION);
    assert_eq!(review["StartAt"], Step::AwaitReview.state_name());
    let await_review = &review["States"]["AwaitReview"];
    assert_eq!(await_review["TimeoutSeconds"], 14 * 24 * 3600);
    assert_eq!(await_review["Next"], Step::ContinuePurchase.state_name());
    for catch in await_review["Catch"].as_array().unwrap() {
        assert_eq!(catch["Next"], Step::ContinuePurchase.state_name());
        assert_eq!(
            catch["ResultPath"], "$.review",
            "the ending, for ContinuePurchase"
        );
    }
    let continue_purchase = &review["States"]["ContinuePurchase"];
    assert_eq!(continue_purchase["ResultPath"], "$.next");
    assert_eq!(continue_purchase["Next"], "StartPurchaseRun");
    // The next run: the name ContinuePurchase chose, the execution input.
    let start_run = &review["States"]["StartPurchaseRun"];
    assert_eq!(
        start_run["Parameters"],
        json!({
            "StateMachineArn": "${PurchaseStateMachineArn}",
            "Name.$": "$.next.executionName",
            "Input": {"purchaseId.$": "$.purchaseId"}
        })
    );
    assert_eq!(
        shared::ports::workflow::execution_input(&shared::domain::PurchaseId::new("p")),
        json!({"purchaseId": "p"})
    );
}

#[test]
fn provisioning_and_revoking_have_time_for_their_lines() {
    for step in [Step::ProvisionProducts, Step::RevokeProducts] {
        let state = &parse(DEFINITION)["States"][step.state_name()];
        let timeout = state["TimeoutSeconds"].as_u64().unwrap();
        // The function (Timeout 120 in template.yaml) stops in time and is
        // retried, continuing where it stopped.
        assert!(
            timeout > 120,
            "{} TimeoutSeconds {timeout}",
            step.state_name()
        );
    }
}
