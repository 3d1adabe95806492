//! Token keys: HS256 secrets by key id, read from a file, a directory or
//! `STRATA_TOKEN_KEYS`, never printed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::hmac;
use strata_common::names;

use super::token::{Claims, Grant, TokenError, verify};

/// Shortest HS256 secret accepted (bytes), per RFC 7518 §3.2.
pub const MIN_SECRET_LEN: usize = 32;
/// Longest key id.
const MAX_KID_LEN: usize = 64;

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

    /// The key of a key id.
    pub(super) fn key(&self, kid: &str) -> Option<&hmac::Key> {
        self.keys.get(kid)
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
