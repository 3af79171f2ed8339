//! The workflow port in local mode: `statemachine/purchase.asl.json` run by
//! the in-process [`asl::Runner`], its Task states calling the step
//! functions directly, its checkpoints journaled in the embedded database
//! so executions survive a restart (and can be described and redriven, as
//! Step Functions' can).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use asl::{
    Checkpoint, ExecutionJournal, ExecutionStatus, JournalError, Runner, StateMachine, TaskContext,
    TaskFailure, TaskInvoker, TaskTokenError,
};
use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::Value;
use shared::adapters::embedded::EmbeddedStore;
use shared::domain::PurchaseId;
use shared::domain::purchase::TaskDecision;
use shared::ports::store::StoreError;
use shared::ports::workflow::{
    DEFINITION, ExecutionState, Workflow, WorkflowError, execution_input, task_failure, task_output,
};
use shared::steps::{Step, StepDeps};
use tokio::task::JoinSet;

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

/// Lets tests steer the workflow: pause it before a chosen step, make an
/// attempt fail without running (a crash before it did anything), or lose
/// the answer of one that ran (a crash after it did everything).
#[async_trait]
pub trait StepHook: Send + Sync {
    /// Called before every attempt of a step; may wait, and says whether
    /// the attempt runs.
    async fn before(&self, step: Step, purchase_id: &str) -> Attempt;

    /// Called after an attempt ran; `Some(failure)` replaces its result.
    async fn after(
        &self,
        _step: Step,
        _purchase_id: &str,
        _result: &Result<Value, TaskFailure>,
    ) -> Option<TaskFailure> {
        None
    }
}

/// What a [`StepHook`] lets an attempt do.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Run,
    /// Do not run; fail as if the function had crashed.
    Fail(TaskFailure),
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
        context: &TaskContext,
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
        let purchase_id = input
            .get("purchaseId")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if let Some(hook) = &self.hook
            && let Attempt::Fail(failure) = hook.before(step, &purchase_id).await
        {
            return Err(failure);
        }
        // The runner abandons the task at its TimeoutSeconds, as Step
        // Functions does: the step's deadline, like Lambda's.
        let deadline = context
            .timeout
            .map(|timeout| tokio::time::Instant::now() + timeout);
        let result = step
            .run(&self.deps, input, deadline)
            .await
            .map_err(|error| TaskFailure::new(error.name(), error.to_string()));
        if let Some(hook) = &self.hook
            && let Some(failure) = hook.after(step, &purchase_id, &result).await
        {
            return Err(failure);
        }
        result
    }
}

/// The journal lives in the embedded store's file and writes through its
/// writer, so checkpoints share durable commits with the steps' own writes.
struct RedbJournal {
    store: EmbeddedStore,
    db: Arc<Database>,
}

fn journal_error(error: impl std::fmt::Display) -> JournalError {
    JournalError::new(error.to_string())
}

impl RedbJournal {
    async fn new(store: EmbeddedStore) -> Result<RedbJournal, String> {
        store
            .write(|txn| {
                txn.open_table(EXECUTIONS)
                    .map_err(|e| StoreError::Internal(e.to_string()))?;
                Ok(())
            })
            .await
            .map_err(|e| e.to_string())?;
        let db = store.database();
        Ok(RedbJournal { store, db })
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
        self.store
            .write(move |txn| {
                let mut table = txn
                    .open_table(EXECUTIONS)
                    .map_err(|e| StoreError::Internal(e.to_string()))?;
                table
                    .insert(name.as_str(), bytes.as_slice())
                    .map_err(|e| StoreError::Internal(e.to_string()))?;
                Ok(())
            })
            .await
            .map_err(journal_error)
    }
}

/// The step tasks' view of the workflow: they only deliver decisions to
/// parked tasks, through the runner that exists once the steps have been
/// wired into it.
///
/// It holds the workflow weakly: the workflow owns the runner, which owns
/// the steps, which own this — a strong reference would be a cycle that
/// keeps the database open forever.
#[derive(Default)]
pub struct RunnerCallbacks {
    workflow: OnceLock<Weak<LocalWorkflow>>,
}

impl RunnerCallbacks {
    fn workflow(&self) -> Result<Arc<LocalWorkflow>, WorkflowError> {
        self.workflow
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| WorkflowError::Unavailable("the local runner is not running".into()))
    }
}

fn not_for_steps() -> WorkflowError {
    WorkflowError::Failed("steps do not start, describe or redrive executions".into())
}

#[async_trait]
impl Workflow for RunnerCallbacks {
    async fn start(&self, _: &PurchaseId) -> Result<(), WorkflowError> {
        Err(not_for_steps())
    }

    async fn describe(&self, _: &PurchaseId) -> Result<Option<ExecutionState>, WorkflowError> {
        Err(not_for_steps())
    }

    async fn notify(&self, task_token: &str, decision: TaskDecision) -> Result<(), WorkflowError> {
        self.workflow()?.notify(task_token, decision).await
    }

    async fn redrive(&self, _: &PurchaseId) -> Result<(), WorkflowError> {
        Err(not_for_steps())
    }
}

/// Starts, resumes, describes and redrives purchase executions in-process.
pub struct LocalWorkflow {
    runner: Runner,
    journal: Arc<RedbJournal>,
    /// Executions this process runs now, so a second start is a no-op even
    /// before the first checkpoint is written, and `describe` sees them.
    running: Arc<Mutex<HashSet<String>>>,
    /// The tasks running them, stopped by [`LocalWorkflow::shutdown`].
    tasks: Mutex<JoinSet<()>>,
}

impl LocalWorkflow {
    /// `callbacks` must be the `workflow` of `deps`: it is connected to the
    /// runner here, closing the loop steps → runner → steps.
    pub async fn new(
        deps: StepDeps,
        callbacks: Arc<RunnerCallbacks>,
        store: EmbeddedStore,
        hook: Option<Arc<dyn StepHook>>,
        delay_scale: f64,
    ) -> Result<Arc<LocalWorkflow>, String> {
        let machine = StateMachine::from_json(DEFINITION, &local_substitutions())
            .map_err(|e| e.to_string())?;
        let journal = Arc::new(RedbJournal::new(store).await?);
        let invoker = Arc::new(StepInvoker { deps, hook });
        let runner =
            Runner::new(Arc::new(machine), invoker, journal.clone()).with_delay_scale(delay_scale);
        let workflow = Arc::new(LocalWorkflow {
            runner,
            journal,
            running: Arc::new(Mutex::new(HashSet::new())),
            tasks: Mutex::new(JoinSet::new()),
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

    /// Whether this process runs the execution now (started, resumed or
    /// redriven, and not ended).
    pub fn is_running(&self, execution_name: &str) -> bool {
        self.running().contains(execution_name)
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `execution` in the background unless this process runs it already.
    fn spawn(
        &self,
        name: &str,
        execution: impl Future<Output = Option<asl::ExecutionOutcome>> + Send + 'static,
    ) -> bool {
        if !self.running().insert(name.to_owned()) {
            return false;
        }
        let running = Arc::clone(&self.running);
        let name = name.to_owned();
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        // Reap finished tasks so the set does not grow with every purchase.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            let outcome = execution.await;
            tracing::info!(execution = %name, ?outcome, "execution ended");
            running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&name);
        });
        true
    }

    /// Continues every execution a previous process left running; returns how many.
    pub async fn resume_unfinished(&self) -> Result<usize, String> {
        let journal = Arc::clone(&self.journal);
        let unfinished = tokio::task::spawn_blocking(move || journal.unfinished())
            .await
            .map_err(|e| e.to_string())??;
        let count = unfinished.len();
        for checkpoint in unfinished {
            let runner = self.runner.clone();
            let name = checkpoint.execution_name.clone();
            self.spawn(&name, async move { Some(runner.resume(checkpoint).await) });
        }
        Ok(count)
    }

    /// Stops every execution this process runs, as a process exit would:
    /// their checkpoints stay, and the next start resumes them.
    pub async fn shutdown(&self) {
        let mut tasks =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        self.running().clear();
    }
}

fn token_error(error: TaskTokenError) -> WorkflowError {
    // An unknown token: the task is gone (completed, timed out, or never
    // issued), exactly Step Functions' TaskDoesNotExist / TaskTimedOut.
    WorkflowError::TaskGone(error.to_string())
}

#[async_trait]
impl Workflow for LocalWorkflow {
    async fn start(&self, purchase_id: &PurchaseId) -> Result<(), WorkflowError> {
        let name = purchase_id.as_str();
        if self.running().contains(name) {
            return Ok(());
        }
        let existing = self.journal.get(name).map_err(WorkflowError::Unavailable)?;
        if existing.is_some() {
            return Ok(()); // like Step Functions: one execution per name
        }
        let runner = self.runner.clone();
        let owned = name.to_owned();
        self.spawn(name, async move {
            Some(
                runner
                    .start(&owned, execution_input(&PurchaseId::new(owned.clone())))
                    .await,
            )
        });
        Ok(())
    }

    async fn describe(
        &self,
        purchase_id: &PurchaseId,
    ) -> Result<Option<ExecutionState>, WorkflowError> {
        if self.running().contains(purchase_id.as_str()) {
            return Ok(Some(ExecutionState::Running));
        }
        let checkpoint = self
            .journal
            .get(purchase_id.as_str())
            .map_err(WorkflowError::Unavailable)?;
        Ok(checkpoint.map(|checkpoint| match checkpoint.status {
            ExecutionStatus::Running => ExecutionState::Running,
            ExecutionStatus::Succeeded => ExecutionState::Succeeded,
            ExecutionStatus::Failed => ExecutionState::Failed,
        }))
    }

    async fn notify(&self, task_token: &str, decision: TaskDecision) -> Result<(), WorkflowError> {
        match (decision, task_failure(decision)) {
            (TaskDecision::Resume { at }, _) => self
                .runner
                .send_task_success(task_token, task_output(at))
                .map_err(token_error),
            (_, Some((error, cause))) => self
                .runner
                .send_task_failure(task_token, error, cause)
                .map_err(token_error),
            (_, None) => Ok(()),
        }
    }

    async fn redrive(&self, purchase_id: &PurchaseId) -> Result<(), WorkflowError> {
        let name = purchase_id.as_str();
        if self.running().contains(name) {
            // Still ending (the purchase says NEEDS_ATTENTION a moment
            // before its execution has failed), or redriven already: either
            // way, not now — as Step Functions answers.
            return Err(WorkflowError::Unavailable(format!(
                "the execution of purchase {purchase_id} is still running; retry in a moment"
            )));
        }
        let checkpoint = self
            .journal
            .get(name)
            .map_err(WorkflowError::Unavailable)?
            .filter(|c| c.status == ExecutionStatus::Failed)
            .ok_or_else(|| {
                WorkflowError::NotAllowed(format!(
                    "the execution of purchase {purchase_id} cannot be redriven"
                ))
            })?;
        let runner = self.runner.clone();
        self.spawn(name, async move { runner.redrive(checkpoint).await });
        Ok(())
    }
}
