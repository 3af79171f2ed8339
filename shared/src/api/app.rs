//! What the handlers need, built once per cold start (or once per local
//! server) and shared by every request.

use std::sync::Arc;

use super::error::ApiError;
use super::request::ApiRequest;
use crate::auth::{Authenticator, Caller, Scope};
use crate::ports::store::{IdempotencyStore, Inventory, PurchaseStore, RuleSetStore};
use crate::ports::workflow::Workflow;

#[derive(Clone)]
pub struct App {
    pub purchases: Arc<dyn PurchaseStore>,
    pub inventory: Arc<dyn Inventory>,
    pub workflow: Arc<dyn Workflow>,
    pub auth: Arc<dyn Authenticator>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub rule_sets: Arc<dyn RuleSetStore>,
}

impl App {
    /// Who is calling, refused unless it holds `scope`.
    pub async fn authenticate(
        &self,
        request: &ApiRequest,
        scope: Scope,
    ) -> Result<Caller, ApiError> {
        let caller = self.auth.authenticate(&request.headers).await?;
        caller.require(scope)?;
        Ok(caller)
    }
}
