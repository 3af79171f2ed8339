//! The workflow's step tasks: reserve stock, capture payment, provision, and
//! the compensations. Each is a plain async function over the ports, invoked
//! by a `lambda_runtime` function on AWS and by the local runner in-process.
//!
//! Every step is idempotent (Step Functions and the local runner retry), and
//! every status change is a conditional write on the purchase's version, so a
//! cancel racing a step never loses either side.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use tracing::Instrument;

use crate::metrics::{self, PurchaseEvent};
use crate::model::{
    FailureReason, LineStatus, PaymentStatus, Purchase, PurchaseStatus, ShippingStatus,
};
use crate::payment::{CaptureRequest, PaymentError, PaymentGateway, RefundOutcome};
use crate::provisioning::{Provisioner, ProvisioningError};
use crate::rules::{RuleRequest, RuleSet, gather_facts};
use crate::store::{DEFAULT_RULE_SET, Inventory, PurchaseStore, RuleSetStore, StoreError};
use crate::workflow::{Workflow, review_decision};

/// A step's failure, reaching Step Functions as `errorType`.
///
/// The names are the contract with `statemachine/purchase.asl.json`'s Retry
/// and Catch blocks; `tests/definition.rs` checks both directions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    #[error("{0}")]
    OutOfStock(String),
    #[error("{0}")]
    PaymentDeclined(String),
    #[error("{0}")]
    ProvisioningFailed(String),
    /// The purchase was cancelled or rejected while the workflow ran.
    #[error("purchase {0} was cancelled")]
    PurchaseCancelled(String),
    /// The purchase is `ON_HOLD`: the definition parks the workflow in
    /// `AwaitReview` until an admin approves or rejects it.
    #[error("purchase {0} is on hold for review")]
    PurchaseOnHold(String),
    /// An admin rejected the held purchase (sent as a task failure).
    #[error("purchase {0} was rejected on review")]
    PurchaseRejected(String),
    #[error("purchase {0} not found")]
    PurchaseNotFound(String),
    /// The step input is not what the definition promises (a bug).
    #[error("invalid step input: {0}")]
    InvalidInput(String),
    /// Worth retrying: throttling, timeouts, a lost version race.
    #[error("{0}")]
    Transient(String),
    #[error("{0}")]
    Internal(String),
}

impl StepError {
    /// Every `errorType` a step can raise.
    pub const NAMES: [&'static str; 10] = [
        "OutOfStock",
        "PaymentDeclined",
        "ProvisioningFailed",
        "PurchaseCancelled",
        "PurchaseOnHold",
        "PurchaseRejected",
        "PurchaseNotFound",
        "InvalidInput",
        "Transient",
        "Internal",
    ];

    /// The stable `errorType` (never the Rust type name, which can change).
    pub fn name(&self) -> &'static str {
        match self {
            StepError::OutOfStock(_) => "OutOfStock",
            StepError::PaymentDeclined(_) => "PaymentDeclined",
            StepError::ProvisioningFailed(_) => "ProvisioningFailed",
            StepError::PurchaseCancelled(_) => "PurchaseCancelled",
            StepError::PurchaseOnHold(_) => "PurchaseOnHold",
            StepError::PurchaseRejected(_) => "PurchaseRejected",
            StepError::PurchaseNotFound(_) => "PurchaseNotFound",
            StepError::InvalidInput(_) => "InvalidInput",
            StepError::Transient(_) => "Transient",
            StepError::Internal(_) => "Internal",
        }
    }
}

impl From<StoreError> for StepError {
    fn from(error: StoreError) -> StepError {
        match error {
            StoreError::NotFound(id) => StepError::PurchaseNotFound(id),
            // A lost race survives `modify_purchase`'s own retries only under
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

/// The step task functions. `function_name` is the Lambda's name and binary
/// name; `arn_placeholder` is the `${...}` the definition uses for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    ReserveStock,
    CapturePayment,
    ProvisionProducts,
    RefundPayment,
    ReleaseStock,
    FinalizePurchase,
    AwaitReview,
    EvaluateRules,
}

impl Step {
    pub const ALL: [Step; 8] = [
        Step::EvaluateRules,
        Step::ReserveStock,
        Step::CapturePayment,
        Step::ProvisionProducts,
        Step::RefundPayment,
        Step::ReleaseStock,
        Step::FinalizePurchase,
        Step::AwaitReview,
    ];

    /// The state name in the definition, and the timeline's `step`.
    pub fn state_name(self) -> &'static str {
        match self {
            Step::ReserveStock => "ReserveStock",
            Step::CapturePayment => "CapturePayment",
            Step::ProvisionProducts => "ProvisionProducts",
            Step::RefundPayment => "RefundPayment",
            Step::ReleaseStock => "ReleaseStock",
            Step::FinalizePurchase => "FinalizePurchase",
            Step::AwaitReview => "AwaitReview",
            Step::EvaluateRules => "EvaluateRules",
        }
    }

    pub fn function_name(self) -> &'static str {
        match self {
            Step::ReserveStock => "reserve-stock",
            Step::CapturePayment => "capture-payment",
            Step::ProvisionProducts => "provision-products",
            Step::RefundPayment => "refund-payment",
            Step::ReleaseStock => "release-stock",
            Step::FinalizePurchase => "finalize-purchase",
            Step::AwaitReview => "await-review",
            Step::EvaluateRules => "evaluate-rules",
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

    pub async fn run(self, deps: &StepDeps, input: Value) -> Result<Value, StepError> {
        let input: StepInput =
            serde_json::from_value(input).map_err(|e| StepError::InvalidInput(e.to_string()))?;
        let id = input.purchase_id.as_str();
        // The execution is named after the purchase, so `purchase_id` is
        // also the execution name on every line this step logs.
        let span = tracing::info_span!(
            "step",
            step = self.state_name(),
            purchase_id = id,
            execution_name = id
        );
        let result = async {
            let result = match self {
                Step::EvaluateRules => evaluate_rules(deps, id).await,
                Step::ReserveStock => reserve_stock(deps, id).await,
                Step::CapturePayment => capture_payment(deps, id).await,
                Step::ProvisionProducts => provision_products(deps, id).await,
                Step::RefundPayment => refund_payment(deps, id).await,
                Step::ReleaseStock => release_stock(deps, id).await,
                Step::FinalizePurchase => match &input.outcome {
                    Some(outcome) => finalize_purchase(deps, id, outcome).await,
                    None => Err(StepError::InvalidInput(
                        "FinalizePurchase needs `outcome`".into(),
                    )),
                },
                Step::AwaitReview => match &input.task_token {
                    Some(token) => await_review(deps, id, token).await,
                    None => Err(StepError::InvalidInput(
                        "AwaitReview needs `taskToken`".into(),
                    )),
                },
            };
            match &result {
                Ok(_) => tracing::info!("step succeeded"),
                Err(error) => tracing::warn!(error_type = error.name(), %error, "step failed"),
            }
            result
        }
        .instrument(span)
        .await;
        result.map(|status| json!({ "purchaseId": id, "status": status }))
    }
}

/// What every step receives: the execution state's `purchaseId`, plus the
/// `outcome` the compensation path carries to `FinalizePurchase`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StepInput {
    purchase_id: String,
    #[serde(default)]
    outcome: Option<Outcome>,
    #[serde(default)]
    task_token: Option<String>,
}

/// How a purchase ends when the workflow does not complete it. Set by the
/// definition's Pass states, extended by failed compensations.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub status: PurchaseStatus,
    #[serde(default)]
    pub failure_reason: Option<FailureReason>,
    #[serde(default)]
    pub refund_failed: bool,
    #[serde(default)]
    pub release_failed: bool,
}

/// Everything the steps talk to, built once per cold start.
#[derive(Clone)]
pub struct StepDeps {
    pub purchases: Arc<dyn PurchaseStore>,
    pub inventory: Arc<dyn Inventory>,
    pub rule_sets: Arc<dyn RuleSetStore>,
    pub payments: Arc<dyn PaymentGateway>,
    pub provisioning: Arc<dyn Provisioner>,
    /// For `AwaitReview`, which may have to complete its own task token.
    pub workflow: Arc<dyn Workflow>,
}

/// Reads the purchase, applies `change`, and writes it back conditionally on
/// the version read; on a lost race, re-reads and re-applies. `change`
/// returns `false` when there is nothing to write.
pub async fn modify_purchase<E>(
    store: &dyn PurchaseStore,
    purchase_id: &str,
    mut change: impl FnMut(&mut Purchase) -> Result<bool, E>,
) -> Result<Purchase, E>
where
    E: From<StoreError>,
{
    const ATTEMPTS: u32 = 24;
    for attempt in 0..ATTEMPTS {
        let mut purchase = store
            .get_purchase(purchase_id)
            .await?
            .ok_or_else(|| StoreError::NotFound(purchase_id.to_owned()))?;
        if !change(&mut purchase)? {
            return Ok(purchase);
        }
        match store.update_purchase(&mut purchase).await {
            Ok(()) => return Ok(purchase),
            Err(StoreError::VersionConflict) => {
                // Many writers on one purchase (a burst of PUTs, a cancel
                // racing a step): back off with full jitter so they spread
                // out instead of colliding again in lockstep.
                let cap_ms = 1u64 << attempt.min(8);
                tokio::time::sleep(std::time::Duration::from_millis(fastrand::u64(0..=cap_ms)))
                    .await;
            }
            Err(other) => return Err(other.into()),
        }
    }
    Err(StoreError::VersionConflict.into())
}

async fn load(deps: &StepDeps, id: &str) -> Result<Purchase, StepError> {
    deps.purchases
        .get_purchase(id)
        .await?
        .ok_or_else(|| StepError::PurchaseNotFound(id.to_owned()))
}

/// Cancelled and rejected purchases stop the forward path (the definition
/// catches `PurchaseCancelled` and compensates); held ones park it in
/// `AwaitReview` (`PurchaseOnHold`).
fn ensure_running(purchase: &Purchase) -> Result<(), StepError> {
    let id = purchase.purchase_id.clone();
    match purchase.status {
        PurchaseStatus::Cancelled | PurchaseStatus::Rejected => {
            Err(StepError::PurchaseCancelled(id))
        }
        PurchaseStatus::OnHold => Err(StepError::PurchaseOnHold(id)),
        _ => Ok(()),
    }
}

fn is_stopped(purchase: &Purchase) -> bool {
    matches!(
        purchase.status,
        PurchaseStatus::Cancelled | PurchaseStatus::Rejected
    )
}

/// Records that the forward path got to `next`. A purchase put on hold
/// meanwhile stays on hold but will resume at `next` when approved; a
/// cancelled one stays cancelled (the compensation undoes the step).
fn advance(purchase: &mut Purchase, next: PurchaseStatus) -> Result<(), StepError> {
    match purchase.status {
        PurchaseStatus::OnHold => {
            purchase.held_from = Some(next);
            Ok(())
        }
        _ if is_stopped(purchase) => Ok(()),
        _ => purchase
            .move_to(next)
            .map_err(|e| StepError::Internal(e.to_string())),
    }
}

/// The workflow's first step: evaluates the stored `default` rule set, if
/// there is one. A reject violation ends the purchase before anything is
/// reserved or charged; a hold parks it for review.
async fn evaluate_rules(deps: &StepDeps, id: &str) -> Result<PurchaseStatus, StepError> {
    let purchase = load(deps, id).await?;
    ensure_running(&purchase)?;
    let evaluated = purchase.timeline.iter().any(|e| e.step == "EvaluateRules");
    if purchase.status != PurchaseStatus::Pending || evaluated {
        return Ok(purchase.status); // a retry after the verdict was stored
    }
    let Some(stored) = deps.rule_sets.get_rule_set(DEFAULT_RULE_SET).await? else {
        return Ok(purchase.status);
    };
    let requests: Vec<RuleRequest> = stored
        .rules
        .iter()
        .map(|rule| serde_json::from_value(rule.clone()))
        .collect::<Result<_, _>>()
        .map_err(|e| {
            StepError::Internal(format!(
                "stored rule set {DEFAULT_RULE_SET} is unreadable: {e}"
            ))
        })?;
    let rules = RuleSet::from_requests(&requests, "rules").map_err(|e| {
        StepError::Internal(format!(
            "stored rule set {DEFAULT_RULE_SET} is no longer valid: {e:?}"
        ))
    })?;
    let facts = gather_facts(deps.purchases.as_ref(), &rules, &purchase)
        .await
        .map_err(|e| StepError::Transient(e.to_string()))?;
    let evaluator = format!("rule set {DEFAULT_RULE_SET} v{}", stored.version);
    let evaluation = rules.evaluate(&purchase, &facts, &evaluator);
    let purchase = modify_purchase(deps.purchases.as_ref(), id, |p| {
        if p.status != PurchaseStatus::Pending {
            return Ok(false); // cancelled or changed meanwhile: the next check decides
        }
        evaluation
            .apply_to(p, "EvaluateRules")
            .map_err(|e| StepError::Internal(e.to_string()))?;
        Ok::<_, StepError>(true)
    })
    .await?;
    match purchase.status {
        PurchaseStatus::Rejected => Err(StepError::PurchaseRejected(id.to_owned())),
        _ => ensure_running(&purchase).map(|()| purchase.status),
    }
}

async fn reserve_stock(deps: &StepDeps, id: &str) -> Result<PurchaseStatus, StepError> {
    let purchase = load(deps, id).await?;
    ensure_running(&purchase)?;
    if purchase.status != PurchaseStatus::Pending {
        // Already past this step: a retry after a write we did not see succeed.
        return Ok(purchase.status);
    }
    let lines: Vec<(String, u32)> = purchase
        .products
        .iter()
        .map(|line| (line.id.clone(), line.quantity))
        .collect();
    match deps.inventory.reserve_stock(id, &lines).await {
        Ok(()) => {}
        Err(StoreError::OutOfStock {
            product_id,
            requested,
            available,
        }) => {
            let detail = format!("{product_id}: {requested} requested, {available} available");
            modify_purchase(deps.purchases.as_ref(), id, |p| {
                for line in p.products.iter_mut().filter(|l| l.id == product_id) {
                    line.status = LineStatus::OutOfStock;
                }
                p.record("ReserveStock", "OUT_OF_STOCK", Some(detail.clone()));
                Ok::<_, StepError>(true)
            })
            .await?;
            return Err(StepError::OutOfStock(format!(
                "not enough stock of {detail}"
            )));
        }
        Err(other) => return Err(other.into()),
    }
    let purchase = modify_purchase(deps.purchases.as_ref(), id, |p| {
        for line in &mut p.products {
            line.status = LineStatus::Reserved;
        }
        p.record("ReserveStock", "SUCCEEDED", None);
        advance(p, PurchaseStatus::Reserved)?;
        Ok::<_, StepError>(true)
    })
    .await?;
    // Cancelled while we reserved: the stock is recorded as held, so the
    // compensation path releases it.
    ensure_running(&purchase)?;
    Ok(purchase.status)
}

async fn capture_payment(deps: &StepDeps, id: &str) -> Result<PurchaseStatus, StepError> {
    let purchase = load(deps, id).await?;
    ensure_running(&purchase)?;
    if purchase.payment_status == PaymentStatus::Captured {
        return Ok(purchase.status);
    }
    let request = CaptureRequest {
        purchase_id: id.to_owned(),
        amount: purchase.total_amount,
        currency: purchase.currency.clone(),
        method: purchase.payment_details.method.clone(),
        transaction_id: purchase.payment_details.transaction_id.clone(),
    };
    match deps.payments.capture(&request).await {
        Ok(capture) => {
            let purchase = modify_purchase(deps.purchases.as_ref(), id, |p| {
                p.payment_status = PaymentStatus::Captured;
                p.payment_reference = Some(capture.payment_reference.clone());
                p.record("CapturePayment", "SUCCEEDED", None);
                // A purchase cancelled meanwhile records the capture too, so
                // the compensation refunds it.
                advance(p, PurchaseStatus::Paid)?;
                Ok::<_, StepError>(true)
            })
            .await?;
            ensure_running(&purchase)?;
            Ok(purchase.status)
        }
        Err(PaymentError::Declined(reason)) => {
            modify_purchase(deps.purchases.as_ref(), id, |p| {
                p.payment_status = PaymentStatus::Declined;
                p.record("CapturePayment", "DECLINED", Some(reason.clone()));
                Ok::<_, StepError>(true)
            })
            .await?;
            Err(StepError::PaymentDeclined(reason))
        }
        Err(PaymentError::Transient(reason)) => {
            // Shown on the timeline so a user sees why the purchase is slow.
            modify_purchase(deps.purchases.as_ref(), id, |p| {
                p.record("CapturePayment", "RETRYING", Some(reason.clone()));
                Ok::<_, StepError>(true)
            })
            .await?;
            Err(StepError::Transient(reason))
        }
    }
}

async fn provision_products(deps: &StepDeps, id: &str) -> Result<PurchaseStatus, StepError> {
    let purchase = load(deps, id).await?;
    ensure_running(&purchase)?;
    if purchase.status == PurchaseStatus::Completed {
        return Ok(purchase.status);
    }
    for line in &purchase.products {
        match deps.provisioning.provision(id, line).await {
            Ok(()) => {}
            Err(ProvisioningError::Rejected(reason)) => {
                let product_id = line.id.clone();
                modify_purchase(deps.purchases.as_ref(), id, |p| {
                    for line in p.products.iter_mut().filter(|l| l.id == product_id) {
                        line.status = LineStatus::ProvisioningFailed;
                    }
                    p.record("ProvisionProducts", "FAILED", Some(reason.clone()));
                    Ok::<_, StepError>(true)
                })
                .await?;
                return Err(StepError::ProvisioningFailed(reason));
            }
            Err(ProvisioningError::Transient(reason)) => return Err(StepError::Transient(reason)),
        }
    }
    let purchase = modify_purchase(deps.purchases.as_ref(), id, |p| {
        if p.status != PurchaseStatus::Paid {
            // Cancelled or held while provisioning: leave the decision to
            // the compensation or the review (provisioning is idempotent).
            return Ok(false);
        }
        for line in &mut p.products {
            line.status = LineStatus::Provisioned;
        }
        p.shipping_status = if p.needs_shipping() {
            ShippingStatus::ReadyToShip
        } else {
            ShippingStatus::NotRequired
        };
        p.record("ProvisionProducts", "SUCCEEDED", None);
        advance(p, PurchaseStatus::Completed)?;
        Ok::<_, StepError>(true)
    })
    .await?;
    ensure_running(&purchase)?;
    metrics::record(PurchaseEvent::Completed, id);
    Ok(purchase.status)
}

async fn refund_payment(deps: &StepDeps, id: &str) -> Result<PurchaseStatus, StepError> {
    let purchase = load(deps, id).await?;
    // `Pending` too: a capture may have succeeded at the provider without
    // our write landing (crash, timeout). The provider's refund is keyed by
    // purchase and answers "nothing to refund" when nothing was captured.
    if !matches!(
        purchase.payment_status,
        PaymentStatus::Captured | PaymentStatus::Pending | PaymentStatus::RefundFailed
    ) {
        return Ok(purchase.status);
    }
    let outcome = deps
        .payments
        .refund(id)
        .await
        .map_err(|error| match error {
            PaymentError::Transient(reason) | PaymentError::Declined(reason) => {
                StepError::Transient(reason)
            }
        })?;
    let purchase = modify_purchase(deps.purchases.as_ref(), id, |p| match outcome {
        RefundOutcome::Refunded => {
            p.payment_status = PaymentStatus::Refunded;
            p.record("RefundPayment", "SUCCEEDED", None);
            Ok::<_, StepError>(true)
        }
        RefundOutcome::NothingToRefund if p.payment_status == PaymentStatus::Captured => {
            // The provider has no capture although we recorded one: it was
            // refunded by an earlier attempt whose write did not land.
            p.payment_status = PaymentStatus::Refunded;
            p.record("RefundPayment", "SUCCEEDED", None);
            Ok(true)
        }
        RefundOutcome::NothingToRefund => Ok(false),
    })
    .await?;
    Ok(purchase.status)
}

async fn release_stock(deps: &StepDeps, id: &str) -> Result<PurchaseStatus, StepError> {
    let released = deps.inventory.release_stock(id).await?;
    let purchase = modify_purchase(deps.purchases.as_ref(), id, |p| {
        let mut changed = false;
        for line in p
            .products
            .iter_mut()
            .filter(|l| l.status == LineStatus::Reserved)
        {
            line.status = LineStatus::Released;
            changed = true;
        }
        if released {
            p.record("ReleaseStock", "SUCCEEDED", None);
            changed = true;
        }
        Ok::<_, StepError>(changed)
    })
    .await?;
    Ok(purchase.status)
}

async fn finalize_purchase(
    deps: &StepDeps,
    id: &str,
    outcome: &Outcome,
) -> Result<PurchaseStatus, StepError> {
    let mut finalized_now = false;
    let purchase = modify_purchase(deps.purchases.as_ref(), id, |p| {
        if p.status.is_terminal() && p.timeline.iter().any(|e| e.step == "FinalizePurchase") {
            return Ok(false); // finalized by an earlier attempt
        }
        // A cancel or reject recorded by the API wins over the workflow's
        // own outcome: it is what the customer asked for first.
        if !p.status.is_terminal() {
            p.move_to(outcome.status)
                .map_err(|e| StepError::Internal(e.to_string()))?;
            if outcome.status == PurchaseStatus::Failed {
                p.failure_reason = Some(
                    outcome
                        .failure_reason
                        .unwrap_or(FailureReason::InternalError),
                );
            }
        }
        if outcome.refund_failed {
            p.payment_status = PaymentStatus::RefundFailed;
        }
        if outcome.refund_failed || outcome.release_failed {
            p.failure_reason = Some(FailureReason::CompensationFailed);
        }
        if p.payment_status == PaymentStatus::Pending {
            p.payment_status = PaymentStatus::NotCharged;
        }
        for line in p
            .products
            .iter_mut()
            .filter(|l| l.status == LineStatus::Pending)
        {
            line.status = LineStatus::Cancelled;
        }
        if p.shipping_status == ShippingStatus::Pending {
            p.shipping_status = ShippingStatus::Cancelled;
        }
        let detail = p.failure_reason.map(|reason| reason.as_str().to_owned());
        p.record("FinalizePurchase", p.status.as_str(), detail);
        finalized_now = true;
        Ok::<_, StepError>(true)
    })
    .await?;
    // Counted once, by the attempt that wrote the final status.
    let event = match purchase.status {
        _ if !finalized_now => None,
        PurchaseStatus::Failed => Some(PurchaseEvent::Failed {
            reason: purchase
                .failure_reason
                .unwrap_or(FailureReason::InternalError)
                .as_str(),
        }),
        PurchaseStatus::Cancelled => Some(PurchaseEvent::Cancelled),
        PurchaseStatus::Rejected => Some(PurchaseEvent::Rejected),
        _ => None,
    };
    if let Some(event) = event {
        metrics::record(event, id);
    }
    Ok(purchase.status)
}

/// Parks the workflow while the purchase is `ON_HOLD`: stores the task token
/// so the review endpoint can resume (approve) or fail (reject) the task. If
/// the review already happened before the token was stored, completes the
/// token itself with that decision.
async fn await_review(deps: &StepDeps, id: &str, token: &str) -> Result<PurchaseStatus, StepError> {
    let purchase = modify_purchase(deps.purchases.as_ref(), id, |p| {
        if p.status != PurchaseStatus::OnHold || p.review_token.as_deref() == Some(token) {
            return Ok::<_, StepError>(false);
        }
        p.review_token = Some(token.to_owned());
        p.record("AwaitReview", "WAITING", None);
        Ok(true)
    })
    .await?;
    if purchase.status != PurchaseStatus::OnHold {
        let sent = match review_decision(&purchase) {
            Ok(output) => deps.workflow.send_task_success(token, output).await,
            Err((error, cause)) => deps.workflow.send_task_failure(token, error, &cause).await,
        };
        sent.map_err(|e| StepError::Transient(e.to_string()))?;
    }
    Ok(purchase.status)
}
