//! The domain: what a purchase is and how it may change. Plain Rust: nothing
//! here knows HTTP, AWS, a database or a Lambda runtime (a test in
//! `shared/tests/layout.rs` keeps it so).
//!
//! - [`purchase`]: the purchase, its statuses and its parts.
//! - [`lifecycle`]: every change to a purchase, decided in one place.
//! - [`rules`]: business rules and their verdict.
//! - [`pricing`], [`validation`]: what a request must be before it counts.
//! - [`ids`], [`money`]: the newtypes everything else speaks in.
//! - [`error`]: why a change is refused.

pub mod error;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod ids;
pub mod lifecycle;
pub mod money;
pub mod pricing;
pub mod purchase;
pub mod rules;
pub mod validation;

pub use error::{DomainError, FieldProblem};
pub use ids::{CustomerId, ProductId, PurchaseId};
pub use money::{Currency, Money};
