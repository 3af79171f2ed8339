//! Executions of a set of state machines, run in-process by [`asl::Runner`]s
//! with Step Functions' semantics for each machine's type. Local mode's
//! workflow ([`crate::workflow`]) runs its two machines here, and so does
//! the Step Functions endpoint of `aws-local` for the template's machines:
//! one set of rules for starting, describing, redriving and resuming.
//!
//! - `STANDARD`: one execution per name (the same input while it runs is
//!   the same start; a closed one already exists), checkpoints journaled in
//!   a table of an [`EmbeddedStore`], so executions survive a restart and
//!   can be described and redriven, as Step Functions' can.
//! - `EXPRESS`: every start runs (a duplicate name runs side by side), an
//!   execution ends after five minutes, and nothing is journaled: a restart
//!   loses the runs in flight, as Step Functions loses an Express execution.
//!   They cannot be described or redriven; their last checkpoints are kept
//!   in memory for inspection only (the CloudWatch Logs of local mode).
//!
//! Machines are named by their ARN ([`StateMachine::with_arn`]); an
//! execution's ARN is derived from it as Step Functions derives it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use asl::{
    Checkpoint, ExecutionJournal, ExecutionOutcome, ExecutionStatus, JournalError, Runner,
    StateMachine, TaskFailure, TaskInvoker, TaskTokenError,
};
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::{Value, json};
use shared::adapters::embedded::EmbeddedStore;
use shared::ports::store::StoreError;
use tokio::task::JoinSet;

/// The Step Functions service integration for starting an execution
/// (request-response: the task ends once the execution is started).
pub const START_EXECUTION: &str = "arn:aws:states:::states:startExecution";

/// How long an `EXPRESS` execution may run, as on Step Functions.
pub const EXPRESS_LIMIT: Duration = Duration::from_secs(300);

/// How many ended `EXPRESS` runs keep their last checkpoint in memory.
const EXPRESS_KEPT: usize = 10_000;

/// One machine to run: its definition (named, with its ARN) and its type.
pub struct MachineDefinition {
    pub definition: StateMachine,
    pub kind: MachineKind,
}

/// A machine's type, and so where its executions are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachineKind {
    /// Journaled in `table` of the store (see the module's documentation).
    Standard { table: String },
    /// In memory only.
    Express,
}

/// A started execution.
#[derive(Debug, Clone, PartialEq)]
pub struct Started {
    pub execution_arn: String,
    pub start_date: DateTime<Utc>,
}

/// Why a start did not start anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartRefused {
    NoSuchMachine,
    /// A `STANDARD` execution of that name exists (closed, or running with
    /// another input).
    AlreadyExists,
    Journal(String),
}

/// Why a redrive did not redrive anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedriveRefused {
    NoSuchMachine,
    /// `EXPRESS` executions keep no history to redrive from.
    Express,
    /// Still running in this process (ending, or redriven already).
    Running,
    /// No execution of that name.
    NotFound,
    /// It succeeded: only a failed execution can be redriven.
    NotFailed,
    Journal(String),
}

/// What is known of an execution: how it stands, and its last checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionRecord {
    pub status: ExecutionStatus,
    pub input: Value,
    pub started_at: DateTime<Utc>,
    /// `None` while a just-started execution has written none yet.
    pub last: Option<Checkpoint>,
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

/// Checkpoints in a table of the embedded store. Written through the
/// store's writer, so checkpoints share durable commits with the steps'
/// own writes.
struct RedbJournal {
    store: EmbeddedStore,
    db: Arc<Database>,
    table: Arc<str>,
}

fn table_of(name: &str) -> TableDefinition<'_, &'static str, &'static [u8]> {
    TableDefinition::new(name)
}

impl RedbJournal {
    async fn new(store: EmbeddedStore, table: &str) -> Result<RedbJournal, String> {
        let table: Arc<str> = Arc::from(table);
        let name = Arc::clone(&table);
        store
            .write(move |txn| {
                txn.open_table(table_of(&name))
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
        let table = txn
            .open_table(table_of(&self.table))
            .map_err(|e| e.to_string())?;
        match table.get(name).map_err(|e| e.to_string())? {
            Some(bytes) => serde_json::from_slice(bytes.value())
                .map(Some)
                .map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }

    fn unfinished(&self) -> Result<Vec<Checkpoint>, String> {
        let txn = self.db.begin_read().map_err(|e| e.to_string())?;
        let table = txn
            .open_table(table_of(&self.table))
            .map_err(|e| e.to_string())?;
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
        let table = Arc::clone(&self.table);
        self.store
            .write(move |txn| {
                let mut table = txn
                    .open_table(table_of(&table))
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

/// One state machine, as it runs here.
struct HostedMachine {
    arn: String,
    runner: Runner,
    journal: Arc<dyn Checkpoints>,
    /// Step Functions' `EXPRESS` semantics (see the module's documentation).
    express: bool,
}

/// An execution this process runs now.
struct RunningExecution {
    /// Index into [`Executions::machines`].
    machine: usize,
    name: String,
    input: Value,
    started_at: DateTime<Utc>,
}

/// Step Functions' rule for execution names: 1 to 80 characters, none of
/// whitespace, brackets, wildcards, `"#%\^|~`$&,;:/` or control characters.
pub fn valid_execution_name(name: &str) -> bool {
    (1..=80).contains(&name.chars().count())
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>{}[]?*\"#%\\^|~`$&,;:/".contains(c))
}

/// Starts, resumes, describes and redrives the executions of a set of
/// state machines, and delivers their task tokens.
pub struct Executions {
    machines: Vec<HostedMachine>,
    /// Executions this process runs now, by a number of their own (an
    /// `EXPRESS` name may run twice), so a second start of a `STANDARD` one
    /// is refused even before its first checkpoint is written, and
    /// `describe` sees them.
    running: Arc<Mutex<HashMap<u64, RunningExecution>>>,
    next_execution: AtomicU64,
    /// The tasks running them, stopped by [`Executions::shutdown`].
    tasks: Mutex<JoinSet<()>>,
}

impl Executions {
    /// Runs `machines`, their Task states run by `invoker`; `STANDARD`
    /// ones journaled in `store`. Refuses what Step Functions refuses at
    /// creation: an `EXPRESS` machine waiting for a task token.
    pub async fn new(
        machines: Vec<MachineDefinition>,
        invoker: Arc<dyn TaskInvoker>,
        store: &EmbeddedStore,
        delay_scale: f64,
    ) -> Result<Executions, String> {
        let mut hosted = Vec::with_capacity(machines.len());
        for MachineDefinition { definition, kind } in machines {
            let journal: Arc<dyn Checkpoints> = match &kind {
                MachineKind::Express => {
                    if let Some(callback) = definition
                        .task_resources()
                        .into_iter()
                        .find(|r| r.ends_with(".waitForTaskToken"))
                    {
                        return Err(format!(
                            "{} machine: an EXPRESS workflow cannot wait for a task token ({callback})",
                            definition.name()
                        ));
                    }
                    Arc::new(MemoryJournal::default())
                }
                MachineKind::Standard { table } => {
                    Arc::new(RedbJournal::new(store.clone(), table).await?)
                }
            };
            let arn = definition.arn();
            let runner = Runner::new(Arc::new(definition), invoker.clone(), journal.clone())
                .with_delay_scale(delay_scale);
            hosted.push(HostedMachine {
                arn,
                runner,
                journal,
                express: kind == MachineKind::Express,
            });
        }
        Ok(Executions {
            machines: hosted,
            running: Arc::new(Mutex::new(HashMap::new())),
            next_execution: AtomicU64::new(0),
            tasks: Mutex::new(JoinSet::new()),
        })
    }

    fn index(&self, machine_arn: &str) -> Option<usize> {
        self.machines.iter().position(|m| m.arn == machine_arn)
    }

    fn machine(&self, machine_arn: &str) -> Option<&HostedMachine> {
        self.machines.iter().find(|m| m.arn == machine_arn)
    }

    /// Whether `machine_arn` runs here as an `EXPRESS` machine (`None`: no
    /// such machine).
    pub fn is_express(&self, machine_arn: &str) -> Option<bool> {
        self.machine(machine_arn).map(|m| m.express)
    }

    /// The ARN of an execution named `name` of a `STANDARD` machine.
    pub fn execution_arn(machine_arn: &str, name: &str) -> String {
        format!(
            "{}:{name}",
            machine_arn.replacen(":stateMachine:", ":execution:", 1)
        )
    }

    fn running(&self) -> MutexGuard<'_, HashMap<u64, RunningExecution>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether this process runs an execution of that machine and name now
    /// (started, resumed or redriven, and not ended).
    pub fn is_running(&self, machine_arn: &str, name: &str) -> bool {
        let Some(index) = self.index(machine_arn) else {
            return false;
        };
        self.running()
            .values()
            .any(|e| e.machine == index && e.name == name)
    }

    /// The executions this process runs now, as (machine ARN, name).
    pub fn running_executions(&self) -> Vec<(String, String)> {
        self.running()
            .values()
            .map(|e| (self.machines[e.machine].arn.clone(), e.name.clone()))
            .collect()
    }

    /// The latest checkpoint of an execution.
    pub fn latest(&self, machine_arn: &str, name: &str) -> Result<Option<Checkpoint>, String> {
        match self.machine(machine_arn) {
            Some(machine) => machine.journal.latest(name),
            None => Ok(None),
        }
    }

    /// How an execution stands: running in this process, else as its last
    /// checkpoint says. `None`: no such execution.
    pub fn execution(
        &self,
        machine_arn: &str,
        name: &str,
    ) -> Result<Option<ExecutionRecord>, String> {
        let Some(index) = self.index(machine_arn) else {
            return Ok(None);
        };
        let running = self
            .running()
            .values()
            .find(|e| e.machine == index && e.name == name)
            .map(|e| (e.input.clone(), e.started_at));
        let last = self.machines[index].journal.latest(name)?;
        Ok(match (running, last) {
            (None, None) => None,
            (Some((input, started_at)), last) => Some(ExecutionRecord {
                status: ExecutionStatus::Running,
                input,
                started_at: last.as_ref().map_or(started_at, |c| c.started_at),
                last,
            }),
            (None, Some(last)) => Some(ExecutionRecord {
                status: last.status,
                input: last.execution_input.clone(),
                started_at: last.started_at,
                last: Some(last),
            }),
        })
    }

    /// Counts an execution as running, under the caller's lock on
    /// `running` (so a start racing it sees it), before it is spawned.
    fn register(
        &self,
        running: &mut HashMap<u64, RunningExecution>,
        machine: usize,
        name: &str,
        input: Value,
        started_at: DateTime<Utc>,
    ) -> u64 {
        let key = self.next_execution.fetch_add(1, Ordering::Relaxed);
        running.insert(
            key,
            RunningExecution {
                machine,
                name: name.to_owned(),
                input,
                started_at,
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
        // Reap finished tasks so the set does not grow with every execution.
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

    /// Starts an execution named `name`, as `StartExecution` does: a
    /// `STANDARD` name runs once (the same input while it runs is the same
    /// start; anything else already exists), an `EXPRESS` start always runs.
    pub fn start(
        &self,
        machine_arn: &str,
        name: &str,
        input: Value,
    ) -> Result<Started, StartRefused> {
        let index = self.index(machine_arn).ok_or(StartRefused::NoSuchMachine)?;
        let machine = &self.machines[index];
        let runner = machine.runner.clone();
        let owned = name.to_owned();
        let now = Utc::now();
        if machine.express {
            let key = self.register(&mut self.running(), index, name, input.clone(), now);
            let journal = machine.journal.clone();
            self.spawn(key, name, express_run(runner, journal, owned, input));
            return Ok(Started {
                execution_arn: format!(
                    "{}:{name}:{key}",
                    machine_arn.replacen(":stateMachine:", ":express:", 1)
                ),
                start_date: now,
            });
        }
        let execution_arn = Executions::execution_arn(machine_arn, name);
        // Checked and registered under one lock: two starts racing cannot
        // both run it.
        let mut running = self.running();
        if let Some(existing) = running
            .values()
            .find(|e| e.machine == index && e.name == name)
        {
            return if existing.input == input {
                Ok(Started {
                    execution_arn,
                    start_date: existing.started_at,
                })
            } else {
                Err(StartRefused::AlreadyExists)
            };
        }
        if machine
            .journal
            .latest(name)
            .map_err(StartRefused::Journal)?
            .is_some()
        {
            return Err(StartRefused::AlreadyExists);
        }
        let key = self.register(&mut running, index, name, input.clone(), now);
        drop(running);
        self.spawn(
            key,
            name,
            async move { Some(runner.start(&owned, input).await) },
        );
        Ok(Started {
            execution_arn,
            start_date: now,
        })
    }

    /// `arn:aws:states:::states:startExecution` with `StateMachineArn`,
    /// `Name` and `Input` (an object, or a JSON string), answering as Step
    /// Functions does: `{"ExecutionArn", "StartDate"}`, or the integration's
    /// error names (`StepFunctions.<Error>Exception`).
    pub fn start_execution_task(&self, parameters: &Value) -> Result<Value, TaskFailure> {
        let failure = |error: &str, cause: String| {
            TaskFailure::new(format!("StepFunctions.{error}Exception"), cause)
        };
        let arn = parameters
            .get("StateMachineArn")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if self.index(arn).is_none() {
            return Err(failure(
                "StateMachineDoesNotExist",
                format!("no state machine {arn:?}"),
            ));
        }
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
        match self.start(arn, &name, input) {
            Ok(started) => Ok(json!({
                "ExecutionArn": started.execution_arn,
                "StartDate": started.start_date.to_rfc3339_opts(SecondsFormat::Millis, true),
            })),
            Err(StartRefused::NoSuchMachine) => Err(failure(
                "StateMachineDoesNotExist",
                format!("no state machine {arn:?}"),
            )),
            Err(StartRefused::AlreadyExists) => Err(failure(
                "ExecutionAlreadyExists",
                format!("an execution named {name:?} already exists"),
            )),
            Err(StartRefused::Journal(error)) => Err(TaskFailure::new("States.TaskFailed", error)),
        }
    }

    /// Restarts a failed `STANDARD` execution at the state that failed, as
    /// `RedriveExecution` does.
    pub fn redrive(&self, machine_arn: &str, name: &str) -> Result<(), RedriveRefused> {
        let index = self
            .index(machine_arn)
            .ok_or(RedriveRefused::NoSuchMachine)?;
        let machine = &self.machines[index];
        if machine.express {
            return Err(RedriveRefused::Express);
        }
        let mut running = self.running();
        if running
            .values()
            .any(|e| e.machine == index && e.name == name)
        {
            return Err(RedriveRefused::Running);
        }
        let checkpoint = machine
            .journal
            .latest(name)
            .map_err(RedriveRefused::Journal)?
            .ok_or(RedriveRefused::NotFound)?;
        if checkpoint.status != ExecutionStatus::Failed {
            return Err(RedriveRefused::NotFailed);
        }
        let input = checkpoint.execution_input.clone();
        let key = self.register(&mut running, index, name, input, checkpoint.started_at);
        drop(running);
        let runner = machine.runner.clone();
        self.spawn(key, name, async move { runner.redrive(checkpoint).await });
        Ok(())
    }

    /// Completes the `.waitForTaskToken` task waiting on `token`, whichever
    /// machine's it is.
    pub fn send_task_success(&self, token: &str, output: Value) -> Result<(), TaskTokenError> {
        self.deliver(token, |runner| {
            runner.send_task_success(token, output.clone())
        })
    }

    /// Fails the `.waitForTaskToken` task waiting on `token`.
    pub fn send_task_failure(
        &self,
        token: &str,
        error: &str,
        cause: &str,
    ) -> Result<(), TaskTokenError> {
        self.deliver(token, |runner| {
            runner.send_task_failure(token, error, cause)
        })
    }

    /// Whether a task waits on `token` now (`SendTaskHeartbeat`).
    pub fn is_waiting_on(&self, token: &str) -> bool {
        self.machines.iter().any(|m| m.runner.is_waiting_on(token))
    }

    /// Tokens are unique to a task: at most one runner knows it, and a
    /// runner that does not changes nothing when handed it.
    fn deliver(
        &self,
        token: &str,
        send: impl Fn(&Runner) -> Result<(), TaskTokenError>,
    ) -> Result<(), TaskTokenError> {
        for machine in &self.machines {
            if send(&machine.runner).is_ok() {
                return Ok(());
            }
        }
        Err(TaskTokenError::Unknown(token.to_owned()))
    }

    /// Continues every `STANDARD` execution a previous process left
    /// running; returns how many. (`EXPRESS` runs are gone with it.)
    pub async fn resume_unfinished(&self) -> Result<usize, String> {
        let mut count = 0;
        for (index, machine) in self.machines.iter().enumerate() {
            let journal = machine.journal.clone();
            let unfinished = tokio::task::spawn_blocking(move || journal.unfinished())
                .await
                .map_err(|e| e.to_string())??;
            count += unfinished.len();
            for checkpoint in unfinished {
                let runner = machine.runner.clone();
                let name = checkpoint.execution_name.clone();
                let input = checkpoint.execution_input.clone();
                let key = self.register(
                    &mut self.running(),
                    index,
                    &name,
                    input,
                    checkpoint.started_at,
                );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_names_follow_step_functions_rules() {
        assert!(valid_execution_name(
            "0197a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b-2"
        ));
        assert!(!valid_execution_name(""));
        assert!(!valid_execution_name("a b"));
        assert!(!valid_execution_name("a:b"));
        assert!(!valid_execution_name(&"x".repeat(81)));
    }

    #[test]
    fn an_execution_arn_is_its_machines_with_execution_and_its_name() {
        assert_eq!(
            Executions::execution_arn("arn:aws:states:us-east-1:1:stateMachine:shop-review", "p-1"),
            "arn:aws:states:us-east-1:1:execution:shop-review:p-1"
        );
    }
}
