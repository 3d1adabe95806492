//! GOP cache: the packets of the current group, so that a new sink can start
//! at the last keyframe instead of waiting for the next one.

use std::collections::VecDeque;

use super::gate::ResumeRule;
use crate::media::MediaPacket;

/// The packets since the last video keyframe, bounded in bytes and count.
///
/// When a group outgrows a bound the cache empties and stays empty until the
/// next keyframe: a partial group is useless to a decoder. Audio-only streams
/// keep nothing, since any audio packet is a start point.
#[derive(Debug, Clone)]
pub struct GopCache {
    packets: VecDeque<MediaPacket>,
    bytes: usize,
    max_bytes: usize,
    max_packets: usize,
    /// True while the cached packets form a group prefix starting at a keyframe.
    valid: bool,
}

impl GopCache {
    /// An empty cache with these bounds (0 disables caching).
    pub fn new(max_bytes: usize, max_packets: usize) -> Self {
        GopCache {
            packets: VecDeque::new(),
            bytes: 0,
            max_bytes,
            max_packets,
            valid: false,
        }
    }

    /// Record a packet the source sent.
    pub fn push(&mut self, rule: &ResumeRule, pkt: &MediaPacket) {
        if matches!(rule, ResumeRule::Any) {
            self.clear();
            return;
        }
        if rule.is_resume_point(pkt) {
            self.clear();
            self.valid = true;
        }
        if !self.valid {
            return;
        }
        let bytes = self.bytes + pkt.rtp.len();
        if bytes > self.max_bytes || self.packets.len() >= self.max_packets {
            self.clear();
            return;
        }
        self.bytes = bytes;
        self.packets.push_back(pkt.clone());
    }

    /// Forget everything until the next keyframe.
    pub fn clear(&mut self) {
        self.packets.clear();
        self.bytes = 0;
        self.valid = false;
    }

    /// The cached group, oldest first; starts with a keyframe when not empty.
    pub fn packets(&self) -> impl ExactSizeIterator<Item = &MediaPacket> {
        self.packets.iter()
    }

    /// Number of cached packets.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Bytes of RTP cached.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::super::gate::tests::pkt;
    use super::*;

    const VIDEO: ResumeRule = ResumeRule::VideoKeyframe(1);

    #[test]
    fn keeps_packets_since_last_keyframe() {
        let mut gop = GopCache::new(1 << 20, 100);
        gop.push(&VIDEO, &pkt(1, false, 0));
        assert!(gop.is_empty(), "nothing before the first keyframe");
        gop.push(&VIDEO, &pkt(1, true, 1));
        gop.push(&VIDEO, &pkt(0, false, 2));
        gop.push(&VIDEO, &pkt(1, false, 3));
        assert_eq!(gop.len(), 3);
        gop.push(&VIDEO, &pkt(1, true, 4));
        gop.push(&VIDEO, &pkt(1, false, 5));
        let seqs: Vec<u64> = gop.packets().map(|p| p.ingest_us).collect();
        assert_eq!(seqs, vec![4, 5]);
        assert_eq!(gop.bytes(), 200);
    }

    #[test]
    fn oversized_group_is_dropped_until_next_keyframe() {
        let mut gop = GopCache::new(250, 100);
        gop.push(&VIDEO, &pkt(1, true, 0));
        gop.push(&VIDEO, &pkt(1, false, 1));
        gop.push(&VIDEO, &pkt(1, false, 2));
        assert!(gop.is_empty());
        gop.push(&VIDEO, &pkt(1, false, 3));
        assert!(gop.is_empty());
        gop.push(&VIDEO, &pkt(1, true, 4));
        assert_eq!(gop.len(), 1);

        let mut gop = GopCache::new(1 << 20, 2);
        for (i, kf) in [true, false, false].into_iter().enumerate() {
            gop.push(&VIDEO, &pkt(1, kf, i as u64));
        }
        assert!(gop.is_empty(), "count bound");
    }

    #[test]
    fn audio_only_caches_nothing() {
        let mut gop = GopCache::new(1 << 20, 100);
        gop.push(&ResumeRule::Any, &pkt(0, true, 0));
        gop.push(&ResumeRule::Any, &pkt(0, false, 1));
        assert!(gop.is_empty());
    }
}
