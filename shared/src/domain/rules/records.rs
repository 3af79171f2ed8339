//! Rules as data: what a client configures (`RuleRequest`) and what an
//! evaluation leaves on a purchase (`RuleResult`). Stored on purchases and in
//! rule sets; judged by [`rules`](super).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What happens to the purchase when a rule is violated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnViolation {
    /// The purchase becomes `REJECTED` and the workflow undoes it.
    #[default]
    Reject,
    /// The purchase goes `ON_HOLD` until an admin reviews it.
    Hold,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RuleOutcome {
    Passed,
    Violated,
}

/// One rule's evaluation, stored on the purchase and shown on GET.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleResult {
    pub rule_id: String,
    pub parameters: Value,
    pub outcome: RuleOutcome,
    pub on_violation: OnViolation,
    pub reason: String,
    pub evaluated_at: DateTime<Utc>,
    pub evaluated_by: String,
}

/// One rule as a client sends it: `{"id", "parameters"}` (with
/// `onViolation` among the parameters). Rule sets store it as sent, and a
/// purchase keeps the ones applied to it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleRequest {
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
}
