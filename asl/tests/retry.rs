//! Retry timing, exhaustion, Catch and TimeoutSeconds, observed on tokio's paused clock
//! (virtual time: the waits are exact and the tests take no real time).

mod common;

use std::time::Duration;

use common::{Reply, Scripted, assert_secs, failed, run, single_task, succeeded};
use serde_json::json;

fn always_failing() -> std::sync::Arc<Scripted> {
    Scripted::new(|_| Reply::fail("Transient", "upstream unavailable"))
}

#[tokio::test(start_paused = true)]
async fn intervals_grow_by_backoff_rate_and_are_capped_by_max_delay() {
    let definition = single_task(json!({
        "Retry": [{
            "ErrorEquals": ["Transient"],
            "IntervalSeconds": 1,
            "BackoffRate": 3,
            "MaxAttempts": 4,
            "MaxDelaySeconds": 5
        }]
    }));
    let task = always_failing();
    let (error, cause) = failed(run(&definition, json!({}), task.clone()).await);
    assert_eq!(
        (error.as_str(), cause.as_str()),
        ("Transient", "upstream unavailable")
    );
    // 1 initial attempt + MaxAttempts retries; waits 1, 3, then 9 and 27 capped at 5.
    assert_eq!(task.calls().len(), 5);
    assert_secs(&task.gaps(), &[1.0, 3.0, 5.0, 5.0]);
}

#[tokio::test(start_paused = true)]
async fn retrier_defaults_are_one_second_three_attempts_rate_two() {
    let definition = single_task(json!({"Retry": [{"ErrorEquals": ["States.ALL"]}]}));
    let task = always_failing();
    failed(run(&definition, json!({}), task.clone()).await);
    assert_secs(&task.gaps(), &[1.0, 2.0, 4.0]);
}

#[tokio::test(start_paused = true)]
async fn full_jitter_waits_between_zero_and_the_computed_delay() {
    let definition = single_task(json!({
        "Retry": [{
            "ErrorEquals": ["Transient"],
            "IntervalSeconds": 4,
            "BackoffRate": 2,
            "MaxAttempts": 6,
            "MaxDelaySeconds": 20,
            "JitterStrategy": "FULL"
        }]
    }));
    let ceilings = [4.0, 8.0, 16.0, 20.0, 20.0, 20.0];
    let mut below_ceiling = 0;
    // Several executions, so that "jittered" is distinguishable from "not jittered".
    for _ in 0..5 {
        let task = always_failing();
        failed(run(&definition, json!({}), task.clone()).await);
        let gaps = task.gaps();
        assert_eq!(gaps.len(), ceilings.len());
        for (gap, ceiling) in gaps.iter().zip(ceilings) {
            assert!(
                *gap >= 0.0 && *gap <= ceiling + 0.002,
                "gap {gap} outside [0, {ceiling}]"
            );
            if *gap < ceiling - 0.01 {
                below_ceiling += 1;
            }
        }
    }
    assert!(below_ceiling > 0, "FULL jitter never shortened a wait");
}

#[tokio::test(start_paused = true)]
async fn max_attempts_zero_never_retries() {
    let definition =
        single_task(json!({"Retry": [{"ErrorEquals": ["Transient"], "MaxAttempts": 0}]}));
    let task = always_failing();
    failed(run(&definition, json!({}), task.clone()).await);
    assert_eq!(task.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_retrier_only_handles_the_errors_it_lists() {
    let definition = single_task(json!({
        "Retry": [{"ErrorEquals": ["Transient"], "MaxAttempts": 5}]
    }));
    let task = Scripted::new(|_| Reply::fail("OutOfStock", "sku 42"));
    let (error, _) = failed(run(&definition, json!({}), task.clone()).await);
    assert_eq!(error, "OutOfStock");
    assert_eq!(task.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn success_after_retries_continues_normally() {
    let definition = single_task(json!({
        "ResultPath": "$.reservation",
        "Retry": [{"ErrorEquals": ["Transient"], "IntervalSeconds": 2, "MaxAttempts": 3}]
    }));
    let task = Scripted::new(|call| {
        if call.index < 2 {
            Reply::fail("Transient", "")
        } else {
            Reply::ok(json!({"id": "r-1"}))
        }
    });
    let output = succeeded(run(&definition, json!({"order": 7}), task.clone()).await);
    assert_eq!(output, json!({"order": 7, "reservation": {"id": "r-1"}}));
    assert_secs(&task.gaps(), &[2.0, 4.0]);
    // Every attempt gets the same input.
    assert!(task.calls().iter().all(|c| c.input == json!({"order": 7})));
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_fall_through_to_catch_with_result_path() {
    let definition = json!({
        "StartAt": "Reserve",
        "States": {
            "Reserve": {
                "Type": "Task",
                "Resource": "reserve",
                "Retry": [{"ErrorEquals": ["Transient"], "IntervalSeconds": 1, "MaxAttempts": 2}],
                "Catch": [
                    {"ErrorEquals": ["OutOfStock"], "Next": "Unreachable", "ResultPath": "$.wrong"},
                    {"ErrorEquals": ["States.ALL"], "Next": "Compensate", "ResultPath": "$.failure"}
                ],
                "Next": "Done"
            },
            "Unreachable": {"Type": "Fail", "Error": "WrongCatcher"},
            "Compensate": {"Type": "Task", "Resource": "compensate", "ResultPath": null, "End": true},
            "Done": {"Type": "Succeed"}
        }
    });
    let task = Scripted::new(|call| {
        if call.resource == "reserve" {
            Reply::fail("Transient", "still down")
        } else {
            Reply::ok(json!("compensated"))
        }
    });
    let output = succeeded(run(&definition, json!({"order": 7}), task.clone()).await);
    assert_eq!(
        output,
        json!({"order": 7, "failure": {"Error": "Transient", "Cause": "still down"}})
    );
    let resources: Vec<String> = task.calls().iter().map(|c| c.resource.clone()).collect();
    assert_eq!(resources, ["reserve", "reserve", "reserve", "compensate"]);
    // The catcher's Next receives the original input plus the error output.
    assert_eq!(
        task.calls()[3].input,
        json!({"order": 7, "failure": {"Error": "Transient", "Cause": "still down"}})
    );
}

#[tokio::test(start_paused = true)]
async fn timeout_seconds_fails_a_slow_task_with_states_timeout_and_is_caught() {
    let definition = json!({
        "StartAt": "Charge",
        "States": {
            "Charge": {
                "Type": "Task",
                "Resource": "charge",
                "TimeoutSeconds": 5,
                "Catch": [{"ErrorEquals": ["States.Timeout"], "Next": "TimedOut", "ResultPath": "$.error"}],
                "End": true
            },
            "TimedOut": {"Type": "Pass", "End": true}
        }
    });
    let started = tokio::time::Instant::now();
    let task = Scripted::new(|_| Reply::after(Duration::from_secs(60), json!("too late")));
    let output = succeeded(run(&definition, json!({"order": 1}), task).await);
    assert_eq!(output["order"], json!(1));
    assert_eq!(output["error"]["Error"], json!("States.Timeout"));
    assert_secs(&[started.elapsed().as_secs_f64()], &[5.0]);
}

#[tokio::test(start_paused = true)]
async fn a_task_within_its_timeout_succeeds() {
    let definition = single_task(json!({"TimeoutSeconds": 5}));
    let task = Scripted::new(|_| Reply::after(Duration::from_secs(4), json!("in time")));
    assert_eq!(
        succeeded(run(&definition, json!({}), task).await),
        json!("in time")
    );
}

#[tokio::test(start_paused = true)]
async fn timeouts_are_retried_by_a_states_timeout_retrier() {
    let definition = single_task(json!({
        "TimeoutSeconds": 2,
        "Retry": [{"ErrorEquals": ["States.Timeout"], "IntervalSeconds": 1, "MaxAttempts": 2, "BackoffRate": 1}]
    }));
    let task = Scripted::new(|call| {
        if call.index < 2 {
            Reply::after(Duration::from_secs(10), json!("late"))
        } else {
            Reply::ok(json!("fast"))
        }
    });
    assert_eq!(
        succeeded(run(&definition, json!({}), task.clone()).await),
        json!("fast")
    );
    // Each timed-out attempt lasts 2 s, then 1 s of retry interval.
    assert_secs(&task.gaps(), &[3.0, 3.0]);
}

#[tokio::test(start_paused = true)]
async fn runtime_errors_are_never_retried() {
    let definition = single_task(json!({
        "OutputPath": "$.missing",
        "Retry": [{"ErrorEquals": ["States.ALL"], "MaxAttempts": 5}]
    }));
    let task = Scripted::returning(json!({}));
    let (error, _) = failed(run(&definition, json!({}), task.clone()).await);
    assert_eq!(error, "States.Runtime");
    assert_eq!(task.calls().len(), 1);
}
