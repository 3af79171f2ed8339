//! Custom business rules: a catalog of rule types, each validating its own
//! parameters and judging a purchase to pass or violate with a reason.
//!
//! Rules are pure: what they need beyond the purchase (the customer's recent
//! purchases) is gathered by the caller into [`Facts`] first. Adding a rule is
//! one type implementing [`Rule`] plus one line in [`build_rule`].
//!
//! The *rules of a purchase* are the stored `default` set plus every rule
//! applied to it through `apply-rules`; [`Judgement`] is their verdict on one
//! version of the purchase's contents, and the lifecycle refuses a judgement
//! of contents that have changed since.

pub mod records;

use chrono::{DateTime, Duration, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use records::{OnViolation, RuleOutcome, RuleRequest, RuleResult};

use super::error::{DomainError, FieldProblem};
use super::ids::ProductId;
use super::money::{Currency, Money};
use super::purchase::{Purchase, PurchaseStatus, ShippingAddress};
use super::validation::is_iso_country;

pub const MAX_RULES: usize = 50;

/// What rules may need beyond the purchase itself, gathered before evaluation.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// When the customer's other live purchases were made, newest first, as
    /// far back as the longest window any rule asked for.
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

#[derive(Debug)]
struct OrderValue {
    limit: Money,
    minimum: bool,
}

impl Rule for OrderValue {
    fn evaluate(&self, purchase: &Purchase, _: &Facts) -> Result<String, String> {
        let limit = &self.limit;
        if purchase.currency != limit.currency {
            // Amounts in different currencies cannot be compared without a
            // rate; the rule applies to purchases in its own currency only.
            return Ok(format!(
                "not applicable: purchase is in {}, rule in {}",
                purchase.currency, limit.currency
            ));
        }
        let total = purchase.total();
        let (broken, word) = if self.minimum {
            (total.amount < limit.amount, "below the minimum")
        } else {
            (total.amount > limit.amount, "above the maximum")
        };
        if broken {
            Err(format!("order value {total} is {word} of {limit}"))
        } else {
            Ok(format!("order value {total} is within {limit}"))
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MoneyParameters {
    amount: i64,
    currency: String,
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
            let MoneyParameters { amount, currency } = parse(field, parameters)?;
            let currency = Currency::new(currency);
            let mut problems = Vec::new();
            if amount < 0 {
                problems.push(FieldProblem::new(
                    format!("{field}.amount"),
                    "must not be negative",
                ));
            }
            if !currency.is_well_formed() {
                problems.push(FieldProblem::new(
                    format!("{field}.currency"),
                    "must be an ISO 4217 code such as EUR",
                ));
            }
            if !problems.is_empty() {
                return Err(problems);
            }
            Box::new(OrderValue {
                limit: Money::new(amount, currency),
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

#[derive(Debug)]
struct ConfiguredRule {
    id: String,
    parameters: Value,
    on_violation: OnViolation,
    rule: Box<dyn Rule>,
    /// Set when rule sets are combined: the set's own `evaluated_by`.
    evaluated_by: Option<String>,
}

/// A validated list of rules, ready to evaluate.
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<ConfiguredRule>,
    /// The requests the rules were built from, in order.
    requests: Vec<RuleRequest>,
    /// Who or what stands behind these rules (`rule set default v3`, an
    /// admin's id), recorded on every result.
    evaluated_by: String,
}

impl ApplyRulesRequest {
    pub fn validate(&self) -> Result<Vec<RuleRequest>, DomainError> {
        let Some(requests) = &self.rules else {
            return Err(DomainError::invalid("rules", "is required"));
        };
        RuleSet::from_requests(requests, "rules", "")?;
        Ok(requests.clone())
    }
}

impl RuleSet {
    /// Validates `requests` (1 to [`MAX_RULES`] of them), naming any problem
    /// by its path under `field`.
    pub fn from_requests(
        requests: &[RuleRequest],
        field: &str,
        evaluated_by: &str,
    ) -> Result<RuleSet, DomainError> {
        if requests.is_empty() {
            return Err(DomainError::invalid(
                field,
                "must contain at least one rule",
            ));
        }
        if requests.len() > MAX_RULES {
            return Err(DomainError::invalid(
                field,
                format!("must contain at most {MAX_RULES} rules"),
            ));
        }
        let mut problems = Vec::new();
        let mut rules = Vec::new();
        for (index, request) in requests.iter().enumerate() {
            match configure(request, &format!("{field}[{index}]")) {
                Ok(rule) => rules.push(rule),
                Err(mut found) => problems.append(&mut found),
            }
        }
        if problems.is_empty() {
            Ok(RuleSet {
                rules,
                requests: requests.to_vec(),
                evaluated_by: evaluated_by.to_owned(),
            })
        } else {
            Err(DomainError::Invalid(problems))
        }
    }

    /// Rules already validated once (a stored rule set, a purchase's applied
    /// rules): one that no longer validates is a stored-data problem, named
    /// by `origin`.
    pub fn from_stored(
        requests: &[RuleRequest],
        origin: &str,
        evaluated_by: &str,
    ) -> Result<RuleSet, DomainError> {
        if requests.is_empty() {
            return Ok(RuleSet::default());
        }
        RuleSet::from_requests(requests, "rules", evaluated_by).map_err(|error| {
            DomainError::Inconsistent(format!("{origin} no longer validates: {error:?}"))
        })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn requests(&self) -> &[RuleRequest] {
        &self.requests
    }

    /// This set followed by `other`, each rule keeping who stands behind it.
    pub fn and(mut self, other: RuleSet) -> RuleSet {
        for mut rule in other.rules {
            rule.evaluated_by_override(&other.evaluated_by);
            self.rules.push(rule);
        }
        self.requests.extend(other.requests);
        self
    }

    /// How far back the rules need the customer's purchase history.
    pub fn history_window(&self) -> Option<Duration> {
        self.rules
            .iter()
            .filter_map(|r| r.rule.history_window())
            .max()
    }

    /// Judges the purchase's current contents.
    pub fn judge(&self, purchase: &Purchase, facts: &Facts, now: DateTime<Utc>) -> Judgement {
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
                    evaluated_by: configured
                        .evaluated_by
                        .clone()
                        .unwrap_or_else(|| self.evaluated_by.clone()),
                }
            })
            .collect();
        Judgement {
            results,
            judged: Contents::of(purchase),
        }
    }
}

impl ConfiguredRule {
    fn evaluated_by_override(&mut self, by: &str) {
        if self.evaluated_by.is_none() {
            self.evaluated_by = Some(by.to_owned());
        }
    }
}

fn configure(request: &RuleRequest, field: &str) -> Result<ConfiguredRule, Vec<FieldProblem>> {
    let Some(id) = request
        .id
        .as_deref()
        .map(str::trim)
        .filter(|id| !id.is_empty())
    else {
        return Err(vec![FieldProblem::new(
            format!("{field}.id"),
            "is required",
        )]);
    };
    let params_field = format!("{field}.parameters");
    let mut parameters = match request
        .parameters
        .clone()
        .unwrap_or(Value::Object(Map::new()))
    {
        Value::Object(map) => map,
        _ => return Err(vec![FieldProblem::new(params_field, "must be an object")]),
    };
    let on_violation = match parameters.remove("onViolation") {
        None => OnViolation::Reject,
        Some(value) => serde_json::from_value::<OnViolation>(value).map_err(|_| {
            vec![FieldProblem::new(
                format!("{params_field}.onViolation"),
                "must be \"reject\" or \"hold\"",
            )]
        })?,
    };
    let recorded = Value::Object(parameters.clone());
    let rule = build_rule(id, &params_field, parameters)?;
    Ok(ConfiguredRule {
        id: id.to_owned(),
        parameters: recorded,
        on_violation,
        rule,
        evaluated_by: None,
    })
}

/// What the rules judge: the lines (product and quantity) and the address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Contents {
    lines: Vec<(ProductId, u32)>,
    address: ShippingAddress,
}

impl Contents {
    /// A stable text of these contents, to remember which were approved.
    pub fn fingerprint(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn of(purchase: &Purchase) -> Contents {
        Contents {
            lines: purchase
                .products
                .iter()
                .map(|l| (l.id.clone(), l.quantity))
                .collect(),
            address: purchase.shipping_address.clone(),
        }
    }
}

/// The rules' results on one version of a purchase's contents.
#[derive(Debug, Clone)]
pub struct Judgement {
    pub results: Vec<RuleResult>,
    /// The contents judged: a judgement of other contents is stale.
    pub judged: Contents,
}

impl Judgement {
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

    /// What the verdict means, naming the rules behind it.
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
    use crate::domain::fixtures::purchase;
    use serde_json::json;

    fn outcome(rule: serde_json::Value, purchase: &Purchase, facts: &Facts) -> RuleOutcome {
        let request: RuleRequest = serde_json::from_value(rule).unwrap();
        let set = RuleSet::from_requests(&[request], "rules", "test").unwrap();
        set.judge(purchase, facts, Utc::now()).results[0].outcome
    }

    use RuleOutcome::{Passed, Violated};

    #[test]
    fn every_rule_evaluates_as_documented() {
        let mut p = purchase(&[("a", 2), ("b", 3)], "EUR", "DE");
        p.total_amount = 5000;
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
        let p = purchase(&[("a", 1)], "EUR", "DE");
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
        let p = purchase(&[("a", 5)], "EUR", "DE");
        let requests: Vec<RuleRequest> = serde_json::from_value(json!([
            {"id": "manual-review", "parameters": {"reason": "first order", "onViolation": "hold"}},
            {"id": "max-quantity", "parameters": {"max": 1}}
        ]))
        .unwrap();
        let judgement = RuleSet::from_requests(&requests, "rules", "admin")
            .unwrap()
            .judge(&p, &Facts::default(), Utc::now());
        assert_eq!(judgement.verdict(), Some(PurchaseStatus::Rejected));
        assert!(judgement.message().contains("max-quantity"));
        let only_hold = RuleSet::from_requests(&requests[..1], "rules", "admin")
            .unwrap()
            .judge(&p, &Facts::default(), Utc::now());
        assert_eq!(only_hold.verdict(), Some(PurchaseStatus::OnHold));
        assert_eq!(only_hold.results[0].evaluated_by, "admin");
    }
}
