//! The provisioning port: deliver a product line (digital goods) or hand it
//! to fulfilment (physical ones), and take it back when the purchase does
//! not complete. Both are idempotent per (purchase, product).
//! Adapters: `adapters::http_provisioning` (production), `adapters::simulators`.

use async_trait::async_trait;

use crate::domain::PurchaseId;
use crate::domain::purchase::PurchaseLine;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvisioningError {
    /// The service refused the product; retrying will not help.
    #[error("provisioning refused: {0}")]
    Rejected(String),
    #[error("provisioning service unavailable: {0}")]
    Transient(String),
    /// The service refused *us* (401/403).
    #[error("provisioning service refused the orchestrator's credentials: {0}")]
    Misconfigured(String),
}

#[async_trait]
pub trait Provisioner: Send + Sync {
    /// Delivers one line; the same (purchase, product) is the same delivery.
    async fn provision(
        &self,
        purchase_id: &PurchaseId,
        line: &PurchaseLine,
    ) -> Result<(), ProvisioningError>;

    /// Takes a delivered line back; taking back what is not (or no longer)
    /// delivered succeeds.
    async fn revoke(
        &self,
        purchase_id: &PurchaseId,
        line: &PurchaseLine,
    ) -> Result<(), ProvisioningError>;
}
