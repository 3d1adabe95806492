//! Sender side: when a new group starts and which superseded groups to give up on.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use strata_media::MediaPacket;
use strata_media::hub::ResumeRule;

/// What the sender does with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketPlan {
    /// Not sendable: no group is open and this packet cannot start one.
    Drop,
    /// Append to the current group.
    Continue,
    /// Open a new group with this sequence number, the packet first.
    NewGroup {
        /// The new group's sequence number.
        sequence: u64,
    },
}

/// Sender-side group state of one subscription.
///
/// A group starts at each video keyframe (audio-only: every
/// `audio_group` of time). Superseded groups still in flight are reset when
/// more than `max_backlog` of them pile up, or when they are still undelivered
/// `latency_bound` after being superseded.
#[derive(Debug, Clone)]
pub struct GroupPlanner {
    rule: ResumeRule,
    audio_group: Duration,
    latency_bound: Duration,
    max_backlog: usize,
    next_sequence: u64,
    current: Option<(u64, Instant)>,
    /// Superseded groups not yet delivered, oldest first, with their deadline.
    backlog: VecDeque<(u64, Instant)>,
    resets: VecDeque<u64>,
}

impl GroupPlanner {
    /// A planner for a stream whose sinks resume per `rule`.
    pub fn new(
        rule: ResumeRule,
        audio_group: Duration,
        latency_bound: Duration,
        max_backlog: usize,
    ) -> Self {
        GroupPlanner {
            rule,
            audio_group,
            latency_bound,
            max_backlog,
            next_sequence: 0,
            current: None,
            backlog: VecDeque::new(),
            resets: VecDeque::new(),
        }
    }

    /// The catalog changed.
    pub fn set_rule(&mut self, rule: ResumeRule) {
        self.rule = rule;
    }

    /// Decide about the next packet.
    pub fn on_packet(&mut self, now: Instant, pkt: &MediaPacket) -> PacketPlan {
        let starts = match self.rule {
            ResumeRule::VideoKeyframe(_) => self.rule.is_resume_point(pkt),
            ResumeRule::Any => self
                .current
                .is_none_or(|(_, started)| now >= started + self.audio_group),
        };
        if !starts {
            return match self.current {
                Some(_) => PacketPlan::Continue,
                None => PacketPlan::Drop,
            };
        }
        if let Some((old, _)) = self.current.take() {
            self.backlog.push_back((old, now + self.latency_bound));
            while self.backlog.len() > self.max_backlog {
                if let Some((seq, _)) = self.backlog.pop_front() {
                    self.resets.push_back(seq);
                }
            }
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.current = Some((sequence, now));
        PacketPlan::NewGroup { sequence }
    }

    /// The current group cannot be written (blocked past the latency bound, or
    /// stopped by the receiver): returns it for the caller to reset; packets
    /// are dropped until the next group starts.
    pub fn abandon_current(&mut self) -> Option<u64> {
        self.current.take().map(|(seq, _)| seq)
    }

    /// A superseded group was fully delivered.
    pub fn on_delivered(&mut self, sequence: u64) {
        self.backlog.retain(|&(seq, _)| seq != sequence);
    }

    /// A group to reset now. Call until `None` after every input.
    pub fn poll_reset(&mut self, now: Instant) -> Option<u64> {
        if let Some(seq) = self.resets.pop_front() {
            return Some(seq);
        }
        match self.backlog.front() {
            Some(&(seq, deadline)) if deadline <= now => {
                self.backlog.pop_front();
                Some(seq)
            }
            _ => None,
        }
    }

    /// When [`poll_reset`](Self::poll_reset) may next return something.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.backlog.iter().map(|&(_, deadline)| deadline).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const MS: Duration = Duration::from_millis(1);
    const VIDEO: ResumeRule = ResumeRule::VideoKeyframe(1);

    fn pkt(track: u8, keyframe: bool) -> MediaPacket {
        MediaPacket {
            track,
            keyframe,
            ingest_us: 0,
            rtp: Bytes::from_static(b"x"),
        }
    }

    #[test]
    fn video_groups_start_at_keyframes() {
        let t0 = Instant::now();
        let mut p = GroupPlanner::new(VIDEO, 1000 * MS, 1000 * MS, 1);
        assert_eq!(p.on_packet(t0, &pkt(1, false)), PacketPlan::Drop);
        assert_eq!(
            p.on_packet(t0, &pkt(0, true)),
            PacketPlan::Drop,
            "audio cannot start"
        );
        assert_eq!(
            p.on_packet(t0, &pkt(1, true)),
            PacketPlan::NewGroup { sequence: 0 }
        );
        assert_eq!(p.on_packet(t0, &pkt(0, false)), PacketPlan::Continue);
        assert_eq!(
            p.on_packet(t0 + 5000 * MS, &pkt(1, false)),
            PacketPlan::Continue
        );
        assert_eq!(
            p.on_packet(t0, &pkt(1, true)),
            PacketPlan::NewGroup { sequence: 1 }
        );
    }

    #[test]
    fn audio_groups_are_timed() {
        let t0 = Instant::now();
        let mut p = GroupPlanner::new(ResumeRule::Any, 1000 * MS, 1000 * MS, 1);
        assert_eq!(
            p.on_packet(t0, &pkt(0, false)),
            PacketPlan::NewGroup { sequence: 0 }
        );
        assert_eq!(
            p.on_packet(t0 + 999 * MS, &pkt(0, false)),
            PacketPlan::Continue
        );
        assert_eq!(
            p.on_packet(t0 + 1000 * MS, &pkt(0, false)),
            PacketPlan::NewGroup { sequence: 1 }
        );
    }

    #[test]
    fn superseded_groups_are_reset_when_late_or_piled_up() {
        let t0 = Instant::now();
        let mut p = GroupPlanner::new(VIDEO, 1000 * MS, 500 * MS, 1);
        p.on_packet(t0, &pkt(1, true)); // 0
        p.on_packet(t0 + 100 * MS, &pkt(1, true)); // 1; 0 superseded
        assert_eq!(p.poll_reset(t0 + 100 * MS), None);
        assert_eq!(p.next_deadline(), Some(t0 + 600 * MS));
        assert_eq!(p.poll_reset(t0 + 600 * MS), Some(0), "late");
        assert_eq!(p.next_deadline(), None);

        p.on_packet(t0 + 700 * MS, &pkt(1, true)); // 2; 1 superseded
        p.on_delivered(1);
        assert_eq!(p.poll_reset(t0 + 5000 * MS), None, "delivered in time");

        p.on_packet(t0 + 800 * MS, &pkt(1, true)); // 3; 2 superseded
        p.on_packet(t0 + 810 * MS, &pkt(1, true)); // 4; 3 superseded, 2 over backlog
        assert_eq!(p.poll_reset(t0 + 810 * MS), Some(2), "backlog bound");
        assert_eq!(p.poll_reset(t0 + 810 * MS), None);
    }

    #[test]
    fn abandoned_group_drops_until_next_keyframe() {
        let t0 = Instant::now();
        let mut p = GroupPlanner::new(VIDEO, 1000 * MS, 500 * MS, 1);
        p.on_packet(t0, &pkt(1, true));
        assert_eq!(p.abandon_current(), Some(0));
        assert_eq!(p.on_packet(t0, &pkt(1, false)), PacketPlan::Drop);
        assert_eq!(
            p.on_packet(t0, &pkt(1, true)),
            PacketPlan::NewGroup { sequence: 1 }
        );
        assert_eq!(
            p.poll_reset(t0 + 5000 * MS),
            None,
            "abandoned is not backlog"
        );
    }
}
