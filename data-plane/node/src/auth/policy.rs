//! The node's token policy: mode, keys (reloadable) and the longest
//! lifetime a token may claim.

use std::sync::{Arc, RwLock};

use super::keys::{KeyError, KeySource, TokenKeys};
use super::token::{Denied, Grant, TokenError};
use super::{Action, AuthError, AuthMode};

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
