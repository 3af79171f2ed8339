//! The purchase: what it is, the statuses it and its parts move through, and
//! the catalog entries it refers to.
//!
//! Everything here is plain data with serde names exactly as the API's JSON
//! (camelCase fields, SCREAMING_SNAKE_CASE enum values). The same names are
//! DynamoDB attributes and state names, so one concept has one name everywhere.
//! Which change is allowed when is not decided here but in
//! [`lifecycle`](super::lifecycle), the only code that changes a purchase.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ids::{CustomerId, ProductId, PurchaseId};
use super::money::{Currency, Money};
use super::rules::records::{RuleRequest, RuleResult};

/// Overall status of a purchase.
///
/// `PENDING → RESERVED → PAID → COMPLETED` is the happy path driven by the
/// workflow. `FAILED`, `CANCELLED` and `REJECTED` are decisions: once one is
/// taken the workflow undoes what was done (revoke, refund, release) and the
/// purchase is *final* when that is finished (`finalizedAt`). `ON_HOLD` parks a
/// purchase for manual review; `NEEDS_ATTENTION` parks one whose undoing
/// failed after every retry, until an operator redrives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PurchaseStatus {
    Pending,
    Reserved,
    Paid,
    Completed,
    OnHold,
    NeedsAttention,
    Failed,
    Cancelled,
    Rejected,
}

impl PurchaseStatus {
    pub const ALL: [PurchaseStatus; 9] = [
        PurchaseStatus::Pending,
        PurchaseStatus::Reserved,
        PurchaseStatus::Paid,
        PurchaseStatus::Completed,
        PurchaseStatus::OnHold,
        PurchaseStatus::NeedsAttention,
        PurchaseStatus::Failed,
        PurchaseStatus::Cancelled,
        PurchaseStatus::Rejected,
    ];

    /// The wire name (`"PENDING"`, ...), as used in JSON and query strings.
    pub fn as_str(self) -> &'static str {
        match self {
            PurchaseStatus::Pending => "PENDING",
            PurchaseStatus::Reserved => "RESERVED",
            PurchaseStatus::Paid => "PAID",
            PurchaseStatus::Completed => "COMPLETED",
            PurchaseStatus::OnHold => "ON_HOLD",
            PurchaseStatus::NeedsAttention => "NEEDS_ATTENTION",
            PurchaseStatus::Failed => "FAILED",
            PurchaseStatus::Cancelled => "CANCELLED",
            PurchaseStatus::Rejected => "REJECTED",
        }
    }

    pub fn parse(s: &str) -> Option<PurchaseStatus> {
        PurchaseStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
    }

    /// A decision that is never taken back: the purchase completed, or it
    /// failed, was cancelled or rejected (and is being, or has been, undone).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            PurchaseStatus::Completed
                | PurchaseStatus::Failed
                | PurchaseStatus::Cancelled
                | PurchaseStatus::Rejected
        )
    }

    /// Failed, cancelled or rejected: what was done must be undone.
    pub fn is_stopped(self) -> bool {
        matches!(
            self,
            PurchaseStatus::Failed | PurchaseStatus::Cancelled | PurchaseStatus::Rejected
        )
    }

    /// Where the forward path is: the statuses a held purchase resumes at.
    pub fn is_forward(self) -> bool {
        matches!(
            self,
            PurchaseStatus::Pending | PurchaseStatus::Reserved | PurchaseStatus::Paid
        )
    }
}

impl std::fmt::Display for PurchaseStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Status of one product line of a purchase (`products[].status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LineStatus {
    /// Not reserved yet.
    Pending,
    /// Stock is held for this purchase.
    Reserved,
    /// Delivered (digital) or handed to fulfilment (physical).
    Provisioned,
    /// Not enough stock when the purchase tried to reserve it.
    OutOfStock,
    /// The provisioning service refused this product.
    ProvisioningFailed,
    /// Stock was reserved, then given back because the purchase did not complete.
    Released,
    /// Delivered, then taken back because the purchase did not complete; its
    /// stock was given back too.
    Revoked,
    /// The purchase ended before this line was reserved.
    Cancelled,
}

impl LineStatus {
    /// Stock is taken for this line (held or delivered).
    pub fn holds_stock(self) -> bool {
        matches!(self, LineStatus::Reserved | LineStatus::Provisioned)
    }
}

/// Status of the purchase's payment (`paymentStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    /// Not captured (a capture may be in flight).
    Pending,
    Captured,
    Declined,
    Refunded,
    /// The purchase ended without the payment ever being captured.
    NotCharged,
    /// A refund is owed and failed after every retry: the purchase is
    /// `NEEDS_ATTENTION` until an operator redrives it.
    RefundFailed,
}

/// Status of the purchase's shipping (`shippingStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ShippingStatus {
    /// Physical products not provisioned yet.
    Pending,
    /// Only digital products: nothing to ship.
    NotRequired,
    ReadyToShip,
    /// The purchase ended before anything was shipped.
    Cancelled,
}

/// Why a purchase ended `FAILED` (machine-readable `failureReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailureReason {
    OutOfStock,
    PaymentDeclined,
    ProvisioningFailed,
    /// The workflow could not be started.
    WorkflowStartFailed,
    /// An unexpected error in a step after all retries.
    InternalError,
    /// Recorded by earlier versions when a compensation failed; such a
    /// purchase is now `NEEDS_ATTENTION` until redriven. Kept so stored
    /// purchases still read.
    CompensationFailed,
}

impl FailureReason {
    /// The wire name (`"OUT_OF_STOCK"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::OutOfStock => "OUT_OF_STOCK",
            FailureReason::PaymentDeclined => "PAYMENT_DECLINED",
            FailureReason::ProvisioningFailed => "PROVISIONING_FAILED",
            FailureReason::WorkflowStartFailed => "WORKFLOW_START_FAILED",
            FailureReason::InternalError => "INTERNAL_ERROR",
            FailureReason::CompensationFailed => "COMPENSATION_FAILED",
        }
    }

    /// What the timeline tells the customer.
    pub fn describe(self) -> &'static str {
        match self {
            FailureReason::OutOfStock => "a product is out of stock",
            FailureReason::PaymentDeclined => "the payment was declined",
            FailureReason::ProvisioningFailed => "a product could not be delivered",
            FailureReason::WorkflowStartFailed => "the purchase could not be started",
            FailureReason::InternalError => "an unexpected error stopped the purchase",
            FailureReason::CompensationFailed => "undoing the purchase needed manual attention",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProductKind {
    Digital,
    Physical,
}

/// A catalog entry. Prices are integer minor units (cents).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Product {
    pub id: ProductId,
    pub name: String,
    pub unit_price: i64,
    pub currency: Currency,
    /// Units still available (not held or delivered).
    pub stock: i64,
    pub kind: ProductKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentDetails {
    pub method: String,
    pub transaction_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShippingAddress {
    pub name: String,
    pub address: String,
    pub city: String,
    pub country: String,
    pub postal_code: String,
}

/// One product line of a purchase, priced when it was added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PurchaseLine {
    pub id: ProductId,
    pub quantity: u32,
    pub status: LineStatus,
    pub unit_price: i64,
    pub kind: ProductKind,
}

/// One entry of a purchase's timeline: which step ran, when, and how it
/// ended, in words for the customer (never provider or SDK text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    pub step: String,
    pub outcome: String,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The timeline keeps at most this many entries; older ones fold into the
/// first (step `Earlier`), so a purchase changed thousands of times still
/// fits in one DynamoDB item.
pub const MAX_TIMELINE_ENTRIES: usize = 50;

/// The step name of the entry older entries fold into.
pub const FOLDED_STEP: &str = "Earlier";

/// Why a purchase needs an operator: which undoing step failed after every
/// retry, and what the workflow reported (an error *name*, never its text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attention {
    pub failed_step: String,
    pub error: String,
    pub since: DateTime<Utc>,
    /// The decision being carried out when it got stuck (`FAILED`,
    /// `CANCELLED`, `REJECTED`); the status again once redriven.
    pub resume_status: PurchaseStatus,
}

/// How many lost runs the reconciler replaces before it flags the purchase
/// `NEEDS_ATTENTION`: a run lost again and again is not bad luck.
pub const MAX_RESTARTS: u32 = 3;

fn first_run() -> u32 {
    1
}

fn is_first_run(run: &u32) -> bool {
    *run == 1
}

fn is_zero(count: &u32) -> bool {
    *count == 0
}

/// The stored purchase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Purchase {
    pub purchase_id: PurchaseId,
    pub customer_id: CustomerId,
    pub status: PurchaseStatus,
    pub products: Vec<PurchaseLine>,
    pub currency: Currency,
    /// Sum of `quantity × unitPrice` over the lines, in minor units.
    pub total_amount: i64,
    pub payment_details: PaymentDetails,
    pub payment_status: PaymentStatus,
    /// The payment provider's reference for the capture, once captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_reference: Option<String>,
    pub shipping_address: ShippingAddress,
    pub shipping_status: ShippingStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<FailureReason>,
    /// The task token of the review parked in `AwaitReview` (the review
    /// workflow). Kept until a decision about the purchase has been
    /// delivered to it (or the task is known to be gone), so a retried
    /// request delivers it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_token: Option<String>,
    /// The status an `ON_HOLD` purchase resumes at when approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_from: Option<PurchaseStatus>,
    /// Set while `NEEDS_ATTENTION`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention: Option<Attention>,
    /// The contents (lines and address) the rules of the purchase (the
    /// `default` set and any applied ones) last judged. The workflow's
    /// `EvaluateRules` judges unless these are the current contents; a change
    /// of products or address is judged as it is made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judged_contents: Option<String>,
    /// The contents (lines and address) a reviewer approved: a hold by the
    /// rules on exactly these contents is not asked again. Any change of
    /// them needs a new approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_contents: Option<String>,
    /// When the workflow finished with the purchase: completed, or stopped
    /// and fully undone. Unset while anything remains to be done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalized_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub timeline: Vec<TimelineEntry>,
    /// Every business rule evaluated against this purchase, in order (the
    /// newest [`MAX_RULE_RESULTS`](super::lifecycle::MAX_RULE_RESULTS)).
    #[serde(default)]
    pub rule_results: Vec<RuleResult>,
    /// The rules applied to this purchase through `apply-rules`, as sent:
    /// judged again, with the `default` set, when its contents change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applied_rules: Vec<RuleRequest>,
    /// The purchase's current workflow run: 1 for the execution started
    /// when it was created, one more for each run started after it (after a
    /// review, by the reconciler, by a redrive of an `EXPRESS` workflow).
    /// Execution names follow from it (`ports::workflow::Run`), so describe,
    /// redrive and the reconciler find the run. Not stored while 1, so the
    /// documents of purchases that never needed a second run stay as they were.
    #[serde(default = "first_run", skip_serializing_if = "is_first_run")]
    pub run: u32,
    /// How many runs the reconciler started because the one before was lost
    /// (an `EXPRESS` execution keeps no history to ask): after
    /// [`MAX_RESTARTS`] it flags the purchase instead. A redrive starts afresh.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: u32,
    /// Optimistic-concurrency version: every write is conditional on it and
    /// bumps it by one.
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Purchase {
    pub fn total(&self) -> Money {
        Money::new(self.total_amount, self.currency.clone())
    }

    pub fn needs_shipping(&self) -> bool {
        self.products
            .iter()
            .any(|line| line.kind == ProductKind::Physical)
    }

    /// Nothing has happened to it yet: `PENDING`, no line holding stock. A
    /// workflow that ran at all would have moved it.
    pub fn is_untouched(&self) -> bool {
        self.status == PurchaseStatus::Pending
            && self
                .products
                .iter()
                .all(|l| l.status == LineStatus::Pending)
    }

    /// Nothing is left to do: completed, or stopped and undone.
    pub fn is_final(&self) -> bool {
        self.finalized_at.is_some()
    }

    /// The decision a parked workflow task must still be told, if any: the
    /// task token is kept until delivery, and the decision is whatever the
    /// purchase has become since it was parked.
    pub fn pending_notification(&self) -> Option<(&str, TaskDecision)> {
        let token = self.review_token.as_deref()?;
        let decision = match self.status {
            PurchaseStatus::OnHold => return None, // still waiting for review
            PurchaseStatus::Rejected => TaskDecision::Rejected,
            status if status.is_stopped() => TaskDecision::Stopped,
            PurchaseStatus::NeedsAttention => TaskDecision::Stopped,
            status => TaskDecision::Resume { at: status },
        };
        Some((token, decision))
    }

    /// Appends a timeline entry, folding the oldest ones once the timeline
    /// is full.
    pub fn record(&mut self, step: &str, outcome: &str, detail: Option<String>, at: DateTime<Utc>) {
        if self.timeline.len() >= MAX_TIMELINE_ENTRIES {
            self.fold_oldest_entry();
        }
        self.timeline.push(TimelineEntry {
            step: step.to_owned(),
            outcome: outcome.to_owned(),
            at,
            detail,
        });
    }

    /// Merges the two oldest entries into one fold entry (step `Earlier`),
    /// which keeps the count of entries it stands for and the time of the
    /// oldest.
    fn fold_oldest_entry(&mut self) {
        if self.timeline.len() < 2 {
            return;
        }
        let oldest = &self.timeline[0];
        let count = if oldest.step == FOLDED_STEP {
            oldest
                .detail
                .as_deref()
                .and_then(|d| d.split(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(1)
        } else {
            1
        };
        let at = oldest.at;
        self.timeline.remove(1);
        self.timeline[0] = TimelineEntry {
            step: FOLDED_STEP.to_owned(),
            outcome: "FOLDED".to_owned(),
            at,
            detail: Some(folded_detail(count + 1)),
        };
    }
}

fn folded_detail(count: u64) -> String {
    if count == 1 {
        "1 earlier entry".to_owned()
    } else {
        format!("{count} earlier entries")
    }
}

/// What a parked workflow task is told once a decision about its purchase
/// has been taken. The workflow port turns it into `SendTaskSuccess` or
/// `SendTaskFailure` with the error name the definition catches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskDecision {
    /// Approved: go on at this status.
    Resume { at: PurchaseStatus },
    /// Rejected on review or by a rule.
    Rejected,
    /// Cancelled (or otherwise stopped): undo and finish.
    Stopped,
}
