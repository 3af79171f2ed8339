//! The workflow port in local mode: both state machines
//! (`statemachine/purchase.asl.json` and `review.asl.json`) run by
//! in-process [`asl::Runner`]s. Their Lambda Task states call the step
//! functions directly; their `states:startExecution` Task states start the
//! other machine's executions, as Step Functions' integration does.
//!
//! The purchase machine runs with the semantics of its `WORKFLOW_TYPE`:
//!
//! - `STANDARD` (and the review machine, always): one execution per name,
//!   checkpoints journaled in the embedded database, so executions survive a
//!   restart and can be described and redriven, as Step Functions' can.
//! - `EXPRESS`: every start runs (a duplicate name runs side by side), an
//!   execution ends after five minutes, and nothing is journaled: a restart
//!   loses the runs in flight, as Step Functions loses an Express execution,
//!   and the reconciler replaces them. They cannot be described or redriven;
//!   their last checkpoints are kept in memory for inspection only (the
//!   CloudWatch Logs of local mode).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use asl::{
    Checkpoint, ExecutionJournal, ExecutionOutcome, ExecutionStatus, JournalError, Runner,
    StateMachine, TaskContext, TaskFailure, TaskInvoker, TaskTokenError,
};
use async_trait::async_trait;
use chrono::{SecondsFormat, Utc};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::{Value, json};
use shared::adapters::embedded::EmbeddedStore;
use shared::domain::PurchaseId;
use shared::domain::purchase::TaskDecision;
use shared::ports::store::StoreError;
use shared::ports::workflow::{
    DEFINITION, ExecutionState, Machine, REVIEW_DEFINITION, Run, Workflow, WorkflowError,
    WorkflowType, execution_input, task_failure, task_output,
};
use shared::steps::{Step, StepDeps};
use tokio::task::JoinSet;

/// Purchase machine runs (`STANDARD`): executionName → latest Checkpoint (JSON).
const EXECUTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("executions");

/// Review machine executions: executionName → latest Checkpoint (JSON).
const REVIEW_EXECUTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("review-executions");

/// The Step Functions service integration for invoking a Lambda function.
const LAMBDA_INVOKE: &str = "arn:aws:states:::lambda:invoke";

/// The Step Functions service integration for starting an execution
/// (request-response: the task ends once the execution is started).
const START_EXECUTION: &str = "arn:aws:states:::states:startExecution";

/// The prefix local Task resources get instead of a Lambda ARN.
pub const LOCAL_RESOURCE_PREFIX: &str = "local:";

/// How long an `EXPRESS` execution may run, as on Step Functions.
pub const EXPRESS_LIMIT: Duration = Duration::from_secs(300);

/// How many ended `EXPRESS` runs keep their last checkpoint in memory.
const EXPRESS_KEPT: usize = 10_000;

/// A machine's name in local mode (`$$.StateMachine.Name`).
fn machine_name(machine: Machine) -> &'static str {
    match machine {
        Machine::Purchase => "purchase",
        Machine::Review => "review",
    }
}

/// A machine's ARN in local mode, as its definition's substitutions name it.
pub fn machine_arn(machine: Machine) -> String {
    format!(
        "arn:aws:states:local:000000000000:stateMachine:{}",
        machine_name(machine)
    )
}

/// The `DefinitionSubstitutions` local mode uses: every `${XFunctionArn}`
/// becomes `local:<function-name>`, and each machine's ARN its local one.
pub fn local_substitutions() -> HashMap<String, String> {
    let mut substitutions: HashMap<String, String> = Step::ALL
        .into_iter()
        .map(|step| {
            (
                step.arn_placeholder(),
                format!("{LOCAL_RESOURCE_PREFIX}{}", step.function_name()),
            )
        })
        .collect();
    substitutions.insert(
        "PurchaseStateMachineArn".into(),
        machine_arn(Machine::Purchase),
    );
    substitutions.insert("ReviewStateMachineArn".into(), machine_arn(Machine::Review));
    substitutions
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
    /// For `states:startExecution`: the workflow both runners belong to.
    callbacks: Arc<RunnerCallbacks>,
}

impl StepInvoker {
    /// `arn:aws:states:::states:startExecution` with `StateMachineArn`,
    /// `Name` and `Input` (an object, or a JSON string), answering as Step
    /// Functions does: `{"ExecutionArn", "StartDate"}`, or the integration's
    /// error names.
    fn start_execution(&self, parameters: &Value) -> Result<Value, TaskFailure> {
        let failure = |error: &str, cause: String| {
            TaskFailure::new(format!("StepFunctions.{error}Exception"), cause)
        };
        let arn = parameters
            .get("StateMachineArn")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let machine = [Machine::Purchase, Machine::Review]
            .into_iter()
            .find(|m| machine_arn(*m) == arn)
            .ok_or_else(|| {
                failure(
                    "StateMachineDoesNotExist",
                    format!("no local state machine {arn:?}"),
                )
            })?;
        let name = match parameters.get("Name") {
            None => uuid::Uuid::now_v7().to_string(),
            Some(Value::String(name)) if valid_execution_name(name) => name.clone(),
            Some(other) => {
                return Err(failure(
                    "InvalidName",
                    format!("{other} is not a valid execution name"),
                ));
            }
        };
        let input = match parameters.get("Input") {
            None => json!({}),
            Some(Value::String(text)) => serde_json::from_str(text)
                .map_err(|e| failure("InvalidExecutionInput", format!("Input is not JSON: {e}")))?,
            Some(value) => value.clone(),
        };
        let workflow = self
            .callbacks
            .workflow()
            .map_err(|e| TaskFailure::new("States.TaskFailed", e.to_string()))?;
        match workflow.start_execution(machine, &name, input) {
            Ok(execution_arn) => Ok(json!({
                "ExecutionArn": execution_arn,
                "StartDate": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            })),
            Err(StartRefused::AlreadyExists) => Err(failure(
                "ExecutionAlreadyExists",
                format!("an execution named {name:?} already exists"),
            )),
            Err(StartRefused::Journal(error)) => Err(TaskFailure::new("States.TaskFailed", error)),
        }
    }
}

/// Step Functions' rule for execution names: 1 to 80 characters, none of
/// whitespace, brackets, wildcards, `"#%\^|~`$&,;:/` or control characters.
fn valid_execution_name(name: &str) -> bool {
    (1..=80).contains(&name.chars().count())
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>{}[]?*\"#%\\^|~`$&,;:/".contains(c))
}

#[async_trait]
impl TaskInvoker for StepInvoker {
    async fn invoke(
        &self,
        resource: &str,
        input: Value,
        context: &TaskContext,
    ) -> Result<Value, TaskFailure> {
        if resource == START_EXECUTION {
            return self.start_execution(&input);
        }
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

fn journal_error(error: impl std::fmt::Display) -> JournalError {
    JournalError::new(error.to_string())
}

/// A machine's checkpoints, as the runner writes them and this module reads them.
trait Checkpoints: ExecutionJournal {
    /// The latest checkpoint of the execution named `name`.
    fn latest(&self, name: &str) -> Result<Option<Checkpoint>, String>;
    /// The executions a previous process left running.
    fn unfinished(&self) -> Result<Vec<Checkpoint>, String>;
}

/// Checkpoints in the embedded database, one table per machine. Written
/// through the store's writer, so checkpoints share durable commits with the
/// steps' own writes.
struct RedbJournal {
    store: EmbeddedStore,
    db: Arc<Database>,
    table: TableDefinition<'static, &'static str, &'static [u8]>,
}

impl RedbJournal {
    async fn new(
        store: EmbeddedStore,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
    ) -> Result<RedbJournal, String> {
        store
            .write(move |txn| {
                txn.open_table(table)
                    .map_err(|e| StoreError::Internal(e.to_string()))?;
                Ok(())
            })
            .await
            .map_err(|e| e.to_string())?;
        let db = store.database();
        Ok(RedbJournal { store, db, table })
    }
}

impl Checkpoints for RedbJournal {
    fn latest(&self, name: &str) -> Result<Option<Checkpoint>, String> {
        let txn = self.db.begin_read().map_err(|e| e.to_string())?;
        let table = txn.open_table(self.table).map_err(|e| e.to_string())?;
        match table.get(name).map_err(|e| e.to_string())? {
            Some(bytes) => serde_json::from_slice(bytes.value())
                .map(Some)
                .map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }

    fn unfinished(&self) -> Result<Vec<Checkpoint>, String> {
        let txn = self.db.begin_read().map_err(|e| e.to_string())?;
        let table = txn.open_table(self.table).map_err(|e| e.to_string())?;
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
        let table = self.table;
        self.store
            .write(move |txn| {
                let mut table = txn
                    .open_table(table)
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

/// `EXPRESS` runs' last checkpoints, in memory: nothing to resume after a
/// restart. The most recent [`EXPRESS_KEPT`] ended runs are kept.
#[derive(Default)]
struct MemoryJournal {
    inner: Mutex<MemoryCheckpoints>,
}

#[derive(Default)]
struct MemoryCheckpoints {
    latest: HashMap<String, Checkpoint>,
    ended: VecDeque<String>,
}

impl MemoryJournal {
    fn lock(&self) -> MutexGuard<'_, MemoryCheckpoints> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Checkpoints for MemoryJournal {
    fn latest(&self, name: &str) -> Result<Option<Checkpoint>, String> {
        Ok(self.lock().latest.get(name).cloned())
    }

    fn unfinished(&self) -> Result<Vec<Checkpoint>, String> {
        Ok(Vec::new()) // lost with the process that ran them
    }
}

#[async_trait]
impl ExecutionJournal for MemoryJournal {
    async fn save(&self, checkpoint: &Checkpoint) -> Result<(), JournalError> {
        let mut kept = self.lock();
        let name = checkpoint.execution_name.clone();
        if checkpoint.status != ExecutionStatus::Running {
            kept.ended.push_back(name.clone());
            while kept.ended.len() > EXPRESS_KEPT {
                if let Some(oldest) = kept.ended.pop_front() {
                    let running = kept
                        .latest
                        .get(&oldest)
                        .is_some_and(|c| c.status == ExecutionStatus::Running);
                    if !running {
                        kept.latest.remove(&oldest);
                    }
                }
            }
        }
        kept.latest.insert(name, checkpoint.clone());
        Ok(())
    }
}

/// The step tasks' and the invoker's view of the workflow: the steps only
/// deliver decisions to parked tasks, the invoker starts executions, through
/// the workflow that exists once the steps have been wired into it.
///
/// It holds the workflow weakly: the workflow owns the runners, which own
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
    fn workflow_type(&self) -> WorkflowType {
        self.workflow()
            .map(|workflow| workflow.workflow_type)
            .unwrap_or_default()
    }

    async fn start(&self, _: &Run) -> Result<(), WorkflowError> {
        Err(not_for_steps())
    }

    async fn describe(&self, _: Machine, _: &Run) -> Result<Option<ExecutionState>, WorkflowError> {
        Err(not_for_steps())
    }

    async fn notify(&self, task_token: &str, decision: TaskDecision) -> Result<(), WorkflowError> {
        self.workflow()?.notify(task_token, decision).await
    }

    async fn redrive(&self, _: &Run) -> Result<(), WorkflowError> {
        Err(not_for_steps())
    }
}

/// One state machine, as local mode runs it.
struct LocalMachine {
    runner: Runner,
    journal: Arc<dyn Checkpoints>,
    /// Step Functions' `EXPRESS` semantics (see the module's documentation).
    express: bool,
}

/// Why a start did not start anything.
enum StartRefused {
    /// A `STANDARD` execution of that name exists (closed, or running with
    /// another input).
    AlreadyExists,
    Journal(String),
}

/// An execution this process runs now.
struct RunningExecution {
    machine: Machine,
    name: String,
    input: Value,
}

/// Starts, resumes, describes and redrives executions of both machines
/// in-process.
pub struct LocalWorkflow {
    workflow_type: WorkflowType,
    purchase: LocalMachine,
    review: LocalMachine,
    /// Executions this process runs now, by a number of their own (an
    /// `EXPRESS` name may run twice), so a second start of a `STANDARD` one
    /// is refused even before its first checkpoint is written, and
    /// `describe` sees them.
    running: Arc<Mutex<HashMap<u64, RunningExecution>>>,
    next_execution: std::sync::atomic::AtomicU64,
    /// The tasks running them, stopped by [`LocalWorkflow::shutdown`].
    tasks: Mutex<JoinSet<()>>,
}

impl LocalWorkflow {
    /// `callbacks` must be the `workflow` of `deps`: it is connected to the
    /// runners here, closing the loop steps → runners → steps.
    pub async fn new(
        deps: StepDeps,
        callbacks: Arc<RunnerCallbacks>,
        store: EmbeddedStore,
        hook: Option<Arc<dyn StepHook>>,
        delay_scale: f64,
        workflow_type: WorkflowType,
    ) -> Result<Arc<LocalWorkflow>, String> {
        let substitutions = local_substitutions();
        let purchase_machine = StateMachine::from_json(DEFINITION, &substitutions)
            .map_err(|e| format!("purchase machine: {e}"))?
            .with_name(machine_name(Machine::Purchase));
        let review_machine = StateMachine::from_json(REVIEW_DEFINITION, &substitutions)
            .map_err(|e| format!("review machine: {e}"))?
            .with_name(machine_name(Machine::Review));
        let express = workflow_type == WorkflowType::Express;
        if express
            && let Some(callback) = purchase_machine
                .task_resources()
                .into_iter()
                .find(|r| r.ends_with(".waitForTaskToken"))
        {
            // Step Functions refuses to create such an Express machine.
            return Err(format!(
                "purchase machine: an EXPRESS workflow cannot wait for a task token ({callback})"
            ));
        }
        let invoker = Arc::new(StepInvoker {
            deps,
            hook,
            callbacks: callbacks.clone(),
        });
        let purchase_journal: Arc<dyn Checkpoints> = if express {
            Arc::new(MemoryJournal::default())
        } else {
            Arc::new(RedbJournal::new(store.clone(), EXECUTIONS).await?)
        };
        let review_journal: Arc<dyn Checkpoints> =
            Arc::new(RedbJournal::new(store, REVIEW_EXECUTIONS).await?);
        let machine = |definition: StateMachine, journal: &Arc<dyn Checkpoints>, express| {
            let runner = Runner::new(Arc::new(definition), invoker.clone(), journal.clone())
                .with_delay_scale(delay_scale);
            LocalMachine {
                runner,
                journal: journal.clone(),
                express,
            }
        };
        let workflow = Arc::new(LocalWorkflow {
            workflow_type,
            purchase: machine(purchase_machine, &purchase_journal, express),
            review: machine(review_machine, &review_journal, false),
            running: Arc::new(Mutex::new(HashMap::new())),
            next_execution: std::sync::atomic::AtomicU64::new(0),
            tasks: Mutex::new(JoinSet::new()),
        });
        callbacks
            .workflow
            .set(Arc::downgrade(&workflow))
            .map_err(|_| "the runner callbacks are already connected".to_owned())?;
        Ok(workflow)
    }

    fn machine(&self, machine: Machine) -> &LocalMachine {
        match machine {
            Machine::Purchase => &self.purchase,
            Machine::Review => &self.review,
        }
    }

    /// How the purchase machine runs (`WORKFLOW_TYPE`).
    pub fn workflow_type(&self) -> WorkflowType {
        self.workflow_type
    }

    /// The latest checkpoint of a purchase machine execution (its status,
    /// where it is).
    pub fn checkpoint(&self, execution_name: &str) -> Result<Option<Checkpoint>, String> {
        self.execution_checkpoint(Machine::Purchase, execution_name)
    }

    /// The latest checkpoint of an execution of `machine`.
    pub fn execution_checkpoint(
        &self,
        machine: Machine,
        execution_name: &str,
    ) -> Result<Option<Checkpoint>, String> {
        self.machine(machine).journal.latest(execution_name)
    }

    /// Whether this process runs a purchase machine execution of that name
    /// now (started, resumed or redriven, and not ended).
    pub fn is_running(&self, execution_name: &str) -> bool {
        self.is_execution_running(Machine::Purchase, execution_name)
    }

    /// Whether this process runs an execution of `machine` of that name now.
    pub fn is_execution_running(&self, machine: Machine, execution_name: &str) -> bool {
        self.running()
            .values()
            .any(|e| e.machine == machine && e.name == execution_name)
    }

    /// The executions of a purchase's runs (on either machine) this process
    /// runs now, as (machine, execution name).
    pub fn running_executions(&self, purchase_id: &PurchaseId) -> Vec<(Machine, String)> {
        self.running()
            .values()
            .filter(|e| Run::parse(purchase_id, &e.name).is_some())
            .map(|e| (e.machine, e.name.clone()))
            .collect()
    }

    fn running(&self) -> MutexGuard<'_, HashMap<u64, RunningExecution>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts an execution as running, under the caller's lock on
    /// `running` (so a start racing it sees it), before it is spawned.
    fn register(
        &self,
        running: &mut HashMap<u64, RunningExecution>,
        machine: Machine,
        name: &str,
        input: Value,
    ) -> u64 {
        let key = self
            .next_execution
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = name.to_owned();
        running.insert(
            key,
            RunningExecution {
                machine,
                name,
                input,
            },
        );
        key
    }

    /// Runs a registered execution in the background; it no longer counts
    /// as running once it ends.
    fn spawn(
        &self,
        key: u64,
        name: &str,
        execution: impl Future<Output = Option<ExecutionOutcome>> + Send + 'static,
    ) {
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
                .remove(&key);
        });
    }

    /// Starts an execution of `machine` named `name`, as `StartExecution`
    /// does: a `STANDARD` name runs once (the same input while it runs is
    /// the same start; anything else already exists), an `EXPRESS` start
    /// always runs. Returns the execution's ARN.
    fn start_execution(
        &self,
        machine: Machine,
        name: &str,
        input: Value,
    ) -> Result<String, StartRefused> {
        let local = self.machine(machine);
        let arn = machine_arn(machine);
        let runner = local.runner.clone();
        let owned = name.to_owned();
        if local.express {
            let key = self.register(&mut self.running(), machine, name, input.clone());
            let journal = local.journal.clone();
            self.spawn(key, name, express_run(runner, journal, owned, input));
            return Ok(format!(
                "{}:{name}:{key}",
                arn.replace(":stateMachine:", ":express:")
            ));
        }
        let execution_arn = format!("{}:{name}", arn.replace(":stateMachine:", ":execution:"));
        // Checked and registered under one lock: two starts racing cannot
        // both run it.
        let mut running = self.running();
        if let Some(existing) = running
            .values()
            .find(|e| e.machine == machine && e.name == name)
        {
            return if existing.input == input {
                Ok(execution_arn)
            } else {
                Err(StartRefused::AlreadyExists)
            };
        }
        if local
            .journal
            .latest(name)
            .map_err(StartRefused::Journal)?
            .is_some()
        {
            return Err(StartRefused::AlreadyExists);
        }
        let key = self.register(&mut running, machine, name, input.clone());
        drop(running);
        self.spawn(
            key,
            name,
            async move { Some(runner.start(&owned, input).await) },
        );
        Ok(execution_arn)
    }

    /// Continues every `STANDARD` execution a previous process left
    /// running; returns how many. (`EXPRESS` runs are gone with it.)
    pub async fn resume_unfinished(&self) -> Result<usize, String> {
        let mut count = 0;
        for machine in [Machine::Purchase, Machine::Review] {
            let local = self.machine(machine);
            let journal = local.journal.clone();
            let unfinished = tokio::task::spawn_blocking(move || journal.unfinished())
                .await
                .map_err(|e| e.to_string())??;
            count += unfinished.len();
            for checkpoint in unfinished {
                let runner = local.runner.clone();
                let name = checkpoint.execution_name.clone();
                let input = checkpoint.execution_input.clone();
                let key = self.register(&mut self.running(), machine, &name, input);
                self.spawn(
                    key,
                    &name,
                    async move { Some(runner.resume(checkpoint).await) },
                );
            }
        }
        Ok(count)
    }

    /// Stops every execution this process runs, as a process exit would:
    /// `STANDARD` checkpoints stay, and the next start resumes them.
    pub async fn shutdown(&self) {
        let mut tasks =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        self.running().clear();
    }
}

/// Runs an `EXPRESS` execution for at most [`EXPRESS_LIMIT`]; one still
/// going then ends there, timed out, whatever it was doing.
async fn express_run(
    runner: Runner,
    journal: Arc<dyn Checkpoints>,
    name: String,
    input: Value,
) -> Option<ExecutionOutcome> {
    match tokio::time::timeout(EXPRESS_LIMIT, runner.start(&name, input)).await {
        Ok(outcome) => Some(outcome),
        Err(_) => {
            tracing::warn!(execution = %name, "EXPRESS execution timed out");
            if let Ok(Some(mut last)) = journal.latest(&name) {
                last.status = ExecutionStatus::Failed;
                last.error = Some(TaskFailure::new(
                    "States.Timeout",
                    "the execution ran longer than an EXPRESS execution may",
                ));
                last.updated_at = Utc::now();
                let _ = journal.save(&last).await;
            }
            Some(ExecutionOutcome::Failed {
                error: "States.Timeout".into(),
                cause: "EXPRESS execution time limit".into(),
            })
        }
    }
}

fn token_error(error: TaskTokenError) -> WorkflowError {
    // An unknown token: the task is gone (completed, timed out, or never
    // issued), exactly Step Functions' TaskDoesNotExist / TaskTimedOut.
    WorkflowError::TaskGone(error.to_string())
}

#[async_trait]
impl Workflow for LocalWorkflow {
    fn workflow_type(&self) -> WorkflowType {
        self.workflow_type
    }

    async fn start(&self, run: &Run) -> Result<(), WorkflowError> {
        match self.start_execution(
            Machine::Purchase,
            &run.name(),
            execution_input(&run.purchase_id),
        ) {
            // Like Step Functions for a STANDARD machine: one execution per name.
            Ok(_) | Err(StartRefused::AlreadyExists) => Ok(()),
            Err(StartRefused::Journal(error)) => Err(WorkflowError::Unavailable(error)),
        }
    }

    async fn describe(
        &self,
        machine: Machine,
        run: &Run,
    ) -> Result<Option<ExecutionState>, WorkflowError> {
        let local = self.machine(machine);
        if local.express {
            return Err(WorkflowError::Failed(
                "EXPRESS executions keep no history: they cannot be described".into(),
            ));
        }
        let name = run.name();
        if self.is_execution_running(machine, &name) {
            return Ok(Some(ExecutionState::Running));
        }
        let checkpoint = local
            .journal
            .latest(&name)
            .map_err(WorkflowError::Unavailable)?;
        Ok(checkpoint.map(|checkpoint| match checkpoint.status {
            ExecutionStatus::Running => ExecutionState::Running,
            ExecutionStatus::Succeeded => ExecutionState::Succeeded,
            ExecutionStatus::Failed => ExecutionState::Failed,
        }))
    }

    async fn notify(&self, task_token: &str, decision: TaskDecision) -> Result<(), WorkflowError> {
        // Only the review machine waits for task tokens.
        let runner = &self.review.runner;
        match (decision, task_failure(decision)) {
            (TaskDecision::Resume { at }, _) => runner
                .send_task_success(task_token, task_output(at))
                .map_err(token_error),
            (_, Some((error, cause))) => runner
                .send_task_failure(task_token, error, cause)
                .map_err(token_error),
            (_, None) => Ok(()),
        }
    }

    async fn redrive(&self, run: &Run) -> Result<(), WorkflowError> {
        let name = run.name();
        if self.purchase.express {
            return Err(WorkflowError::NotAllowed(format!(
                "the execution of purchase {} (run {}) is EXPRESS: it cannot be redriven",
                run.purchase_id, run.number
            )));
        }
        let mut running = self.running();
        if running
            .values()
            .any(|e| e.machine == Machine::Purchase && e.name == name)
        {
            // Still ending (the purchase says NEEDS_ATTENTION a moment
            // before its execution has failed), or redriven already: either
            // way, not now — as Step Functions answers.
            return Err(WorkflowError::Unavailable(format!(
                "the execution of purchase {} (run {}) is still running; retry in a moment",
                run.purchase_id, run.number
            )));
        }
        let checkpoint = self
            .purchase
            .journal
            .latest(&name)
            .map_err(WorkflowError::Unavailable)?
            .filter(|c| c.status == ExecutionStatus::Failed)
            .ok_or_else(|| {
                WorkflowError::NotAllowed(format!(
                    "the execution of purchase {} (run {}) cannot be redriven",
                    run.purchase_id, run.number
                ))
            })?;
        let input = checkpoint.execution_input.clone();
        let key = self.register(&mut running, Machine::Purchase, &name, input);
        drop(running);
        let runner = self.purchase.runner.clone();
        self.spawn(key, &name, async move { runner.redrive(checkpoint).await });
        Ok(())
    }
}
