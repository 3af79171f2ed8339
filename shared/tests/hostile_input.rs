//! Hostile input: generated bodies thrown at request parsing and validation.
//! Whatever arrives, the answer is `Ok` or a 400 naming a field — never a
//! panic, never a 500 — and whatever is accepted respects every limit.
//!
//! - `arbitrary_bytes_never_panic`, `arbitrary_json_is_accepted_or_named`,
//!   `corrupted_valid_bodies_are_accepted_or_named`: anything at all, for the
//!   three request types.
//! - `targeted_bodies_are_judged_field_by_field`: mostly valid create bodies,
//!   each either left valid (possibly at a limit or padded with blanks) or
//!   broken in exactly one field. A body left valid must be accepted, with
//!   every limit respected and the values as sent; a broken one must be
//!   refused naming that field and only it. The test counts the accepted
//!   bodies and requires at least a quarter of the cases, so the "accepted"
//!   branch can never silently stop running.

use std::sync::atomic::{AtomicUsize, Ordering};

use http::{HeaderMap, HeaderValue, header};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};
use shared::api::body::parse_json_body;
use shared::api::error::ApiError;
use shared::domain::rules::ApplyRulesRequest;
use shared::domain::validation::{
    CreatePurchaseRequest, NewPurchase, UpdatePurchaseRequest, is_iso_country, limits,
};

fn headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers
}

fn parse_create(bytes: &[u8]) -> Result<NewPurchase, ApiError> {
    parse_json_body::<CreatePurchaseRequest>(&headers(), bytes)
        .and_then(|request| request.validate().map_err(ApiError::from))
}

/// Every request type the API parses, each through both passes.
fn judge_all(bytes: &[u8]) {
    if let Err(error) = parse_create(bytes) {
        assert_names_fields(error);
    }
    if let Err(error) = parse_json_body::<UpdatePurchaseRequest>(&headers(), bytes)
        .and_then(|request| request.validate().map_err(ApiError::from))
    {
        assert_names_fields(error);
    }
    if let Err(error) = parse_json_body::<ApplyRulesRequest>(&headers(), bytes)
        .and_then(|request| request.validate().map_err(ApiError::from))
    {
        assert_names_fields(error);
    }
}

#[track_caller]
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

// ---------------------------------------------------------------- anything

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

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        judge_all(&bytes);
    }

    #[test]
    fn arbitrary_json_is_accepted_or_named(value in any_json()) {
        judge_all(&serde_json::to_vec(&value).unwrap());
    }

    /// A valid body's bytes, cut short or with one byte replaced.
    #[test]
    fn corrupted_valid_bodies_are_accepted_or_named(
        body in valid_create(),
        at in any::<Index>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
    ) {
        let mut bytes = serde_json::to_vec(&body).unwrap();
        let at = at.index(bytes.len());
        if cut {
            bytes.truncate(at);
        } else {
            bytes[at] = byte;
        }
        judge_all(&bytes);
    }
}

// ---------------------------------------------------------------- targeted

/// The create body's text fields: name in errors, JSON pointer, limit.
const TEXT_FIELDS: [(&str, &str, usize); 8] = [
    ("customerId", "/customerId", limits::MAX_CUSTOMER_ID_CHARS),
    (
        "paymentDetails.method",
        "/paymentDetails/method",
        limits::MAX_METHOD_CHARS,
    ),
    (
        "paymentDetails.transactionId",
        "/paymentDetails/transactionId",
        limits::MAX_TRANSACTION_ID_CHARS,
    ),
    (
        "shippingAddress.name",
        "/shippingAddress/name",
        limits::MAX_NAME_CHARS,
    ),
    (
        "shippingAddress.address",
        "/shippingAddress/address",
        limits::MAX_ADDRESS_CHARS,
    ),
    (
        "shippingAddress.city",
        "/shippingAddress/city",
        limits::MAX_CITY_CHARS,
    ),
    ("shippingAddress.country", "/shippingAddress/country", 2),
    (
        "shippingAddress.postalCode",
        "/shippingAddress/postalCode",
        limits::MAX_POSTAL_CODE_CHARS,
    ),
];

const COUNTRY: usize = 6;

const SOME_COUNTRIES: [&str; 10] = ["DE", "US", "FR", "JP", "BR", "ZA", "NZ", "AD", "ZW", "GB"];

/// Letters from several scripts, one to four bytes in UTF-8 (`\p{L}` would
/// do too, but makes generation ten times slower).
const LETTERS: &str = "a-zA-ZäöüßéçñøåłžΩωЖжиשאعب日本語한글𝔘𝔫";

fn regex(pattern: &str) -> impl Strategy<Value = String> + use<> {
    proptest::string::string_regex(pattern).unwrap()
}

/// A body every rule accepts, with a spread of sizes (1 to 50 products) and
/// of characters (letters of several scripts, not only ASCII).
fn valid_create() -> impl Strategy<Value = Value> {
    let products = prop_oneof![1..=5usize, 1..=limits::MAX_PRODUCTS].prop_flat_map(|count| {
        prop::collection::btree_map(
            "[a-z0-9][a-z0-9-]{0,40}",
            1..=i64::from(limits::MAX_QUANTITY),
            count,
        )
    });
    (
        regex(&format!("[{LETTERS}0-9][{LETTERS}0-9@._-]{{0,60}}")),
        products,
        ("[a-z]{1,32}", "[A-Za-z0-9_]{1,128}"),
        (
            regex(&format!("[{LETTERS}][{LETTERS} .'-]{{0,199}}")),
            regex(&format!("[{LETTERS}0-9][{LETTERS}0-9 ,.'/-]{{0,299}}")),
            regex(&format!("[{LETTERS}][{LETTERS} .'-]{{0,99}}")),
            prop::sample::select(&SOME_COUNTRIES[..]),
            "[A-Z0-9][A-Z0-9 -]{0,15}",
        ),
    )
        .prop_map(
            |(
                customer,
                products,
                (method, transaction),
                (name, address, city, country, postal),
            )| {
                json!({
                    "customerId": customer,
                    "products": products
                        .into_iter()
                        .map(|(id, quantity)| json!({"id": id, "quantity": quantity}))
                        .collect::<Vec<_>>(),
                    "paymentDetails": {"method": method, "transactionId": transaction},
                    "shippingAddress": {
                        "name": name, "address": address, "city": city,
                        "country": country, "postalCode": postal
                    }
                })
            },
        )
}

/// Which text field a change aims at: one of [`TEXT_FIELDS`], or a product's id.
#[derive(Debug, Clone)]
enum Target {
    Text(usize),
    ProductId(Index),
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        4 => (0..TEXT_FIELDS.len()).prop_map(Target::Text),
        1 => any::<Index>().prop_map(Target::ProductId),
    ]
}

/// One change to a valid body: kept valid, or broken in exactly one field.
#[derive(Debug, Clone)]
enum Change {
    None,
    /// In range (valid) or not, boundaries included.
    Quantity(Index, i64),
    /// At exactly its limit (valid; not the country).
    AtLimit(Target),
    /// Surrounded by blanks, which validation trims (valid).
    Padded(Target),
    Blank(Target, &'static str),
    Null(Target),
    Remove(Target),
    RemoveSection(&'static str),
    TooLong(Target, usize),
    Control(Target, char),
    Country(&'static str),
    PostalCode(char),
    DuplicateId(Index),
    TooMany(usize),
    NoProducts,
    /// JSON pointer, value of the wrong type, field named in the error.
    WrongType(&'static str, Value, &'static str),
    /// JSON pointer of an object, unknown field, field named in the error.
    Unknown(&'static str, &'static str, &'static str),
}

fn change() -> impl Strategy<Value = Change> {
    let max = i64::from(limits::MAX_QUANTITY);
    // Valid quantities, the limits themselves drawn often.
    let valid_quantity = prop_oneof![Just(1), Just(max), 1..=max];
    // Anything, the values just past the limits drawn often: a limit off by
    // one must not survive a run.
    let any_quantity = prop_oneof![
        2 => prop::sample::select(vec![0, -1, max + 1, max + 2]),
        1 => any::<i64>(),
        1 => -3..=max + 3,
        1 => prop::sample::select(vec![i64::MIN, i64::MAX, i64::from(u32::MAX) + 1]),
    ];
    let blank = prop::sample::select(vec!["", " ", "\t \n", "\u{3000}"]);
    let control = prop_oneof![
        (0u32..0x20).prop_map(|c| char::from_u32(c).unwrap()),
        (0x7fu32..0xa0).prop_map(|c| char::from_u32(c).unwrap()),
    ];
    let wrong_type = prop::sample::select(vec![
        ("/customerId", json!(42), "customerId"),
        ("/products", json!({"id": "a", "quantity": 1}), "products"),
        ("/products/0", json!("a"), "products[0]"),
        ("/products/0/quantity", json!("2"), "products[0].quantity"),
        ("/products/0/quantity", json!(2.5), "products[0].quantity"),
        (
            "/products/0/quantity",
            json!(u64::MAX),
            "products[0].quantity",
        ),
        ("/products/0/id", json!(7), "products[0].id"),
        ("/paymentDetails", json!([]), "paymentDetails"),
        ("/shippingAddress", json!("Berlin"), "shippingAddress"),
        (
            "/shippingAddress/country",
            json!(["DE"]),
            "shippingAddress.country",
        ),
    ]);
    let unknown = prop::sample::select(vec![
        ("", "discount", "discount"),
        ("/products/0", "price", "products[0].price"),
        ("/paymentDetails", "cvv", "paymentDetails.cvv"),
        ("/shippingAddress", "floor", "shippingAddress.floor"),
    ]);
    prop_oneof![
        // Valid: about half of all cases.
        14 => Just(Change::None),
        4 => (any::<Index>(), valid_quantity).prop_map(|(at, q)| Change::Quantity(at, q)),
        4 => target().prop_map(Change::AtLimit),
        2 => target().prop_map(Change::Padded),
        // Valid or not, depending on the value.
        4 => (any::<Index>(), any_quantity).prop_map(|(at, q)| Change::Quantity(at, q)),
        // Broken in one field.
        2 => (target(), blank).prop_map(|(t, b)| Change::Blank(t, b)),
        1 => target().prop_map(Change::Null),
        1 => target().prop_map(Change::Remove),
        1 => prop::sample::select(vec!["customerId", "products", "paymentDetails", "shippingAddress"])
            .prop_map(Change::RemoveSection),
        // One past the limit most often: an off-by-one must not survive.
        4 => (target(), prop_oneof![2 => Just(1usize), 1 => 2..40usize])
            .prop_map(|(t, n)| Change::TooLong(t, n)),
        2 => (target(), control).prop_map(|(t, c)| Change::Control(t, c)),
        1 => prop::sample::select(vec!["de", "XX", "DEU", "Germany", "D", "ÄÖ", "D E"])
            .prop_map(Change::Country),
        1 => prop::sample::select(vec!['!', '#', '/', '_', '.', ',', 'ß'])
            .prop_map(Change::PostalCode),
        1 => any::<Index>().prop_map(Change::DuplicateId),
        1 => (limits::MAX_PRODUCTS + 1..=limits::MAX_PRODUCTS + 10).prop_map(Change::TooMany),
        1 => Just(Change::NoProducts),
        2 => wrong_type.prop_map(|(at, value, field)| Change::WrongType(at, value, field)),
        1 => unknown.prop_map(|(at, name, field)| Change::Unknown(at, name, field)),
    ]
}

/// What the body must be judged after a change.
#[derive(Debug)]
enum Expect {
    Accepted,
    /// Refused, naming this field and no other.
    Refused(String),
}

fn products_len(body: &Value) -> usize {
    body["products"].as_array().unwrap().len()
}

/// The error name and JSON pointer of a target, and its limit.
fn resolve(body: &Value, target: &Target) -> (String, String, usize) {
    match target {
        Target::Text(i) => {
            let (field, pointer, limit) = TEXT_FIELDS[*i];
            (field.to_owned(), pointer.to_owned(), limit)
        }
        Target::ProductId(at) => {
            let i = at.index(products_len(body));
            (
                format!("products[{i}].id"),
                format!("/products/{i}/id"),
                limits::MAX_ID_CHARS,
            )
        }
    }
}

fn set(body: &mut Value, pointer: &str, value: Value) {
    let slot = body.pointer_mut(pointer);
    *slot.unwrap_or_else(|| panic!("no {pointer} in the body")) = value;
}

fn remove(body: &mut Value, pointer: &str) {
    let (parent, name) = pointer.rsplit_once('/').unwrap();
    body.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .unwrap()
        .remove(name);
}

fn apply(mut body: Value, change: &Change) -> (Value, Expect) {
    let refused = |field: &str| Expect::Refused(field.to_owned());
    let expect = match change {
        Change::None => Expect::Accepted,
        Change::Quantity(at, quantity) => {
            let i = at.index(products_len(&body));
            set(
                &mut body,
                &format!("/products/{i}/quantity"),
                json!(quantity),
            );
            if (1..=i64::from(limits::MAX_QUANTITY)).contains(quantity) {
                Expect::Accepted
            } else {
                refused(&format!("products[{i}].quantity"))
            }
        }
        Change::AtLimit(target) => {
            let (field, pointer, limit) = resolve(&body, target);
            if matches!(target, Target::Text(COUNTRY)) {
                // Two letters, but not a country: that is a refusal.
                set(&mut body, &pointer, json!("QQ"));
                refused(&field)
            } else {
                set(&mut body, &pointer, json!("7".repeat(limit)));
                Expect::Accepted
            }
        }
        Change::Padded(target) => {
            let (_, pointer, _) = resolve(&body, target);
            let value = body.pointer(&pointer).unwrap().as_str().unwrap();
            let padded = format!(" \t{value}\u{a0} ");
            set(&mut body, &pointer, json!(padded));
            Expect::Accepted
        }
        Change::Blank(target, blank) => {
            let (field, pointer, _) = resolve(&body, target);
            set(&mut body, &pointer, json!(blank));
            refused(&field)
        }
        Change::Null(target) => {
            let (field, pointer, _) = resolve(&body, target);
            set(&mut body, &pointer, Value::Null);
            refused(&field)
        }
        Change::Remove(target) => {
            let (field, pointer, _) = resolve(&body, target);
            remove(&mut body, &pointer);
            refused(&field)
        }
        Change::RemoveSection(section) => {
            remove(&mut body, &format!("/{section}"));
            refused(section)
        }
        Change::TooLong(target, extra) => {
            let (field, pointer, limit) = resolve(&body, target);
            // Characters, not bytes: multi-byte ones count as one.
            set(&mut body, &pointer, json!("é".repeat(limit + extra)));
            refused(&field)
        }
        Change::Control(target, control) => {
            let (field, pointer, _) = resolve(&body, target);
            set(&mut body, &pointer, json!(format!("A{control}B")));
            refused(&field)
        }
        Change::Country(country) => {
            set(&mut body, "/shippingAddress/country", json!(country));
            refused("shippingAddress.country")
        }
        Change::PostalCode(bad) => {
            set(
                &mut body,
                "/shippingAddress/postalCode",
                json!(format!("10{bad}15")),
            );
            refused("shippingAddress.postalCode")
        }
        Change::DuplicateId(at) => {
            let len = products_len(&body);
            let id = body["products"][at.index(len)]["id"].clone();
            body["products"]
                .as_array_mut()
                .unwrap()
                .push(json!({"id": id, "quantity": 1}));
            if len + 1 > limits::MAX_PRODUCTS {
                refused("products")
            } else {
                refused(&format!("products[{len}].id"))
            }
        }
        Change::TooMany(count) => {
            let products: Vec<Value> = (0..*count)
                .map(|i| json!({"id": format!("p{i}"), "quantity": 1}))
                .collect();
            body["products"] = json!(products);
            refused("products")
        }
        Change::NoProducts => {
            body["products"] = json!([]);
            refused("products")
        }
        Change::WrongType(pointer, value, field) => {
            set(&mut body, pointer, value.clone());
            refused(field)
        }
        Change::Unknown(pointer, name, field) => {
            body.pointer_mut(pointer)
                .and_then(Value::as_object_mut)
                .unwrap()
                .insert((*name).to_owned(), json!(1));
            refused(field)
        }
    };
    (body, expect)
}

fn text<'a>(body: &'a Value, pointer: &str) -> &'a str {
    body.pointer(pointer).unwrap().as_str().unwrap()
}

/// An accepted body: within every limit, and exactly what was sent (trimmed).
fn check_accepted(body: &Value, purchase: &NewPurchase) -> Result<(), TestCaseError> {
    prop_assert!(!purchase.products.is_empty() && purchase.products.len() <= limits::MAX_PRODUCTS);
    let sent = body["products"].as_array().unwrap();
    prop_assert_eq!(purchase.products.len(), sent.len());
    for (line, sent) in purchase.products.iter().zip(sent) {
        prop_assert!((1..=limits::MAX_QUANTITY).contains(&line.quantity));
        prop_assert_eq!(i64::from(line.quantity), sent["quantity"].as_i64().unwrap());
        let id = line.id.as_str();
        prop_assert!(!id.is_empty() && id.chars().count() <= limits::MAX_ID_CHARS);
        prop_assert_eq!(id, sent["id"].as_str().unwrap().trim());
    }
    let address = &purchase.shipping_address;
    prop_assert!(is_iso_country(&address.country));
    let within = [
        (
            purchase.customer_id.as_str(),
            "/customerId",
            limits::MAX_CUSTOMER_ID_CHARS,
        ),
        (
            purchase.payment.method.as_str(),
            "/paymentDetails/method",
            limits::MAX_METHOD_CHARS,
        ),
        (
            purchase.payment.transaction_id.as_str(),
            "/paymentDetails/transactionId",
            limits::MAX_TRANSACTION_ID_CHARS,
        ),
        (
            address.name.as_str(),
            "/shippingAddress/name",
            limits::MAX_NAME_CHARS,
        ),
        (
            address.address.as_str(),
            "/shippingAddress/address",
            limits::MAX_ADDRESS_CHARS,
        ),
        (
            address.city.as_str(),
            "/shippingAddress/city",
            limits::MAX_CITY_CHARS,
        ),
        (address.country.as_str(), "/shippingAddress/country", 2),
        (
            address.postal_code.as_str(),
            "/shippingAddress/postalCode",
            limits::MAX_POSTAL_CODE_CHARS,
        ),
    ];
    for (value, pointer, limit) in within {
        prop_assert!(!value.is_empty(), "{pointer} empty");
        prop_assert!(value.chars().count() <= limit, "{pointer} over {limit}");
        prop_assert!(
            !value.chars().any(char::is_control),
            "{pointer} has a control"
        );
        prop_assert_eq!(value, text(body, pointer).trim(), "{} as sent", pointer);
    }
    prop_assert!(
        address
            .postal_code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-')
    );
    Ok(())
}

const TARGETED_CASES: u32 = 2048;

#[test]
fn targeted_bodies_are_judged_field_by_field() {
    let accepted = AtomicUsize::new(0);
    let refused = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: TARGETED_CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&(valid_create(), change()), |(valid, change)| {
        let (body, expect) = apply(valid, &change);
        let bytes = serde_json::to_vec(&body).unwrap();
        match (expect, parse_create(&bytes)) {
            (Expect::Accepted, Ok(purchase)) => {
                check_accepted(&body, &purchase)?;
                accepted.fetch_add(1, Ordering::Relaxed);
            }
            (Expect::Refused(field), Err(ApiError::Validation(problems))) => {
                prop_assert!(!problems.is_empty());
                for problem in &problems {
                    prop_assert_eq!(&problem.field, &field, "{:?}: {:?}", change, problems);
                    prop_assert!(!problem.problem.is_empty());
                }
                refused.fetch_add(1, Ordering::Relaxed);
            }
            (expect, outcome) => {
                return Err(TestCaseError::fail(format!(
                    "{change:?}: expected {expect:?}, got {outcome:?}\nbody: {body}"
                )));
            }
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    let (accepted, refused) = (accepted.into_inner(), refused.into_inner());
    eprintln!("{accepted} bodies accepted, {refused} refused");
    assert_eq!(accepted + refused, TARGETED_CASES as usize);
    // About half are built to be valid; a quarter is far below any chance
    // dip, and far above zero, which is what a broken generator would give.
    assert!(
        accepted * 4 >= TARGETED_CASES as usize,
        "only {accepted} of {TARGETED_CASES} bodies were accepted: the valid branch barely ran"
    );
    assert!(
        refused * 4 >= TARGETED_CASES as usize,
        "only {refused} of {TARGETED_CASES} bodies were refused"
    );
}
