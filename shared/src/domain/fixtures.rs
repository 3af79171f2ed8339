//! Purchases for the domain's own tests.

use chrono::Utc;

use super::ids::{CustomerId, ProductId, PurchaseId};
use super::lifecycle;
use super::money::{Currency, Money};
use super::pricing::PricedLines;
use super::purchase::{
    LineStatus, PaymentDetails, ProductKind, Purchase, PurchaseLine, ShippingAddress,
};

pub fn address(country: &str) -> ShippingAddress {
    ShippingAddress {
        name: "Ada".into(),
        address: "1 Main St".into(),
        city: "Berlin".into(),
        country: country.into(),
        postal_code: "10115".into(),
    }
}

/// Lines of digital products at 100 each.
pub fn priced(lines: &[(&str, u32)], currency: &str) -> PricedLines {
    let lines: Vec<PurchaseLine> = lines
        .iter()
        .map(|(id, quantity)| PurchaseLine {
            id: ProductId::new(*id),
            quantity: *quantity,
            status: LineStatus::Pending,
            unit_price: 100,
            kind: ProductKind::Digital,
        })
        .collect();
    let total = lines
        .iter()
        .map(|l| l.unit_price * i64::from(l.quantity))
        .sum();
    PricedLines {
        lines,
        total: Money::new(total, Currency::new(currency)),
    }
}

/// A new purchase as `create` makes it.
pub fn purchase(lines: &[(&str, u32)], currency: &str, country: &str) -> Purchase {
    lifecycle::create(
        PurchaseId::new("p-1"),
        CustomerId::new("c-1"),
        priced(lines, currency),
        PaymentDetails {
            method: "card".into(),
            transaction_id: "tok_visa".into(),
        },
        address(country),
        Utc::now(),
    )
    .0
}
