//! Choice rules (JSONPath flavour): comparisons, `And`/`Or`/`Not`, type tests.
//!
//! Semantics follow the Choice state page of the Step Functions developer guide:
//! a comparison whose operand has the wrong JSON type is simply false ("Step Functions
//! doesn't attempt to match a numeric field to a string value"), whereas a `Variable`
//! (or `...Path` operand) that selects nothing fails the execution with
//! `States.Runtime` — only `IsPresent` may look at a missing node.

use std::cmp::Ordering;

use chrono::{DateTime, FixedOffset};
use serde_json::{Map, Value};

use crate::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Relation {
    Equals,
    LessThan,
    GreaterThan,
    LessThanEquals,
    GreaterThanEquals,
}

impl Relation {
    fn holds(self, ordering: Ordering) -> bool {
        match self {
            Relation::Equals => ordering == Ordering::Equal,
            Relation::LessThan => ordering == Ordering::Less,
            Relation::GreaterThan => ordering == Ordering::Greater,
            Relation::LessThanEquals => ordering != Ordering::Greater,
            Relation::GreaterThanEquals => ordering != Ordering::Less,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operator {
    String(Relation),
    StringMatches,
    Numeric(Relation),
    BooleanEquals,
    Timestamp(Relation),
    IsNull,
    IsPresent,
    IsNumeric,
    IsString,
    IsBoolean,
    IsTimestamp,
}

impl Operator {
    /// Maps an operator field name to the operator and whether it is the `...Path`
    /// variant (whose operand is a reference path rather than a literal).
    fn from_field(field: &str) -> Option<(Operator, bool)> {
        let (base, is_path) = match field.strip_suffix("Path") {
            Some(base) => (base, true),
            None => (field, false),
        };
        let relation = |suffix: &str| match suffix {
            "Equals" => Some(Relation::Equals),
            "LessThan" => Some(Relation::LessThan),
            "GreaterThan" => Some(Relation::GreaterThan),
            "LessThanEquals" => Some(Relation::LessThanEquals),
            "GreaterThanEquals" => Some(Relation::GreaterThanEquals),
            _ => None,
        };
        let op = if let Some(rest) = base.strip_prefix("String") {
            if rest == "Matches" {
                Operator::StringMatches
            } else {
                Operator::String(relation(rest)?)
            }
        } else if let Some(rest) = base.strip_prefix("Numeric") {
            Operator::Numeric(relation(rest)?)
        } else if let Some(rest) = base.strip_prefix("Timestamp") {
            Operator::Timestamp(relation(rest)?)
        } else {
            match base {
                "BooleanEquals" => Operator::BooleanEquals,
                "IsNull" => Operator::IsNull,
                "IsPresent" => Operator::IsPresent,
                "IsNumeric" => Operator::IsNumeric,
                "IsString" => Operator::IsString,
                "IsBoolean" => Operator::IsBoolean,
                "IsTimestamp" => Operator::IsTimestamp,
                _ => return None,
            }
        };
        // AWS has no `StringMatchesPath` and no `Is*Path`.
        let path_allowed = !matches!(
            op,
            Operator::StringMatches
                | Operator::IsNull
                | Operator::IsPresent
                | Operator::IsNumeric
                | Operator::IsString
                | Operator::IsBoolean
                | Operator::IsTimestamp
        );
        if is_path && !path_allowed {
            return None;
        }
        Some((op, is_path))
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Operand {
    Literal(Value),
    Path(Path),
}

#[derive(Debug, Clone)]
pub(crate) enum Condition {
    And(Vec<Condition>),
    Or(Vec<Condition>),
    Not(Box<Condition>),
    Compare {
        variable: Path,
        operator: Operator,
        operand: Operand,
    },
}

/// A top-level rule: a condition and the state to go to when it holds.
#[derive(Debug, Clone)]
pub(crate) struct ChoiceRule {
    pub(crate) condition: Condition,
    pub(crate) next: String,
}

impl ChoiceRule {
    pub(crate) fn parse(value: &Value) -> Result<ChoiceRule, String> {
        let map = value
            .as_object()
            .ok_or("each choice rule must be an object")?;
        let next = match map.get("Next") {
            Some(Value::String(next)) => next.clone(),
            Some(_) => return Err("choice rule `Next` must be a string".to_owned()),
            None => return Err("top-level choice rule is missing `Next`".to_owned()),
        };
        Ok(ChoiceRule {
            condition: parse_condition(map, true)?,
            next,
        })
    }
}

fn reference_path(field: &str, value: &Value) -> Result<Path, String> {
    let text = value
        .as_str()
        .ok_or_else(|| format!("choice rule `{field}` must be a path string"))?;
    let path = Path::parse(text).map_err(|e| format!("choice rule `{field}`: {e}"))?;
    if !path.is_reference() {
        return Err(format!(
            "choice rule `{field}`: `{text}` must be a reference path"
        ));
    }
    Ok(path)
}

fn parse_condition(map: &Map<String, Value>, top_level: bool) -> Result<Condition, String> {
    let mut variable = None;
    let mut combinator = None;
    let mut comparison = None;
    for (key, value) in map {
        match key.as_str() {
            "Next" if top_level => {}
            "Next" => return Err("`Next` is only allowed in a top-level choice rule".to_owned()),
            "Comment" => {}
            "Variable" => variable = Some(reference_path("Variable", value)?),
            "And" | "Or" | "Not" => {
                if combinator.is_some() || comparison.is_some() {
                    return Err("a choice rule must have exactly one operator".to_owned());
                }
                combinator = Some((key.as_str(), value));
            }
            other => {
                let (operator, is_path) = Operator::from_field(other).ok_or_else(|| {
                    format!("choice rule field `{other}` is not supported by the local runner")
                })?;
                if combinator.is_some() || comparison.is_some() {
                    return Err("a choice rule must have exactly one operator".to_owned());
                }
                let operand = if is_path {
                    Operand::Path(reference_path(other, value)?)
                } else {
                    check_literal(other, operator, value)?;
                    Operand::Literal(value.clone())
                };
                comparison = Some((operator, operand));
            }
        }
    }
    match (combinator, comparison) {
        (Some((name, value)), None) => {
            if variable.is_some() {
                return Err(format!("`Variable` cannot be combined with `{name}`"));
            }
            let nested = |v: &Value| -> Result<Condition, String> {
                let map = v
                    .as_object()
                    .ok_or_else(|| format!("`{name}` must contain choice rule objects"))?;
                parse_condition(map, false)
            };
            match name {
                "Not" => Ok(Condition::Not(Box::new(nested(value)?))),
                _ => {
                    let items = value
                        .as_array()
                        .filter(|items| !items.is_empty())
                        .ok_or_else(|| format!("`{name}` must be a non-empty array"))?;
                    let rules = items.iter().map(nested).collect::<Result<Vec<_>, _>>()?;
                    Ok(if name == "And" {
                        Condition::And(rules)
                    } else {
                        Condition::Or(rules)
                    })
                }
            }
        }
        (None, Some((operator, operand))) => Ok(Condition::Compare {
            variable: variable.ok_or("a comparison needs a `Variable`")?,
            operator,
            operand,
        }),
        (None, None) => Err("a choice rule needs a comparison operator or And/Or/Not".to_owned()),
        (Some(_), Some(_)) => Err("a choice rule must have exactly one operator".to_owned()),
    }
}

fn check_literal(field: &str, operator: Operator, value: &Value) -> Result<(), String> {
    let ok = match operator {
        Operator::String(_) | Operator::StringMatches => value.is_string(),
        Operator::Numeric(_) => value.is_number(),
        Operator::Timestamp(_) => value.as_str().and_then(parse_timestamp).is_some(),
        Operator::BooleanEquals
        | Operator::IsNull
        | Operator::IsPresent
        | Operator::IsNumeric
        | Operator::IsString
        | Operator::IsBoolean
        | Operator::IsTimestamp => value.is_boolean(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "choice rule `{field}` has a value of the wrong type: {value}"
        ))
    }
}

/// Parses a timestamp as AWS accepts it: RFC 3339 with an uppercase `T` separator and,
/// when there is no numeric offset, an uppercase `Z`.
pub(crate) fn parse_timestamp(text: &str) -> Option<DateTime<FixedOffset>> {
    if text.as_bytes().get(10) != Some(&b'T') || text.ends_with('z') {
        return None;
    }
    DateTime::parse_from_rfc3339(text).ok()
}

/// `StringMatches`: `*` matches any run of characters; `\*` and `\\` are literal.
fn glob_matches(pattern: &str, text: &str) -> bool {
    enum Token {
        Char(char),
        Star,
    }
    let mut tokens = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => tokens.push(Token::Char(chars.next().unwrap_or('\\'))),
            '*' => tokens.push(Token::Star),
            c => tokens.push(Token::Char(c)),
        }
    }
    let text: Vec<char> = text.chars().collect();
    // Classic greedy wildcard matching with a single backtrack point.
    let (mut t, mut p) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match tokens.get(p) {
            Some(Token::Char(c)) if *c == text[t] => {
                t += 1;
                p += 1;
            }
            Some(Token::Star) => {
                backtrack = Some((p, t));
                p += 1;
            }
            _ => match backtrack {
                Some((star, matched)) => {
                    p = star + 1;
                    t = matched + 1;
                    backtrack = Some((star, matched + 1));
                }
                None => return false,
            },
        }
    }
    tokens[p..].iter().all(|token| matches!(token, Token::Star))
}

/// Java's `String.compareTo` (which AWS documents as the string ordering) compares UTF-16
/// code units, which differs from Rust's byte order for characters above U+FFFF.
fn compare_strings(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

fn compare_numbers(a: &serde_json::Number, b: &serde_json::Number) -> Option<Ordering> {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

impl Condition {
    /// Evaluates the rule. `Err` carries the cause of a `States.Runtime` failure.
    pub(crate) fn evaluate(&self, input: &Value, context: &Value) -> Result<bool, String> {
        match self {
            Condition::And(rules) => {
                for rule in rules {
                    if !rule.evaluate(input, context)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Condition::Or(rules) => {
                for rule in rules {
                    if rule.evaluate(input, context)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Condition::Not(rule) => Ok(!rule.evaluate(input, context)?),
            Condition::Compare {
                variable,
                operator,
                operand,
            } => {
                let selected = variable.select(input, context);
                if *operator == Operator::IsPresent {
                    return Ok(
                        selected.is_some() == (operand_literal(operand) == &Value::Bool(true))
                    );
                }
                let invalid = |path: &Path| {
                    format!(
                        "Invalid path '{path}': The choice state's condition path references an invalid value."
                    )
                };
                let value = selected.ok_or_else(|| invalid(variable))?;
                let expected = match operand {
                    Operand::Literal(v) => v.clone(),
                    Operand::Path(p) => p.select(input, context).ok_or_else(|| invalid(p))?,
                };
                Ok(compare(*operator, &value, &expected))
            }
        }
    }
}

fn operand_literal(operand: &Operand) -> &Value {
    match operand {
        Operand::Literal(v) => v,
        Operand::Path(_) => &Value::Null,
    }
}

fn compare(operator: Operator, value: &Value, expected: &Value) -> bool {
    let flag = || expected.as_bool() == Some(true);
    match operator {
        Operator::String(rel) => match (value.as_str(), expected.as_str()) {
            (Some(a), Some(b)) => rel.holds(compare_strings(a, b)),
            _ => false,
        },
        Operator::StringMatches => match (value.as_str(), expected.as_str()) {
            (Some(a), Some(pattern)) => glob_matches(pattern, a),
            _ => false,
        },
        Operator::Numeric(rel) => match (value, expected) {
            (Value::Number(a), Value::Number(b)) => {
                compare_numbers(a, b).is_some_and(|o| rel.holds(o))
            }
            _ => false,
        },
        Operator::BooleanEquals => match (value, expected) {
            (Value::Bool(a), Value::Bool(b)) => a == b,
            _ => false,
        },
        Operator::Timestamp(rel) => {
            let parsed = |v: &Value| v.as_str().and_then(parse_timestamp);
            match (parsed(value), parsed(expected)) {
                (Some(a), Some(b)) => rel.holds(a.cmp(&b)),
                _ => false,
            }
        }
        Operator::IsNull => value.is_null() == flag(),
        Operator::IsNumeric => value.is_number() == flag(),
        Operator::IsString => value.is_string() == flag(),
        Operator::IsBoolean => value.is_boolean() == flag(),
        Operator::IsTimestamp => value.as_str().and_then(parse_timestamp).is_some() == flag(),
        // Handled before the variable is required to exist.
        Operator::IsPresent => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(rule: Value, input: Value) -> Result<bool, String> {
        let mut rule = rule;
        rule["Next"] = json!("X");
        ChoiceRule::parse(&rule)
            .expect("valid rule")
            .condition
            .evaluate(&input, &json!({}))
    }

    #[test]
    fn glob() {
        assert!(glob_matches("log-*.txt", "log-2024.txt"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("a*b*c", "aXXbYYc"));
        assert!(!glob_matches("a*b*c", "aXXbYY"));
        assert!(glob_matches(r"lit\*eral", "lit*eral"));
        assert!(!glob_matches(r"lit\*eral", "litXeral"));
        assert!(glob_matches(r"back\\slash", r"back\slash"));
    }

    #[test]
    fn type_mismatch_is_false_but_missing_variable_is_an_error() {
        assert_eq!(
            eval(
                json!({"Variable": "$.v", "NumericEquals": 1}),
                json!({"v": "1"})
            ),
            Ok(false)
        );
        assert!(eval(json!({"Variable": "$.v", "NumericEquals": 1}), json!({})).is_err());
        assert_eq!(
            eval(json!({"Variable": "$.v", "IsPresent": false}), json!({})),
            Ok(true)
        );
    }

    #[test]
    fn string_order_is_utf16() {
        // U+FF61 sorts after U+10000 in UTF-8/code-point order but before it in UTF-16.
        assert_eq!(compare_strings("\u{FF61}", "\u{10000}"), Ordering::Greater);
        assert_eq!(compare_strings("a", "b"), Ordering::Less);
    }

    #[test]
    fn timestamps_need_uppercase_t_and_z() {
        assert!(parse_timestamp("2016-08-18T17:33:00Z").is_some());
        assert!(parse_timestamp("2016-08-18T17:33:00+01:00").is_some());
        assert!(parse_timestamp("2016-08-18t17:33:00Z").is_none());
        assert!(parse_timestamp("2016-08-18T17:33:00z").is_none());
        assert!(parse_timestamp("yesterday").is_none());
    }

    #[test]
    fn malformed_rules_are_refused() {
        let bad = [
            json!({"Variable": "$.v", "NumericEquals": "1", "Next": "X"}),
            json!({"Variable": "$.v", "StringEquals": "a", "NumericEquals": 1, "Next": "X"}),
            json!({"Variable": "$.v[*]", "StringEquals": "a", "Next": "X"}),
            json!({"Variable": "$.v", "StringMatchesPath": "$.p", "Next": "X"}),
            json!({"Variable": "$.v", "StringEquals": "a"}),
            json!({"And": [{"Variable": "$.v", "IsNull": true, "Next": "X"}], "Next": "X"}),
            json!({"And": [], "Next": "X"}),
            json!({"Variable": "$.v", "Frobnicate": 1, "Next": "X"}),
        ];
        for rule in bad {
            assert!(
                ChoiceRule::parse(&rule).is_err(),
                "{rule} should be refused"
            );
        }
    }
}
