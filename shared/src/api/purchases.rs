//! The purchase endpoints. Each is *parse → authenticate → load → decide
//! (the lifecycle) → conditional write → effects → answer*; none sets a
//! status itself.

use chrono::Utc;
use http::{HeaderValue, StatusCode, header};

use super::app::App;
use super::body::parse_json_body;
use super::error::{ApiError, respond};
use super::idempotency::{self, location_of};
use super::request::{ApiRequest, ApiResponse};
use super::views::{PurchaseList, PurchaseView, StatusMessage, if_match, to_json, with_etag};
use crate::auth::{Caller, Scope};
use crate::domain::lifecycle::{self, Command, Effect};
use crate::domain::pricing::{PricedLines, RequestedLine, price_lines};
use crate::domain::purchase::{Purchase, PurchaseStatus};
use crate::domain::rules::{ApplyRulesRequest, RuleSet};
use crate::domain::validation::{
    CreatePurchaseRequest, ReviewRequest, UpdatePurchaseRequest, limits,
};
use crate::domain::{CustomerId, DomainError, ProductId, PurchaseId};
use crate::ports::store::{PurchaseQuery, StoreError};
use crate::ports::workflow::{Machine, Run, WorkflowError, WorkflowType};
use crate::service::{self, TransitionError};

/// How often a handler judges again when the purchase changed under it.
const JUDGE_ATTEMPTS: u32 = 8;

fn path_id(request: &ApiRequest) -> Result<PurchaseId, ApiError> {
    match request.purchase_id.as_deref() {
        Some(id) if !id.is_empty() && id.len() <= limits::MAX_ID_CHARS => Ok(PurchaseId::new(id)),
        _ => Err(ApiError::invalid("purchaseId", "must be a purchase id")),
    }
}

/// Loads a purchase the caller may see. Someone else's purchase answers 404,
/// exactly like a missing one, so ids cannot be probed.
async fn load_visible(app: &App, caller: &Caller, id: &PurchaseId) -> Result<Purchase, ApiError> {
    match app.purchases.get_purchase(id).await? {
        Some(purchase) if caller.may_access(purchase.customer_id.as_str()) => Ok(purchase),
        _ => Err(ApiError::NotFound(format!("purchase {id}"))),
    }
}

async fn priced(app: &App, requested: &[RequestedLine]) -> Result<PricedLines, ApiError> {
    let ids: Vec<ProductId> = requested.iter().map(|line| line.id.clone()).collect();
    let catalog = app.inventory.get_products(&ids).await?;
    Ok(price_lines(requested, &catalog)?)
}

/// Delivers what a parked workflow must hear about the change just written.
async fn notify(app: &App, transition: &service::Transition) -> Result<(), ApiError> {
    service::deliver_all(app.purchases.as_ref(), app.workflow.as_ref(), transition).await?;
    Ok(())
}

/// `POST /purchases`
pub async fn create_purchase(app: &App, request: &ApiRequest) -> ApiResponse {
    respond(request, async {
        let caller = app.authenticate(request, Scope::Write).await?;
        let fresh_id = PurchaseId::generate().to_string();
        idempotency::run_once(
            app.idempotency.as_ref(),
            "create-purchase",
            &caller,
            request,
            Some(fresh_id.clone()),
            |attempt| create(app, request, &caller, fresh_id, attempt),
        )
        .await
    })
    .await
}

/// What a create answers while its workflow is under way.
const ACCEPTED: &str = "purchase accepted; availability check, payment and provisioning follow";

async fn create(
    app: &App,
    request: &ApiRequest,
    caller: &Caller,
    fresh_id: String,
    attempt: idempotency::RequestAttempt,
) -> Result<ApiResponse, ApiError> {
    let body: CreatePurchaseRequest = parse_json_body(&request.headers, &request.body)?;
    let new = body.validate()?;
    if !caller.may_access(new.customer_id.as_str()) {
        return Err(ApiError::Forbidden {
            reason: format!(
                "{} may not buy for customer {}",
                caller.customer_id, new.customer_id
            ),
        });
    }
    let lines = priced(app, &new.products).await?;
    let id = PurchaseId::new(attempt.resource_id.clone().unwrap_or(fresh_id));
    let (purchase, effects) = lifecycle::create(
        id,
        new.customer_id,
        lines,
        new.payment,
        new.shipping_address,
        Utc::now(),
    );
    // The answer, should the workflow start, is recorded for the key in the
    // purchase's own write; an answer that turns out otherwise replaces it.
    let completion = attempt.completion(&accepted(&purchase, ACCEPTED)?);
    let purchase = match app
        .purchases
        .create_purchase(&purchase, completion.as_ref())
        .await
    {
        Ok(recorded) => {
            if let (true, Some(completion)) = (recorded, &completion) {
                attempt.recorded(completion);
            }
            // Starting the workflow is done below, for retries too.
            service::record_counts(&purchase.purchase_id, effects);
            tracing::info!(purchase_id = %purchase.purchase_id, customer_id = %purchase.customer_id, "purchase created");
            purchase
        }
        // A retry (same Idempotency-Key) of a create that stored the purchase
        // and then failed: continue with it.
        Err(StoreError::AlreadyExists(_)) => app
            .purchases
            .get_purchase(&purchase.purchase_id)
            .await?
            .ok_or_else(|| ApiError::Internal("purchase vanished after creation".into()))?,
        Err(other) => return Err(other.into()),
    };
    let purchase = start_workflow(app, purchase).await?;
    let message = match purchase.status {
        PurchaseStatus::Pending => ACCEPTED,
        _ => "purchase accepted earlier; its status says where it stands",
    };
    accepted(&purchase, message)
}

/// `201 Created` for `purchase`, with where to find it.
fn accepted(purchase: &Purchase, message: &str) -> Result<ApiResponse, ApiError> {
    let mut response = to_json(StatusCode::CREATED, &StatusMessage::of(purchase, message))?;
    if let Ok(location) = HeaderValue::from_str(&location_of(purchase.purchase_id.as_str())) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Starts the purchase's first run. A start that may or may not have
/// happened (throttling, a timeout) is never declared failed: the answer is
/// 503 and the purchase stays `PENDING` for the retry or the reconciler. A
/// definite refusal is checked against the execution (`STANDARD`) before the
/// purchase is marked `FAILED`; an `EXPRESS` one cannot be asked, and an
/// earlier run that did start finds the purchase failed at its first step.
async fn start_workflow(app: &App, purchase: Purchase) -> Result<Purchase, ApiError> {
    let id = purchase.purchase_id.clone();
    if !purchase.is_untouched() {
        return Ok(purchase); // the workflow has it already
    }
    let run = Run::current(&purchase);
    let error = match app.workflow.start(&run).await {
        Ok(()) => return Ok(purchase),
        Err(error) => error,
    };
    if let WorkflowError::Unavailable(_) = error {
        tracing::warn!(purchase_id = %id, %error, "workflow start uncertain; left to the retry or the reconciler");
        return Err(error.into());
    }
    let described = match app.workflow.workflow_type() {
        WorkflowType::Standard => app.workflow.describe(Machine::Purchase, &run).await,
        WorkflowType::Express => Ok(None),
    };
    match described {
        Ok(Some(_)) => return Ok(purchase), // it started after all
        Ok(None) => {}
        Err(describe_error) => {
            tracing::warn!(purchase_id = %id, %error, %describe_error, "workflow start failed and could not be checked; left to the reconciler");
            return Err(ApiError::Unavailable {
                retry_after_seconds: 2,
                reason: error.to_string(),
            });
        }
    }
    tracing::error!(purchase_id = %id, %error, "workflow did not start; the purchase fails");
    service::apply(app.purchases.as_ref(), &id, |_| Command::StartFailed).await?;
    Err(ApiError::Internal(format!(
        "workflow of purchase {id} did not start: {error}"
    )))
}

/// `GET /purchases/{purchaseId}`
pub async fn get_purchase(app: &App, request: &ApiRequest) -> ApiResponse {
    respond(request, async {
        let caller = app.authenticate(request, Scope::Read).await?;
        let purchase = load_visible(app, &caller, &path_id(request)?).await?;
        Ok(with_etag(
            to_json(StatusCode::OK, &PurchaseView::of(&purchase))?,
            purchase.version,
        ))
    })
    .await
}

/// `PUT /purchases/{purchaseId}`
pub async fn update_purchase(app: &App, request: &ApiRequest) -> ApiResponse {
    respond(request, async {
        let caller = app.authenticate(request, Scope::Write).await?;
        let id = path_id(request)?;
        let expected_version = if_match(&request.headers)?;
        let body: UpdatePurchaseRequest = parse_json_body(&request.headers, &request.body)?;
        let changes = body.validate()?;
        load_visible(app, &caller, &id).await?;
        let products = match &changes.products {
            Some(requested) => Some(priced(app, requested).await?),
            None => None,
        };
        let by = caller.customer_id.as_str();
        let mut attempt = 0;
        let transition = loop {
            attempt += 1;
            // The rules judge the new contents as they are made (invariant
            // 1); gathered outside the write, so a purchase that changed
            // meanwhile is judged again (`Stale`).
            let current = load_visible(app, &caller, &id).await?;
            let rules = Some(
                service::purchase_rules(app.purchases.as_ref(), app.rule_sets.as_ref(), &current)
                    .await?,
            );
            let result = service::transition(app.purchases.as_ref(), &id, |p| {
                if let Some(expected) = expected_version
                    && p.version != expected
                {
                    return Err(DomainError::Outdated {
                        id: p.purchase_id.clone(),
                        current: p.version,
                        expected,
                    });
                }
                lifecycle::decide(
                    p,
                    Command::Update {
                        products: products.as_ref(),
                        address: changes.shipping_address.as_ref(),
                        rules: rules.as_ref(),
                        by,
                    },
                    Utc::now(),
                )
            })
            .await;
            match result {
                Err(TransitionError::Domain(DomainError::Stale)) if attempt < JUDGE_ATTEMPTS => {}
                other => break other?,
            }
        };
        notify(app, &transition).await?;
        let purchase = &transition.purchase;
        let message = match purchase.status {
            PurchaseStatus::Rejected => "purchase updated; its rules rejected the new contents",
            PurchaseStatus::OnHold if transition.written => "purchase updated; it waits for review",
            _ => "purchase updated",
        };
        Ok(with_etag(
            to_json(StatusCode::OK, &StatusMessage::of(purchase, message))?,
            purchase.version,
        ))
    })
    .await
}

/// `POST /purchases/{purchaseId}/cancel`
pub async fn cancel_purchase(app: &App, request: &ApiRequest) -> ApiResponse {
    respond(request, async {
        let caller = app.authenticate(request, Scope::Write).await?;
        idempotency::run_once(
            app.idempotency.as_ref(),
            "cancel-purchase",
            &caller,
            request,
            None,
            |_| cancel(app, request, &caller),
        )
        .await
    })
    .await
}

async fn cancel(app: &App, request: &ApiRequest, caller: &Caller) -> Result<ApiResponse, ApiError> {
    let id = path_id(request)?;
    let before = load_visible(app, caller, &id).await?;
    let by = caller.customer_id.as_str();
    let transition =
        service::apply(app.purchases.as_ref(), &id, |_| Command::Cancel { by }).await?;
    notify(app, &transition).await?;
    let message = if before.status == PurchaseStatus::Cancelled || !transition.written {
        "purchase was already cancelled"
    } else {
        "purchase cancelled; anything delivered is taken back, held stock released and any captured payment refunded"
    };
    to_json(
        StatusCode::OK,
        &StatusMessage::of(&transition.purchase, message),
    )
}

/// `POST /purchases/{purchaseId}/review`: an admin approves (the workflow
/// continues where it was held) or rejects (it is undone) an `ON_HOLD` purchase.
pub async fn review_purchase(app: &App, request: &ApiRequest) -> ApiResponse {
    respond(request, async {
        let caller = app.authenticate(request, Scope::Admin).await?;
        idempotency::run_once(
            app.idempotency.as_ref(),
            "review-purchase",
            &caller,
            request,
            None,
            |_| review(app, request, &caller),
        )
        .await
    })
    .await
}

async fn review(app: &App, request: &ApiRequest, caller: &Caller) -> Result<ApiResponse, ApiError> {
    let id = path_id(request)?;
    let body: ReviewRequest = parse_json_body(&request.headers, &request.body)?;
    let decision = body.validate()?;
    load_visible(app, caller, &id).await?;
    let by = caller.customer_id.as_str();
    let transition = service::apply(app.purchases.as_ref(), &id, |_| Command::Review {
        approve: decision.approve,
        reason: &decision.reason,
        by,
    })
    .await?;
    notify(app, &transition).await?;
    let message = if decision.approve {
        "purchase approved; the workflow continues"
    } else {
        "purchase rejected; anything delivered is taken back, held stock released and any captured payment refunded"
    };
    to_json(
        StatusCode::OK,
        &StatusMessage::of(&transition.purchase, message),
    )
}

/// `POST /purchases/{purchaseId}/apply-rules`
pub async fn apply_rules(app: &App, request: &ApiRequest) -> ApiResponse {
    respond(request, async {
        let caller = app.authenticate(request, Scope::Admin).await?;
        let id = path_id(request)?;
        let body: ApplyRulesRequest = parse_json_body(&request.headers, &request.body)?;
        let requests = body.validate()?;
        let rules = RuleSet::from_requests(&requests, "rules", caller.customer_id.as_str())?;
        let mut attempt = 0;
        let (transition, message) = loop {
            attempt += 1;
            let current = load_visible(app, &caller, &id).await?;
            let facts = service::rule_facts(app.purchases.as_ref(), &rules, &current).await?;
            let judgement = rules.judge(&current, &facts, Utc::now());
            let result = service::apply(app.purchases.as_ref(), &id, |_| Command::ApplyRules {
                rules: &requests,
                judgement: &judgement,
            })
            .await;
            match result {
                Err(TransitionError::Domain(DomainError::Stale)) if attempt < JUDGE_ATTEMPTS => {}
                other => break (other?, judgement.message()),
            }
        };
        notify(app, &transition).await?;
        to_json(
            StatusCode::OK,
            &StatusMessage::of(&transition.purchase, message),
        )
    })
    .await
}

/// `POST /purchases/{purchaseId}/redrive`: an admin resumes a purchase that
/// `NEEDS_ATTENTION` at the undoing step that failed.
pub async fn redrive_purchase(app: &App, request: &ApiRequest) -> ApiResponse {
    respond(request, async {
        let caller = app.authenticate(request, Scope::Admin).await?;
        idempotency::run_once(
            app.idempotency.as_ref(),
            "redrive-purchase",
            &caller,
            request,
            None,
            |_| redrive(app, request, &caller),
        )
        .await
    })
    .await
}

async fn redrive(
    app: &App,
    request: &ApiRequest,
    caller: &Caller,
) -> Result<ApiResponse, ApiError> {
    let id = path_id(request)?;
    let before = load_visible(app, caller, &id).await?;
    let by = caller.customer_id.as_str();
    // An EXPRESS run cannot be redriven: a new run undoes the purchase.
    let new_run = app.workflow.workflow_type() == WorkflowType::Express;
    let transition = service::apply(app.purchases.as_ref(), &id, |_| Command::RequestRedrive {
        by,
        new_run,
    })
    .await?;
    for effect in &transition.effects {
        match effect {
            Effect::Redrive => {
                app.workflow
                    .redrive(&Run::current(&transition.purchase))
                    .await?
            }
            Effect::StartRun(number) => app.workflow.start(&Run::new(id.clone(), *number)).await?,
            _ => {}
        }
    }
    let step = before
        .attention
        .as_ref()
        .map(|a| a.failed_step.as_str())
        .unwrap_or("the failed step");
    to_json(
        StatusCode::OK,
        &StatusMessage::of(
            &transition.purchase,
            format!("redrive requested; {step} is tried again"),
        ),
    )
}

pub const DEFAULT_PAGE_SIZE: usize = 20;
pub const MAX_PAGE_SIZE: usize = 100;

/// `GET /purchases?customerId=&status=&order=&limit=&nextToken=`, newest
/// first unless `order=oldest`.
pub async fn list_purchases(app: &App, request: &ApiRequest) -> ApiResponse {
    respond(request, async {
        let caller = app.authenticate(request, Scope::Read).await?;
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
                    query.customer_id = Some(CustomerId::new(value.clone()));
                }
                "status" => {
                    query.status = Some(PurchaseStatus::parse(value).ok_or_else(|| {
                        ApiError::invalid("status", format!("{value:?} is not a purchase status"))
                    })?)
                }
                "order" => {
                    query.oldest_first = match value.as_str() {
                        "newest" => false,
                        "oldest" => true,
                        _ => {
                            return Err(ApiError::invalid(
                                "order",
                                "must be \"newest\" or \"oldest\"",
                            ));
                        }
                    }
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
                Some(customer) if customer.as_str() != caller.customer_id => {
                    return Err(ApiError::Forbidden {
                        reason: format!(
                            "{} may not list purchases of {customer}",
                            caller.customer_id
                        ),
                    });
                }
                _ => query.customer_id = Some(CustomerId::new(caller.customer_id.clone())),
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
