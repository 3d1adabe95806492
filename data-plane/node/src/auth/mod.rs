//! Publish and play tokens: JWTs (RFC 7519) signed with HS256, verified
//! locally against keys from the node's configuration.
//!
//! A token names a stream (or a prefix ending in a separator and `*`), an
//! action and an expiry:
//!
//! ```text
//! header  {"alg":"HS256","typ":"JWT","kid":"k1"}
//! claims  {"sub":"cam-*","act":"play","exp":1767225600,"iat":1767222000}
//! ```
//!
//! The keys can be read again while the node runs ([`Auth::reload`], on
//! SIGHUP), and a token may not claim to live longer than the node's
//! `--token-max-ttl`.
//!
//! Everything here is a pure function of its inputs (the current time is an
//! argument), so the parser is fuzzed (`fuzz/fuzz_targets/token.rs`) and unit-tested
//! without a server. Secrets and tokens are never logged: [`TokenKeys`] and
//! [`SecretString`] print redacted, and no error message carries token text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::hmac;
use serde::{Deserialize, Serialize};
use strata_common::names;

/// Longest token accepted (bytes); real ones are a few hundred.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Shortest HS256 secret accepted (bytes), per RFC 7518 §3.2.
pub const MIN_SECRET_LEN: usize = 32;
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 5;
/// Longest key id.
const MAX_KID_LEN: usize = 64;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// WHIP: send a stream.
    Publish,
    /// WHEP: receive a stream.
    Play,
}

impl Action {
    /// The claim value.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Play => "play",
        }
    }
}

/// Whether WHIP and WHEP need a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Anyone may publish and play (local development only; logged loudly).
    Open,
    /// Every WHIP/WHEP POST needs a valid token for its stream and action.
    Required,
}

/// A token that cannot be trusted: answered with 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No `Authorization: Bearer` header and no `token` query parameter.
    #[error("a token is required")]
    Missing,
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("the token is too long")]
    TooLong,
    /// Not three base64url parts of JSON objects with the required fields.
    #[error("the token is malformed: {0}")]
    Malformed(&'static str),
    /// `alg` is not `HS256` (`none` included).
    #[error("the token's algorithm is not supported (use HS256)")]
    UnsupportedAlgorithm,
    /// The header has no `kid`, or names a key this node does not have.
    #[error("the token's key id is unknown")]
    UnknownKey,
    /// The signature does not verify with the named key.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is still in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `exp` is further from `iat` (or from now, without `iat`) than the
    /// node's maximum token lifetime.
    #[error("the token's lifetime exceeds this node's maximum")]
    LifetimeTooLong,
}

/// A valid token that does not cover the request: answered with 403.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// `sub` does not match the stream.
    #[error("the token does not cover this stream")]
    WrongStream,
    /// `act` is not the request's action.
    #[error("the token does not allow {0}")]
    WrongAction(&'static str),
    /// A backup publish with a token that does not carry `"backup": true`.
    #[error("the token does not allow publishing as a backup")]
    NoBackupRole,
}

/// A failure to load keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file or directory could not be read.
    #[error("reading token keys from {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// An entry is not `kid=base64secret` (the secret is never shown).
    #[error("token key entry {index} {why}")]
    BadEntry {
        /// 1-based position among the entries.
        index: usize,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Two entries have the same key id.
    #[error("token key id {0:?} appears twice")]
    Duplicate(String),
    /// `--auth required` and the sources hold no key at all.
    #[error("no token keys (--token-keys FILE|DIR or STRATA_TOKEN_KEYS)")]
    NoKeys,
}

/// The verified claims of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// A stream name, `*`, or a prefix ending in a separator and `*`.
    pub sub: String,
    /// The allowed action.
    pub action: Action,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued at, seconds since the epoch, when the token says.
    pub iat: Option<u64>,
    /// Whether the token allows publishing as a stream's backup publisher
    /// (`"backup": true`; publish tokens only).
    pub backup: bool,
}

impl Grant {
    /// Whether this grant allows `action` on `stream`.
    pub fn allows(&self, stream: &str, action: Action) -> Result<(), Denied> {
        if !subject_matches(&self.sub, stream) {
            return Err(Denied::WrongStream);
        }
        if self.action != action {
            return Err(Denied::WrongAction(action.as_str()));
        }
        Ok(())
    }

    /// How long the token claims to live at `now`: `exp` minus `iat`, or
    /// minus `now` when `iat` is absent or in the future (a future `iat`
    /// must not shorten the lifetime of a token that is valid already).
    pub fn lifetime(&self, now: u64) -> u64 {
        let start = self.iat.map_or(now, |iat| iat.min(now));
        self.exp.saturating_sub(start)
    }
}

/// Characters a wildcard prefix must end with: the name characters that are
/// not letters or digits, i.e. the separators of a stream name's parts.
fn is_separator(b: u8) -> bool {
    matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Whether `sub` covers `stream`: the stream itself; `*`, every stream; or
/// `prefix*` where the prefix ends in a separator (`-` `.` `_` `~`), every
/// stream that starts with the prefix, so whole parts are matched: `cam-1-*`
/// covers `cam-1-hd`, never `cam-10`. A malformed wildcard (`cam-1*`,
/// `c*m`, `**`) covers nothing; [`verify`] refuses tokens that carry one.
pub fn subject_matches(sub: &str, stream: &str) -> bool {
    if !valid_subject(sub) {
        return false;
    }
    match sub.strip_suffix('*') {
        Some(prefix) => stream.starts_with(prefix),
        None => sub == stream,
    }
}

/// A secret string that never prints (config fields holding key entries).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretString(pub String);

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// HS256 keys by key id.
#[derive(Clone, Default)]
pub struct TokenKeys {
    keys: BTreeMap<String, hmac::Key>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn valid_kid(kid: &str) -> bool {
    !kid.is_empty() && kid.len() <= MAX_KID_LEN && kid.bytes().all(names::is_name_byte)
}

/// Decodes a secret: standard or URL-safe base64, padded or not.
fn decode_secret(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    STANDARD
        .decode(s)
        .ok()
        .or_else(|| URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok())
        .or_else(|| {
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(s.trim_end_matches('='))
                .ok()
        })
}

impl TokenKeys {
    /// No keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True without keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Key ids, for the start-up log.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Adds one key.
    pub fn insert(&mut self, kid: &str, secret: &[u8]) -> Result<(), KeyError> {
        if !valid_kid(kid) {
            return Err(KeyError::BadEntry {
                index: self.keys.len() + 1,
                why: "has an invalid key id (1-64 of A-Z a-z 0-9 . _ ~ -)",
            });
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err(KeyError::BadEntry {
                index: self.keys.len() + 1,
                why: "has a secret shorter than 32 bytes",
            });
        }
        if self.keys.contains_key(kid) {
            return Err(KeyError::Duplicate(kid.to_owned()));
        }
        self.keys
            .insert(kid.to_owned(), hmac::Key::new(hmac::HMAC_SHA256, secret));
        Ok(())
    }

    /// Adds `kid=base64secret` entries separated by commas, whitespace or
    /// newlines; `#` starts a comment line.
    pub fn add_entries(&mut self, text: &str) -> Result<(), KeyError> {
        let entries = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .flat_map(|l| l.split(|c: char| c == ',' || c.is_whitespace()))
            .filter(|e| !e.is_empty());
        for entry in entries {
            let index = self.keys.len() + 1;
            let Some((kid, secret)) = entry.split_once('=') else {
                return Err(KeyError::BadEntry {
                    index,
                    why: "is not kid=base64secret",
                });
            };
            let secret = decode_secret(secret).ok_or(KeyError::BadEntry {
                index,
                why: "has a secret that is not base64",
            })?;
            self.insert(kid.trim(), &secret)?;
        }
        Ok(())
    }

    /// Adds the entries of a file, or of every regular file in a directory
    /// (sorted by name; names starting with `.` are skipped).
    pub fn add_path(&mut self, path: &Path) -> Result<(), KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        if path.is_dir() {
            let mut files: Vec<_> = std::fs::read_dir(path)
                .map_err(io)?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .filter(|p| {
                    !p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with('.'))
                })
                .collect();
            files.sort();
            for f in files {
                self.add_path(&f)?;
            }
            Ok(())
        } else {
            let text = std::fs::read_to_string(path).map_err(io)?;
            self.add_entries(&text)
        }
    }

    /// Verifies a token at `now` (seconds since the epoch) and returns its grant.
    pub fn verify(&self, token: &str, now: u64) -> Result<Grant, TokenError> {
        verify(self, token, now)
    }

    /// Mints a token (the `strata-node token` command and tests).
    pub fn mint(&self, kid: &str, claims: &Claims) -> Option<String> {
        let header = serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": kid});
        let claims = serde_json::to_vec(claims).ok()?;
        self.sign_parts(kid, header.to_string().as_bytes(), &claims)
    }

    /// Signs arbitrary header and claims bytes with key `kid` (tests and the
    /// fuzz target use it to reach the claim checks with hostile JSON).
    pub fn sign_parts(&self, kid: &str, header: &[u8], claims: &[u8]) -> Option<String> {
        let key = self.keys.get(kid)?;
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let tag = hmac::sign(key, signing_input.as_bytes());
        Some(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        ))
    }
}

/// The claims a token carries (serialized by [`TokenKeys::mint`]).
#[derive(Debug, Clone, Serialize)]
pub struct Claims {
    /// Stream or prefix ending in `*`.
    pub sub: String,
    /// `publish` or `play`.
    pub act: Action,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not before, seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Allows publishing as the stream's backup publisher.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub backup: bool,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    act: Option<String>,
    #[serde(default)]
    exp: Option<serde_json::Number>,
    #[serde(default)]
    nbf: Option<serde_json::Number>,
    #[serde(default)]
    iat: Option<serde_json::Number>,
    #[serde(default)]
    backup: Option<bool>,
}

/// A NumericDate (RFC 7519 §2): seconds, possibly fractional, never negative.
fn numeric_date(n: &serde_json::Number) -> Option<u64> {
    if let Some(u) = n.as_u64() {
        return Some(u);
    }
    let f = n.as_f64()?;
    (f.is_finite() && (0.0..1e15).contains(&f)).then_some(f as u64)
}

/// `*`; a prefix of stream-name characters ending in a separator, then `*`
/// (`cam-*`, `cam-1-*`, not `cam-1*`, which would cover `cam-10` too); or a
/// valid stream name (not `.` or `..`, which no stream can be called).
pub fn valid_subject(sub: &str) -> bool {
    match sub.strip_suffix('*') {
        None => names::is_valid(sub),
        Some("") => true,
        Some(prefix) => {
            sub.len() <= names::MAX_NAME_LEN
                && prefix.bytes().last().is_some_and(is_separator)
                && prefix.bytes().all(names::is_name_byte)
        }
    }
}

/// Verifies `token` against `keys` at `now` (seconds since the epoch).
///
/// Checks, in order: size, shape, header (`alg` HS256, no `crit`, known
/// `kid`), the signature (constant time, `ring::hmac::verify`), and only then
/// the claims: `exp` required, `nbf` and `iat` optional, `sub` a stream name,
/// `*` or a prefix ending in a separator and `*`, `act` `publish` or `play`.
/// The lifetime bound is the caller's ([`Auth::check`]), as it is a setting.
pub fn verify(keys: &TokenKeys, token: &str, now: u64) -> Result<Grant, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(head), Some(body), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("not three dot-separated parts"));
    };
    let header_json = URL_SAFE_NO_PAD
        .decode(head)
        .map_err(|_| TokenError::Malformed("header is not base64url"))?;
    let header: RawHeader = serde_json::from_slice(&header_json)
        .map_err(|_| TokenError::Malformed("header is not a JSON object with alg"))?;
    if header.alg != "HS256" {
        return Err(TokenError::UnsupportedAlgorithm);
    }
    if header.crit.is_some() {
        return Err(TokenError::Malformed("critical header parameters"));
    }
    let key = header
        .kid
        .as_deref()
        .and_then(|kid| keys.keys.get(kid))
        .ok_or(TokenError::UnknownKey)?;
    let signature = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| TokenError::Malformed("signature is not base64url"))?;
    let signing_input = &token[..head.len() + 1 + body.len()];
    hmac::verify(key, signing_input.as_bytes(), &signature)
        .map_err(|_| TokenError::BadSignature)?;

    let claims_json = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| TokenError::Malformed("claims are not base64url"))?;
    let claims: RawClaims = serde_json::from_slice(&claims_json)
        .map_err(|_| TokenError::Malformed("claims are not a JSON object"))?;
    let exp = claims
        .exp
        .as_ref()
        .ok_or(TokenError::Malformed("no exp claim"))
        .and_then(|n| numeric_date(n).ok_or(TokenError::Malformed("exp is not a NumericDate")))?;
    if now >= exp.saturating_add(LEEWAY_SECS) {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = &claims.nbf {
        let nbf = numeric_date(nbf).ok_or(TokenError::Malformed("nbf is not a NumericDate"))?;
        if now.saturating_add(LEEWAY_SECS) < nbf {
            return Err(TokenError::NotYetValid);
        }
    }
    let iat = match &claims.iat {
        Some(n) => Some(numeric_date(n).ok_or(TokenError::Malformed("iat is not a NumericDate"))?),
        None => None,
    };
    let sub = claims
        .sub
        .filter(|s| valid_subject(s))
        .ok_or(TokenError::Malformed(
            "sub must be a stream name, * or a prefix ending in - . _ or ~ then *",
        ))?;
    let action = match claims.act.as_deref() {
        Some("publish") => Action::Publish,
        Some("play") => Action::Play,
        _ => return Err(TokenError::Malformed("act must be publish or play")),
    };
    Ok(Grant {
        sub,
        action,
        exp,
        iat,
        backup: claims.backup == Some(true) && action == Action::Publish,
    })
}

/// A URI (path and query) with the value of any `token` parameter replaced,
/// for logs.
pub fn redact_uri(uri: &str) -> String {
    let Some((path, query)) = uri.split_once('?') else {
        return uri.to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("token") => format!("{k}=REDACTED"),
            _ => kv.to_owned(),
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

/// Why a WHIP/WHEP request was not authorized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token, or one that cannot be trusted (401).
    #[error(transparent)]
    Unauthorized(#[from] TokenError),
    /// A valid token for another stream or action (403).
    #[error(transparent)]
    Forbidden(#[from] Denied),
}

/// Where a node's keys come from, kept so that they can be read again.
#[derive(Debug, Clone, Default)]
pub struct KeySource {
    /// `--token-keys`: a file, or a directory of files, read at every load.
    pub path: Option<PathBuf>,
    /// `STRATA_TOKEN_KEYS` as it was at start (a process's environment does
    /// not change from outside).
    pub entries: Option<SecretString>,
}

impl KeySource {
    /// Reads every key of the sources.
    pub fn load(&self) -> Result<TokenKeys, KeyError> {
        let mut keys = TokenKeys::new();
        if let Some(path) = &self.path {
            keys.add_path(path)?;
        }
        if let Some(entries) = &self.entries {
            keys.add_entries(&entries.0)?;
        }
        Ok(keys)
    }
}

/// The node's token policy: the mode, the verification keys (replaced as a
/// whole by [`Auth::reload`]) and the longest token lifetime accepted.
#[derive(Debug, Clone)]
pub struct Auth {
    /// `open` or `required`.
    pub mode: AuthMode,
    /// Most seconds between a token's `iat` (or now) and its `exp`.
    pub max_ttl_secs: u64,
    keys: Arc<RwLock<TokenKeys>>,
    source: KeySource,
}

impl Auth {
    /// Everyone may publish and play.
    pub fn open() -> Self {
        Self {
            mode: AuthMode::Open,
            max_ttl_secs: u64::MAX,
            keys: Arc::default(),
            source: KeySource::default(),
        }
    }

    /// A policy with the keys of `source`; `required` without any key is an
    /// error (a node that fails closed at start rather than refusing every
    /// client).
    pub fn new(mode: AuthMode, source: KeySource, max_ttl_secs: u64) -> Result<Self, KeyError> {
        let keys = source.load()?;
        if mode == AuthMode::Required && keys.is_empty() {
            return Err(KeyError::NoKeys);
        }
        Ok(Self {
            mode,
            max_ttl_secs,
            keys: Arc::new(RwLock::new(keys)),
            source,
        })
    }

    /// Key ids in use, for logs.
    pub fn kids(&self) -> Vec<String> {
        self.read_keys().kids().map(str::to_owned).collect()
    }

    /// Reads the keys from their sources again and uses them from the next
    /// request on; returns the new key ids. On any error (unreadable file,
    /// bad entry, no key at all under `required`) the keys in use stay as
    /// they were: a half-written key file must not lock every client out.
    pub fn reload(&self) -> Result<Vec<String>, KeyError> {
        let keys = self.source.load()?;
        if self.mode == AuthMode::Required && keys.is_empty() {
            return Err(KeyError::NoKeys);
        }
        let kids = keys.kids().map(str::to_owned).collect();
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        Ok(kids)
    }

    fn read_keys(&self) -> std::sync::RwLockReadGuard<'_, TokenKeys> {
        // The lock only guards a whole-value swap: a poisoned one still holds
        // a complete key set.
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `token` (from [`bearer`]) allows `action` on `stream` at `now`.
    pub fn check(
        &self,
        token: Option<&str>,
        stream: &str,
        action: Action,
        now: u64,
    ) -> Result<(), AuthError> {
        self.grant(token, stream, action, now).map(drop)
    }

    /// Whether `token` allows publishing `stream` as its backup publisher:
    /// a publish token that also carries `"backup": true`.
    pub fn check_backup(
        &self,
        token: Option<&str>,
        stream: &str,
        now: u64,
    ) -> Result<(), AuthError> {
        match self.grant(token, stream, Action::Publish, now)? {
            Some(g) if !g.backup => Err(Denied::NoBackupRole.into()),
            _ => Ok(()),
        }
    }

    /// The grant of `token` for `action` on `stream` (`None` in open mode).
    fn grant(
        &self,
        token: Option<&str>,
        stream: &str,
        action: Action,
        now: u64,
    ) -> Result<Option<Grant>, AuthError> {
        if self.mode == AuthMode::Open {
            return Ok(None);
        }
        let token = token.ok_or(TokenError::Missing)?;
        let grant = self.read_keys().verify(token, now)?;
        if grant.lifetime(now) > self.max_ttl_secs {
            return Err(TokenError::LifetimeTooLong.into());
        }
        grant.allows(stream, action)?;
        Ok(Some(grant))
    }

    /// The stream a token names when it is used as an RTMP stream key: its
    /// subject, which must be one stream (no wildcard), checked as
    /// [`Auth::check`] would for `action` on it.
    pub fn stream_of(&self, token: &str, action: Action, now: u64) -> Result<String, AuthError> {
        let grant = self.read_keys().verify(token, now)?;
        if grant.sub.contains('*') {
            return Err(Denied::WrongStream.into());
        }
        self.check(Some(token), &grant.sub, action, now)?;
        Ok(grant.sub)
    }
}

/// Seconds since the epoch on the system clock.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
