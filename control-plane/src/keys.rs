//! The etcd key layout and the records stored under it (JSON values).
//!
//! | key | value | lease |
//! |---|---|---|
//! | `nodes/{node}` | [`NodeRecord`] | the node's |
//! | `load/{node}` | [`LoadRecord`] | the node's |
//! | `streams/{stream}/main` | [`MainRecord`] | the main origin node's |
//! | `streams/{stream}/regions/{region}` | [`RegionalRecord`] | the regional origin node's |
//! | `streams/{stream}/subscribers/{node}` | [`SubscriberRecord`] | the subscribing node's |
//! | `standby/{stream}` | [`StandbyRecord`] | the standby (backup publisher's) node's |
//! | `revoked/serial/{hex}`, `revoked/sha256/{hex}` | [`RevocationRecord`] | none: kept for good |
//! | `links/{from}/{to}` | [`LinkPinRecord`] | none: an operator's pin, kept until unpinned |

use serde::{Deserialize, Serialize};

/// Builds and parses keys under one prefix (default `/strata/`).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

/// What a key under the prefix is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind<'a> {
    /// `nodes/{node}`
    Node(&'a str),
    /// `load/{node}`
    Load(&'a str),
    /// `streams/{stream}/main`
    Main(&'a str),
    /// `streams/{stream}/regions/{region}`
    Regional(&'a str, &'a str),
    /// `streams/{stream}/subscribers/{node}`
    Subscriber(&'a str, &'a str),
    /// `revoked/{serial|sha256}/{hex}`
    Revoked(RevokedBy, &'a str),
    /// `standby/{stream}`
    Standby(&'a str),
    /// `links/{from}/{to}`
    Link(&'a str, &'a str),
}

/// How a revoked certificate is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RevokedBy {
    /// Its serial number (normalized hex).
    Serial,
    /// Its SHA-256 fingerprint (lowercase hex).
    Sha256,
}

impl RevokedBy {
    fn segment(self) -> &'static str {
        match self {
            RevokedBy::Serial => "serial",
            RevokedBy::Sha256 => "sha256",
        }
    }
}

impl Keys {
    /// Keys under `prefix`; a trailing `/` is added when missing.
    pub fn new(prefix: &str) -> Self {
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self { prefix }
    }

    /// The prefix every key starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `nodes/{node}`
    pub fn node(&self, node: &str) -> String {
        format!("{}nodes/{node}", self.prefix)
    }

    /// `load/{node}`
    pub fn load(&self, node: &str) -> String {
        format!("{}load/{node}", self.prefix)
    }

    /// `streams/{stream}/` — every record of one stream.
    pub fn stream(&self, stream: &str) -> String {
        format!("{}streams/{stream}/", self.prefix)
    }

    /// `streams/{stream}/main`
    pub fn main(&self, stream: &str) -> String {
        format!("{}streams/{stream}/main", self.prefix)
    }

    /// `streams/{stream}/regions/{region}`
    pub fn regional(&self, stream: &str, region: &str) -> String {
        format!("{}streams/{stream}/regions/{region}", self.prefix)
    }

    /// `streams/{stream}/subscribers/{node}`
    pub fn subscriber(&self, stream: &str, node: &str) -> String {
        format!("{}streams/{stream}/subscribers/{node}", self.prefix)
    }

    /// `standby/{stream}`: outside `streams/{stream}/`, so the sweep of a
    /// stream whose main origin is gone leaves it (the standby is what takes
    /// such a stream over).
    pub fn standby(&self, stream: &str) -> String {
        format!("{}standby/{stream}", self.prefix)
    }

    /// `revoked/{serial|sha256}/{hex}`
    pub fn revoked(&self, by: RevokedBy, id: &str) -> String {
        format!("{}revoked/{}/{id}", self.prefix, by.segment())
    }

    /// `links/{from}/{to}`: an operator's pinned cost of the link from
    /// region `from` (upstream) to region `to`.
    pub fn link(&self, from: &str, to: &str) -> String {
        format!("{}links/{from}/{to}", self.prefix)
    }

    /// Classifies a full key; `None` for keys that are not ours.
    pub fn parse<'a>(&self, key: &'a str) -> Option<KeyKind<'a>> {
        let rest = key.strip_prefix(self.prefix.as_str())?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["nodes", n] => Some(KeyKind::Node(n)),
            ["load", n] => Some(KeyKind::Load(n)),
            ["streams", s, "main"] => Some(KeyKind::Main(s)),
            ["streams", s, "regions", r] => Some(KeyKind::Regional(s, r)),
            ["streams", s, "subscribers", n] => Some(KeyKind::Subscriber(s, n)),
            ["standby", s] => Some(KeyKind::Standby(s)),
            ["revoked", "serial", id] => Some(KeyKind::Revoked(RevokedBy::Serial, id)),
            ["revoked", "sha256", id] => Some(KeyKind::Revoked(RevokedBy::Sha256, id)),
            ["links", from, to] => Some(KeyKind::Link(from, to)),
            _ => None,
        }
    }
}

/// `nodes/{node}`: what a node registered with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Node id.
    pub id: String,
    /// Region.
    pub region: String,
    /// QUIC relay address.
    pub relay_addr: String,
    /// Public HTTP base URL.
    pub http_url: String,
    /// Most players; 0 = unlimited.
    pub capacity: u32,
    /// Software version.
    pub version: String,
    /// The lease carrying the node's records.
    pub lease: i64,
    /// Unix ms of registration.
    pub registered_at_ms: i64,
    /// Whether the node is draining.
    #[serde(default)]
    pub draining: bool,
    /// Serial of the client certificate the node registered with (TLS mode),
    /// so that revoking it ends the registration at once.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cert_serial: String,
    /// SHA-256 of that certificate.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cert_sha256: String,
}

/// `revoked/{serial|sha256}/{hex}`: a certificate an operator revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationRecord {
    /// Why, as the operator wrote it.
    pub reason: String,
    /// The operator token's name.
    pub revoked_by: String,
    /// Unix ms of the revocation.
    pub revoked_at_ms: i64,
}

/// `load/{node}`: the latest load report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadRecord {
    /// Streams carried.
    pub streams: u32,
    /// Players served.
    pub players: u32,
    /// Publishers ingested.
    #[serde(default)]
    pub publishers: u32,
    /// Egress bit/s.
    pub egress_bps: u64,
    /// CPU in cores.
    pub cpu: f32,
    /// Players per stream and simulcast layer (left out when empty, so older records and
    /// nodes without players are unchanged).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stream_players: Vec<StreamPlayersRecord>,
}

/// Players of one stream on a node, by layer (`load/{node}`'s `stream_players`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPlayersRecord {
    /// Stream id.
    pub stream: String,
    /// Players of the stream.
    pub players: u32,
    /// On the low, mid and high layer.
    #[serde(default)]
    pub layers: [u32; 3],
}

/// `streams/{stream}/main`: the main origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MainRecord {
    /// Ingest node.
    pub node_id: String,
    /// Its region.
    pub region: String,
    /// Its relay address.
    pub relay_addr: String,
    /// Unix ms when the stream went live.
    pub started_at_ms: i64,
}

/// `standby/{stream}`: the node of a stream's backup publisher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StandbyRecord {
    /// The standby node.
    pub node_id: String,
    /// Its region.
    pub region: String,
    /// Its relay address.
    pub relay_addr: String,
    /// Unix ms when it registered.
    pub started_at_ms: i64,
}

/// `streams/{stream}/regions/{region}`: a regional origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionalRecord {
    /// The node holding the claim.
    pub node_id: String,
    /// Its relay address.
    pub relay_addr: String,
    /// The node it pulls from: the main origin, or the regional origin of
    /// `upstream_region`.
    pub upstream_node_id: String,
    /// Epoch of the main origin record it was claimed under: a regional
    /// record under an older main epoch is stale (the stream was published
    /// again elsewhere) and is replaced.
    pub main_epoch: i64,
    /// The region whose regional origin it pulls from; absent when it pulls
    /// from the main origin (records written before the region graph have
    /// none, and mean exactly that).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_region: Option<String>,
    /// Hops from the main origin: 1 when pulling from it, the parent's depth
    /// plus one otherwise (0 in records written before the region graph).
    #[serde(default)]
    pub depth: u32,
}

/// `links/{from}/{to}`: an operator's pinned cost of a region link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkPinRecord {
    /// Cost in milliseconds (one way).
    pub cost_ms: u32,
    /// The operator who pinned it.
    #[serde(default)]
    pub operator: String,
    /// Unix time in milliseconds of the pin.
    #[serde(default)]
    pub pinned_at_ms: i64,
}

/// `streams/{stream}/subscribers/{node}`: a node pulling from an origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriberRecord {
    /// Region of the node.
    pub region: String,
    /// The node it pulls from.
    pub upstream_node_id: String,
}

/// Encodes a record as a JSON value.
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail.
    serde_json::to_vec(record).unwrap_or_default()
}

/// Decodes a JSON value; `None` for a value that is not a valid record
/// (written by someone else): such keys are ignored, never a panic.
pub fn decode<T: for<'de> Deserialize<'de>>(value: &[u8]) -> Option<T> {
    serde_json::from_slice(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let k = Keys::new("/strata");
        assert_eq!(k.parse(&k.node("n1")), Some(KeyKind::Node("n1")));
        assert_eq!(k.parse(&k.load("n1")), Some(KeyKind::Load("n1")));
        assert_eq!(k.parse(&k.main("s")), Some(KeyKind::Main("s")));
        assert_eq!(
            k.parse(&k.regional("s", "eu")),
            Some(KeyKind::Regional("s", "eu"))
        );
        assert_eq!(
            k.parse(&k.subscriber("s", "n")),
            Some(KeyKind::Subscriber("s", "n"))
        );
        assert_eq!(
            k.parse(&k.revoked(RevokedBy::Sha256, "ab")),
            Some(KeyKind::Revoked(RevokedBy::Sha256, "ab"))
        );
        assert_eq!(k.parse(&k.standby("s")), Some(KeyKind::Standby("s")));
        assert_eq!(
            k.parse(&k.link("eu", "use")),
            Some(KeyKind::Link("eu", "use"))
        );
        assert_eq!(k.parse("/strata/revoked/other/ab"), None);
        assert_eq!(k.parse("/other/nodes/x"), None);
        assert_eq!(k.parse("/strata/streams/s/what"), None);
    }

    #[test]
    fn garbage_values_decode_to_none() {
        assert_eq!(decode::<MainRecord>(b"\xff\x00garbage"), None);
    }
}
