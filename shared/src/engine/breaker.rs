//! Circuit breaker per tool, as a pure state machine over an injected time.
//!
//! CLOSED -> OPEN after `failure_threshold` consecutive failures; OPEN rejects calls
//! ("`<tool>` temporarily unavailable") without touching the tool; once `open_ms` has passed
//! the next call moves it to HALF-OPEN, which admits at most `half_open_trials` trial
//! calls at a time (the others are told to wait a little and ask again):
//! `half_open_successes` successes close it, one failure re-opens it. A trial whose
//! outcome never comes back (its worker died) is presumed lost after `trial_timeout_ms`,
//! so a dead worker cannot hold the breaker half-open for ever. Only transient failures
//! count: a permanent error (bad input) says nothing about the tool's health.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// When a tool's breaker opens and how it recovers; the module docs describe the states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerConfig {
    /// Consecutive transient failures that open a closed breaker.
    pub failure_threshold: u32,
    /// How long an open breaker refuses calls before it admits trials, in milliseconds.
    pub open_ms: u64,
    /// Successful trials in a row that close a half-open breaker.
    pub half_open_successes: u32,
    /// Trial calls admitted at once while half-open.
    #[serde(default = "default_trials")]
    pub half_open_trials: u32,
    /// How long a trial may go unanswered before its slot is given to another call.
    #[serde(default = "default_trial_timeout")]
    pub trial_timeout_ms: u64,
}

fn default_trials() -> u32 {
    BreakerConfig::default().half_open_trials
}

fn default_trial_timeout() -> u64 {
    BreakerConfig::default().trial_timeout_ms
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_ms: 60_000,
            half_open_successes: 3,
            half_open_trials: 3,
            trial_timeout_ms: 35_000,
        }
    }
}

impl BreakerConfig {
    /// How long a call refused by a half-open breaker with no free trial slot waits before
    /// asking again: a tenth of the open time (at least 50 ms), never past the trial timeout.
    pub fn probe_ms(&self) -> u64 {
        (self.open_ms / 10)
            .max(50)
            .min(self.trial_timeout_ms.max(1))
    }
}

/// The stored state of one tool's breaker; closed by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through; failures are counted.
    Closed {
        /// Transient failures in a row since the last success.
        consecutive_failures: u32,
    },
    /// Calls are refused until `until`.
    Open {
        /// When it opened.
        opened_at: DateTime<Utc>,
        /// When it admits its first trial call (`opened_at + open_ms`).
        until: DateTime<Utc>,
    },
    /// A few trial calls go through to test the tool.
    HalfOpen {
        /// Trials that succeeded since it half-opened.
        successes: u32,
        /// Trial calls admitted whose outcome has not come back yet.
        #[serde(default)]
        trials: u32,
        /// When the last trial was admitted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_trial_at: Option<DateTime<Utc>>,
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
    /// Call the tool. `next` is a state change to store first (a trial slot taken);
    /// `trial` says the call is a half-open trial whose outcome must be reported (or its
    /// slot released with [`BreakerState::release_trial`] if the call does not happen).
    Allow {
        /// The state to store before calling (a trial slot taken); `None` when nothing changes.
        next: Option<BreakerState>,
        /// The call is a half-open trial whose outcome must be reported.
        trial: bool,
    },
    /// Do not call; ask again at `until`.
    Reject {
        /// When the call may be asked for again.
        until: DateTime<Utc>,
    },
}

fn millis(ms: u64) -> Duration {
    Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX / 4))
}

impl BreakerState {
    /// The state's name (`closed`, `open`, `half_open`), for logs, metrics and the API.
    pub fn name(&self) -> &'static str {
        match self {
            BreakerState::Closed { .. } => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen { .. } => "half_open",
        }
    }

    /// Whether a call may go to the tool at `now`; a half-open breaker takes a trial slot.
    pub fn admit(&self, cfg: &BreakerConfig, now: DateTime<Utc>) -> Admission {
        let trial = |successes: u32, trials: u32| Admission::Allow {
            next: Some(BreakerState::HalfOpen {
                successes,
                trials,
                last_trial_at: Some(now),
            }),
            trial: true,
        };
        match self {
            BreakerState::Open { until, .. } if now < *until => Admission::Reject { until: *until },
            BreakerState::Open { .. } => trial(0, 1),
            BreakerState::HalfOpen {
                successes,
                trials,
                last_trial_at,
            } => {
                let lost = last_trial_at.is_some_and(|t| now >= t + millis(cfg.trial_timeout_ms));
                if lost {
                    // Every trial in flight is older than the timeout: presume them lost.
                    trial(*successes, 1)
                } else if *trials < cfg.half_open_trials {
                    trial(*successes, trials + 1)
                } else {
                    let probe = now + millis(cfg.probe_ms());
                    let freed = last_trial_at.map(|t| t + millis(cfg.trial_timeout_ms));
                    Admission::Reject {
                        until: freed.map_or(probe, |f| f.min(probe)),
                    }
                }
            }
            BreakerState::Closed { .. } => Admission::Allow {
                next: None,
                trial: false,
            },
        }
    }

    /// A trial slot taken by [`BreakerState::admit`] whose call never happened.
    pub fn release_trial(&self) -> BreakerState {
        match self {
            BreakerState::HalfOpen {
                successes,
                trials,
                last_trial_at,
            } => BreakerState::HalfOpen {
                successes: *successes,
                trials: trials.saturating_sub(1),
                last_trial_at: *last_trial_at,
            },
            other => other.clone(),
        }
    }

    /// The state after a call succeeded (a trial that completes `half_open_successes` closes it).
    pub fn on_success(&self, cfg: &BreakerConfig) -> BreakerState {
        match self {
            BreakerState::HalfOpen { successes, .. }
                if successes + 1 >= cfg.half_open_successes =>
            {
                BreakerState::default()
            }
            BreakerState::HalfOpen {
                successes,
                trials,
                last_trial_at,
            } => BreakerState::HalfOpen {
                successes: successes + 1,
                trials: trials.saturating_sub(1),
                last_trial_at: *last_trial_at,
            },
            // A success seen while open (a call admitted before it opened) changes nothing.
            BreakerState::Open { .. } => self.clone(),
            BreakerState::Closed { .. } => BreakerState::default(),
        }
    }

    /// The state after a transient failure at `now` (the threshold opens a closed breaker; any
    /// failure re-opens a half-open one).
    pub fn on_failure(&self, cfg: &BreakerConfig, now: DateTime<Utc>) -> BreakerState {
        let open = || BreakerState::Open {
            opened_at: now,
            until: now + millis(cfg.open_ms),
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

    fn half_open(successes: u32, trials: u32, last: i64) -> BreakerState {
        BreakerState::HalfOpen {
            successes,
            trials,
            last_trial_at: Some(at(last)),
        }
    }

    #[test]
    fn given_a_half_open_breaker_when_its_trial_slots_are_taken_then_other_calls_wait() {
        let cfg = BreakerConfig {
            open_ms: 10_000,
            half_open_trials: 2,
            ..Default::default()
        };
        let mut s = BreakerState::Open {
            opened_at: at(0),
            until: at(10),
        };
        for n in 1..=2 {
            let Admission::Allow {
                next: Some(next),
                trial: true,
            } = s.admit(&cfg, at(10))
            else {
                panic!("trial {n} should be admitted");
            };
            s = next;
        }
        assert_eq!(s, half_open(0, 2, 10));
        // The third call waits a probe interval (a tenth of the open time) and asks again.
        assert_eq!(s.admit(&cfg, at(11)), Admission::Reject { until: at(12) });
        // One trial answers: a slot is free again.
        let s = s.on_success(&cfg);
        assert_eq!(s, half_open(1, 1, 10));
        assert!(matches!(
            s.admit(&cfg, at(12)),
            Admission::Allow { trial: true, .. }
        ));
    }

    #[test]
    fn given_half_open_trials_that_never_answer_when_the_trial_timeout_passes_then_a_new_trial_is_admitted(
    ) {
        let cfg = BreakerConfig {
            half_open_trials: 1,
            trial_timeout_ms: 5_000,
            ..Default::default()
        };
        let s = half_open(1, 1, 100);
        // Refused until the lost trial's slot times out.
        assert_eq!(s.admit(&cfg, at(101)), Admission::Reject { until: at(105) });
        assert_eq!(
            s.admit(&cfg, at(105)),
            Admission::Allow {
                next: Some(half_open(1, 1, 105)),
                trial: true
            }
        );
    }

    #[test]
    fn given_a_trial_slot_taken_when_released_then_it_is_free_again() {
        let cfg = BreakerConfig {
            half_open_trials: 1,
            ..Default::default()
        };
        let s = half_open(0, 1, 10);
        assert!(matches!(s.admit(&cfg, at(11)), Admission::Reject { .. }));
        let s = s.release_trial();
        assert!(matches!(
            s.admit(&cfg, at(11)),
            Admission::Allow { trial: true, .. }
        ));
        assert_eq!(
            BreakerState::default().release_trial(),
            BreakerState::default()
        );
    }

    #[test]
    fn given_a_stored_half_open_state_of_the_previous_version_when_read_then_it_has_no_trials() {
        let s: BreakerState =
            serde_json::from_str(r#"{"state":"half_open","successes":2}"#).expect("reads");
        assert_eq!(
            s,
            BreakerState::HalfOpen {
                successes: 2,
                trials: 0,
                last_trial_at: None
            }
        );
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
        assert_eq!(s.admit(&cfg, at(30)), Admission::Reject { until: at(64) });
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
        let Admission::Allow {
            next: Some(half),
            trial: true,
        } = open.admit(&cfg, at(60))
        else {
            panic!("should half-open at the timeout");
        };
        assert_eq!(half, half_open(0, 1, 60));
        let s = half.on_success(&cfg).on_success(&cfg);
        assert_eq!(s.name(), "half_open");
        assert_eq!(s.on_success(&cfg), BreakerState::default());
    }

    #[test]
    fn given_a_half_open_breaker_when_a_trial_fails_then_it_reopens() {
        let cfg = BreakerConfig {
            open_ms: 10_000,
            ..Default::default()
        };
        let s = half_open(2, 1, 90).on_failure(&cfg, at(100));
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
            ..Default::default()
        };
        let s = BreakerState::default()
            .on_failure(&cfg, at(0))
            .on_failure(&cfg, at(0));
        assert_eq!(s.name(), "open");
        assert_eq!(half_open(0, 1, 0).on_success(&cfg), BreakerState::default());
    }
}
