//! The definitions deployed to AWS (`statemachine/purchase.asl.json` and
//! `review.asl.json`) must load and run here, since the local server executes
//! those very files.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use asl::{ExecutionOutcome, InMemoryJournal, Runner, StateMachine};
use common::Scripted;
use serde_json::json;

const FILES: [&str; 2] = ["purchase.asl.json", "review.asl.json"];

fn read(file: &str) -> String {
    let path = format!("{}/../statemachine/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn definition() -> String {
    read("purchase.asl.json")
}

/// A substitution for every `${Name}` placeholder the file uses.
fn substitutions(text: &str) -> HashMap<String, String> {
    text.split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}'))
        .map(|(name, _)| (name.to_owned(), format!("local:{name}")))
        .collect()
}

#[test]
fn the_deployed_definitions_load() {
    for file in FILES {
        let text = read(file);
        let machine = StateMachine::from_json(&text, &substitutions(&text))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(!machine.task_resources().is_empty());
        // Direct Lambda resources became `local:…`; the callback task goes
        // through the `lambda:invoke` integration, naming its function in
        // Parameters; the machines start each other's executions through the
        // request-response `states:startExecution` integration.
        assert!(
            machine
                .task_resources()
                .iter()
                .all(|r| r.starts_with("local:")
                    || r == "arn:aws:states:::lambda:invoke.waitForTaskToken"
                    || r == "arn:aws:states:::states:startExecution"),
            "{file}: {:?}",
            machine.task_resources()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_deployed_definition_succeeds_when_every_task_succeeds() {
    let text = definition();
    let machine =
        StateMachine::from_json(&text, &substitutions(&text)).unwrap_or_else(|e| panic!("{e}"));
    let task = Scripted::returning(json!({}));
    let runner = Runner::new(
        Arc::new(machine),
        task.clone(),
        Arc::new(InMemoryJournal::new()),
    );
    let outcome = runner.start("p-1", json!({"purchaseId": "p-1"})).await;
    assert!(
        matches!(outcome, ExecutionOutcome::Succeeded(_)),
        "{outcome:?}"
    );
    assert!(!task.calls().is_empty());
}
