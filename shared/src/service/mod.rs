//! The purchase service: how API handlers and workflow steps apply the
//! lifecycle to stored purchases. Each change is *load → decide → conditional
//! write on `version`*; the effects of a decision are carried out only after
//! its write has landed, so nothing is done that the store does not know of.

pub mod reconcile;

use std::time::Duration;

use chrono::Utc;

use crate::domain::lifecycle::{Command, Decision, Effect, RulesInput, decide};
use crate::domain::purchase::{Purchase, PurchaseStatus, TaskDecision};
use crate::domain::rules::{Facts, RuleSet};
use crate::domain::{DomainError, PurchaseId};
use crate::observability::metrics;
use crate::ports::store::{
    DEFAULT_RULE_SET, PurchaseQuery, PurchaseStore, RuleSetStore, StoreError,
};
use crate::ports::workflow::{Workflow, WorkflowError};

/// How often a decision is taken again after losing the write to a
/// concurrent one before the caller is told to retry later.
const ATTEMPTS: u32 = 24;

#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A decision as written.
#[derive(Debug, Clone)]
pub struct Transition {
    /// The purchase as stored now.
    pub purchase: Purchase,
    /// What to do now that it is written.
    pub effects: Vec<Effect>,
    /// Whether anything was written.
    pub written: bool,
}

/// Loads the purchase, lets `decide` take a decision on it and writes it
/// conditionally on the version read; on a lost race, loads and decides
/// again. Counting effects ([`Effect::Count`]) are recorded here, once, for
/// the write that took them.
pub async fn transition(
    store: &dyn PurchaseStore,
    id: &PurchaseId,
    decide: impl FnMut(&Purchase) -> Result<Decision, DomainError>,
) -> Result<Transition, TransitionError> {
    transition_from(store, id, None, decide).await
}

/// [`transition`], deciding first on `known` (a copy the caller read or
/// wrote a moment ago) instead of reading it again: the write is
/// conditional on its version all the same, and a lost race reads afresh.
/// One round trip fewer for a step that reads, calls a provider, records.
async fn transition_from(
    store: &dyn PurchaseStore,
    id: &PurchaseId,
    mut known: Option<Purchase>,
    mut decide: impl FnMut(&Purchase) -> Result<Decision, DomainError>,
) -> Result<Transition, TransitionError> {
    for attempt in 0..ATTEMPTS {
        let current = match known.take() {
            Some(purchase) => purchase,
            None => store
                .get_purchase(id)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("purchase {id}")))?,
        };
        let decision = decide(&current)?;
        let Some(next) = decision.next else {
            return Ok(Transition {
                purchase: current,
                effects: decision.effects,
                written: false,
            });
        };
        match store.save_purchase(&next, &decision.stock).await {
            Ok(()) => {
                let effects = record_counts(&next.purchase_id, decision.effects);
                return Ok(Transition {
                    purchase: next,
                    effects,
                    written: true,
                });
            }
            Err(StoreError::VersionConflict) => {
                // Many writers on one purchase (a burst of PUTs, a cancel
                // racing a step): back off with full jitter so they spread
                // out instead of colliding again in lockstep.
                let cap_ms = 1u64 << attempt.min(8);
                tokio::time::sleep(Duration::from_millis(fastrand::u64(0..=cap_ms))).await;
            }
            Err(other) => return Err(other.into()),
        }
    }
    Err(StoreError::VersionConflict.into())
}

/// [`transition`] with one command, decided at the current time.
pub async fn apply<'c>(
    store: &dyn PurchaseStore,
    id: &PurchaseId,
    mut command: impl FnMut(&Purchase) -> Command<'c>,
) -> Result<Transition, TransitionError> {
    transition(store, id, |p| decide(p, command(p), Utc::now())).await
}

/// [`apply`] on `known`, the purchase as the caller last saw it (see
/// [`transition_from`]).
pub async fn apply_to<'c>(
    store: &dyn PurchaseStore,
    known: Purchase,
    mut command: impl FnMut(&Purchase) -> Command<'c>,
) -> Result<Transition, TransitionError> {
    let id = known.purchase_id.clone();
    transition_from(store, &id, Some(known), |p| {
        decide(p, command(p), Utc::now())
    })
    .await
}

/// Records the counting effects of a decision that was written (each
/// business event counted once) and returns the others, still to be done.
pub fn record_counts(id: &PurchaseId, effects: Vec<Effect>) -> Vec<Effect> {
    effects
        .into_iter()
        .filter(|effect| match effect {
            Effect::Count(event) => {
                metrics::record(*event, id.as_str());
                false
            }
            _ => true,
        })
        .collect()
}

/// The rules of a purchase, ready to judge it: the stored `default` set and
/// the rules applied to it, with the facts they need.
pub async fn purchase_rules(
    purchases: &dyn PurchaseStore,
    rule_sets: &dyn RuleSetStore,
    purchase: &Purchase,
) -> Result<RulesInput, TransitionError> {
    let default = match rule_sets.get_rule_set(DEFAULT_RULE_SET).await? {
        Some(stored) => RuleSet::from_stored(
            &stored.rules,
            &format!("stored rule set {DEFAULT_RULE_SET}"),
            &format!("rule set {DEFAULT_RULE_SET} v{}", stored.version),
        )?,
        None => RuleSet::default(),
    };
    let applied = RuleSet::from_stored(
        &purchase.applied_rules,
        &format!("the rules applied to purchase {}", purchase.purchase_id),
        "applied rules",
    )?;
    let rules = default.and(applied);
    let facts = rule_facts(purchases, &rules, purchase).await?;
    Ok(RulesInput {
        rules,
        facts,
        applied_rules_seen: purchase.applied_rules.len(),
    })
}

/// Loads what `rules` need from the store (only what they need).
pub async fn rule_facts(
    store: &dyn PurchaseStore,
    rules: &RuleSet,
    purchase: &Purchase,
) -> Result<Facts, StoreError> {
    let Some(window) = rules.history_window() else {
        return Ok(Facts::default());
    };
    let since = Utc::now() - window;
    let mut facts = Facts::default();
    let mut query = PurchaseQuery {
        customer_id: Some(purchase.customer_id.clone()),
        limit: 100,
        ..PurchaseQuery::default()
    };
    // Newest first: stop at the first page that reaches past the window.
    loop {
        let page = store.list_purchases(&query).await?;
        let mut reached_end = page.next_token.is_none();
        for other in &page.purchases {
            if other.created_at < since {
                reached_end = true;
                break;
            }
            let counts = other.purchase_id != purchase.purchase_id
                && !matches!(
                    other.status,
                    PurchaseStatus::Failed | PurchaseStatus::Cancelled | PurchaseStatus::Rejected
                );
            if counts {
                facts.recent_purchases.push(other.created_at);
            }
        }
        if reached_end {
            return Ok(facts);
        }
        query.next_token = page.next_token;
    }
}

/// Why a parked task could not be told.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Workflow(WorkflowError),
    #[error(transparent)]
    Transition(#[from] TransitionError),
}

/// Invariant 3's one code path: tells the parked task the decision, then
/// forgets its token — only once delivered, or once the task is known to be
/// gone. Any other failure keeps the token, so the next attempt (a retried
/// request, the step, the reconciler) delivers it again.
pub async fn deliver(
    store: &dyn PurchaseStore,
    workflow: &dyn Workflow,
    id: &PurchaseId,
    token: &str,
    decision: TaskDecision,
) -> Result<(), NotifyError> {
    match workflow.notify(token, decision).await {
        Ok(()) => {}
        Err(WorkflowError::TaskGone(reason)) => {
            tracing::info!(purchase_id = %id, %reason, "parked task already gone; forgetting its token");
        }
        Err(other) => return Err(NotifyError::Workflow(other)),
    }
    apply(store, id, |_| Command::NotificationDelivered { token }).await?;
    Ok(())
}

/// Delivers every `Notify` effect of a transition.
pub async fn deliver_all(
    store: &dyn PurchaseStore,
    workflow: &dyn Workflow,
    transition: &Transition,
) -> Result<(), NotifyError> {
    for effect in &transition.effects {
        if let Effect::Notify { token, decision } = effect {
            deliver(
                store,
                workflow,
                &transition.purchase.purchase_id,
                token,
                *decision,
            )
            .await?;
        }
    }
    Ok(())
}
