//! Who is calling: every request gets its tenant here, before any handler runs, from
//! verified credentials only. Nothing a client writes in a header or body chooses it.
//!
//! - [`Auth::Keys`] (`crane-local`): `Authorization: Bearer <key>` looked up in a
//!   [`KeyRing`] of key=tenant pairs. Keys are compared in constant time (every configured
//!   key, every byte, whatever matches) and never logged; a missing, malformed or unknown key
//!   is a 401 with `WWW-Authenticate: Bearer`.
//! - [`Auth::Gateway`] (API Lambdas): API Gateway's authorizer has verified the caller; the
//!   tenant is a JWT claim or the IAM principal it hands over in the request context, which
//!   the Lambda entry point copies into a [`GatewayIdentity`] extension. No identity -> 401.
//! - [`Auth::Open`] (development): one tenant, [`DEFAULT_TENANT`], for every request.
//!
//! `/health`, `/openapi.json` and the web console's static files need no credentials.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, ErrorCode};
use crate::domain::DEFAULT_TENANT;

/// Longest API key accepted (bytes); every comparison runs over this many bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Shortest API key accepted, so a guessable key cannot be configured by mistake.
pub const MIN_KEY_BYTES: usize = 16;
/// Longest tenant name.
pub const MAX_TENANT_BYTES: usize = 128;

/// Paths served without credentials.
pub(super) const PUBLIC_PATHS: [&str; 2] = ["/health", "/openapi.json"];

/// Whether `path` is served without credentials: [`PUBLIC_PATHS`] and the console's files.
pub(super) fn is_public(path: &str) -> bool {
    PUBLIC_PATHS.contains(&path) || super::console::is_console_path(path)
}

/// The tenant of a request, set by the `authenticate` middleware.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tenant(pub String);

/// What API Gateway's authorizer verified, copied from the Lambda request context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayIdentity {
    /// The verified JWT's claims (JWT authorizer).
    pub claims: HashMap<String, String>,
    /// The caller's principal (IAM authorizer): its user ARN, else its caller id.
    pub iam_principal: Option<String>,
}

/// How requests are authenticated.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Auth {
    /// Development: no credentials, every request is [`DEFAULT_TENANT`].
    #[default]
    Open,
    /// API keys (crane-local).
    Keys(KeyRing),
    /// API Gateway's authorizer; the tenant is the JWT claim named `claim`, or the IAM
    /// principal.
    Gateway {
        /// The JWT claim naming the tenant (`CRANE_TENANT_CLAIM`, `sub` by default).
        claim: String,
    },
}

/// Whether `tenant` can name a tenant: 1 to [`MAX_TENANT_BYTES`] visible ASCII characters
/// without `#` (the separator of stored keys).
pub fn valid_tenant(tenant: &str) -> bool {
    !tenant.is_empty()
        && tenant.len() <= MAX_TENANT_BYTES
        && tenant.bytes().all(|b| b.is_ascii_graphic() && b != b'#')
}

/// Why a key=tenant list is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyParseError {
    /// An item has no `=`.
    #[error("item {item} is not key=tenant")]
    NotAPair {
        /// The item's position in the list, from 1 (blank and comment items count).
        item: usize,
    },
    /// A key is too short, too long, or has a character that is not allowed.
    #[error("item {item}: a key must be {MIN_KEY_BYTES} to {MAX_KEY_BYTES} visible ASCII characters without ',' or '='")]
    BadKey {
        /// The item's position in the list, from 1 (blank and comment items count).
        item: usize,
    },
    /// A tenant name is empty, too long, or has a character that is not allowed.
    #[error("item {item}: a tenant must be 1 to {MAX_TENANT_BYTES} visible ASCII characters without '#'")]
    BadTenant {
        /// The item's position in the list, from 1 (blank and comment items count).
        item: usize,
    },
    /// The same key appears twice.
    #[error("item {item}: the key is listed twice")]
    Duplicate {
        /// The item's position in the list, from 1 (blank and comment items count).
        item: usize,
    },
}

/// Parse `key=tenant` items (blank items and `#` comment lines skipped). Errors name the
/// item by position, never its key.
pub fn parse_keys<'a>(
    items: impl Iterator<Item = &'a str>,
) -> Result<Vec<(String, String)>, KeyParseError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (i, raw) in items.enumerate() {
        let item = i + 1;
        let raw = raw.trim();
        if raw.is_empty() || raw.starts_with('#') {
            continue;
        }
        let (key, tenant) = raw
            .split_once('=')
            .ok_or(KeyParseError::NotAPair { item })?;
        let (key, tenant) = (key.trim(), tenant.trim());
        let key_ok = (MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len())
            && key
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b',' && b != b'=');
        if !key_ok {
            return Err(KeyParseError::BadKey { item });
        }
        if !valid_tenant(tenant) {
            return Err(KeyParseError::BadTenant { item });
        }
        if out.iter().any(|(k, _)| k == key) {
            return Err(KeyParseError::Duplicate { item });
        }
        out.push((key.to_owned(), tenant.to_owned()));
    }
    Ok(out)
}

struct KeyEntry {
    key: [u8; MAX_KEY_BYTES],
    len: usize,
    tenant: String,
}

/// The API keys a server accepts, replaceable while it runs (`SIGHUP` reloads them).
/// Shows only how many keys it holds.
#[derive(Clone, Default)]
pub struct KeyRing(Arc<RwLock<Vec<KeyEntry>>>);

impl KeyRing {
    /// A ring accepting exactly these key=tenant pairs.
    pub fn new(pairs: &[(String, String)]) -> KeyRing {
        let ring = KeyRing::default();
        ring.replace(pairs);
        ring
    }

    /// Accept exactly these key=tenant pairs from now on.
    pub fn replace(&self, pairs: &[(String, String)]) {
        let entries = pairs
            .iter()
            .filter(|(k, _)| k.len() <= MAX_KEY_BYTES)
            .map(|(k, t)| {
                let mut key = [0u8; MAX_KEY_BYTES];
                key[..k.len()].copy_from_slice(k.as_bytes());
                KeyEntry {
                    key,
                    len: k.len(),
                    tenant: t.clone(),
                }
            })
            .collect();
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = entries;
    }

    /// How many keys are accepted now.
    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether no key is accepted now (every keyed request is refused).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tenant of `presented`, comparing it with every key over [`MAX_KEY_BYTES`]
    /// bytes, so the time taken says nothing about how much of a key matched or which.
    pub fn tenant_of(&self, presented: &[u8]) -> Option<String> {
        if presented.len() > MAX_KEY_BYTES {
            return None;
        }
        let mut padded = [0u8; MAX_KEY_BYTES];
        padded[..presented.len()].copy_from_slice(presented);
        let entries = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let mut found: Option<&KeyEntry> = None;
        for entry in entries.iter() {
            let mut diff = u8::from(entry.len != presented.len());
            for (a, b) in entry.key.iter().zip(padded.iter()) {
                diff |= a ^ b;
            }
            let equal = std::hint::black_box(diff) == 0;
            found = if equal { Some(entry) } else { found };
        }
        found.map(|e| e.tenant.clone())
    }
}

impl PartialEq for KeyRing {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyRing({} keys)", self.len())
    }
}

/// The 401 every authentication failure gets; `why` never quotes the credentials.
fn unauthorized(why: &str) -> Response {
    let mut resp = ApiError::new(ErrorCode::Unauthorized, why).into_response();
    resp.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// The bearer token of `Authorization`, or why there is none.
fn bearer(req: &Request) -> Result<&[u8], &'static str> {
    let value = req
        .headers()
        .get(AUTHORIZATION)
        .ok_or("send an API key as Authorization: Bearer <key>")?;
    let bytes = value.as_bytes();
    let malformed = "Authorization must be Bearer <key>";
    let (scheme, token) = match bytes.iter().position(|b| *b == b' ') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => return Err(malformed),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(malformed);
    }
    let token = token.trim_ascii();
    if token.is_empty() || token.len() > MAX_KEY_BYTES || !token.iter().all(u8::is_ascii_graphic) {
        return Err("the API key is not valid");
    }
    Ok(token)
}

/// The tenant API Gateway's authorizer verified, or why there is none.
fn gateway_tenant(req: &Request, claim: &str) -> Result<String, &'static str> {
    let identity = req
        .extensions()
        .get::<GatewayIdentity>()
        .ok_or("the request carries no verified identity")?;
    let tenant = identity
        .claims
        .get(claim)
        .or(identity.iam_principal.as_ref())
        .ok_or("the verified identity names no tenant")?;
    if valid_tenant(tenant) {
        Ok(tenant.clone())
    } else {
        Err("the verified identity does not name a valid tenant")
    }
}

/// Fix the request's [`Tenant`] from its credentials, or answer 401.
pub(super) async fn authenticate(
    State(auth): State<Arc<Auth>>,
    mut req: Request,
    next: Next,
) -> Response {
    let public = is_public(req.uri().path());
    let tenant = match auth.as_ref() {
        Auth::Open => Ok(DEFAULT_TENANT.to_owned()),
        Auth::Keys(ring) => {
            bearer(&req).and_then(|token| ring.tenant_of(token).ok_or("the API key is not valid"))
        }
        Auth::Gateway { claim } => gateway_tenant(&req, claim),
    };
    match tenant {
        Ok(tenant) => {
            let span = tracing::info_span!("tenant", tenant = %tenant);
            req.extensions_mut().insert(Tenant(tenant));
            tracing::Instrument::instrument(next.run(req), span).await
        }
        Err(_) if public => next.run(req).await,
        Err(why) => unauthorized(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        parse_keys(text.split(',')).expect("valid")
    }

    #[test]
    fn given_key_pairs_when_parsed_then_keys_map_to_tenants_and_mistakes_name_the_item() {
        let p = pairs(" key-a-0123456789abcdef=tenant-a , ,key-b-0123456789abcdef=tenant-b");
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].1, "tenant-b");
        for (bad, err) in [
            ("nokey", KeyParseError::NotAPair { item: 1 }),
            ("short=t", KeyParseError::BadKey { item: 1 }),
            (
                "key-a-0123456789abcdef=a#b",
                KeyParseError::BadTenant { item: 1 },
            ),
            (
                "key-a-0123456789abcdef=",
                KeyParseError::BadTenant { item: 1 },
            ),
            (
                "key-a-0123456789abcdef=a,key-a-0123456789abcdef=b",
                KeyParseError::Duplicate { item: 2 },
            ),
        ] {
            assert_eq!(parse_keys(bad.split(',')), Err(err.clone()), "{bad}");
            assert!(!err.to_string().contains("0123456789abcdef"));
        }
    }

    #[test]
    fn given_a_ring_when_keys_are_presented_then_only_exact_keys_find_their_tenant() {
        let ring = KeyRing::new(&pairs(
            "key-a-0123456789abcdef=tenant-a,key-b-0123456789abcdef=tenant-b",
        ));
        assert_eq!(
            ring.tenant_of(b"key-a-0123456789abcdef").as_deref(),
            Some("tenant-a")
        );
        assert_eq!(
            ring.tenant_of(b"key-b-0123456789abcdef").as_deref(),
            Some("tenant-b")
        );
        for wrong in [
            &b"key-a-0123456789abcde"[..],
            b"key-a-0123456789abcdeff",
            b"",
            b"key-a-0123456789abcdef\0",
            &[b'k'; 300],
        ] {
            assert_eq!(ring.tenant_of(wrong), None);
        }
        assert_eq!(format!("{ring:?}"), "KeyRing(2 keys)");
        ring.replace(&pairs("key-b-0123456789abcdef=tenant-b"));
        assert_eq!(ring.tenant_of(b"key-a-0123456789abcdef"), None);
    }

    #[test]
    fn given_tenant_names_when_checked_then_separators_and_controls_are_refused() {
        assert!(valid_tenant("arn:aws:iam::123456789012:user/alice"));
        assert!(valid_tenant("0b1c-uuid"));
        for bad in ["", "a#b", "a b", "caf\u{e9}", &"x".repeat(129)] {
            assert!(!valid_tenant(bad), "{bad}");
        }
    }
}
