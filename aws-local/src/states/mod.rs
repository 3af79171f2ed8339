//! The Step Functions endpoint: every state machine of the template run by
//! the project's ASL runner, behind the operations the project calls, with
//! Step Functions' error names.
//!
//! The executions are local mode's executions host
//! ([`local::executions::Executions`]): the same rules for both faces.
//!
//! - STANDARD machines: one execution per name, journaled under
//!   `DATA_DIR/step-functions/`, so executions survive a restart and can be
//!   described and redriven;
//! - EXPRESS machines run in memory, as Step Functions runs them: names may
//!   be reused, executions cannot be described or redriven (their ARNs are
//!   `...:express:<machine>:<name>:<id>`), and the callback pattern is refused;
//! - [`tasks`]: what Task resources do;
//! - [`api`]: the AWS JSON 1.0 protocol.

pub mod api;
pub mod tasks;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use asl::{ExecutionStatus, StateMachine as Definition};
use chrono::{DateTime, Utc};
use local::executions::{
    Executions, MachineDefinition, MachineKind, RedriveRefused, StartRefused, valid_execution_name,
};
use serde_json::{Value, json};
use shared::adapters::embedded::EmbeddedStore;

use crate::template::{self, WorkflowType};
use tasks::{TaskRunner, check_resource};

/// An operation refused, as Step Functions words it (`__type`, `message`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct SfnError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

fn refused(code: &'static str, message: impl Into<String>) -> SfnError {
    SfnError {
        status: 400,
        code,
        message: message.into(),
    }
}

fn internal(message: impl Into<String>) -> SfnError {
    SfnError {
        status: 500,
        code: "InternalFailure",
        message: message.into(),
    }
}

/// A started execution.
pub use local::executions::Started;

/// A machine of the template, as the endpoint knows it.
struct Machine {
    arn: String,
    name: String,
    express: bool,
}

/// Where the STANDARD machines' executions are journaled, under `data_dir`.
pub fn journal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("step-functions")
}

/// The journal's database: one table per STANDARD machine, named after it.
pub fn journal_path(data_dir: &Path) -> PathBuf {
    journal_dir(data_dir).join("executions.redb")
}

pub struct StepFunctionsService {
    machines: Vec<Machine>,
    executions: Executions,
    region: String,
    account_id: String,
}

/// A task token as this endpoint issues them (the runner's: 64 hex digits).
fn well_formed_token(token: &str) -> bool {
    token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

impl StepFunctionsService {
    /// Loads every machine (refusing what Step Functions would refuse at
    /// creation, and what the runner does not run) and resumes the STANDARD
    /// executions a previous run left unfinished.
    pub async fn start(
        machines: &[template::StateMachine],
        tasks: Arc<TaskRunner>,
        data_dir: &Path,
        delay_scale: f64,
        region: &str,
        account_id: &str,
    ) -> Result<Arc<StepFunctionsService>, String> {
        let mut definitions = Vec::new();
        let mut known = Vec::new();
        for machine in machines {
            let definition = Definition::from_json(&machine.definition, &machine.substitutions)
                .map_err(|e| format!("state machine {}: {e}", machine.logical_id))?
                .with_name(machine.name.clone())
                .with_arn(machine.arn.clone());
            let express = machine.workflow_type == WorkflowType::Express;
            for resource in definition.task_resources() {
                check_resource(&resource, express)
                    .map_err(|e| format!("state machine {}: {e}", machine.logical_id))?;
            }
            definitions.push(MachineDefinition {
                definition,
                kind: if express {
                    MachineKind::Express
                } else {
                    MachineKind::Standard {
                        table: machine.name.clone(),
                    }
                },
            });
            known.push(Machine {
                arn: machine.arn.clone(),
                name: machine.name.clone(),
                express,
            });
        }
        let folder = journal_dir(data_dir);
        std::fs::create_dir_all(&folder).map_err(|e| format!("{}: {e}", folder.display()))?;
        let journal =
            EmbeddedStore::open_file(&journal_path(data_dir)).map_err(|e| e.to_string())?;
        let executions = Executions::new(definitions, tasks.clone(), &journal, delay_scale).await?;
        let service = Arc::new(StepFunctionsService {
            machines: known,
            executions,
            region: region.to_owned(),
            account_id: account_id.to_owned(),
        });
        tasks.connect(&service);
        let resumed = service.executions.resume_unfinished().await?;
        if resumed > 0 {
            tracing::info!(resumed, "resumed unfinished executions");
        }
        Ok(service)
    }

    /// An execution as the runner keeps it, EXPRESS ones too: for
    /// inspection (their CloudWatch Logs on AWS), not an operation.
    pub fn inspect(
        &self,
        machine_arn: &str,
        name: &str,
    ) -> Result<Option<local::executions::ExecutionRecord>, String> {
        self.executions.execution(machine_arn, name)
    }

    /// The executions host, for `states:startExecution` tasks.
    pub(crate) fn executions(&self) -> &Executions {
        &self.executions
    }

    fn machine(&self, arn: &str) -> Result<&Machine, SfnError> {
        let parts: Vec<&str> = arn.split(':').collect();
        if !matches!(
            parts.as_slice(),
            ["arn", "aws", "states", _, _, "stateMachine", _]
        ) {
            return Err(refused("InvalidArn", format!("Invalid Arn: '{arn}'")));
        }
        self.machines.iter().find(|m| m.arn == arn).ok_or_else(|| {
            refused(
                "StateMachineDoesNotExist",
                format!("State Machine Does Not Exist: '{arn}'"),
            )
        })
    }

    /// The STANDARD machine and the name of an execution's ARN.
    fn execution(&self, arn: &str) -> Result<(&Machine, String), SfnError> {
        let parts: Vec<&str> = arn.split(':').collect();
        let does_not_exist = || {
            refused(
                "ExecutionDoesNotExist",
                format!("Execution Does Not Exist: '{arn}'"),
            )
        };
        match parts.as_slice() {
            [
                "arn",
                "aws",
                "states",
                region,
                account,
                "execution",
                machine,
                name,
            ] => {
                if *region != self.region || *account != self.account_id {
                    return Err(does_not_exist());
                }
                let machine = self
                    .machines
                    .iter()
                    .find(|m| m.name == *machine && !m.express)
                    .ok_or_else(does_not_exist)?;
                Ok((machine, (*name).to_owned()))
            }
            // Express executions are not recorded: nothing to describe or redrive.
            ["arn", "aws", "states", _, _, "express", ..] => Err(refused(
                "InvalidArn",
                format!("Invalid Arn: 'Resource type not valid in this context: express' ({arn})"),
            )),
            _ => Err(refused("InvalidArn", format!("Invalid Arn: '{arn}'"))),
        }
    }

    pub fn start_execution(
        &self,
        state_machine_arn: &str,
        name: Option<String>,
        input: Option<String>,
    ) -> Result<Started, SfnError> {
        let machine = self.machine(state_machine_arn)?;
        let name = name.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        if !valid_execution_name(&name) {
            return Err(refused("InvalidName", format!("Invalid Name: '{name}'")));
        }
        let input: Value = match input.as_deref() {
            None => json!({}),
            Some(text) => serde_json::from_str(text).map_err(|e| {
                refused(
                    "InvalidExecutionInput",
                    format!("Invalid State Machine Execution Input: '{e}'"),
                )
            })?,
        };
        self.executions
            .start(&machine.arn, &name, input)
            .map_err(|refusal| match refusal {
                StartRefused::AlreadyExists => refused(
                    "ExecutionAlreadyExists",
                    format!(
                        "Execution Already Exists: '{}'",
                        Executions::execution_arn(&machine.arn, &name)
                    ),
                ),
                StartRefused::NoSuchMachine => refused(
                    "StateMachineDoesNotExist",
                    format!("State Machine Does Not Exist: '{state_machine_arn}'"),
                ),
                StartRefused::Journal(error) => internal(error),
            })
    }

    /// `DescribeExecution`'s answer.
    pub fn describe_execution(&self, arn: &str) -> Result<Value, SfnError> {
        let (machine, name) = self.execution(arn)?;
        let record = self
            .executions
            .execution(&machine.arn, &name)
            .map_err(internal)?
            .ok_or_else(|| {
                refused(
                    "ExecutionDoesNotExist",
                    format!("Execution Does Not Exist: '{arn}'"),
                )
            })?;
        let seconds = |at: DateTime<Utc>| at.timestamp_millis() as f64 / 1000.0;
        let mut answer = json!({
            "executionArn": arn,
            "stateMachineArn": machine.arn,
            "name": name,
            "status": record.status,
            "startDate": seconds(record.started_at),
            "input": record.input.to_string(),
            "inputDetails": {"included": true},
            "outputDetails": {"included": true},
        });
        let (redrive_status, reason) = match record.status {
            ExecutionStatus::Running => (
                "NOT_REDRIVABLE",
                Some("Execution is RUNNING and cannot be redriven"),
            ),
            ExecutionStatus::Succeeded => (
                "NOT_REDRIVABLE",
                Some("Execution is SUCCEEDED and cannot be redriven"),
            ),
            ExecutionStatus::Failed => ("REDRIVABLE", None),
        };
        answer["redriveStatus"] = json!(redrive_status);
        if let Some(reason) = reason {
            answer["redriveStatusReason"] = json!(reason);
        }
        if record.status != ExecutionStatus::Running
            && let Some(last) = &record.last
        {
            answer["stopDate"] = json!(seconds(last.updated_at));
            if let Some(output) = &last.output {
                answer["output"] = json!(output.to_string());
            }
            if let Some(error) = &last.error {
                answer["error"] = json!(error.error);
                answer["cause"] = json!(error.cause);
            }
        }
        Ok(answer)
    }

    fn check_token(token: &str) -> Result<(), SfnError> {
        if well_formed_token(token) {
            Ok(())
        } else {
            Err(refused("InvalidToken", "Invalid Token: 'Invalid token'"))
        }
    }

    fn task_does_not_exist() -> SfnError {
        refused("TaskDoesNotExist", "Task Timed Out or Does Not Exist")
    }

    pub fn send_task_success(&self, token: &str, output: &str) -> Result<(), SfnError> {
        Self::check_token(token)?;
        let output: Value = serde_json::from_str(output)
            .map_err(|e| refused("InvalidOutput", format!("Invalid Output: '{e}'")))?;
        self.executions
            .send_task_success(token, output)
            .map_err(|_| Self::task_does_not_exist())
    }

    pub fn send_task_failure(&self, token: &str, error: &str, cause: &str) -> Result<(), SfnError> {
        Self::check_token(token)?;
        self.executions
            .send_task_failure(token, error, cause)
            .map_err(|_| Self::task_does_not_exist())
    }

    pub fn send_task_heartbeat(&self, token: &str) -> Result<(), SfnError> {
        Self::check_token(token)?;
        if self.executions.is_waiting_on(token) {
            Ok(())
        } else {
            Err(Self::task_does_not_exist())
        }
    }

    pub fn redrive_execution(&self, arn: &str) -> Result<DateTime<Utc>, SfnError> {
        let (machine, name) = self.execution(arn)?;
        match self.executions.redrive(&machine.arn, &name) {
            Ok(()) => Ok(Utc::now()),
            Err(RedriveRefused::Running) => Err(refused(
                "ExecutionNotRedrivable",
                format!("Execution is RUNNING and cannot be redriven: '{arn}'"),
            )),
            Err(RedriveRefused::NotFailed) => Err(refused(
                "ExecutionNotRedrivable",
                format!("Execution is SUCCEEDED and cannot be redriven: '{arn}'"),
            )),
            Err(
                RedriveRefused::NotFound | RedriveRefused::NoSuchMachine | RedriveRefused::Express,
            ) => Err(refused(
                "ExecutionDoesNotExist",
                format!("Execution Does Not Exist: '{arn}'"),
            )),
            Err(RedriveRefused::Journal(error)) => Err(internal(error)),
        }
    }

    /// Stops every execution, as a process exit would: STANDARD ones resume
    /// on the next start.
    pub async fn shutdown(&self) {
        self.executions.shutdown().await;
    }

    /// Function name or ARN → binary, for every function of the template.
    pub fn binaries(functions: &[template::Function]) -> HashMap<String, String> {
        functions
            .iter()
            .flat_map(|f| {
                [
                    (f.name.clone(), f.binary.clone()),
                    (f.arn.clone(), f.binary.clone()),
                ]
            })
            .collect()
    }
}
