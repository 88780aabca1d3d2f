//! The LLM API key from Secrets Manager (`Planner=llm` on AWS), without which create-run
//! must still answer.
//!
//! The key is read once at cold start. If that read fails (access denied, a wrong ARN, a
//! KMS key the role may not use, Secrets Manager unreachable), the function still starts:
//! [`KeyedPlanner`] plans with the pattern planner, records why on every plan
//! (`fallback_reason`), logs the failure at error level, reports itself degraded in
//! `GET /health`, and reads the secret again on a later request, at most once per
//! [`RETRY_EVERY`], until it succeeds; from then on the LLM planner plans. A function
//! whose planner is not `llm` never reads the secret.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::planner::{PatternPlanner, PlanError, Planned, Planner};
use crate::tools::Registry;

/// Longest a failed read of the secret is trusted: the next request after this reads it
/// again.
pub const RETRY_EVERY: Duration = Duration::from_secs(60);

/// Where the key comes from.
#[async_trait]
pub trait SecretSource: Send + Sync {
    /// What to call the secret in logs and reasons (its ARN).
    fn name(&self) -> &str;

    /// The secret's string value, or why it could not be read.
    async fn fetch(&self) -> Result<String, String>;
}

/// A Secrets Manager secret, by ARN (or name).
#[derive(Debug, Clone)]
pub struct SecretsManagerSource {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
}

impl SecretsManagerSource {
    /// A source reading the secret `secret_id` (an ARN or name) through `client`.
    pub fn new(client: aws_sdk_secretsmanager::Client, secret_id: impl Into<String>) -> Self {
        Self {
            client,
            secret_id: secret_id.into(),
        }
    }
}

#[async_trait]
impl SecretSource for SecretsManagerSource {
    fn name(&self) -> &str {
        &self.secret_id
    }

    async fn fetch(&self) -> Result<String, String> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "GetSecretValue: {}",
                    aws_sdk_secretsmanager::error::DisplayErrorContext(e)
                )
            })?;
        out.secret_string()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| "the secret has no string value".to_owned())
    }
}

/// Builds the LLM planner once the key is known (the variables plus the key).
pub type BuildPlanner = dyn Fn(&str) -> Result<Arc<dyn Planner>, String> + Send + Sync;

enum KeyState {
    Ready(Arc<dyn Planner>),
    Missing { reason: String, retry_at: Instant },
}

/// The `llm` planner whose key has to be read from a secret first: the pattern planner
/// plans (and `degraded` says why) until a read succeeds.
pub struct KeyedPlanner {
    source: Arc<dyn SecretSource>,
    build: Box<BuildPlanner>,
    retry_every: Duration,
    state: RwLock<KeyState>,
    /// One read at a time; requests arriving meanwhile use the fallback.
    reading: tokio::sync::Mutex<()>,
    fallback: PatternPlanner,
}

impl std::fmt::Debug for KeyedPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedPlanner")
            .field("secret", &self.source.name())
            .field("degraded", &self.degraded())
            .finish()
    }
}

impl KeyedPlanner {
    /// Read the key now; on failure the planner starts degraded and reads again after
    /// `retry_every`.
    pub async fn start(
        source: Arc<dyn SecretSource>,
        build: Box<BuildPlanner>,
        retry_every: Duration,
    ) -> Self {
        let planner = Self {
            source,
            build,
            retry_every,
            state: RwLock::new(KeyState::Missing {
                reason: String::new(),
                retry_at: Instant::now(),
            }),
            reading: tokio::sync::Mutex::new(()),
            fallback: PatternPlanner,
        };
        planner.read_key().await;
        planner
    }

    /// The LLM planner, if the key has been read.
    fn ready(&self) -> Option<Arc<dyn Planner>> {
        match &*self.state.read().unwrap_or_else(PoisonError::into_inner) {
            KeyState::Ready(p) => Some(p.clone()),
            KeyState::Missing { .. } => None,
        }
    }

    fn due(&self) -> bool {
        match &*self.state.read().unwrap_or_else(PoisonError::into_inner) {
            KeyState::Ready(_) => false,
            KeyState::Missing { retry_at, .. } => Instant::now() >= *retry_at,
        }
    }

    /// Read the secret and build the planner; on failure record why and when to retry.
    async fn read_key(&self) {
        let Ok(_guard) = self.reading.try_lock() else {
            return;
        };
        if !self.due() {
            return;
        }
        let secret = self.source.name().to_owned();
        let outcome = match self.source.fetch().await {
            Ok(key) => (self.build)(&key),
            Err(e) => Err(e),
        };
        let next = match outcome {
            Ok(planner) => {
                tracing::info!(secret = %secret, "LLM API key read; the llm planner plans");
                KeyState::Ready(planner)
            }
            Err(e) => {
                let reason = format!(
                    "the LLM API key could not be read from Secrets Manager ({secret}): {e}; \
                     planning with the pattern planner, reading it again within {} s",
                    self.retry_every.as_secs()
                );
                tracing::error!(secret = %secret, error = %e, retry_in_s = self.retry_every.as_secs(), "cannot read the LLM API key; the pattern planner plans until it can");
                KeyState::Missing {
                    reason,
                    retry_at: Instant::now() + self.retry_every,
                }
            }
        };
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = next;
    }
}

#[async_trait]
impl Planner for KeyedPlanner {
    fn name(&self) -> &'static str {
        "llm"
    }

    async fn plan(&self, prompt: &str, registry: &Registry) -> Result<Planned, PlanError> {
        if self.due() {
            self.read_key().await;
        }
        if let Some(planner) = self.ready() {
            return planner.plan(prompt, registry).await;
        }
        let reason = self.degraded().unwrap_or_default();
        let mut planned = self
            .fallback
            .plan(prompt, registry)
            .await
            .map_err(|e| match e {
                PlanError::NotUnderstood(m) => {
                    PlanError::NotUnderstood(format!("{m} (the llm planner is misconfigured)"))
                }
                other => other,
            })?;
        planned.info.requested = Some("llm".to_owned());
        // Clients see the category only; the secret's name and the error stay in the logs
        // and in `GET /health` for operators.
        planned.info.fallback_reason = Some("misconfigured".to_owned());
        planned.fallback_detail = Some(reason);
        Ok(planned)
    }

    fn degraded(&self) -> Option<String> {
        match &*self.state.read().unwrap_or_else(PoisonError::into_inner) {
            KeyState::Ready(p) => p.degraded(),
            KeyState::Missing { reason, .. } => Some(reason.clone()),
        }
    }
}

/// Whether the variables select the `llm` planner (explicitly, or by default because a
/// key or a key secret is configured): only then is the secret read.
pub fn wants_llm(vars: &HashMap<String, String>) -> bool {
    match vars
        .get("CRANE_PLANNER")
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
    {
        Some(kind) => kind.eq_ignore_ascii_case("llm"),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::local::memory::MemoryTodos;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// Fails until `key` is set.
    struct FakeSecret {
        key: Mutex<Option<String>>,
        reads: AtomicUsize,
    }

    #[async_trait]
    impl SecretSource for FakeSecret {
        fn name(&self) -> &str {
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:llm-AbCdEf"
        }

        async fn fetch(&self) -> Result<String, String> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.key
                .lock()
                .expect("lock")
                .clone()
                .ok_or_else(|| "AccessDeniedException: not authorized".to_owned())
        }
    }

    /// Stands in for the LLM planner: plans like the pattern planner, named `llm`, and
    /// remembers the key it was built with.
    struct KeyPlanner(String);

    #[async_trait]
    impl Planner for KeyPlanner {
        fn name(&self) -> &'static str {
            "llm"
        }

        async fn plan(&self, prompt: &str, registry: &Registry) -> Result<Planned, PlanError> {
            let mut planned = PatternPlanner.plan(prompt, registry).await?;
            planned.info.name = format!("llm with {}", self.0);
            Ok(planned)
        }
    }

    fn registry() -> Registry {
        Registry::new(Arc::new(MemoryTodos::default()))
    }

    #[tokio::test]
    async fn given_an_unreadable_secret_when_planning_then_the_pattern_planner_plans_degraded_until_a_later_read_succeeds(
    ) {
        let secret = Arc::new(FakeSecret {
            key: Mutex::new(None),
            reads: AtomicUsize::new(0),
        });
        let build: Box<BuildPlanner> =
            Box::new(|key| Ok(Arc::new(KeyPlanner(key.to_owned())) as Arc<dyn Planner>));
        let p = KeyedPlanner::start(secret.clone(), build, Duration::from_secs(1)).await;
        assert_eq!(secret.reads.load(Ordering::SeqCst), 1, "read at cold start");
        let degraded = p.degraded().expect("degraded");
        assert!(degraded.contains("AccessDeniedException"), "{degraded}");
        assert!(degraded.contains("secret:llm-AbCdEf"), "{degraded}");

        // Planning still works, with the pattern planner, and says why.
        let planned = p.plan("calculate 2+3", &registry()).await.expect("planned");
        assert_eq!(planned.info.name, "pattern");
        assert_eq!(planned.info.requested.as_deref(), Some("llm"));
        assert_eq!(
            planned.info.fallback_reason.as_deref(),
            Some("misconfigured")
        );
        assert!(planned
            .fallback_detail
            .as_deref()
            .is_some_and(|r| r.contains("could not be read")));
        assert_eq!(
            secret.reads.load(Ordering::SeqCst),
            1,
            "not read again before the retry interval"
        );

        // The secret becomes readable; the next request after the interval reads it.
        *secret.key.lock().expect("lock") = Some("sk-test".into());
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let planned = p.plan("calculate 2+3", &registry()).await.expect("planned");
        assert_eq!(secret.reads.load(Ordering::SeqCst), 2);
        assert_eq!(planned.info.name, "llm with sk-test");
        assert_eq!(p.degraded(), None);
        p.plan("calculate 1+1", &registry()).await.expect("planned");
        assert_eq!(secret.reads.load(Ordering::SeqCst), 2, "read once, kept");
    }

    #[test]
    fn given_planner_variables_when_asked_then_only_llm_reads_the_secret() {
        let vars = |p: &str| HashMap::from([("CRANE_PLANNER".to_owned(), p.to_owned())]);
        assert!(wants_llm(&vars("llm")));
        assert!(wants_llm(&vars("LLM")));
        assert!(!wants_llm(&vars("pattern")));
        assert!(!wants_llm(&vars("bedrock")));
        assert!(
            wants_llm(&HashMap::new()),
            "unset: a configured key selects llm"
        );
    }
}
