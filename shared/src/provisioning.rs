//! The provisioning port (deliver digital goods, hand physical ones to
//! fulfilment), its HTTP adapter and the built-in simulator.

use std::collections::HashSet;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::Serialize;

use crate::model::{ProductKind, PurchaseLine};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvisioningError {
    /// The provisioning service refused the product; retrying will not help.
    #[error("provisioning refused: {0}")]
    Rejected(String),
    #[error("provisioning service unavailable: {0}")]
    Transient(String),
}

#[async_trait]
pub trait Provisioner: Send + Sync {
    /// Provisions one line; idempotent per (purchase id, product id).
    async fn provision(
        &self,
        purchase_id: &str,
        line: &PurchaseLine,
    ) -> Result<(), ProvisioningError>;
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProvisionRequest<'a> {
    purchase_id: &'a str,
    product_id: &'a str,
    quantity: u32,
    kind: ProductKind,
}

/// `POST {PROVISIONING_URL}/provisions` with `Idempotency-Key:
/// <purchaseId>:<productId>`. 2xx succeeds, 429/5xx/timeouts are transient,
/// other 4xx are a permanent refusal.
pub struct HttpProvisioner {
    base_url: String,
    client: reqwest::Client,
}

impl HttpProvisioner {
    pub fn new(base_url: &str, client: reqwest::Client) -> HttpProvisioner {
        HttpProvisioner {
            base_url: base_url.trim_end_matches('/').to_owned(),
            client,
        }
    }
}

#[async_trait]
impl Provisioner for HttpProvisioner {
    async fn provision(
        &self,
        purchase_id: &str,
        line: &PurchaseLine,
    ) -> Result<(), ProvisioningError> {
        let response = self
            .client
            .post(format!("{}/provisions", self.base_url))
            .header("Idempotency-Key", format!("{purchase_id}:{}", line.id))
            .json(&ProvisionRequest {
                purchase_id,
                product_id: &line.id,
                quantity: line.quantity,
                kind: line.kind,
            })
            .send()
            .await
            .map_err(|e| ProvisioningError::Transient(e.to_string()))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else if status.as_u16() == 429 || status.is_server_error() {
            Err(ProvisioningError::Transient(format!("answered {status}")))
        } else {
            let body = response.text().await.unwrap_or_default();
            Err(ProvisioningError::Rejected(format!("{status}: {body}")))
        }
    }
}

/// Local-mode provisioning: products whose id starts with `fail-provision`
/// are refused permanently; everything else succeeds.
#[derive(Default)]
pub struct SimulatedProvisioner {
    provisioned: Mutex<HashSet<(String, String)>>,
}

impl SimulatedProvisioner {
    /// Distinct (purchase, product) pairs provisioned so far.
    pub fn provisioned_count(&self) -> usize {
        self.provisioned.lock().map(|set| set.len()).unwrap_or(0)
    }
}

#[async_trait]
impl Provisioner for SimulatedProvisioner {
    async fn provision(
        &self,
        purchase_id: &str,
        line: &PurchaseLine,
    ) -> Result<(), ProvisioningError> {
        if line.id.starts_with("fail-provision") {
            return Err(ProvisioningError::Rejected(format!(
                "product {} cannot be provisioned",
                line.id
            )));
        }
        self.provisioned
            .lock()
            .map_err(|_| ProvisioningError::Transient("simulator lock poisoned".into()))?
            .insert((purchase_id.to_owned(), line.id.clone()));
        Ok(())
    }
}
