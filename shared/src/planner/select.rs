//! Choosing the planner from configuration.
//!
//! | Variable | Meaning | Default |
//! |---|---|---|
//! | `CRANE_PLANNER` | `pattern`, `llm` or `bedrock` | `llm` if `CRANE_LLM_API_KEY` is set, else `pattern` |
//! | `CRANE_LLM_BASE_URL` | OpenAI-compatible API base URL | `https://api.openai.com/v1` |
//! | `CRANE_LLM_MODEL` | model name | `gpt-4o-mini` |
//! | `CRANE_LLM_API_KEY` | bearer token (local servers usually need none) | none |
//! | `CRANE_LLM_TIMEOUT_MS` | budget of one planning call (llm and bedrock) | `10000` |
//! | `CRANE_LLM_RESPONSE_FORMAT` | `json_schema`, `json_object` or `none` | `json_schema` |
//! | `CRANE_LLM_TEMPERATURE` | `0` to `2`, or `none` to leave it out (reasoning models) | `0` |
//! | `CRANE_BEDROCK_MODEL_ID` | Bedrock model id or inference profile (required for bedrock) | none |
//! | `CRANE_BEDROCK_REGION` | region override for Bedrock | the AWS default chain's |
//!
//! `llm` and `bedrock` are wrapped in the [`FallbackPlanner`], so the pattern planner takes
//! over when the model fails. The Bedrock client is built lazily from the default AWS
//! configuration on the first planning call, so [`planner_from_vars`] stays synchronous and
//! does no I/O; a caller holding a client can use [`BedrockPlanner::with_client`] instead.
//!
//! [`BedrockPlanner::with_client`]: super::model::bedrock::BedrockPlanner::with_client

use std::collections::HashMap;
use std::sync::Arc;

use super::fallback::FallbackPlanner;
use super::model::openai::{self, OpenAiConfig, OpenAiPlanner, ResponseFormat};
use super::{PatternPlanner, Planner};

/// Longest planning budget accepted, in milliseconds.
pub const MAX_TIMEOUT_MS: u64 = 300_000;

/// Why the configuration names no usable planner.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// `CRANE_PLANNER` names no planner.
    #[error("CRANE_PLANNER={0:?} is not a planner: use pattern, llm or bedrock")]
    UnknownPlanner(String),
    /// A variable's value is not valid.
    #[error("{name}={value:?} is not valid: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Its value (a URL with its credentials redacted).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `CRANE_PLANNER=bedrock` without `CRANE_BEDROCK_MODEL_ID`.
    #[error("CRANE_PLANNER=bedrock needs CRANE_BEDROCK_MODEL_ID (a Bedrock model id or inference profile, e.g. anthropic.claude-3-haiku-20240307-v1:0)")]
    MissingBedrockModel,
    /// `CRANE_PLANNER=bedrock` in a build without the `aws` feature.
    #[error("CRANE_PLANNER=bedrock needs Crane built with the `aws` feature")]
    BedrockNotBuilt,
    /// The OpenAI-compatible planner could not be built.
    #[error("cannot set up the llm planner: {0}")]
    Llm(String),
}

/// The planner configuration read from the variables, before anything is built.
#[derive(Debug, Clone, PartialEq)]
pub enum PlannerChoice {
    /// The offline pattern planner.
    Pattern,
    /// An OpenAI-compatible endpoint, the pattern planner taking over when it fails.
    Llm(OpenAiConfig),
    /// A Bedrock model, the pattern planner taking over when it fails.
    Bedrock {
        /// `CRANE_BEDROCK_MODEL_ID`.
        model_id: String,
        /// `CRANE_BEDROCK_REGION`, if set.
        region: Option<String>,
        /// `CRANE_LLM_TIMEOUT_MS`.
        timeout_ms: u64,
    },
}

/// Read the planner configuration (pure; see the module docs for the variables).
pub fn choice_from_vars(vars: &HashMap<String, String>) -> Result<PlannerChoice, SelectError> {
    let get = |name: &str| {
        vars.get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let api_key = get("CRANE_LLM_API_KEY");
    let kind = match get("CRANE_PLANNER") {
        Some(kind) => kind.to_ascii_lowercase(),
        None if api_key.is_some() => "llm".to_owned(),
        None => "pattern".to_owned(),
    };
    let timeout_ms = match get("CRANE_LLM_TIMEOUT_MS") {
        None => openai::DEFAULT_TIMEOUT_MS,
        Some(v) => match v.parse::<u64>() {
            Ok(ms) if (1..=MAX_TIMEOUT_MS).contains(&ms) => ms,
            _ => {
                return Err(SelectError::Invalid {
                    name: "CRANE_LLM_TIMEOUT_MS",
                    value: v,
                    reason: format!("expected milliseconds from 1 to {MAX_TIMEOUT_MS}"),
                })
            }
        },
    };
    match kind.as_str() {
        "pattern" => Ok(PlannerChoice::Pattern),
        "llm" => {
            let base_url =
                get("CRANE_LLM_BASE_URL").unwrap_or_else(|| openai::DEFAULT_BASE_URL.into());
            if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                return Err(SelectError::Invalid {
                    name: "CRANE_LLM_BASE_URL",
                    value: openai::redact_url(&base_url),
                    reason: "expected an http:// or https:// URL such as https://api.openai.com/v1"
                        .into(),
                });
            }
            let response_format = match get("CRANE_LLM_RESPONSE_FORMAT") {
                None => ResponseFormat::default(),
                Some(v) => ResponseFormat::parse(&v).ok_or_else(|| SelectError::Invalid {
                    name: "CRANE_LLM_RESPONSE_FORMAT",
                    value: v,
                    reason: "expected json_schema, json_object or none".into(),
                })?,
            };
            let temperature = match get("CRANE_LLM_TEMPERATURE") {
                None => Some(openai::DEFAULT_TEMPERATURE),
                Some(v) if v.eq_ignore_ascii_case("none") => None,
                Some(v) => match v.parse::<f64>() {
                    Ok(t) if (0.0..=openai::MAX_TEMPERATURE).contains(&t) => Some(t),
                    _ => {
                        return Err(SelectError::Invalid {
                            name: "CRANE_LLM_TEMPERATURE",
                            value: v,
                            reason: format!(
                                "expected a number from 0 to {}, or none to leave it out",
                                openai::MAX_TEMPERATURE
                            ),
                        })
                    }
                },
            };
            Ok(PlannerChoice::Llm(OpenAiConfig {
                base_url,
                model: get("CRANE_LLM_MODEL").unwrap_or_else(|| openai::DEFAULT_MODEL.into()),
                api_key,
                timeout_ms,
                response_format,
                temperature,
            }))
        }
        "bedrock" => Ok(PlannerChoice::Bedrock {
            model_id: get("CRANE_BEDROCK_MODEL_ID").ok_or(SelectError::MissingBedrockModel)?,
            region: get("CRANE_BEDROCK_REGION"),
            timeout_ms,
        }),
        _ => Err(SelectError::UnknownPlanner(kind)),
    }
}

/// Build the configured planner. `llm` and `bedrock` fall back to the pattern planner.
pub fn planner_from_vars(vars: &HashMap<String, String>) -> Result<Arc<dyn Planner>, SelectError> {
    planner_from_choice(choice_from_vars(vars)?)
}

/// [`planner_from_vars`] over the process environment.
pub fn planner_from_env() -> Result<Arc<dyn Planner>, SelectError> {
    planner_from_vars(&std::env::vars().collect())
}

/// Build the planner a [`PlannerChoice`] describes.
pub fn planner_from_choice(choice: PlannerChoice) -> Result<Arc<dyn Planner>, SelectError> {
    match choice {
        PlannerChoice::Pattern => Ok(Arc::new(PatternPlanner)),
        PlannerChoice::Llm(config) => {
            if config.api_key.is_none() && config.base_url.starts_with(openai::DEFAULT_BASE_URL) {
                tracing::warn!("CRANE_PLANNER=llm points at OpenAI without CRANE_LLM_API_KEY; every plan will fall back");
            }
            tracing::info!(
                planner = "llm",
                base_url = %openai::redact_url(&config.base_url),
                model = %config.model,
                timeout_ms = config.timeout_ms,
                "LLM planner configured"
            );
            let planner =
                OpenAiPlanner::new(config).map_err(|e| SelectError::Llm(e.to_string()))?;
            Ok(Arc::new(FallbackPlanner::new(Arc::new(planner))))
        }
        PlannerChoice::Bedrock {
            model_id,
            region,
            timeout_ms,
        } => bedrock(model_id, region, timeout_ms),
    }
}

#[cfg(feature = "aws")]
fn bedrock(
    model_id: String,
    region: Option<String>,
    timeout_ms: u64,
) -> Result<Arc<dyn Planner>, SelectError> {
    use super::model::bedrock::{BedrockConfig, BedrockPlanner};
    tracing::info!(planner = "bedrock", model = %model_id, timeout_ms, "Bedrock planner configured");
    let planner = BedrockPlanner::new(BedrockConfig {
        model_id,
        region,
        timeout_ms,
    });
    Ok(Arc::new(FallbackPlanner::new(Arc::new(planner))))
}

#[cfg(not(feature = "aws"))]
fn bedrock(
    _model_id: String,
    _region: Option<String>,
    _timeout_ms: u64,
) -> Result<Arc<dyn Planner>, SelectError> {
    Err(SelectError::BedrockNotBuilt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn given_nothing_when_chosen_then_the_pattern_planner_is_the_default() {
        assert_eq!(choice_from_vars(&vars(&[])), Ok(PlannerChoice::Pattern));
        let p = planner_from_vars(&vars(&[])).expect("planner");
        assert_eq!(p.name(), "pattern");
    }

    #[test]
    fn given_only_an_api_key_when_chosen_then_the_llm_planner_with_defaults_is_used() {
        let choice = choice_from_vars(&vars(&[("CRANE_LLM_API_KEY", "sk-1")])).expect("choice");
        assert_eq!(
            choice,
            PlannerChoice::Llm(OpenAiConfig {
                api_key: Some("sk-1".into()),
                ..OpenAiConfig::default()
            })
        );
        let p = planner_from_vars(&vars(&[("CRANE_LLM_API_KEY", "sk-1")])).expect("planner");
        assert_eq!(p.name(), "llm");
        assert_eq!(p.degraded(), None);
    }

    #[test]
    fn given_a_key_but_pattern_asked_when_chosen_then_pattern_wins() {
        let v = vars(&[("CRANE_LLM_API_KEY", "sk-1"), ("CRANE_PLANNER", "Pattern")]);
        assert_eq!(choice_from_vars(&v), Ok(PlannerChoice::Pattern));
    }

    #[test]
    fn given_a_local_server_when_chosen_then_no_key_is_needed_and_values_are_read() {
        let v = vars(&[
            ("CRANE_PLANNER", "llm"),
            ("CRANE_LLM_BASE_URL", "http://localhost:11434/v1"),
            ("CRANE_LLM_MODEL", "llama3.1"),
            ("CRANE_LLM_TIMEOUT_MS", "30000"),
            ("CRANE_LLM_RESPONSE_FORMAT", "json_object"),
            ("CRANE_LLM_API_KEY", " "),
        ]);
        assert_eq!(
            choice_from_vars(&v),
            Ok(PlannerChoice::Llm(OpenAiConfig {
                base_url: "http://localhost:11434/v1".into(),
                model: "llama3.1".into(),
                api_key: None,
                timeout_ms: 30_000,
                response_format: ResponseFormat::JsonObject,
                temperature: Some(0.0),
            }))
        );
    }

    #[test]
    fn given_a_reasoning_model_when_the_temperature_is_none_then_it_is_left_out() {
        let choose = |t: &str| match choice_from_vars(&vars(&[
            ("CRANE_PLANNER", "llm"),
            ("CRANE_LLM_MODEL", "o3-mini"),
            ("CRANE_LLM_TEMPERATURE", t),
        ])) {
            Ok(PlannerChoice::Llm(c)) => c.temperature,
            other => panic!("{other:?}"),
        };
        assert_eq!(choose("none"), None);
        assert_eq!(choose("NONE"), None);
        assert_eq!(choose("1"), Some(1.0));
        assert_eq!(choose("0.2"), Some(0.2));
    }

    #[test]
    fn given_bad_values_when_chosen_then_each_error_names_the_variable() {
        let cases = [
            (vec![("CRANE_PLANNER", "gpt")], "CRANE_PLANNER=\"gpt\""),
            (
                vec![("CRANE_PLANNER", "llm"), ("CRANE_LLM_TIMEOUT_MS", "ten")],
                "CRANE_LLM_TIMEOUT_MS=\"ten\"",
            ),
            (
                vec![("CRANE_PLANNER", "llm"), ("CRANE_LLM_TIMEOUT_MS", "0")],
                "from 1 to",
            ),
            (
                vec![
                    ("CRANE_PLANNER", "llm"),
                    ("CRANE_LLM_BASE_URL", "api.openai.com"),
                ],
                "CRANE_LLM_BASE_URL",
            ),
            (
                vec![
                    ("CRANE_PLANNER", "llm"),
                    ("CRANE_LLM_RESPONSE_FORMAT", "xml"),
                ],
                "json_schema, json_object or none",
            ),
            (vec![("CRANE_PLANNER", "bedrock")], "CRANE_BEDROCK_MODEL_ID"),
            (
                vec![("CRANE_PLANNER", "llm"), ("CRANE_LLM_TEMPERATURE", "hot")],
                "CRANE_LLM_TEMPERATURE=\"hot\"",
            ),
            (
                vec![("CRANE_PLANNER", "llm"), ("CRANE_LLM_TEMPERATURE", "3")],
                "or none to leave it out",
            ),
        ];
        for (pairs, want) in cases {
            let err = planner_from_vars(&vars(&pairs))
                .map(|p| p.name())
                .expect_err(want)
                .to_string();
            assert!(err.contains(want), "{err} should contain {want}");
        }
    }

    #[test]
    fn given_bedrock_with_a_model_when_chosen_then_it_is_built_only_with_the_aws_feature() {
        let v = vars(&[
            ("CRANE_PLANNER", "bedrock"),
            (
                "CRANE_BEDROCK_MODEL_ID",
                "anthropic.claude-3-haiku-20240307-v1:0",
            ),
            ("CRANE_BEDROCK_REGION", "eu-west-1"),
        ]);
        assert_eq!(
            choice_from_vars(&v),
            Ok(PlannerChoice::Bedrock {
                model_id: "anthropic.claude-3-haiku-20240307-v1:0".into(),
                region: Some("eu-west-1".into()),
                timeout_ms: openai::DEFAULT_TIMEOUT_MS,
            })
        );
        let built = planner_from_vars(&v).map(|p| p.name());
        if cfg!(feature = "aws") {
            assert_eq!(built, Ok("bedrock"));
        } else {
            assert_eq!(built, Err(SelectError::BedrockNotBuilt));
        }
    }

    #[test]
    fn given_a_base_url_with_credentials_when_shown_then_they_are_redacted() {
        let rejected = choice_from_vars(&vars(&[
            ("CRANE_PLANNER", "llm"),
            ("CRANE_LLM_BASE_URL", "admin:hunter2-pw@llm.internal/v1"),
        ]))
        .expect_err("no scheme")
        .to_string();
        assert!(rejected.contains("CRANE_LLM_BASE_URL"), "{rejected}");
        assert!(!rejected.contains("hunter2-pw"), "{rejected}");
        let choice = choice_from_vars(&vars(&[
            ("CRANE_PLANNER", "llm"),
            (
                "CRANE_LLM_BASE_URL",
                "http://admin:hunter2-pw@llm.internal/v1",
            ),
        ]))
        .expect("choice");
        let shown = format!("{choice:?}");
        assert!(!shown.contains("hunter2-pw"), "{shown}");
        assert!(shown.contains("llm.internal"), "{shown}");
        let logs = crate::telemetry::tests::logged(|| {
            planner_from_choice(choice).expect("planner");
        });
        assert!(logs.contains("LLM planner configured"), "{logs}");
        assert!(logs.contains("[redacted]@llm.internal"), "{logs}");
        assert!(!logs.contains("hunter2-pw"), "{logs}");
    }

    #[test]
    fn given_a_choice_with_a_key_when_debug_printed_then_the_key_is_hidden() {
        let choice =
            choice_from_vars(&vars(&[("CRANE_LLM_API_KEY", "sk-very-secret")])).expect("choice");
        assert!(!format!("{choice:?}").contains("sk-very-secret"));
    }
}
