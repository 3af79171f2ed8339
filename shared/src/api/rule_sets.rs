//! `/rules`: named, stored rule sets (scope `purchases:admin`). The set named
//! `default` is evaluated by the workflow's first step for every purchase.

use chrono::Utc;
use http::{HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};

use super::app::App;
use super::body::parse_json_body;
use super::error::{ApiError, respond};
use super::request::{ApiRequest, ApiResponse};
use super::views::{if_match, to_json, with_etag};
use crate::auth::Scope;
use crate::domain::rules::{RuleRequest, RuleSet};
use crate::ports::store::{MAX_RULE_SETS, RuleSetRecord, StoreError};

const MAX_NAME_CHARS: usize = 64;
const MAX_DESCRIPTION_CHARS: usize = 500;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSetBody {
    name: Option<String>,
    description: Option<String>,
    rules: Option<Vec<RuleRequest>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RuleSetList<'a> {
    rule_sets: &'a [RuleSetRecord],
}

/// Names are URL path segments: lower-case letters, digits and hyphens.
fn check_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "name",
            format!(
                "must be 1 to {MAX_NAME_CHARS} lower-case letters, digits and hyphens, not starting with a hyphen"
            ),
        ))
    }
}

/// The validated description and rules of a body (rules as stored: `{id, parameters}`).
fn checked_content(body: &RuleSetBody) -> Result<(String, Vec<RuleRequest>), ApiError> {
    let description = body.description.clone().unwrap_or_default();
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(ApiError::invalid(
            "description",
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    let Some(rules) = &body.rules else {
        return Err(ApiError::invalid("rules", "is required"));
    };
    RuleSet::from_requests(rules, "rules", "")?;
    Ok((description, rules.clone()))
}

fn path_name(request: &ApiRequest) -> Result<&str, ApiError> {
    let name = request.rule_set_name.as_deref().unwrap_or("");
    check_name(name).map_err(|_| ApiError::NotFound(format!("rule set {name:?}")))?;
    Ok(name)
}

/// `GET /rules`
pub async fn list_rule_sets(app: &App, request: &ApiRequest) -> ApiResponse {
    respond(request, async {
        app.authenticate(request, Scope::Admin).await?;
        let sets = app.rule_sets.list_rule_sets().await?;
        to_json(StatusCode::OK, &RuleSetList { rule_sets: &sets })
    })
    .await
}

/// `POST /rules`
pub async fn create_rule_set(app: &App, request: &ApiRequest) -> ApiResponse {
    respond(request, async {
        let caller = app.authenticate(request, Scope::Admin).await?;
        let body: RuleSetBody = parse_json_body(&request.headers, &request.body)?;
        let name = body
            .name
            .clone()
            .ok_or_else(|| ApiError::invalid("name", "is required"))?;
        check_name(&name)?;
        let (description, rules) = checked_content(&body)?;
        if app.rule_sets.list_rule_sets().await?.len() >= MAX_RULE_SETS {
            return Err(ApiError::Conflict(format!(
                "there are already {MAX_RULE_SETS} rule sets; delete one first"
            )));
        }
        let set = RuleSetRecord {
            name: name.clone(),
            description,
            rules,
            version: 1,
            updated_at: Utc::now(),
            updated_by: caller.customer_id.clone(),
        };
        match app.rule_sets.create_rule_set(&set).await {
            Ok(()) => {}
            Err(StoreError::AlreadyExists(_)) => {
                return Err(ApiError::Conflict(format!(
                    "rule set {name} already exists; PUT /rules/{name} replaces it"
                )));
            }
            Err(other) => return Err(other.into()),
        }
        let mut response = with_etag(to_json(StatusCode::CREATED, &set)?, set.version);
        // Relative to the request's path, so it resolves under any stage.
        if let Ok(location) = HeaderValue::from_str(&format!("rules/{name}")) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        Ok(response)
    })
    .await
}

/// `GET /rules/{ruleSetName}`
pub async fn get_rule_set(app: &App, request: &ApiRequest) -> ApiResponse {
    respond(request, async {
        app.authenticate(request, Scope::Admin).await?;
        let name = path_name(request)?;
        let set = app
            .rule_sets
            .get_rule_set(name)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("rule set {name}")))?;
        Ok(with_etag(to_json(StatusCode::OK, &set)?, set.version))
    })
    .await
}

/// `PUT /rules/{ruleSetName}`: replaces the description and rules;
/// `If-Match` (the ETag of a GET) guards against overwriting someone else's change.
pub async fn update_rule_set(app: &App, request: &ApiRequest) -> ApiResponse {
    respond(request, async {
        let caller = app.authenticate(request, Scope::Admin).await?;
        let name = path_name(request)?;
        let expected = if_match(&request.headers)?;
        let body: RuleSetBody = parse_json_body(&request.headers, &request.body)?;
        if body.name.as_deref().is_some_and(|n| n != name) {
            return Err(ApiError::invalid(
                "name",
                "cannot change; create a new rule set instead",
            ));
        }
        let (description, rules) = checked_content(&body)?;
        let current = app
            .rule_sets
            .get_rule_set(name)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("rule set {name}")))?;
        if expected.is_some_and(|version| version != current.version) {
            return Err(ApiError::PreconditionFailed(format!(
                "rule set {name} is at version {}; GET it again",
                current.version
            )));
        }
        let set = RuleSetRecord {
            name: name.to_owned(),
            description,
            rules,
            version: current.version + 1,
            updated_at: Utc::now(),
            updated_by: caller.customer_id.clone(),
        };
        match app.rule_sets.replace_rule_set(&set).await {
            Ok(()) => Ok(with_etag(to_json(StatusCode::OK, &set)?, set.version)),
            Err(StoreError::VersionConflict) => Err(ApiError::Conflict(format!(
                "rule set {name} changed concurrently; GET it and retry"
            ))),
            Err(StoreError::NotFound(_)) => Err(ApiError::NotFound(format!("rule set {name}"))),
            Err(other) => Err(other.into()),
        }
    })
    .await
}

/// `DELETE /rules/{ruleSetName}`
pub async fn delete_rule_set(app: &App, request: &ApiRequest) -> ApiResponse {
    respond(request, async {
        app.authenticate(request, Scope::Admin).await?;
        let name = path_name(request)?;
        if !app.rule_sets.delete_rule_set(name).await? {
            return Err(ApiError::NotFound(format!("rule set {name}")));
        }
        let mut response = http::Response::new(String::new());
        *response.status_mut() = StatusCode::NO_CONTENT;
        Ok(response)
    })
    .await
}
