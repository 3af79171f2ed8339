//! Error types of the public API and the predefined `States.*` error names.

use serde::{Deserialize, Serialize};

/// Predefined error names (Step Functions developer guide, "Error names").
pub mod names {
    /// Wildcard matching any error name except `States.Runtime`.
    pub const ALL: &str = "States.ALL";
    /// A Task ran longer than its `TimeoutSeconds`.
    pub const TIMEOUT: &str = "States.Timeout";
    /// Wildcard matching any error except `States.Timeout` (and `States.Runtime`).
    pub const TASK_FAILED: &str = "States.TaskFailed";
    /// A Choice state found no matching rule and has no `Default`.
    pub const NO_CHOICE_MATCHED: &str = "States.NoChoiceMatched";
    /// `ResultPath` could not be applied to the state's input.
    pub const RESULT_PATH_MATCH_FAILURE: &str = "States.ResultPathMatchFailure";
    /// Paths that select nothing, and other definition/data mismatches. Like AWS, this
    /// error is terminal: no `Retry` or `Catch` (not even `States.ALL`) handles it.
    pub const RUNTIME: &str = "States.Runtime";

    /// Every `States.*` name the service defines; anything else with that prefix in an
    /// `ErrorEquals` is a typo and is refused at load time.
    pub(crate) const KNOWN: &[&str] = &[
        ALL,
        TIMEOUT,
        TASK_FAILED,
        NO_CHOICE_MATCHED,
        RESULT_PATH_MATCH_FAILURE,
        RUNTIME,
        "States.Permissions",
        "States.ParameterPathFailure",
        "States.BranchFailed",
        "States.IntrinsicFailure",
        "States.HeartbeatTimeout",
        "States.DataLimitExceeded",
        "States.ExceedToleratedFailureThreshold",
        "States.ItemReaderFailed",
        "States.ResultWriterFailed",
        "States.QueryEvaluationError",
    ];
}

/// The definition could not be loaded: it is malformed, inconsistent, or uses a feature
/// the local runner does not implement. The message names the offending state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", match .state { Some(s) => format!("state `{s}`: {}", .message), None => .message.clone() })]
pub struct LoadError {
    state: Option<String>,
    message: String,
}

impl LoadError {
    pub(crate) fn machine(message: impl Into<String>) -> LoadError {
        LoadError {
            state: None,
            message: message.into(),
        }
    }

    pub(crate) fn state(state: &str, message: impl Into<String>) -> LoadError {
        LoadError {
            state: Some(state.to_owned()),
            message: message.into(),
        }
    }

    /// The state the problem is in, when it is specific to one state.
    pub fn state_name(&self) -> Option<&str> {
        self.state.as_deref()
    }
}

/// How a Task (or any state) failed: `error` is the stable error name that `Retry` and
/// `Catch` match on (e.g. `"OutOfStock"`, `"States.Timeout"`), `cause` a human-readable
/// message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailure {
    pub error: String,
    pub cause: String,
}

impl TaskFailure {
    pub fn new(error: impl Into<String>, cause: impl Into<String>) -> TaskFailure {
        TaskFailure {
            error: error.into(),
            cause: cause.into(),
        }
    }

    pub(crate) fn runtime(cause: impl Into<String>) -> TaskFailure {
        TaskFailure::new(names::RUNTIME, cause)
    }
}

/// A journal could not persist a checkpoint.
#[derive(Debug, thiserror::Error)]
#[error("could not save checkpoint: {message}")]
pub struct JournalError {
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl JournalError {
    pub fn new(message: impl Into<String>) -> JournalError {
        JournalError {
            message: message.into(),
            source: None,
        }
    }

    pub fn with_source(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> JournalError {
        JournalError {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}

/// `send_task_success` / `send_task_failure` were given a token that no running task is
/// waiting on (never issued, already completed, or its task timed out) — AWS's
/// `TaskDoesNotExist`/`InvalidToken`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskTokenError {
    #[error("no task is waiting for task token `{0}`")]
    Unknown(String),
}
