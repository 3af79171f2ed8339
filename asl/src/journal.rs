//! Checkpoints: the persistence hook that lets executions survive a process restart.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{JournalError, TaskFailure};

/// Lifecycle of an execution, spelled as the Step Functions API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExecutionStatus {
    Running,
    Succeeded,
    Failed,
}

/// A snapshot of an execution. While `Running`, it describes the state about to run and
/// its input, which is everything needed to continue (`Runner::resume`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Checkpoint {
    pub execution_name: String,
    pub execution_input: Value,
    /// While running: the state about to run. When finished: the last state that ran.
    pub state_name: String,
    pub state_input: Value,
    pub status: ExecutionStatus,
    /// Set when `status` is `Succeeded`.
    pub output: Option<Value>,
    /// Set when `status` is `Failed`.
    pub error: Option<TaskFailure>,
    /// The token a `.waitForTaskToken` task in `state_name` is waiting on, so a resumed
    /// execution waits for (and accepts) the same token.
    pub task_token: Option<String>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[async_trait::async_trait]
pub trait ExecutionJournal: Send + Sync {
    /// Called before each state runs (again once a task token is issued), and at the end.
    async fn save(&self, checkpoint: &Checkpoint) -> Result<(), JournalError>;
}

/// Keeps checkpoints in memory: every save in order, and the latest per execution.
/// Useful for tests and for running without persistence.
#[derive(Debug, Default)]
pub struct InMemoryJournal {
    saves: Mutex<Vec<Checkpoint>>,
    latest: Mutex<HashMap<String, Checkpoint>>,
}

impl InMemoryJournal {
    pub fn new() -> InMemoryJournal {
        InMemoryJournal::default()
    }

    /// Every checkpoint saved so far, oldest first.
    pub fn saves(&self) -> Vec<Checkpoint> {
        self.saves
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The most recent checkpoint of an execution.
    pub fn latest(&self, execution_name: &str) -> Option<Checkpoint> {
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(execution_name)
            .cloned()
    }
}

#[async_trait::async_trait]
impl ExecutionJournal for InMemoryJournal {
    async fn save(&self, checkpoint: &Checkpoint) -> Result<(), JournalError> {
        // A panic in another holder cannot leave a Vec/HashMap half-updated, so a
        // poisoned lock is still safe to use.
        self.saves
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(checkpoint.clone());
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(checkpoint.execution_name.clone(), checkpoint.clone());
        Ok(())
    }
}
