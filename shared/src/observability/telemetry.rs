//! Logging set-up. Lambda gets one JSON object per line (CloudWatch Logs
//! Insights can query the fields; the runtime's span adds `requestId`);
//! the local server gets readable text. `RUST_LOG` overrides the level.

use tracing_subscriber::EnvFilter;

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// For Lambda functions: JSON, no ANSI colours, no timestamps' local format
/// surprises (RFC 3339 UTC), current span fields included.
pub fn init_lambda() {
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter())
        // Every enclosing span's fields: the runtime's `requestId` and our
        // `purchase_id` / `execution_name` / `request_id` on every line.
        .with_current_span(false)
        .with_span_list(true)
        .with_target(false)
        .try_init();
}

/// For the local server and CLI.
pub fn init_local() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_target(false)
        .try_init();
}
