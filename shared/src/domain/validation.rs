//! Request bodies and their validation.
//!
//! Parsing happens in two passes so that a client gets every problem at once,
//! each named by its JSON path: serde first checks the shape (unknown fields,
//! wrong types; `api::body`), then `validate` checks the values. Nothing here
//! touches a store; checks that need the catalog live in
//! [`pricing`](super::pricing).

use std::collections::HashSet;

use serde::Deserialize;

use super::error::{DomainError, FieldProblem};
use super::ids::{CustomerId, ProductId};
use super::pricing::RequestedLine;
use super::purchase::{PaymentDetails, ShippingAddress};

/// Request size and shape limits. Documented in README and `openapi.yaml`.
pub mod limits {
    pub const MAX_BODY_BYTES: usize = 64 * 1024;
    pub const MAX_PRODUCTS: usize = 50;
    pub const MAX_QUANTITY: u32 = 1_000;
    pub const MAX_ID_CHARS: usize = 64;
    pub const MAX_CUSTOMER_ID_CHARS: usize = 128;
    pub const MAX_TRANSACTION_ID_CHARS: usize = 128;
    pub const MAX_METHOD_CHARS: usize = 32;
    pub const MAX_NAME_CHARS: usize = 200;
    pub const MAX_ADDRESS_CHARS: usize = 300;
    pub const MAX_CITY_CHARS: usize = 100;
    pub const MAX_POSTAL_CODE_CHARS: usize = 16;
    pub const MAX_REVIEW_REASON_CHARS: usize = 500;
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProductRequest {
    pub id: Option<String>,
    pub quantity: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PaymentDetailsRequest {
    pub method: Option<String>,
    pub transaction_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShippingAddressRequest {
    pub name: Option<String>,
    pub address: Option<String>,
    pub city: Option<String>,
    pub country: Option<String>,
    pub postal_code: Option<String>,
}

/// `POST /purchases` body as received.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreatePurchaseRequest {
    pub customer_id: Option<String>,
    pub products: Option<Vec<ProductRequest>>,
    pub payment_details: Option<PaymentDetailsRequest>,
    pub shipping_address: Option<ShippingAddressRequest>,
}

/// `PUT /purchases/{purchaseId}` body as received.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdatePurchaseRequest {
    pub products: Option<Vec<ProductRequest>>,
    pub shipping_address: Option<ShippingAddressRequest>,
}

/// `POST /purchases/{purchaseId}/review` body as received.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
    pub decision: Option<String>,
    pub reason: Option<String>,
}

/// A create request whose every field is present and well-formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPurchase {
    pub customer_id: CustomerId,
    pub products: Vec<RequestedLine>,
    pub payment: PaymentDetails,
    pub shipping_address: ShippingAddress,
}

/// An update request: at least one of the two parts is present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseChanges {
    pub products: Option<Vec<RequestedLine>>,
    pub shipping_address: Option<ShippingAddress>,
}

/// A review decision with its (possibly empty) reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewDecision {
    pub approve: bool,
    pub reason: String,
}

impl ReviewRequest {
    pub fn validate(&self) -> Result<ReviewDecision, DomainError> {
        let approve = match self.decision.as_deref() {
            Some("approve") => true,
            Some("reject") => false,
            Some(other) => {
                return Err(DomainError::invalid(
                    "decision",
                    format!("{other:?} is not \"approve\" or \"reject\""),
                ));
            }
            None => return Err(DomainError::invalid("decision", "is required")),
        };
        let reason = self.reason.clone().unwrap_or_default();
        if reason.chars().count() > limits::MAX_REVIEW_REASON_CHARS {
            return Err(DomainError::invalid(
                "reason",
                format!(
                    "must be at most {} characters",
                    limits::MAX_REVIEW_REASON_CHARS
                ),
            ));
        }
        if reason.chars().any(char::is_control) {
            return Err(DomainError::invalid(
                "reason",
                "must not contain control characters",
            ));
        }
        Ok(ReviewDecision { approve, reason })
    }
}

/// Collects problems so a request is answered with all of them at once.
#[derive(Default)]
struct Problems(Vec<FieldProblem>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, problem: impl Into<String>) {
        self.0.push(FieldProblem::new(field, problem));
    }

    /// A required, non-blank string of at most `max` characters.
    fn text(&mut self, field: &str, value: Option<&String>, max: usize) -> String {
        match value.map(|v| v.trim()) {
            None => {
                self.add(field, "is required");
                String::new()
            }
            Some("") => {
                self.add(field, "must not be blank");
                String::new()
            }
            Some(v) if v.chars().count() > max => {
                self.add(field, format!("must be at most {max} characters"));
                String::new()
            }
            Some(v) if v.chars().any(char::is_control) => {
                self.add(field, "must not contain control characters");
                String::new()
            }
            Some(v) => v.to_owned(),
        }
    }

    fn finish<T>(self, value: T) -> Result<T, DomainError> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(DomainError::Invalid(self.0))
        }
    }
}

fn validate_products(
    problems: &mut Problems,
    products: Option<&Vec<ProductRequest>>,
) -> Vec<RequestedLine> {
    let Some(products) = products else {
        problems.add("products", "is required");
        return Vec::new();
    };
    if products.is_empty() {
        problems.add("products", "must contain at least one product");
    }
    if products.len() > limits::MAX_PRODUCTS {
        problems.add(
            "products",
            format!("must contain at most {} products", limits::MAX_PRODUCTS),
        );
        return Vec::new();
    }
    let mut seen = HashSet::new();
    let mut lines = Vec::with_capacity(products.len());
    for (index, product) in products.iter().enumerate() {
        let id_field = format!("products[{index}].id");
        let id = problems.text(&id_field, product.id.as_ref(), limits::MAX_ID_CHARS);
        if !id.is_empty() && !seen.insert(id.clone()) {
            problems.add(
                &id_field,
                format!("duplicate product id {id:?}; combine the quantities"),
            );
        }
        let quantity_field = format!("products[{index}].quantity");
        let quantity = match product.quantity {
            None => {
                problems.add(&quantity_field, "is required");
                0
            }
            Some(q) if q < 1 => {
                problems.add(&quantity_field, "must be at least 1");
                0
            }
            Some(q) if q > i64::from(limits::MAX_QUANTITY) => {
                problems.add(
                    &quantity_field,
                    format!("must be at most {}", limits::MAX_QUANTITY),
                );
                0
            }
            Some(q) => q as u32,
        };
        lines.push(RequestedLine {
            id: ProductId::new(id),
            quantity,
        });
    }
    lines
}

fn validate_address(
    problems: &mut Problems,
    address: Option<&ShippingAddressRequest>,
) -> ShippingAddress {
    let Some(address) = address else {
        problems.add("shippingAddress", "is required");
        return ShippingAddress {
            name: String::new(),
            address: String::new(),
            city: String::new(),
            country: String::new(),
            postal_code: String::new(),
        };
    };
    let name = problems.text(
        "shippingAddress.name",
        address.name.as_ref(),
        limits::MAX_NAME_CHARS,
    );
    let street = problems.text(
        "shippingAddress.address",
        address.address.as_ref(),
        limits::MAX_ADDRESS_CHARS,
    );
    let city = problems.text(
        "shippingAddress.city",
        address.city.as_ref(),
        limits::MAX_CITY_CHARS,
    );
    let country = problems.text("shippingAddress.country", address.country.as_ref(), 2);
    if !country.is_empty() && !is_iso_country(&country) {
        problems.add(
            "shippingAddress.country",
            format!("{country:?} is not an ISO 3166-1 alpha-2 country code (e.g. \"DE\", \"US\")"),
        );
    }
    let postal_code = problems.text(
        "shippingAddress.postalCode",
        address.postal_code.as_ref(),
        limits::MAX_POSTAL_CODE_CHARS,
    );
    if !postal_code.is_empty()
        && !postal_code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-')
    {
        problems.add(
            "shippingAddress.postalCode",
            "may contain only letters, digits, spaces and hyphens",
        );
    }
    ShippingAddress {
        name,
        address: street,
        city,
        country,
        postal_code,
    }
}

impl CreatePurchaseRequest {
    pub fn validate(&self) -> Result<NewPurchase, DomainError> {
        let mut problems = Problems::default();
        let customer_id = problems.text(
            "customerId",
            self.customer_id.as_ref(),
            limits::MAX_CUSTOMER_ID_CHARS,
        );
        let products = validate_products(&mut problems, self.products.as_ref());
        let (payment_method, transaction_id) = match &self.payment_details {
            None => {
                problems.add("paymentDetails", "is required");
                (String::new(), String::new())
            }
            Some(payment) => (
                problems.text(
                    "paymentDetails.method",
                    payment.method.as_ref(),
                    limits::MAX_METHOD_CHARS,
                ),
                problems.text(
                    "paymentDetails.transactionId",
                    payment.transaction_id.as_ref(),
                    limits::MAX_TRANSACTION_ID_CHARS,
                ),
            ),
        };
        let shipping_address = validate_address(&mut problems, self.shipping_address.as_ref());
        problems.finish(NewPurchase {
            customer_id: CustomerId::new(customer_id),
            products,
            payment: PaymentDetails {
                method: payment_method,
                transaction_id,
            },
            shipping_address,
        })
    }
}

impl UpdatePurchaseRequest {
    pub fn validate(&self) -> Result<PurchaseChanges, DomainError> {
        let mut problems = Problems::default();
        if self.products.is_none() && self.shipping_address.is_none() {
            problems.add(
                "body",
                "must change at least one of products, shippingAddress",
            );
        }
        let products = self
            .products
            .as_ref()
            .map(|_| validate_products(&mut problems, self.products.as_ref()));
        let shipping_address = self
            .shipping_address
            .as_ref()
            .map(|address| validate_address(&mut problems, Some(address)));
        problems.finish(PurchaseChanges {
            products,
            shipping_address,
        })
    }
}

/// ISO 3166-1 alpha-2 officially assigned codes.
const ISO_COUNTRIES: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

/// Upper-case alpha-2 codes only: `de` is refused so stored data has one spelling.
pub fn is_iso_country(code: &str) -> bool {
    code.len() == 2
        && code.bytes().all(|b| b.is_ascii_uppercase())
        && ISO_COUNTRIES.split(' ').any(|c| c == code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid_body() -> serde_json::Value {
        json!({
            "customerId": "c-1",
            "products": [{"id": "ebook-rust", "quantity": 1}],
            "paymentDetails": {"method": "card", "transactionId": "tok_visa"},
            "shippingAddress": {"name": "Ada", "address": "1 Main St", "city": "Berlin", "country": "DE", "postalCode": "10115"}
        })
    }

    fn problems_for(body: serde_json::Value) -> Vec<FieldProblem> {
        let request: CreatePurchaseRequest = serde_json::from_value(body).unwrap();
        match request.validate() {
            Ok(_) => Vec::new(),
            Err(DomainError::Invalid(problems)) => problems,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    fn fields(body: serde_json::Value) -> Vec<String> {
        problems_for(body).into_iter().map(|p| p.field).collect()
    }

    #[test]
    fn valid_request_passes() {
        assert!(problems_for(valid_body()).is_empty());
    }

    #[test]
    fn every_rule_names_its_field() {
        let cases: Vec<(&str, serde_json::Value)> = vec![
            ("products", json!([])),
            ("products[0].quantity", json!([{"id": "a", "quantity": 0}])),
            ("products[0].quantity", json!([{"id": "a", "quantity": -3}])),
            (
                "products[0].quantity",
                json!([{"id": "a", "quantity": 1001}]),
            ),
            ("products[0].quantity", json!([{"id": "a"}])),
            ("products[0].id", json!([{"id": "  ", "quantity": 1}])),
            (
                "products[1].id",
                json!([{"id": "a", "quantity": 1}, {"id": "a", "quantity": 2}]),
            ),
        ];
        for (field, products) in cases {
            let mut body = valid_body();
            body["products"] = products.clone();
            assert_eq!(
                fields(body),
                vec![field.to_owned()],
                "products = {products}"
            );
        }
    }

    #[test]
    fn too_many_products_is_refused() {
        let mut body = valid_body();
        body["products"] = json!(
            (0..51)
                .map(|i| json!({"id": format!("p{i}"), "quantity": 1}))
                .collect::<Vec<_>>()
        );
        assert_eq!(fields(body), vec!["products"]);
    }

    #[test]
    fn address_fields_are_required_and_checked() {
        for field in ["name", "address", "city", "country", "postalCode"] {
            let mut body = valid_body();
            body["shippingAddress"][field] = json!("");
            assert_eq!(fields(body), vec![format!("shippingAddress.{field}")]);
            let mut body = valid_body();
            body["shippingAddress"]
                .as_object_mut()
                .unwrap()
                .remove(field);
            assert_eq!(fields(body), vec![format!("shippingAddress.{field}")]);
        }
        for country in ["XX", "de", "DEU", "Germany"] {
            let mut body = valid_body();
            body["shippingAddress"]["country"] = json!(country);
            assert_eq!(fields(body), vec!["shippingAddress.country"], "{country}");
        }
    }

    #[test]
    fn missing_sections_are_named() {
        for field in [
            "customerId",
            "products",
            "paymentDetails",
            "shippingAddress",
        ] {
            let mut body = valid_body();
            body.as_object_mut().unwrap().remove(field);
            assert_eq!(fields(body), vec![field.to_owned()]);
        }
        let mut body = valid_body();
        body["paymentDetails"]["transactionId"] = json!(" ");
        assert_eq!(fields(body), vec!["paymentDetails.transactionId"]);
    }

    #[test]
    fn update_needs_at_least_one_change() {
        let request: UpdatePurchaseRequest = serde_json::from_value(json!({})).unwrap();
        assert!(matches!(request.validate(), Err(DomainError::Invalid(p)) if p[0].field == "body"));
    }

    #[test]
    fn review_decision_must_be_approve_or_reject() {
        let review = |body: serde_json::Value| {
            serde_json::from_value::<ReviewRequest>(body)
                .unwrap()
                .validate()
        };
        assert!(review(json!({"decision": "approve"})).unwrap().approve);
        assert!(
            !review(json!({"decision": "reject", "reason": "fraud"}))
                .unwrap()
                .approve
        );
        for bad in [
            json!({}),
            json!({"decision": "maybe"}),
            json!({"decision": "approve", "reason": "x".repeat(501)}),
        ] {
            assert!(
                matches!(review(bad.clone()), Err(DomainError::Invalid(_))),
                "{bad}"
            );
        }
    }
}
