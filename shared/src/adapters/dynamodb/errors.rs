//! Failed calls as the store's errors.

use std::time::Duration;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::CancellationReason;

use crate::ports::store::StoreError;

/// Maps a failed call that is not a condition failure the caller handles:
/// throttling, server errors and transport failures (after the SDK's own
/// retries) are `Unavailable`, so the API answers 503 + Retry-After and the
/// workflow retries the step; anything else is a bug or misconfiguration.
pub(super) fn classify<E>(error: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let detail = DisplayErrorContext(&error).to_string();
    let transient = match &error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => {
            is_transient_code(service.err().code()) || service.raw().status().is_server_error()
        }
        _ => false,
    };
    if transient {
        StoreError::Unavailable(detail)
    } else {
        StoreError::Internal(detail)
    }
}

/// DynamoDB error codes that mean "try again later", as opposed to a request
/// that can never succeed.
pub(super) fn is_transient_code(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "ProvisionedThroughputExceededException"
                | "RequestLimitExceeded"
                | "ThrottlingException"
                | "TransactionConflictException"
                | "TransactionInProgressException"
                | "InternalServerError"
                | "ServiceUnavailable"
        )
    )
}

/// Cancellation reason codes of `TransactWriteItems` that a retry may clear.
pub(super) fn is_transient_reason(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "TransactionConflict"
                | "ThrottlingError"
                | "ProvisionedThroughputExceeded"
                | "RequestLimitExceeded"
        )
    )
}

pub(super) fn condition_failed(reason: &CancellationReason) -> bool {
    reason.code() == Some("ConditionalCheckFailed")
}

/// Why a transaction did not commit.
pub(super) enum TransactionFailure {
    /// Cancelled; one reason per action, in request order.
    Cancelled(Vec<CancellationReason>),
    Other(StoreError),
}

pub(super) fn transaction_failure(
    error: SdkError<TransactWriteItemsError, HttpResponse>,
) -> TransactionFailure {
    match error.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
            TransactionFailure::Cancelled(cancelled.cancellation_reasons().to_vec())
        }
        _ => TransactionFailure::Other(classify(error)),
    }
}

/// Jittered exponential backoff for the store's own retries: ~25, 50, 100 ms.
pub(super) async fn backoff(attempt: u32) {
    let base = 25u64 << attempt.saturating_sub(1).min(6);
    tokio::time::sleep(Duration::from_millis(
        base / 2 + fastrand::u64(0..=base / 2),
    ))
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_server_errors_are_transient() {
        for code in [
            "ProvisionedThroughputExceededException",
            "RequestLimitExceeded",
            "ThrottlingException",
        ] {
            assert!(is_transient_code(Some(code)), "{code}");
        }
        for code in [
            "ConditionalCheckFailedException",
            "ValidationException",
            "ResourceNotFoundException",
        ] {
            assert!(!is_transient_code(Some(code)), "{code}");
        }
        assert!(is_transient_reason(Some("TransactionConflict")));
        assert!(!is_transient_reason(Some("ConditionalCheckFailed")));
    }
}
