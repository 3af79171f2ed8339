//! Loading a definition: refusals name the state, and the introspection the local
//! server relies on (resources, error names, state names) reflects the definition.

use std::collections::{BTreeSet, HashMap};

use asl::StateMachine;
use serde_json::{Value, json};

fn load(definition: Value) -> Result<StateMachine, asl::LoadError> {
    StateMachine::from_json(&definition.to_string(), &HashMap::new())
}

/// Loads `state` as the only state `Foo` and returns the error message.
fn refusal_of(state: Value) -> String {
    refusal(json!({"StartAt": "Foo", "States": {"Foo": state}}))
}

fn refusal(definition: Value) -> String {
    match load(definition) {
        Ok(_) => panic!("definition should have been refused"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn unknown_field_is_refused_naming_state_and_field() {
    let message =
        refusal_of(json!({"Type": "Task", "Resource": "fn", "ItemsPath": "$.items", "End": true}));
    assert_eq!(
        message,
        "state `Foo`: field `ItemsPath` is not supported by the local runner"
    );
}

#[test]
fn unsupported_state_types_are_refused() {
    for kind in ["Map", "Parallel"] {
        let message = refusal_of(json!({"Type": kind, "End": true}));
        assert!(
            message.starts_with("state `Foo`:") && message.contains(kind),
            "{message}"
        );
    }
    let message = refusal_of(json!({"Type": "Teleport", "End": true}));
    assert!(
        message.contains("state `Foo`") && message.contains("Teleport"),
        "{message}"
    );
}

#[test]
fn unimplemented_features_are_refused() {
    let cases = [
        json!({"Type": "Task", "Resource": "fn", "HeartbeatSeconds": 10, "End": true}),
        json!({"Type": "Task", "Resource": "fn", "TimeoutSecondsPath": "$.t", "End": true}),
        json!({"Type": "Task", "Resource": "fn", "Credentials": {}, "End": true}),
        json!({"Type": "Task", "Resource": "fn", "Assign": {"x": 1}, "End": true}),
        json!({"Type": "Task", "Resource": "fn", "QueryLanguage": "JSONata", "End": true}),
        json!({"Type": "Task", "Resource": "fn", "Parameters": {"id.$": "States.UUID()"}, "End": true}),
        json!({"Type": "Task", "Resource": "fn", "InputPath": "$..deep", "End": true}),
        json!({"Type": "Pass", "Parameters": {"token.$": "$$.Task.Token"}, "End": true}),
        json!({"Type": "Task", "Resource": "fn", "Parameters": {"token.$": "$$.Task.Token"}, "End": true}),
        json!({"Type": "Task", "Resource": "fn", "ResultPath": "$.items[*]", "End": true}),
        json!({"Type": "Fail", "ErrorPath": "States.Format('{}', $.e)"}),
    ];
    for state in cases {
        let message = refusal_of(state.clone());
        assert!(message.starts_with("state `Foo`:"), "{state} => {message}");
    }
    let message = refusal(
        json!({"QueryLanguage": "JSONata", "StartAt": "Foo", "States": {"Foo": {"Type": "Succeed"}}}),
    );
    assert!(message.contains("JSONata"), "{message}");
}

#[test]
fn dangling_transitions_are_refused_naming_the_state() {
    let message = refusal(json!({
        "StartAt": "A",
        "States": {"A": {"Type": "Pass", "Next": "Nowhere"}, "B": {"Type": "Succeed"}}
    }));
    assert!(
        message.starts_with("state `A`:") && message.contains("Nowhere"),
        "{message}"
    );

    let message = refusal(json!({
        "StartAt": "A",
        "States": {
            "A": {"Type": "Task", "Resource": "fn", "End": true,
                  "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Gone"}]}
        }
    }));
    assert!(
        message.starts_with("state `A`:") && message.contains("Gone"),
        "{message}"
    );

    let message = refusal(json!({
        "StartAt": "C",
        "States": {
            "C": {"Type": "Choice", "Choices": [{"Variable": "$.x", "IsPresent": true, "Next": "S"}], "Default": "Missing"},
            "S": {"Type": "Succeed"}
        }
    }));
    assert!(
        message.starts_with("state `C`:") && message.contains("Missing"),
        "{message}"
    );

    let message = refusal(json!({"StartAt": "Nope", "States": {"A": {"Type": "Succeed"}}}));
    assert!(
        message.contains("StartAt") && message.contains("Nope"),
        "{message}"
    );
}

#[test]
fn states_all_must_be_alone_and_last() {
    let catch_not_last = refusal_of(json!({
        "Type": "Task", "Resource": "fn", "End": true,
        "Catch": [
            {"ErrorEquals": ["States.ALL"], "Next": "Foo"},
            {"ErrorEquals": ["OutOfStock"], "Next": "Foo"}
        ]
    }));
    assert!(
        catch_not_last.starts_with("state `Foo`:") && catch_not_last.contains("States.ALL"),
        "{catch_not_last}"
    );

    let retry_not_alone = refusal_of(json!({
        "Type": "Task", "Resource": "fn", "End": true,
        "Retry": [{"ErrorEquals": ["Transient", "States.ALL"]}]
    }));
    assert!(retry_not_alone.contains("States.ALL"), "{retry_not_alone}");
}

#[test]
fn malformed_states_are_refused() {
    let cases = [
        json!({"Type": "Task", "Resource": "fn"}),
        json!({"Type": "Task", "Resource": "fn", "Next": "Foo", "End": true}),
        json!({"Type": "Task", "End": true}),
        json!({"Type": "Task", "Resource": "fn", "TimeoutSeconds": 0, "End": true}),
        json!({"Type": "Task", "Resource": "fn", "End": true, "Retry": [{"ErrorEquals": ["X"], "BackoffRate": 0.5}]}),
        json!({"Type": "Task", "Resource": "fn", "End": true, "Retry": [{"ErrorEquals": ["X"], "JitterStrategy": "HALF"}]}),
        json!({"Type": "Task", "Resource": "fn", "End": true, "Retry": [{"ErrorEquals": ["States.Timout"]}]}),
        json!({"Type": "Task", "Resource": "fn", "End": true, "Retry": [{"ErrorEquals": []}]}),
        json!({"Type": "Wait", "Seconds": 1, "SecondsPath": "$.s", "End": true}),
        json!({"Type": "Wait", "End": true}),
        json!({"Type": "Wait", "Timestamp": "tomorrow", "End": true}),
        json!({"Type": "Fail", "Error": "E", "ErrorPath": "$.e"}),
        json!({"Type": "Choice", "Choices": []}),
        json!({"Type": "Choice", "Choices": [{"Variable": "$.x", "NumericEquals": "1", "Next": "Foo"}], "End": true}),
    ];
    for state in cases {
        let message = refusal_of(state.clone());
        assert!(message.starts_with("state `Foo`:"), "{state} => {message}");
    }
}

#[test]
fn unreachable_states_and_missing_terminals_are_refused() {
    let message = refusal(json!({
        "StartAt": "A",
        "States": {"A": {"Type": "Succeed"}, "Orphan": {"Type": "Succeed"}}
    }));
    assert!(message.starts_with("state `Orphan`:"), "{message}");

    let message = refusal(json!({
        "StartAt": "A",
        "States": {"A": {"Type": "Pass", "Next": "B"}, "B": {"Type": "Pass", "Next": "A"}}
    }));
    assert!(message.contains("terminal"), "{message}");
}

#[test]
fn duplicate_state_names_are_refused() {
    let text = r#"{"StartAt": "A", "States": {"A": {"Type": "Succeed"}, "A": {"Type": "Pass", "End": true}}}"#;
    let error = StateMachine::from_json(text, &HashMap::new())
        .err()
        .map(|e| e.to_string());
    assert!(error.is_some_and(|m| m.starts_with("state `A`:")));
}

fn purchase_like() -> String {
    // A raw string, not `json!`: `serde_json::Map` would sort the states, and the order
    // (deliberately not alphabetical) is what is being checked.
    r#"{
        "Comment": "purchase",
        "StartAt": "Validate",
        "States": {
            "Validate": {"Type": "Task", "Resource": "${ValidateFn}", "Next": "Reserve",
                         "Retry": [{"ErrorEquals": ["Transient", "Lambda.TooManyRequestsException"]}]},
            "Reserve": {"Type": "Task", "Resource": "${ReserveFn}", "Next": "Approve",
                        "Catch": [{"ErrorEquals": ["OutOfStock"], "Next": "Rejected"},
                                  {"ErrorEquals": ["States.ALL"], "Next": "Rejected"}]},
            "Approve": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
                        "Parameters": {"token.$": "$$.Task.Token"}, "Next": "Charge",
                        "Catch": [{"ErrorEquals": ["States.Timeout"], "Next": "Rejected"}]},
            "Charge": {"Type": "Task", "Resource": "${ReserveFn}", "End": true},
            "Rejected": {"Type": "Fail", "Error": "Rejected"}
        }
    }"#
    .to_owned()
}

fn substitutions() -> HashMap<String, String> {
    HashMap::from([
        (
            "ValidateFn".to_owned(),
            "arn:aws:lambda:local:000000000000:function:validate".to_owned(),
        ),
        (
            "ReserveFn".to_owned(),
            "arn:aws:lambda:local:000000000000:function:reserve".to_owned(),
        ),
    ])
}

#[test]
fn introspection_reflects_the_definition_after_substitution() {
    let machine = StateMachine::from_json(&purchase_like(), &substitutions()).expect("loads");
    assert_eq!(
        machine.task_resources(),
        [
            "arn:aws:lambda:local:000000000000:function:validate",
            "arn:aws:lambda:local:000000000000:function:reserve",
            "arn:aws:states:::lambda:invoke.waitForTaskToken",
        ]
    );
    assert_eq!(
        machine.state_names(),
        ["Validate", "Reserve", "Approve", "Charge", "Rejected"]
    );
    let expected: BTreeSet<String> = [
        "Transient",
        "Lambda.TooManyRequestsException",
        "OutOfStock",
        "States.ALL",
        "States.Timeout",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(machine.error_names(), expected);
}

#[test]
fn a_missing_substitution_is_refused() {
    let mut partial = substitutions();
    partial.remove("ReserveFn");
    let error = StateMachine::from_json(&purchase_like(), &partial)
        .err()
        .map(|e| e.to_string());
    assert!(error.is_some_and(|m| m.contains("${ReserveFn}")));
}
