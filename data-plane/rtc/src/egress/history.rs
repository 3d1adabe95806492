//! What a worker remembers of one stream, shared by all its players of that stream: recent
//! packets per track (NACKs are answered from here) and the current group from its last
//! resume point (a player that just connected starts on it). Packets are shared bytes, never
//! copied per player.

use std::collections::VecDeque;

use strata_media::hub::ResumeRule;
use strata_media::{Catalog, MediaPacket, TrackId};

use super::rtp::RtpView;

/// Packets kept per track for retransmission (about 5 s of 2 Mbit/s video).
const PER_TRACK: usize = 1024;
/// Bounds of the current group.
const GROUP_PACKETS: usize = 4096;
const GROUP_BYTES: usize = 8 << 20;

struct Entry {
    ssrc: u32,
    seq: u16,
    packet: MediaPacket,
}

/// Recent packets of one stream.
pub(crate) struct History {
    rule: ResumeRule,
    tracks: Vec<(TrackId, VecDeque<Entry>)>,
    group: Vec<MediaPacket>,
    group_bytes: usize,
}

impl History {
    pub(crate) fn new(catalog: &Catalog) -> History {
        History {
            rule: ResumeRule::for_catalog(catalog),
            tracks: catalog
                .tracks
                .iter()
                .map(|t| (t.id, VecDeque::new()))
                .collect(),
            group: Vec::new(),
            group_bytes: 0,
        }
    }

    /// Remembers a packet of the stream.
    pub(crate) fn push(&mut self, packet: &MediaPacket) {
        if self.rule.is_resume_point(packet) {
            self.group.clear();
            self.group_bytes = 0;
        }
        let room = self.group.len() < GROUP_PACKETS && self.group_bytes < GROUP_BYTES;
        // A group that outgrew its bounds no longer starts at a resume point: drop it.
        if !room {
            self.group.clear();
            self.group_bytes = usize::MAX / 2;
        } else if !self.group.is_empty() || self.rule.is_resume_point(packet) {
            self.group.push(packet.clone());
            self.group_bytes += packet.rtp.len();
        }
        let Some(view) = RtpView::parse(&packet.rtp) else {
            return;
        };
        if let Some((_, queue)) = self.tracks.iter_mut().find(|(id, _)| *id == packet.track) {
            if queue.len() == PER_TRACK {
                queue.pop_front();
            }
            queue.push_back(Entry {
                ssrc: view.ssrc,
                seq: view.sequence_number,
                packet: packet.clone(),
            });
        }
    }

    /// Forgets the current group (the sink skipped packets: it no longer decodes).
    pub(crate) fn break_group(&mut self) {
        self.group.clear();
        self.group_bytes = usize::MAX / 2;
    }

    /// The packets from the stream's last resume point on, for a player that just connected.
    pub(crate) fn group(&self) -> &[MediaPacket] {
        &self.group
    }

    /// The packet of `track` with input SSRC `ssrc` and sequence number `seq`, if kept. O(1):
    /// within a run the queue's sequence numbers are consecutive, so the position follows from
    /// the newest one; a packet that is not where it should be is not searched for.
    pub(crate) fn get(&self, track: TrackId, ssrc: u32, seq: u16) -> Option<&MediaPacket> {
        let (_, queue) = self.tracks.iter().find(|(id, _)| *id == track)?;
        let newest = queue.back()?;
        let back = usize::from(newest.seq.wrapping_sub(seq));
        let index = queue.len().checked_sub(1 + back)?;
        let entry = queue.get(index)?;
        (entry.ssrc == ssrc && entry.seq == seq).then_some(&entry.packet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use strata_media::{TrackInfo, TrackKind};

    fn catalog() -> Catalog {
        Catalog {
            tracks: vec![TrackInfo {
                id: 0,
                kind: TrackKind::Video,
                mime: "video/VP8".into(),
                clock_rate: 90_000,
                channels: 0,
                fmtp: String::new(),
                payload_type: 96,
                layer: None,
            }],
        }
    }

    fn packet(seq: u16, keyframe: bool) -> MediaPacket {
        let mut rtp = vec![0x80, 96];
        rtp.extend_from_slice(&seq.to_be_bytes());
        rtp.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3]);
        MediaPacket {
            track: 0,
            keyframe,
            ingest_us: 0,
            rtp: Bytes::from(rtp),
        }
    }

    #[test]
    fn finds_recent_packets_and_keeps_the_group_from_the_last_keyframe() {
        let mut h = History::new(&catalog());
        assert!(h.group().is_empty());
        h.push(&packet(65_534, false));
        assert!(h.group().is_empty(), "no group before a keyframe");
        h.push(&packet(65_535, true));
        h.push(&packet(0, false));
        h.push(&packet(1, false));
        assert_eq!(h.group().len(), 3);
        assert!(h.get(0, 5, 65_534).is_some(), "across the wrap");
        assert!(h.get(0, 5, 1).is_some());
        assert!(h.get(0, 5, 2).is_none(), "not yet sent");
        assert!(h.get(0, 6, 1).is_none(), "another source");
        h.push(&packet(2, true));
        assert_eq!(h.group().len(), 1);
        for seq in 3..3000u16 {
            h.push(&packet(seq, false));
        }
        assert!(h.get(0, 5, 100).is_none(), "evicted");
        assert!(h.get(0, 5, 2999).is_some());
        h.break_group();
        assert!(h.group().is_empty());
    }
}
