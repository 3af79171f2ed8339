//! The HTTP API's handlers, shared by the Lambda functions and the local
//! server: parse → call the domain → map to HTTP. Each takes an
//! [`ApiRequest`] (whatever the transport) and returns an `http::Response`.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Serialize;

use crate::auth::{Authenticator, Caller, Scope};
use crate::error::{ApiError, json_response};
use crate::idempotency;
use crate::model::{
    FailureReason, LineStatus, PaymentStatus, ProductKind, Purchase, PurchaseLine, PurchaseStatus,
    ShippingAddress, ShippingStatus, TimelineEntry,
};
use crate::rules::{self, RuleResult};
use crate::steps::modify_purchase;
use crate::store::{
    IdempotencyStore, Inventory, PurchaseQuery, PurchaseStore, RuleSetStore, StoreError,
};
use crate::validation::{
    CreatePurchaseRequest, RequestedLine, UpdatePurchaseRequest, limits, parse_json_body,
    price_lines,
};
use crate::workflow::{Workflow, WorkflowError, review_decision};

mod rule_sets;
pub use rule_sets::{
    create_rule_set, delete_rule_set, get_rule_set, list_rule_sets, update_rule_set,
};

/// The base path every route lives under, on API Gateway and locally.
pub const BASE_PATH: &str = "/purchase-orchestrator";

/// Everything the handlers need, built once per cold start (or once per
/// local server) and shared by every request.
#[derive(Clone)]
pub struct App {
    pub purchases: Arc<dyn PurchaseStore>,
    pub inventory: Arc<dyn Inventory>,
    pub workflow: Arc<dyn Workflow>,
    pub auth: Arc<dyn Authenticator>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub rule_sets: Arc<dyn RuleSetStore>,
}

/// A request as the handlers see it, independent of API Gateway or hyper.
#[derive(Debug, Clone, Default)]
pub struct ApiRequest {
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The `{purchaseId}` path parameter, where the route has one.
    pub purchase_id: Option<String>,
    /// The `{ruleSetName}` path parameter, where the route has one.
    pub rule_set_name: Option<String>,
    pub query: Vec<(String, String)>,
    /// Lambda's request id, or one made up by the local server; logged with every error.
    pub request_id: String,
}

pub type ApiResponse = http::Response<String>;

/// `POST`/`PUT`/cancel/apply-rules answer with this (the spec's shape).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusMessage {
    pub purchase_id: String,
    pub status: PurchaseStatus,
    pub message: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LineView<'a> {
    id: &'a str,
    quantity: u32,
    status: LineStatus,
    unit_price: i64,
    kind: ProductKind,
}

/// `GET /purchases/{purchaseId}`: the spec's fields first, then what a
/// client needs to understand where the purchase stands.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PurchaseView<'a> {
    purchase_id: &'a str,
    status: PurchaseStatus,
    products: Vec<LineView<'a>>,
    payment_status: PaymentStatus,
    shipping_status: ShippingStatus,
    customer_id: &'a str,
    currency: &'a str,
    total_amount: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_reason: Option<FailureReason>,
    payment_method: &'a str,
    shipping_address: &'a ShippingAddress,
    timeline: &'a [TimelineEntry],
    rule_results: &'a [RuleResult],
    version: u64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl<'a> PurchaseView<'a> {
    pub fn of(p: &'a Purchase) -> PurchaseView<'a> {
        PurchaseView {
            purchase_id: &p.purchase_id,
            status: p.status,
            products: p
                .products
                .iter()
                .map(|l| LineView {
                    id: &l.id,
                    quantity: l.quantity,
                    status: l.status,
                    unit_price: l.unit_price,
                    kind: l.kind,
                })
                .collect(),
            payment_status: p.payment_status,
            shipping_status: p.shipping_status,
            customer_id: &p.customer_id,
            currency: &p.currency,
            total_amount: p.total_amount,
            failure_reason: p.failure_reason,
            payment_method: &p.payment_details.method,
            shipping_address: &p.shipping_address,
            timeline: &p.timeline,
            rule_results: &p.rule_results,
            version: p.version,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

pub(crate) fn to_json<T: Serialize>(
    status: StatusCode,
    value: &T,
) -> Result<ApiResponse, ApiError> {
    let body = serde_json::to_string(value).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(json_response(status, body))
}

fn status_message(purchase: &Purchase, message: impl Into<String>) -> StatusMessage {
    StatusMessage {
        purchase_id: purchase.purchase_id.clone(),
        status: purchase.status,
        message: message.into(),
    }
}

/// Runs a handler body and renders its error, if any, in the one format.
pub(crate) async fn respond<F>(request: &ApiRequest, work: F) -> ApiResponse
where
    F: std::future::Future<Output = Result<ApiResponse, ApiError>>,
{
    match work.await {
        Ok(response) => response,
        Err(error) => error.into_response(&request.request_id),
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::NotFound(id) => ApiError::NotFound(format!("purchase {id}")),
            StoreError::VersionConflict => ApiError::Conflict(
                "the purchase changed concurrently too often; retry the request".into(),
            ),
            StoreError::AlreadyExists(id) => {
                ApiError::Conflict(format!("purchase {id} already exists"))
            }
            StoreError::OutOfStock { .. } => ApiError::Conflict(error.to_string()),
            StoreError::InvalidPageToken => {
                ApiError::invalid("nextToken", "is not a token returned by a previous page")
            }
            StoreError::Unavailable(reason) => ApiError::Unavailable {
                retry_after_seconds: 1,
                reason,
            },
            StoreError::Internal(cause) => ApiError::Internal(cause),
        }
    }
}

fn path_id(request: &ApiRequest) -> Result<&str, ApiError> {
    match request.purchase_id.as_deref() {
        Some(id) if !id.is_empty() && id.len() <= 64 => Ok(id),
        _ => Err(ApiError::invalid("purchaseId", "must be a purchase id")),
    }
}

/// Loads a purchase the caller may see. Someone else's purchase answers 404,
/// exactly like a missing one, so ids cannot be probed.
async fn load_visible(app: &App, caller: &Caller, purchase_id: &str) -> Result<Purchase, ApiError> {
    match app.purchases.get_purchase(purchase_id).await? {
        Some(purchase) if caller.may_access(&purchase.customer_id) => Ok(purchase),
        _ => Err(ApiError::NotFound(format!("purchase {purchase_id}"))),
    }
}

pub(crate) async fn authenticate(
    app: &App,
    request: &ApiRequest,
    scope: Scope,
) -> Result<Caller, ApiError> {
    let caller = app.auth.authenticate(&request.headers).await?;
    caller.require(scope)?;
    Ok(caller)
}

async fn priced_lines(
    app: &App,
    requested: &[RequestedLine],
) -> Result<(Vec<PurchaseLine>, String, i64), ApiError> {
    let ids: Vec<String> = requested.iter().map(|line| line.id.clone()).collect();
    let catalog = app.inventory.get_products(&ids).await?;
    price_lines(requested, &catalog)
}

/// `POST /purchases`
pub async fn create_purchase(app: &App, request: &ApiRequest) -> ApiResponse {
    respond(request, async {
        let caller = authenticate(app, request, Scope::Write).await?;
        idempotency::run_once(
            app.idempotency.as_ref(),
            Endpoint::CreatePurchase,
            &caller,
            request,
            || create(app, request, &caller),
        )
        .await
    })
    .await
}

async fn create(app: &App, request: &ApiRequest, caller: &Caller) -> Result<ApiResponse, ApiError> {
    let body: CreatePurchaseRequest = parse_json_body(&request.headers, &request.body)?;
    let new = body.validate()?;
    if !caller.may_access(&new.customer_id) {
        return Err(ApiError::Forbidden {
            reason: format!(
                "{} may not buy for customer {}",
                caller.customer_id, new.customer_id
            ),
        });
    }
    let (products, currency, total_amount) = priced_lines(app, &new.products).await?;
    let now = Utc::now();
    let shipping_status = if products.iter().any(|l| l.kind == ProductKind::Physical) {
        ShippingStatus::Pending
    } else {
        ShippingStatus::NotRequired
    };
    let mut purchase = Purchase {
        // UUIDv7: unique without coordination and sorted by creation time,
        // which the stores use to list newest first.
        purchase_id: uuid::Uuid::now_v7().to_string(),
        customer_id: new.customer_id,
        status: PurchaseStatus::Pending,
        products,
        currency,
        total_amount,
        payment_details: crate::model::PaymentDetails {
            method: new.payment_method,
            transaction_id: new.transaction_id,
        },
        payment_status: PaymentStatus::Pending,
        payment_reference: None,
        shipping_address: new.shipping_address,
        shipping_status,
        failure_reason: None,
        held_from: None,
        review_token: None,
        timeline: Vec::new(),
        rule_results: Vec::new(),
        version: 1,
        created_at: now,
        updated_at: now,
    };
    purchase.record("Create", "ACCEPTED", None);
    app.purchases.create_purchase(&purchase).await?;
    crate::metrics::record(
        crate::metrics::PurchaseEvent::Created,
        &purchase.purchase_id,
    );
    tracing::info!(purchase_id = %purchase.purchase_id, customer_id = %purchase.customer_id, "purchase created");
    if let Err(error) = app.workflow.start(&purchase.purchase_id).await {
        return Err(workflow_start_failed(app, &purchase.purchase_id, error).await);
    }
    let mut response = to_json(
        StatusCode::CREATED,
        &status_message(
            &purchase,
            "purchase accepted; availability check, payment and provisioning follow",
        ),
    )?;
    if let Ok(location) =
        HeaderValue::from_str(&format!("{BASE_PATH}/purchases/{}", purchase.purchase_id))
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// The purchase is stored but no workflow will run it: record that it
/// failed (nothing was reserved or charged, so nothing to compensate).
async fn workflow_start_failed(app: &App, purchase_id: &str, error: WorkflowError) -> ApiError {
    let reason = error.to_string();
    let marked = modify_purchase(app.purchases.as_ref(), purchase_id, |p| {
        p.move_to(PurchaseStatus::Failed)?;
        p.failure_reason = Some(FailureReason::WorkflowStartFailed);
        p.payment_status = PaymentStatus::NotCharged;
        for line in &mut p.products {
            line.status = LineStatus::Cancelled;
        }
        p.record("StartWorkflow", "FAILED", Some(reason.clone()));
        Ok::<_, ApiError>(true)
    })
    .await;
    if let Err(mark_error) = marked {
        tracing::error!(purchase_id, %mark_error, "could not mark purchase whose workflow did not start");
    }
    match error {
        WorkflowError::Unavailable(reason) => ApiError::Unavailable {
            retry_after_seconds: 2,
            reason,
        },
        WorkflowError::Internal(cause) => ApiError::Internal(cause),
    }
}

/// `GET /purchases/{purchaseId}`
pub async fn get_purchase(app: &App, request: &ApiRequest) -> ApiResponse {
    respond(request, async {
        let caller = authenticate(app, request, Scope::Read).await?;
        let purchase = load_visible(app, &caller, path_id(request)?).await?;
        let mut response = to_json(StatusCode::OK, &PurchaseView::of(&purchase))?;
        response
            .headers_mut()
            .insert(header::ETAG, etag(purchase.version));
        Ok(response)
    })
    .await
}

pub(crate) fn etag(version: u64) -> HeaderValue {
    // Digits and quotes are always a valid header value.
    HeaderValue::try_from(format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// `If-Match: "7"` → Some(7). `*` or absent → None (no precondition).
pub(crate) fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    text.trim_start_matches("W/")
        .trim_matches('"')
        .parse::<u64>()
        .map(Some)
        .map_err(|_| ApiError::invalid("If-Match", "must be an ETag returned by GET, e.g. \"3\""))
}

/// `PUT /purchases/{purchaseId}`
pub async fn update_purchase(app: &App, request: &ApiRequest) -> ApiResponse {
    respond(request, async {
        let caller = authenticate(app, request, Scope::Write).await?;
        let id = path_id(request)?;
        let expected_version = if_match(&request.headers)?;
        let body: UpdatePurchaseRequest = parse_json_body(&request.headers, &request.body)?;
        let changes = body.validate()?;
        load_visible(app, &caller, id).await?;
        let repriced = match &changes.products {
            Some(requested) => Some(priced_lines(app, requested).await?),
            None => None,
        };
        let purchase = modify_purchase(app.purchases.as_ref(), id, |p| {
            if let Some(expected) = expected_version
                && p.version != expected
            {
                return Err(ApiError::PreconditionFailed(format!(
                    "purchase {} is at version {}, not {expected}; GET it again",
                    p.purchase_id, p.version
                )));
            }
            if p.status.is_terminal() {
                return Err(ApiError::Conflict(format!(
                    "purchase {} is {} and can no longer be changed",
                    p.purchase_id, p.status
                )));
            }
            if let Some((lines, currency, total)) = &repriced {
                if !matches!(p.status, PurchaseStatus::Pending | PurchaseStatus::OnHold)
                    || p.products.iter().any(|l| l.status != LineStatus::Pending)
                {
                    return Err(ApiError::Conflict(format!(
                        "purchase {} is {}: products can only change before stock is reserved",
                        p.purchase_id, p.status
                    )));
                }
                p.products = lines.clone();
                p.currency = currency.clone();
                p.total_amount = *total;
                p.shipping_status = if p.needs_shipping() {
                    ShippingStatus::Pending
                } else {
                    ShippingStatus::NotRequired
                };
            }
            if let Some(address) = &changes.shipping_address {
                if p.shipping_status == ShippingStatus::ReadyToShip {
                    return Err(ApiError::Conflict(format!(
                        "purchase {} is ready to ship; the address can no longer change",
                        p.purchase_id
                    )));
                }
                p.shipping_address = address.clone();
            }
            p.record(
                "Update",
                "APPLIED",
                Some(format!("by {}", caller.customer_id)),
            );
            Ok(true)
        })
        .await?;
        let mut response = to_json(
            StatusCode::OK,
            &status_message(&purchase, "purchase updated"),
        )?;
        response
            .headers_mut()
            .insert(header::ETAG, etag(purchase.version));
        Ok(response)
    })
    .await
}

/// `POST /purchases/{purchaseId}/cancel`
pub async fn cancel_purchase(app: &App, request: &ApiRequest) -> ApiResponse {
    respond(request, async {
        let caller = authenticate(app, request, Scope::Write).await?;
        idempotency::run_once(
            app.idempotency.as_ref(),
            Endpoint::CancelPurchase,
            &caller,
            request,
            || cancel(app, request, &caller),
        )
        .await
    })
    .await
}

async fn cancel(app: &App, request: &ApiRequest, caller: &Caller) -> Result<ApiResponse, ApiError> {
    let id = path_id(request)?;
    load_visible(app, caller, id).await?;
    let mut already = false;
    let purchase = modify_purchase(app.purchases.as_ref(), id, |p| {
        already = p.status == PurchaseStatus::Cancelled;
        if already {
            return Ok(false);
        }
        if p.status.is_terminal() {
            return Err(ApiError::Conflict(format!(
                "purchase {} is {} and can no longer be cancelled",
                p.purchase_id, p.status
            )));
        }
        p.move_to(PurchaseStatus::Cancelled)?;
        p.record(
            "Cancel",
            "REQUESTED",
            Some(format!("by {}", caller.customer_id)),
        );
        Ok(true)
    })
    .await?;
    // A held purchase's workflow is waiting for a review: tell it now
    // (again, on a repeated cancel, if the first notice did not get through).
    notify_waiting_workflow(app, &purchase).await?;
    let message = if already {
        "purchase was already cancelled"
    } else {
        "purchase cancelled; held stock is released and any captured payment refunded"
    };
    to_json(StatusCode::OK, &status_message(&purchase, message))
}

/// Hands a review decision (or a cancellation) to the workflow task waiting
/// on the purchase's review token, then forgets the token. If the workflow
/// service is unreachable the token stays, and repeating the request
/// delivers it.
async fn notify_waiting_workflow(app: &App, purchase: &Purchase) -> Result<(), ApiError> {
    let Some(token) = purchase.review_token.as_deref() else {
        return Ok(());
    };
    let sent = match review_decision(purchase) {
        Ok(output) => app.workflow.send_task_success(token, output).await,
        Err((error, cause)) => app.workflow.send_task_failure(token, error, &cause).await,
    };
    match sent {
        Ok(()) => {}
        Err(WorkflowError::Unavailable(reason)) => {
            return Err(ApiError::Unavailable {
                retry_after_seconds: 2,
                reason,
            });
        }
        // An unknown token means the task is gone (timed out, or already
        // told): nothing is waiting any more.
        Err(WorkflowError::Internal(reason)) => {
            tracing::warn!(purchase_id = %purchase.purchase_id, %reason, "review token not delivered");
        }
    }
    let token = token.to_owned();
    modify_purchase(app.purchases.as_ref(), &purchase.purchase_id, |p| {
        if p.review_token.as_deref() != Some(token.as_str()) {
            return Ok::<_, ApiError>(false);
        }
        p.review_token = None;
        Ok(true)
    })
    .await?;
    Ok(())
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewRequest {
    decision: Option<String>,
    reason: Option<String>,
}

/// `POST /purchases/{purchaseId}/review`: an admin approves (the workflow
/// continues where it was held) or rejects (it compensates) an `ON_HOLD` purchase.
pub async fn review_purchase(app: &App, request: &ApiRequest) -> ApiResponse {
    respond(request, async {
        let caller = authenticate(app, request, Scope::Admin).await?;
        let id = path_id(request)?;
        let body: ReviewRequest = parse_json_body(&request.headers, &request.body)?;
        let approve = match body.decision.as_deref() {
            Some("approve") => true,
            Some("reject") => false,
            Some(other) => {
                return Err(ApiError::invalid(
                    "decision",
                    format!("{other:?} is not \"approve\" or \"reject\""),
                ));
            }
            None => return Err(ApiError::invalid("decision", "is required")),
        };
        let reason = body.reason.unwrap_or_default();
        if reason.chars().count() > 500 {
            return Err(ApiError::invalid(
                "reason",
                "must be at most 500 characters",
            ));
        }
        load_visible(app, &caller, id).await?;
        let purchase = modify_purchase(app.purchases.as_ref(), id, |p| {
            if p.status != PurchaseStatus::OnHold {
                return Err(ApiError::Conflict(format!(
                    "purchase {} is {}; only ON_HOLD purchases can be reviewed",
                    p.purchase_id, p.status
                )));
            }
            if approve {
                let resume_at = p.held_from.take().unwrap_or(PurchaseStatus::Pending);
                p.move_to(resume_at)?;
            } else {
                p.move_to(PurchaseStatus::Rejected)?;
            }
            let outcome = if approve { "APPROVED" } else { "REJECTED" };
            p.record(
                "Review",
                outcome,
                Some(format!("by {}: {reason}", caller.customer_id)),
            );
            Ok(true)
        })
        .await?;
        notify_waiting_workflow(app, &purchase).await?;
        let message = if approve {
            "purchase approved; the workflow continues"
        } else {
            "purchase rejected; held stock is released and any captured payment refunded"
        };
        to_json(StatusCode::OK, &status_message(&purchase, message))
    })
    .await
}

/// `POST /purchases/{purchaseId}/apply-rules`
pub async fn apply_rules(app: &App, request: &ApiRequest) -> ApiResponse {
    respond(request, async {
        let caller = authenticate(app, request, Scope::Admin).await?;
        let id = path_id(request)?;
        let body: rules::ApplyRulesRequest = parse_json_body(&request.headers, &request.body)?;
        let rule_set = body.validate()?;
        let purchase = load_visible(app, &caller, id).await?;
        if purchase.status.is_terminal() {
            return Err(ApiError::Conflict(format!(
                "purchase {id} is {} and its rules can no longer change its outcome",
                purchase.status
            )));
        }
        let facts = rules::gather_facts(app.purchases.as_ref(), &rule_set, &purchase).await?;
        let evaluation = rule_set.evaluate(&purchase, &facts, &caller.customer_id);
        let purchase = modify_purchase(app.purchases.as_ref(), id, |p| {
            if p.status.is_terminal() {
                return Err(ApiError::Conflict(format!(
                    "purchase {} is {} and its rules can no longer change its outcome",
                    p.purchase_id, p.status
                )));
            }
            evaluation.apply_to(p, "ApplyRules")?;
            Ok(true)
        })
        .await?;
        to_json(
            StatusCode::OK,
            &status_message(&purchase, evaluation.message()),
        )
    })
    .await
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PurchaseList<'a> {
    purchases: Vec<PurchaseView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
}

pub const DEFAULT_PAGE_SIZE: usize = 20;
pub const MAX_PAGE_SIZE: usize = 100;

/// `GET /purchases?customerId=&status=&limit=&nextToken=`, newest first.
pub async fn list_purchases(app: &App, request: &ApiRequest) -> ApiResponse {
    respond(request, async {
        let caller = authenticate(app, request, Scope::Read).await?;
        let mut query = PurchaseQuery {
            limit: DEFAULT_PAGE_SIZE,
            ..PurchaseQuery::default()
        };
        for (key, value) in &request.query {
            match key.as_str() {
                "customerId" => {
                    if value.trim().is_empty()
                        || value.chars().count() > limits::MAX_CUSTOMER_ID_CHARS
                    {
                        return Err(ApiError::invalid(
                            "customerId",
                            format!("must be 1 to {} characters", limits::MAX_CUSTOMER_ID_CHARS),
                        ));
                    }
                    query.customer_id = Some(value.clone());
                }
                "status" => {
                    query.status = Some(PurchaseStatus::parse(value).ok_or_else(|| {
                        ApiError::invalid("status", format!("{value:?} is not a purchase status"))
                    })?)
                }
                "limit" => {
                    query.limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
                        .ok_or_else(|| {
                            ApiError::invalid(
                                "limit",
                                format!("must be a whole number from 1 to {MAX_PAGE_SIZE}"),
                            )
                        })?
                }
                "nextToken" => query.next_token = Some(decode_token(value)?),
                other => {
                    return Err(ApiError::invalid(
                        other,
                        "is not a supported query parameter",
                    ));
                }
            }
        }
        if !caller.has(Scope::Admin) {
            match &query.customer_id {
                Some(customer) if customer != &caller.customer_id => {
                    return Err(ApiError::Forbidden {
                        reason: format!(
                            "{} may not list purchases of {customer}",
                            caller.customer_id
                        ),
                    });
                }
                _ => query.customer_id = Some(caller.customer_id.clone()),
            }
        }
        let page = app.purchases.list_purchases(&query).await?;
        to_json(
            StatusCode::OK,
            &PurchaseList {
                purchases: page.purchases.iter().map(PurchaseView::of).collect(),
                next_token: page.next_token.as_deref().map(encode_token),
            },
        )
    })
    .await
}

/// Page tokens are store keys; hex keeps them URL-safe and opaque.
fn encode_token(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_token(token: &str) -> Result<String, ApiError> {
    let invalid = || ApiError::invalid("nextToken", "is not a token returned by a previous page");
    if !token.is_ascii() || !token.len().is_multiple_of(2) || token.len() > 1024 {
        return Err(invalid());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| invalid())?;
    String::from_utf8(bytes).map_err(|_| invalid())
}

/// The API's endpoints: one Lambda function each, and one route each on the
/// local server. `function_name` is the binary and function name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    CreatePurchase,
    ListPurchases,
    GetPurchase,
    UpdatePurchase,
    CancelPurchase,
    ApplyRules,
    ReviewPurchase,
    ListRuleSets,
    CreateRuleSet,
    GetRuleSet,
    UpdateRuleSet,
    DeleteRuleSet,
}

impl Endpoint {
    pub const ALL: [Endpoint; 12] = [
        Endpoint::CreatePurchase,
        Endpoint::ListPurchases,
        Endpoint::GetPurchase,
        Endpoint::UpdatePurchase,
        Endpoint::CancelPurchase,
        Endpoint::ApplyRules,
        Endpoint::ReviewPurchase,
        Endpoint::ListRuleSets,
        Endpoint::CreateRuleSet,
        Endpoint::GetRuleSet,
        Endpoint::UpdateRuleSet,
        Endpoint::DeleteRuleSet,
    ];

    pub fn function_name(self) -> &'static str {
        match self {
            Endpoint::CreatePurchase => "create-purchase",
            Endpoint::ListPurchases => "list-purchases",
            Endpoint::GetPurchase => "get-purchase",
            Endpoint::UpdatePurchase => "update-purchase",
            Endpoint::CancelPurchase => "cancel-purchase",
            Endpoint::ApplyRules => "apply-rules",
            Endpoint::ReviewPurchase => "review-purchase",
            Endpoint::ListRuleSets => "list-rule-sets",
            Endpoint::CreateRuleSet => "create-rule-set",
            Endpoint::GetRuleSet => "get-rule-set",
            Endpoint::UpdateRuleSet => "update-rule-set",
            Endpoint::DeleteRuleSet => "delete-rule-set",
        }
    }

    /// HTTP method and path below [`BASE_PATH`], as in `openapi.yaml`.
    pub fn route(self) -> (http::Method, &'static str) {
        use http::Method;
        match self {
            Endpoint::CreatePurchase => (Method::POST, "/purchases"),
            Endpoint::ListPurchases => (Method::GET, "/purchases"),
            Endpoint::GetPurchase => (Method::GET, "/purchases/{purchaseId}"),
            Endpoint::UpdatePurchase => (Method::PUT, "/purchases/{purchaseId}"),
            Endpoint::CancelPurchase => (Method::POST, "/purchases/{purchaseId}/cancel"),
            Endpoint::ApplyRules => (Method::POST, "/purchases/{purchaseId}/apply-rules"),
            Endpoint::ReviewPurchase => (Method::POST, "/purchases/{purchaseId}/review"),
            Endpoint::ListRuleSets => (Method::GET, "/rules"),
            Endpoint::CreateRuleSet => (Method::POST, "/rules"),
            Endpoint::GetRuleSet => (Method::GET, "/rules/{ruleSetName}"),
            Endpoint::UpdateRuleSet => (Method::PUT, "/rules/{ruleSetName}"),
            Endpoint::DeleteRuleSet => (Method::DELETE, "/rules/{ruleSetName}"),
        }
    }

    pub async fn handle(self, app: &App, request: &ApiRequest) -> ApiResponse {
        match self {
            Endpoint::CreatePurchase => create_purchase(app, request).await,
            Endpoint::ListPurchases => list_purchases(app, request).await,
            Endpoint::GetPurchase => get_purchase(app, request).await,
            Endpoint::UpdatePurchase => update_purchase(app, request).await,
            Endpoint::CancelPurchase => cancel_purchase(app, request).await,
            Endpoint::ApplyRules => apply_rules(app, request).await,
            Endpoint::ReviewPurchase => review_purchase(app, request).await,
            Endpoint::ListRuleSets => list_rule_sets(app, request).await,
            Endpoint::CreateRuleSet => create_rule_set(app, request).await,
            Endpoint::GetRuleSet => get_rule_set(app, request).await,
            Endpoint::UpdateRuleSet => update_rule_set(app, request).await,
            Endpoint::DeleteRuleSet => delete_rule_set(app, request).await,
        }
    }
}
