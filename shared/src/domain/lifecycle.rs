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
use super::rules::{Contents, Facts, Judgement, MAX_RULES, RuleRequest, RuleSet};

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
    /// An operator asks for a `NEEDS_ATTENTION` purchase to be tried again.
    /// `new_run`: the workflow cannot redrive its failed execution (an
    /// `EXPRESS` one keeps no history): the purchase goes back to the
    /// decision it was carrying out and a new run undoes it from the start.
    RequestRedrive {
        by: &'a str,
        new_run: bool,
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
    /// These lines were delivered: recorded together, in one write.
    LinesProvisioned {
        products: &'a [ProductId],
    },
    /// `product` was refused, after `delivered` were delivered.
    ProvisioningRefused {
        delivered: &'a [ProductId],
        product: &'a ProductId,
    },
    /// The workflow parked in `AwaitReview` with this task token.
    ParkForReview {
        token: &'a str,
    },
    /// The review of the hold of run `after` is over (`ending` says how):
    /// the purchase continues in the run after it.
    ContinueAfterReview {
        after: u32,
        ending: ReviewEnding,
    },
    /// The reconciler found run `after` lost (an `EXPRESS` execution ended
    /// without finishing the purchase) and starts the next one.
    RestartRun {
        after: u32,
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

/// How the review of a held purchase ended, as the review workflow saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewEnding {
    /// A decision reached the parked task (approve, reject, cancel, a rule).
    Decided,
    /// Nobody decided within the review's time (14 days): a purchase still
    /// on hold is rejected.
    TimedOut,
    /// The review task failed for another reason after its retries: the
    /// purchase fails and is undone, as after any step failing for good.
    Failed,
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
    /// Start run `n` of the purchase's workflow (its name follows from `n`).
    StartRun(u32),
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
        judged_contents: None,
        approved_contents: None,
        finalized_at: None,
        timeline: Vec::new(),
        rule_results: Vec::new(),
        applied_rules: Vec::new(),
        run: 1,
        restarts: 0,
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
        Command::RequestRedrive { by, new_run } => draft.request_redrive(by, new_run)?,
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
        Command::LinesProvisioned { products } => products
            .iter()
            .for_each(|product| draft.line_provisioned(product)),
        Command::ProvisioningRefused { delivered, product } => {
            delivered
                .iter()
                .for_each(|product| draft.line_provisioned(product));
            draft.provisioning_refused(product);
        }
        Command::ParkForReview { token } => draft.park_for_review(token),
        Command::ContinueAfterReview { after, ending } => {
            draft.continue_after_review(after, ending)
        }
        Command::RestartRun { after } => draft.restart_run(after),
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
        if !self.p.is_untouched() {
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
            ) && self
                .p
                .products
                .iter()
                .all(|l| l.status == LineStatus::Pending);
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
        // Invariant 1: new contents are judged by all the purchase's rules
        // as they are made, whatever the workflow has done so far.
        if Contents::of(&self.p) != Contents::of(self.original) {
            let Some(input) = rules else {
                return Err(DomainError::Stale);
            };
            if input.applied_rules_seen != self.p.applied_rules.len() {
                return Err(DomainError::Stale);
            }
            let judgement = input.rules.judge(&self.p, &input.facts, self.now);
            self.apply_judgement(judgement, "Rules", true);
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
        // Only these rules judged: the default set still judges in
        // `EvaluateRules` if it has not yet.
        self.apply_judgement(judgement, "ApplyRules", false);
        Ok(())
    }

    /// Records the results and moves the purchase as the verdict says:
    /// `REJECTED` beats `ON_HOLD` beats going on. A hold of contents a
    /// reviewer already approved is not asked again. `all_rules`: the
    /// judgement is of all the purchase's rules, so these contents need not
    /// be judged again.
    fn apply_judgement(&mut self, judgement: Judgement, step: &str, all_rules: bool) {
        let approved =
            self.p.approved_contents.as_deref() == Some(&Contents::of(&self.p).fingerprint());
        let verdict = match judgement.verdict() {
            Some(PurchaseStatus::OnHold) if approved => None,
            verdict => verdict,
        };
        let message = if verdict.is_none() && judgement.verdict().is_some() {
            "the rules' hold was approved on review for these contents".to_owned()
        } else {
            judgement.message()
        };
        let judgement_was_empty = judgement.results.is_empty();
        self.p.rule_results.extend(judgement.results);
        let excess = self.p.rule_results.len().saturating_sub(MAX_RULE_RESULTS);
        self.p.rule_results.drain(..excess);
        if all_rules {
            self.p.judged_contents = Some(Contents::of(&self.p).fingerprint());
        }
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
        if judgement_was_empty {
            self.changed = true;
            return; // no rules: nothing to tell anyone
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
            self.p.approved_contents = Some(Contents::of(&self.p).fingerprint());
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

    fn request_redrive(&mut self, by: &str, new_run: bool) -> Result<(), DomainError> {
        if self.p.status != PurchaseStatus::NeedsAttention {
            return Err(DomainError::NotAllowed(format!(
                "purchase {} is {}; there is nothing to redrive",
                self.p.purchase_id, self.p.status
            )));
        }
        self.record("Redrive", "REQUESTED", Some(format!("by {by}")));
        if !new_run {
            // The failed execution runs `NeedsAttention` again, which
            // resumes the purchase (`needs_attention`).
            self.effects.push(Effect::Redrive);
            return Ok(());
        }
        // No execution to redrive: resume here, and a new run takes the
        // undoing path from its start (every undoing step is idempotent).
        let failed_step = self
            .p
            .attention
            .as_ref()
            .map(|a| a.failed_step.clone())
            .unwrap_or_default();
        self.resume_after_attention(&failed_step);
        self.p.run += 1;
        // An operator looked at it: the reconciler may restart it again.
        self.p.restarts = 0;
        self.effects.push(Effect::StartRun(self.p.run));
        Ok(())
    }

    // --- going forward ----------------------------------------------------

    fn evaluate_rules(&mut self, input: &RulesInput) -> Result<(), DomainError> {
        self.moved_on();
        let fingerprint = Contents::of(&self.p).fingerprint();
        if !self.forward()? || self.p.judged_contents.as_deref() == Some(&fingerprint) {
            return Ok(()); // judged already (a retry, or a change judged as it was made)
        }
        if input.applied_rules_seen != self.p.applied_rules.len() {
            return Err(DomainError::Stale);
        }
        if input.rules.is_empty() {
            return Ok(()); // nothing to judge; nothing to write
        }
        let judgement = input.rules.judge(&self.p, &input.facts, self.now);
        self.apply_judgement(judgement, "EvaluateRules", true);
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
            || self
                .p
                .products
                .iter()
                .any(|l| l.status != LineStatus::Pending)
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
        if self.p.payment_status == PaymentStatus::Pending {
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
        // The refused line no longer holds its stock: given back in this write.
        line.status = LineStatus::ProvisioningFailed;
        self.stock = StockChange::GiveBack(vec![(line.id.clone(), line.quantity)]);
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
        // Once paid, provisioning may have delivered a line whose write was
        // lost (a crash between the delivery and its record): such a line is
        // taken back too. Taking back what was not delivered is a no-op.
        let paid = matches!(
            self.p.payment_status,
            PaymentStatus::Captured | PaymentStatus::RefundFailed | PaymentStatus::Refunded
        );
        for line in &self.p.products {
            let maybe_delivered = line.status == LineStatus::Reserved && paid;
            if line.status == LineStatus::Provisioned || maybe_delivered {
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
            .find(|l| &l.id == product && l.status.holds_stock())
        else {
            return;
        };
        self.stock = StockChange::GiveBack(vec![(line.id.clone(), line.quantity)]);
        if line.status == LineStatus::Reserved {
            // Never known to be delivered: its stock simply goes back.
            line.status = LineStatus::Released;
            self.changed = true;
            return;
        }
        line.status = LineStatus::Revoked;
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
            self.resume_after_attention(failed_step);
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

    /// Back from `NEEDS_ATTENTION` to the decision being carried out when
    /// it got stuck, so the undoing steps try again.
    fn resume_after_attention(&mut self, failed_step: &str) {
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
    }

    // --- runs ---------------------------------------------------------------

    fn continue_after_review(&mut self, after: u32, ending: ReviewEnding) {
        // The review's task is over, however it ended: a token still on the
        // purchase belongs to a task that is gone (invariant 3: known gone).
        self.moved_on();
        match ending {
            ReviewEnding::Decided => {}
            ReviewEnding::TimedOut if self.p.status == PurchaseStatus::OnHold => {
                self.p.status = PurchaseStatus::Rejected;
                self.p.held_from = None;
                self.record(
                    "AwaitReview",
                    "TIMED_OUT",
                    Some("nobody reviewed the purchase in time".to_owned()),
                );
            }
            // Decided just before the wait ended: the decision stands.
            ReviewEnding::TimedOut => {}
            ReviewEnding::Failed => self.stop(Outcome {
                status: PurchaseStatus::Failed,
                failure_reason: Some(FailureReason::InternalError),
            }),
        }
        // A retry of the step (its answer lost) finds the run begun already.
        if self.p.run == after {
            self.p.run = after + 1;
            self.changed = true;
        }
    }

    fn restart_run(&mut self, after: u32) {
        // Started by an earlier pass, moved on meanwhile, or nothing left to do.
        if self.p.run != after || self.p.is_final() {
            return;
        }
        self.p.run = after + 1;
        self.p.restarts += 1;
        self.changed = true;
        self.effects.push(Effect::StartRun(self.p.run));
    }

    fn finalize(&mut self, outcome: Outcome) {
        if self.p.is_final() || !self.undoing(outcome) {
            return;
        }
        self.close_unstarted_parts();
        self.p.finalized_at = Some(self.now);
        let reason = self
            .p
            .failure_reason
            .filter(|_| self.p.status == PurchaseStatus::Failed);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures::{address, priced, purchase};
    use crate::domain::purchase::{FOLDED_STEP, MAX_TIMELINE_ENTRIES};
    use crate::domain::rules::{Facts, RuleRequest, RuleSet};
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc::now()
    }

    /// Applies a command and returns the written purchase (panics if refused).
    fn run(p: &Purchase, command: Command<'_>) -> (Purchase, Decision) {
        let decision = decide(p, command, now()).expect("command refused");
        let next = decision.next.clone().unwrap_or_else(|| p.clone());
        (next, decision)
    }

    fn refused(p: &Purchase, command: Command<'_>) -> DomainError {
        decide(p, command, now()).expect_err("command should be refused")
    }

    fn rules(requests: serde_json::Value, applied_rules_seen: usize) -> RulesInput {
        let requests: Vec<RuleRequest> = serde_json::from_value(requests).unwrap();
        RulesInput {
            rules: RuleSet::from_requests(&requests, "rules", "rule set default v1").unwrap(),
            facts: Facts::default(),
            applied_rules_seen,
        }
    }

    fn no_rules() -> RulesInput {
        RulesInput {
            rules: RuleSet::default(),
            facts: Facts::default(),
            applied_rules_seen: 0,
        }
    }

    fn blocked(country: &str) -> RulesInput {
        rules(
            json!([{"id": "blocked-countries", "parameters": {"countries": [country]}}]),
            0,
        )
    }

    const FAILED: Outcome = Outcome {
        status: PurchaseStatus::Failed,
        failure_reason: Some(FailureReason::InternalError),
    };

    /// A purchase through rules, reservation and capture: `PAID`.
    fn paid(lines: &[(&str, u32)]) -> Purchase {
        let p = purchase(lines, "EUR", "DE");
        let empty = RulesInput {
            rules: RuleSet::default(),
            facts: Facts::default(),
            applied_rules_seen: 0,
        };
        let (p, _) = run(&p, Command::EvaluateRules { rules: &empty });
        let (p, _) = run(&p, Command::ReserveStock);
        let (p, _) = run(&p, Command::PaymentCaptured { reference: "ref" });
        assert_eq!(p.status, PurchaseStatus::Paid);
        p
    }

    /// `ON_HOLD` (held by a manual-review rule) with the workflow parked.
    fn parked() -> Purchase {
        let p = purchase(&[("a", 1)], "EUR", "DE");
        let hold = rules(
            json!([{"id": "manual-review", "parameters": {"reason": "new customer", "onViolation": "hold"}}]),
            0,
        );
        let (p, _) = run(&p, Command::EvaluateRules { rules: &hold });
        assert_eq!(p.status, PurchaseStatus::OnHold);
        let (p, _) = run(&p, Command::ParkForReview { token: "tok-1" });
        assert_eq!(p.review_token.as_deref(), Some("tok-1"));
        p
    }

    fn notified(decision: &Decision) -> Option<TaskDecision> {
        decision.effects.iter().find_map(|e| match e {
            Effect::Notify { decision, .. } => Some(*decision),
            _ => None,
        })
    }

    #[test]
    fn every_write_bumps_the_version_by_one() {
        let p = purchase(&[("a", 1)], "EUR", "DE");
        let (next, decision) = run(&p, Command::ReserveStock);
        assert_eq!(next.version, p.version + 1);
        assert!(decision.next.is_some());
        // Nothing to do: nothing to write.
        let again = decide(&next, Command::ReserveStock, now()).unwrap();
        assert!(again.next.is_none());
    }

    #[test]
    fn invariant_1_a_changed_address_is_judged_again_by_the_rules() {
        // Judged at DE, the default set blocks KP.
        let p = purchase(&[("a", 1)], "EUR", "DE");
        let kp = blocked("KP");
        let (p, _) = run(&p, Command::EvaluateRules { rules: &kp });
        assert!(p.judged_contents.is_some());
        assert_eq!(p.status, PurchaseStatus::Pending);
        let (p, _) = run(&p, Command::ReserveStock);
        // The customer moves the address to KP: the verdict follows.
        let (p, _) = run(
            &p,
            Command::Update {
                products: None,
                address: Some(&address("KP")),
                rules: Some(&kp),
                by: "c-1",
            },
        );
        assert_eq!(p.status, PurchaseStatus::Rejected);
        assert_eq!(p.timeline.last().unwrap().step, "Rules");
        // Without the rules at hand, a judged purchase's contents cannot change.
        let fresh = run(
            &purchase(&[("a", 1)], "EUR", "DE"),
            Command::EvaluateRules { rules: &kp },
        )
        .0;
        let error = refused(
            &fresh,
            Command::Update {
                products: None,
                address: Some(&address("FR")),
                rules: None,
                by: "c-1",
            },
        );
        assert_eq!(error, DomainError::Stale);
    }

    #[test]
    fn invariant_1_changed_products_are_judged_again_and_holds_apply() {
        let p = purchase(&[("a", 1)], "EUR", "DE");
        let max = rules(
            json!([{"id": "max-quantity", "parameters": {"max": 2, "onViolation": "hold"}}]),
            0,
        );
        let (p, _) = run(&p, Command::EvaluateRules { rules: &max });
        let three = priced(&[("a", 3)], "EUR");
        let (p, _) = run(
            &p,
            Command::Update {
                products: Some(&three),
                address: None,
                rules: Some(&max),
                by: "c-1",
            },
        );
        assert_eq!(
            (p.status, p.held_from),
            (PurchaseStatus::OnHold, Some(PurchaseStatus::Pending))
        );
    }

    #[test]
    fn invariant_1_a_judgement_of_changed_contents_is_stale() {
        let p = purchase(&[("a", 1)], "EUR", "DE");
        let rule: Vec<RuleRequest> = serde_json::from_value(
            json!([{"id": "blocked-countries", "parameters": {"countries": ["KP"]}}]),
        )
        .unwrap();
        let set = RuleSet::from_requests(&rule, "rules", "admin").unwrap();
        let judgement = set.judge(&p, &Facts::default(), now());
        // The address changes before the judgement is written.
        let none = no_rules();
        let (moved, _) = run(
            &p,
            Command::Update {
                products: None,
                address: Some(&address("KP")),
                rules: Some(&none),
                by: "c-1",
            },
        );
        let error = refused(
            &moved,
            Command::ApplyRules {
                rules: &rule,
                judgement: &judgement,
            },
        );
        assert_eq!(error, DomainError::Stale);
        // A purchase that gained an applied rule since the rules were
        // gathered is judged again too.
        let (judged, _) = run(
            &p,
            Command::ApplyRules {
                rules: &rule,
                judgement: &judgement,
            },
        );
        let stale = rules(json!([{"id": "max-quantity", "parameters": {"max": 5}}]), 0);
        let error = refused(
            &judged,
            Command::Update {
                products: None,
                address: Some(&address("FR")),
                rules: Some(&stale),
                by: "c-1",
            },
        );
        assert_eq!(error, DomainError::Stale);
    }

    #[test]
    fn invariant_2_stock_is_taken_in_the_write_that_reserves_the_lines() {
        let p = purchase(&[("a", 2), ("b", 1)], "EUR", "DE");
        let (p, decision) = run(&p, Command::ReserveStock);
        assert_eq!(
            decision.stock,
            StockChange::Take(vec![(ProductId::new("a"), 2), (ProductId::new("b"), 1)])
        );
        assert!(p.products.iter().all(|l| l.status == LineStatus::Reserved));
        // Once reserved, the lines are what is charged and delivered.
        let other = priced(&[("c", 1)], "EUR");
        let error = refused(
            &p,
            Command::Update {
                products: Some(&other),
                address: None,
                rules: None,
                by: "c-1",
            },
        );
        assert!(
            matches!(error, DomainError::NotAllowed(m) if m.contains("before stock is reserved"))
        );
        // Releasing gives back exactly what the lines held.
        let cancelled = run(&p, Command::Cancel { by: "c-1" }).0;
        let (released, decision) = run(&cancelled, Command::ReleaseStock { outcome: FAILED });
        assert_eq!(
            decision.stock,
            StockChange::GiveBack(vec![(ProductId::new("a"), 2), (ProductId::new("b"), 1)])
        );
        assert!(
            released
                .products
                .iter()
                .all(|l| l.status == LineStatus::Released)
        );
    }

    #[test]
    fn invariant_3_every_decision_on_a_parked_purchase_is_delivered() {
        let p = parked();
        let cases: Vec<(Command<'_>, TaskDecision)> = vec![
            (Command::Cancel { by: "c-1" }, TaskDecision::Stopped),
            (
                Command::Review {
                    approve: true,
                    reason: "",
                    by: "admin",
                },
                TaskDecision::Resume {
                    at: PurchaseStatus::Pending,
                },
            ),
            (
                Command::Review {
                    approve: false,
                    reason: "fraud",
                    by: "admin",
                },
                TaskDecision::Rejected,
            ),
        ];
        for (command, expected) in cases {
            let (next, decision) = run(&p, command);
            assert_eq!(notified(&decision), Some(expected));
            // The token stays until the delivery is confirmed...
            assert_eq!(next.review_token.as_deref(), Some("tok-1"));
            let (delivered, _) = run(&next, Command::NotificationDelivered { token: "tok-1" });
            assert_eq!(delivered.review_token, None);
        }
        // ...and a rule rejecting the parked purchase is delivered too.
        let reject: Vec<RuleRequest> = serde_json::from_value(
            json!([{"id": "manual-review", "parameters": {"reason": "no"}}]),
        )
        .unwrap();
        let judgement = RuleSet::from_requests(&reject, "rules", "admin")
            .unwrap()
            .judge(&p, &Facts::default(), now());
        let (rejected, decision) = run(
            &p,
            Command::ApplyRules {
                rules: &reject,
                judgement: &judgement,
            },
        );
        assert_eq!(rejected.status, PurchaseStatus::Rejected);
        assert_eq!(notified(&decision), Some(TaskDecision::Rejected));
    }

    #[test]
    fn invariant_3_a_retried_review_delivers_again() {
        let p = parked();
        let approve = || Command::Review {
            approve: true,
            reason: "ok",
            by: "admin",
        };
        let (approved, _) = run(&p, approve());
        // Delivery failed, the admin retries: no 409, the decision goes out again.
        let (_, again) = run(&approved, approve());
        assert!(again.next.is_none());
        assert_eq!(
            notified(&again),
            Some(TaskDecision::Resume {
                at: PurchaseStatus::Pending
            })
        );
        // Once delivered, reviewing an approved purchase is a conflict.
        let (delivered, _) = run(&approved, Command::NotificationDelivered { token: "tok-1" });
        assert!(matches!(
            refused(&delivered, approve()),
            DomainError::NotAllowed(_)
        ));
    }

    #[test]
    fn invariant_3_a_decision_taken_before_the_workflow_parks_is_delivered_by_the_step() {
        let p = purchase(&[("a", 1)], "EUR", "DE");
        let hold = rules(
            json!([{"id": "manual-review", "parameters": {"reason": "x", "onViolation": "hold"}}]),
            0,
        );
        let (held, _) = run(&p, Command::EvaluateRules { rules: &hold });
        let (cancelled, _) = run(&held, Command::Cancel { by: "c-1" });
        let (_, decision) = run(&cancelled, Command::ParkForReview { token: "late" });
        assert_eq!(notified(&decision), Some(TaskDecision::Stopped));
    }

    #[test]
    fn invariant_4_forward_steps_refuse_stopped_purchases_and_skip_completed_ones() {
        let p = purchase(&[("a", 1)], "EUR", "DE");
        let (failed, _) = run(&p, Command::StartFailed);
        assert_eq!(failed.status, PurchaseStatus::Failed);
        assert!(failed.is_final());
        for command in [
            Command::ReserveStock,
            Command::BeginCapture,
            Command::BeginProvisioning,
        ] {
            assert!(matches!(refused(&failed, command), DomainError::Stopped(_)));
        }
        let mut done = paid(&[("a", 1)]);
        done = run(
            &done,
            Command::LinesProvisioned {
                products: &[ProductId::new("a")],
            },
        )
        .0;
        assert_eq!(done.status, PurchaseStatus::Completed);
        for command in [
            Command::ReserveStock,
            Command::BeginCapture,
            Command::BeginProvisioning,
        ] {
            let decision = decide(&done, command, now()).unwrap();
            assert!(decision.next.is_none() && decision.effects.is_empty());
        }
    }

    #[test]
    fn invariant_4_undoing_never_touches_a_completed_purchase() {
        let mut done = paid(&[("a", 1)]);
        done = run(
            &done,
            Command::LinesProvisioned {
                products: &[ProductId::new("a")],
            },
        )
        .0;
        for command in [
            Command::BeginRevoke { outcome: FAILED },
            Command::BeginRefund { outcome: FAILED },
            Command::ReleaseStock { outcome: FAILED },
            Command::Finalize { outcome: FAILED },
        ] {
            let decision = decide(&done, command, now()).unwrap();
            assert!(decision.next.is_none());
            assert!(decision.effects.is_empty());
        }
    }

    #[test]
    fn a_capture_that_lands_after_a_cancel_is_recorded_and_refunded() {
        let p = purchase(&[("a", 1)], "EUR", "DE");
        let (p, _) = run(&p, Command::ReserveStock);
        let (p, decision) = run(&p, Command::BeginCapture);
        assert!(decision.next.is_none());
        assert!(
            matches!(decision.effects[0], Effect::Capture { ref idempotency_key, .. } if idempotency_key == "capture-p-1")
        );
        let (p, _) = run(&p, Command::Cancel { by: "c-1" });
        let (p, _) = run(&p, Command::PaymentCaptured { reference: "ref" });
        assert_eq!(
            (p.status, p.payment_status),
            (PurchaseStatus::Cancelled, PaymentStatus::Captured)
        );
        let (_, refund) = run(&p, Command::BeginRefund { outcome: FAILED });
        assert!(
            matches!(&refund.effects[0], Effect::Refund { idempotency_key, amount } if idempotency_key == "refund-p-1" && amount.amount == 100)
        );
    }

    #[test]
    fn lines_delivered_together_complete_the_purchase_in_one_write() {
        let p = paid(&[("a", 1), ("b", 2)]);
        let (done, decision) = run(
            &p,
            Command::LinesProvisioned {
                products: &[ProductId::new("a"), ProductId::new("b")],
            },
        );
        assert_eq!(done.version, p.version + 1, "one write");
        assert_eq!(done.status, PurchaseStatus::Completed);
        assert!(done.finalized_at.is_some());
        assert_eq!(decision.stock, StockChange::None);
        // Only some of them: recorded, not completed.
        let (part, _) = run(
            &p,
            Command::LinesProvisioned {
                products: &[ProductId::new("b")],
            },
        );
        assert_eq!(part.status, PurchaseStatus::Paid);
        let b = part.products.iter().find(|l| l.id == "b").unwrap();
        assert_eq!(b.status, LineStatus::Provisioned);
    }

    #[test]
    fn delivered_lines_are_revoked_before_the_refund() {
        let p = paid(&[("ebook", 1), ("fail-provision-license", 1)]);
        let (p, _) = run(
            &p,
            Command::ProvisioningRefused {
                delivered: &[ProductId::new("ebook")],
                product: &ProductId::new("fail-provision-license"),
            },
        );
        let ebook = p.products.iter().find(|l| l.id == "ebook").unwrap();
        assert_eq!(ebook.status, LineStatus::Provisioned);
        assert_eq!(p.status, PurchaseStatus::Failed);
        let outcome = Outcome {
            status: PurchaseStatus::Failed,
            failure_reason: Some(FailureReason::ProvisioningFailed),
        };
        let (_, decision) = run(&p, Command::BeginRevoke { outcome });
        assert!(matches!(&decision.effects[..], [Effect::Revoke(line)] if line.id == "ebook"));
        let (p, decision) = run(
            &p,
            Command::LineRevoked {
                product: &ProductId::new("ebook"),
                outcome,
            },
        );
        assert_eq!(
            decision.stock,
            StockChange::GiveBack(vec![(ProductId::new("ebook"), 1)])
        );
        assert_eq!(p.products[0].status, LineStatus::Revoked);
        let (p, _) = run(&p, Command::Refunded { outcome });
        let (p, _) = run(&p, Command::ReleaseStock { outcome });
        let (p, _) = run(&p, Command::Finalize { outcome });
        assert!(p.is_final());
        assert_eq!(p.failure_reason, Some(FailureReason::ProvisioningFailed));
        assert_eq!(p.payment_status, PaymentStatus::Refunded);
        assert!(p.products.iter().all(|l| !l.status.holds_stock()));
    }

    #[test]
    fn an_undoing_step_that_keeps_failing_needs_attention_until_redriven() {
        let p = paid(&[("a", 1)]);
        let (p, _) = run(&p, Command::Cancel { by: "c-1" });
        let (stuck, decision) = run(
            &p,
            Command::NeedsAttention {
                failed_step: "RefundPayment",
                error: "Transient",
                outcome: FAILED,
            },
        );
        assert_eq!(stuck.status, PurchaseStatus::NeedsAttention);
        assert_eq!(stuck.payment_status, PaymentStatus::RefundFailed);
        assert!(
            decision
                .effects
                .contains(&Effect::Count(PurchaseEvent::NeedsAttention))
        );
        assert!(!stuck.is_final());
        // Nothing but a redrive moves it: it is cancelled already.
        assert!(run(&stuck, Command::Cancel { by: "c-1" }).1.next.is_none());
        let (requested, decision) = run(
            &stuck,
            Command::RequestRedrive {
                by: "admin",
                new_run: false,
            },
        );
        assert_eq!(decision.effects, vec![Effect::Redrive]);
        // The step runs again: back to the decision, the refund owed again.
        let (resumed, _) = run(
            &requested,
            Command::NeedsAttention {
                failed_step: "RefundPayment",
                error: "Transient",
                outcome: FAILED,
            },
        );
        assert_eq!(resumed.status, PurchaseStatus::Cancelled);
        assert_eq!(resumed.attention, None);
        let (_, refund) = run(&resumed, Command::BeginRefund { outcome: FAILED });
        assert!(matches!(refund.effects[0], Effect::Refund { .. }));
        // A purchase that does not need attention has nothing to redrive.
        assert!(matches!(
            refused(
                &resumed,
                Command::RequestRedrive {
                    by: "admin",
                    new_run: false
                }
            ),
            DomainError::NotAllowed(_)
        ));
    }

    #[test]
    fn a_redrive_without_an_execution_to_redrive_resumes_and_starts_a_new_run() {
        let p = paid(&[("a", 1)]);
        let (p, _) = run(&p, Command::Cancel { by: "c-1" });
        let (stuck, _) = run(
            &p,
            Command::NeedsAttention {
                failed_step: "RefundPayment",
                error: "Transient",
                outcome: FAILED,
            },
        );
        let stuck = Purchase {
            restarts: 2,
            ..stuck
        };
        let (resumed, decision) = run(
            &stuck,
            Command::RequestRedrive {
                by: "admin",
                new_run: true,
            },
        );
        // Back to the decision in the same write, the refund owed again, and
        // a new run to undo it from the start.
        assert_eq!(resumed.status, PurchaseStatus::Cancelled);
        assert_eq!(resumed.attention, None);
        assert_eq!(resumed.payment_status, PaymentStatus::Captured);
        assert_eq!((resumed.run, resumed.restarts), (2, 0));
        assert_eq!(decision.effects, vec![Effect::StartRun(2)]);
        let steps: Vec<_> = resumed
            .timeline
            .iter()
            .rev()
            .take(2)
            .map(|e| (e.step.as_str(), e.outcome.as_str()))
            .collect();
        assert_eq!(steps, [("Redrive", "RESUMED"), ("Redrive", "REQUESTED")]);
        // A forward step of the new run refuses it: it goes to the undoing path.
        assert!(matches!(
            refused(&resumed, Command::ReserveStock),
            DomainError::Stopped(_)
        ));
        assert!(matches!(
            refused(
                &resumed,
                Command::RequestRedrive {
                    by: "admin",
                    new_run: true
                }
            ),
            DomainError::NotAllowed(_)
        ));
    }

    #[test]
    fn a_review_continues_the_purchase_in_the_next_run_once() {
        let (approved, _) = run(
            &parked(),
            Command::Review {
                approve: true,
                reason: "",
                by: "admin",
            },
        );
        let (p, _) = run(&approved, Command::NotificationDelivered { token: "tok-1" });
        assert_eq!(p.run, 1);
        let ended = Command::ContinueAfterReview {
            after: 1,
            ending: ReviewEnding::Decided,
        };
        let (next, decision) = run(&p, ended);
        assert_eq!((next.run, next.status), (2, PurchaseStatus::Pending));
        // Nothing to start here: the review workflow starts the run itself.
        assert!(decision.effects.is_empty(), "{:?}", decision.effects);
        // A retried step (its answer lost) begins no third run.
        let again = Command::ContinueAfterReview {
            after: 1,
            ending: ReviewEnding::Decided,
        };
        assert!(run(&next, again).1.next.is_none());
    }

    #[test]
    fn a_review_that_times_out_rejects_a_purchase_still_on_hold_only() {
        let held = parked();
        let (timed_out, decision) = run(
            &held,
            Command::ContinueAfterReview {
                after: 1,
                ending: ReviewEnding::TimedOut,
            },
        );
        assert_eq!(timed_out.status, PurchaseStatus::Rejected);
        assert_eq!(timed_out.review_token, None, "the task is gone");
        assert_eq!(timed_out.run, 2);
        assert_eq!(
            notified(&decision),
            None,
            "nobody to tell: the wait is over"
        );
        let last = timed_out.timeline.last().unwrap();
        assert_eq!(
            (last.step.as_str(), last.outcome.as_str()),
            ("AwaitReview", "TIMED_OUT")
        );
        // Approved just before the wait ended, the delivery too late: the
        // approval stands.
        let (approved, _) = run(
            &held,
            Command::Review {
                approve: true,
                reason: "",
                by: "admin",
            },
        );
        let (late, _) = run(
            &approved,
            Command::ContinueAfterReview {
                after: 1,
                ending: ReviewEnding::TimedOut,
            },
        );
        assert_eq!(late.status, PurchaseStatus::Pending);
        assert_eq!(late.review_token, None);
        // A review task failing for good fails the purchase, to be undone.
        let (failed, _) = run(
            &held,
            Command::ContinueAfterReview {
                after: 1,
                ending: ReviewEnding::Failed,
            },
        );
        assert_eq!(failed.status, PurchaseStatus::Failed);
        assert_eq!(failed.failure_reason, Some(FailureReason::InternalError));
    }

    #[test]
    fn a_lost_run_is_restarted_once_per_run_and_counted() {
        let p = paid(&[("a", 1)]);
        let (restarted, decision) = run(&p, Command::RestartRun { after: 1 });
        assert_eq!((restarted.run, restarted.restarts), (2, 1));
        assert_eq!(decision.effects, vec![Effect::StartRun(2)]);
        assert_eq!(
            restarted.status,
            PurchaseStatus::Paid,
            "nothing else changes"
        );
        // Two reconciler passes racing: the second finds the run begun.
        assert!(
            run(&restarted, Command::RestartRun { after: 1 })
                .1
                .next
                .is_none()
        );
        // A final purchase has no run to restart.
        let (done, _) = run(
            &restarted,
            Command::LinesProvisioned {
                products: &[ProductId::new("a")],
            },
        );
        assert!(done.is_final());
        assert!(
            run(&done, Command::RestartRun { after: 2 })
                .1
                .next
                .is_none()
        );
    }

    #[test]
    fn invariant_6_the_timeline_is_bounded_and_folds_the_oldest_entries() {
        let none = no_rules();
        let mut p = purchase(&[("a", 1)], "EUR", "DE");
        for i in 0..(MAX_TIMELINE_ENTRIES * 3) {
            let country = if i % 2 == 0 { "FR" } else { "DE" };
            p = run(
                &p,
                Command::Update {
                    products: None,
                    address: Some(&address(country)),
                    rules: Some(&none),
                    by: "c-1",
                },
            )
            .0;
            assert!(p.timeline.len() <= MAX_TIMELINE_ENTRIES);
        }
        let fold = &p.timeline[0];
        assert_eq!(fold.step, FOLDED_STEP);
        // Everything is accounted for: the create and each update, in the
        // fold or after it (no rules: no judgement to tell).
        let folded: usize = fold
            .detail
            .as_deref()
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(folded + p.timeline.len() - 1, 1 + MAX_TIMELINE_ENTRIES * 3);
        assert_eq!(p.timeline.last().unwrap().step, "Update");
    }

    #[test]
    fn invariant_6_the_timeline_never_carries_stock_levels() {
        let p = purchase(&[("a", 3)], "EUR", "DE");
        let (p, _) = run(
            &p,
            Command::OutOfStock {
                product: &ProductId::new("a"),
            },
        );
        let entry = p.timeline.last().unwrap();
        assert_eq!(entry.outcome, "OUT_OF_STOCK");
        assert_eq!(entry.detail.as_deref(), Some("not enough stock of a"));
        assert!(
            !entry
                .detail
                .as_deref()
                .unwrap()
                .chars()
                .any(|c| c.is_ascii_digit())
        );
    }

    #[test]
    fn a_start_that_failed_is_final_and_charges_nothing() {
        let p = purchase(&[("a", 1)], "EUR", "DE");
        let (p, decision) = run(&p, Command::StartFailed);
        assert_eq!(p.failure_reason, Some(FailureReason::WorkflowStartFailed));
        assert_eq!(p.payment_status, PaymentStatus::NotCharged);
        assert!(p.products.iter().all(|l| l.status == LineStatus::Cancelled));
        assert!(
            decision
                .effects
                .contains(&Effect::Count(PurchaseEvent::Failed(
                    FailureReason::WorkflowStartFailed
                )))
        );
        // A purchase the workflow has moved is not failed by a late report.
        let reserved = run(&purchase(&[("a", 1)], "EUR", "DE"), Command::ReserveStock).0;
        assert!(
            decide(&reserved, Command::StartFailed, now())
                .unwrap()
                .next
                .is_none()
        );
    }
}
