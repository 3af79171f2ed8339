//! Business metrics in CloudWatch's embedded metric format (EMF): one JSON
//! object per line on stdout, which Lambda ships to CloudWatch Logs and
//! CloudWatch turns into metrics — no API calls, no extra latency.
//!
//! Namespace `PurchaseOrchestrator`, one counter per outcome:
//! `PurchasesCreated`, `PurchasesCompleted`, `PurchasesFailed` (dimension
//! `FailureReason`), `PurchasesCancelled`, `PurchasesRejected`.
//! Outside Lambda (local mode) the same events are logged at debug level.

use serde_json::json;

pub const NAMESPACE: &str = "PurchaseOrchestrator";

/// One business event worth counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurchaseEvent<'a> {
    Created,
    Completed,
    Failed { reason: &'a str },
    Cancelled,
    Rejected,
}

impl PurchaseEvent<'_> {
    pub fn metric_name(&self) -> &'static str {
        match self {
            PurchaseEvent::Created => "PurchasesCreated",
            PurchaseEvent::Completed => "PurchasesCompleted",
            PurchaseEvent::Failed { .. } => "PurchasesFailed",
            PurchaseEvent::Cancelled => "PurchasesCancelled",
            PurchaseEvent::Rejected => "PurchasesRejected",
        }
    }

    /// The EMF document for this event.
    pub fn emf(&self, purchase_id: &str, timestamp_ms: i64) -> serde_json::Value {
        let name = self.metric_name();
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
        if let PurchaseEvent::Failed { reason } = self {
            document["_aws"]["CloudWatchMetrics"][0]["Dimensions"] = json!([["FailureReason"]]);
            document["FailureReason"] = json!(reason);
        }
        document
    }
}

/// Records the event: an EMF line on Lambda, a debug log elsewhere.
pub fn record(event: PurchaseEvent<'_>, purchase_id: &str) {
    if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
        let document = event.emf(purchase_id, chrono::Utc::now().timestamp_millis());
        // EMF must be the whole log line, so it bypasses the tracing formatter.
        println!("{document}");
    } else {
        tracing::debug!(metric = event.metric_name(), purchase_id, "purchase event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_purchases_are_counted_by_reason() {
        let document = PurchaseEvent::Failed {
            reason: "OUT_OF_STOCK",
        }
        .emf("p-1", 1_700_000_000_000);
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
        ] {
            let document = event.emf("p-1", 0);
            let name = event.metric_name();
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
