//! Conformance cases taken from the AWS Step Functions Developer Guide. Each test cites
//! the page its input, definition and expected output come from
//! (https://docs.aws.amazon.com/step-functions/latest/dg/<page>.html).

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use asl::{InMemoryJournal, Runner, StateMachine};
use common::{Reply, Scripted, failed, run, single_task, succeeded};
use serde_json::{Value, json};

const HELLO: &str = "Hello, AWS Step Functions!";

// --- input-output-inputpath-params ("Manipulate parameters in Step Functions workflows") ---

#[tokio::test]
async fn inputpath_selects_part_of_the_input() {
    // Page: input-output-inputpath-params, section "InputPath".
    let input = json!({
        "comment": "Example for InputPath.",
        "dataset1": {"val1": 1, "val2": 2, "val3": 3},
        "dataset2": {"val1": "a", "val2": "b", "val3": "c"}
    });
    let task = Scripted::returning(json!(null));
    run(
        &single_task(json!({"InputPath": "$.dataset2"})),
        input,
        task.clone(),
    )
    .await;
    assert_eq!(
        task.calls()[0].input,
        json!({"val1": "a", "val2": "b", "val3": "c"})
    );
}

#[tokio::test]
async fn inputpath_slice_yields_a_selection_of_values() {
    // Page: input-output-inputpath-params, note "A path can yield a selection of values".
    let task = Scripted::returning(json!(null));
    run(
        &single_task(json!({"InputPath": "$.a[0:2]"})),
        json!({"a": [1, 2, 3, 4]}),
        task.clone(),
    )
    .await;
    assert_eq!(task.calls()[0].input, json!([1, 2]));
}

#[tokio::test]
async fn parameters_build_key_value_pairs_from_static_values_and_paths() {
    // Page: input-output-inputpath-params, section "Parameters" / "Key-value pairs".
    let input = json!({
        "comment": "Example for Parameters.",
        "product": {
            "details": {"color": "blue", "size": "small", "material": "cotton"},
            "availability": "in stock",
            "sku": "2317",
            "cost": "$23"
        }
    });
    let parameters = json!({
        "comment": "Selecting what I care about.",
        "MyDetails": {
            "size.$": "$.product.details.size",
            "exists.$": "$.product.availability",
            "StaticValue": "foo"
        }
    });
    let task = Scripted::returning(json!(null));
    run(
        &single_task(json!({"Parameters": parameters})),
        input,
        task.clone(),
    )
    .await;
    assert_eq!(
        task.calls()[0].input,
        json!({
            "comment": "Selecting what I care about.",
            "MyDetails": {"size": "small", "exists": "in stock", "StaticValue": "foo"}
        })
    );
}

#[tokio::test]
async fn result_selector_reshapes_the_result_before_result_path() {
    // Page: input-output-inputpath-params, section "ResultSelector" (EMR createCluster example).
    let result = json!({
        "resourceType": "elasticmapreduce",
        "resource": "createCluster.sync",
        "output": {
            "SdkHttpMetadata": {"HttpStatusCode": 200},
            "SdkResponseMetadata": {"RequestId": "1234-5678-9012"},
            "ClusterId": "AKIAIOSFODNN7EXAMPLE"
        }
    });
    let definition = single_task(json!({
        "Resource": "arn:aws:states:::elasticmapreduce:createCluster.sync",
        "ResultSelector": {"ClusterId.$": "$.output.ClusterId", "ResourceType.$": "$.resourceType"},
        "ResultPath": "$.EMROutput"
    }));
    let output = succeeded(
        run(
            &definition,
            json!({"OtherDataFromInput": {}}),
            Scripted::returning(result),
        )
        .await,
    );
    assert_eq!(
        output,
        json!({
            "OtherDataFromInput": {},
            "EMROutput": {"ClusterId": "AKIAIOSFODNN7EXAMPLE", "ResourceType": "elasticmapreduce"}
        })
    );
}

// --- input-output-resultpath ("Specifying state output using ResultPath") ---

fn tutorial_input() -> Value {
    json!({
        "comment": "This is a test of the input and output of a Task state.",
        "details": "Default example",
        "who": "AWS Step Functions"
    })
}

#[tokio::test]
async fn result_path_default_replaces_the_input_with_the_result() {
    // Page: input-output-resultpath, "Use ResultPath to replace the input with the result".
    let output = succeeded(
        run(
            &single_task(json!({})),
            tutorial_input(),
            Scripted::returning(json!(HELLO)),
        )
        .await,
    );
    assert_eq!(output, json!(HELLO));
    let explicit = single_task(json!({"ResultPath": "$"}));
    let output = succeeded(
        run(
            &explicit,
            tutorial_input(),
            Scripted::returning(json!(HELLO)),
        )
        .await,
    );
    assert_eq!(output, json!(HELLO));
}

#[tokio::test]
async fn result_path_includes_the_result_with_the_input() {
    // Page: input-output-resultpath, "Use ResultPath to include the result with the input".
    let definition = single_task(json!({"ResultPath": "$.taskresult"}));
    let output = succeeded(
        run(
            &definition,
            tutorial_input(),
            Scripted::returning(json!(HELLO)),
        )
        .await,
    );
    let mut expected = tutorial_input();
    expected["taskresult"] = json!(HELLO);
    assert_eq!(output, expected);
}

#[tokio::test]
async fn result_path_inserts_the_result_as_a_child_node() {
    // Page: input-output-resultpath, same section, "$.strings.lambdaresult".
    let input = json!({
        "comment": "An input comment.",
        "strings": {"string1": "foo", "string2": "bar", "string3": "baz"},
        "who": "AWS Step Functions"
    });
    let definition = single_task(json!({"ResultPath": "$.strings.lambdaresult"}));
    let output = succeeded(run(&definition, input, Scripted::returning(json!(HELLO))).await);
    assert_eq!(
        output,
        json!({
            "comment": "An input comment.",
            "strings": {"string1": "foo", "string2": "bar", "string3": "baz", "lambdaresult": HELLO},
            "who": "AWS Step Functions"
        })
    );
}

#[tokio::test]
async fn result_path_updates_an_existing_node() {
    // Page: input-output-resultpath, "Use ResultPath to update a node in the input with the result".
    let definition = single_task(json!({"ResultPath": "$.comment"}));
    let output = succeeded(
        run(
            &definition,
            tutorial_input(),
            Scripted::returning(json!(HELLO)),
        )
        .await,
    );
    let mut expected = tutorial_input();
    expected["comment"] = json!(HELLO);
    assert_eq!(output, expected);
}

#[tokio::test]
async fn result_path_null_discards_the_result() {
    // Page: amazon-states-language-input-output-processing, "If the ResultPath is null, the
    // results of executing the state are discarded and the input is untouched".
    let definition = single_task(json!({"ResultPath": null}));
    let output = succeeded(
        run(
            &definition,
            tutorial_input(),
            Scripted::returning(json!(HELLO)),
        )
        .await,
    );
    assert_eq!(output, tutorial_input());
}

#[tokio::test]
async fn catch_result_path_keeps_the_input_and_adds_the_error() {
    // Page: input-output-resultpath, "Use ResultPath to include both error and input in a Catch".
    let definition = json!({
        "StartAt": "T",
        "States": {
            "T": {
                "Type": "Task", "Resource": "fn", "End": true,
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "NextTask", "ResultPath": "$.error"}]
            },
            "NextTask": {"Type": "Pass", "End": true}
        }
    });
    let output = succeeded(
        run(
            &definition,
            json!({"foo": "bar"}),
            Scripted::new(|_| Reply::fail("Error here", "")),
        )
        .await,
    );
    assert_eq!(
        output,
        json!({"foo": "bar", "error": {"Error": "Error here"}})
    );
}

// --- input-output-example ("InputPath, ResultPath and OutputPath Example") ---

#[tokio::test]
async fn inputpath_resultpath_outputpath_together() {
    // Page: input-output-example.
    let definition = single_task(json!({
        "Resource": "arn:aws:lambda:us-east-1:123456789012:function:HelloFunction",
        "InputPath": "$.lambda",
        "ResultPath": "$.data.lambdaresult",
        "OutputPath": "$.data"
    }));
    let input = json!({
        "comment": "An input comment.",
        "data": {"val1": 23, "val2": 17},
        "extra": "foo",
        "lambda": {"who": "AWS Step Functions"}
    });
    let task = Scripted::returning(json!(HELLO));
    let output = succeeded(run(&definition, input, task.clone()).await);
    assert_eq!(task.calls()[0].input, json!({"who": "AWS Step Functions"}));
    assert_eq!(
        output,
        json!({"val1": 23, "val2": 17, "lambdaresult": HELLO})
    );
}

// --- amazon-states-language-input-output-processing ---

#[tokio::test]
async fn numbers_to_add_example() {
    // Page: amazon-states-language-input-output-processing, OutputPath section.
    let input = json!({"title": "Numbers to add", "numbers": {"val1": 3, "val2": 4}});
    let adder = || {
        Scripted::new(|call| {
            let sum =
                call.input["val1"].as_i64().unwrap_or(0) + call.input["val2"].as_i64().unwrap_or(0);
            Reply::ok(json!(sum))
        })
    };
    let keep_all =
        single_task(json!({"InputPath": "$.numbers", "ResultPath": "$.sum", "OutputPath": "$"}));
    let output = succeeded(run(&keep_all, input.clone(), adder()).await);
    assert_eq!(
        output,
        json!({"title": "Numbers to add", "numbers": {"val1": 3, "val2": 4}, "sum": 7})
    );

    let only_sum = single_task(
        json!({"InputPath": "$.numbers", "ResultPath": "$.sum", "OutputPath": "$.sum"}),
    );
    assert_eq!(succeeded(run(&only_sum, input, adder()).await), json!(7));
}

#[tokio::test]
async fn null_inputpath_and_outputpath_give_empty_objects() {
    // Page: amazon-states-language-input-output-processing: InputPath null => the task
    // receives `{}`; OutputPath null => `{}` is sent to the next state.
    let task = Scripted::returning(json!({"r": 1}));
    let definition = single_task(json!({"InputPath": null, "OutputPath": null}));
    let output = succeeded(run(&definition, json!({"secret": 1}), task.clone()).await);
    assert_eq!(task.calls()[0].input, json!({}));
    assert_eq!(output, json!({}));
}

#[tokio::test]
async fn outputpath_that_matches_nothing_is_a_runtime_error() {
    // Page: amazon-states-language-input-output-processing: "If the OutputPath doesn't
    // match an item in the state's input, an exception specifies an invalid path."
    // It is States.Runtime, which even a States.ALL catcher does not handle
    // (concepts-error-handling, "States.Runtime").
    let definition = json!({
        "StartAt": "T",
        "States": {
            "T": {
                "Type": "Task", "Resource": "fn", "OutputPath": "$.nope", "End": true,
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Handled"}]
            },
            "Handled": {"Type": "Succeed"}
        }
    });
    let (error, cause) =
        failed(run(&definition, json!({}), Scripted::returning(json!({"r": 1}))).await);
    assert_eq!(error, "States.Runtime");
    assert!(cause.contains("$.nope"), "{cause}");
}

#[tokio::test]
async fn parameters_path_that_matches_nothing_is_a_runtime_error() {
    // Page: input-output-inputpath-params / concepts-error-handling: a `.$` field whose
    // path selects nothing fails the execution with States.Runtime, before the task runs.
    let task = Scripted::returning(json!(null));
    let definition = single_task(json!({"Parameters": {"id.$": "$.orderId"}}));
    let (error, cause) = failed(run(&definition, json!({}), task.clone()).await);
    assert_eq!(error, "States.Runtime");
    assert!(
        cause.contains("'$.orderId'") && cause.contains("'id.$'"),
        "{cause}"
    );
    assert!(task.calls().is_empty());
}

#[tokio::test]
async fn result_path_into_a_scalar_is_a_catchable_result_path_match_failure() {
    // Page: concepts-error-handling, "States.ResultPathMatchFailure: Step Functions failed
    // to apply a state's ResultPath field to the input the state received."
    let definition = json!({
        "StartAt": "T",
        "States": {
            "T": {
                "Type": "Task", "Resource": "fn", "ResultPath": "$.name.first", "End": true,
                "Catch": [{"ErrorEquals": ["States.ResultPathMatchFailure"], "Next": "Handled"}]
            },
            "Handled": {"Type": "Pass", "End": true}
        }
    });
    let output = succeeded(
        run(
            &definition,
            json!({"name": "Ada"}),
            Scripted::returning(json!("x")),
        )
        .await,
    );
    assert_eq!(output["Error"], json!("States.ResultPathMatchFailure"));
}

// --- input-output-contextobject ("Accessing execution data from the Context object") ---

#[tokio::test]
async fn context_object_is_available_to_parameters() {
    // Page: input-output-contextobject ("Execution.$": "$$.Execution.Id" example, and the
    // documented fields of the context object).
    let definition = single_task(json!({
        "Parameters": {
            "MessageBody": {"From": "YVR", "To": "SEA", "Execution.$": "$$.Execution.Id"},
            "name.$": "$$.Execution.Name",
            "input.$": "$$.Execution.Input",
            "start.$": "$$.Execution.StartTime",
            "state.$": "$$.State.Name",
            "entered.$": "$$.State.EnteredTime",
            "retries.$": "$$.State.RetryCount",
            "machine.$": "$$.StateMachine.Id"
        }
    }));
    let task = Scripted::returning(json!(null));
    run(&definition, json!({"key": "value"}), task.clone()).await;
    let seen = &task.calls()[0].input;
    let execution_id = seen["MessageBody"]["Execution"]
        .as_str()
        .unwrap_or_default();
    assert!(
        execution_id.starts_with("arn:aws:states:"),
        "{execution_id}"
    );
    assert!(execution_id.ends_with(":test-execution"), "{execution_id}");
    assert_eq!(seen["MessageBody"]["From"], json!("YVR"));
    assert_eq!(seen["name"], json!("test-execution"));
    assert_eq!(seen["input"], json!({"key": "value"}));
    assert_eq!(seen["state"], json!("T"));
    assert_eq!(seen["retries"], json!(0));
    assert!(
        seen["machine"]
            .as_str()
            .unwrap_or_default()
            .contains(":stateMachine:")
    );
    for field in ["start", "entered"] {
        let text = seen[field].as_str().unwrap_or_default();
        // ISO 8601 with milliseconds, e.g. 2019-03-26T20:14:13.192Z.
        assert!(
            chrono::DateTime::parse_from_rfc3339(text).is_ok()
                && text.ends_with('Z')
                && text.len() == 24,
            "{field}: {text}"
        );
    }
}

#[tokio::test]
async fn the_context_names_the_arn_the_host_gives_the_machine() {
    // A service hosting the machine (aws-local's Step Functions endpoint)
    // answers with its own ARNs; `$$` must tell the same ones, the
    // execution's derived from the machine's as Step Functions derives it.
    let definition = single_task(json!({
        "Parameters": {"execution.$": "$$.Execution.Id", "machine.$": "$$.StateMachine.Id"}
    }));
    let machine = StateMachine::from_json(&definition.to_string(), &HashMap::new())
        .unwrap()
        .with_name("shop-purchase")
        .with_arn("arn:aws:states:eu-west-1:123456789012:stateMachine:shop-purchase");
    let task = Scripted::returning(json!(null));
    let runner = Runner::new(
        Arc::new(machine),
        task.clone(),
        Arc::new(InMemoryJournal::new()),
    );
    runner.start("p-1", json!({})).await;
    let seen = &task.calls()[0].input;
    assert_eq!(
        seen["machine"],
        json!("arn:aws:states:eu-west-1:123456789012:stateMachine:shop-purchase")
    );
    assert_eq!(
        seen["execution"],
        json!("arn:aws:states:eu-west-1:123456789012:execution:shop-purchase:p-1")
    );
}

#[tokio::test(start_paused = true)]
async fn context_retry_count_counts_retries() {
    // Page: input-output-contextobject, `State.RetryCount`.
    let definition = single_task(json!({
        "Parameters": {"attempt.$": "$$.State.RetryCount"},
        "Retry": [{"ErrorEquals": ["Flaky"], "MaxAttempts": 2}]
    }));
    let task = Scripted::new(|call| {
        if call.index < 2 {
            Reply::fail("Flaky", "try again")
        } else {
            Reply::ok(json!("done"))
        }
    });
    assert_eq!(
        succeeded(run(&definition, json!({}), task.clone()).await),
        json!("done")
    );
    let attempts: Vec<Value> = task
        .calls()
        .iter()
        .map(|c| c.input["attempt"].clone())
        .collect();
    assert_eq!(attempts, vec![json!(0), json!(1), json!(2)]);
    assert_eq!(task.calls()[2].ctx.retry_count, 2);
}

// --- amazon-states-language-pass-state ---

#[tokio::test]
async fn pass_state_injects_fixed_data() {
    // Page: amazon-states-language-pass-state, "Pass State Example".
    let definition = json!({
        "StartAt": "No-op",
        "States": {
            "No-op": {
                "Type": "Pass",
                "Result": {"x-datum": 0.381018, "y-datum": 622.2269926397355},
                "ResultPath": "$.coords",
                "Next": "End"
            },
            "End": {"Type": "Succeed"}
        }
    });
    let output = succeeded(
        run(
            &definition,
            json!({"georefOf": "Home"}),
            Scripted::returning(json!(null)),
        )
        .await,
    );
    assert_eq!(
        output,
        json!({"georefOf": "Home", "coords": {"x-datum": 0.381018, "y-datum": 622.2269926397355}})
    );
}

#[tokio::test]
async fn pass_state_parameters_become_its_result() {
    // Page: amazon-states-language-pass-state, `Parameters` ("key-value pairs that will be
    // passed as input"; with no `Result`, the Pass state's output is its effective input).
    let definition = json!({
        "StartAt": "P",
        "States": {"P": {"Type": "Pass", "Parameters": {"who.$": "$.name", "kind": "greeting"}, "End": true}}
    });
    let output = succeeded(
        run(
            &definition,
            json!({"name": "Ada"}),
            Scripted::returning(json!(null)),
        )
        .await,
    );
    assert_eq!(output, json!({"who": "Ada", "kind": "greeting"}));
}

// --- amazon-states-language-choice-state ---

fn choice_example() -> Value {
    // Page: amazon-states-language-choice-state, "Choice State Example" (Tasks replaced by
    // Pass states that record which branch was taken).
    let branch =
        |name: &str| json!({"Type": "Pass", "Result": name, "ResultPath": "$.branch", "End": true});
    json!({
        "StartAt": "ChoiceStateX",
        "States": {
            "ChoiceStateX": {
                "Type": "Choice",
                "Choices": [
                    {"Not": {"Variable": "$.type", "StringEquals": "Private"}, "Next": "Public"},
                    {"Variable": "$.value", "NumericEquals": 0, "Next": "ValueIsZero"},
                    {
                        "And": [
                            {"Variable": "$.value", "NumericGreaterThanEquals": 20},
                            {"Variable": "$.value", "NumericLessThan": 30}
                        ],
                        "Next": "ValueInTwenties"
                    }
                ],
                "Default": "DefaultState"
            },
            "Public": branch("Public"),
            "ValueIsZero": branch("ValueIsZero"),
            "ValueInTwenties": branch("ValueInTwenties"),
            "DefaultState": {"Type": "Fail", "Cause": "No Matches!"}
        }
    })
}

#[tokio::test]
async fn choice_example_routes_by_rules_in_order() {
    let branch = |input: Value| async move {
        succeeded(run(&choice_example(), input, Scripted::returning(json!(null))).await)["branch"]
            .clone()
    };
    // The documented case: {"type": "Private", "value": 22} goes to ValueInTwenties.
    assert_eq!(
        branch(json!({"type": "Private", "value": 22})).await,
        json!("ValueInTwenties")
    );
    assert_eq!(
        branch(json!({"type": "Public", "value": 22})).await,
        json!("Public")
    );
    assert_eq!(
        branch(json!({"type": "Private", "value": 0})).await,
        json!("ValueIsZero")
    );
    let (_, cause) = failed(
        run(
            &choice_example(),
            json!({"type": "Private", "value": 5}),
            Scripted::returning(json!(null)),
        )
        .await,
    );
    assert_eq!(cause, "No Matches!");
}

#[tokio::test]
async fn choice_on_a_missing_variable_fails_the_execution() {
    // Page: amazon-states-language-choice-state: "If the state input doesn't contain the
    // $.type field, the execution fails".
    let (error, _) = failed(
        run(
            &choice_example(),
            json!({"value": 22}),
            Scripted::returning(json!(null)),
        )
        .await,
    );
    assert_eq!(error, "States.Runtime");
}

fn single_rule(rule: Value) -> Value {
    let mut rule = rule;
    rule["Next"] = json!("Yes");
    json!({
        "StartAt": "C",
        "States": {
            "C": {"Type": "Choice", "Choices": [rule], "Default": "No"},
            "Yes": {"Type": "Pass", "Result": true, "End": true},
            "No": {"Type": "Pass", "Result": false, "End": true}
        }
    })
}

async fn holds(rule: Value, input: Value) -> bool {
    succeeded(run(&single_rule(rule), input, Scripted::returning(json!(null))).await) == json!(true)
}

#[tokio::test]
async fn choice_rule_examples_from_the_choice_page() {
    // Page: state-choice, "Choice Rules (JSONPath)" examples.
    assert!(
        holds(
            json!({"Variable": "$.foo", "NumericEquals": 1}),
            json!({"foo": 1})
        )
        .await
    );
    assert!(
        holds(
            json!({"Variable": "$.foo", "StringEquals": "MyString"}),
            json!({"foo": "MyString"})
        )
        .await
    );
    assert!(
        holds(
            json!({"Variable": "$.foo", "StringGreaterThan": "MyStringABC"}),
            json!({"foo": "MyStringABD"})
        )
        .await
    );
    assert!(
        !holds(
            json!({"Variable": "$.foo", "StringGreaterThan": "MyStringABC"}),
            json!({"foo": "MyStringAB"})
        )
        .await
    );
    assert!(
        holds(
            json!({"Variable": "$.possiblyNullValue", "IsNull": true}),
            json!({"possiblyNullValue": null})
        )
        .await
    );
    assert!(
        holds(
            json!({"Variable": "$.foo", "StringMatches": "log-*.txt"}),
            json!({"foo": "log-2020.txt"})
        )
        .await
    );
    assert!(
        !holds(
            json!({"Variable": "$.foo", "StringMatches": "log-*.txt"}),
            json!({"foo": "log-2020.csv"})
        )
        .await
    );
    assert!(
        holds(
            json!({"Variable": "$.foo", "TimestampEquals": "2001-01-01T12:00:00Z"}),
            json!({"foo": "2001-01-01T12:00:00Z"})
        )
        .await
    );
    // The same instant written with an offset is equal as a timestamp.
    assert!(
        holds(
            json!({"Variable": "$.foo", "TimestampEquals": "2001-01-01T12:00:00Z"}),
            json!({"foo": "2001-01-01T13:00:00+01:00"})
        )
        .await
    );
}

#[tokio::test]
async fn is_present_guards_a_comparison_on_a_key_that_might_not_exist() {
    // Page: state-choice: "the StringEquals rule is only evaluated if
    // $.keyThatMightNotExist exists because of the preceding IsPresent choice rule".
    let rule = json!({"And": [
        {"Variable": "$.keyThatMightNotExist", "IsPresent": true},
        {"Variable": "$.keyThatMightNotExist", "StringEquals": "foo"}
    ]});
    assert!(!holds(rule.clone(), json!({})).await);
    assert!(holds(rule, json!({"keyThatMightNotExist": "foo"})).await);
}

#[tokio::test]
async fn choice_does_not_match_a_number_to_a_string() {
    // Page: amazon-states-language-choice-state: "Step Functions doesn't attempt to match
    // a numeric field to a string value." (and timestamps, being strings, can be compared
    // with StringEquals).
    assert!(
        !holds(
            json!({"Variable": "$.v", "NumericEquals": 1}),
            json!({"v": "1"})
        )
        .await
    );
    assert!(
        !holds(
            json!({"Variable": "$.v", "StringEquals": "1"}),
            json!({"v": 1})
        )
        .await
    );
    assert!(
        holds(
            json!({"Variable": "$.v", "StringEquals": "2016-08-18T17:33:00Z"}),
            json!({"v": "2016-08-18T17:33:00Z"})
        )
        .await
    );
}

#[tokio::test]
async fn path_comparisons_and_type_tests() {
    // Page: state-choice: "you can compare a variable to another value from the state
    // input by appending Path to the name of supported comparison operators"; the Is*
    // type tests.
    let input = json!({"a": 3, "b": 5, "t": "2020-01-01T00:00:00Z", "u": "2021-01-01T00:00:00Z", "s": "x", "f": false});
    assert!(
        holds(
            json!({"Variable": "$.a", "NumericLessThanPath": "$.b"}),
            input.clone()
        )
        .await
    );
    assert!(
        !holds(
            json!({"Variable": "$.a", "NumericGreaterThanEqualsPath": "$.b"}),
            input.clone()
        )
        .await
    );
    assert!(
        holds(
            json!({"Variable": "$.t", "TimestampLessThanPath": "$.u"}),
            input.clone()
        )
        .await
    );
    assert!(
        holds(
            json!({"Variable": "$.s", "StringEqualsPath": "$.s"}),
            input.clone()
        )
        .await
    );
    assert!(
        holds(
            json!({"Variable": "$.f", "BooleanEqualsPath": "$.f"}),
            input.clone()
        )
        .await
    );
    assert!(holds(json!({"Variable": "$.a", "IsNumeric": true}), input.clone()).await);
    assert!(holds(json!({"Variable": "$.s", "IsString": true}), input.clone()).await);
    assert!(holds(json!({"Variable": "$.f", "IsBoolean": true}), input.clone()).await);
    assert!(
        holds(
            json!({"Variable": "$.t", "IsTimestamp": true}),
            input.clone()
        )
        .await
    );
    assert!(
        !holds(
            json!({"Variable": "$.s", "IsTimestamp": true}),
            input.clone()
        )
        .await
    );
    assert!(holds(json!({"Or": [{"Variable": "$.s", "IsNumeric": true}, {"Variable": "$.a", "NumericEquals": 3}]}), input).await);
}

#[tokio::test]
async fn no_match_and_no_default_is_no_choice_matched() {
    // Page: state-choice: "If no Choices evaluate to true ... and no Default is provided,
    // the state machine will throw an error" (States.NoChoiceMatched).
    let definition = json!({
        "StartAt": "C",
        "States": {
            "C": {"Type": "Choice", "Choices": [{"Variable": "$.v", "BooleanEquals": true, "Next": "Done"}]},
            "Done": {"Type": "Succeed"}
        }
    });
    let (error, _) = failed(
        run(
            &definition,
            json!({"v": false}),
            Scripted::returning(json!(null)),
        )
        .await,
    );
    assert_eq!(error, "States.NoChoiceMatched");
}

// --- concepts-error-handling ("Handling errors in Step Functions workflows") ---

#[tokio::test(start_paused = true)]
async fn complex_retry_scenario() {
    // Page: amazon-states-language-errors, "Complex Retry Scenarios" (same example as the
    // ASL specification): errors ErrorA, ErrorB, ErrorC, ErrorB wait 1, 2 and 5 seconds; the
    // fourth error matches the first retrier, whose MaxAttempts (2) is counted across all
    // its visits and is exhausted, so the error goes to Z through Catch.
    // (A newer revision of concepts-error-handling narrates a fifth error and a 4-second
    // wait, contradicting MaxAttempts 2 and the specification; we follow the spec.)
    let definition = json!({
        "StartAt": "X",
        "States": {
            "X": {
                "Type": "Task",
                "Resource": "arn:aws:states:us-east-1:123456789012:task:X",
                "Next": "Y",
                "Retry": [
                    {"ErrorEquals": ["ErrorA", "ErrorB"], "IntervalSeconds": 1, "BackoffRate": 2.0, "MaxAttempts": 2},
                    {"ErrorEquals": ["ErrorC"], "IntervalSeconds": 5}
                ],
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Z"}]
            },
            "Y": {"Type": "Succeed"},
            "Z": {"Type": "Pass", "End": true}
        }
    });
    let errors = ["ErrorA", "ErrorB", "ErrorC", "ErrorB"];
    let task = Scripted::new(move |call| Reply::fail(errors[call.index.min(3)], "boom"));
    let output = succeeded(run(&definition, json!({}), task.clone()).await);
    assert_eq!(output, json!({"Error": "ErrorB", "Cause": "boom"}));
    assert_eq!(task.calls().len(), 4);
    common::assert_secs(&task.gaps(), &[1.0, 2.0, 5.0]);
}

#[tokio::test(start_paused = true)]
async fn retry_everything_except_timeouts() {
    // Page: concepts-error-handling: a Retry that "retries any error except States.Timeout".
    let definition = single_task(json!({
        "TimeoutSeconds": 2,
        "Retry": [
            {"ErrorEquals": ["States.Timeout"], "MaxAttempts": 0},
            {"ErrorEquals": ["States.ALL"]}
        ]
    }));
    let slow = Scripted::new(|_| Reply::after(std::time::Duration::from_secs(10), json!("late")));
    let (error, _) = failed(run(&definition, json!({}), slow.clone()).await);
    assert_eq!(error, "States.Timeout");
    assert_eq!(slow.calls().len(), 1, "timeouts are not retried");

    let flaky = Scripted::new(|call| {
        if call.index == 0 {
            Reply::fail("Lambda.ServiceException", "")
        } else {
            Reply::ok(json!("ok"))
        }
    });
    assert_eq!(
        succeeded(run(&definition, json!({}), flaky.clone()).await),
        json!("ok")
    );
    assert_eq!(flaky.calls().len(), 2);
}

#[tokio::test]
async fn handling_a_failure_using_catch() {
    // Page: concepts-error-handling, "Handling a failure using Catch" (both the
    // `HandledError` and the `States.TaskFailed` variants).
    for error_equals in ["HandledError", "States.TaskFailed"] {
        let definition = json!({
            "StartAt": "HelloWorld",
            "States": {
                "HelloWorld": {
                    "Type": "Task",
                    "Resource": "arn:aws:lambda:us-east-1:123456789012:function:FailFunction",
                    "Catch": [{"ErrorEquals": [error_equals], "Next": "fallback"}],
                    "End": true
                },
                "fallback": {"Type": "Pass", "Result": HELLO, "End": true}
            }
        });
        let output = succeeded(
            run(
                &definition,
                json!({}),
                Scripted::new(|_| Reply::fail("HandledError", "error")),
            )
            .await,
        );
        assert_eq!(output, json!(HELLO), "{error_equals}");
    }
}

#[tokio::test(start_paused = true)]
async fn handling_a_timeout_using_catch_but_not_task_failed() {
    // Page: concepts-error-handling, "Handling a timeout using Catch"; States.TaskFailed
    // "matches any known error name except for States.Timeout".
    let definition = |error_equals: &str| {
        json!({
            "StartAt": "HelloWorld",
            "States": {
                "HelloWorld": {
                    "Type": "Task",
                    "Resource": "arn:aws:lambda:us-east-1:123456789012:function:sleep10",
                    "TimeoutSeconds": 2,
                    "Catch": [{"ErrorEquals": [error_equals], "Next": "fallback"}],
                    "End": true
                },
                "fallback": {"Type": "Pass", "Result": HELLO, "End": true}
            }
        })
    };
    let sleep10 =
        || Scripted::new(|_| Reply::after(std::time::Duration::from_secs(10), json!(null)));
    let output = succeeded(run(&definition("States.Timeout"), json!({}), sleep10()).await);
    assert_eq!(output, json!(HELLO));
    let (error, _) = failed(run(&definition("States.TaskFailed"), json!({}), sleep10()).await);
    assert_eq!(error, "States.Timeout");
}

// --- state-fail, state-succeed, state-wait ---

#[tokio::test]
async fn fail_state_error_and_cause_from_paths() {
    // Page: state-fail: ErrorPath/CausePath select the error and cause from the input.
    let definition = json!({
        "StartAt": "F",
        "States": {"F": {"Type": "Fail", "ErrorPath": "$.someError", "CausePath": "$.someCause"}}
    });
    let input = json!({"someError": "CustomError", "someCause": "the cause"});
    let (error, cause) = failed(run(&definition, input, Scripted::returning(json!(null))).await);
    assert_eq!(
        (error.as_str(), cause.as_str()),
        ("CustomError", "the cause")
    );
}

#[tokio::test]
async fn succeed_state_applies_input_and_output_paths() {
    // Page: state-succeed: Succeed states support InputPath and OutputPath.
    let definition = json!({
        "StartAt": "S",
        "States": {"S": {"Type": "Succeed", "InputPath": "$.order", "OutputPath": "$.id"}}
    });
    let output = succeeded(
        run(
            &definition,
            json!({"order": {"id": "o-1"}}),
            Scripted::returning(json!(null)),
        )
        .await,
    );
    assert_eq!(output, json!("o-1"));
}

#[tokio::test(start_paused = true)]
async fn wait_state_seconds_path_and_timestamp() {
    // Page: state-wait: `SecondsPath` selects the wait time from the input; a `Timestamp`
    // in the past does not wait.
    let definition = json!({
        "StartAt": "W",
        "States": {
            "W": {"Type": "Wait", "SecondsPath": "$.delay", "Next": "Past"},
            "Past": {"Type": "Wait", "Timestamp": "2016-03-14T01:59:00Z", "End": true}
        }
    });
    let started = tokio::time::Instant::now();
    let output = succeeded(
        run(
            &definition,
            json!({"delay": 30}),
            Scripted::returning(json!(null)),
        )
        .await,
    );
    assert_eq!(output, json!({"delay": 30}));
    common::assert_secs(&[started.elapsed().as_secs_f64()], &[30.0]);

    let (error, _) = failed(
        run(
            &definition,
            json!({"delay": "soon"}),
            Scripted::returning(json!(null)),
        )
        .await,
    );
    assert_eq!(error, "States.Runtime");
}
