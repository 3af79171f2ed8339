//! The built-in payment and provisioning providers of local mode, behaving
//! like real ones: requests are deduplicated by their idempotency key, not
//! by purchase, so an orchestrator that sent a second capture with a new key
//! would charge twice here too.
//!
//! Both record every request they receive ([`SimulatedPaymentGateway::requests`],
//! [`SimulatedProvisioner::requests`]), so tests assert on what the
//! orchestrator *asked for*, not only on what the simulator let through.
//!
//! Conventions (README, "The simulators"):
//! - `transactionId` starting `tok_decline` → declined;
//! - `tok_flaky` → fails transiently twice per purchase, then succeeds;
//! - `tok_slow` → succeeds after [`SLOW_CAPTURE`];
//! - product id starting `fail-provision` → refused by provisioning;
//! - product id starting `slow-provision` → delivered after [`SLOW_PROVISION`].

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::purchase::PurchaseLine;
use crate::domain::{ProductId, PurchaseId};
use crate::ports::payment::{
    Capture, CaptureRequest, PaymentError, PaymentGateway, RefundOutcome, RefundRequest,
};
use crate::ports::provisioning::{Provisioner, ProvisioningError};

/// How long the simulator takes to capture a `tok_slow` payment.
pub const SLOW_CAPTURE: Duration = Duration::from_secs(15);
/// How long the simulator takes to deliver a `slow-provision…` product.
pub const SLOW_PROVISION: Duration = Duration::from_secs(5);

/// One request a simulated provider received, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentRequest {
    Capture {
        purchase_id: PurchaseId,
        key: String,
        amount: i64,
    },
    Refund {
        purchase_id: PurchaseId,
        key: String,
        amount: i64,
    },
}

/// What the provider's books say about one purchase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Account {
    pub captured: i64,
    pub refunded: i64,
}

#[derive(Default)]
struct PaymentBooks {
    requests: Vec<PaymentRequest>,
    /// capture key → (purchase, amount): the captures made.
    captures: HashMap<String, (PurchaseId, i64)>,
    /// refund key → outcome: a repeated refund answers the same.
    refunds: HashMap<String, RefundOutcome>,
    accounts: HashMap<PurchaseId, Account>,
    flaky_failures: HashMap<PurchaseId, u32>,
}

#[derive(Default)]
pub struct SimulatedPaymentGateway {
    books: Mutex<PaymentBooks>,
}

impl SimulatedPaymentGateway {
    /// Every request received, in order.
    pub fn requests(&self) -> Vec<PaymentRequest> {
        self.books
            .lock()
            .map(|b| b.requests.clone())
            .unwrap_or_default()
    }

    /// Money moved per purchase.
    pub fn accounts(&self) -> HashMap<PurchaseId, Account> {
        self.books
            .lock()
            .map(|b| b.accounts.clone())
            .unwrap_or_default()
    }

    /// Distinct captures made (one per capture key).
    pub fn captures(&self) -> usize {
        self.books.lock().map(|b| b.captures.len()).unwrap_or(0)
    }

    /// Refunds that moved money.
    pub fn refunds(&self) -> usize {
        self.books
            .lock()
            .map(|b| {
                b.refunds
                    .values()
                    .filter(|o| **o == RefundOutcome::Refunded)
                    .count()
            })
            .unwrap_or(0)
    }
}

fn poisoned<T>(_: T) -> PaymentError {
    PaymentError::Transient("simulator lock poisoned".into())
}

#[async_trait]
impl PaymentGateway for SimulatedPaymentGateway {
    async fn capture(&self, request: &CaptureRequest) -> Result<Capture, PaymentError> {
        self.books
            .lock()
            .map_err(poisoned)?
            .requests
            .push(PaymentRequest::Capture {
                purchase_id: request.purchase_id.clone(),
                key: request.idempotency_key.clone(),
                amount: request.amount,
            });
        if request.transaction_id.starts_with("tok_slow") {
            tokio::time::sleep(SLOW_CAPTURE).await;
        }
        let mut books = self.books.lock().map_err(poisoned)?;
        let token = request.transaction_id.as_str();
        if token.starts_with("tok_decline") {
            return Err(PaymentError::Declined(format!(
                "card declined for transaction {token}"
            )));
        }
        if token.starts_with("tok_flaky") {
            let failures = books
                .flaky_failures
                .entry(request.purchase_id.clone())
                .or_insert(0);
            if *failures < 2 {
                *failures += 1;
                return Err(PaymentError::Transient(format!(
                    "simulated provider timeout ({failures} of 2)"
                )));
            }
        }
        if !books.captures.contains_key(&request.idempotency_key) {
            books.captures.insert(
                request.idempotency_key.clone(),
                (request.purchase_id.clone(), request.amount),
            );
            books
                .accounts
                .entry(request.purchase_id.clone())
                .or_default()
                .captured += request.amount;
        }
        Ok(Capture {
            payment_reference: format!("sim_{}", request.idempotency_key),
        })
    }

    async fn refund(&self, request: &RefundRequest) -> Result<RefundOutcome, PaymentError> {
        let mut books = self.books.lock().map_err(poisoned)?;
        books.requests.push(PaymentRequest::Refund {
            purchase_id: request.purchase_id.clone(),
            key: request.idempotency_key.clone(),
            amount: request.amount,
        });
        if let Some(outcome) = books.refunds.get(&request.idempotency_key) {
            return Ok(*outcome);
        }
        let account = books
            .accounts
            .entry(request.purchase_id.clone())
            .or_default();
        let refundable = (account.captured - account.refunded).min(request.amount);
        let outcome = if refundable > 0 {
            account.refunded += refundable;
            RefundOutcome::Refunded
        } else {
            RefundOutcome::NothingToRefund
        };
        books
            .refunds
            .insert(request.idempotency_key.clone(), outcome);
        Ok(outcome)
    }
}

/// One request the simulated provisioning service received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProvisioningRequest {
    Provision {
        purchase_id: PurchaseId,
        product_id: ProductId,
    },
    Revoke {
        purchase_id: PurchaseId,
        product_id: ProductId,
    },
}

struct Deliveries {
    requests: Vec<ProvisioningRequest>,
    /// (purchase, product) delivered and not taken back.
    delivered: HashSet<(PurchaseId, ProductId)>,
}

/// Local-mode provisioning: `fail-provision…` products are refused,
/// `slow-provision…` ones take [`SLOW_PROVISION`], everything else is
/// delivered. Lines are delivered in the order the orchestrator asks.
pub struct SimulatedProvisioner {
    deliveries: Mutex<Deliveries>,
    slow: Duration,
}

impl Default for SimulatedProvisioner {
    fn default() -> SimulatedProvisioner {
        SimulatedProvisioner::with_slow_delivery(SLOW_PROVISION)
    }
}

impl SimulatedProvisioner {
    /// `slow-provision…` products take `slow` instead of [`SLOW_PROVISION`].
    pub fn with_slow_delivery(slow: Duration) -> SimulatedProvisioner {
        SimulatedProvisioner {
            deliveries: Mutex::new(Deliveries {
                requests: Vec::new(),
                delivered: HashSet::new(),
            }),
            slow,
        }
    }

    pub fn requests(&self) -> Vec<ProvisioningRequest> {
        self.deliveries
            .lock()
            .map(|d| d.requests.clone())
            .unwrap_or_default()
    }

    /// Lines delivered and not taken back.
    pub fn delivered(&self) -> HashSet<(PurchaseId, ProductId)> {
        self.deliveries
            .lock()
            .map(|d| d.delivered.clone())
            .unwrap_or_default()
    }

    fn books(&self) -> Result<std::sync::MutexGuard<'_, Deliveries>, ProvisioningError> {
        self.deliveries
            .lock()
            .map_err(|_| ProvisioningError::Transient("simulator lock poisoned".into()))
    }
}

#[async_trait]
impl Provisioner for SimulatedProvisioner {
    async fn provision(
        &self,
        purchase_id: &PurchaseId,
        line: &PurchaseLine,
    ) -> Result<(), ProvisioningError> {
        self.books()?.requests.push(ProvisioningRequest::Provision {
            purchase_id: purchase_id.clone(),
            product_id: line.id.clone(),
        });
        if line.id.as_str().starts_with("slow-provision") {
            tokio::time::sleep(self.slow).await;
        }
        if line.id.as_str().starts_with("fail-provision") {
            return Err(ProvisioningError::Rejected(format!(
                "product {} cannot be provisioned",
                line.id
            )));
        }
        self.books()?
            .delivered
            .insert((purchase_id.clone(), line.id.clone()));
        Ok(())
    }

    async fn revoke(
        &self,
        purchase_id: &PurchaseId,
        line: &PurchaseLine,
    ) -> Result<(), ProvisioningError> {
        let mut books = self.books()?;
        books.requests.push(ProvisioningRequest::Revoke {
            purchase_id: purchase_id.clone(),
            product_id: line.id.clone(),
        });
        books
            .delivered
            .remove(&(purchase_id.clone(), line.id.clone()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::purchase::{LineStatus, ProductKind};

    fn capture(token: &str, key: &str) -> CaptureRequest {
        CaptureRequest {
            purchase_id: PurchaseId::new("p-1"),
            idempotency_key: key.into(),
            amount: 500,
            currency: "EUR".into(),
            method: "card".into(),
            transaction_id: token.into(),
        }
    }

    fn refund(key: &str) -> RefundRequest {
        RefundRequest {
            purchase_id: PurchaseId::new("p-1"),
            idempotency_key: key.into(),
            amount: 500,
            currency: "EUR".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn slow_token_takes_its_time_then_captures() {
        let sim = SimulatedPaymentGateway::default();
        let started = tokio::time::Instant::now();
        assert!(sim.capture(&capture("tok_slow", "k")).await.is_ok());
        assert!(started.elapsed() >= SLOW_CAPTURE);
        assert_eq!(sim.captures(), 1);
    }

    #[tokio::test]
    async fn simulator_follows_the_documented_tokens() {
        let sim = SimulatedPaymentGateway::default();
        assert!(matches!(
            sim.capture(&capture("tok_decline_insufficient_funds", "k0"))
                .await,
            Err(PaymentError::Declined(_))
        ));
        for _ in 0..2 {
            assert!(matches!(
                sim.capture(&capture("tok_flaky", "k1")).await,
                Err(PaymentError::Transient(_))
            ));
        }
        assert!(sim.capture(&capture("tok_flaky", "k1")).await.is_ok());
        // The same key is the same capture, not a second charge.
        assert!(sim.capture(&capture("tok_flaky", "k1")).await.is_ok());
        assert_eq!(sim.captures(), 1);
        assert_eq!(sim.refund(&refund("r1")).await, Ok(RefundOutcome::Refunded));
        // The same refund key answers the same; a new one finds nothing left.
        assert_eq!(sim.refund(&refund("r1")).await, Ok(RefundOutcome::Refunded));
        assert_eq!(
            sim.refund(&refund("r2")).await,
            Ok(RefundOutcome::NothingToRefund)
        );
        assert_eq!(sim.refunds(), 1);
        let account = &sim.accounts()[&PurchaseId::new("p-1")];
        assert_eq!((account.captured, account.refunded), (500, 500));
        assert_eq!(sim.requests().len(), 8);
    }

    #[tokio::test]
    async fn a_second_capture_key_is_a_second_charge() {
        // What makes the request log a real check of the orchestrator: the
        // simulator does not hide a capture sent twice with two keys.
        let sim = SimulatedPaymentGateway::default();
        sim.capture(&capture("tok_visa", "a")).await.unwrap();
        sim.capture(&capture("tok_visa", "b")).await.unwrap();
        assert_eq!(sim.accounts()[&PurchaseId::new("p-1")].captured, 1000);
    }

    #[tokio::test]
    async fn provisioning_refuses_fail_products_and_revokes_deliveries() {
        let sim = SimulatedProvisioner::default();
        let line = |id: &str| PurchaseLine {
            id: ProductId::new(id),
            quantity: 1,
            status: LineStatus::Reserved,
            unit_price: 100,
            kind: ProductKind::Digital,
        };
        let id = PurchaseId::new("p-1");
        sim.provision(&id, &line("ebook")).await.unwrap();
        assert!(matches!(
            sim.provision(&id, &line("fail-provision-key")).await,
            Err(ProvisioningError::Rejected(_))
        ));
        assert_eq!(sim.delivered().len(), 1);
        sim.revoke(&id, &line("ebook")).await.unwrap();
        assert!(sim.delivered().is_empty());
        assert_eq!(sim.requests().len(), 3);
    }
}
