//! Step tasks and the reconciler on `lambda_runtime` (feature
//! `lambda-runtime`; the steps also need `steps`).

use lambda_runtime::{Diagnostic, LambdaEvent};
use serde_json::Value;

use super::config::Reconciler;
#[cfg(feature = "steps")]
use crate::steps::{Step, StepDeps, StepError};

/// Lets a step's error reach Step Functions with its stable name as
/// `errorType` instead of the Rust type name.
#[cfg(feature = "steps")]
impl From<StepError> for Diagnostic {
    fn from(error: StepError) -> Diagnostic {
        Diagnostic {
            error_type: error.name().to_owned(),
            error_message: error.to_string(),
        }
    }
}

/// Serves one step task on `lambda_runtime`.
#[cfg(feature = "steps")]
pub async fn run_step(step: Step, deps: StepDeps) -> Result<(), lambda_runtime::Error> {
    let deps = &deps;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: LambdaEvent<Value>| async move {
            let deadline = remaining(event.context.deadline);
            step.run(deps, event.payload, deadline).await
        },
    ))
    .await
}

/// Serves the reconciler on `lambda_runtime`: each scheduled invocation is
/// one pass. Its findings are the invocation's result (and logged); a pass
/// that fails is the invocation's error, with `errorType` `Transient` as a
/// step's would be (the next scheduled pass tries again).
pub async fn run_reconciler(reconciler: Reconciler) -> Result<(), lambda_runtime::Error> {
    let reconciler = &reconciler;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |_: LambdaEvent<Value>| async move {
            let findings = crate::service::reconcile::reconcile(
                reconciler.purchases.as_ref(),
                reconciler.workflow.as_ref(),
                reconciler.stale_after,
            )
            .await
            .map_err(|e| Diagnostic {
                error_type: "Transient".to_owned(),
                error_message: e.to_string(),
            })?;
            Ok::<_, Diagnostic>(serde_json::json!({
                "examined": findings.examined,
                "started": findings.started,
                "restarted": findings.restarted,
                "running": findings.running,
                "notified": findings.notified,
                "flagged": findings.flagged,
                "skipped": findings.skipped,
            }))
        },
    ))
    .await
}

/// The invocation's deadline (epoch milliseconds) as an instant, so a step
/// can stop in time.
#[cfg(feature = "steps")]
fn remaining(deadline_ms: u64) -> Option<tokio::time::Instant> {
    let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).ok()?;
    let left = std::time::Duration::from_millis(deadline_ms.checked_sub(now_ms)?);
    Some(tokio::time::Instant::now() + left)
}
