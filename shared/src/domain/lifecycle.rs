//! The purchase lifecycle: every change to a purchase, from any API request or
//! workflow step, is decided here and nowhere else.
//!
//! [`decide`] takes the purchase as stored and a [`Command`] (a request, or
//! something the workflow did or is about to do) and returns a [`Decision`]:
//! the purchase as it must be written (with its version bumped), the stock to
//! take or give back *in the same atomic write*, and the [`Effect`]s to carry
//! out once the write has landed (start or tell the workflow, call the payment
//! or provisioning service). Or it refuses with a [`DomainError`] that says
//! why. Callers do load → decide → conditional write on `version` → effects;
//! on a lost race they load again and decide again, so a decision is always
//! taken on the purchase it is written over.
//!
//! The invariants this module keeps (each has a test named after it):
//!
//! 1. **The rules' verdict holds for what is fulfilled.** A change of products
//!    or address after the rules have judged the purchase is judged again, by
//!    the `default` set and every rule applied to it, before anything goes on;
//!    a judgement of contents that changed since is refused as stale.
//! 2. **The lines reserved are the lines charged and provisioned.** Stock is
//!    taken exactly when lines become `RESERVED`, in the same write; products
//!    cannot change once any line holds stock.
//! 3. **A parked workflow is always told.** Whatever decision ends or resumes
//!    a purchase parked in review, the task token stays on the purchase until
//!    the decision has been delivered ([`Purchase::pending_notification`]),
//!    so a retried request delivers it again.
//! 4. **Nothing happens to a decided purchase.** Forward steps refuse a
//!    stopped purchase and do nothing on a completed one; undoing steps never
//!    touch a `COMPLETED` purchase.
//! 5. (In the API's idempotency layer: only final answers are replayed.)
//! 6. **The timeline is bounded and written for the customer**: fixed
//!    phrases here, never text from a provider, a store or an SDK.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::DomainError;
use super::ids::{CustomerId, ProductId, PurchaseId};
use super::money::Money;
use super::pricing::PricedLines;
use super::purchase::{
    Attention, FailureReason, LineStatus, PaymentDetails, PaymentStatus, ProductKind, Purchase,
    PurchaseLine, PurchaseStatus, ShippingAddress, ShippingStatus, TaskDecision,
};
use super::rules::{Contents, Facts, Judgement, RuleRequest, RuleSet, MAX_RULES};

/// At most this many rule results are kept on a purchase (the newest).
pub const MAX_RULE_RESULTS: usize = 100;

/// What the rules need to judge a purchase's contents: the `default` set and
/// the purchase's applied rules as the caller combined them, the facts they
/// asked for, and how many applied rules the caller saw (a purchase that has
/// gained one since is judged again).
#[derive(Debug)]
pub struct RulesInput {
    pub rules: RuleSet,
    pub facts: Facts,
    pub applied_rules_seen: usize,
}

/// How a purchase ends when the workflow does not complete it, as the
/// definition's Pass states say (`{"status": "FAILED", "failureReason": ...}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub status: PurchaseStatus,
    #[serde(default)]
    pub failure_reason: Option<FailureReason>,
}

/// Everything that can happen to a purchase.
#[derive(Debug)]
pub enum Command<'a> {
    // --- requests -------------------------------------------------------
    /// The workflow could not be started and certainly did not start.
    StartFailed,
    /// `PUT`: new products (priced) and/or a new address. `rules` must be
    /// given once the rules have judged the purchase.
    Update {
        products: Option<&'a PricedLines>,
        address: Option<&'a ShippingAddress>,
        rules: Option<&'a RulesInput>,
        by: &'a str,
    },
    Cancel {
        by: &'a str,
    },
    /// `apply-rules`: `judgement` of the requested `rules` on the current contents.
    ApplyRules {
        rules: &'a [RuleRequest],
        judgement: &'a Judgement,
    },
    Review {
        approve: bool,
        reason: &'a str,
        by: &'a str,
    },
    RequestRedrive {
        by: &'a str,
    },
    /// The parked task was told (or is known to be gone).
    NotificationDelivered {
        token: &'a str,
    },

    // --- the workflow going forward -------------------------------------
    EvaluateRules {
        rules: &'a RulesInput,
    },
    ReserveStock,
    /// The reservation's write failed for lack of stock of `product`.
    OutOfStock {
        product: &'a ProductId,
    },
    /// May the payment be captured? Answers with [`Effect::Capture`].
    BeginCapture,
    PaymentCaptured {
        reference: &'a str,
    },
    PaymentDeclined,
    /// The provider did not answer; the workflow will retry.
    PaymentRetrying,
    /// Which lines remain to provision? Answers with [`Effect::Provision`]s.
    BeginProvisioning,
    LineProvisioned {
        product: &'a ProductId,
    },
    ProvisioningRefused {
        product: &'a ProductId,
    },
    /// The workflow parked in `AwaitReview` with this task token.
    ParkForReview {
        token: &'a str,
    },

    // --- the workflow undoing -------------------------------------------
    /// Which delivered lines must be taken back? Answers with [`Effect::Revoke`]s.
    BeginRevoke {
        outcome: Outcome,
    },
    LineRevoked {
        product: &'a ProductId,
        outcome: Outcome,
    },
    /// Is a refund owed? Answers with [`Effect::Refund`].
    BeginRefund {
        outcome: Outcome,
    },
    Refunded {
        outcome: Outcome,
    },
    /// The provider holds no capture for this purchase.
    NothingToRefund {
        outcome: Outcome,
    },
    ReleaseStock {
        outcome: Outcome,
    },
    /// An undoing step failed after every retry (first time), or the
    /// execution was redriven after that (second time: resume).
    NeedsAttention {
        failed_step: &'a str,
        error: &'a str,
        outcome: Outcome,
    },
    Finalize {
        outcome: Outcome,
    },
}

/// Stock taken or given back in the same atomic write as the purchase.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StockChange {
    #[default]
    None,
    Take(Vec<(ProductId, u32)>),
    GiveBack(Vec<(ProductId, u32)>),
}

/// A business event worth counting (a metric), once, when it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurchaseEvent {
    Created,
    Completed,
    Failed(FailureReason),
    Cancelled,
    Rejected,
    NeedsAttention,
}

/// What to do once the decision is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    StartWorkflow,
    /// Tell the parked workflow task the decision.
    Notify {
        token: String,
        decision: TaskDecision,
    },
    /// Capture the total, with an idempotency key of its own.
    Capture {
        idempotency_key: String,
        amount: Money,
        payment: PaymentDetails,
    },
    /// Refund whatever was captured, up to `amount`, with its own key.
    Refund {
        idempotency_key: String,
        amount: Money,
    },
    Provision(PurchaseLine),
    Revoke(PurchaseLine),
    /// Restart the failed execution at the step that failed.
    Redrive,
    Count(PurchaseEvent),
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The purchase to write (version bumped), or `None`: nothing changes.
    pub next: Option<Purchase>,
    pub stock: StockChange,
    pub effects: Vec<Effect>,
}

/// The idempotency key of a purchase's capture: one per purchase, the same
/// on every retry, different from its refund's.
pub fn capture_key(id: &PurchaseId) -> String {
    format!("capture-{id}")
}

/// The idempotency key of a purchase's refund.
pub fn refund_key(id: &PurchaseId) -> String {
    format!("refund-{id}")
}

/// A new purchase, priced: `PENDING`, with its workflow to be started.
pub fn create(
    id: PurchaseId,
    customer_id: CustomerId,
    priced: PricedLines,
    payment: PaymentDetails,
    address: ShippingAddress,
    now: DateTime<Utc>,
) -> (Purchase, Vec<Effect>) {
    let shipping_status = shipping_for(&priced.lines);
    let mut purchase = Purchase {
        purchase_id: id,
        customer_id,
        status: PurchaseStatus::Pending,
        products: priced.lines,
        currency: priced.total.currency,
        total_amount: priced.total.amount,
        payment_details: payment,
        payment_status: PaymentStatus::Pending,
        payment_reference: None,
        shipping_address: address,
        shipping_status,
        failure_reason: None,
        review_token: None,
        held_from: None,
        attention: None,
        rules_evaluated: false,
        finalized_at: None,
        timeline: Vec::new(),
        rule_results: Vec::new(),
        applied_rules: Vec::new(),
        version: 1,
        created_at: now,
        updated_at: now,
    };
    purchase.record("Create", "ACCEPTED", None, now);
    (
        purchase,
        vec![Effect::StartWorkflow, Effect::Count(PurchaseEvent::Created)],
    )
}

fn shipping_for(lines: &[PurchaseLine]) -> ShippingStatus {
    if lines.iter().any(|l| l.kind == ProductKind::Physical) {
        ShippingStatus::Pending
    } else {
        ShippingStatus::NotRequired
    }
}

/// May the workflow go forward with this purchase? `Ok(false)`: it is
/// completed, nothing is left to do. Otherwise the error says where the
/// workflow must go instead (park for review, undo).
pub fn may_go_forward(purchase: &Purchase) -> Result<bool, DomainError> {
    let id = || purchase.purchase_id.clone();
    match purchase.status {
        PurchaseStatus::Completed => Ok(false),
        PurchaseStatus::OnHold => Err(DomainError::OnHold(id())),
        PurchaseStatus::Rejected => Err(DomainError::Rejected(id())),
        status if status.is_stopped() => Err(DomainError::Stopped(id())),
        PurchaseStatus::NeedsAttention => Err(DomainError::Stopped(id())),
        _ => Ok(true),
    }
}

/// Decides what `command` does to `purchase`.
pub fn decide(
    purchase: &Purchase,
    command: Command<'_>,
    now: DateTime<Utc>,
) -> Result<Decision, DomainError> {
    let mut draft = Draft::new(purchase, now);
    match command {
        Command::StartFailed => draft.start_failed(),
        Command::Update {
            products,
            address,
            rules,
            by,
        } => draft.update(products, address, rules, by)?,
        Command::Cancel { by } => draft.cancel(by)?,
        Command::ApplyRules { rules, judgement } => draft.apply_rules(rules, judgement.clone())?,
        Command::Review {
            approve,
            reason,
            by,
        } => draft.review(approve, reason, by)?,
        Command::RequestRedrive { by } => draft.request_redrive(by)?,
        Command::NotificationDelivered { token } => {
            if draft.p.review_token.as_deref() == Some(token) {
                draft.p.review_token = None;
                draft.changed = true;
            }
        }
        Command::EvaluateRules { rules } => draft.evaluate_rules(rules)?,
        Command::ReserveStock => draft.reserve_stock()?,
        Command::OutOfStock { product } => draft.out_of_stock(product),
        Command::BeginCapture => draft.begin_capture()?,
        Command::PaymentCaptured { reference } => draft.payment_captured(reference),
        Command::PaymentDeclined => draft.payment_declined(),
        Command::PaymentRetrying => draft.payment_retrying(),
        Command::BeginProvisioning => draft.begin_provisioning()?,
        Command::LineProvisioned { product } => draft.line_provisioned(product),
        Command::ProvisioningRefused { product } => draft.provisioning_refused(product),
        Command::ParkForReview { token } => draft.park_for_review(token),
        Command::BeginRevoke { outcome } => draft.begin_revoke(outcome),
        Command::LineRevoked { product, outcome } => draft.line_revoked(product, outcome),
        Command::BeginRefund { outcome } => draft.begin_refund(outcome),
        Command::Refunded { outcome } => draft.refunded(outcome, true),
        Command::NothingToRefund { outcome } => draft.refunded(outcome, false),
        Command::ReleaseStock { outcome } => draft.release_stock(outcome),
        Command::NeedsAttention {
            failed_step,
            error,
            outcome,
        } => draft.needs_attention(failed_step, error, outcome),
        Command::Finalize { outcome } => draft.finalize(outcome),
    }
    Ok(draft.finish())
}

/// A purchase being changed by one command.
struct Draft<'a> {
    original: &'a Purchase,
    p: Purchase,
    now: DateTime<Utc>,
    changed: bool,
    stock: StockChange,
    effects: Vec<Effect>,
}

impl<'a> Draft<'a> {
    fn new(original: &'a Purchase, now: DateTime<Utc>) -> Draft<'a> {
        Draft {
            original,
            p: original.clone(),
            now,
            changed: false,
            stock: StockChange::None,
            effects: Vec::new(),
        }
    }

    fn record(&mut self, step: &str, outcome: &str, detail: Option<String>) {
        self.p.record(step, outcome, detail, self.now);
        self.changed = true;
    }

    fn finish(mut self) -> Decision {
        // Invariant 3: whatever changed, a decision a parked task has not
        // heard yet is delivered (again) after this write.
        if let Some((token, decision)) = self.p.pending_notification() {
            let notify = Effect::Notify {
                token: token.to_owned(),
                decision,
            };
            if !self.effects.contains(&notify) {
                self.effects.push(notify);
            }
        }
        if !self.changed && self.p == *self.original {
            return Decision {
                next: None,
                stock: StockChange::None,
                effects: self.effects,
            };
        }
        self.p.version = self.original.version + 1;
        self.p.updated_at = self.now;
        Decision {
            next: Some(self.p),
            stock: self.stock,
            effects: self.effects,
        }
    }

    // --- guards -----------------------------------------------------------

    fn forward(&self) -> Result<bool, DomainError> {
        may_go_forward(&self.p)
    }

    /// A request may change the purchase: not decided, not being undone.
    fn open_to_requests(&self, what: &str) -> Result<(), DomainError> {
        let p = &self.p;
        if p.status.is_terminal() || p.status == PurchaseStatus::NeedsAttention {
            return Err(DomainError::NotAllowed(format!(
                "purchase {} is {} and {what}",
                p.purchase_id, p.status
            )));
        }
        Ok(())
    }

    /// Carries out the workflow's decision to stop: the undoing steps call
    /// this first, so whichever of them runs first (or after a redrive)
    /// finds the purchase decided. A decision already taken (by a cancel, a
    /// rejection, a failing step) stands.
    fn stop(&mut self, outcome: Outcome) {
        if self.p.status.is_terminal() || self.p.status == PurchaseStatus::NeedsAttention {
            return;
        }
        let status = if outcome.status.is_stopped() {
            outcome.status
        } else {
            PurchaseStatus::Failed
        };
        self.p.status = status;
        self.p.held_from = None;
        if status == PurchaseStatus::Failed {
            self.p.failure_reason = Some(
                outcome
                    .failure_reason
                    .unwrap_or(FailureReason::InternalError),
            );
        }
        // A task parked in review that the workflow has left (its wait timed
        // out) is gone: there is nobody to tell.
        self.p.review_token = None;
        self.changed = true;
    }

    fn fail(&mut self, reason: FailureReason) {
        self.p.status = PurchaseStatus::Failed;
        self.p.failure_reason = Some(reason);
        self.p.held_from = None;
        self.changed = true;
    }

    /// Undoing never touches a completed purchase (invariant 4).
    fn undoing(&mut self, outcome: Outcome) -> bool {
        if self.p.status == PurchaseStatus::Completed {
            return false;
        }
        self.stop(outcome);
        self.moved_on();
        true
    }

    /// The workflow runs a step, so it is no longer parked in review: a task
    /// token still on the purchase belongs to a task that is gone.
    fn moved_on(&mut self) {
        if self.p.review_token.take().is_some() {
            self.changed = true;
        }
    }

    // --- requests ---------------------------------------------------------

    fn start_failed(&mut self) {
        // Only a purchase nothing has happened to: if the workflow did run
        // after all, it owns the purchase.
        if self.p.status != PurchaseStatus::Pending
            || self.p.products.iter().any(|l| l.status != LineStatus::Pending)
        {
            return;
        }
        self.fail(FailureReason::WorkflowStartFailed);
        self.close_unstarted_parts();
        self.p.finalized_at = Some(self.now);
        self.record(
            "StartWorkflow",
            "FAILED",
            Some(FailureReason::WorkflowStartFailed.describe().to_owned()),
        );
        self.effects.push(Effect::Count(PurchaseEvent::Failed(
            FailureReason::WorkflowStartFailed,
        )));
    }

    /// Parts that never started end `CANCELLED` / `NOT_CHARGED`.
    fn close_unstarted_parts(&mut self) {
        if self.p.payment_status == PaymentStatus::Pending {
            self.p.payment_status = PaymentStatus::NotCharged;
        }
        for line in &mut self.p.products {
            if line.status == LineStatus::Pending {
                line.status = LineStatus::Cancelled;
            }
        }
        if self.p.shipping_status == ShippingStatus::Pending {
            self.p.shipping_status = ShippingStatus::Cancelled;
        }
    }

    fn update(
        &mut self,
        products: Option<&PricedLines>,
        address: Option<&ShippingAddress>,
        rules: Option<&RulesInput>,
        by: &str,
    ) -> Result<(), DomainError> {
        self.open_to_requests("can no longer be changed")?;
        if let Some(priced) = products {
            // Invariant 2: once stock is held the lines are what is charged
            // and delivered.
            let before_reservation = matches!(
                self.p.status,
                PurchaseStatus::Pending | PurchaseStatus::OnHold
            ) && self.p.products.iter().all(|l| l.status == LineStatus::Pending);
            if !before_reservation {
                return Err(DomainError::NotAllowed(format!(
                    "purchase {} is {}: products can only change before stock is reserved",
                    self.p.purchase_id, self.p.status
                )));
            }
            self.p.shipping_status = shipping_for(&priced.lines);
            self.p.products = priced.lines.clone();
            self.p.currency = priced.total.currency.clone();
            self.p.total_amount = priced.total.amount;
        }
        if let Some(address) = address {
            if self.p.shipping_status == ShippingStatus::ReadyToShip {
                return Err(DomainError::NotAllowed(format!(
                    "purchase {} is ready to ship; the address can no longer change",
                    self.p.purchase_id
                )));
            }
            self.p.shipping_address = address.clone();
        }
        self.record("Update", "APPLIED", Some(format!("by {by}")));
        // Invariant 1: contents the rules have judged are judged again.
        if self.p.rules_evaluated && Contents::of(&self.p) != Contents::of(self.original) {
            let Some(input) = rules else {
                return Err(DomainError::Stale);
            };
            if input.applied_rules_seen != self.p.applied_rules.len() {
                return Err(DomainError::Stale);
            }
            let judgement = input.rules.judge(&self.p, &input.facts, self.now);
            self.apply_judgement(judgement, "Rules");
        }
        Ok(())
    }

    fn cancel(&mut self, by: &str) -> Result<(), DomainError> {
        match self.p.status {
            PurchaseStatus::Cancelled => return Ok(()), // idempotent
            PurchaseStatus::NeedsAttention
                if self
                    .p
                    .attention
                    .as_ref()
                    .is_some_and(|a| a.resume_status == PurchaseStatus::Cancelled) =>
            {
                return Ok(());
            }
            _ => {}
        }
        self.open_to_requests("can no longer be cancelled")?;
        self.p.status = PurchaseStatus::Cancelled;
        self.p.held_from = None;
        self.record("Cancel", "REQUESTED", Some(format!("by {by}")));
        Ok(())
    }

    fn apply_rules(
        &mut self,
        rules: &[RuleRequest],
        judgement: Judgement,
    ) -> Result<(), DomainError> {
        self.open_to_requests("its rules can no longer change its outcome")?;
        if judgement.judged != Contents::of(&self.p) {
            return Err(DomainError::Stale);
        }
        for rule in rules {
            if !self.p.applied_rules.contains(rule) {
                self.p.applied_rules.push(rule.clone());
            }
        }
        if self.p.applied_rules.len() > MAX_RULES {
            return Err(DomainError::invalid(
                "rules",
                format!("a purchase carries at most {MAX_RULES} applied rules"),
            ));
        }
        self.apply_judgement(judgement, "ApplyRules");
        Ok(())
    }

    /// Records the results and moves the purchase as the verdict says:
    /// `REJECTED` beats `ON_HOLD` beats going on.
    fn apply_judgement(&mut self, judgement: Judgement, step: &str) {
        let verdict = judgement.verdict();
        let message = judgement.message();
        self.p.rule_results.extend(judgement.results);
        let excess = self.p.rule_results.len().saturating_sub(MAX_RULE_RESULTS);
        self.p.rule_results.drain(..excess);
        self.p.rules_evaluated = true;
        match verdict {
            Some(PurchaseStatus::Rejected) => {
                self.p.status = PurchaseStatus::Rejected;
                self.p.held_from = None;
            }
            Some(PurchaseStatus::OnHold) if self.p.status.is_forward() => {
                self.p.held_from = Some(self.p.status);
                self.p.status = PurchaseStatus::OnHold;
            }
            _ => {}
        }
        let outcome = verdict.map(PurchaseStatus::as_str).unwrap_or("PASSED");
        self.record(step, outcome, Some(message));
    }

    fn review(&mut self, approve: bool, reason: &str, by: &str) -> Result<(), DomainError> {
        if self.p.status != PurchaseStatus::OnHold {
            // A retry of a review whose decision was taken but not yet
            // delivered delivers it again (see `finish`).
            let same_decision = if approve {
                self.p.status.is_forward()
            } else {
                self.p.status == PurchaseStatus::Rejected
            };
            if self.p.review_token.is_some() && same_decision {
                return Ok(());
            }
            return Err(DomainError::NotAllowed(format!(
                "purchase {} is {}; only ON_HOLD purchases can be reviewed",
                self.p.purchase_id, self.p.status
            )));
        }
        if approve {
            self.p.status = self.p.held_from.take().unwrap_or(PurchaseStatus::Pending);
        } else {
            self.p.status = PurchaseStatus::Rejected;
            self.p.held_from = None;
        }
        let outcome = if approve { "APPROVED" } else { "REJECTED" };
        let detail = if reason.is_empty() {
            format!("by {by}")
        } else {
            format!("by {by}: {reason}")
        };
        self.record("Review", outcome, Some(detail));
        Ok(())
    }

    fn request_redrive(&mut self, by: &str) -> Result<(), DomainError> {
        if self.p.status != PurchaseStatus::NeedsAttention {
            return Err(DomainError::NotAllowed(format!(
                "purchase {} is {}; there is nothing to redrive",
                self.p.purchase_id, self.p.status
            )));
        }
        self.record("Redrive", "REQUESTED", Some(format!("by {by}")));
        self.effects.push(Effect::Redrive);
        Ok(())
    }

    // --- going forward ----------------------------------------------------

    fn evaluate_rules(&mut self, input: &RulesInput) -> Result<(), DomainError> {
        self.moved_on();
        if !self.forward()? || self.p.rules_evaluated {
            return Ok(()); // a retry after the verdict was stored
        }
        if input.applied_rules_seen != self.p.applied_rules.len() {
            return Err(DomainError::Stale);
        }
        if input.rules.is_empty() {
            return Ok(()); // nothing to judge; nothing to write
        }
        let judgement = input.rules.judge(&self.p, &input.facts, self.now);
        self.apply_judgement(judgement, "EvaluateRules");
        Ok(())
    }

    fn reserve_stock(&mut self) -> Result<(), DomainError> {
        self.moved_on();
        if !self.forward()? || self.p.status != PurchaseStatus::Pending {
            return Ok(()); // reserved by an earlier attempt
        }
        let mut take = Vec::with_capacity(self.p.products.len());
        for line in &mut self.p.products {
            line.status = LineStatus::Reserved;
            take.push((line.id.clone(), line.quantity));
        }
        self.stock = StockChange::Take(take);
        self.p.status = PurchaseStatus::Reserved;
        self.record("ReserveStock", "SUCCEEDED", None);
        Ok(())
    }

    fn out_of_stock(&mut self, product: &ProductId) {
        if self.p.status.is_terminal()
            || self.p.products.iter().any(|l| l.status != LineStatus::Pending)
        {
            return;
        }
        for line in self.p.products.iter_mut().filter(|l| &l.id == product) {
            line.status = LineStatus::OutOfStock;
        }
        self.fail(FailureReason::OutOfStock);
        self.record(
            "ReserveStock",
            "OUT_OF_STOCK",
            Some(format!("not enough stock of {product}")),
        );
    }

    fn begin_capture(&mut self) -> Result<(), DomainError> {
        self.moved_on();
        if !self.forward()? || self.p.payment_status == PaymentStatus::Captured {
            return Ok(());
        }
        if self.p.status != PurchaseStatus::Reserved
            || self.p.payment_status != PaymentStatus::Pending
        {
            return Err(DomainError::Inconsistent(format!(
                "purchase {} is {} with payment {:?}: nothing to capture",
                self.p.purchase_id, self.p.status, self.p.payment_status
            )));
        }
        self.effects.push(Effect::Capture {
            idempotency_key: capture_key(&self.p.purchase_id),
            amount: self.p.total(),
            payment: self.p.payment_details.clone(),
        });
        Ok(())
    }

    fn payment_captured(&mut self, reference: &str) {
        if self.p.payment_status == PaymentStatus::Captured {
            return;
        }
        // Money moved: recorded whatever the purchase has become, so that
        // undoing it refunds.
        self.p.payment_status = PaymentStatus::Captured;
        self.p.payment_reference = Some(reference.to_owned());
        match self.p.status {
            PurchaseStatus::Reserved => self.p.status = PurchaseStatus::Paid,
            PurchaseStatus::OnHold => self.p.held_from = Some(PurchaseStatus::Paid),
            _ => {}
        }
        self.record("CapturePayment", "SUCCEEDED", None);
    }

    fn payment_declined(&mut self) {
        if self.p.payment_status != PaymentStatus::Pending {
            return;
        }
        self.p.payment_status = PaymentStatus::Declined;
        if !self.p.status.is_terminal() && self.p.status != PurchaseStatus::NeedsAttention {
            self.fail(FailureReason::PaymentDeclined);
        }
        self.record(
            "CapturePayment",
            "DECLINED",
            Some(FailureReason::PaymentDeclined.describe().to_owned()),
        );
    }

    fn payment_retrying(&mut self) {
        let already_said = self
            .p
            .timeline
            .last()
            .is_some_and(|e| e.step == "CapturePayment" && e.outcome == "RETRYING");
        if !already_said && self.p.payment_status == PaymentStatus::Pending {
            self.record(
                "CapturePayment",
                "RETRYING",
                Some("the payment service did not answer; retrying".to_owned()),
            );
        }
    }

    fn begin_provisioning(&mut self) -> Result<(), DomainError> {
        self.moved_on();
        if !self.forward()? {
            return Ok(());
        }
        if self.p.status != PurchaseStatus::Paid {
            return Err(DomainError::Inconsistent(format!(
                "purchase {} is {}: nothing to provision before payment",
                self.p.purchase_id, self.p.status
            )));
        }
        // In the order given, skipping what an earlier attempt delivered.
        for line in &self.p.products {
            if line.status == LineStatus::Reserved {
                self.effects.push(Effect::Provision(line.clone()));
            }
        }
        if self.effects.is_empty() {
            self.complete(); // every line delivered; the completing write was lost
        }
        Ok(())
    }

    fn line_provisioned(&mut self, product: &ProductId) {
        let Some(line) = self
            .p
            .products
            .iter_mut()
            .find(|l| &l.id == product && l.status == LineStatus::Reserved)
        else {
            return;
        };
        // Delivered is delivered: recorded whatever the purchase has become,
        // so that undoing it revokes.
        line.status = LineStatus::Provisioned;
        self.changed = true;
        let all_delivered = self
            .p
            .products
            .iter()
            .all(|l| l.status == LineStatus::Provisioned);
        if all_delivered && self.p.status == PurchaseStatus::Paid {
            self.complete();
        }
    }

    fn complete(&mut self) {
        self.p.status = PurchaseStatus::Completed;
        self.p.shipping_status = if self.p.needs_shipping() {
            ShippingStatus::ReadyToShip
        } else {
            ShippingStatus::NotRequired
        };
        self.p.finalized_at = Some(self.now);
        self.record("ProvisionProducts", "SUCCEEDED", None);
        self.effects.push(Effect::Count(PurchaseEvent::Completed));
    }

    fn provisioning_refused(&mut self, product: &ProductId) {
        let Some(line) = self
            .p
            .products
            .iter_mut()
            .find(|l| &l.id == product && l.status == LineStatus::Reserved)
        else {
            return;
        };
        line.status = LineStatus::ProvisioningFailed;
        if !self.p.status.is_terminal() && self.p.status != PurchaseStatus::NeedsAttention {
            self.fail(FailureReason::ProvisioningFailed);
        }
        self.record(
            "ProvisionProducts",
            "FAILED",
            Some(format!("{product} could not be delivered")),
        );
    }

    fn park_for_review(&mut self, token: &str) {
        if self.p.review_token.as_deref() == Some(token) {
            return; // a retry; `finish` delivers a decision taken meanwhile
        }
        // Stored even when the review is already decided: `finish` then
        // asks for the decision to be delivered to this token right away.
        self.p.review_token = Some(token.to_owned());
        if self.p.status == PurchaseStatus::OnHold {
            self.record("AwaitReview", "WAITING", None);
        } else {
            self.changed = true;
        }
    }

    // --- undoing ----------------------------------------------------------

    fn begin_revoke(&mut self, outcome: Outcome) {
        if !self.undoing(outcome) {
            return;
        }
        for line in &self.p.products {
            if line.status == LineStatus::Provisioned {
                self.effects.push(Effect::Revoke(line.clone()));
            }
        }
    }

    fn line_revoked(&mut self, product: &ProductId, outcome: Outcome) {
        if !self.undoing(outcome) {
            return;
        }
        let Some(line) = self
            .p
            .products
            .iter_mut()
            .find(|l| &l.id == product && l.status == LineStatus::Provisioned)
        else {
            return;
        };
        line.status = LineStatus::Revoked;
        self.stock = StockChange::GiveBack(vec![(line.id.clone(), line.quantity)]);
        self.record(
            "RevokeProducts",
            "REVOKED",
            Some(format!("{product} was taken back")),
        );
    }

    fn begin_refund(&mut self, outcome: Outcome) {
        if !self.undoing(outcome) {
            return;
        }
        // `PENDING` once stock was held: a capture may have reached the
        // provider without its write landing (a crash, a timeout). The refund
        // is keyed by purchase, and the provider answers "nothing to refund"
        // when nothing was captured.
        let capture_possible = self
            .p
            .products
            .iter()
            .any(|l| l.status != LineStatus::Pending && l.status != LineStatus::OutOfStock)
            && self.p.payment_status == PaymentStatus::Pending;
        let owed = matches!(
            self.p.payment_status,
            PaymentStatus::Captured | PaymentStatus::RefundFailed
        );
        if owed || capture_possible {
            self.effects.push(Effect::Refund {
                idempotency_key: refund_key(&self.p.purchase_id),
                amount: self.p.total(),
            });
        }
    }

    fn refunded(&mut self, outcome: Outcome, refunded: bool) {
        if !self.undoing(outcome) {
            return;
        }
        match self.p.payment_status {
            // The provider has no capture although we recorded one: an
            // earlier attempt refunded it and its write did not land.
            PaymentStatus::Captured | PaymentStatus::RefundFailed => {
                self.p.payment_status = PaymentStatus::Refunded;
                self.record("RefundPayment", "SUCCEEDED", None);
            }
            PaymentStatus::Pending if refunded => {
                self.p.payment_status = PaymentStatus::Refunded;
                self.record("RefundPayment", "SUCCEEDED", None);
            }
            PaymentStatus::Pending => {
                self.p.payment_status = PaymentStatus::NotCharged;
                self.changed = true;
            }
            _ => {}
        }
    }

    fn release_stock(&mut self, outcome: Outcome) {
        if !self.undoing(outcome) {
            return;
        }
        let mut give_back = Vec::new();
        for line in &mut self.p.products {
            if line.status == LineStatus::Reserved {
                line.status = LineStatus::Released;
                give_back.push((line.id.clone(), line.quantity));
            }
        }
        if !give_back.is_empty() {
            self.stock = StockChange::GiveBack(give_back);
            self.record("ReleaseStock", "SUCCEEDED", None);
        }
    }

    fn needs_attention(&mut self, failed_step: &str, error: &str, outcome: Outcome) {
        if self.p.status == PurchaseStatus::Completed {
            return;
        }
        if self.p.status == PurchaseStatus::NeedsAttention {
            // Run again: an operator redrove the failed execution. Go back to
            // the decision and try the step again.
            let resume_status = self
                .p
                .attention
                .take()
                .map(|a| a.resume_status)
                .unwrap_or(PurchaseStatus::Failed);
            self.p.status = resume_status;
            if self.p.payment_status == PaymentStatus::RefundFailed {
                self.p.payment_status = PaymentStatus::Captured;
            }
            self.record(
                "Redrive",
                "RESUMED",
                Some(format!("{failed_step} is tried again")),
            );
            return;
        }
        self.stop(outcome);
        self.moved_on();
        self.p.attention = Some(Attention {
            failed_step: failed_step.to_owned(),
            error: error.to_owned(),
            since: self.now,
            resume_status: self.p.status,
        });
        if failed_step == "RefundPayment" && self.p.payment_status == PaymentStatus::Captured {
            self.p.payment_status = PaymentStatus::RefundFailed;
        }
        self.p.status = PurchaseStatus::NeedsAttention;
        self.record(
            "NeedsAttention",
            "WAITING",
            Some(format!(
                "{failed_step} could not be completed; an operator has been alerted"
            )),
        );
        self.effects
            .push(Effect::Count(PurchaseEvent::NeedsAttention));
    }

    fn finalize(&mut self, outcome: Outcome) {
        if self.p.is_final() || !self.undoing(outcome) {
            return;
        }
        self.close_unstarted_parts();
        self.p.finalized_at = Some(self.now);
        let reason = self.p.failure_reason.filter(|_| self.p.status == PurchaseStatus::Failed);
        let status = self.p.status;
        self.record(
            "FinalizePurchase",
            status.as_str(),
            reason.map(|r| r.describe().to_owned()),
        );
        let event = match status {
            PurchaseStatus::Failed => {
                PurchaseEvent::Failed(reason.unwrap_or(FailureReason::InternalError))
            }
            PurchaseStatus::Rejected => PurchaseEvent::Rejected,
            _ => PurchaseEvent::Cancelled,
        };
        self.effects.push(Effect::Count(event));
    }
}
