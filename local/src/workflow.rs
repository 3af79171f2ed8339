//! The workflow port in local mode: both state machines
//! (`statemachine/purchase.asl.json` and `review.asl.json`) run in-process
//! ([`crate::executions`]). Their Lambda Task states call the step
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

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};

use asl::{Checkpoint, ExecutionStatus, StateMachine, TaskContext, TaskFailure, TaskInvoker};
use async_trait::async_trait;
use serde_json::Value;
use shared::adapters::embedded::EmbeddedStore;
use shared::domain::PurchaseId;
use shared::domain::purchase::TaskDecision;
use shared::ports::workflow::{
    DEFINITION, ExecutionState, Machine, REVIEW_DEFINITION, Run, Workflow, WorkflowError,
    WorkflowType, execution_input, task_failure, task_output,
};
use shared::steps::{Step, StepDeps};

use crate::executions::{
    Executions, MachineDefinition, MachineKind, RedriveRefused, START_EXECUTION, StartRefused,
};

pub use crate::executions::EXPRESS_LIMIT;

/// Purchase machine runs (`STANDARD`): executionName → latest Checkpoint (JSON).
const EXECUTIONS: &str = "executions";

/// Review machine executions: executionName → latest Checkpoint (JSON).
const REVIEW_EXECUTIONS: &str = "review-executions";

/// The Step Functions service integration for invoking a Lambda function.
const LAMBDA_INVOKE: &str = "arn:aws:states:::lambda:invoke";

/// The prefix local Task resources get instead of a Lambda ARN.
pub const LOCAL_RESOURCE_PREFIX: &str = "local:";

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

#[async_trait]
impl TaskInvoker for StepInvoker {
    async fn invoke(
        &self,
        resource: &str,
        input: Value,
        context: &TaskContext,
    ) -> Result<Value, TaskFailure> {
        if resource == START_EXECUTION {
            let workflow = self
                .callbacks
                .workflow()
                .map_err(|e| TaskFailure::new("States.TaskFailed", e.to_string()))?;
            return workflow.executions.start_execution_task(&input);
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

/// Starts, resumes, describes and redrives executions of both machines
/// in-process.
pub struct LocalWorkflow {
    workflow_type: WorkflowType,
    executions: Executions,
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
        let definition = |machine: Machine, text: &str| {
            StateMachine::from_json(text, &substitutions)
                .map(|definition| {
                    definition
                        .with_name(machine_name(machine))
                        .with_arn(machine_arn(machine))
                })
                .map_err(|e| format!("{} machine: {e}", machine_name(machine)))
        };
        let purchase = MachineDefinition {
            definition: definition(Machine::Purchase, DEFINITION)?,
            kind: match workflow_type {
                WorkflowType::Express => MachineKind::Express,
                WorkflowType::Standard => MachineKind::Standard {
                    table: EXECUTIONS.to_owned(),
                },
            },
        };
        let review = MachineDefinition {
            definition: definition(Machine::Review, REVIEW_DEFINITION)?,
            kind: MachineKind::Standard {
                table: REVIEW_EXECUTIONS.to_owned(),
            },
        };
        let invoker = Arc::new(StepInvoker {
            deps,
            hook,
            callbacks: callbacks.clone(),
        });
        let executions =
            Executions::new(vec![purchase, review], invoker, &store, delay_scale).await?;
        let workflow = Arc::new(LocalWorkflow {
            workflow_type,
            executions,
        });
        callbacks
            .workflow
            .set(Arc::downgrade(&workflow))
            .map_err(|_| "the runner callbacks are already connected".to_owned())?;
        Ok(workflow)
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
        self.executions
            .latest(&machine_arn(machine), execution_name)
    }

    /// Whether this process runs a purchase machine execution of that name
    /// now (started, resumed or redriven, and not ended).
    pub fn is_running(&self, execution_name: &str) -> bool {
        self.is_execution_running(Machine::Purchase, execution_name)
    }

    /// Whether this process runs an execution of `machine` of that name now.
    pub fn is_execution_running(&self, machine: Machine, execution_name: &str) -> bool {
        self.executions
            .is_running(&machine_arn(machine), execution_name)
    }

    /// The executions of a purchase's runs (on either machine) this process
    /// runs now, as (machine, execution name).
    pub fn running_executions(&self, purchase_id: &PurchaseId) -> Vec<(Machine, String)> {
        self.executions
            .running_executions()
            .into_iter()
            .filter(|(_, name)| Run::parse(purchase_id, name).is_some())
            .filter_map(|(arn, name)| {
                [Machine::Purchase, Machine::Review]
                    .into_iter()
                    .find(|m| machine_arn(*m) == arn)
                    .map(|machine| (machine, name))
            })
            .collect()
    }

    /// Continues every `STANDARD` execution a previous process left
    /// running; returns how many. (`EXPRESS` runs are gone with it.)
    pub async fn resume_unfinished(&self) -> Result<usize, String> {
        self.executions.resume_unfinished().await
    }

    /// Stops every execution this process runs, as a process exit would:
    /// `STANDARD` checkpoints stay, and the next start resumes them.
    pub async fn shutdown(&self) {
        self.executions.shutdown().await;
    }
}

fn token_error(error: asl::TaskTokenError) -> WorkflowError {
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
        match self.executions.start(
            &machine_arn(Machine::Purchase),
            &run.name(),
            execution_input(&run.purchase_id),
        ) {
            // Like Step Functions for a STANDARD machine: one execution per name.
            Ok(_) | Err(StartRefused::AlreadyExists) => Ok(()),
            Err(StartRefused::Journal(error)) => Err(WorkflowError::Unavailable(error)),
            Err(StartRefused::NoSuchMachine) => Err(WorkflowError::Failed(
                "the local runner has no purchase machine".into(),
            )),
        }
    }

    async fn describe(
        &self,
        machine: Machine,
        run: &Run,
    ) -> Result<Option<ExecutionState>, WorkflowError> {
        let arn = machine_arn(machine);
        if self.executions.is_express(&arn) == Some(true) {
            return Err(WorkflowError::Failed(
                "EXPRESS executions keep no history: they cannot be described".into(),
            ));
        }
        let execution = self
            .executions
            .execution(&arn, &run.name())
            .map_err(WorkflowError::Unavailable)?;
        Ok(execution.map(|execution| match execution.status {
            ExecutionStatus::Running => ExecutionState::Running,
            ExecutionStatus::Succeeded => ExecutionState::Succeeded,
            ExecutionStatus::Failed => ExecutionState::Failed,
        }))
    }

    async fn notify(&self, task_token: &str, decision: TaskDecision) -> Result<(), WorkflowError> {
        // Only the review machine waits for task tokens.
        match (decision, task_failure(decision)) {
            (TaskDecision::Resume { at }, _) => self
                .executions
                .send_task_success(task_token, task_output(at))
                .map_err(token_error),
            (_, Some((error, cause))) => self
                .executions
                .send_task_failure(task_token, error, cause)
                .map_err(token_error),
            (_, None) => Ok(()),
        }
    }

    async fn redrive(&self, run: &Run) -> Result<(), WorkflowError> {
        let cannot = || {
            WorkflowError::NotAllowed(format!(
                "the execution of purchase {} (run {}) cannot be redriven",
                run.purchase_id, run.number
            ))
        };
        match self
            .executions
            .redrive(&machine_arn(Machine::Purchase), &run.name())
        {
            Ok(()) => Ok(()),
            Err(RedriveRefused::Express) => Err(WorkflowError::NotAllowed(format!(
                "the execution of purchase {} (run {}) is EXPRESS: it cannot be redriven",
                run.purchase_id, run.number
            ))),
            // Still ending (the purchase says NEEDS_ATTENTION a moment
            // before its execution has failed), or redriven already: either
            // way, not now — as Step Functions answers.
            Err(RedriveRefused::Running) => Err(WorkflowError::Unavailable(format!(
                "the execution of purchase {} (run {}) is still running; retry in a moment",
                run.purchase_id, run.number
            ))),
            Err(RedriveRefused::Journal(error)) => Err(WorkflowError::Unavailable(error)),
            Err(
                RedriveRefused::NotFound
                | RedriveRefused::NotFailed
                | RedriveRefused::NoSuchMachine,
            ) => Err(cannot()),
        }
    }
}
