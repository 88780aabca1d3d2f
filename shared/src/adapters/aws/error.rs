//! Mapping SDK errors into [`StoreError`], so no SDK type leaks through a port.

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;

use crate::ports::StoreError;

/// Error codes that mean "slow down / try again later" across DynamoDB, SQS and Step
/// Functions.
const TRANSIENT_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "LimitExceededException",
    "ExecutionLimitExceeded",
    "KmsThrottlingException",
    "InternalServerError",
    "InternalFailure",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeoutException",
    "InvalidEndpointException",
];

/// Error codes that mean the request itself is malformed.
const INVALID_CODES: &[&str] = &[
    "ValidationException",
    "SerializationException",
    "InvalidParameterValue",
    "InvalidParameterCombination",
    "InvalidArn",
    "InvalidName",
    "InvalidExecutionInput",
    "InvalidAttributeValue",
    "InvalidMessageContents",
    "InvalidBatchEntryId",
    "BatchEntryIdsNotDistinct",
    "BatchRequestTooLong",
    "EmptyBatchRequest",
    "TooManyEntriesInBatchRequest",
];

/// Map an SDK error of operation `op` (the same smithy error type backs every AWS SDK crate,
/// so this serves DynamoDB, SQS and Step Functions alike).
pub(crate) fn sdk_error<E>(op: &str, err: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let detail = format!("{op}: {}", DisplayErrorContext(&err));
    let mapped = match &err {
        SdkError::ConstructionFailure(_) => StoreError::Invalid(detail),
        SdkError::ServiceError(ctx) => {
            let code = ctx.err().code().unwrap_or_default();
            classify(code, ctx.raw().status().as_u16(), detail)
        }
        // Timeouts, connection failures, unparseable responses (and any future kind).
        _ => StoreError::unavailable(detail),
    };
    mapped.caused_by(err)
}

fn classify(code: &str, status: u16, detail: String) -> StoreError {
    if code == "ConditionalCheckFailedException" || code == "TransactionConflictException" {
        StoreError::Conflict(detail)
    } else if TRANSIENT_CODES.contains(&code) || status >= 500 {
        StoreError::unavailable(detail)
    } else if INVALID_CODES.contains(&code) {
        StoreError::Invalid(detail)
    } else {
        // Missing tables, queues or state machines, access denied, ...: an infrastructure
        // problem, not the caller's; let the message be retried (and alarm via the DLQ).
        StoreError::unavailable(detail)
    }
}

/// Build-time errors of SDK request types (a required field left unset).
pub(crate) fn build_error(err: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Invalid(format!("building a DynamoDB request: {err}"))
}

/// The outcome of a failed `TransactWriteItems`.
pub(crate) enum TxFailure {
    /// The transaction was cancelled; one reason code per item, in request order
    /// (`"None"` for items that were fine).
    Cancelled(Vec<String>),
    /// Any other failure, already mapped.
    Other(StoreError),
}

pub(crate) const CONDITION_FAILED: &str = "ConditionalCheckFailed";
pub(crate) const TRANSACTION_CONFLICT: &str = "TransactionConflict";

pub(crate) fn tx_failure(err: SdkError<TransactWriteItemsError, HttpResponse>) -> TxFailure {
    if let Some(TransactWriteItemsError::TransactionCanceledException(e)) = err.as_service_error() {
        let reasons = e
            .cancellation_reasons()
            .iter()
            .map(|r| r.code().unwrap_or("None").to_owned())
            .collect();
        return TxFailure::Cancelled(reasons);
    }
    TxFailure::Other(sdk_error("TransactWriteItems", err))
}

/// The error for cancellation reasons a caller has no more specific answer for.
pub(crate) fn cancelled_error(what: &str, reasons: &[String]) -> StoreError {
    let detail = format!("{what}: transaction cancelled ({})", reasons.join(", "));
    let has = |code: &str| reasons.iter().any(|r| r == code);
    if has(CONDITION_FAILED) || has(TRANSACTION_CONFLICT) {
        StoreError::Conflict(detail)
    } else if has("ValidationError") {
        StoreError::Invalid(detail)
    } else {
        // ThrottlingError, ProvisionedThroughputExceeded, ...
        StoreError::unavailable(detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_an_sdk_failure_when_mapped_then_the_sdk_error_is_kept_as_the_source() {
        let err: SdkError<aws_sdk_dynamodb::operation::get_item::GetItemError, HttpResponse> =
            SdkError::timeout_error("no answer in 3 s");
        let mapped = sdk_error("GetItem", err);
        assert!(matches!(mapped, StoreError::Unavailable { .. }));
        assert!(mapped.to_string().contains("GetItem"), "{mapped}");
        assert!(std::error::Error::source(&mapped).is_some());
        let StoreError::Unavailable {
            source: Some(cause),
            ..
        } = &mapped
        else {
            panic!("no cause kept: {mapped:?}");
        };
        let sdk = cause
            .get_ref()
            .downcast_ref::<SdkError<aws_sdk_dynamodb::operation::get_item::GetItemError, HttpResponse>>()
            .expect("the cause is the SDK error itself");
        assert!(matches!(sdk, SdkError::TimeoutError(_)), "{sdk:?}");
    }

    #[test]
    fn given_error_codes_when_classified_then_each_maps_to_its_store_error() {
        let c = |code: &str, status: u16| classify(code, status, String::new());
        assert!(matches!(
            c("ConditionalCheckFailedException", 400),
            StoreError::Conflict(_)
        ));
        assert!(matches!(
            c("ProvisionedThroughputExceededException", 400),
            StoreError::Unavailable { .. }
        ));
        assert!(matches!(c("Whatever", 503), StoreError::Unavailable { .. }));
        assert!(matches!(
            c("ValidationException", 400),
            StoreError::Invalid(_)
        ));
        assert!(matches!(
            c("ResourceNotFoundException", 400),
            StoreError::Unavailable { .. }
        ));
    }

    #[test]
    fn given_cancellation_reasons_when_mapped_then_conditions_are_conflicts() {
        let r = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(matches!(
            cancelled_error("x", &r(&["None", CONDITION_FAILED])),
            StoreError::Conflict(_)
        ));
        assert!(matches!(
            cancelled_error("x", &r(&[TRANSACTION_CONFLICT, "None"])),
            StoreError::Conflict(_)
        ));
        assert!(matches!(
            cancelled_error("x", &r(&["ThrottlingError"])),
            StoreError::Unavailable { .. }
        ));
        assert!(matches!(
            cancelled_error("x", &r(&["ValidationError"])),
            StoreError::Invalid(_)
        ));
    }
}
