//! Receiver side: a group's head (its keyframe) goes on whole or not at all.
//!
//! A group starts with a video keyframe, usually several RTP packets. If the
//! group is given up on (reset by the sender, or skipped by [`GroupOrder`]
//! because a newer group waited too long) while its keyframe is still
//! arriving, passing on the packets already received would hand the node's
//! players the start of a keyframe without its end: a picture that cannot be
//! decoded, and, for a player that starts on it, no first frame until it asks
//! again. That happens mostly when a subscription starts: the upstream
//! replays its GOP cache on the first group's stream, and a live keyframe a
//! moment later opens the next group at a higher priority, which overtakes the
//! first group's keyframe on a long, lossy link.
//!
//! So the head of a group is held until it is complete: until the packet of
//! the keyframe's track carrying the RTP marker bit (the last packet of a
//! video frame), a packet of that track with another RTP timestamp (a sender
//! that does not set the marker), or the group's clean end. A group that ends
//! unfinished, or is pushed out by newer ones, while its head is held loses the
//! head whole. Only the RTP header is read, never the payload: the relay stays
//! codec-agnostic.
//!
//! [`GroupOrder`]: super::GroupOrder

use std::collections::{BTreeMap, VecDeque};

/// What the head gate needs to know of a frame.
pub trait HeadFrame {
    /// Its track.
    fn track(&self) -> u8;
    /// Whether it is the first packet of a video keyframe.
    fn starts_keyframe(&self) -> bool;
    /// The RTP marker bit and timestamp, if the payload has an RTP (v2) header.
    fn marker_and_timestamp(&self) -> Option<(bool, u32)>;
    /// Its size, for the bound.
    fn size(&self) -> usize;
}

/// What comes out of the gate, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadOut<T> {
    /// A frame of group `sequence`.
    Frame(u64, T),
    /// Group `sequence` ended (`complete`: finished cleanly).
    End(u64, bool),
}

/// How much one head may hold; past it the head is passed on as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Frames of one held head.
    pub max_frames: usize,
    /// Bytes of one held head.
    pub max_bytes: usize,
    /// Groups tracked at once; past it the oldest loses its held head.
    pub max_groups: usize,
}

#[derive(Debug)]
enum Group<T> {
    /// Its keyframe is still arriving: frames held.
    Holding {
        track: u8,
        timestamp: u32,
        frames: Vec<T>,
        bytes: usize,
    },
    /// Head passed on (or it had none): frames pass.
    Passing,
}

/// Per subscription: holds each group's keyframe until it is whole. Sans IO.
#[derive(Debug)]
pub struct HeadGate<T> {
    limits: HeadLimits,
    groups: BTreeMap<u64, Group<T>>,
    out: VecDeque<HeadOut<T>>,
    dropped_frames: u64,
}

impl<T: HeadFrame> HeadGate<T> {
    /// Nothing received yet.
    pub fn new(limits: HeadLimits) -> Self {
        HeadGate {
            limits,
            groups: BTreeMap::new(),
            out: VecDeque::new(),
            dropped_frames: 0,
        }
    }

    /// A frame of group `sequence` arrived (a group's frames arrive in order).
    pub fn on_frame(&mut self, sequence: u64, frame: T) {
        let group = match self.groups.get_mut(&sequence) {
            Some(group) => group,
            None => {
                let group = match (frame.starts_keyframe(), frame.marker_and_timestamp()) {
                    (true, Some((false, timestamp))) => Group::Holding {
                        track: frame.track(),
                        timestamp,
                        frames: Vec::new(),
                        bytes: 0,
                    },
                    _ => Group::Passing,
                };
                self.groups.insert(sequence, group);
                self.bound_groups();
                match self.groups.get_mut(&sequence) {
                    Some(group) => group,
                    None => return self.dropped_frames += 1,
                }
            }
        };
        match group {
            Group::Passing => self.out.push_back(HeadOut::Frame(sequence, frame)),
            Group::Holding {
                track,
                timestamp,
                frames,
                bytes,
            } => {
                let (complete, held) = match frame.marker_and_timestamp() {
                    _ if frame.track() != *track => (false, true),
                    Some((_, ts)) if ts != *timestamp => (true, false),
                    Some((marker, _)) => (marker, true),
                    None => (true, false),
                };
                let over = frames.len() >= self.limits.max_frames
                    || *bytes + frame.size() > self.limits.max_bytes;
                if held && !over {
                    *bytes += frame.size();
                    frames.push(frame);
                    if complete {
                        self.release(sequence);
                    }
                } else {
                    self.release(sequence);
                    self.out.push_back(HeadOut::Frame(sequence, frame));
                }
            }
        }
    }

    /// Group `sequence` ended: a held head goes on if it ended cleanly, is
    /// dropped if not.
    pub fn on_group_end(&mut self, sequence: u64, complete: bool) {
        match self.groups.remove(&sequence) {
            Some(Group::Holding { frames, .. }) if complete => {
                self.out
                    .extend(frames.into_iter().map(|f| HeadOut::Frame(sequence, f)));
            }
            Some(Group::Holding { frames, .. }) => self.dropped_frames += frames.len() as u64,
            _ => {}
        }
        self.out.push_back(HeadOut::End(sequence, complete));
    }

    /// The next output, if any. Call until `None` after every input.
    pub fn poll(&mut self) -> Option<HeadOut<T>> {
        self.out.pop_front()
    }

    /// Frames dropped: heads that never completed and what followed them.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped_frames
    }

    /// Frames held back now.
    pub fn held_frames(&self) -> usize {
        self.groups
            .values()
            .map(|g| match g {
                Group::Holding { frames, .. } => frames.len(),
                _ => 0,
            })
            .sum()
    }

    fn release(&mut self, sequence: u64) {
        if let Some(group) = self.groups.get_mut(&sequence)
            && let Group::Holding { frames, .. } = std::mem::replace(group, Group::Passing)
        {
            self.out
                .extend(frames.into_iter().map(|f| HeadOut::Frame(sequence, f)));
        }
    }

    /// Forget the oldest groups past the bound (a sender that never ends its
    /// streams); a held head among them is dropped (the rest of that group, if
    /// any comes, then passes without it: the hub's sinks wait for a keyframe).
    fn bound_groups(&mut self) {
        while self.groups.len() > self.limits.max_groups {
            if let Some((_, Group::Holding { frames, .. })) = self.groups.pop_first() {
                self.dropped_frames += frames.len() as u64;
            }
        }
    }
}

impl HeadFrame for crate::framing::Frame {
    fn track(&self) -> u8 {
        self.track
    }

    fn starts_keyframe(&self) -> bool {
        self.keyframe
    }

    fn marker_and_timestamp(&self) -> Option<(bool, u32)> {
        let rtp = &self.rtp;
        // An RTP version 2 fixed header, or nothing to go by.
        if rtp.len() < 12 || rtp[0] >> 6 != 2 {
            return None;
        }
        let ts = rtp.get(4..8)?;
        let marker = rtp.get(1)? & 0x80 != 0;
        Some((marker, u32::from_be_bytes([ts[0], ts[1], ts[2], ts[3]])))
    }

    fn size(&self) -> usize {
        self.rtp.len()
    }
}

#[cfg(test)]
#[path = "head_tests.rs"]
mod tests;
