//! Ports: what the orchestrator needs from the outside world, as small
//! traits in the domain's own types. Adapters implement them; the API and
//! the workflow steps use them.

pub mod payment;
pub mod provisioning;
pub mod store;
pub mod workflow;
