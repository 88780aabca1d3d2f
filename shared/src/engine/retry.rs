//! Retry policy: exponential backoff with jitter.

use serde::{Deserialize, Serialize};

/// How failed attempts are retried. A step is tried once and then retried up to
/// `max_retries` times, waiting `base_ms`, `2 * base_ms`, `4 * base_ms`, ... (capped at
/// `max_delay_ms`), each delay moved by up to `jitter` of itself either way so that
/// workers failing together do not retry together.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Delay before the first retry, in milliseconds; it doubles with each retry.
    pub base_ms: u64,
    /// Retries after the first attempt (so `max_retries + 1` attempts in all).
    pub max_retries: u32,
    /// Upper bound on any one delay, in milliseconds (before jitter).
    pub max_delay_ms: u64,
    /// Fraction (0..=1) of each delay that is randomised.
    pub jitter: f64,
    /// How many times an attempt may be interrupted (its worker died) before the step
    /// fails. Interruptions do not use up `max_retries`.
    #[serde(default = "default_interruptions")]
    pub max_interruptions: u32,
}

fn default_interruptions() -> u32 {
    RetryPolicy::default().max_interruptions
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base_ms: 1_000,
            max_retries: 3,
            max_delay_ms: 15 * 60 * 1_000,
            jitter: 0.2,
            max_interruptions: 10,
        }
    }
}

impl RetryPolicy {
    /// Whether attempt number `failed_attempt` (1-based) may be followed by another.
    pub fn allows_retry(&self, failed_attempt: u32) -> bool {
        failed_attempt <= self.max_retries
    }

    /// The nominal delay after attempt `failed_attempt` failed, before jitter.
    pub fn nominal_delay_ms(&self, failed_attempt: u32) -> u64 {
        let exp = failed_attempt.saturating_sub(1).min(62);
        self.base_ms
            .saturating_mul(1u64 << exp)
            .min(self.max_delay_ms)
    }

    /// The delay after attempt `failed_attempt` failed; `sample` is uniform in `[0, 1)`.
    pub fn delay_ms(&self, failed_attempt: u32, sample: f64) -> u64 {
        let nominal = self.nominal_delay_ms(failed_attempt) as f64;
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - jitter + 2.0 * jitter * sample.clamp(0.0, 1.0);
        (nominal * factor).round().min(self.max_delay_ms as f64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_the_defaults_when_attempts_fail_then_delays_are_1_2_4_seconds() {
        let p = RetryPolicy::default();
        assert_eq!(
            (1..=3).map(|a| p.nominal_delay_ms(a)).collect::<Vec<_>>(),
            vec![1_000, 2_000, 4_000]
        );
        assert!(p.allows_retry(3));
        assert!(!p.allows_retry(4));
    }

    #[test]
    fn given_jitter_when_sampled_then_delay_stays_within_the_band() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay_ms(1, 0.0), 800);
        assert_eq!(p.delay_ms(1, 0.5), 1_000);
        assert_eq!(p.delay_ms(2, 1.0), 2_400);
        let flat = RetryPolicy { jitter: 0.0, ..p };
        assert_eq!(flat.delay_ms(3, 0.9), 4_000);
    }

    #[test]
    fn given_many_attempts_when_delayed_then_the_cap_holds_without_overflow() {
        let p = RetryPolicy {
            max_interruptions: 10,
            base_ms: u64::MAX / 2,
            max_retries: 100,
            max_delay_ms: 60_000,
            jitter: 0.5,
        };
        assert_eq!(p.nominal_delay_ms(100), 60_000);
        assert!(p.delay_ms(100, 1.0) <= 60_000);
    }
}
