//! The workflow port in local mode: `statemachine/purchase.asl.json` run by
//! the in-process [`asl::Runner`], its Task states calling the step
//! functions directly, its checkpoints journaled in the embedded database
//! so executions survive a restart.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use asl::{
    Checkpoint, ExecutionJournal, ExecutionStatus, JournalError, Runner, StateMachine, TaskContext,
    TaskFailure, TaskInvoker,
};
use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::Value;
use shared::steps::{Step, StepDeps};
use shared::workflow::{DEFINITION, Workflow, WorkflowError, execution_input};

/// executionName (= purchaseId) → latest Checkpoint (JSON).
const EXECUTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("executions");

/// The Step Functions service integration for invoking a Lambda function.
const LAMBDA_INVOKE: &str = "arn:aws:states:::lambda:invoke";

/// The prefix local Task resources get instead of a Lambda ARN.
pub const LOCAL_RESOURCE_PREFIX: &str = "local:";

/// The `DefinitionSubstitutions` local mode uses: every `${XFunctionArn}`
/// becomes `local:<function-name>`.
pub fn local_substitutions() -> HashMap<String, String> {
    Step::ALL
        .into_iter()
        .map(|step| {
            (
                step.arn_placeholder(),
                format!("{LOCAL_RESOURCE_PREFIX}{}", step.function_name()),
            )
        })
        .collect()
}

/// Lets tests pause a workflow just before a chosen step runs.
#[async_trait]
pub trait StepHook: Send + Sync {
    async fn before(&self, step: Step, purchase_id: &str);
}

struct StepInvoker {
    deps: StepDeps,
    hook: Option<Arc<dyn StepHook>>,
}

#[async_trait]
impl TaskInvoker for StepInvoker {
    async fn invoke(
        &self,
        resource: &str,
        input: Value,
        _: &TaskContext,
    ) -> Result<Value, TaskFailure> {
        // Direct Lambda resources are `local:<function>`. The callback
        // pattern goes through the `lambda:invoke` integration, which names
        // the function in its parameters and hands the function only `Payload`.
        let (function, input) = if resource.starts_with(LAMBDA_INVOKE) {
            let function = input
                .get("FunctionName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            (
                function,
                input.get("Payload").cloned().unwrap_or(Value::Null),
            )
        } else {
            (resource.to_owned(), input)
        };
        let step = function
            .strip_prefix(LOCAL_RESOURCE_PREFIX)
            .and_then(Step::from_function_name)
            .ok_or_else(|| {
                TaskFailure::new(
                    "States.TaskFailed",
                    format!("no local task for resource {resource} ({function})"),
                )
            })?;
        if let Some(hook) = &self.hook {
            let purchase_id = input
                .get("purchaseId")
                .and_then(Value::as_str)
                .unwrap_or_default();
            hook.before(step, purchase_id).await;
        }
        step.run(&self.deps, input)
            .await
            .map_err(|error| TaskFailure::new(error.name(), error.to_string()))
    }
}

struct RedbJournal {
    db: Arc<Database>,
}

fn journal_error(error: impl std::fmt::Display) -> JournalError {
    JournalError::new(error.to_string())
}

impl RedbJournal {
    fn new(db: Arc<Database>) -> Result<RedbJournal, String> {
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        txn.open_table(EXECUTIONS).map_err(|e| e.to_string())?;
        txn.commit().map_err(|e| e.to_string())?;
        Ok(RedbJournal { db })
    }

    fn get(&self, name: &str) -> Result<Option<Checkpoint>, String> {
        let txn = self.db.begin_read().map_err(|e| e.to_string())?;
        let table = txn.open_table(EXECUTIONS).map_err(|e| e.to_string())?;
        match table.get(name).map_err(|e| e.to_string())? {
            Some(bytes) => serde_json::from_slice(bytes.value())
                .map(Some)
                .map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }

    fn unfinished(&self) -> Result<Vec<Checkpoint>, String> {
        let txn = self.db.begin_read().map_err(|e| e.to_string())?;
        let table = txn.open_table(EXECUTIONS).map_err(|e| e.to_string())?;
        let mut found = Vec::new();
        for entry in table.iter().map_err(|e| e.to_string())? {
            let (_, bytes) = entry.map_err(|e| e.to_string())?;
            let checkpoint: Checkpoint =
                serde_json::from_slice(bytes.value()).map_err(|e| e.to_string())?;
            if checkpoint.status == ExecutionStatus::Running {
                found.push(checkpoint);
            }
        }
        Ok(found)
    }
}

#[async_trait]
impl ExecutionJournal for RedbJournal {
    async fn save(&self, checkpoint: &Checkpoint) -> Result<(), JournalError> {
        let bytes = serde_json::to_vec(checkpoint).map_err(journal_error)?;
        let name = checkpoint.execution_name.clone();
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_write().map_err(journal_error)?;
            {
                let mut table = txn.open_table(EXECUTIONS).map_err(journal_error)?;
                table
                    .insert(name.as_str(), bytes.as_slice())
                    .map_err(journal_error)?;
            }
            txn.commit().map_err(journal_error)
        })
        .await
        .map_err(journal_error)?
    }
}

/// The step tasks' view of the workflow: they only complete task tokens,
/// through the runner that exists once the steps have been wired into it.
///
/// It holds the workflow weakly: the workflow owns the runner, which owns
/// the steps, which own this — a strong reference would be a cycle that
/// keeps the database open forever.
#[derive(Default)]
pub struct RunnerCallbacks {
    workflow: OnceLock<Weak<LocalWorkflow>>,
}

impl RunnerCallbacks {
    fn runner(&self) -> Result<Runner, WorkflowError> {
        self.workflow
            .get()
            .and_then(Weak::upgrade)
            .map(|workflow| workflow.runner.clone())
            .ok_or_else(|| WorkflowError::Internal("the local runner is not running".into()))
    }
}

#[async_trait]
impl Workflow for RunnerCallbacks {
    async fn start(&self, _: &str) -> Result<(), WorkflowError> {
        Err(WorkflowError::Internal(
            "steps do not start executions".into(),
        ))
    }

    async fn send_task_success(
        &self,
        task_token: &str,
        output: Value,
    ) -> Result<(), WorkflowError> {
        send_success(&self.runner()?, task_token, output)
    }

    async fn send_task_failure(
        &self,
        task_token: &str,
        error: &str,
        cause: &str,
    ) -> Result<(), WorkflowError> {
        send_failure(&self.runner()?, task_token, error, cause)
    }
}

// An unknown token (task gone: timed out or already completed) is not
// retryable, hence `Internal`, which callers log and move past.
fn send_success(runner: &Runner, task_token: &str, output: Value) -> Result<(), WorkflowError> {
    runner
        .send_task_success(task_token, output)
        .map_err(|e| WorkflowError::Internal(e.to_string()))
}

fn send_failure(
    runner: &Runner,
    task_token: &str,
    error: &str,
    cause: &str,
) -> Result<(), WorkflowError> {
    runner
        .send_task_failure(task_token, error, cause)
        .map_err(|e| WorkflowError::Internal(e.to_string()))
}

/// Starts and resumes purchase executions in-process.
pub struct LocalWorkflow {
    runner: Runner,
    journal: Arc<RedbJournal>,
    /// Executions started by this process, so a second start is a no-op
    /// even before the first checkpoint is written.
    started: Mutex<HashSet<String>>,
}

impl LocalWorkflow {
    /// `callbacks` must be the `workflow` of `deps`: it is connected to the
    /// runner here, closing the loop steps → runner → steps.
    pub fn new(
        deps: StepDeps,
        callbacks: Arc<RunnerCallbacks>,
        db: Arc<Database>,
        hook: Option<Arc<dyn StepHook>>,
    ) -> Result<Arc<LocalWorkflow>, String> {
        let machine = StateMachine::from_json(DEFINITION, &local_substitutions())
            .map_err(|e| e.to_string())?;
        let journal = Arc::new(RedbJournal::new(db)?);
        let invoker = Arc::new(StepInvoker { deps, hook });
        let runner = Runner::new(Arc::new(machine), invoker, journal.clone());
        let workflow = Arc::new(LocalWorkflow {
            runner,
            journal,
            started: Mutex::new(HashSet::new()),
        });
        callbacks
            .workflow
            .set(Arc::downgrade(&workflow))
            .map_err(|_| "the runner callbacks are already connected".to_owned())?;
        Ok(workflow)
    }

    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    /// The latest checkpoint of an execution (its status, where it is).
    pub fn checkpoint(&self, execution_name: &str) -> Result<Option<Checkpoint>, String> {
        self.journal.get(execution_name)
    }

    fn claim(&self, name: &str) -> bool {
        match self.started.lock() {
            Ok(mut started) => started.insert(name.to_owned()),
            Err(_) => false,
        }
    }

    /// Continues every execution a previous process left running; returns how many.
    pub async fn resume_unfinished(&self) -> Result<usize, String> {
        let journal = Arc::clone(&self.journal);
        let unfinished = tokio::task::spawn_blocking(move || journal.unfinished())
            .await
            .map_err(|e| e.to_string())??;
        let count = unfinished.len();
        for checkpoint in unfinished {
            if !self.claim(&checkpoint.execution_name) {
                continue;
            }
            let runner = self.runner.clone();
            tokio::spawn(async move {
                let name = checkpoint.execution_name.clone();
                let outcome = runner.resume(checkpoint).await;
                tracing::info!(execution = %name, ?outcome, "resumed execution ended");
            });
        }
        Ok(count)
    }
}

#[async_trait]
impl Workflow for LocalWorkflow {
    async fn start(&self, purchase_id: &str) -> Result<(), WorkflowError> {
        if !self.claim(purchase_id) {
            return Ok(());
        }
        let existing = self
            .journal
            .get(purchase_id)
            .map_err(WorkflowError::Internal)?;
        if existing.is_some() {
            return Ok(()); // like Step Functions: one execution per name
        }
        let runner = self.runner.clone();
        let name = purchase_id.to_owned();
        tokio::spawn(async move {
            let outcome = runner.start(&name, execution_input(&name)).await;
            tracing::info!(execution = %name, ?outcome, "execution ended");
        });
        Ok(())
    }

    async fn send_task_success(
        &self,
        task_token: &str,
        output: Value,
    ) -> Result<(), WorkflowError> {
        send_success(&self.runner, task_token, output)
    }

    async fn send_task_failure(
        &self,
        task_token: &str,
        error: &str,
        cause: &str,
    ) -> Result<(), WorkflowError> {
        send_failure(&self.runner, task_token, error, cause)
    }
}
