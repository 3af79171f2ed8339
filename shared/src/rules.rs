//! Custom business rules: a catalog of rule types, each validating its own
//! parameters and judging a purchase to pass or violate with a reason.
//!
//! Adding a rule is one type implementing [`Rule`] plus one line in
//! [`build_rule`].

use chrono::{DateTime, Duration, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{ApiError, FieldProblem};
use crate::model::{Purchase, PurchaseStatus};
use crate::store::{PurchaseQuery, PurchaseStore};
use crate::validation::is_iso_country;

pub const MAX_RULES: usize = 50;

/// What happens to the purchase when a rule is violated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnViolation {
    /// The purchase becomes `REJECTED` and the workflow compensates.
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

/// What rules may need beyond the purchase itself, gathered before evaluation.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Other live purchases of the same customer, newest first, as far back
    /// as the longest window any rule asked for.
    pub recent_purchases: Vec<DateTime<Utc>>,
}

/// A rule type. `evaluate` returns `Err(reason)` on a violation.
pub trait Rule: Send + Sync + std::fmt::Debug {
    fn evaluate(&self, purchase: &Purchase, facts: &Facts) -> Result<String, String>;

    /// How far back this rule needs the customer's purchase history.
    fn history_window(&self) -> Option<Duration> {
        None
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Max {
    max: u32,
}

#[derive(Debug)]
struct MaxQuantity(u32);

impl Rule for MaxQuantity {
    fn evaluate(&self, purchase: &Purchase, _: &Facts) -> Result<String, String> {
        match purchase.products.iter().find(|l| l.quantity > self.0) {
            Some(line) => Err(format!(
                "{} × {} exceeds the maximum of {} per product",
                line.quantity, line.id, self.0
            )),
            None => Ok(format!("every quantity is at most {}", self.0)),
        }
    }
}

#[derive(Debug)]
struct MaxTotalItems(u32);

impl Rule for MaxTotalItems {
    fn evaluate(&self, purchase: &Purchase, _: &Facts) -> Result<String, String> {
        let total: u64 = purchase
            .products
            .iter()
            .map(|l| u64::from(l.quantity))
            .sum();
        if total > u64::from(self.0) {
            Err(format!("{total} items exceed the maximum of {}", self.0))
        } else {
            Ok(format!("{total} items, at most {}", self.0))
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Money {
    amount: i64,
    currency: String,
}

#[derive(Debug)]
struct OrderValue {
    limit: Money,
    minimum: bool,
}

impl Rule for OrderValue {
    fn evaluate(&self, purchase: &Purchase, _: &Facts) -> Result<String, String> {
        let Money { amount, currency } = &self.limit;
        if &purchase.currency != currency {
            // Amounts in different currencies cannot be compared without a
            // rate; the rule applies to purchases in its own currency only.
            return Ok(format!(
                "not applicable: purchase is in {}, rule in {currency}",
                purchase.currency
            ));
        }
        let total = purchase.total_amount;
        let (broken, word) = if self.minimum {
            (total < *amount, "below the minimum")
        } else {
            (total > *amount, "above the maximum")
        };
        if broken {
            Err(format!(
                "order value {total} {currency} is {word} of {amount} {currency}"
            ))
        } else {
            Ok(format!(
                "order value {total} {currency} is within {amount} {currency}"
            ))
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Countries {
    countries: Vec<String>,
}

#[derive(Debug)]
struct CountryList {
    countries: Vec<String>,
    allowed: bool,
}

impl Rule for CountryList {
    fn evaluate(&self, purchase: &Purchase, _: &Facts) -> Result<String, String> {
        let country = &purchase.shipping_address.country;
        let listed = self.countries.iter().any(|c| c == country);
        match (self.allowed, listed) {
            (true, false) => Err(format!(
                "shipping to {country} is not in the allowed countries"
            )),
            (false, true) => Err(format!("shipping to {country} is blocked")),
            _ => Ok(format!("shipping to {country} is permitted")),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PerCustomer {
    max: u32,
    window_hours: u32,
}

#[derive(Debug)]
struct MaxPurchasesPerCustomer(PerCustomer);

impl Rule for MaxPurchasesPerCustomer {
    fn evaluate(&self, _: &Purchase, facts: &Facts) -> Result<String, String> {
        let since = Utc::now() - Duration::hours(i64::from(self.0.window_hours));
        // This purchase counts too.
        let count = facts
            .recent_purchases
            .iter()
            .filter(|at| **at >= since)
            .count()
            + 1;
        if count > self.0.max as usize {
            Err(format!(
                "{count} purchases in {} hours exceed the maximum of {}",
                self.0.window_hours, self.0.max
            ))
        } else {
            Ok(format!(
                "{count} purchases in {} hours, at most {}",
                self.0.window_hours, self.0.max
            ))
        }
    }

    fn history_window(&self) -> Option<Duration> {
        Some(Duration::hours(i64::from(self.0.window_hours)))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reason {
    reason: String,
}

#[derive(Debug)]
struct ManualReview(String);

impl Rule for ManualReview {
    fn evaluate(&self, _: &Purchase, _: &Facts) -> Result<String, String> {
        Err(format!("manual review required: {}", self.0))
    }
}

/// The rule catalog: rule ids and how to build each from its parameters.
pub const RULE_IDS: [&str; 8] = [
    "max-quantity",
    "max-total-items",
    "min-order-value",
    "max-order-value",
    "allowed-countries",
    "blocked-countries",
    "max-purchases-per-customer",
    "manual-review",
];

fn parse<T: DeserializeOwned>(
    field: &str,
    parameters: Map<String, Value>,
) -> Result<T, Vec<FieldProblem>> {
    serde_path_to_error::deserialize(Value::Object(parameters)).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            field.to_owned()
        } else {
            format!("{field}.{path}")
        };
        vec![FieldProblem::new(field, e.into_inner().to_string())]
    })
}

fn positive(field: &str, value: u32) -> Result<u32, Vec<FieldProblem>> {
    if value == 0 {
        Err(vec![FieldProblem::new(field, "must be at least 1")])
    } else {
        Ok(value)
    }
}

fn build_rule(
    id: &str,
    field: &str,
    parameters: Map<String, Value>,
) -> Result<Box<dyn Rule>, Vec<FieldProblem>> {
    let max_field = format!("{field}.max");
    Ok(match id {
        "max-quantity" => Box::new(MaxQuantity(positive(
            &max_field,
            parse::<Max>(field, parameters)?.max,
        )?)),
        "max-total-items" => Box::new(MaxTotalItems(positive(
            &max_field,
            parse::<Max>(field, parameters)?.max,
        )?)),
        "min-order-value" | "max-order-value" => {
            let limit: Money = parse(field, parameters)?;
            let mut problems = Vec::new();
            if limit.amount < 0 {
                problems.push(FieldProblem::new(
                    format!("{field}.amount"),
                    "must not be negative",
                ));
            }
            if limit.currency.len() != 3 || !limit.currency.bytes().all(|b| b.is_ascii_uppercase())
            {
                problems.push(FieldProblem::new(
                    format!("{field}.currency"),
                    "must be an ISO 4217 code such as EUR",
                ));
            }
            if !problems.is_empty() {
                return Err(problems);
            }
            Box::new(OrderValue {
                limit,
                minimum: id == "min-order-value",
            })
        }
        "allowed-countries" | "blocked-countries" => {
            let Countries { countries } = parse(field, parameters)?;
            let mut problems: Vec<FieldProblem> = countries
                .iter()
                .enumerate()
                .filter(|(_, c)| !is_iso_country(c))
                .map(|(i, c)| {
                    FieldProblem::new(
                        format!("{field}.countries[{i}]"),
                        format!("{c:?} is not an ISO 3166-1 alpha-2 code"),
                    )
                })
                .collect();
            if countries.is_empty() {
                problems.push(FieldProblem::new(
                    format!("{field}.countries"),
                    "must list at least one country",
                ));
            }
            if !problems.is_empty() {
                return Err(problems);
            }
            Box::new(CountryList {
                countries,
                allowed: id == "allowed-countries",
            })
        }
        "max-purchases-per-customer" => {
            let params: PerCustomer = parse(field, parameters)?;
            positive(&max_field, params.max)?;
            positive(&format!("{field}.windowHours"), params.window_hours)?;
            if params.window_hours > 24 * 366 {
                return Err(vec![FieldProblem::new(
                    format!("{field}.windowHours"),
                    "must be at most 8784 (one year)",
                )]);
            }
            Box::new(MaxPurchasesPerCustomer(params))
        }
        "manual-review" => {
            let Reason { reason } = parse(field, parameters)?;
            if reason.trim().is_empty() || reason.len() > 500 {
                return Err(vec![FieldProblem::new(
                    format!("{field}.reason"),
                    "must be 1 to 500 characters",
                )]);
            }
            Box::new(ManualReview(reason))
        }
        other => {
            return Err(vec![FieldProblem::new(
                field.replace(".parameters", ".id"),
                format!(
                    "unknown rule {other:?}; known rules: {}",
                    RULE_IDS.join(", ")
                ),
            )]);
        }
    })
}

/// `POST /purchases/{purchaseId}/apply-rules` body as received.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyRulesRequest {
    pub rules: Option<Vec<RuleRequest>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleRequest {
    pub id: Option<String>,
    #[serde(default)]
    pub parameters: Option<Value>,
}

#[derive(Debug)]
struct ConfiguredRule {
    id: String,
    parameters: Value,
    on_violation: OnViolation,
    rule: Box<dyn Rule>,
}

/// A validated list of rules, ready to evaluate.
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<ConfiguredRule>,
}

impl ApplyRulesRequest {
    pub fn validate(&self) -> Result<RuleSet, ApiError> {
        let Some(requests) = &self.rules else {
            return Err(ApiError::invalid("rules", "is required"));
        };
        RuleSet::from_requests(requests, "rules")
    }
}

impl RuleSet {
    pub fn from_requests(requests: &[RuleRequest], field: &str) -> Result<RuleSet, ApiError> {
        if requests.is_empty() {
            return Err(ApiError::invalid(field, "must contain at least one rule"));
        }
        if requests.len() > MAX_RULES {
            return Err(ApiError::invalid(
                field,
                format!("must contain at most {MAX_RULES} rules"),
            ));
        }
        let mut problems = Vec::new();
        let mut rules = Vec::new();
        for (index, request) in requests.iter().enumerate() {
            let Some(id) = request
                .id
                .as_deref()
                .map(str::trim)
                .filter(|id| !id.is_empty())
            else {
                problems.push(FieldProblem::new(
                    format!("{field}[{index}].id"),
                    "is required",
                ));
                continue;
            };
            let params_field = format!("{field}[{index}].parameters");
            let mut parameters = match request
                .parameters
                .clone()
                .unwrap_or(Value::Object(Map::new()))
            {
                Value::Object(map) => map,
                _ => {
                    problems.push(FieldProblem::new(params_field, "must be an object"));
                    continue;
                }
            };
            let on_violation = match parameters.remove("onViolation") {
                None => OnViolation::Reject,
                Some(value) => match serde_json::from_value::<OnViolation>(value) {
                    Ok(choice) => choice,
                    Err(_) => {
                        problems.push(FieldProblem::new(
                            format!("{params_field}.onViolation"),
                            "must be \"reject\" or \"hold\"",
                        ));
                        continue;
                    }
                },
            };
            let recorded = Value::Object(parameters.clone());
            match build_rule(id, &params_field, parameters) {
                Ok(rule) => rules.push(ConfiguredRule {
                    id: id.to_owned(),
                    parameters: recorded,
                    on_violation,
                    rule,
                }),
                Err(mut found) => problems.append(&mut found),
            }
        }
        if problems.is_empty() {
            Ok(RuleSet { rules })
        } else {
            Err(ApiError::Validation(problems))
        }
    }

    fn history_window(&self) -> Option<Duration> {
        self.rules
            .iter()
            .filter_map(|r| r.rule.history_window())
            .max()
    }

    pub fn evaluate(&self, purchase: &Purchase, facts: &Facts, evaluated_by: &str) -> Evaluation {
        let now = Utc::now();
        let results = self
            .rules
            .iter()
            .map(|configured| {
                let (outcome, reason) = match configured.rule.evaluate(purchase, facts) {
                    Ok(reason) => (RuleOutcome::Passed, reason),
                    Err(reason) => (RuleOutcome::Violated, reason),
                };
                RuleResult {
                    rule_id: configured.id.clone(),
                    parameters: configured.parameters.clone(),
                    outcome,
                    on_violation: configured.on_violation,
                    reason,
                    evaluated_at: now,
                    evaluated_by: evaluated_by.to_owned(),
                }
            })
            .collect();
        Evaluation { results }
    }
}

/// Loads what the rule set needs from the store (only what it needs).
pub async fn gather_facts(
    store: &dyn PurchaseStore,
    rules: &RuleSet,
    purchase: &Purchase,
) -> Result<Facts, ApiError> {
    let Some(window) = rules.history_window() else {
        return Ok(Facts::default());
    };
    let since = Utc::now() - window;
    let mut facts = Facts::default();
    let mut query = PurchaseQuery {
        customer_id: Some(purchase.customer_id.clone()),
        limit: 100,
        ..PurchaseQuery::default()
    };
    // Newest first: stop at the first page that reaches past the window.
    loop {
        let page = store.list_purchases(&query).await?;
        let mut reached_end = page.next_token.is_none();
        for other in &page.purchases {
            if other.created_at < since {
                reached_end = true;
                break;
            }
            let counts = other.purchase_id != purchase.purchase_id
                && !matches!(
                    other.status,
                    PurchaseStatus::Failed | PurchaseStatus::Cancelled | PurchaseStatus::Rejected
                );
            if counts {
                facts.recent_purchases.push(other.created_at);
            }
        }
        if reached_end {
            return Ok(facts);
        }
        query.next_token = page.next_token;
    }
}

/// The results of evaluating a rule set against one purchase.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub results: Vec<RuleResult>,
}

impl Evaluation {
    fn violations(&self, action: OnViolation) -> Vec<&RuleResult> {
        self.results
            .iter()
            .filter(|r| r.outcome == RuleOutcome::Violated && r.on_violation == action)
            .collect()
    }

    /// The status the purchase should move to: `REJECTED` beats `ON_HOLD`
    /// beats staying where it is.
    pub fn verdict(&self) -> Option<PurchaseStatus> {
        if !self.violations(OnViolation::Reject).is_empty() {
            Some(PurchaseStatus::Rejected)
        } else if !self.violations(OnViolation::Hold).is_empty() {
            Some(PurchaseStatus::OnHold)
        } else {
            None
        }
    }

    /// Records the results (on the timeline as `step`) and moves the
    /// purchase as the verdict says.
    pub fn apply_to(&self, purchase: &mut Purchase, step: &str) -> Result<(), ApiError> {
        purchase.rule_results.extend(self.results.iter().cloned());
        match self.verdict() {
            Some(PurchaseStatus::OnHold) if purchase.status == PurchaseStatus::OnHold => {}
            Some(PurchaseStatus::OnHold) => {
                purchase.held_from = Some(purchase.status);
                purchase.move_to(PurchaseStatus::OnHold)?;
            }
            Some(next) => purchase.move_to(next)?,
            None => {}
        }
        let outcome = self
            .verdict()
            .map(PurchaseStatus::as_str)
            .unwrap_or("PASSED");
        purchase.record(step, outcome, Some(self.message()));
        Ok(())
    }

    pub fn message(&self) -> String {
        let describe = |list: Vec<&RuleResult>| {
            list.iter()
                .map(|r| format!("{} ({})", r.rule_id, r.reason))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let rejected = self.violations(OnViolation::Reject);
        let held = self.violations(OnViolation::Hold);
        if !rejected.is_empty() {
            format!("purchase rejected by rules: {}", describe(rejected))
        } else if !held.is_empty() {
            format!("purchase on hold for review by rules: {}", describe(held))
        } else {
            format!("all {} rules passed", self.results.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        LineStatus, PaymentDetails, PaymentStatus, ProductKind, PurchaseLine, ShippingAddress,
        ShippingStatus,
    };
    use serde_json::json;

    fn purchase(lines: &[(&str, u32)], total: i64, currency: &str, country: &str) -> Purchase {
        Purchase {
            purchase_id: "p-1".into(),
            customer_id: "c-1".into(),
            status: PurchaseStatus::Pending,
            products: lines
                .iter()
                .map(|(id, quantity)| PurchaseLine {
                    id: (*id).into(),
                    quantity: *quantity,
                    status: LineStatus::Pending,
                    unit_price: 100,
                    kind: ProductKind::Digital,
                })
                .collect(),
            currency: currency.into(),
            total_amount: total,
            payment_details: PaymentDetails {
                method: "card".into(),
                transaction_id: "tok".into(),
            },
            payment_status: PaymentStatus::Pending,
            payment_reference: None,
            shipping_address: ShippingAddress {
                name: "A".into(),
                address: "B".into(),
                city: "C".into(),
                country: country.into(),
                postal_code: "1".into(),
            },
            shipping_status: ShippingStatus::NotRequired,
            failure_reason: None,
            review_token: None,
            held_from: None,
            timeline: Vec::new(),
            rule_results: Vec::new(),
            version: 1,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn outcome(rule: serde_json::Value, purchase: &Purchase, facts: &Facts) -> RuleOutcome {
        let request: RuleRequest = serde_json::from_value(rule).unwrap();
        let set = RuleSet::from_requests(&[request], "rules").unwrap();
        set.evaluate(purchase, facts, "test").results[0].outcome
    }

    use RuleOutcome::{Passed, Violated};

    #[test]
    fn every_rule_evaluates_as_documented() {
        let p = purchase(&[("a", 2), ("b", 3)], 5000, "EUR", "DE");
        let none = Facts::default();
        let cases = [
            (
                json!({"id": "max-quantity", "parameters": {"max": 3}}),
                Passed,
            ),
            (
                json!({"id": "max-quantity", "parameters": {"max": 2}}),
                Violated,
            ),
            (
                json!({"id": "max-total-items", "parameters": {"max": 5}}),
                Passed,
            ),
            (
                json!({"id": "max-total-items", "parameters": {"max": 4}}),
                Violated,
            ),
            (
                json!({"id": "min-order-value", "parameters": {"amount": 5000, "currency": "EUR"}}),
                Passed,
            ),
            (
                json!({"id": "min-order-value", "parameters": {"amount": 5001, "currency": "EUR"}}),
                Violated,
            ),
            (
                json!({"id": "max-order-value", "parameters": {"amount": 5000, "currency": "EUR"}}),
                Passed,
            ),
            (
                json!({"id": "max-order-value", "parameters": {"amount": 4999, "currency": "EUR"}}),
                Violated,
            ),
            // Another currency cannot be compared: the rule does not apply.
            (
                json!({"id": "max-order-value", "parameters": {"amount": 1, "currency": "USD"}}),
                Passed,
            ),
            (
                json!({"id": "allowed-countries", "parameters": {"countries": ["DE", "AT"]}}),
                Passed,
            ),
            (
                json!({"id": "allowed-countries", "parameters": {"countries": ["FR"]}}),
                Violated,
            ),
            (
                json!({"id": "blocked-countries", "parameters": {"countries": ["FR"]}}),
                Passed,
            ),
            (
                json!({"id": "blocked-countries", "parameters": {"countries": ["DE"]}}),
                Violated,
            ),
            (
                json!({"id": "max-purchases-per-customer", "parameters": {"max": 1, "windowHours": 24}}),
                Passed,
            ),
            (
                json!({"id": "manual-review", "parameters": {"reason": "new customer"}}),
                Violated,
            ),
        ];
        for (rule, expected) in cases {
            assert_eq!(outcome(rule.clone(), &p, &none), expected, "{rule}");
        }
    }

    #[test]
    fn max_purchases_per_customer_counts_only_the_window() {
        let p = purchase(&[("a", 1)], 100, "EUR", "DE");
        let now = Utc::now();
        let facts = Facts {
            recent_purchases: vec![now - Duration::hours(1), now - Duration::hours(30)],
        };
        let rule = |max: u32, hours: u32| json!({"id": "max-purchases-per-customer", "parameters": {"max": max, "windowHours": hours}});
        // Within 24 h: one other purchase plus this one.
        assert_eq!(outcome(rule(2, 24), &p, &facts), Passed);
        assert_eq!(outcome(rule(1, 24), &p, &facts), Violated);
        // Within 48 h: both others count.
        assert_eq!(outcome(rule(2, 48), &p, &facts), Violated);
    }

    #[test]
    fn verdict_prefers_reject_over_hold_and_names_the_rules() {
        let p = purchase(&[("a", 5)], 500, "EUR", "DE");
        let requests: Vec<RuleRequest> = serde_json::from_value(json!([
            {"id": "manual-review", "parameters": {"reason": "first order", "onViolation": "hold"}},
            {"id": "max-quantity", "parameters": {"max": 1}}
        ]))
        .unwrap();
        let evaluation = RuleSet::from_requests(&requests, "rules")
            .unwrap()
            .evaluate(&p, &Facts::default(), "admin");
        assert_eq!(evaluation.verdict(), Some(PurchaseStatus::Rejected));
        assert!(evaluation.message().contains("max-quantity"));
        let mut held = p.clone();
        let only_hold = RuleSet::from_requests(&requests[..1], "rules")
            .unwrap()
            .evaluate(&p, &Facts::default(), "admin");
        only_hold.apply_to(&mut held, "ApplyRules").unwrap();
        assert_eq!(
            (held.status, held.held_from),
            (PurchaseStatus::OnHold, Some(PurchaseStatus::Pending))
        );
        assert_eq!(held.rule_results.len(), 1);
    }
}
