//! Pricing: requested lines priced against the catalog.

use super::error::{DomainError, FieldProblem};
use super::ids::ProductId;
use super::money::{Currency, Money};
use super::purchase::{LineStatus, Product, PurchaseLine};

/// A requested product line after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedLine {
    pub id: ProductId,
    pub quantity: u32,
}

/// Lines priced at today's catalog prices, and their total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLines {
    pub lines: Vec<PurchaseLine>,
    pub total: Money,
}

/// Prices the requested lines against the catalog: every id must exist and
/// all products must share one currency. `catalog` holds the products found
/// for the requested ids (missing ones are simply absent).
pub fn price_lines(
    requested: &[RequestedLine],
    catalog: &[Product],
) -> Result<PricedLines, DomainError> {
    let mut problems = Vec::new();
    let mut lines = Vec::with_capacity(requested.len());
    let mut currency: Option<(usize, &Currency)> = None;
    let mut total: i64 = 0;
    for (index, line) in requested.iter().enumerate() {
        let Some(product) = catalog.iter().find(|p| p.id == line.id) else {
            problems.push(FieldProblem::new(
                format!("products[{index}].id"),
                format!("unknown product {:?}", line.id.as_str()),
            ));
            continue;
        };
        match currency {
            None => currency = Some((index, &product.currency)),
            Some((first, code)) if *code != product.currency => problems.push(FieldProblem::new(
                format!("products[{index}].id"),
                format!(
                    "is priced in {} but products[{first}] is priced in {code}; one purchase uses one currency",
                    product.currency
                ),
            )),
            Some(_) => {}
        }
        total = total.saturating_add(product.unit_price.saturating_mul(i64::from(line.quantity)));
        lines.push(PurchaseLine {
            id: product.id.clone(),
            quantity: line.quantity,
            status: LineStatus::Pending,
            unit_price: product.unit_price,
            kind: product.kind,
        });
    }
    if !problems.is_empty() {
        return Err(DomainError::Invalid(problems));
    }
    let currency = currency.map(|(_, code)| code.clone()).unwrap_or_default();
    Ok(PricedLines {
        lines,
        total: Money::new(total, currency),
    })
}
