//! What the token and credential tests share: two signing keys (as under rotation), tokens
//! minted with them, a node configured to require them, and a plain HTTP POST.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use strata_node::NodeConfig;
use strata_node::auth::{Action, AuthMode, Claims, SecretString, TokenKeys, unix_now};
use strata_tests::cluster::Cluster;
use strata_tests::http;

/// Two keys, as a node under key rotation has them.
pub const SECRET_1: &[u8] = b"strata-test-secret-one-0123456789";
pub const SECRET_2: &[u8] = b"strata-test-secret-two-0123456789";

pub fn b64(b: &[u8]) -> String {
    use std::fmt::Write as _;
    // Standard base64 without a dependency: the test keys are fixed.
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                let _ = s.write_char(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                s.push('=');
            }
        }
    }
    s
}

pub fn key_entries() -> String {
    format!("old={} new={}", b64(SECRET_1), b64(SECRET_2))
}

pub fn keys() -> TokenKeys {
    let mut k = TokenKeys::new();
    k.add_entries(&key_entries()).unwrap();
    k
}

pub fn token(kid: &str, sub: &str, act: Action, exp: u64) -> String {
    let claims = Claims {
        sub: sub.into(),
        act,
        exp,
        nbf: None,
        iat: None,
        backup: false,
    };
    keys().mint(kid, &claims).unwrap()
}

pub fn valid(sub: &str, act: Action) -> String {
    token("new", sub, act, unix_now() + 600)
}

pub fn secured(cluster: &Cluster, id: &str, region: &str) -> NodeConfig {
    let mut cfg = cluster.node_config(id, region);
    cfg.auth = AuthMode::Required;
    cfg.token_key_entries = Some(SecretString(key_entries()));
    cfg
}

pub async fn post(url: &str, token: Option<&str>, body: &str) -> http::Response {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/sdp")];
    if let Some(b) = &bearer {
        headers.push(("Authorization", b.as_str()));
    }
    http::request("POST", url, &headers, body.as_bytes())
        .await
        .unwrap()
}

pub const NOT_SDP: &str = "v=0\r\nthis is not an offer\r\n";
