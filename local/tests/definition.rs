//! The contract between `statemachine/purchase.asl.json` and the code: error
//! names, task resources, timeouts and catch-alls.

use std::collections::BTreeSet;

use serde_json::Value;
use shared::ports::workflow::DEFINITION;
use shared::steps::{Step, StepError};

fn definition() -> Value {
    serde_json::from_str(DEFINITION).unwrap()
}

fn states() -> Vec<(String, Value)> {
    definition()["States"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Names the definition's Retry/Catch use that our code must raise
/// (`States.*` and `Lambda.*` come from Step Functions itself).
fn our_error_names() -> BTreeSet<String> {
    let machine =
        asl::StateMachine::from_json(DEFINITION, &local::workflow::local_substitutions()).unwrap();
    machine
        .error_names()
        .into_iter()
        .filter(|name| !name.starts_with("States.") && !name.starts_with("Lambda."))
        .collect()
}

#[test]
fn every_error_the_definition_handles_is_raised_by_a_step() {
    let raised: BTreeSet<String> = StepError::NAMES.iter().map(|n| n.to_string()).collect();
    let handled = our_error_names();
    let unknown: Vec<_> = handled.difference(&raised).collect();
    assert!(
        unknown.is_empty(),
        "the definition handles errors no step raises: {unknown:?}"
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
    for (name, state) in states() {
        if state["Type"] != "Task" {
            continue;
        }
        assert!(
            state["TimeoutSeconds"].as_u64().is_some_and(|t| t > 0),
            "{name} has no TimeoutSeconds"
        );
        assert!(
            state["Retry"].as_array().is_some_and(|r| !r.is_empty()),
            "{name} has no Retry"
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
            .unwrap_or_else(|| panic!("{name} has no Catch"));
        let last = catches.last().unwrap();
        assert_eq!(
            last["ErrorEquals"],
            serde_json::json!(["States.ALL"]),
            "{name}'s last Catch is not a catch-all"
        );
    }
}

#[test]
fn every_task_resource_is_a_step_function_and_every_step_is_used() {
    let text = DEFINITION;
    for step in Step::ALL {
        let placeholder = format!("${{{}}}", step.arn_placeholder());
        assert!(
            text.contains(&placeholder),
            "{placeholder} is not used by the definition"
        );
    }
    let placeholders: BTreeSet<String> = text
        .match_indices("${")
        .map(|(i, _)| text[i + 2..].split('}').next().unwrap().to_owned())
        .collect();
    let known: BTreeSet<String> = Step::ALL.into_iter().map(Step::arn_placeholder).collect();
    assert_eq!(placeholders, known);
}

#[test]
fn every_task_state_is_named_after_its_step() {
    // The timeline's `step` and the state names are one vocabulary.
    let names: BTreeSet<String> = states()
        .into_iter()
        .filter(|(_, s)| s["Type"] == "Task")
        .map(|(n, _)| n)
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
    for (name, state) in states() {
        if state["Type"] != "Task" {
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
            .unwrap_or_else(|| panic!("{name} does not retry Transient"));
        let errors = transient["ErrorEquals"].as_array().unwrap();
        // Every step is idempotent: a function that timed out or ran out of
        // memory (`Lambda.Unknown`) is simply run again.
        assert!(
            errors.iter().any(|e| e == "Lambda.Unknown"),
            "{name} does not retry Lambda.Unknown"
        );
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

#[test]
fn provisioning_and_revoking_have_time_for_their_lines() {
    for step in [Step::ProvisionProducts, Step::RevokeProducts] {
        let state = &definition()["States"][step.state_name()];
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
