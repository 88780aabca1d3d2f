//! Circuit breaker per tool, as a pure state machine over an injected time.
//!
//! CLOSED -> OPEN after `failure_threshold` consecutive failures; OPEN rejects calls
//! ("<tool> temporarily unavailable") without touching the tool; once `open_ms` has passed
//! the next call moves it to HALF-OPEN, which admits trial calls: `half_open_successes`
//! successes close it, one failure re-opens it. Only transient failures count: a
//! permanent error (bad input) says nothing about the tool's health.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerConfig {
    pub failure_threshold: u32,
    pub open_ms: u64,
    pub half_open_successes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_ms: 60_000,
            half_open_successes: 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum BreakerState {
    Closed {
        consecutive_failures: u32,
    },
    Open {
        opened_at: DateTime<Utc>,
        until: DateTime<Utc>,
    },
    HalfOpen {
        successes: u32,
    },
}

impl Default for BreakerState {
    fn default() -> Self {
        BreakerState::Closed {
            consecutive_failures: 0,
        }
    }
}

/// Whether a call may go to the tool.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Call the tool. `next` is a state change to store first (OPEN -> HALF-OPEN).
    Allow { next: Option<BreakerState> },
    /// Fail fast; the breaker stays open until then.
    Reject { until: DateTime<Utc> },
}

impl BreakerState {
    pub fn name(&self) -> &'static str {
        match self {
            BreakerState::Closed { .. } => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen { .. } => "half_open",
        }
    }

    pub fn admit(&self, now: DateTime<Utc>) -> Admission {
        match self {
            BreakerState::Open { until, .. } if now < *until => Admission::Reject { until: *until },
            BreakerState::Open { .. } => Admission::Allow {
                next: Some(BreakerState::HalfOpen { successes: 0 }),
            },
            _ => Admission::Allow { next: None },
        }
    }

    pub fn on_success(&self, cfg: &BreakerConfig) -> BreakerState {
        match self {
            BreakerState::HalfOpen { successes } if successes + 1 >= cfg.half_open_successes => {
                BreakerState::default()
            }
            BreakerState::HalfOpen { successes } => BreakerState::HalfOpen {
                successes: successes + 1,
            },
            // A success seen while open (a call admitted before it opened) changes nothing.
            BreakerState::Open { .. } => self.clone(),
            BreakerState::Closed { .. } => BreakerState::default(),
        }
    }

    pub fn on_failure(&self, cfg: &BreakerConfig, now: DateTime<Utc>) -> BreakerState {
        let open = || BreakerState::Open {
            opened_at: now,
            until: now + Duration::milliseconds(i64::try_from(cfg.open_ms).unwrap_or(i64::MAX / 4)),
        };
        match self {
            BreakerState::Closed {
                consecutive_failures,
            } => {
                let n = consecutive_failures + 1;
                if n >= cfg.failure_threshold {
                    open()
                } else {
                    BreakerState::Closed {
                        consecutive_failures: n,
                    }
                }
            }
            BreakerState::HalfOpen { .. } => open(),
            BreakerState::Open { .. } => self.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake clock: seconds after a fixed instant.
    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("valid")
    }

    #[test]
    fn given_a_closed_breaker_when_five_failures_then_it_opens_and_rejects() {
        let cfg = BreakerConfig::default();
        let mut s = BreakerState::default();
        for i in 0..4 {
            s = s.on_failure(&cfg, at(i));
            assert_eq!(s.name(), "closed");
        }
        s = s.on_failure(&cfg, at(4));
        assert_eq!(
            s,
            BreakerState::Open {
                opened_at: at(4),
                until: at(64)
            }
        );
        assert_eq!(s.admit(at(30)), Admission::Reject { until: at(64) });
    }

    #[test]
    fn given_a_success_when_closed_then_the_failure_count_resets() {
        let cfg = BreakerConfig::default();
        let s = BreakerState::Closed {
            consecutive_failures: 4,
        }
        .on_success(&cfg);
        assert_eq!(
            s.on_failure(&cfg, at(0)),
            BreakerState::Closed {
                consecutive_failures: 1
            }
        );
    }

    #[test]
    fn given_an_open_breaker_when_the_timeout_passes_then_half_open_and_three_successes_close_it() {
        let cfg = BreakerConfig::default();
        let open = BreakerState::Open {
            opened_at: at(0),
            until: at(60),
        };
        let Admission::Allow { next: Some(half) } = open.admit(at(60)) else {
            panic!("should half-open at the timeout");
        };
        assert_eq!(half, BreakerState::HalfOpen { successes: 0 });
        let s = half.on_success(&cfg).on_success(&cfg);
        assert_eq!(s, BreakerState::HalfOpen { successes: 2 });
        assert_eq!(s.on_success(&cfg), BreakerState::default());
    }

    #[test]
    fn given_a_half_open_breaker_when_a_trial_fails_then_it_reopens() {
        let cfg = BreakerConfig {
            open_ms: 10_000,
            ..Default::default()
        };
        let s = BreakerState::HalfOpen { successes: 2 }.on_failure(&cfg, at(100));
        assert_eq!(
            s,
            BreakerState::Open {
                opened_at: at(100),
                until: at(110)
            }
        );
    }

    #[test]
    fn given_custom_thresholds_when_used_then_they_apply() {
        let cfg = BreakerConfig {
            failure_threshold: 2,
            open_ms: 1_000,
            half_open_successes: 1,
        };
        let s = BreakerState::default()
            .on_failure(&cfg, at(0))
            .on_failure(&cfg, at(0));
        assert_eq!(s.name(), "open");
        assert_eq!(
            BreakerState::HalfOpen { successes: 0 }.on_success(&cfg),
            BreakerState::default()
        );
    }
}
