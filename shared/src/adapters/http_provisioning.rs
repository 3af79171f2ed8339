//! The provisioning port over HTTP (`PROVISIONING_URL`): what runs on AWS.
//!
//! - `POST {base}/provisions` delivers a line, `POST {base}/revocations`
//!   takes it back; bodies `{"purchaseId", "productId", "quantity", "kind"}`;
//! - `Idempotency-Key: provision:<purchaseId>:<productId>` (and `revoke:...`),
//!   the same on every retry;
//! - status codes as the payment adapter reads them: 408/409/429/5xx and
//!   transport failures are transient, 401/403 a configuration error, other
//!   4xx a refusal (a revocation's 404: nothing was delivered, done).

use async_trait::async_trait;
use reqwest::StatusCode;
use serde::Serialize;

use super::http_client::{LazyHttpClient, StatusClass, classify_status};
use crate::domain::PurchaseId;
use crate::domain::purchase::{ProductKind, PurchaseLine};
use crate::ports::provisioning::{Provisioner, ProvisioningError};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LineRequest<'a> {
    purchase_id: &'a PurchaseId,
    product_id: &'a str,
    quantity: u32,
    kind: ProductKind,
}

pub struct HttpProvisioner {
    base_url: String,
    client: LazyHttpClient,
}

impl HttpProvisioner {
    pub fn new(base_url: &str, client: impl Into<LazyHttpClient>) -> HttpProvisioner {
        HttpProvisioner {
            base_url: base_url.trim_end_matches('/').to_owned(),
            client: client.into(),
        }
    }

    async fn call(
        &self,
        path: &str,
        key_prefix: &str,
        purchase_id: &PurchaseId,
        line: &PurchaseLine,
    ) -> Result<StatusCode, ProvisioningError> {
        let client = self
            .client
            .get()
            .map_err(|e| ProvisioningError::Transient(format!("HTTP client: {e}")))?;
        let response = client
            .post(format!("{}/{path}", self.base_url))
            .header(
                "Idempotency-Key",
                format!("{key_prefix}:{purchase_id}:{}", line.id),
            )
            .json(&LineRequest {
                purchase_id,
                product_id: line.id.as_str(),
                quantity: line.quantity,
                kind: line.kind,
            })
            .send()
            .await
            .map_err(|e| ProvisioningError::Transient(e.to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(status);
        }
        let body = response.text().await.unwrap_or_default();
        let text = format!("{status}: {body}");
        match classify_status(status) {
            StatusClass::Retry | StatusClass::Success => Err(ProvisioningError::Transient(text)),
            StatusClass::Misconfigured => Err(ProvisioningError::Misconfigured(text)),
            StatusClass::Refused if status == StatusCode::NOT_FOUND && path == "revocations" => {
                Ok(status)
            }
            StatusClass::Refused => Err(ProvisioningError::Rejected(text)),
        }
    }
}

#[async_trait]
impl Provisioner for HttpProvisioner {
    async fn provision(
        &self,
        purchase_id: &PurchaseId,
        line: &PurchaseLine,
    ) -> Result<(), ProvisioningError> {
        self.call("provisions", "provision", purchase_id, line)
            .await
            .map(|_| ())
    }

    async fn revoke(
        &self,
        purchase_id: &PurchaseId,
        line: &PurchaseLine,
    ) -> Result<(), ProvisioningError> {
        self.call("revocations", "revoke", purchase_id, line)
            .await
            .map(|_| ())
    }
}
