//! Per-player, per-track rewriting of RTP SSRC, sequence numbers and timestamps.
//!
//! A player must see one continuous RTP stream per track, whatever happens upstream: the hub
//! may skip whole groups for a slow player, the upstream may switch (a new publisher session,
//! a failover to another relay), the source may restart its sequence numbers. The rewriter
//! maps every input packet onto the player's stream:
//!
//! * **Within a run** (same SSRC, sequence and timestamp moving plausibly), output = input +
//!   offset. In-order input therefore advances the output sequence number by exactly one per
//!   packet, and a packet the network delivered late (a NACK retransmission at ingest) keeps
//!   its place instead of being renumbered after newer packets.
//! * **On a discontinuity** (SSRC change, sequence jump beyond [`MAX_SEQ_JUMP`], timestamp
//!   jump beyond 10 s forward or 1 s backward, or a gap the caller flagged with
//!   [`RtpRewriter::mark_gap`]), new offsets are chosen so that the output sequence number is
//!   the previous one plus one and the output timestamp advances by the wall-clock time elapsed
//!   since the previous packet, and at least by one frame.
//!
//! * **Padding** ([`RtpRewriter::pad`]): padding-only packets (a bandwidth probe) take the
//!   next output numbers within the run; the run's offset grows by their count, and the
//!   offsets before each padding block are kept (the last [`MAX_PADS`] blocks) so that late
//!   input and NACKs still map to the numbers their packets were sent with.
//!
//! Pure: time comes in as an argument, so every case is unit tested without a clock.

/// Largest forward sequence-number jump still treated as loss within a run.
pub const MAX_SEQ_JUMP: u16 = 500;
/// Largest backward sequence-number step still treated as a late packet within a run.
pub const MAX_REORDER: u16 = 200;
/// Largest forward timestamp jump within a run, in seconds (Opus DTX pauses stay below it).
const MAX_TS_FORWARD_SECS: u64 = 10;

/// Padding blocks within a run whose earlier offsets are remembered; beyond it the oldest
/// is forgotten and the output before it is no longer mapped (NACKs for it go unanswered).
pub const MAX_PADS: usize = 32;

/// A block of padding-only packets within a run.
#[derive(Debug, Clone, Copy)]
struct Pad {
    /// The first input sequence number after it (the newest input at the time, plus one).
    in_from: u16,
    /// Its first output sequence number, and how many it took.
    out_start: u16,
    count: u16,
    /// The run's sequence offset before it.
    offset_before: u16,
}

/// Output header fields for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    /// The player-facing SSRC.
    pub ssrc: u32,
    /// Output sequence number.
    pub sequence_number: u16,
    /// Output timestamp.
    pub timestamp: u32,
    /// True when this packet started a new run (the offsets were recomputed).
    pub discontinuity: bool,
}

/// The input behind an output packet; see [`RtpRewriter::origin_of`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// Input SSRC.
    pub in_ssrc: u32,
    /// Input sequence number.
    pub in_seq: u16,
    /// Added to the input timestamp to give the output timestamp.
    pub ts_offset: u32,
}

#[derive(Debug, Clone, Copy)]
struct Run {
    in_ssrc: u32,
    /// Newest input sequence number and timestamp of the run.
    last_in_seq: u16,
    last_in_ts: u32,
    seq_offset: u16,
    ts_offset: u32,
    /// The run's first output sequence number.
    first_out_seq: u16,
    /// Newest output sequence number and timestamp, and when it was produced.
    last_out_seq: u16,
    last_out_ts: u32,
    last_wall_us: u64,
}

/// Rewrites SSRC, sequence number and timestamp of one track for one player.
#[derive(Debug, Clone)]
pub struct RtpRewriter {
    ssrc: u32,
    clock_rate: u32,
    frame_ticks: u32,
    run: Option<Run>,
    gap_pending: bool,
    /// Padding blocks of the current run, oldest first.
    pads: std::collections::VecDeque<Pad>,
}

impl RtpRewriter {
    /// A rewriter producing packets with SSRC `ssrc`. `clock_rate` converts wall-clock time to
    /// timestamp ticks; `frame_ticks` is the smallest timestamp step across a discontinuity
    /// (one frame: 3000 for 30 fps video, 960 for 20 ms Opus).
    pub fn new(ssrc: u32, clock_rate: u32, frame_ticks: u32) -> Self {
        RtpRewriter {
            ssrc,
            clock_rate: clock_rate.max(1),
            frame_ticks: frame_ticks.max(1),
            run: None,
            gap_pending: false,
            pads: std::collections::VecDeque::new(),
        }
    }

    /// The SSRC of the output stream.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Declares that packets were skipped before the next one: it starts a new run.
    pub fn mark_gap(&mut self) {
        self.gap_pending = true;
    }

    /// Maps one input packet (its SSRC, sequence number and timestamp, received at wall-clock
    /// `now_us` microseconds) onto the output stream.
    pub fn rewrite(&mut self, in_ssrc: u32, seq: u16, ts: u32, now_us: u64) -> Rewritten {
        let gap = std::mem::take(&mut self.gap_pending);
        let Some(mut run) = self.run else {
            // First packet: the output starts where the input is.
            self.run = Some(Run {
                in_ssrc,
                last_in_seq: seq,
                last_in_ts: ts,
                seq_offset: 0,
                ts_offset: 0,
                first_out_seq: seq,
                last_out_seq: seq,
                last_out_ts: ts,
                last_wall_us: now_us,
            });
            return self.output(seq, ts, false);
        };

        let seq_delta = seq.wrapping_sub(run.last_in_seq);
        let newer = seq_delta != 0 && seq_delta <= MAX_SEQ_JUMP;
        let late = seq_delta == 0 || seq_delta >= 0u16.wrapping_sub(MAX_REORDER);
        let ts_delta = ts.wrapping_sub(run.last_in_ts) as i32;
        let max_forward = MAX_TS_FORWARD_SECS.saturating_mul(u64::from(self.clock_rate));
        let ts_plausible = if ts_delta >= 0 {
            (ts_delta as u64) <= max_forward
        } else {
            ts_delta.unsigned_abs() <= self.clock_rate
        };
        let continuous = !gap && in_ssrc == run.in_ssrc && (late || (newer && ts_plausible));

        if continuous {
            let offset = if late {
                self.offset_for_input(run.seq_offset, seq)
            } else {
                run.seq_offset
            };
            let out_seq = seq.wrapping_add(offset);
            let out_ts = ts.wrapping_add(run.ts_offset);
            if newer {
                run.last_in_seq = seq;
                run.last_out_seq = out_seq;
                if ts_delta > 0 {
                    run.last_in_ts = ts;
                    run.last_out_ts = out_ts;
                }
                run.last_wall_us = now_us;
            }
            self.run = Some(run);
            return self.output(out_seq, out_ts, false);
        }

        // A new run: continue right after the previous output.
        self.pads.clear();
        let out_seq = run.last_out_seq.wrapping_add(1);
        let elapsed_us = now_us.saturating_sub(run.last_wall_us);
        let elapsed_ticks = elapsed_us.saturating_mul(u64::from(self.clock_rate)) / 1_000_000;
        let step = elapsed_ticks.clamp(u64::from(self.frame_ticks), u64::from(u32::MAX / 2));
        let out_ts = run.last_out_ts.wrapping_add(step as u32);
        self.run = Some(Run {
            in_ssrc,
            last_in_seq: seq,
            last_in_ts: ts,
            seq_offset: out_seq.wrapping_sub(seq),
            ts_offset: out_ts.wrapping_sub(ts),
            first_out_seq: out_seq,
            last_out_seq: out_seq,
            last_out_ts: out_ts,
            last_wall_us: now_us,
        });
        self.output(out_seq, out_ts, true)
    }

    /// Where an output sequence number of the current run came from: the input SSRC and
    /// sequence number, and the timestamp offset to apply. Lets a NACK be answered from the
    /// stream's shared history without a per-player copy. `None` for numbers outside the
    /// current run (older runs are not retransmitted).
    pub fn origin_of(&self, out_seq: u16) -> Option<Origin> {
        let run = self.run?;
        let span = run.last_out_seq.wrapping_sub(run.first_out_seq);
        let pos = out_seq.wrapping_sub(run.first_out_seq);
        if pos > span {
            return None;
        }
        let mut offset = run.seq_offset;
        for pad in self.pads.iter().rev() {
            let start = pad.out_start.wrapping_sub(run.first_out_seq);
            if pos >= start.wrapping_add(pad.count) {
                break;
            }
            if pos >= start {
                // A padding packet: nothing to resend.
                return None;
            }
            offset = pad.offset_before;
        }
        Some(Origin {
            in_ssrc: run.in_ssrc,
            in_seq: out_seq.wrapping_sub(offset),
            ts_offset: run.ts_offset,
        })
    }

    /// Takes `count` output sequence numbers for padding-only packets after the newest
    /// output; returns the first and the timestamp they carry (the newest output's, as a
    /// padding packet belongs to no frame). `None` before the first packet (nothing to be
    /// continuous with) or for no packets.
    pub fn pad(&mut self, count: u16) -> Option<(u16, u32)> {
        let run = self.run.as_mut().filter(|_| count > 0)?;
        let first = run.last_out_seq.wrapping_add(1);
        if self.pads.len() == MAX_PADS
            && let Some(oldest) = self.pads.pop_front()
        {
            // Output before the forgotten block is no longer mapped.
            run.first_out_seq = oldest.out_start.wrapping_add(oldest.count);
        }
        self.pads.push_back(Pad {
            in_from: run.last_in_seq.wrapping_add(1),
            out_start: first,
            count,
            offset_before: run.seq_offset,
        });
        run.seq_offset = run.seq_offset.wrapping_add(count);
        run.last_out_seq = run.last_out_seq.wrapping_add(count);
        Some((first, run.last_out_ts))
    }

    /// The offset of a late input packet: the one in force when its neighbours were sent
    /// (before any padding block that came after them).
    fn offset_for_input(&self, current: u16, seq: u16) -> u16 {
        let mut offset = current;
        for pad in self.pads.iter().rev() {
            // `seq` is older than the block's first input (within the reorder window).
            if pad.in_from.wrapping_sub(seq) == 0 || pad.in_from.wrapping_sub(seq) > MAX_REORDER {
                break;
            }
            offset = pad.offset_before;
        }
        offset
    }

    /// The newest output timestamp and the wall-clock time (µs) it was produced at.
    pub fn last_output(&self) -> Option<(u32, u64)> {
        self.run.map(|r| (r.last_out_ts, r.last_wall_us))
    }

    fn output(&self, sequence_number: u16, timestamp: u32, discontinuity: bool) -> Rewritten {
        Rewritten {
            ssrc: self.ssrc,
            sequence_number,
            timestamp,
            discontinuity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_of_maps_the_current_run_only() {
        let mut r = RtpRewriter::new(1, 90_000, 3000);
        r.rewrite(7, 100, 1000, 0);
        r.rewrite(7, 101, 4000, 33_000);
        assert_eq!(
            r.origin_of(101),
            Some(Origin {
                in_ssrc: 7,
                in_seq: 101,
                ts_offset: 0
            })
        );
        assert_eq!(r.origin_of(102), None, "not sent yet");
        // A new source: a new run continues at 102; the old run is no longer mapped.
        let out = r.rewrite(9, 5000, 77, 66_000);
        assert_eq!(out.sequence_number, 102);
        let origin = r.origin_of(102).expect("current run");
        assert_eq!((origin.in_ssrc, origin.in_seq), (9, 5000));
        assert_eq!(77u32.wrapping_add(origin.ts_offset), out.timestamp);
        assert_eq!(r.origin_of(101), None);
    }

    #[test]
    fn padding_takes_numbers_without_breaking_the_mapping() {
        let mut r = RtpRewriter::new(1, 90_000, 3000);
        assert_eq!(r.pad(3), None, "nothing sent yet");
        r.rewrite(7, 100, 1000, 0);
        r.rewrite(7, 101, 1000, 1);
        assert_eq!(r.pad(0), None);
        assert_eq!(
            r.pad(3),
            Some((102, 1000)),
            "after the newest, its timestamp"
        );
        let next = r.rewrite(7, 102, 4000, 33_000);
        assert_eq!((next.sequence_number, next.timestamp), (105, 4000));
        assert!(!next.discontinuity, "the run goes on");
        // A late packet of before the padding keeps the number it had (a retransmission at
        // ingest of 101 maps onto 101, not onto a padding packet's number).
        assert_eq!(r.rewrite(7, 101, 1000, 34_000).sequence_number, 101);
        assert_eq!(r.rewrite(7, 102, 4000, 34_000).sequence_number, 105);
        // NACKs: before the padding, the padding itself, after it.
        assert_eq!(r.origin_of(101).map(|o| o.in_seq), Some(101));
        for padding in 102..105 {
            assert_eq!(r.origin_of(padding), None);
        }
        assert_eq!(r.origin_of(105).map(|o| o.in_seq), Some(102));
        // Two blocks in a row.
        assert_eq!(r.pad(2), Some((106, 4000)));
        assert_eq!(r.rewrite(7, 103, 7000, 66_000).sequence_number, 108);
        assert_eq!(r.origin_of(100).map(|o| o.in_seq), Some(100));
        assert_eq!(r.origin_of(105).map(|o| o.in_seq), Some(102));
        assert_eq!(r.origin_of(107), None);
        assert_eq!(r.origin_of(108).map(|o| o.in_seq), Some(103));
    }

    #[test]
    fn old_padding_blocks_are_forgotten_and_so_is_what_came_before() {
        let mut r = RtpRewriter::new(1, 90_000, 3000);
        let mut seq = 0u16;
        r.rewrite(7, seq, 0, 0);
        for _ in 0..MAX_PADS + 1 {
            r.pad(1);
            seq += 1;
            r.rewrite(7, seq, u32::from(seq) * 3000, u64::from(seq) * 33_000);
        }
        // Input n went out as 2n; the first block (1) and input 0 are forgotten.
        assert_eq!(r.origin_of(0), None);
        assert_eq!(r.origin_of(2).map(|o| o.in_seq), Some(1));
        let last = 2 * (MAX_PADS as u16 + 1);
        assert_eq!(r.origin_of(last).map(|o| o.in_seq), Some(seq));
        // A new run forgets every block.
        let out = r.rewrite(9, 5000, 0, 10_000_000);
        assert_eq!(out.sequence_number, last + 1);
        assert_eq!(r.origin_of(last + 1).map(|o| o.in_seq), Some(5000));
    }

    const SSRC: u32 = 0xdead_beef;

    fn video() -> RtpRewriter {
        RtpRewriter::new(7, 90_000, 3_000)
    }

    /// Feeds (ssrc, seq, ts, now_us) and returns (seq, ts) outputs.
    fn feed(rw: &mut RtpRewriter, input: &[(u32, u16, u32, u64)]) -> Vec<(u16, u32)> {
        input
            .iter()
            .map(|&(ssrc, seq, ts, now)| {
                let out = rw.rewrite(ssrc, seq, ts, now);
                assert_eq!(out.ssrc, 7);
                (out.sequence_number, out.timestamp)
            })
            .collect()
    }

    #[test]
    fn continuous_stream_passes_through() {
        let mut rw = video();
        let out = feed(
            &mut rw,
            &[
                (SSRC, 100, 9000, 0),
                (SSRC, 101, 9000, 1),
                (SSRC, 102, 12000, 33_000),
            ],
        );
        assert_eq!(out, vec![(100, 9000), (101, 9000), (102, 12000)]);
    }

    #[test]
    fn flagged_gap_continues_seq_and_advances_ts_by_wall_clock() {
        let mut rw = video();
        feed(&mut rw, &[(SSRC, 10, 1000, 0), (SSRC, 11, 4000, 33_333)]);
        // The hub skipped a group: input jumps by 90 packets and 2 s, 1 s passed for the player.
        rw.mark_gap();
        let out = rw.rewrite(SSRC, 101, 184_000, 1_033_333);
        assert!(out.discontinuity);
        assert_eq!(out.sequence_number, 12);
        assert_eq!(out.timestamp, 4000 + 90_000);
        // The run continues with the new offsets.
        let next = rw.rewrite(SSRC, 102, 184_000, 1_034_000);
        assert!(!next.discontinuity);
        assert_eq!((next.sequence_number, next.timestamp), (13, 4000 + 90_000));
    }

    #[test]
    fn ssrc_switch_is_a_discontinuity_with_at_least_one_frame() {
        let mut rw = video();
        feed(&mut rw, &[(SSRC, 5000, 70_000, 10)]);
        // New upstream, new numbering, no wall time elapsed: one frame of timestamp.
        let out = rw.rewrite(0x1234, 17, 3_000_000, 10);
        assert!(out.discontinuity);
        assert_eq!((out.sequence_number, out.timestamp), (5001, 73_000));
        let out = rw.rewrite(0x1234, 18, 3_003_000, 33_000);
        assert_eq!((out.sequence_number, out.timestamp), (5002, 76_000));
    }

    #[test]
    fn large_seq_jump_without_flag_is_a_discontinuity() {
        let mut rw = video();
        feed(&mut rw, &[(SSRC, 1, 0, 0)]);
        let out = rw.rewrite(SSRC, 1 + MAX_SEQ_JUMP + 1, 3000, 33_000);
        assert!(out.discontinuity);
        assert_eq!(out.sequence_number, 2);
        // A small loss stays visible so the player can NACK it.
        let out = rw.rewrite(SSRC, 1 + MAX_SEQ_JUMP + 4, 3000, 34_000);
        assert!(!out.discontinuity);
        assert_eq!(out.sequence_number, 5);
    }

    #[test]
    fn timestamp_jump_without_seq_jump_is_a_discontinuity() {
        let mut rw = RtpRewriter::new(7, 48_000, 960);
        feed(&mut rw, &[(SSRC, 1, 0, 0)]);
        // A 5 s DTX pause is a plausible run.
        let out = rw.rewrite(SSRC, 2, 240_000, 5_000_000);
        assert!(!out.discontinuity);
        // A 60 s jump is not: the output advances by the wall clock (20 ms).
        let out = rw.rewrite(SSRC, 3, 240_000 + 48_000 * 60, 5_020_000);
        assert!(out.discontinuity);
        assert_eq!((out.sequence_number, out.timestamp), (3, 240_000 + 960));
    }

    #[test]
    fn late_packets_keep_their_place() {
        let mut rw = video();
        feed(&mut rw, &[(SSRC, 10, 0, 0), (SSRC, 12, 3000, 1)]);
        let late = rw.rewrite(SSRC, 11, 0, 2);
        assert!(!late.discontinuity);
        assert_eq!(late.sequence_number, 11);
        let next = rw.rewrite(SSRC, 13, 3000, 3);
        assert_eq!(next.sequence_number, 13);
    }

    #[test]
    fn sequence_and_timestamp_wrap_around() {
        let mut rw = video();
        let out = feed(
            &mut rw,
            &[
                (SSRC, 65534, u32::MAX - 2999, 0),
                (SSRC, 65535, u32::MAX - 2999, 1),
                (SSRC, 0, 1, 33_000),
                (SSRC, 1, 3001, 66_000),
            ],
        );
        assert_eq!(
            out,
            vec![
                (65534, u32::MAX - 2999),
                (65535, u32::MAX - 2999),
                (0, 1),
                (1, 3001)
            ]
        );
        // A discontinuity right at the wrap continues at 2, with wrapped timestamps.
        rw.mark_gap();
        let out = rw.rewrite(SSRC, 40_000, 5, 99_000);
        assert_eq!((out.sequence_number, out.timestamp), (2, 6001));
    }

    #[test]
    fn output_after_discontinuity_wraps_offsets() {
        let mut rw = video();
        feed(&mut rw, &[(SSRC, 65535, 100, 0)]);
        let out = rw.rewrite(0x42, 3, 50, 0);
        assert_eq!((out.sequence_number, out.timestamp), (0, 3100));
        let out = rw.rewrite(0x42, 4, 3050, 33_000);
        assert_eq!((out.sequence_number, out.timestamp), (1, 6100));
    }
}
