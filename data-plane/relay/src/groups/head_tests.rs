use super::*;

const LIMITS: HeadLimits = HeadLimits {
    max_frames: 8,
    max_bytes: 10_000,
    max_groups: 4,
};
const VIDEO: u8 = 1;
const AUDIO: u8 = 0;

/// (track, keyframe start, marker, timestamp, id)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct F(u8, bool, bool, u32, u32);

impl HeadFrame for F {
    fn track(&self) -> u8 {
        self.0
    }
    fn starts_keyframe(&self) -> bool {
        self.1
    }
    fn marker_and_timestamp(&self) -> Option<(bool, u32)> {
        Some((self.2, self.3))
    }
    fn size(&self) -> usize {
        100
    }
}

fn key(ts: u32, id: u32) -> F {
    F(VIDEO, true, false, ts, id)
}
fn video(ts: u32, marker: bool, id: u32) -> F {
    F(VIDEO, false, marker, ts, id)
}
fn audio(id: u32) -> F {
    F(AUDIO, false, false, 7, id)
}

fn drain(g: &mut HeadGate<F>) -> Vec<HeadOut<F>> {
    std::iter::from_fn(|| g.poll()).collect()
}

fn ids(out: &[HeadOut<F>]) -> Vec<(u64, u32)> {
    out.iter()
        .filter_map(|o| match o {
            HeadOut::Frame(seq, f) => Some((*seq, f.4)),
            HeadOut::End(..) => None,
        })
        .collect()
}

#[test]
fn a_keyframe_is_held_until_its_marker_then_frames_pass() {
    let mut g = HeadGate::new(LIMITS);
    g.on_frame(0, key(90, 0));
    g.on_frame(0, audio(1));
    g.on_frame(0, video(90, false, 2));
    assert_eq!(drain(&mut g), [], "keyframe still arriving");
    assert_eq!(g.held_frames(), 3);
    g.on_frame(0, video(90, true, 3));
    assert_eq!(ids(&drain(&mut g)), [(0, 0), (0, 1), (0, 2), (0, 3)]);
    g.on_frame(0, video(180, false, 4));
    assert_eq!(ids(&drain(&mut g)), [(0, 4)], "past the head: straight on");
    g.on_group_end(0, true);
    assert_eq!(drain(&mut g), [HeadOut::End(0, true)]);
}

#[test]
fn a_group_given_up_mid_keyframe_loses_the_whole_head() {
    let mut g = HeadGate::new(LIMITS);
    g.on_frame(0, key(90, 0));
    g.on_frame(0, video(90, false, 1));
    // The live keyframe's group arrives whole while group 0's keyframe waits
    // for a retransmission.
    g.on_frame(1, key(180, 10));
    g.on_frame(1, video(180, true, 11));
    assert_eq!(ids(&drain(&mut g)), [(1, 10), (1, 11)]);
    // The sender resets group 0: nothing of its keyframe goes on.
    g.on_group_end(0, false);
    assert_eq!(drain(&mut g), [HeadOut::End(0, false)]);
    assert_eq!(g.dropped_frames(), 2);
    assert_eq!(g.held_frames(), 0);
}

#[test]
fn another_timestamp_or_a_clean_end_completes_a_head_without_marker() {
    let mut g = HeadGate::new(LIMITS);
    g.on_frame(0, key(90, 0));
    g.on_frame(0, video(180, false, 1));
    assert_eq!(ids(&drain(&mut g)), [(0, 0), (0, 1)]);

    g.on_frame(1, key(270, 2));
    g.on_group_end(1, true);
    assert_eq!(
        drain(&mut g),
        [HeadOut::Frame(1, key(270, 2)), HeadOut::End(1, true)]
    );
}

#[test]
fn groups_without_a_keyframe_head_pass_at_once() {
    let mut g = HeadGate::new(LIMITS);
    g.on_frame(0, audio(0)); // an audio-only stream's group
    g.on_frame(1, F(VIDEO, true, true, 90, 1)); // a one-packet keyframe
    assert_eq!(ids(&drain(&mut g)), [(0, 0), (1, 1)]);
}

#[test]
fn holding_is_bounded() {
    let mut g = HeadGate::new(LIMITS);
    g.on_frame(0, key(90, 0));
    for i in 1..LIMITS.max_frames as u32 {
        g.on_frame(0, video(90, false, i));
    }
    assert_eq!(drain(&mut g), []);
    g.on_frame(0, video(90, false, 99));
    assert_eq!(
        drain(&mut g).len(),
        LIMITS.max_frames + 1,
        "past the bound: passed on"
    );

    // Groups that never end: the oldest held head is dropped.
    for seq in 1..=LIMITS.max_groups as u64 + 1 {
        g.on_frame(seq, key(seq as u32, 0));
    }
    assert!(g.groups.len() <= LIMITS.max_groups);
    assert!(g.dropped_frames() >= 1);
}
