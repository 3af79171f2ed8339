//! The purchase model: what a purchase is, the statuses it and its parts move
//! through, and the product catalog entries it refers to.
//!
//! Everything here is plain data with serde names exactly as the API's JSON
//! (camelCase fields, SCREAMING_SNAKE_CASE enum values). The same names are
//! used as DynamoDB attributes and in the state machine, so one concept has
//! one name everywhere.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Overall status of a purchase.
///
/// `PENDING → RESERVED → PAID → COMPLETED` is the happy path driven by the
/// workflow; `FAILED`, `CANCELLED` and `REJECTED` are the other terminal
/// outcomes; `ON_HOLD` parks a purchase for manual review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PurchaseStatus {
    Pending,
    Reserved,
    Paid,
    Completed,
    OnHold,
    Failed,
    Cancelled,
    Rejected,
}

impl PurchaseStatus {
    pub const ALL: [PurchaseStatus; 8] = [
        PurchaseStatus::Pending,
        PurchaseStatus::Reserved,
        PurchaseStatus::Paid,
        PurchaseStatus::Completed,
        PurchaseStatus::OnHold,
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

    /// Terminal statuses never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            PurchaseStatus::Completed
                | PurchaseStatus::Failed
                | PurchaseStatus::Cancelled
                | PurchaseStatus::Rejected
        )
    }

    /// The purchase state machine: which status may move to which.
    ///
    /// Moving to the same status is not a transition (callers treat it as a
    /// no-op), so it is not listed. Cancellation and rejection are possible
    /// from every non-terminal status; the workflow then compensates.
    pub fn can_move_to(self, next: PurchaseStatus) -> bool {
        use PurchaseStatus::*;
        match (self, next) {
            (Pending, Reserved) | (Reserved, Paid) | (Paid, Completed) => true,
            // A hold parks the purchase where it is; approval resumes it at
            // the status it was held from (see `Purchase::held_from`).
            (Pending | Reserved | Paid, OnHold) => true,
            (OnHold, Pending | Reserved | Paid) => true,
            (Pending | Reserved | Paid | OnHold, Failed | Cancelled | Rejected) => true,
            _ => false,
        }
    }
}

impl std::fmt::Display for PurchaseStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Status of one product line of a purchase (`products[].status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The purchase ended before this line was reserved.
    Cancelled,
}

/// Status of the purchase's payment (`paymentStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    /// Not attempted yet.
    Pending,
    Captured,
    Declined,
    Refunded,
    /// The purchase ended without the payment ever being captured.
    NotCharged,
    /// A refund was owed but could not be made; needs manual attention.
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
    /// A refund or stock release owed by the compensation failed after all
    /// retries. The purchase needs manual attention.
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProductKind {
    Digital,
    Physical,
}

/// A catalog entry. Prices are integer minor units (cents) so money is never
/// a float.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Product {
    pub id: String,
    pub name: String,
    pub unit_price: i64,
    pub currency: String,
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

/// One product line of a purchase, priced when the purchase was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PurchaseLine {
    pub id: String,
    pub quantity: u32,
    pub status: LineStatus,
    pub unit_price: i64,
    pub kind: ProductKind,
}

/// One entry of a purchase's timeline: which step ran, when, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    pub step: String,
    pub outcome: String,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The stored purchase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Purchase {
    pub purchase_id: String,
    pub customer_id: String,
    pub status: PurchaseStatus,
    pub products: Vec<PurchaseLine>,
    pub currency: String,
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
    /// While `ON_HOLD` with the workflow waiting: the task token that resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_token: Option<String>,
    /// The status an `ON_HOLD` purchase resumes at when approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_from: Option<PurchaseStatus>,
    #[serde(default)]
    pub timeline: Vec<TimelineEntry>,
    /// Every business rule evaluated against this purchase, in order.
    #[serde(default)]
    pub rule_results: Vec<crate::rules::RuleResult>,
    /// Optimistic-concurrency version: every write is conditional on it and
    /// bumps it by one.
    pub version: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Purchase {
    /// Appends a timeline entry stamped now.
    pub fn record(&mut self, step: &str, outcome: &str, detail: Option<String>) {
        self.timeline.push(TimelineEntry {
            step: step.to_owned(),
            outcome: outcome.to_owned(),
            at: Utc::now(),
            detail,
        });
    }

    pub fn needs_shipping(&self) -> bool {
        self.products
            .iter()
            .any(|line| line.kind == ProductKind::Physical)
    }

    /// Moves to `next`, enforcing the state machine.
    pub fn move_to(&mut self, next: PurchaseStatus) -> Result<(), crate::error::ApiError> {
        if self.status == next {
            return Ok(());
        }
        if !self.status.can_move_to(next) {
            return Err(crate::error::ApiError::Conflict(format!(
                "purchase {} is {} and cannot become {}",
                self.purchase_id, self.status, next
            )));
        }
        self.status = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PurchaseStatus::*;

    /// The whole transition table, spelled out so a change to it is a
    /// deliberate, reviewed change to this test too.
    #[test]
    fn transition_table() {
        let allowed: &[(PurchaseStatus, &[PurchaseStatus])] = &[
            (Pending, &[Reserved, OnHold, Failed, Cancelled, Rejected]),
            (Reserved, &[Paid, OnHold, Failed, Cancelled, Rejected]),
            (Paid, &[Completed, OnHold, Failed, Cancelled, Rejected]),
            (
                OnHold,
                &[Pending, Reserved, Paid, Failed, Cancelled, Rejected],
            ),
            (Completed, &[]),
            (Failed, &[]),
            (Cancelled, &[]),
            (Rejected, &[]),
        ];
        for (from, targets) in allowed {
            for to in PurchaseStatus::ALL {
                let expected = targets.contains(&to);
                assert_eq!(
                    from.can_move_to(to),
                    expected,
                    "{from} -> {to} should be {}",
                    if expected { "allowed" } else { "refused" }
                );
            }
        }
    }

    #[test]
    fn terminal_statuses_have_no_way_out() {
        for status in PurchaseStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            assert!(
                PurchaseStatus::ALL
                    .iter()
                    .all(|to| !status.can_move_to(*to))
            );
        }
    }

    #[test]
    fn failure_reason_wire_names_match_serde() {
        use FailureReason::*;
        for reason in [
            OutOfStock,
            PaymentDeclined,
            ProvisioningFailed,
            WorkflowStartFailed,
            InternalError,
            CompensationFailed,
        ] {
            assert_eq!(serde_json::to_value(reason).unwrap(), reason.as_str());
        }
    }

    #[test]
    fn status_wire_names_round_trip() {
        for status in PurchaseStatus::ALL {
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
            assert_eq!(PurchaseStatus::parse(status.as_str()), Some(status));
        }
    }
}
