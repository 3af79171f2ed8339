//! The workflows' step tasks (the purchase machine's and the review
//! machine's), invoked by a `lambda_runtime` function on AWS and by the local
//! runner in-process. Each is *load → decide (the
//! lifecycle) → conditional write → call a port → record what the port
//! said*; none sets a status itself.
//!
//! Every step is idempotent (Step Functions and the local runner retry, and
//! a step may run again after its write landed): the lifecycle answers a
//! repeated command with "nothing to do", and every port call carries an
//! idempotency key that is the same on every attempt.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::Instrument;

use crate::domain::lifecycle::{Command, Effect, Outcome, ReviewEnding, may_go_forward};
use crate::domain::purchase::{Purchase, PurchaseLine, PurchaseStatus};
use crate::domain::{DomainError, ProductId, PurchaseId};
use crate::ports::payment::{
    CaptureRequest, PaymentError, PaymentGateway, RefundOutcome, RefundRequest,
};
use crate::ports::provisioning::{Provisioner, ProvisioningError};
use crate::ports::store::{PurchaseStore, RuleSetStore, StoreError};
use crate::ports::workflow::{Run, Workflow};
use crate::service::{self, NotifyError, Transition, TransitionError};

/// A step's failure, reaching Step Functions as `errorType`.
///
/// The names are the contract with the Retry and Catch blocks of
/// `statemachine/purchase.asl.json` and `review.asl.json`;
/// `local/tests/definition.rs` checks both directions.
/// Messages are for logs; the purchase's timeline says what happened in
/// words for the customer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    #[error("{0}")]
    OutOfStock(String),
    #[error("{0}")]
    PaymentDeclined(String),
    #[error("{0}")]
    ProvisioningFailed(String),
    /// The purchase was failed, cancelled or rejected outside this step: the
    /// definition stops going forward and undoes what was done.
    #[error("purchase {0} was stopped")]
    PurchaseStopped(String),
    /// The purchase is `ON_HOLD`: the definition hands it to the review
    /// workflow, which waits in `AwaitReview` until it is decided.
    #[error("purchase {0} is on hold for review")]
    PurchaseOnHold(String),
    /// The purchase was rejected (by its rules, or on review).
    #[error("purchase {0} was rejected")]
    PurchaseRejected(String),
    #[error("purchase {0} not found")]
    PurchaseNotFound(String),
    /// The step input is not what the definition promises (a bug).
    #[error("invalid step input: {0}")]
    InvalidInput(String),
    /// Worth retrying: throttling, timeouts, a lost version race, a provider
    /// blip, a step out of time with work left.
    #[error("{0}")]
    Transient(String),
    /// An undoing step failed after every retry: the purchase is
    /// `NEEDS_ATTENTION`, and the execution fails here until it is redriven.
    #[error("{0}")]
    NeedsAttention(String),
    #[error("{0}")]
    Internal(String),
}

impl StepError {
    /// Every `errorType` a step can raise.
    pub const NAMES: [&'static str; 11] = [
        "OutOfStock",
        "PaymentDeclined",
        "ProvisioningFailed",
        "PurchaseStopped",
        "PurchaseOnHold",
        "PurchaseRejected",
        "PurchaseNotFound",
        "InvalidInput",
        "Transient",
        "NeedsAttention",
        "Internal",
    ];

    /// The stable `errorType` (never the Rust type name, which can change).
    pub fn name(&self) -> &'static str {
        match self {
            StepError::OutOfStock(_) => "OutOfStock",
            StepError::PaymentDeclined(_) => "PaymentDeclined",
            StepError::ProvisioningFailed(_) => "ProvisioningFailed",
            StepError::PurchaseStopped(_) => "PurchaseStopped",
            StepError::PurchaseOnHold(_) => "PurchaseOnHold",
            StepError::PurchaseRejected(_) => "PurchaseRejected",
            StepError::PurchaseNotFound(_) => "PurchaseNotFound",
            StepError::InvalidInput(_) => "InvalidInput",
            StepError::Transient(_) => "Transient",
            StepError::NeedsAttention(_) => "NeedsAttention",
            StepError::Internal(_) => "Internal",
        }
    }
}

impl From<StoreError> for StepError {
    fn from(error: StoreError) -> StepError {
        match error {
            StoreError::NotFound(what) => StepError::PurchaseNotFound(what),
            // A lost race survives `transition`'s own retries only under
            // heavy contention: let the workflow's Retry try again later.
            StoreError::VersionConflict | StoreError::Unavailable(_) => {
                StepError::Transient(error.to_string())
            }
            StoreError::OutOfStock { .. } => StepError::OutOfStock(error.to_string()),
            StoreError::AlreadyExists(_)
            | StoreError::InvalidPageToken
            | StoreError::Internal(_) => StepError::Internal(error.to_string()),
        }
    }
}

impl From<DomainError> for StepError {
    fn from(error: DomainError) -> StepError {
        match error {
            DomainError::Stopped(id) => StepError::PurchaseStopped(id.to_string()),
            DomainError::OnHold(id) => StepError::PurchaseOnHold(id.to_string()),
            DomainError::Rejected(id) => StepError::PurchaseRejected(id.to_string()),
            // Judged on contents that changed meanwhile: judge again.
            DomainError::Stale => StepError::Transient(error.to_string()),
            DomainError::Invalid(_)
            | DomainError::NotAllowed(_)
            | DomainError::Outdated { .. }
            | DomainError::Inconsistent(_) => StepError::Internal(error.to_string()),
        }
    }
}

impl From<TransitionError> for StepError {
    fn from(error: TransitionError) -> StepError {
        match error {
            TransitionError::Domain(error) => error.into(),
            TransitionError::Store(error) => error.into(),
        }
    }
}

impl From<NotifyError> for StepError {
    fn from(error: NotifyError) -> StepError {
        match error {
            NotifyError::Workflow(error) => StepError::Transient(error.to_string()),
            NotifyError::Transition(error) => error.into(),
        }
    }
}

/// The step task functions. `function_name` is the Lambda's name and binary
/// name; `arn_placeholder` is the `${...}` the definition uses for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    EvaluateRules,
    ReserveStock,
    CapturePayment,
    ProvisionProducts,
    AwaitReview,
    ContinuePurchase,
    RevokeProducts,
    RefundPayment,
    ReleaseStock,
    NeedsAttention,
    FinalizePurchase,
}

impl Step {
    pub const ALL: [Step; 11] = [
        Step::EvaluateRules,
        Step::ReserveStock,
        Step::CapturePayment,
        Step::ProvisionProducts,
        Step::AwaitReview,
        Step::ContinuePurchase,
        Step::RevokeProducts,
        Step::RefundPayment,
        Step::ReleaseStock,
        Step::NeedsAttention,
        Step::FinalizePurchase,
    ];

    /// The state name in the definition (the purchase machine's, or for
    /// `AwaitReview` and `ContinuePurchase` the review machine's), and the
    /// timeline's `step`.
    pub fn state_name(self) -> &'static str {
        match self {
            Step::EvaluateRules => "EvaluateRules",
            Step::ReserveStock => "ReserveStock",
            Step::CapturePayment => "CapturePayment",
            Step::ProvisionProducts => "ProvisionProducts",
            Step::AwaitReview => "AwaitReview",
            Step::ContinuePurchase => "ContinuePurchase",
            Step::RevokeProducts => "RevokeProducts",
            Step::RefundPayment => "RefundPayment",
            Step::ReleaseStock => "ReleaseStock",
            Step::NeedsAttention => "NeedsAttention",
            Step::FinalizePurchase => "FinalizePurchase",
        }
    }

    pub fn function_name(self) -> &'static str {
        match self {
            Step::EvaluateRules => "evaluate-rules",
            Step::ReserveStock => "reserve-stock",
            Step::CapturePayment => "capture-payment",
            Step::ProvisionProducts => "provision-products",
            Step::AwaitReview => "await-review",
            Step::ContinuePurchase => "continue-purchase",
            Step::RevokeProducts => "revoke-products",
            Step::RefundPayment => "refund-payment",
            Step::ReleaseStock => "release-stock",
            Step::NeedsAttention => "needs-attention",
            Step::FinalizePurchase => "finalize-purchase",
        }
    }

    /// `DefinitionSubstitutions` key, e.g. `ReserveStockFunctionArn`.
    pub fn arn_placeholder(self) -> String {
        format!("{}FunctionArn", self.state_name())
    }

    pub fn from_function_name(name: &str) -> Option<Step> {
        Step::ALL
            .into_iter()
            .find(|step| step.function_name() == name)
    }

    /// Runs the step on the input the definition gives it. `deadline` is
    /// when the invocation will be cut off (Lambda's, or the local runner's
    /// task timeout): a step with more work than time returns `Transient`
    /// before it, having recorded its progress.
    pub async fn run(
        self,
        deps: &StepDeps,
        input: Value,
        deadline: Option<Instant>,
    ) -> Result<Value, StepError> {
        let input: StepInput =
            serde_json::from_value(input).map_err(|e| StepError::InvalidInput(e.to_string()))?;
        let id = PurchaseId::new(input.purchase_id.clone());
        // Executions are named after the purchase (`<id>` or `<id>-<run>`):
        // logs carry the purchase id, and Step Functions' own logs the name.
        let span = tracing::info_span!("step", step = self.state_name(), purchase_id = %id);
        let run = StepRun {
            deps,
            id: &id,
            input: &input,
            deadline,
        };
        let result = async {
            let result = run.step(self).await;
            match &result {
                Ok(_) => tracing::info!("step succeeded"),
                Err(error) => tracing::warn!(error_type = error.name(), %error, "step failed"),
            }
            result
        }
        .instrument(span)
        .await;
        result.map(|output| match output {
            Some(output) => output,
            None => json!({ "purchaseId": id }),
        })
    }
}

/// What every step receives: the execution state's `purchaseId`, plus what
/// the definition adds for some steps.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StepInput {
    purchase_id: String,
    /// How the purchase ends if the workflow does not complete it (undoing steps).
    #[serde(default)]
    outcome: Option<Outcome>,
    /// `AwaitReview`'s task token.
    #[serde(default)]
    task_token: Option<String>,
    /// `ContinuePurchase`: the execution name of the run that handed the
    /// purchase over to the review.
    #[serde(default)]
    run: Option<String>,
    /// `ContinuePurchase`: how `AwaitReview` ended, its result or its error
    /// (`{"Error": ..., "Cause": ...}`).
    #[serde(default)]
    review: Option<Value>,
    /// `NeedsAttention`: the undoing step that failed, and its error.
    #[serde(default)]
    failed_step: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// Everything the steps talk to, built once per cold start.
#[derive(Clone)]
pub struct StepDeps {
    pub purchases: Arc<dyn PurchaseStore>,
    pub rule_sets: Arc<dyn RuleSetStore>,
    pub payments: Arc<dyn PaymentGateway>,
    pub provisioning: Arc<dyn Provisioner>,
    /// For `AwaitReview`, which may have to deliver a decision itself.
    pub workflow: Arc<dyn Workflow>,
}

/// How often `EvaluateRules` judges again when the purchase changed under it.
const JUDGE_ATTEMPTS: u32 = 8;

/// How long before its deadline a step stops starting port calls: one
/// call's own deadline plus a margin for the write that records it.
const DEADLINE_MARGIN: Duration = Duration::from_secs(12);

struct StepRun<'a> {
    deps: &'a StepDeps,
    id: &'a PurchaseId,
    input: &'a StepInput,
    deadline: Option<Instant>,
}

impl StepRun<'_> {
    async fn step(&self, step: Step) -> Result<Option<Value>, StepError> {
        let done = match step {
            // The steps whose output the definitions use.
            Step::ContinuePurchase => return self.continue_purchase().await.map(Some),
            Step::FinalizePurchase => return self.finalize().await.map(Some),
            Step::EvaluateRules => self.evaluate_rules().await,
            Step::ReserveStock => self.reserve_stock().await,
            Step::CapturePayment => self.capture_payment().await,
            Step::ProvisionProducts => self.provision_products().await,
            Step::AwaitReview => self.await_review().await,
            Step::RevokeProducts => self.revoke_products().await,
            Step::RefundPayment => self.refund_payment().await,
            Step::ReleaseStock => self.release_stock().await,
            Step::NeedsAttention => self.needs_attention().await,
        };
        done.map(|_| None).or_else(|error| match error {
            Resumed(at) => Ok(Some(json!({ "purchaseId": self.id, "resumeAt": at }))),
            Failed(error) => Err(error),
        })
    }

    async fn apply<'c>(
        &self,
        command: impl FnMut(&Purchase) -> Command<'c>,
    ) -> Result<Transition, StepError> {
        Ok(service::apply(self.deps.purchases.as_ref(), self.id, command).await?)
    }

    /// [`Self::apply`], deciding first on the purchase as this step last saw
    /// it rather than reading it again.
    async fn apply_to<'c>(
        &self,
        known: Purchase,
        command: impl FnMut(&Purchase) -> Command<'c>,
    ) -> Result<Transition, StepError> {
        Ok(service::apply_to(self.deps.purchases.as_ref(), known, command).await?)
    }

    fn outcome(&self) -> Result<Outcome, StepError> {
        self.input
            .outcome
            .ok_or_else(|| StepError::InvalidInput("this step needs `outcome`".into()))
    }

    /// Out of time for another port call?
    fn out_of_time(&self) -> bool {
        self.deadline
            .is_some_and(|deadline| Instant::now() + DEADLINE_MARGIN >= deadline)
    }

    // --- going forward ----------------------------------------------------

    async fn evaluate_rules(&self) -> Result<(), StepOutcome> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let purchase = self.load().await?;
            if !may_go_forward(&purchase).map_err(StepError::from)? {
                return Ok(());
            }
            let rules = service::purchase_rules(
                self.deps.purchases.as_ref(),
                self.deps.rule_sets.as_ref(),
                &purchase,
            )
            .await
            .map_err(StepError::from)?;
            let result = service::apply_to(self.deps.purchases.as_ref(), purchase, |_| {
                Command::EvaluateRules { rules: &rules }
            })
            .await;
            match result {
                // Changed while judged: judge the new contents.
                Err(TransitionError::Domain(DomainError::Stale)) if attempt < JUDGE_ATTEMPTS => {
                    continue;
                }
                Err(error) => return Err(StepError::from(error).into()),
                Ok(transition) => {
                    may_go_forward(&transition.purchase).map_err(StepError::from)?;
                    return Ok(());
                }
            }
        }
    }

    async fn reserve_stock(&self) -> Result<(), StepOutcome> {
        match service::apply(self.deps.purchases.as_ref(), self.id, |_| {
            Command::ReserveStock
        })
        .await
        {
            Ok(_) => Ok(()),
            Err(TransitionError::Store(StoreError::OutOfStock {
                product_id,
                requested,
                available,
            })) => {
                // The reservation wrote nothing: record why, then fail. The
                // numbers go to the log only.
                tracing::info!(product = %product_id, requested, available, "out of stock");
                self.apply(|_| Command::OutOfStock {
                    product: &product_id,
                })
                .await?;
                Err(StepError::OutOfStock(format!("not enough stock of {product_id}")).into())
            }
            Err(other) => Err(other.into()),
        }
    }

    async fn capture_payment(&self) -> Result<(), StepOutcome> {
        let Transition {
            purchase, effects, ..
        } = self.apply(|_| Command::BeginCapture).await?;
        let Some(Effect::Capture {
            idempotency_key,
            amount,
            payment,
        }) = effects.into_iter().next()
        else {
            return Ok(()); // captured by an earlier attempt
        };
        let request = CaptureRequest {
            purchase_id: self.id.clone(),
            idempotency_key,
            amount: amount.amount,
            currency: amount.currency.to_string(),
            method: payment.method,
            transaction_id: payment.transaction_id,
        };
        match self.deps.payments.capture(&request).await {
            Ok(capture) => {
                let transition = self
                    .apply_to(purchase, |_| Command::PaymentCaptured {
                        reference: &capture.payment_reference,
                    })
                    .await?;
                // A purchase stopped or held meanwhile has its capture
                // recorded (so it is refunded, or kept for the review).
                may_go_forward(&transition.purchase).map_err(StepError::from)?;
                Ok(())
            }
            Err(PaymentError::Declined(reason)) => {
                self.apply_to(purchase, |_| Command::PaymentDeclined)
                    .await?;
                Err(StepError::PaymentDeclined(reason).into())
            }
            Err(PaymentError::Transient(reason)) => {
                // Shown on the timeline so a customer sees why it is slow.
                self.apply_to(purchase, |_| Command::PaymentRetrying)
                    .await?;
                Err(StepError::Transient(reason).into())
            }
            Err(PaymentError::Misconfigured(reason)) => Err(StepError::Internal(reason).into()),
        }
    }

    async fn provision_products(&self) -> Result<(), StepOutcome> {
        let Transition {
            purchase: mut known,
            effects,
            ..
        } = self.apply(|_| Command::BeginProvisioning).await?;
        let lines: Vec<PurchaseLine> = effects
            .into_iter()
            .filter_map(|effect| match effect {
                Effect::Provision(line) => Some(line),
                _ => None,
            })
            .collect();
        // In the order given. Deliveries are recorded together, in one write
        // at the end (a write unit per line saved): an attempt that dies
        // before it has its lines delivered again by the retry, which the
        // provider's idempotency keys make harmless — and undoing revokes a
        // paid purchase's reserved lines too, so nothing delivered is kept.
        let mut delivered: Vec<ProductId> = Vec::with_capacity(lines.len());
        let mut stopped: Option<StepError> = None;
        for line in &lines {
            if !delivered.is_empty() {
                // Stopped meanwhile (a cancel during a slow delivery)? Then
                // nothing more is delivered. A read, not a write.
                known = self.load().await?;
                if let Err(error) = may_go_forward(&known) {
                    stopped = Some(error.into());
                    break;
                }
            }
            if self.out_of_time() {
                stopped = Some(StepError::Transient(
                    "provisioning continues in the next attempt".into(),
                ));
                break;
            }
            match self.deps.provisioning.provision(self.id, line).await {
                Ok(()) => delivered.push(line.id.clone()),
                Err(ProvisioningError::Rejected(reason)) => {
                    self.apply_to(known, |_| Command::ProvisioningRefused {
                        delivered: &delivered,
                        product: &line.id,
                    })
                    .await?;
                    return Err(StepError::ProvisioningFailed(reason).into());
                }
                Err(ProvisioningError::Transient(reason)) => {
                    stopped = Some(StepError::Transient(reason));
                    break;
                }
                Err(ProvisioningError::Misconfigured(reason)) => {
                    stopped = Some(StepError::Internal(reason));
                    break;
                }
            }
        }
        if !delivered.is_empty() {
            let transition = self
                .apply_to(known, |_| Command::LinesProvisioned {
                    products: &delivered,
                })
                .await?;
            if stopped.is_none() {
                may_go_forward(&transition.purchase).map_err(StepError::from)?;
            }
        }
        match stopped {
            Some(error) => Err(error.into()),
            None => Ok(()),
        }
    }

    /// Parks the workflow while the purchase is `ON_HOLD`: stores the task
    /// token so a decision can be delivered to it. A decision taken before
    /// the token was stored is delivered right away, by this step.
    async fn await_review(&self) -> Result<(), StepOutcome> {
        let token = self
            .input
            .task_token
            .as_deref()
            .ok_or_else(|| StepError::InvalidInput("AwaitReview needs `taskToken`".into()))?;
        let transition = self.apply(|_| Command::ParkForReview { token }).await?;
        service::deliver_all(
            self.deps.purchases.as_ref(),
            self.deps.workflow.as_ref(),
            &transition,
        )
        .await
        .map_err(StepError::from)?;
        Ok(())
    }

    /// The review is over: records how it ended and begins the purchase's
    /// next run, whose execution name the review workflow starts.
    async fn continue_purchase(&self) -> Result<Value, StepError> {
        let name = self
            .input
            .run
            .as_deref()
            .ok_or_else(|| StepError::InvalidInput("ContinuePurchase needs `run`".into()))?;
        let after = Run::parse(self.id, name).ok_or_else(|| {
            StepError::InvalidInput(format!("{name:?} is not a run of purchase {}", self.id))
        })?;
        let ending = review_ending(self.input.review.as_ref());
        if ending != ReviewEnding::Decided {
            tracing::warn!(?ending, "the review ended without a decision");
        }
        let transition = self
            .apply(|_| Command::ContinueAfterReview {
                after: after.number,
                ending,
            })
            .await?;
        let next = Run::current(&transition.purchase);
        Ok(json!({ "purchaseId": self.id, "executionName": next.name() }))
    }

    // --- undoing ----------------------------------------------------------

    async fn revoke_products(&self) -> Result<(), StepOutcome> {
        let outcome = self.outcome()?;
        let Transition {
            purchase: mut known,
            effects,
            ..
        } = self.apply(|_| Command::BeginRevoke { outcome }).await?;
        for effect in effects {
            let Effect::Revoke(line) = effect else {
                continue;
            };
            if self.out_of_time() {
                return Err(
                    StepError::Transient("revoking continues in the next attempt".into()).into(),
                );
            }
            match self.deps.provisioning.revoke(self.id, &line).await {
                Ok(()) => {
                    known = self
                        .apply_to(known, |_| Command::LineRevoked {
                            product: &line.id,
                            outcome,
                        })
                        .await?
                        .purchase;
                }
                // Retried, then `NeedsAttention` if it never works: what was
                // delivered is never silently kept.
                Err(error) => return Err(StepError::Transient(error.to_string()).into()),
            }
        }
        Ok(())
    }

    async fn refund_payment(&self) -> Result<(), StepOutcome> {
        let outcome = self.outcome()?;
        let Transition {
            purchase, effects, ..
        } = self.apply(|_| Command::BeginRefund { outcome }).await?;
        let Some(Effect::Refund {
            idempotency_key,
            amount,
        }) = effects.into_iter().next()
        else {
            return Ok(());
        };
        let request = RefundRequest::new(self.id.clone(), idempotency_key, amount);
        match self.deps.payments.refund(&request).await {
            Ok(RefundOutcome::Refunded) => {
                self.apply_to(purchase, |_| Command::Refunded { outcome })
                    .await?;
                Ok(())
            }
            Ok(RefundOutcome::NothingToRefund) => {
                self.apply_to(purchase, |_| Command::NothingToRefund { outcome })
                    .await?;
                Ok(())
            }
            Err(error) => Err(StepError::Transient(error.to_string()).into()),
        }
    }

    async fn release_stock(&self) -> Result<(), StepOutcome> {
        let outcome = self.outcome()?;
        self.apply(|_| Command::ReleaseStock { outcome }).await?;
        Ok(())
    }

    /// First run (after an undoing step failed for good): records
    /// `NEEDS_ATTENTION` and fails, so the execution fails here and the
    /// alarm sees it. Run again by a redrive: resumes at the failed step.
    async fn needs_attention(&self) -> Result<(), StepOutcome> {
        let outcome = self.outcome()?;
        let failed_step =
            self.input.failed_step.as_deref().ok_or_else(|| {
                StepError::InvalidInput("NeedsAttention needs `failedStep`".into())
            })?;
        let error = self.input.error.as_deref().unwrap_or("States.TaskFailed");
        let redriven = self.load().await?.status == PurchaseStatus::NeedsAttention;
        let transition = self
            .apply(|_| Command::NeedsAttention {
                failed_step,
                error,
                outcome,
            })
            .await?;
        if redriven || transition.purchase.status == PurchaseStatus::Completed {
            return Err(Resumed(failed_step.to_owned()));
        }
        Err(StepError::NeedsAttention(format!(
            "purchase {} needs attention: {failed_step} failed with {error}",
            self.id
        ))
        .into())
    }

    /// Answers the purchase's final status: the execution ends by it.
    async fn finalize(&self) -> Result<Value, StepError> {
        let outcome = self.outcome()?;
        let transition = self.apply(|_| Command::Finalize { outcome }).await?;
        Ok(json!({ "purchaseId": self.id, "status": transition.purchase.status }))
    }

    async fn load(&self) -> Result<Purchase, StepError> {
        self.deps
            .purchases
            .get_purchase(self.id)
            .await?
            .ok_or_else(|| StepError::PurchaseNotFound(self.id.to_string()))
    }
}

/// How `AwaitReview` ended, from what the review machine put in `$.review`:
/// the approval's output, or the error a catcher recorded.
fn review_ending(review: Option<&Value>) -> ReviewEnding {
    match review.and_then(|r| r.get("Error")).and_then(Value::as_str) {
        None | Some("PurchaseRejected" | "PurchaseStopped") => ReviewEnding::Decided,
        Some("States.Timeout") => ReviewEnding::TimedOut,
        Some(_) => ReviewEnding::Failed,
    }
}

/// How a step ends other than plainly: failed, or (only `NeedsAttention`)
/// resumed at a step whose name goes into the output.
enum StepOutcome {
    Failed(StepError),
    Resumed(String),
}

use StepOutcome::{Failed, Resumed};

impl From<StepError> for StepOutcome {
    fn from(error: StepError) -> StepOutcome {
        Failed(error)
    }
}

impl From<TransitionError> for StepOutcome {
    fn from(error: TransitionError) -> StepOutcome {
        Failed(error.into())
    }
}
