//! Per-player packet counts, and the transport-wide arrivals a `--transport-cc` player
//! reports back to the server.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use super::twcc::Arrivals;

/// Packet counts of one peer, by SSRC.
#[derive(Debug, Default)]
pub struct Counters {
    state: Mutex<CountState>,
    /// The negotiated id of the transport-wide sequence number extension; 0 when off.
    twcc_id: AtomicU8,
    /// Transport feedback packets handed to the player's stack.
    feedback_sent: AtomicU64,
}

#[derive(Debug, Default)]
struct CountState {
    streams: Vec<SeqTrack>,
    packets: u64,
    bytes: u64,
    first_at: Option<Instant>,
    /// Transport-wide arrivals not yet reported, once transport-cc is on.
    arrivals: Option<Arrivals>,
}

#[derive(Debug)]
struct SeqTrack {
    ssrc: u32,
    /// First extended sequence number seen.
    base: i64,
    /// Highest extended sequence number seen.
    highest: i64,
    received: u64,
}

/// Totals of one peer at one moment; differences of two give a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// RTP packets received.
    pub received: u64,
    /// RTP packets the sequence numbers say were sent (highest − first + 1, summed over SSRCs).
    pub expected: u64,
    /// RTP bytes received (header included).
    pub bytes: u64,
}

impl Tally {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Tally) -> Tally {
        Tally {
            received: self.received.saturating_sub(earlier.received),
            expected: self.expected.saturating_sub(earlier.expected),
            bytes: self.bytes.saturating_sub(earlier.bytes),
        }
    }

    /// Packets lost (expected but not received; never negative).
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.received)
    }
}

impl Counters {
    /// Counts one RTP packet; `twcc` is its transport-wide sequence number and arrival time
    /// (µs), when transport-cc is on and the packet carries one. Whether it is the first
    /// packet of its SSRC.
    pub(super) fn record(&self, ssrc: u32, seq: u16, len: usize, twcc: Option<(u16, i64)>) -> bool {
        let mut st = self.lock();
        st.packets += 1;
        if let (Some((tseq, at)), Some(arrivals)) = (twcc, st.arrivals.as_mut()) {
            arrivals.push(tseq, at, ssrc);
        }
        st.bytes += len as u64;
        if st.first_at.is_none() {
            st.first_at = Some(Instant::now());
        }
        match st.streams.iter_mut().find(|s| s.ssrc == ssrc) {
            Some(s) => {
                // Extend the 16-bit sequence number around the highest one seen.
                let delta = i64::from(seq.wrapping_sub(s.highest as u16) as i16);
                let ext = s.highest + delta;
                s.highest = s.highest.max(ext);
                s.base = s.base.min(ext);
                s.received += 1;
                false
            }
            None => {
                // Start high so that early reordering never goes below zero.
                let ext = (1 << 20) + i64::from(seq);
                st.streams.push(SeqTrack {
                    ssrc,
                    base: ext,
                    highest: ext,
                    received: 1,
                });
                true
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CountState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts recording transport-wide arrivals of extension `id` (1–14).
    pub(super) fn enable_transport_cc(&self, id: u8) {
        let mut st = self.lock();
        st.arrivals.get_or_insert_with(Arrivals::new);
        self.twcc_id.store(id, Ordering::Relaxed);
    }

    /// The transport-wide sequence number extension's id, 0 when transport-cc is off.
    pub(super) fn transport_cc_id(&self) -> u8 {
        self.twcc_id.load(Ordering::Relaxed)
    }

    /// Moves the arrivals recorded since the last call into `out` (cleared first), in
    /// arrival order; returns the SSRC of the newest.
    pub(super) fn take_arrivals(&self, out: &mut Vec<(u16, i64)>) -> Option<u32> {
        out.clear();
        self.lock().arrivals.as_mut()?.drain_into(out)
    }

    /// Counts one transport feedback packet sent.
    pub(super) fn feedback_sent(&self) {
        self.feedback_sent.fetch_add(1, Ordering::Relaxed);
    }

    /// Transport feedback packets this player sent.
    pub fn feedback_packets(&self) -> u64 {
        self.feedback_sent.load(Ordering::Relaxed)
    }

    /// The totals so far.
    pub fn tally(&self) -> Tally {
        let st = self.lock();
        Tally {
            received: st.packets,
            expected: st
                .streams
                .iter()
                .map(|s| (s.highest - s.base + 1).max(0) as u64)
                .sum(),
            bytes: st.bytes,
        }
    }

    /// When the first RTP packet arrived.
    pub fn first_packet(&self) -> Option<Instant> {
        self.lock().first_at
    }
}

/// SSRC and sequence number of an RTP (not RTCP, RFC 5761 §4) packet; the header is in the
/// clear under SRTP.
pub(super) fn rtp_header(data: &[u8]) -> Option<(u32, u16)> {
    if data.len() < 12 || data[0] >> 6 != 2 || (192..=223).contains(&data[1]) {
        return None;
    }
    let seq = u16::from_be_bytes([data[2], data[3]]);
    let ssrc = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
    Some((ssrc, seq))
}
