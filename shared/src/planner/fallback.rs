//! The fallback planner: a model plans first, the pattern planner takes over when it fails.
//!
//! Any failure of the model (timeout, connection, 429, 5xx, an unusable answer, a plan that
//! fails validation, a wrong key or configuration) falls back, and the plan records who made
//! it and why (`PlannerInfo { name: "pattern", requested: Some("llm"), fallback_reason }`).
//! The recorded reason is a short category ([`LlmError::category`](super::model::LlmError::category): `timeout`,
//! `rate_limited`, `unavailable`, `misconfigured`, `invalid_output`, `invalid_plan`,
//! `refused`) because every client reading the run sees it; the full error, which can name
//! internal hosts or quote the model, is logged and handed back in
//! [`Planned::fallback_detail`], never stored.
//! Setup errors (authentication, a wrong model or URL) are logged at error level and mark the
//! planner degraded, which `GET /health` reports (with the key and URL credentials
//! redacted), until a later call succeeds.

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

use super::model::ModelPlanner;
use super::{PatternPlanner, PlanError, Planned, Planner};
use crate::tools::Registry;

/// A model planner with a fallback (the pattern planner unless told otherwise).
pub struct FallbackPlanner {
    primary: Arc<dyn ModelPlanner>,
    fallback: Arc<dyn Planner>,
    degraded: Mutex<Option<String>>,
}

impl std::fmt::Debug for FallbackPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackPlanner")
            .field("primary", &self.primary.name())
            .field("model", &self.primary.model())
            .field("fallback", &self.fallback.name())
            .field("degraded", &self.degraded())
            .finish()
    }
}

impl FallbackPlanner {
    /// `primary`, falling back to the [`PatternPlanner`].
    pub fn new(primary: Arc<dyn ModelPlanner>) -> Self {
        Self::with_fallback(primary, Arc::new(PatternPlanner))
    }

    /// `primary`, falling back to `fallback`.
    pub fn with_fallback(primary: Arc<dyn ModelPlanner>, fallback: Arc<dyn Planner>) -> Self {
        Self {
            primary,
            fallback,
            degraded: Mutex::new(None),
        }
    }

    fn set_degraded(&self, reason: Option<String>) {
        *self.degraded.lock().unwrap_or_else(PoisonError::into_inner) = reason;
    }
}

#[async_trait]
impl Planner for FallbackPlanner {
    fn name(&self) -> &'static str {
        self.primary.name()
    }

    async fn plan(&self, prompt: &str, registry: &Registry) -> Result<Planned, PlanError> {
        let failure = match self.primary.plan_with_model(prompt, registry).await {
            Ok(planned) => {
                self.set_degraded(None);
                return Ok(planned);
            }
            Err(failure) => failure,
        };
        let primary = self.primary.name();
        let category = failure.error.category();
        let detail = format!("{primary} planner failed: {}", failure.error);
        if failure.error.is_configuration() {
            tracing::error!(
                planner = primary,
                model = %self.primary.model(),
                latency_ms = failure.usage.latency_ms,
                reason = category,
                error = %failure.error,
                "planner misconfigured; falling back to the {} planner until it is fixed",
                self.fallback.name()
            );
            self.set_degraded(Some(detail.clone()));
        } else {
            tracing::warn!(
                planner = primary,
                model = %self.primary.model(),
                latency_ms = failure.usage.latency_ms,
                prompt_tokens = failure.usage.prompt_tokens,
                completion_tokens = failure.usage.completion_tokens,
                reason = category,
                error = %failure.error,
                "planning failed; falling back to the {} planner",
                self.fallback.name()
            );
        }
        let mut planned = self
            .fallback
            .plan(prompt, registry)
            .await
            .map_err(|e| match e {
                PlanError::NotUnderstood(m) => PlanError::NotUnderstood(format!(
                    "{m} (the {primary} planner could not plan it either: {category})"
                )),
                other => other,
            })?;
        planned.info.requested = Some(primary.to_owned());
        planned.info.fallback_reason = Some(category.to_owned());
        planned.fallback_detail = Some(detail);
        if planned.info.usage.is_none() {
            // The cost of the failed call, so the event still shows what planning spent.
            planned.info.usage = Some(failure.usage);
        }
        Ok(planned)
    }

    fn degraded(&self) -> Option<String> {
        self.degraded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests;
