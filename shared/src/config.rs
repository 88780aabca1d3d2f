//! Typed configuration, read once from the environment in `main`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::adapters::local::Durability;
use crate::app::Settings;
use crate::engine::approval::ApprovalPolicy;
use crate::engine::breaker::BreakerConfig;
use crate::engine::RetryPolicy;
use crate::http::auth::{parse_keys, KeyParseError};
use crate::http::edge::LOOPBACK_HOSTS;
use crate::http::quota::RateLimit;
use crate::http::{Auth, EdgeOptions, KeyRing, Origin};
use crate::tools::faults::{FaultParseError, Faults};

/// Why the configuration could not be read; names the variable (or key file) at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A variable's value is malformed or out of range.
    #[error("{name}={value:?} is not valid: {reason}")]
    Invalid {
        /// The variable's name.
        name: &'static str,
        /// The value it was given.
        value: String,
        /// What was expected instead (such as the accepted range).
        reason: String,
    },
    /// `CRANE_FAULTS` is not a valid list of fault rules.
    #[error(transparent)]
    Faults(#[from] FaultParseError),
    /// An API key source holds a malformed `key=tenant` entry.
    #[error("{source_name}: {error}")]
    Keys {
        /// Where the keys came from: `CRANE_API_KEYS` or the key file's path.
        source_name: String,
        /// What is wrong with the entry.
        #[source]
        error: KeyParseError,
    },
    /// The API key file could not be read.
    #[error("{path}: {error}")]
    KeysFile {
        /// The file's path (`CRANE_API_KEYS_FILE`).
        path: String,
        /// Why reading it failed (the I/O error's message).
        error: String,
    },
}

/// Where `crane-local` finds its API keys: `CRANE_API_KEYS` (comma-separated key=tenant)
/// and `CRANE_API_KEYS_FILE` (one key=tenant per line, reread on `SIGHUP`). Its `Debug`
/// shows no key.
#[derive(Clone, Default, PartialEq)]
pub struct ApiKeys {
    /// `key=tenant` pairs from `CRANE_API_KEYS`, in the order given.
    pub inline: Vec<(String, String)>,
    /// The `CRANE_API_KEYS_FILE` path; `None` when not set.
    pub file: Option<PathBuf>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("inline", &format_args!("{} keys", self.inline.len()))
            .field("file", &self.file)
            .finish()
    }
}

impl ApiKeys {
    /// Whether any key source is configured (else: development mode, one tenant).
    pub fn configured(&self) -> bool {
        !self.inline.is_empty() || self.file.is_some()
    }

    /// The key=tenant pairs of both sources, the file read now.
    pub fn load(&self) -> Result<Vec<(String, String)>, ConfigError> {
        let mut pairs = self.inline.clone();
        if let Some(path) = &self.file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::KeysFile {
                path: path.display().to_string(),
                error: e.to_string(),
            })?;
            let from_file = parse_keys(text.lines()).map_err(|error| ConfigError::Keys {
                source_name: path.display().to_string(),
                error,
            })?;
            for (key, tenant) in from_file {
                if !pairs.iter().any(|(k, _)| *k == key) {
                    pairs.push((key, tenant));
                }
            }
        }
        Ok(pairs)
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines, for a terminal (the default).
    #[default]
    Text,
    /// One JSON object per line, for CloudWatch and log pipelines.
    Json,
}

/// The HTTP edge: browser origins, and the limits `crane-local` puts on connections.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// `CRANE_CORS_ORIGINS`: origins besides the API's own allowed to call it from a
    /// browser (comma-separated `scheme://host[:port]`).
    pub cors_origins: Vec<Origin>,
    /// `CRANE_ALLOWED_HOSTS` (local runtime on a loopback address): `Host` names answered
    /// besides `localhost`, `127.0.0.1` and `[::1]`.
    pub allowed_hosts: Vec<String>,
    /// `CRANE_HTTP_HEADER_TIMEOUT_MS`: a request's head must arrive within this time of its
    /// first byte.
    pub header_timeout_ms: u64,
    /// `CRANE_HTTP_BODY_TIMEOUT_MS`: a request body must arrive within this time of being read.
    pub body_timeout_ms: u64,
    /// `CRANE_HTTP_IDLE_TIMEOUT_MS`: a connection with no request under way and no bytes
    /// moving is closed after this time.
    pub idle_timeout_ms: u64,
    /// `CRANE_HTTP_MAX_CONNECTIONS`: open connections at most; at the limit, the connection
    /// idle the longest is closed to admit a new one.
    pub max_connections: usize,
    /// `CRANE_API_KEYS` / `CRANE_API_KEYS_FILE` (local runtime).
    pub api_keys: ApiKeys,
    /// `CRANE_TENANT_CLAIM` (API Lambdas): the verified JWT claim naming the tenant.
    pub tenant_claim: String,
    /// `--insecure-no-auth` (local runtime): serve without keys on a non-loopback address.
    pub insecure_no_auth: bool,
    /// `CRANE_TENANT_RATE_PER_S` (local runtime): requests a second each tenant may make on
    /// average; 0 = no limit.
    pub tenant_rate_per_s: f64,
    /// `CRANE_TENANT_BURST` (local runtime): requests a tenant may make at once.
    pub tenant_burst: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            cors_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            max_connections: 512,
            api_keys: ApiKeys::default(),
            tenant_claim: "sub".into(),
            insecure_no_auth: false,
            tenant_rate_per_s: 0.0,
            tenant_burst: 100,
        }
    }
}

/// Everything configurable, with its defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `CRANE_ADDR` (local runtime): address to listen on.
    pub addr: String,
    /// `CRANE_DB` (local runtime): the SQLite file.
    pub db: PathBuf,
    /// `CRANE_SYNC` (local runtime): `full` or `normal`; see [`Durability`].
    pub sync: Durability,
    /// Retry, breaker, deadline, quota and approval settings of the engine and the services
    /// (`CRANE_RETRY_*`, `CRANE_BREAKER_*`, `CRANE_STEP_*`, `CRANE_APPROVAL*`, ...).
    pub settings: Settings,
    /// `CRANE_FAULTS`: fault injection rules.
    pub faults: Faults,
    /// `CRANE_LOG_FORMAT`: `text` or `json`.
    pub log_format: LogFormat,
    /// `CRANE_WORKERS` (local runtime): step jobs run concurrently.
    pub workers: usize,
    /// The HTTP edge: origins, hosts, connection limits, API keys and tenant quotas.
    pub http: HttpConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:3000".into(),
            db: PathBuf::from("./crane.db"),
            sync: Durability::default(),
            settings: Settings::default(),
            faults: Faults::none(),
            log_format: LogFormat::Text,
            workers: 256,
            http: HttpConfig::default(),
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

    /// A comma-separated list; empty items are skipped.
    fn list(&self, name: &str) -> impl Iterator<Item = &str> {
        self.get(name)
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
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

impl HttpConfig {
    /// The router's guards behind API Gateway, which owns connections and `Host`: the
    /// browser origins, and the tenant from the authorizer's verified identity.
    pub fn edge(&self) -> EdgeOptions {
        EdgeOptions {
            cors_origins: self.cors_origins.clone(),
            auth: Auth::Gateway {
                claim: self.tenant_claim.clone(),
            },
            ..EdgeOptions::default()
        }
    }

    /// The router's guards in `crane-local` listening on `addr`: a body deadline too, and
    /// on a loopback address only loopback `Host` names (and `CRANE_ALLOWED_HOSTS`), so a
    /// web page cannot reach it through DNS rebinding. With API keys configured, requests
    /// are authenticated by `keys`; without, every request is the default tenant.
    pub fn local_edge(&self, addr: SocketAddr, keys: Option<KeyRing>) -> EdgeOptions {
        let allowed_hosts = addr.ip().is_loopback().then(|| {
            LOOPBACK_HOSTS
                .iter()
                .map(|h| (*h).to_owned())
                .chain(self.allowed_hosts.iter().cloned())
                .collect()
        });
        EdgeOptions {
            cors_origins: self.cors_origins.clone(),
            allowed_hosts,
            body_timeout: Some(Duration::from_millis(self.body_timeout_ms)),
            auth: keys.map_or(Auth::Open, Auth::Keys),
            rate_limit: (self.tenant_rate_per_s > 0.0).then_some(RateLimit {
                rate_per_s: self.tenant_rate_per_s,
                burst: f64::from(self.tenant_burst),
            }),
        }
    }
}

impl Config {
    /// Reads the process environment; unset or blank variables take their defaults.
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_vars(std::env::vars().collect())
    }

    /// Reads `vars` (name to value) instead of the process environment, for tests.
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
            max_active_runs: v.num(
                "CRANE_TENANT_MAX_ACTIVE_RUNS",
                d.settings.max_active_runs,
                0,
                1_000_000,
            )?,
            approval: ApprovalPolicy::parse(v.list("CRANE_APPROVAL")).map_err(|e| {
                ConfigError::Invalid {
                    name: "CRANE_APPROVAL",
                    value: e.pattern.clone(),
                    reason: e.to_string(),
                }
            })?,
            approval_timeout_ms: v.num(
                "CRANE_APPROVAL_TIMEOUT_MS",
                d.settings.approval_timeout_ms,
                1,
                30 * 86_400_000,
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
        let http = HttpConfig {
            cors_origins: v
                .list("CRANE_CORS_ORIGINS")
                .map(|o| {
                    Origin::parse(o.trim_end_matches('/')).ok_or_else(|| ConfigError::Invalid {
                        name: "CRANE_CORS_ORIGINS",
                        value: o.to_owned(),
                        reason: "expected origins like https://app.example.com or http://localhost:5173, comma-separated".into(),
                    })
                })
                .collect::<Result<_, _>>()?,
            allowed_hosts: v
                .list("CRANE_ALLOWED_HOSTS")
                .map(|h| {
                    let valid = h
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '[' | ']' | ':'));
                    if valid {
                        Ok(h.to_ascii_lowercase())
                    } else {
                        Err(ConfigError::Invalid {
                            name: "CRANE_ALLOWED_HOSTS",
                            value: h.to_owned(),
                            reason: "expected host names like crane.internal, comma-separated".into(),
                        })
                    }
                })
                .collect::<Result<_, _>>()?,
            header_timeout_ms: v.num(
                "CRANE_HTTP_HEADER_TIMEOUT_MS",
                d.http.header_timeout_ms,
                1,
                3_600_000,
            )?,
            body_timeout_ms: v.num(
                "CRANE_HTTP_BODY_TIMEOUT_MS",
                d.http.body_timeout_ms,
                1,
                3_600_000,
            )?,
            idle_timeout_ms: v.num(
                "CRANE_HTTP_IDLE_TIMEOUT_MS",
                d.http.idle_timeout_ms,
                1,
                3_600_000,
            )?,
            max_connections: v.num(
                "CRANE_HTTP_MAX_CONNECTIONS",
                d.http.max_connections,
                1,
                1_000_000,
            )?,
            api_keys: ApiKeys {
                inline: parse_keys(v.list("CRANE_API_KEYS")).map_err(|error| {
                    ConfigError::Keys {
                        source_name: "CRANE_API_KEYS".into(),
                        error,
                    }
                })?,
                file: v.get("CRANE_API_KEYS_FILE").map(|f| PathBuf::from(f.trim())),
            },
            tenant_claim: v
                .get("CRANE_TENANT_CLAIM")
                .map_or(d.http.tenant_claim, |c| c.trim().to_owned()),
            insecure_no_auth: false,
            tenant_rate_per_s: v.num(
                "CRANE_TENANT_RATE_PER_S",
                d.http.tenant_rate_per_s,
                0.0,
                1_000_000.0,
            )?,
            tenant_burst: v.num("CRANE_TENANT_BURST", d.http.tenant_burst, 1, 1_000_000)?,
        };
        Ok(Config {
            addr: v.get("CRANE_ADDR").map_or(d.addr, str::to_owned),
            db: v.get("CRANE_DB").map_or(d.db, PathBuf::from),
            sync: match v.get("CRANE_SYNC").map(str::trim) {
                None => d.sync,
                Some(s) if s.eq_ignore_ascii_case("full") => Durability::Full,
                Some(s) if s.eq_ignore_ascii_case("normal") => Durability::Normal,
                Some(other) => {
                    return Err(ConfigError::Invalid {
                        name: "CRANE_SYNC",
                        value: other.to_owned(),
                        reason: "expected `full` or `normal`".into(),
                    })
                }
            },
            settings,
            faults: Faults::parse(v.get("CRANE_FAULTS").unwrap_or(""))?,
            log_format,
            workers: v.num("CRANE_WORKERS", d.workers, 1, 4_096)?,
            http,
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
        assert_eq!(c.workers, 256, "CRANE_WORKERS as the README documents it");
        assert_eq!(c.settings.retry.base_ms, 1_000);
        assert_eq!(c.settings.retry.max_retries, 3);
    }

    #[test]
    fn given_crane_sync_when_read_then_full_is_the_default_and_typos_are_refused() {
        assert_eq!(Config::default().sync, Durability::Full);
        let normal = Config::from_vars(vars(&[("CRANE_SYNC", "Normal")])).expect("valid");
        assert_eq!(normal.sync, Durability::Normal);
        let full = Config::from_vars(vars(&[("CRANE_SYNC", "full")])).expect("valid");
        assert_eq!(full.sync, Durability::Full);
        let err = Config::from_vars(vars(&[("CRANE_SYNC", "off")])).expect_err("invalid");
        assert!(err.to_string().contains("CRANE_SYNC"), "{err}");
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
    fn given_http_settings_when_read_then_origins_hosts_and_limits_apply() {
        let c = Config::from_vars(vars(&[
            (
                "CRANE_CORS_ORIGINS",
                "https://app.example.com/, http://localhost:5173",
            ),
            ("CRANE_ALLOWED_HOSTS", "Crane.Internal"),
            ("CRANE_HTTP_HEADER_TIMEOUT_MS", "100"),
            ("CRANE_HTTP_BODY_TIMEOUT_MS", "200"),
            ("CRANE_HTTP_IDLE_TIMEOUT_MS", "300"),
            ("CRANE_HTTP_MAX_CONNECTIONS", "4"),
        ]))
        .expect("valid");
        let origins: Vec<String> = c.http.cors_origins.iter().map(|o| o.to_string()).collect();
        assert_eq!(
            origins,
            ["https://app.example.com:443", "http://localhost:5173"]
        );
        assert_eq!(c.http.allowed_hosts, ["crane.internal"]);
        assert_eq!(
            (
                c.http.header_timeout_ms,
                c.http.body_timeout_ms,
                c.http.idle_timeout_ms,
                c.http.max_connections
            ),
            (100, 200, 300, 4)
        );
        let loopback = c
            .http
            .local_edge("127.0.0.1:0".parse().expect("addr"), None);
        let hosts = loopback.allowed_hosts.expect("loopback checks Host");
        assert_eq!(hosts, ["localhost", "127.0.0.1", "[::1]", "crane.internal"]);
        assert_eq!(loopback.body_timeout, Some(Duration::from_millis(200)));
        let public = c.http.local_edge("0.0.0.0:0".parse().expect("addr"), None);
        assert_eq!(public.allowed_hosts, None);
        assert_eq!(c.http.edge().allowed_hosts, None);
        assert_eq!(c.http.edge().cors_origins.len(), 2);
    }

    #[test]
    fn given_api_keys_inline_and_in_a_file_when_loaded_then_both_apply_and_debug_hides_them() {
        let file = std::env::temp_dir().join(format!("crane-keys-{}", uuid::Uuid::new_v4()));
        std::fs::write(
            &file,
            "# tenant b\nkey-b-0123456789abcdef=tenant-b\n\nkey-a-0123456789abcdef=tenant-a\n",
        )
        .expect("write");
        let c = Config::from_vars(vars(&[
            ("CRANE_API_KEYS", "key-a-0123456789abcdef=tenant-a"),
            ("CRANE_API_KEYS_FILE", file.to_str().expect("utf-8")),
            ("CRANE_TENANT_CLAIM", "custom:tenant"),
        ]))
        .expect("valid");
        assert!(c.http.api_keys.configured());
        let pairs = c.http.api_keys.load().expect("loaded");
        assert_eq!(pairs.len(), 2);
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
        assert_eq!(
            c.http.edge().auth,
            Auth::Gateway {
                claim: "custom:tenant".into()
            }
        );
        std::fs::write(&file, "oops\n").expect("write");
        assert!(c.http.api_keys.load().is_err());
        std::fs::remove_file(&file).expect("remove");
        assert!(c.http.api_keys.load().is_err());
        assert!(!Config::default().http.api_keys.configured());
    }

    #[test]
    fn given_bad_values_when_read_then_the_error_names_the_variable() {
        for (k, v) in [
            ("CRANE_RETRY_BASE_MS", "soon"),
            ("CRANE_RETRY_MAX_ATTEMPTS", "-1"),
            ("CRANE_LOG_FORMAT", "xml"),
            ("CRANE_FAULTS", "calculator"),
            ("CRANE_BREAKER_FAILURES", "0"),
            ("CRANE_CORS_ORIGINS", "*"),
            ("CRANE_CORS_ORIGINS", "https://a.example/path"),
            ("CRANE_ALLOWED_HOSTS", "evil.example/x"),
            ("CRANE_HTTP_MAX_CONNECTIONS", "0"),
            ("CRANE_HTTP_HEADER_TIMEOUT_MS", "soon"),
            ("CRANE_API_KEYS", "short=tenant-a"),
            ("CRANE_TENANT_RATE_PER_S", "-1"),
            ("CRANE_TENANT_BURST", "0"),
            ("CRANE_API_KEYS", "key-a-0123456789abcdef"),
        ] {
            let err = Config::from_vars(vars(&[(k, v)])).expect_err(k).to_string();
            assert!(err.contains(k) || k == "CRANE_FAULTS", "{err}");
            assert!(!err.contains("0123456789abcdef"), "no key in {err}");
        }
    }
}
