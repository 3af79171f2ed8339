//! Hostile input: generated bodies thrown at request parsing and validation.
//! Whatever arrives, the answer is `Ok` or a 400 naming a field — never a
//! panic, never a 500 — and whatever is accepted respects every limit.

use http::{HeaderMap, HeaderValue, header};
use proptest::prelude::*;
use serde_json::{Value, json};
use shared::error::ApiError;
use shared::rules::ApplyRulesRequest;
use shared::validation::{
    CreatePurchaseRequest, UpdatePurchaseRequest, is_iso_country, limits, parse_json_body,
};

fn headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers
}

/// Any JSON value, nested a few levels, with awkward strings and numbers.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON has no NaN", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
        Just(json!("\u{0}\u{202e}\u{feff}")),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("customerId".to_owned()),
                    Just("products".to_owned()),
                    Just("id".to_owned()),
                    Just("quantity".to_owned()),
                    Just("paymentDetails".to_owned()),
                    Just("shippingAddress".to_owned()),
                    Just("country".to_owned()),
                    Just("rules".to_owned()),
                    Just("parameters".to_owned()),
                    "[a-zA-Z]{1,12}",
                ],
                inner,
                0..6
            )
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A create body of the right shape with arbitrary field values.
fn shaped_create() -> impl Strategy<Value = Value> {
    let text = prop_oneof![
        ".{0,20}",
        ".{190,310}",
        Just(String::new()),
        Just("  ".to_owned()),
        "[A-Za-z]{2}"
    ];
    (
        text.clone(),
        prop::collection::vec((text.clone(), any::<i64>()), 0..60),
        (text.clone(), text.clone()),
        (text.clone(), text.clone(), text.clone(), text.clone(), text),
    )
        .prop_map(|(customer, products, (method, transaction), (name, address, city, country, postal))| {
            json!({
                "customerId": customer,
                "products": products.into_iter().map(|(id, quantity)| json!({"id": id, "quantity": quantity})).collect::<Vec<_>>(),
                "paymentDetails": {"method": method, "transactionId": transaction},
                "shippingAddress": {"name": name, "address": address, "city": city, "country": country, "postalCode": postal}
            })
        })
}

fn assert_names_fields(error: ApiError) {
    match error {
        ApiError::Validation(problems) => {
            assert!(!problems.is_empty());
            for problem in problems {
                assert!(
                    !problem.field.is_empty() && !problem.problem.is_empty(),
                    "{problem:?}"
                );
            }
        }
        other => panic!("a bad body must be a validation error, not {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Err(error) = parse_json_body::<CreatePurchaseRequest>(&headers(), &bytes) {
            assert_names_fields(error);
        }
    }

    #[test]
    fn arbitrary_json_is_accepted_or_named(value in any_json()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        match parse_json_body::<CreatePurchaseRequest>(&headers(), &bytes).and_then(|r| r.validate()) {
            Ok(_) => {}
            Err(error) => assert_names_fields(error),
        }
        match parse_json_body::<UpdatePurchaseRequest>(&headers(), &bytes).and_then(|r| r.validate()) {
            Ok(_) => {}
            Err(error) => assert_names_fields(error),
        }
        match parse_json_body::<ApplyRulesRequest>(&headers(), &bytes).and_then(|r| r.validate()) {
            Ok(_) => {}
            Err(error) => assert_names_fields(error),
        }
    }

    #[test]
    fn whatever_is_accepted_respects_every_limit(value in shaped_create()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        match parse_json_body::<CreatePurchaseRequest>(&headers(), &bytes).and_then(|r| r.validate()) {
            Ok(purchase) => {
                prop_assert!(!purchase.products.is_empty() && purchase.products.len() <= limits::MAX_PRODUCTS);
                for line in &purchase.products {
                    prop_assert!((1..=limits::MAX_QUANTITY).contains(&line.quantity));
                    prop_assert!(!line.id.trim().is_empty() && line.id.chars().count() <= limits::MAX_ID_CHARS);
                }
                let address = &purchase.shipping_address;
                prop_assert!(is_iso_country(&address.country));
                prop_assert!(address.name.chars().count() <= limits::MAX_NAME_CHARS);
                prop_assert!(address.address.chars().count() <= limits::MAX_ADDRESS_CHARS);
                for text in [&purchase.customer_id, &address.name, &address.city, &address.postal_code] {
                    prop_assert!(!text.trim().is_empty());
                    prop_assert!(!text.chars().any(char::is_control));
                }
            }
            Err(error) => assert_names_fields(error),
        }
    }
}
