//! Per-tenant request rate: a token bucket per tenant, so one tenant's flood is answered
//! `429` with `Retry-After` while every other tenant's requests go through untouched.
//! Circuit breakers stay per tool and shared; only admission is per tenant.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::header::RETRY_AFTER;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, ErrorCode, Tenant};

/// Buckets kept at most; the fullest (idlest) are dropped beyond this, which only ever
/// forgives a tenant.
const MAX_BUCKETS: usize = 100_000;

/// A tenant's allowance: `rate_per_s` requests a second on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Requests a second the bucket refills by (the sustained rate).
    pub rate_per_s: f64,
    /// Requests the bucket holds when full: how many may come at once.
    pub burst: f64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The token buckets of every tenant seen.
#[derive(Debug)]
pub struct Limiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Limiter {
    /// Buckets for `limit`, each tenant's starting full when first seen.
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one token of `tenant`'s bucket at `now`, or say how long until one is there.
    pub fn take(&self, tenant: &str, now: Instant) -> Result<(), Duration> {
        let RateLimit { rate_per_s, burst } = self.limit;
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(tenant) {
            let refill =
                |b: &Bucket| b.tokens + now.duration_since(b.at).as_secs_f64() * rate_per_s;
            buckets.retain(|_, b| refill(b) < burst);
        }
        let bucket = buckets.entry(tenant.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate_per_s).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate_per_s))
        }
    }
}

/// The 429 a tenant over its quota gets; `Retry-After` in whole seconds, at least 1.
pub fn too_many(message: &str, retry_after: Duration) -> Response {
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let mut resp = ApiError::new(ErrorCode::RateLimited, message).into_response();
    if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
        resp.headers_mut().insert(RETRY_AFTER, v);
    }
    resp
}

/// Admit a request if its tenant has a token left (the open `/health`, `/openapi.json`
/// and console files are not counted).
pub(super) async fn limit_rate(
    State(limiter): State<Arc<Limiter>>,
    req: Request,
    next: Next,
) -> Response {
    let public = super::auth::is_public(req.uri().path());
    let verdict = match req.extensions().get::<Tenant>() {
        Some(Tenant(tenant)) if !public => limiter.take(tenant, Instant::now()),
        _ => Ok(()),
    };
    match verdict {
        Ok(()) => next.run(req).await,
        Err(wait) => too_many(
            "this tenant is over its request rate (CRANE_TENANT_RATE_PER_S, CRANE_TENANT_BURST); retry later",
            wait,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn given_a_burst_when_spent_then_the_tenant_waits_and_other_tenants_do_not() {
        let limiter = Limiter::new(RateLimit {
            rate_per_s: 2.0,
            burst: 3.0,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.take("a", t0), Ok(()));
        }
        let wait = limiter.take("a", t0).expect_err("over the burst");
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(limiter.take("b", t0), Ok(()), "b has its own bucket");
        assert_eq!(limiter.take("a", t0 + Duration::from_millis(500)), Ok(()));
        assert!(limiter.take("a", t0 + Duration::from_millis(500)).is_err());
        // A long pause refills up to the burst only.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(limiter.take("a", later), Ok(()));
        }
        assert!(limiter.take("a", later).is_err());
    }

    #[test]
    fn given_a_wait_when_answered_then_retry_after_is_whole_seconds_at_least_one() {
        let resp = too_many("slow down", Duration::from_millis(200));
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[RETRY_AFTER], "1");
        let resp = too_many("slow down", Duration::from_millis(2_100));
        assert_eq!(resp.headers()[RETRY_AFTER], "3");
    }
}
