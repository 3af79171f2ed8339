//! Business metrics in CloudWatch's embedded metric format (EMF): one JSON
//! object per line on stdout, which Lambda ships to CloudWatch Logs and
//! CloudWatch turns into metrics — no API calls, no extra latency.
//!
//! Namespace `PurchaseOrchestrator`, one counter per outcome:
//! `PurchasesCreated`, `PurchasesCompleted`, `PurchasesFailed` (dimension
//! `FailureReason`), `PurchasesCancelled`, `PurchasesRejected`,
//! `PurchasesNeedingAttention` (the template alarms on it).
//! Outside Lambda (local mode) the same events are logged at debug level.

use serde_json::json;

pub use crate::domain::lifecycle::PurchaseEvent;

pub const NAMESPACE: &str = "PurchaseOrchestrator";

/// The metric a business event counts.
pub fn metric_name(event: PurchaseEvent) -> &'static str {
    match event {
        PurchaseEvent::Created => "PurchasesCreated",
        PurchaseEvent::Completed => "PurchasesCompleted",
        PurchaseEvent::Failed(_) => "PurchasesFailed",
        PurchaseEvent::Cancelled => "PurchasesCancelled",
        PurchaseEvent::Rejected => "PurchasesRejected",
        PurchaseEvent::NeedsAttention => "PurchasesNeedingAttention",
    }
}

/// The EMF document for an event.
pub fn emf(event: PurchaseEvent, purchase_id: &str, timestamp_ms: i64) -> serde_json::Value {
    let name = metric_name(event);
    let mut document = json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [[]],
                "Metrics": [{"Name": name, "Unit": "Count"}]
            }]
        },
        name: 1,
        // Not a dimension (unbounded): searchable in Logs Insights.
        "purchaseId": purchase_id,
    });
    if let PurchaseEvent::Failed(reason) = event {
        document["_aws"]["CloudWatchMetrics"][0]["Dimensions"] = json!([["FailureReason"]]);
        document["FailureReason"] = json!(reason.as_str());
    }
    document
}

/// Records the event: an EMF line on Lambda, a debug log elsewhere.
pub fn record(event: PurchaseEvent, purchase_id: &str) {
    if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
        let document = emf(event, purchase_id, chrono::Utc::now().timestamp_millis());
        // EMF must be the whole log line, so it bypasses the tracing formatter.
        println!("{document}");
    } else {
        tracing::debug!(metric = metric_name(event), purchase_id, "purchase event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::purchase::FailureReason;

    #[test]
    fn failed_purchases_are_counted_by_reason() {
        let document = emf(
            PurchaseEvent::Failed(FailureReason::OutOfStock),
            "p-1",
            1_700_000_000_000,
        );
        let directive = &document["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(directive["Dimensions"], json!([["FailureReason"]]));
        assert_eq!(directive["Metrics"][0]["Name"], "PurchasesFailed");
        assert_eq!(document["PurchasesFailed"], 1);
        assert_eq!(document["FailureReason"], "OUT_OF_STOCK");
        assert_eq!(document["_aws"]["Timestamp"], 1_700_000_000_000i64);
    }

    #[test]
    fn every_metric_value_is_declared() {
        for event in [
            PurchaseEvent::Created,
            PurchaseEvent::Completed,
            PurchaseEvent::Cancelled,
            PurchaseEvent::Rejected,
            PurchaseEvent::NeedsAttention,
        ] {
            let document = emf(event, "p-1", 0);
            let name = metric_name(event);
            assert_eq!(
                document["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
                name
            );
            assert_eq!(document[name], 1);
            assert_eq!(
                document["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
                json!([[]])
            );
        }
    }
}
