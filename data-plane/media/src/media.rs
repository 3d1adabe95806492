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
