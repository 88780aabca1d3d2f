//! The Lambda entry points: translate an API Gateway request, an SQS batch, a DynamoDB
//! Stream batch or a saga task into calls of the [`App`], and the results back. No
//! business rules live here.
//!
//! - [`http`]: `create-run` and `get-run` serve [`crate::http::router`] through
//!   `lambda_http`.
//! - [`sqs`]: `step-worker` runs step jobs and answers with a partial batch response.
//! - [`stream`]: `event-reactor` projects the events table's stream into the runs view and
//!   sends the reactions (step jobs, sagas).
//! - [`saga`]: `compensate` runs the saga state machine's tasks.
//! - [`llm_key`]: the LLM API key from Secrets Manager, re-read later if it failed.
//! - [`metrics`]: CloudWatch Embedded Metric Format lines.
//!
//! [`app_from_env`] wires an [`App`] over the AWS adapters once per cold start;
//! [`build_app`] does the same from explicit clients and names (tests, tools).

pub mod http;
pub mod llm_key;
pub mod metrics;
pub mod saga;
pub mod sqs;
pub mod stream;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::adapters::aws::{
    self, DynamoStore, MissingEnv, SfnSagaStarter, SqsDispatcher, TableNames,
    SAGA_STATE_MACHINE_ARN_VAR, STEP_QUEUE_URL_VAR,
};
use crate::app::App;
use crate::config::{Config, ConfigError};
use crate::domain::{RunKey, StepJob};
use crate::planner::{PatternPlanner, Planner};
use crate::ports::{Redelivery, SagaStarter, StepDispatcher, StoreError, StoreResult, SystemClock};
use crate::tools::Registry;

/// The ports the App does not hold: where reactions are sent, and how the step worker
/// brings a message back early.
#[derive(Clone)]
pub struct CloudPorts {
    /// Sends step jobs to the step queue (SQS).
    pub dispatcher: Arc<dyn StepDispatcher>,
    /// Starts compensation sagas (Step Functions executions).
    pub saga: Arc<dyn SagaStarter>,
    /// Makes a received step message visible again at a chosen time (a deferred or retried job).
    pub redelivery: Arc<dyn Redelivery>,
}

/// Which function is starting: it decides which resources must be configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// `create-run`: tables, and the planner the environment selects (it plans prompts).
    CreateRun,
    /// `get-run`: every route but `POST /runs` (reads, cancel, approvals, events);
    /// tables only.
    GetRun,
    /// `step-worker`: tables and the step queue (to defer jobs).
    StepWorker,
    /// `event-reactor`: tables, the step queue and the saga state machine.
    EventReactor,
    /// `compensate`: tables only.
    Compensate,
}

impl Function {
    fn needs_queue(self) -> bool {
        matches!(self, Function::StepWorker | Function::EventReactor)
    }

    fn needs_saga(self) -> bool {
        self == Function::EventReactor
    }

    /// Only create-run plans, so only it builds the configured planner (and may read
    /// the LLM key, which only its role can).
    fn plans(self) -> bool {
        self == Function::CreateRun
    }
}

/// Why a function could not start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A required environment variable (table, queue or state machine name) is missing.
    #[error("configuration: {0}")]
    Env(#[from] MissingEnv),
    /// A `CRANE_*` setting is malformed.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// The selected planner cannot be built from its settings.
    #[error("planner: {0}")]
    Planner(#[from] crate::planner::select::SelectError),
}

/// The Secrets Manager secret holding the LLM API key (Planner=llm on AWS): the key itself
/// is never a template parameter or a plain environment variable.
pub const LLM_API_KEY_SECRET_ARN_VAR: &str = "CRANE_LLM_API_KEY_SECRET_ARN";

/// The planner the environment selects (`crate::planner::select`). With `llm` selected,
/// `CRANE_LLM_API_KEY_SECRET_ARN` set and no `CRANE_LLM_API_KEY`, the key is read from
/// Secrets Manager ([`planner_with_key_secret`]): a failed read does not stop the function.
/// Other planners never read the secret.
pub async fn planner_from_env(sdk: &aws_config::SdkConfig) -> Result<Arc<dyn Planner>, SetupError> {
    let vars: HashMap<String, String> = std::env::vars().collect();
    let has_key = vars
        .get("CRANE_LLM_API_KEY")
        .is_some_and(|k| !k.trim().is_empty());
    let secret_arn = vars
        .get(LLM_API_KEY_SECRET_ARN_VAR)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty());
    match secret_arn {
        Some(arn) if !has_key && llm_key::wants_llm(&vars) => {
            let client = aws_sdk_secretsmanager::Client::new(sdk);
            let source = Arc::new(llm_key::SecretsManagerSource::new(client, arn));
            planner_with_key_secret(vars, source, llm_key::RETRY_EVERY).await
        }
        _ => Ok(crate::planner::select::planner_from_vars(&vars)?),
    }
}

/// The `llm` planner of `vars` with its key read from `source` now, and again every
/// `retry_every` while that fails (the pattern planner plans meanwhile, and the planner
/// reports itself degraded). The rest of the configuration is checked at once: a bad
/// base URL is a setup error, not a missing key.
pub async fn planner_with_key_secret(
    vars: HashMap<String, String>,
    source: Arc<dyn llm_key::SecretSource>,
    retry_every: std::time::Duration,
) -> Result<Arc<dyn Planner>, SetupError> {
    let mut probe = vars.clone();
    probe.insert("CRANE_LLM_API_KEY".into(), "probe".into());
    crate::planner::select::choice_from_vars(&probe)?;
    let build: Box<llm_key::BuildPlanner> = Box::new(move |key: &str| {
        let mut vars = vars.clone();
        vars.insert("CRANE_LLM_API_KEY".into(), key.to_owned());
        crate::planner::select::planner_from_vars(&vars).map_err(|e| e.to_string())
    });
    Ok(Arc::new(
        llm_key::KeyedPlanner::start(source, build, retry_every).await,
    ))
}

/// The AWS clients, built once per cold start.
#[derive(Debug, Clone)]
pub struct CloudClients {
    /// The DynamoDB client all five table stores share.
    pub dynamodb: aws::aws_sdk_dynamodb::Client,
    /// The SQS client that sends and redelivers step jobs.
    pub sqs: aws::aws_sdk_sqs::Client,
    /// The Step Functions client that starts saga executions.
    pub sfn: aws::aws_sdk_sfn::Client,
}

impl CloudClients {
    /// Clients for DynamoDB, SQS and Step Functions, all from one SDK configuration.
    pub fn new(config: &aws::aws_config::SdkConfig) -> Self {
        Self {
            dynamodb: aws::aws_sdk_dynamodb::Client::new(config),
            sqs: aws::aws_sdk_sqs::Client::new(config),
            sfn: aws::aws_sdk_sfn::Client::new(config),
        }
    }
}

/// Where everything lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudNames {
    /// The names of the five DynamoDB tables.
    pub tables: TableNames,
    /// `CRANE_STEP_QUEUE_URL`.
    pub step_queue_url: Option<String>,
    /// `CRANE_SAGA_STATE_MACHINE_ARN`.
    pub saga_state_machine_arn: Option<String>,
}

impl CloudNames {
    /// From the environment, requiring what `function` uses.
    pub fn from_env(function: Function) -> Result<Self, MissingEnv> {
        let var = |name: &'static str, required: bool| {
            let v = std::env::var(name)
                .ok()
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty());
            match v {
                None if required => Err(MissingEnv(name)),
                v => Ok(v),
            }
        };
        Ok(Self {
            tables: TableNames::from_env()?,
            step_queue_url: var(STEP_QUEUE_URL_VAR, function.needs_queue())?,
            saga_state_machine_arn: var(SAGA_STATE_MACHINE_ARN_VAR, function.needs_saga())?,
        })
    }
}

/// A port whose resource is not configured on this function: every use fails clearly.
struct Unconfigured(&'static str);

impl Unconfigured {
    fn error(&self) -> StoreError {
        StoreError::Invalid(format!("{} is not set on this function", self.0))
    }
}

#[async_trait]
impl StepDispatcher for Unconfigured {
    async fn dispatch(&self, _jobs: &[(StepJob, u64)]) -> StoreResult<()> {
        Err(self.error())
    }
}

#[async_trait]
impl Redelivery for Unconfigured {
    async fn redeliver_in(&self, _receipt_handle: &str, _seconds: u32) -> StoreResult<()> {
        Err(self.error())
    }
}

#[async_trait]
impl SagaStarter for Unconfigured {
    async fn start(&self, _key: &RunKey, _correlation_id: &str, _attempt: u32) -> StoreResult<()> {
        Err(self.error())
    }
}

/// The App and ports over the AWS adapters, from explicit clients and names, planning
/// with the pattern planner.
pub fn build_app(
    config: &Config,
    clients: &CloudClients,
    names: &CloudNames,
) -> (Arc<App>, CloudPorts) {
    build_app_with(config, clients, names, Arc::new(PatternPlanner))
}

/// [`build_app`] with the given planner.
pub fn build_app_with(
    config: &Config,
    clients: &CloudClients,
    names: &CloudNames,
    planner: Arc<dyn Planner>,
) -> (Arc<App>, CloudPorts) {
    let store = Arc::new(DynamoStore::new(
        clients.dynamodb.clone(),
        names.tables.clone(),
    ));
    let registry = Registry::new(store.clone()).with_faults(&config.faults);
    let app = App {
        events: store.clone(),
        views: store.clone(),
        todos: store.clone(),
        idempotency: store.clone(),
        breakers: store,
        registry,
        planner,
        clock: Arc::new(SystemClock),
        settings: config.settings.clone(),
    };
    let (dispatcher, redelivery): (Arc<dyn StepDispatcher>, Arc<dyn Redelivery>) =
        match &names.step_queue_url {
            Some(url) => {
                let queue = Arc::new(SqsDispatcher::new(clients.sqs.clone(), url.clone()));
                (queue.clone(), queue)
            }
            None => (
                Arc::new(Unconfigured(STEP_QUEUE_URL_VAR)),
                Arc::new(Unconfigured(STEP_QUEUE_URL_VAR)),
            ),
        };
    let saga: Arc<dyn SagaStarter> = match &names.saga_state_machine_arn {
        Some(arn) => Arc::new(SfnSagaStarter::new(clients.sfn.clone(), arn.clone())),
        None => Arc::new(Unconfigured(SAGA_STATE_MACHINE_ARN_VAR)),
    };
    (
        Arc::new(app),
        CloudPorts {
            dispatcher,
            saga,
            redelivery,
        },
    )
}

/// The App and ports of `function`, configured from the environment (the standard AWS
/// provider chain, the `CRANE_*` table, queue and state machine variables). Call once per
/// cold start.
pub async fn app_from_env(
    config: &Config,
    function: Function,
) -> Result<(Arc<App>, CloudPorts), SetupError> {
    let names = CloudNames::from_env(function)?;
    let sdk = aws::load_sdk_config().await;
    let planner = if function.plans() {
        planner_from_env(&sdk).await?
    } else {
        Arc::new(PatternPlanner)
    };
    Ok(build_app_with(
        config,
        &CloudClients::new(&sdk),
        &names,
        planner,
    ))
}
