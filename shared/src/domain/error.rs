//! The domain's errors: why a request or a workflow event cannot change a
//! purchase. The API maps them to HTTP (`api::error`), the steps to the error
//! names the state machine catches (`steps::StepError`); the domain knows
//! neither.

use serde::Serialize;

use super::ids::PurchaseId;

/// One thing wrong with an input, named by its JSON path (`products[1].quantity`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldProblem {
    pub field: String,
    pub problem: String,
}

impl FieldProblem {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        FieldProblem {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The input breaks a validation rule; nothing changed.
    #[error("the request is invalid")]
    Invalid(Vec<FieldProblem>),
    /// Not allowed in the purchase's current state. The text says why, in
    /// words for whoever asked.
    #[error("{0}")]
    NotAllowed(String),
    /// The purchase was failed, cancelled or rejected outside the step that
    /// asks: the workflow stops going forward and undoes what was done.
    #[error("purchase {0} was stopped")]
    Stopped(PurchaseId),
    /// The purchase is on hold: the workflow parks until it is reviewed.
    #[error("purchase {0} is on hold for review")]
    OnHold(PurchaseId),
    /// The rules rejected the purchase.
    #[error("purchase {0} was rejected by its rules")]
    Rejected(PurchaseId),
    /// The input was computed from contents (products, address, applied
    /// rules) that have changed since: compute it again.
    #[error("the purchase changed while it was being judged")]
    Stale,
    /// The caller changed a version of the purchase that is no longer the
    /// current one (`If-Match`).
    #[error("purchase {id} is at version {current}, not {expected}; GET it again")]
    Outdated {
        id: PurchaseId,
        current: u64,
        expected: u64,
    },
    /// The workflow asked for something its own earlier steps make
    /// impossible (a bug, or a definition out of step with the code).
    #[error("{0}")]
    Inconsistent(String),
}

impl DomainError {
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> DomainError {
        DomainError::Invalid(vec![FieldProblem::new(field, problem)])
    }
}
