//! The status-by-status rules of every endpoint that changes or lists
//! purchases, one table per endpoint: each case puts a fresh purchase in a
//! status (a [`Gate`] stops its workflow before a chosen step, rules hold or
//! reject it, or it runs to its end), sends one request and expects one
//! status code. Every case runs; a failure lists each case that failed.
//!
//! Where purchases are put in each status:
//!
//! | status | how |
//! |---|---|
//! | `PENDING` | gate before `ReserveStock` |
//! | `ON_HOLD` (held from `PENDING`) | gate before `ReserveStock`, then a `manual-review` hold rule |
//! | `RESERVED` | gate before `CapturePayment` |
//! | `ON_HOLD` (held after reservation) | gate before `CapturePayment`, then the hold rule |
//! | `PAID` | gate before `ProvisionProducts` |
//! | `COMPLETED` / `READY_TO_SHIP` | a physical purchase run to its end |
//! | `COMPLETED` (digital) | a digital purchase run to its end |
//! | `CANCELLED` | gate before `ReserveStock`, then cancel |
//! | `REJECTED` | gate before `ReserveStock`, then a `manual-review` reject rule |
//! | `FAILED` | `tok_decline` run to its end |
//! | `NEEDS_ATTENTION` | a refused product's refund, with refunds down |

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::faults::{Outage, RefundOutage};
use common::*;
use reqwest::Method;
use serde_json::{Value, json};
use shared::steps::Step;
use tokio::sync::OnceCell;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Pending,
    OnHoldFromPending,
    Reserved,
    OnHoldAfterReservation,
    Paid,
    ReadyToShip,
    CompletedDigital,
    Cancelled,
    Rejected,
    Failed,
    NeedsAttention,
}

impl State {
    /// What GET must show once the purchase is set up.
    fn status(self) -> &'static str {
        match self {
            State::Pending => "PENDING",
            State::OnHoldFromPending | State::OnHoldAfterReservation => "ON_HOLD",
            State::Reserved => "RESERVED",
            State::Paid => "PAID",
            State::ReadyToShip | State::CompletedDigital => "COMPLETED",
            State::Cancelled => "CANCELLED",
            State::Rejected => "REJECTED",
            State::Failed => "FAILED",
            State::NeedsAttention => "NEEDS_ATTENTION",
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Who {
    Owner,
    Admin,
    /// Another customer.
    Stranger,
}

fn token(h: &Harness, who: Who) -> String {
    match who {
        Who::Owner => h.customer_token(CUSTOMER),
        Who::Admin => h.admin_token(),
        Who::Stranger => h.customer_token(OTHER_CUSTOMER),
    }
}

fn hold_rule() -> Value {
    json!({"rules": [{"id": "manual-review", "parameters": {"reason": "first order", "onViolation": "hold"}}]})
}

fn reject_rule() -> Value {
    json!({"rules": [{"id": "manual-review", "parameters": {"reason": "known fraud"}}]})
}

fn address(name: &str) -> Value {
    json!({"shippingAddress": {"name": name, "address": "2 Looking Glass Ln", "city": "Oxford", "country": "GB", "postalCode": "OX2 2BB"}})
}

/// One request's answer.
struct Answer {
    status: u16,
    body: Value,
    headers: reqwest::header::HeaderMap,
}

async fn call(
    h: &Harness,
    method: Method,
    path: &str,
    token: &str,
    body: Option<&Value>,
    headers: &[(&str, String)],
) -> Answer {
    let mut request = h
        .client
        .request(method, format!("{}{path}", h.base))
        .bearer_auth(token);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        body,
        headers,
    }
}

/// The orchestrators purchases are put in their statuses on, each started
/// on first use: one per gated step, and one without a gate whose refunds
/// are down (so a refund ends in `NEEDS_ATTENTION`; nothing else there
/// refunds).
#[derive(Default)]
struct World {
    before_reserve: OnceCell<(Harness, Arc<Gate>)>,
    before_capture: OnceCell<(Harness, Arc<Gate>)>,
    before_provision: OnceCell<(Harness, Arc<Gate>)>,
    running: OnceCell<Harness>,
}

impl World {
    async fn gated(cell: &OnceCell<(Harness, Arc<Gate>)>, step: Step) -> &(Harness, Arc<Gate>) {
        cell.get_or_init(|| async move {
            let gate = Gate::new(step);
            let h = Harness::start_with(Setup {
                hook: Some(gate.clone()),
                ..Setup::default()
            })
            .await;
            (h, gate)
        })
        .await
    }

    async fn running(&self) -> &Harness {
        self.running
            .get_or_init(|| async {
                let outage = Arc::new(Outage::default());
                outage.start();
                Harness::start_with(Setup {
                    payments: Some(RefundOutage::layer(outage)),
                    ..Setup::default()
                })
                .await
            })
            .await
    }

    /// A new purchase of Alice's (one mug, so it ships) parked before `step`.
    /// Purchases on one gated orchestrator are made one at a time, so each
    /// `reached` is this purchase's.
    async fn parked(&self, step: Step) -> (&Harness, String) {
        let cell = match step {
            Step::ReserveStock => &self.before_reserve,
            Step::CapturePayment => &self.before_capture,
            Step::ProvisionProducts => &self.before_provision,
            other => unreachable!("no gate before {other:?}"),
        };
        let (h, gate) = World::gated(cell, step).await;
        let id = h.create_ok(&purchase_body(&[("mug", 1)], "tok_visa")).await;
        gate.reached().await;
        (h, id)
    }

    async fn finished(&self, products: &[(&str, u32)], payment: &str) -> (&Harness, String) {
        let h = self.running().await;
        let id = h.create_ok(&purchase_body(products, payment)).await;
        (h, id)
    }

    /// A new purchase in `state`, checked to be there.
    async fn purchase(&self, state: State) -> (&Harness, String) {
        let (h, id) = match state {
            State::Pending | State::OnHoldFromPending | State::Cancelled | State::Rejected => {
                self.parked(Step::ReserveStock).await
            }
            State::Reserved | State::OnHoldAfterReservation => {
                self.parked(Step::CapturePayment).await
            }
            State::Paid => self.parked(Step::ProvisionProducts).await,
            State::ReadyToShip => self.finished(&[("mug", 1)], "tok_visa").await,
            State::CompletedDigital => self.finished(&[("ebook", 1)], "tok_visa").await,
            State::Failed => self.finished(&[("mug", 1)], "tok_decline").await,
            State::NeedsAttention => {
                self.finished(&[("fail-provision-key", 1)], "tok_visa")
                    .await
            }
        };
        let admin = h.admin_token();
        let rules = format!("/purchases/{id}/apply-rules");
        match state {
            State::OnHoldFromPending | State::OnHoldAfterReservation => {
                let answer = call(h, Method::POST, &rules, &admin, Some(&hold_rule()), &[]).await;
                assert_eq!(answer.status, 200, "hold {state:?}: {}", answer.body);
            }
            State::Rejected => {
                let answer = call(h, Method::POST, &rules, &admin, Some(&reject_rule()), &[]).await;
                assert_eq!(answer.status, 200, "reject {state:?}: {}", answer.body);
            }
            State::Cancelled => {
                let (status, body) = h.cancel(&id).await;
                assert_eq!(status, 200, "cancel {state:?}: {body}");
            }
            _ => {}
        }
        let p = match state {
            State::ReadyToShip | State::CompletedDigital | State::Failed => h.wait_final(&id).await,
            State::NeedsAttention => {
                let p = h
                    .wait_until(&id, |p| p["status"] == "NEEDS_ATTENTION")
                    .await;
                // The execution fails just after the purchase says so: only
                // then is there something to redrive.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
                while h
                    .system
                    .workflow
                    .checkpoint(&id)
                    .unwrap()
                    .is_none_or(|c| c.status != asl::ExecutionStatus::Failed)
                {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "{id}'s execution never failed"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                p
            }
            _ => h.get(&id).await,
        };
        assert_eq!(p["status"], state.status(), "setting up {state:?}: {p:#}");
        match state {
            State::ReadyToShip => assert_eq!(p["shippingStatus"], "READY_TO_SHIP", "{p:#}"),
            State::Failed => assert_eq!(p["failureReason"], "PAYMENT_DECLINED", "{p:#}"),
            State::OnHoldAfterReservation => {
                assert_eq!(line_statuses(&p), ["RESERVED"], "{p:#}")
            }
            State::OnHoldFromPending => assert_eq!(line_statuses(&p), ["PENDING"], "{p:#}"),
            _ => {}
        }
        (h, id)
    }
}

/// Asserts every case passed, listing the ones that did not.
fn verdict(table: &str, cases: usize, failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{table}: {} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[derive(Clone, Copy, Debug)]
enum Change {
    Products,
    Address,
}

#[derive(Clone, Copy, Debug)]
enum Tag {
    Absent,
    /// `*`: no precondition.
    Any,
    /// `"<current version>"`
    Current,
    /// `W/"<current version>"`
    WeakCurrent,
    /// `"<current version - 1>"`
    Stale,
    /// `W/"<current version - 1>"`
    WeakStale,
    /// `"abc"`
    Malformed,
}

impl Tag {
    fn header(self, version: u64) -> Option<String> {
        match self {
            Tag::Absent => None,
            Tag::Any => Some("*".into()),
            Tag::Current => Some(format!("\"{version}\"")),
            Tag::WeakCurrent => Some(format!("W/\"{version}\"")),
            Tag::Stale => Some(format!("\"{}\"", version - 1)),
            Tag::WeakStale => Some(format!("W/\"{}\"", version - 1)),
            Tag::Malformed => Some("\"abc\"".into()),
        }
    }
}

/// `PUT /purchases/{id}`: products only while no line holds stock, the
/// address until the purchase ships or ends; `If-Match` as RFC 9110 says;
/// an admin may act for the customer, another customer sees nothing.
#[tokio::test]
async fn put_follows_the_status_matrix() {
    use Change::*;
    use State::*;
    use Tag::*;
    use Who::*;
    let table: Vec<(State, Change, Who, Tag, u16)> = vec![
        // Products: only before any line holds stock.
        (Pending, Products, Owner, Absent, 200),
        (OnHoldFromPending, Products, Owner, Absent, 200),
        (Reserved, Products, Owner, Absent, 409),
        (OnHoldAfterReservation, Products, Owner, Absent, 409),
        (Paid, Products, Owner, Absent, 409),
        (ReadyToShip, Products, Owner, Absent, 409),
        (CompletedDigital, Products, Owner, Absent, 409),
        (Cancelled, Products, Owner, Absent, 409),
        (Rejected, Products, Owner, Absent, 409),
        (Failed, Products, Owner, Absent, 409),
        (NeedsAttention, Products, Owner, Absent, 409),
        // The address: until ready to ship, never once decided.
        (Pending, Address, Owner, Absent, 200),
        (OnHoldFromPending, Address, Owner, Absent, 200),
        (Reserved, Address, Owner, Absent, 200),
        (OnHoldAfterReservation, Address, Owner, Absent, 200),
        (Paid, Address, Owner, Absent, 200),
        (ReadyToShip, Address, Owner, Absent, 409),
        (CompletedDigital, Address, Owner, Absent, 409),
        (Cancelled, Address, Owner, Absent, 409),
        (Rejected, Address, Owner, Absent, 409),
        (Failed, Address, Owner, Absent, 409),
        (NeedsAttention, Address, Owner, Absent, 409),
        // If-Match.
        (Reserved, Address, Owner, Any, 200),
        (Reserved, Address, Owner, Current, 200),
        (Reserved, Address, Owner, WeakCurrent, 200),
        (OnHoldAfterReservation, Address, Owner, WeakCurrent, 200),
        (Reserved, Address, Owner, Stale, 412),
        (Reserved, Address, Owner, WeakStale, 412),
        (Reserved, Address, Owner, Malformed, 400),
        (Pending, Products, Owner, Stale, 412),
        (Pending, Products, Owner, Malformed, 400),
        // Who.
        (Pending, Products, Admin, Absent, 200),
        (Paid, Address, Admin, Current, 200),
        (Pending, Address, Stranger, Absent, 404),
        (Pending, Products, Stranger, Absent, 404),
        (ReadyToShip, Address, Stranger, Absent, 404),
        (Reserved, Address, Stranger, Stale, 404),
    ];
    let world = World::default();
    let mut failures = Vec::new();
    for (n, (state, change, who, tag, expected)) in table.iter().copied().enumerate() {
        let (h, id) = world.purchase(state).await;
        let before = h.get(&id).await;
        let version = before["version"].as_u64().unwrap();
        let if_match = tag.header(version);
        let name = format!("case {n}");
        let body = match change {
            Products => json!({"products": [{"id": "ebook", "quantity": 2}]}),
            Address => address(&name),
        };
        let headers: Vec<(&str, String)> =
            if_match.iter().map(|v| ("if-match", v.clone())).collect();
        let answer = call(
            h,
            Method::PUT,
            &format!("/purchases/{id}"),
            &token(h, who),
            Some(&body),
            &headers,
        )
        .await;
        let after = h.get(&id).await;
        let label = format!(
            "case {n}: PUT {change:?} on {state:?} (v{version}) by {who:?}, If-Match {}",
            if_match.as_deref().unwrap_or("absent")
        );
        let mut problems = Vec::new();
        if answer.status != expected {
            problems.push(format!("answered {} (expected {expected})", answer.status));
        }
        if answer.status == 200 {
            // Applied, as one version step, with the new ETag.
            if after["version"].as_u64() != Some(version + 1) {
                problems.push(format!(
                    "version {} after a 200 from {version}",
                    after["version"]
                ));
            }
            let etag = answer.headers.get("etag").and_then(|v| v.to_str().ok());
            if etag != Some(format!("\"{}\"", version + 1).as_str()) {
                problems.push(format!("ETag {etag:?}"));
            }
            let applied = match change {
                Products => {
                    after["products"][0]["id"] == "ebook" && after["products"][0]["quantity"] == 2
                }
                Address => after["shippingAddress"]["name"] == name.as_str(),
            };
            if !applied {
                problems.push("the change is not visible on GET".into());
            }
        } else {
            // Refused: nothing changed, and the refusal says why.
            if after["version"] != before["version"]
                || after["products"] != before["products"]
                || after["shippingAddress"] != before["shippingAddress"]
            {
                problems.push("a refused PUT changed the purchase".into());
            }
            let message = answer.body["message"].as_str().unwrap_or_default();
            let explains = match answer.status {
                400 => answer.body["details"][0]["field"] == "If-Match",
                409 => message.contains(state.status()) || message.contains("ready to ship"),
                412 => message.contains(&version.to_string()),
                404 => answer.body["error"] == "NOT_FOUND",
                _ => true,
            };
            if !explains {
                problems.push("the answer does not say why".into());
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{label}: {}; answer {}",
                problems.join(", "),
                answer.body
            ));
        }
    }
    verdict("PUT /purchases/{id}", table.len(), failures);
}

enum Listed {
    /// 200 with exactly these purchases (names given at creation), in order.
    Ids(&'static [&'static str]),
    /// An error status; for a 400, the field it names.
    Error(u16, Option<&'static str>),
}

/// `GET /purchases`: customers list their own (asking for someone else's
/// is a 403), admins anyone's; newest first unless `order=oldest`.
#[tokio::test]
async fn list_follows_the_caller_and_order_matrix() {
    use Listed::*;
    use Who::*;
    let h = Harness::start().await;
    // Alice and Bob buy in turn: a1, b1, a2, b2, a3.
    let mut names: HashMap<String, &str> = HashMap::new();
    for (name, customer) in [
        ("a1", CUSTOMER),
        ("b1", OTHER_CUSTOMER),
        ("a2", CUSTOMER),
        ("b2", OTHER_CUSTOMER),
        ("a3", CUSTOMER),
    ] {
        let mut body = purchase_body(&[("ebook", 1)], "tok_visa");
        body["customerId"] = json!(customer);
        let (status, answer) = h.create(customer, &body).await;
        assert_eq!(status, 201, "{answer}");
        names.insert(answer["purchaseId"].as_str().unwrap().to_owned(), name);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let alice = format!("customerId={CUSTOMER}");
    let bob = format!("customerId={OTHER_CUSTOMER}");
    let table: Vec<(Who, String, Listed)> = vec![
        (Owner, String::new(), Ids(&["a3", "a2", "a1"])),
        (Owner, alice.clone(), Ids(&["a3", "a2", "a1"])),
        (Owner, bob.clone(), Error(403, None)),
        (Stranger, alice.clone(), Error(403, None)),
        (Stranger, String::new(), Ids(&["b2", "b1"])),
        (Admin, alice.clone(), Ids(&["a3", "a2", "a1"])),
        (Admin, bob.clone(), Ids(&["b2", "b1"])),
        (Admin, String::new(), Ids(&["a3", "b2", "a2", "b1", "a1"])),
        (Owner, "order=newest".into(), Ids(&["a3", "a2", "a1"])),
        (Owner, "order=oldest".into(), Ids(&["a1", "a2", "a3"])),
        (Stranger, "order=oldest".into(), Ids(&["b1", "b2"])),
        (
            Admin,
            "order=oldest".into(),
            Ids(&["a1", "b1", "a2", "b2", "a3"]),
        ),
        (Admin, format!("{bob}&order=oldest"), Ids(&["b1", "b2"])),
        (
            Owner,
            format!("{alice}&order=oldest&limit=2"),
            Ids(&["a1", "a2"]),
        ),
        (Owner, "order=sideways".into(), Error(400, Some("order"))),
        (Owner, "order=".into(), Error(400, Some("order"))),
        (Admin, "order=sideways".into(), Error(400, Some("order"))),
    ];
    let mut failures = Vec::new();
    for (n, (who, query, expected)) in table.iter().enumerate() {
        let path = format!("/purchases?{query}");
        let answer = call(&h, Method::GET, &path, &token(&h, *who), None, &[]).await;
        let label = format!("case {n}: GET {path} by {who:?}");
        match expected {
            Ids(wanted) => {
                let got: Vec<&str> = answer.body["purchases"]
                    .as_array()
                    .map(|list| {
                        list.iter()
                            .map(|p| {
                                names
                                    .get(p["purchaseId"].as_str().unwrap_or(""))
                                    .copied()
                                    .unwrap_or("?")
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if answer.status != 200 || got != *wanted {
                    failures.push(format!(
                        "{label}: answered {} with {got:?} (expected 200 with {wanted:?}): {}",
                        answer.status, answer.body
                    ));
                }
            }
            Error(status, field) => {
                let named = field.is_none_or(|f| answer.body["details"][0]["field"] == f);
                if answer.status != *status || !named {
                    failures.push(format!(
                        "{label}: answered {} (expected {status} naming {field:?}): {}",
                        answer.status, answer.body
                    ));
                }
            }
        }
    }
    verdict("GET /purchases", table.len(), failures);
}

/// `/rules`: at most 100 rule sets, a PUT cannot rename one, and deleting
/// `default` leaves the workflow's EvaluateRules nothing to run. Cases run
/// in order: each starts where the previous left the rule sets.
#[tokio::test]
async fn rule_sets_follow_their_limits() {
    let h = Harness::start().await;
    let admin = h.admin_token();
    let rules = json!([{"id": "blocked-countries", "parameters": {"countries": ["KP"]}}]);
    let set = |name: &str| json!({"name": name, "rules": rules});
    // (what, method, path, body, If-Match, expected status, field a 400 names)
    type Case = (
        String,
        Method,
        String,
        Option<Value>,
        Option<&'static str>,
        u16,
        Option<&'static str>,
    );
    let mut table: Vec<Case> = vec![(
        "create default".into(),
        Method::POST,
        "/rules".into(),
        Some(set("default")),
        None,
        201,
        None,
    )];
    for n in 2..=100 {
        table.push((
            format!("create rule set {n} of 100"),
            Method::POST,
            "/rules".into(),
            Some(set(&format!("set-{n}"))),
            None,
            201,
            None,
        ));
    }
    table.extend([
        (
            "the 101st rule set".into(),
            Method::POST,
            "/rules".into(),
            Some(set("set-101")),
            None,
            409,
            None,
        ),
        (
            "PUT renaming set-2 to set-3".into(),
            Method::PUT,
            "/rules/set-2".into(),
            Some(set("set-3")),
            None,
            400,
            Some("name"),
        ),
        (
            "PUT renaming default".into(),
            Method::PUT,
            "/rules/default".into(),
            Some(set("other")),
            None,
            400,
            Some("name"),
        ),
        (
            "PUT set-2 under its own name".into(),
            Method::PUT,
            "/rules/set-2".into(),
            Some(set("set-2")),
            None,
            200,
            None,
        ),
        (
            "PUT set-2 without a name".into(),
            Method::PUT,
            "/rules/set-2".into(),
            Some(json!({"rules": rules})),
            None,
            200,
            None,
        ),
        (
            "PUT set-2 with a stale If-Match".into(),
            Method::PUT,
            "/rules/set-2".into(),
            Some(json!({"rules": rules})),
            Some("\"1\""),
            412,
            None,
        ),
        (
            "PUT set-2 with If-Match W/\"3\"".into(),
            Method::PUT,
            "/rules/set-2".into(),
            Some(json!({"rules": rules})),
            Some("W/\"3\""),
            200,
            None,
        ),
        (
            "DELETE default".into(),
            Method::DELETE,
            "/rules/default".into(),
            None,
            None,
            204,
            None,
        ),
        (
            "GET default once deleted".into(),
            Method::GET,
            "/rules/default".into(),
            None,
            None,
            404,
            None,
        ),
        (
            "DELETE default again".into(),
            Method::DELETE,
            "/rules/default".into(),
            None,
            None,
            404,
            None,
        ),
        (
            "the 100th rule set, after a delete".into(),
            Method::POST,
            "/rules".into(),
            Some(set("set-101")),
            None,
            201,
            None,
        ),
    ]);
    let mut failures = Vec::new();
    for (n, (what, method, path, body, if_match, expected, field)) in table.iter().enumerate() {
        if n == 1 {
            // With `default` stored, EvaluateRules judges every new
            // purchase: the control for the check after its deletion.
            let p = judge_after(&h).await;
            if p["ruleResults"].as_array().map(Vec::len) != Some(1) || !ran_evaluate_rules(&p) {
                failures.push(format!(
                    "control: with default stored, EvaluateRules did not judge the purchase: {p:#}"
                ));
            }
        }
        let headers: Vec<(&str, String)> = if_match
            .iter()
            .map(|v| ("if-match", v.to_string()))
            .collect();
        let answer = call(&h, method.clone(), path, &admin, body.as_ref(), &headers).await;
        let named = field.is_none_or(|f| answer.body["details"][0]["field"] == f);
        if answer.status != *expected || !named {
            failures.push(format!(
                "case {n}: {what} ({method} {path}): answered {} (expected {expected}{}): {}",
                answer.status,
                field.map(|f| format!(" naming {f}")).unwrap_or_default(),
                answer.body
            ));
        }
    }
    let listed = call(&h, Method::GET, "/rules", &admin, None, &[]).await;
    let count = listed.body["ruleSets"].as_array().map(Vec::len);
    if count != Some(100) {
        failures.push(format!(
            "GET /rules lists {count:?} rule sets, expected 100"
        ));
    }
    // `default` is gone: EvaluateRules runs no rules.
    let p = judge_after(&h).await;
    if p["ruleResults"].as_array().map(Vec::len) != Some(0) || ran_evaluate_rules(&p) {
        failures.push(format!(
            "with default deleted, EvaluateRules still judged the purchase: {p:#}"
        ));
    }
    verdict("/rules", table.len() + 3, failures);
}

/// A new purchase run to its end.
async fn judge_after(h: &Harness) -> Value {
    let id = h
        .create_ok(&purchase_body(&[("ebook", 1)], "tok_visa"))
        .await;
    let p = h.wait_final(&id).await;
    assert_eq!(p["status"], "COMPLETED", "{p:#}");
    p
}

fn ran_evaluate_rules(p: &Value) -> bool {
    p["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["step"] == "EvaluateRules")
}

/// Which purchase a case acts on.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// A new purchase in this status.
    Fresh(State),
    /// The purchase of an earlier case (by its index).
    SameAs(usize),
}

/// `POST /purchases/{id}/cancel`: allowed until the purchase is decided
/// (cancelling a cancelled one is an idempotent 200); an `Idempotency-Key`
/// replays the same request and refuses another (422).
#[tokio::test]
async fn cancel_follows_the_status_matrix_and_its_idempotency_key() {
    use State::*;
    use Target::*;
    // (target, Idempotency-Key, body, expected status, expect a replay)
    type Case = (Target, Option<&'static str>, Option<Value>, u16, bool);
    let table: Vec<Case> = vec![
        (Fresh(Pending), None, None, 200, false),
        (Fresh(OnHoldFromPending), None, None, 200, false),
        (Fresh(Reserved), None, None, 200, false),
        (Fresh(OnHoldAfterReservation), None, None, 200, false),
        (Fresh(Paid), None, None, 200, false),
        (Fresh(Cancelled), None, None, 200, false),
        (Fresh(ReadyToShip), None, None, 409, false),
        (Fresh(CompletedDigital), None, None, 409, false),
        (Fresh(Rejected), None, None, 409, false),
        (Fresh(Failed), None, None, 409, false),
        (Fresh(NeedsAttention), None, None, 409, false),
        // Idempotency-Key: the same request is replayed, another is a 422.
        (Fresh(Reserved), Some("k-1"), None, 200, false), // case 11
        (SameAs(11), Some("k-1"), None, 200, true),
        (Fresh(Reserved), Some("k-1"), None, 422, false),
        (
            SameAs(11),
            Some("k-1"),
            Some(json!({"reason": "changed my mind"})),
            422,
            false,
        ),
        // A 409 is not final: it is not replayed, the retry runs again.
        (Fresh(ReadyToShip), Some("k-2"), None, 409, false), // case 15
        (SameAs(15), Some("k-2"), None, 409, false),
    ];
    let world = World::default();
    let mut targets: Vec<(&Harness, String)> = Vec::new();
    let mut failures = Vec::new();
    for (n, (target, key, body, expected, replay)) in table.iter().enumerate() {
        let (h, id) = match target {
            Fresh(state) => world.purchase(*state).await,
            SameAs(earlier) => targets[*earlier].clone(),
        };
        targets.push((h, id.clone()));
        let headers: Vec<(&str, String)> = key
            .iter()
            .map(|k| ("idempotency-key", k.to_string()))
            .collect();
        let before = h.get(&id).await;
        let answer = call(
            h,
            Method::POST,
            &format!("/purchases/{id}/cancel"),
            &h.customer_token(CUSTOMER),
            body.as_ref(),
            &headers,
        )
        .await;
        let after = h.get(&id).await;
        let replayed = answer
            .headers
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true");
        let label = format!(
            "case {n}: cancel {target:?} (was {}) with key {key:?}{}",
            before["status"],
            if body.is_some() { " and a body" } else { "" }
        );
        let mut problems = Vec::new();
        if answer.status != *expected {
            problems.push(format!("answered {} (expected {expected})", answer.status));
        }
        if replayed != *replay {
            problems.push(format!("replayed: {replayed} (expected {replay})"));
        }
        if answer.status == 200 && after["status"] != "CANCELLED" {
            problems.push(format!("status {} after a 200", after["status"]));
        }
        if answer.status != 200 && after["version"] != before["version"] {
            problems.push("a refused cancel changed the purchase".into());
        }
        if answer.status == 409
            && !answer.body["message"]
                .as_str()
                .unwrap_or_default()
                .contains(before["status"].as_str().unwrap_or("?"))
        {
            problems.push("the 409 does not say the status".into());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{label}: {}; answer {}",
                problems.join(", "),
                answer.body
            ));
        }
    }
    verdict("POST /purchases/{id}/cancel", table.len(), failures);
}

/// `POST /purchases/{id}/review`: only an `ON_HOLD` purchase is reviewed;
/// the decision is `approve` or `reject`, anything else a 400 naming it.
#[tokio::test]
async fn review_follows_the_status_matrix() {
    use State::*;
    use Who::*;
    let approve = json!({"decision": "approve", "reason": "checked"});
    let reject = json!({"decision": "reject", "reason": "fraud"});
    // (status, caller, body, expected status, status after a 200 / field a 400 names)
    let table: Vec<(State, Who, Value, u16, Option<&str>)> = vec![
        (
            OnHoldFromPending,
            Admin,
            approve.clone(),
            200,
            Some("PENDING"),
        ),
        (
            OnHoldAfterReservation,
            Admin,
            approve.clone(),
            200,
            Some("RESERVED"),
        ),
        (
            OnHoldAfterReservation,
            Admin,
            reject.clone(),
            200,
            Some("REJECTED"),
        ),
        (
            OnHoldFromPending,
            Admin,
            json!({"decision": "maybe"}),
            400,
            Some("decision"),
        ),
        (
            OnHoldFromPending,
            Admin,
            json!({"decision": "Approve"}),
            400,
            Some("decision"),
        ),
        (
            OnHoldFromPending,
            Admin,
            json!({"reason": "no decision"}),
            400,
            Some("decision"),
        ),
        (OnHoldFromPending, Owner, approve.clone(), 403, None),
        (Pending, Admin, approve.clone(), 409, None),
        (Reserved, Admin, approve.clone(), 409, None),
        (Paid, Admin, reject.clone(), 409, None),
        (ReadyToShip, Admin, approve.clone(), 409, None),
        (Cancelled, Admin, approve.clone(), 409, None),
        (Rejected, Admin, reject.clone(), 409, None),
        (Failed, Admin, approve.clone(), 409, None),
        (NeedsAttention, Admin, approve.clone(), 409, None),
    ];
    let world = World::default();
    let mut failures = Vec::new();
    for (n, (state, who, body, expected, detail)) in table.iter().enumerate() {
        let (h, id) = world.purchase(*state).await;
        let before = h.get(&id).await;
        let answer = call(
            h,
            Method::POST,
            &format!("/purchases/{id}/review"),
            &token(h, *who),
            Some(body),
            &[],
        )
        .await;
        let after = h.get(&id).await;
        let label = format!("case {n}: review {body} of {state:?} by {who:?}");
        let mut problems = Vec::new();
        if answer.status != *expected {
            problems.push(format!("answered {} (expected {expected})", answer.status));
        }
        match answer.status {
            200 if detail.is_some_and(|s| after["status"] != s) => {
                problems.push(format!(
                    "status {} after the review (expected {detail:?})",
                    after["status"]
                ));
            }
            400 if detail.is_some_and(|f| answer.body["details"][0]["field"] != f) => {
                problems.push(format!("the 400 does not name {detail:?}"));
            }
            409 if !answer.body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("ON_HOLD") =>
            {
                problems.push("the 409 does not say only ON_HOLD purchases are reviewed".into());
            }
            _ => {}
        }
        if answer.status != 200 && after["version"] != before["version"] {
            problems.push("a refused review changed the purchase".into());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{label}: {}; answer {}",
                problems.join(", "),
                answer.body
            ));
        }
    }
    verdict("POST /purchases/{id}/review", table.len(), failures);
}

/// `POST /purchases/{id}/redrive`: only a purchase that `NEEDS_ATTENTION`
/// has a failed step to run again.
#[tokio::test]
async fn redrive_follows_the_status_matrix() {
    use State::*;
    use Who::*;
    let table: Vec<(State, Who, u16)> = vec![
        (NeedsAttention, Admin, 200),
        (NeedsAttention, Owner, 403),
        (Pending, Admin, 409),
        (OnHoldFromPending, Admin, 409),
        (Reserved, Admin, 409),
        (Paid, Admin, 409),
        (ReadyToShip, Admin, 409),
        (CompletedDigital, Admin, 409),
        (Cancelled, Admin, 409),
        (Rejected, Admin, 409),
        (Failed, Admin, 409),
    ];
    let world = World::default();
    let mut failures = Vec::new();
    for (n, (state, who, expected)) in table.iter().enumerate() {
        let (h, id) = world.purchase(*state).await;
        let before = h.get(&id).await;
        let answer = call(
            h,
            Method::POST,
            &format!("/purchases/{id}/redrive"),
            &token(h, *who),
            None,
            &[],
        )
        .await;
        let label = format!("case {n}: redrive {state:?} by {who:?}");
        let mut problems = Vec::new();
        if answer.status != *expected {
            problems.push(format!("answered {} (expected {expected})", answer.status));
        }
        if answer.status == 200 && *expected == 200 {
            // The execution runs again from the failed step (refunds are
            // still down, so it ends up needing attention again).
            h.wait_until(&id, |p| {
                p["timeline"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["step"] == "Redrive" && e["outcome"] == "RESUMED")
            })
            .await;
        } else if answer.status != 200 {
            let after = h.get(&id).await;
            if after["version"] != before["version"] {
                problems.push("a refused redrive changed the purchase".into());
            }
            if answer.status == 409
                && !answer.body["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(state.status())
            {
                problems.push("the 409 does not say the status".into());
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{label}: {}; answer {}",
                problems.join(", "),
                answer.body
            ));
        }
    }
    verdict("POST /purchases/{id}/redrive", table.len(), failures);
}
