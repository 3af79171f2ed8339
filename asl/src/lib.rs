//! An in-process interpreter for Amazon States Language (JSONPath query language).
//!
//! The local server runs the very definition that is deployed to AWS Step Functions, so
//! this crate follows the semantics documented in the Step Functions developer guide
//! (input/output processing, Retry/Catch, Choice rules, the context object, callback
//! task tokens) and refuses, when the definition is loaded, anything it does not
//! implement — a definition that loads behaves here as it does in the cloud.
//!
//! Supported: `Task`, `Pass`, `Choice`, `Wait`, `Succeed`, `Fail`. Not supported: `Map`,
//! `Parallel`, JSONata, intrinsic functions, variables (`Assign`), heartbeats.
//!
//! ```
//! # use std::{collections::HashMap, sync::Arc};
//! # use asl::*;
//! struct Echo;
//! #[async_trait::async_trait]
//! impl TaskInvoker for Echo {
//!     async fn invoke(&self, _: &str, input: serde_json::Value, _: &TaskContext)
//!         -> Result<serde_json::Value, TaskFailure> { Ok(input) }
//! }
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let definition = r#"{"StartAt": "Hello", "States": {
//!     "Hello": {"Type": "Task", "Resource": "${Fn}", "ResultPath": "$.echo", "End": true}}}"#;
//! let subs = HashMap::from([("Fn".to_owned(), "arn:aws:lambda:::function:echo".to_owned())]);
//! let machine = Arc::new(StateMachine::from_json(definition, &subs).unwrap());
//! let runner = Runner::new(machine, Arc::new(Echo), Arc::new(InMemoryJournal::new()));
//! let outcome = runner.start("exec-1", serde_json::json!({"a": 1})).await;
//! assert_eq!(outcome, ExecutionOutcome::Succeeded(serde_json::json!({"a": 1, "echo": {"a": 1}})));
//! # }
//! ```

mod choice;
mod definition;
mod error;
mod journal;
mod path;
mod runner;
mod template;

pub use definition::StateMachine;
pub use error::{JournalError, LoadError, TaskFailure, TaskTokenError, names as error_names};
pub use journal::{Checkpoint, ExecutionJournal, ExecutionStatus, InMemoryJournal};
pub use runner::{ExecutionOutcome, Runner, TaskContext, TaskInvoker};
