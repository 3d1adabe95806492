//! Per-sink admission: the sans-IO core of "a slow sink skips to the next keyframe".
//!
//! The hub offers every packet of the stream to every sink's [`SinkGate`],
//! telling it how much room the sink's queue has left. The gate answers
//! [`Verdict::Deliver`] or [`Verdict::Drop`]. Once the queue is full the gate
//! drops everything until the next [resume point](ResumeRule::is_resume_point),
//! so a slow sink loses whole groups instead of random packets and always
//! restarts where a decoder can.

use crate::media::{Catalog, MediaPacket, TrackId};

/// Which packets a sink may start (or resume) on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeRule {
    /// Only the first packet of a keyframe of this video track.
    VideoKeyframe(TrackId),
    /// Any packet (audio-only streams: every Opus packet decodes on its own).
    Any,
}

impl ResumeRule {
    /// The rule for a stream with this catalog: its first video track's
    /// keyframes if it has video, any packet otherwise.
    pub fn for_catalog(catalog: &Catalog) -> Self {
        match catalog.video() {
            Some(video) => ResumeRule::VideoKeyframe(video.id),
            None => ResumeRule::Any,
        }
    }

    /// True when a sink may start on `pkt`.
    pub fn is_resume_point(&self, pkt: &MediaPacket) -> bool {
        match *self {
            ResumeRule::VideoKeyframe(track) => pkt.keyframe && pkt.track == track,
            ResumeRule::Any => true,
        }
    }
}

/// What the hub should do with a packet offered to a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Put the packet in the sink's queue (the gate has checked there is room).
    Deliver,
    /// Do not queue the packet.
    Drop,
}

/// Whether a gate passes packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateState {
    /// Dropping everything until the next resume point (new sink, or after an overflow).
    WaitKeyframe,
    /// Passing packets while the queue has room.
    Forwarding,
}

/// Admission state of one sink. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct SinkGate {
    state: GateState,
    skipped_groups: u64,
    dropped_packets: u64,
}

impl Default for SinkGate {
    fn default() -> Self {
        Self::new()
    }
}

impl SinkGate {
    /// A gate for a new sink: it waits for a resume point.
    pub fn new() -> Self {
        SinkGate {
            state: GateState::WaitKeyframe,
            skipped_groups: 0,
            dropped_packets: 0,
        }
    }

    /// Decide about `pkt`, given the free slots left in the sink's queue.
    pub fn offer(&mut self, rule: &ResumeRule, pkt: &MediaPacket, room: usize) -> Verdict {
        if self.state == GateState::WaitKeyframe {
            if room > 0 && rule.is_resume_point(pkt) {
                self.state = GateState::Forwarding;
            } else {
                self.dropped_packets += 1;
                return Verdict::Drop;
            }
        }
        if room == 0 {
            // The sink fell behind: abandon the rest of this group.
            self.state = GateState::WaitKeyframe;
            self.skipped_groups += 1;
            self.dropped_packets += 1;
            return Verdict::Drop;
        }
        Verdict::Deliver
    }

    /// Go back to waiting for a resume point without counting a skip (e.g. the
    /// stream switched to a new source, whose packets only make sense from its
    /// next keyframe on).
    pub fn rewind(&mut self) {
        self.state = GateState::WaitKeyframe;
    }

    /// Current state.
    pub fn state(&self) -> GateState {
        self.state
    }

    /// How many times the sink overflowed and skipped to the next resume point.
    pub fn skipped_groups(&self) -> u64 {
        self.skipped_groups
    }

    /// Packets not delivered to this sink (waiting or skipping).
    pub fn dropped_packets(&self) -> u64 {
        self.dropped_packets
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::Bytes;

    pub(crate) fn pkt(track: TrackId, keyframe: bool, seq: u64) -> MediaPacket {
        MediaPacket {
            track,
            keyframe,
            ingest_us: seq,
            rtp: Bytes::from(vec![0u8; 100]),
        }
    }

    const VIDEO: ResumeRule = ResumeRule::VideoKeyframe(1);

    #[test]
    fn new_gate_waits_for_video_keyframe() {
        let mut gate = SinkGate::new();
        assert_eq!(gate.offer(&VIDEO, &pkt(1, false, 0), 10), Verdict::Drop);
        assert_eq!(
            gate.offer(&VIDEO, &pkt(0, true, 1), 10),
            Verdict::Drop,
            "audio"
        );
        assert_eq!(gate.offer(&VIDEO, &pkt(1, true, 2), 10), Verdict::Deliver);
        assert_eq!(gate.offer(&VIDEO, &pkt(0, false, 3), 10), Verdict::Deliver);
        assert_eq!(gate.skipped_groups(), 0);
        assert_eq!(gate.dropped_packets(), 2);
    }

    #[test]
    fn overflow_skips_to_next_keyframe() {
        let mut gate = SinkGate::new();
        assert_eq!(gate.offer(&VIDEO, &pkt(1, true, 0), 2), Verdict::Deliver);
        assert_eq!(gate.offer(&VIDEO, &pkt(1, false, 1), 1), Verdict::Deliver);
        assert_eq!(gate.offer(&VIDEO, &pkt(1, false, 2), 0), Verdict::Drop);
        assert_eq!(gate.state(), GateState::WaitKeyframe);
        // Room again, but mid-group: still dropped.
        assert_eq!(gate.offer(&VIDEO, &pkt(1, false, 3), 5), Verdict::Drop);
        assert_eq!(gate.offer(&VIDEO, &pkt(0, false, 4), 5), Verdict::Drop);
        // A keyframe with no room does not resume.
        assert_eq!(gate.offer(&VIDEO, &pkt(1, true, 5), 0), Verdict::Drop);
        assert_eq!(gate.offer(&VIDEO, &pkt(1, false, 6), 5), Verdict::Drop);
        assert_eq!(gate.offer(&VIDEO, &pkt(1, true, 7), 5), Verdict::Deliver);
        assert_eq!(gate.skipped_groups(), 1);
    }

    #[test]
    fn audio_only_resumes_on_any_packet() {
        let mut gate = SinkGate::new();
        let rule = ResumeRule::Any;
        assert_eq!(gate.offer(&rule, &pkt(0, false, 0), 1), Verdict::Deliver);
        assert_eq!(gate.offer(&rule, &pkt(0, false, 1), 0), Verdict::Drop);
        assert_eq!(gate.offer(&rule, &pkt(0, false, 2), 1), Verdict::Deliver);
        assert_eq!(gate.skipped_groups(), 1);
    }

    #[test]
    fn rewind_waits_again_without_counting_a_skip() {
        let mut gate = SinkGate::new();
        assert_eq!(gate.offer(&VIDEO, &pkt(1, true, 0), 5), Verdict::Deliver);
        gate.rewind();
        assert_eq!(gate.offer(&VIDEO, &pkt(1, false, 1), 5), Verdict::Drop);
        assert_eq!(gate.offer(&VIDEO, &pkt(1, true, 2), 5), Verdict::Deliver);
        assert_eq!(gate.skipped_groups(), 0);
    }

    #[test]
    fn rule_follows_catalog() {
        use crate::media::{TrackInfo, TrackKind};
        let track = |id, kind| TrackInfo {
            id,
            kind,
            mime: String::new(),
            clock_rate: 0,
            channels: 0,
            fmtp: String::new(),
            payload_type: 0,
            layer: None,
        };
        let av = Catalog {
            tracks: vec![track(0, TrackKind::Audio), track(3, TrackKind::Video)],
        };
        assert_eq!(ResumeRule::for_catalog(&av), ResumeRule::VideoKeyframe(3));
        let audio = Catalog {
            tracks: vec![track(0, TrackKind::Audio)],
        };
        assert_eq!(ResumeRule::for_catalog(&audio), ResumeRule::Any);
    }
}
