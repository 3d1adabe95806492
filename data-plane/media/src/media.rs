//! The media units every part of a node agrees on.
//!
//! A stream is a [`Catalog`] (its tracks and their codecs, as negotiated with
//! the publisher) plus a sequence of [`MediaPacket`]s. Packets are RTP packets
//! passed through untouched; the only thing the hub and relay know about a
//! codec is [`MediaPacket::keyframe`]: whether the packet starts a keyframe.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Index of a track within its stream's catalog.
pub type TrackId = u8;

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackKind {
    /// An audio track (Opus).
    Audio,
    /// A video track (VP8 or H.264).
    Video,
}

/// A simulcast layer: one of up to three encodings of the same video at different
/// resolutions and bitrates, each its own track. Ordered from lowest to highest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    /// The smallest encoding (e.g. 1/4 resolution).
    Low,
    /// The middle encoding (e.g. 1/2 resolution).
    Mid,
    /// The full encoding.
    High,
}

impl Layer {
    /// Every layer, lowest first.
    pub const ALL: [Layer; 3] = [Layer::Low, Layer::Mid, Layer::High];

    /// `low`, `mid` or `high`.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Low => "low",
            Layer::Mid => "mid",
            Layer::High => "high",
        }
    }

    /// Parses `low`, `mid` or `high`.
    pub fn parse(s: &str) -> Option<Layer> {
        Layer::ALL.into_iter().find(|l| l.as_str() == s)
    }

    /// Position from the bottom: 0 for `Low`, 2 for `High`.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One track of a stream, with the codec the publisher negotiated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    /// Index of the track in the catalog.
    pub id: TrackId,
    /// Audio or video.
    pub kind: TrackKind,
    /// Codec MIME type, e.g. `video/VP8`, `video/H264`, `audio/opus`.
    pub mime: String,
    /// RTP clock rate, e.g. 90000 for video, 48000 for Opus.
    pub clock_rate: u32,
    /// Audio channels (2 for Opus), 0 for video.
    pub channels: u16,
    /// The codec's `a=fmtp` parameters, e.g. H.264 profile-level-id.
    pub fmtp: String,
    /// RTP payload type the packets carry as they enter the cluster.
    pub payload_type: u8,
    /// The simulcast layer this track carries, if the publisher sends simulcast: every
    /// video track with a layer is an encoding of the same video.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<Layer>,
}

/// The tracks of a stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// Tracks, indexed by [`TrackInfo::id`].
    pub tracks: Vec<TrackInfo>,
}

impl Catalog {
    /// The track with this id, if any.
    pub fn track(&self, id: TrackId) -> Option<&TrackInfo> {
        self.tracks.iter().find(|t| t.id == id)
    }

    /// The first video track, if any.
    pub fn video(&self) -> Option<&TrackInfo> {
        self.tracks.iter().find(|t| t.kind == TrackKind::Video)
    }

    /// The video tracks that are simulcast layers, lowest layer first (empty without
    /// simulcast).
    pub fn layers(&self) -> Vec<&TrackInfo> {
        let mut layers: Vec<&TrackInfo> = self
            .tracks
            .iter()
            .filter(|t| t.kind == TrackKind::Video && t.layer.is_some())
            .collect();
        layers.sort_by_key(|t| t.layer);
        layers
    }

    /// The track carrying `layer`, if the stream has it.
    pub fn layer(&self, layer: Layer) -> Option<&TrackInfo> {
        self.tracks
            .iter()
            .find(|t| t.kind == TrackKind::Video && t.layer == Some(layer))
    }
}

/// One RTP packet of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPacket {
    /// Which track of the catalog it belongs to.
    pub track: TrackId,
    /// True when this packet is the first packet of a keyframe: a sink may
    /// start (or resume after skipping) here.
    pub keyframe: bool,
    /// Microseconds since the Unix epoch when the packet entered the cluster
    /// (at the ingest node); carried across relay hops to measure latency.
    pub ingest_us: u64,
    /// The RTP packet, header included, as received from the publisher.
    pub rtp: Bytes,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(id: TrackId, layer: Option<Layer>) -> TrackInfo {
        TrackInfo {
            id,
            kind: TrackKind::Video,
            mime: "video/VP8".into(),
            clock_rate: 90_000,
            channels: 0,
            fmtp: String::new(),
            payload_type: 96,
            layer,
        }
    }

    #[test]
    fn layers_are_listed_lowest_first() {
        let catalog = Catalog {
            tracks: vec![
                video(0, Some(Layer::High)),
                video(1, Some(Layer::Low)),
                video(2, Some(Layer::Mid)),
            ],
        };
        let ids: Vec<_> = catalog.layers().iter().map(|t| t.id).collect();
        assert_eq!(ids, [1, 2, 0]);
        assert_eq!(catalog.layer(Layer::Mid).map(|t| t.id), Some(2));
        let plain = Catalog {
            tracks: vec![video(0, None)],
        };
        assert!(plain.layers().is_empty());
        assert!(plain.layer(Layer::High).is_none());
    }

    #[test]
    fn catalogs_without_layers_keep_their_json() {
        let plain = Catalog {
            tracks: vec![video(0, None)],
        };
        let json = serde_json::to_string(&plain).unwrap_or_default();
        assert!(!json.contains("layer"), "{json}");
        let back: Catalog = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back, plain);
        let layered = Catalog {
            tracks: vec![video(0, Some(Layer::Low))],
        };
        let json = serde_json::to_string(&layered).unwrap_or_default();
        assert!(json.contains(r#""layer":"low""#), "{json}");
        let back: Catalog = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back, layered);
    }

    #[test]
    fn layer_names_round_trip() {
        for layer in Layer::ALL {
            assert_eq!(Layer::parse(layer.as_str()), Some(layer));
        }
        assert_eq!(Layer::parse("auto"), None);
        assert!(Layer::Low < Layer::High);
    }
}
