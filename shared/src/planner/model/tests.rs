use super::*;

#[test]
fn given_each_error_when_categorised_then_clients_get_a_short_stable_reason() {
    let cases = [
        (LlmError::Timeout("x".into()), "timeout"),
        (LlmError::Connect("x".into()), "unavailable"),
        (LlmError::Server("x".into()), "unavailable"),
        (LlmError::RateLimited("x".into()), "rate_limited"),
        (LlmError::Auth("x".into()), "misconfigured"),
        (LlmError::Config("x".into()), "misconfigured"),
        (LlmError::TemperatureRejected("x".into()), "misconfigured"),
        (LlmError::Unparseable("x".into()), "invalid_output"),
        (LlmError::InvalidPlan("x".into()), "invalid_plan"),
        (LlmError::Refused("x".into()), "refused"),
    ];
    for (error, want) in cases {
        assert_eq!(error.category(), want, "{error:?}");
    }
}

#[test]
fn given_http_statuses_when_classified_then_each_maps_to_its_kind() {
    assert!(matches!(
        LlmError::from_status(401, "", None),
        LlmError::Auth(_)
    ));
    assert!(matches!(
        LlmError::from_status(403, "x", None),
        LlmError::Auth(_)
    ));
    assert!(matches!(
        LlmError::from_status(429, "", None),
        LlmError::RateLimited(_)
    ));
    assert!(matches!(
        LlmError::from_status(500, "", None),
        LlmError::Server(_)
    ));
    assert!(matches!(
        LlmError::from_status(503, "", None),
        LlmError::Server(_)
    ));
    assert!(matches!(
        LlmError::from_status(400, "", None),
        LlmError::Config(_)
    ));
    assert!(matches!(
        LlmError::from_status(404, "", None),
        LlmError::Config(_)
    ));
    assert!(matches!(
        LlmError::from_status(408, "", None),
        LlmError::Timeout(_)
    ));
    assert!(LlmError::from_status(404, "", None).is_configuration());
    assert!(LlmError::from_status(401, "", None).is_configuration());
    assert!(!LlmError::from_status(429, "", None).is_configuration());
    assert_eq!(
        LlmError::from_status(429, "slow down", None).to_string(),
        "rate limited: HTTP 429: slow down"
    );
}

#[test]
fn given_llm_errors_when_converted_to_plan_errors_then_invalid_plans_stay_invalid() {
    assert_eq!(
        PlanError::from(LlmError::InvalidPlan("cycle".into())),
        PlanError::Invalid("cycle".into())
    );
    assert!(matches!(
        PlanError::from(LlmError::Timeout("x".into())),
        PlanError::Unavailable(_)
    ));
}
