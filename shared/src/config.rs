//! Typed configuration, read once from the environment in `main`.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::app::Settings;
use crate::engine::breaker::BreakerConfig;
use crate::engine::RetryPolicy;
use crate::tools::faults::{FaultParseError, Faults};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}={value:?} is not valid: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: String,
    },
    #[error(transparent)]
    Faults(#[from] FaultParseError),
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Everything configurable, with its defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `CRANE_ADDR` (local runtime): address to listen on.
    pub addr: String,
    /// `CRANE_DB` (local runtime): the SQLite file.
    pub db: PathBuf,
    pub settings: Settings,
    /// `CRANE_FAULTS`: fault injection rules.
    pub faults: Faults,
    /// `CRANE_LOG_FORMAT`: `text` or `json`.
    pub log_format: LogFormat,
    /// `CRANE_WORKERS` (local runtime): step jobs run concurrently.
    pub workers: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:3000".into(),
            db: PathBuf::from("./crane.db"),
            settings: Settings::default(),
            faults: Faults::none(),
            log_format: LogFormat::Text,
            workers: 64,
        }
    }
}

/// Reads variables from a map, so tests need not touch the process environment.
struct Vars(HashMap<String, String>);

impl Vars {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    fn num<T: std::str::FromStr + PartialOrd + Copy + std::fmt::Display>(
        &self,
        name: &'static str,
        default: T,
        min: T,
        max: T,
    ) -> Result<T, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<T>() {
                Ok(n) if n >= min && n <= max => Ok(n),
                _ => Err(ConfigError::Invalid {
                    name,
                    value: v.to_owned(),
                    reason: format!("expected a number from {min} to {max}"),
                }),
            },
        }
    }
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_vars(std::env::vars().collect())
    }

    pub fn from_vars(vars: HashMap<String, String>) -> Result<Config, ConfigError> {
        let v = Vars(vars);
        let d = Config::default();
        let retry = RetryPolicy {
            base_ms: v.num("CRANE_RETRY_BASE_MS", d.settings.retry.base_ms, 0, 900_000)?,
            max_retries: v.num(
                "CRANE_RETRY_MAX_ATTEMPTS",
                d.settings.retry.max_retries,
                0,
                20,
            )?,
            max_interruptions: v.num(
                "CRANE_STEP_MAX_INTERRUPTIONS",
                d.settings.retry.max_interruptions,
                0,
                1_000,
            )?,
            ..d.settings.retry
        };
        let step_timeout_ms = v.num(
            "CRANE_STEP_TIMEOUT_MS",
            d.settings.step_timeout_ms,
            1,
            900_000,
        )?;
        let breaker = BreakerConfig {
            failure_threshold: v.num(
                "CRANE_BREAKER_FAILURES",
                d.settings.breaker.failure_threshold,
                1,
                1_000,
            )?,
            open_ms: v.num(
                "CRANE_BREAKER_OPEN_MS",
                d.settings.breaker.open_ms,
                0,
                86_400_000,
            )?,
            half_open_successes: v.num(
                "CRANE_BREAKER_HALF_OPEN_SUCCESSES",
                d.settings.breaker.half_open_successes,
                1,
                1_000,
            )?,
            half_open_trials: v.num(
                "CRANE_BREAKER_HALF_OPEN_TRIALS",
                d.settings.breaker.half_open_trials,
                1,
                1_000,
            )?,
            // A trial's outcome is due within the step's lease.
            trial_timeout_ms: step_timeout_ms + d.settings.lease_margin_ms,
        };
        let settings = Settings {
            retry,
            compensation_retry: RetryPolicy {
                base_ms: v.num(
                    "CRANE_COMPENSATION_RETRY_BASE_MS",
                    retry.base_ms,
                    0,
                    900_000,
                )?,
                max_retries: v.num("CRANE_COMPENSATION_MAX_ATTEMPTS", retry.max_retries, 0, 20)?,
                ..retry
            },
            step_timeout_ms,
            lease_margin_ms: d.settings.lease_margin_ms,
            breaker,
            void_leases_before: None,
            step_deadline_ms: v.num(
                "CRANE_STEP_DEADLINE_MS",
                d.settings.step_deadline_ms,
                1,
                7 * 86_400_000,
            )?,
        };
        let log_format = match v.get("CRANE_LOG_FORMAT").map(str::trim) {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "CRANE_LOG_FORMAT",
                    value: other.to_owned(),
                    reason: "expected text or json".into(),
                })
            }
        };
        Ok(Config {
            addr: v.get("CRANE_ADDR").map_or(d.addr, str::to_owned),
            db: v.get("CRANE_DB").map_or(d.db, PathBuf::from),
            settings,
            faults: Faults::parse(v.get("CRANE_FAULTS").unwrap_or(""))?,
            log_format,
            workers: v.num("CRANE_WORKERS", d.workers, 1, 4_096)?,
        })
    }
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
    fn given_no_variables_when_read_then_defaults_apply() {
        let c = Config::from_vars(HashMap::new()).expect("defaults");
        assert_eq!(c, Config::default());
        assert_eq!(c.settings.retry.base_ms, 1_000);
        assert_eq!(c.settings.retry.max_retries, 3);
    }

    #[test]
    fn given_overrides_when_read_then_they_apply() {
        let c = Config::from_vars(vars(&[
            ("CRANE_RETRY_BASE_MS", "10"),
            ("CRANE_RETRY_MAX_ATTEMPTS", "5"),
            ("CRANE_BREAKER_FAILURES", "2"),
            ("CRANE_FAULTS", "calculator=fail"),
            ("CRANE_LOG_FORMAT", "json"),
            ("CRANE_ADDR", "127.0.0.1:0"),
        ]))
        .expect("valid");
        assert_eq!(c.settings.retry.base_ms, 10);
        assert_eq!(c.settings.retry.max_retries, 5);
        assert_eq!(c.settings.breaker.failure_threshold, 2);
        assert_eq!(c.faults.rules().len(), 1);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.addr, "127.0.0.1:0");
    }

    #[test]
    fn given_bad_values_when_read_then_the_error_names_the_variable() {
        for (k, v) in [
            ("CRANE_RETRY_BASE_MS", "soon"),
            ("CRANE_RETRY_MAX_ATTEMPTS", "-1"),
            ("CRANE_LOG_FORMAT", "xml"),
            ("CRANE_FAULTS", "calculator"),
            ("CRANE_BREAKER_FAILURES", "0"),
        ] {
            let err = Config::from_vars(vars(&[(k, v)])).expect_err(k).to_string();
            assert!(err.contains(k) || k == "CRANE_FAULTS", "{err}");
        }
    }
}
