//! Transport-wide congestion control, the sender's half
//! (draft-holmer-rmcat-transport-wide-cc-extensions-01): every packet sent to a player carries
//! the player's own transport-wide sequence number in a one-byte header extension; the player
//! answers with feedback (RTCP RTPFB, FMT 15) saying which of them arrived and when. This
//! module stamps, remembers what was sent (a ring of the last [`RING`] packets), and reads the
//! feedback into acknowledged packets for the estimator (`estimate.rs`).
//!
//! Feedback is untrusted input: it is validated whole before anything of it is used, and its
//! cost is bounded by its length, whatever it claims (a run of "not received" is one step, not
//! one per packet; every "received" status needs its own delta byte). Sequence numbers the
//! session never sent, or sent longer ago than the ring holds, are ignored; a packet is
//! acknowledged at most once.

/// The header extension's URI, as negotiated in SDP (`a=extmap`).
pub(crate) use crate::sdp::TRANSPORT_CC_URI as URI;

/// Packets remembered per player for their feedback (16 bytes each, 16 KiB a player): at
/// 1,000 packets/s (a 10 Mbit/s player) one second, ten times the ~100 ms between two
/// feedback packets.
pub(crate) const RING: usize = 1024;

/// The one-byte extension block (RFC 8285) carrying the sequence number, as it follows the
/// fixed RTP header: profile `0xBEDE`, one word, then `ID | len-1 = 1`, the two bytes, and
/// one byte of padding.
pub(crate) fn extension_block(id: u8, seq: u16) -> [u8; 8] {
    let [hi, lo] = seq.to_be_bytes();
    [0xbe, 0xde, 0, 1, (id << 4) | 1, hi, lo, 0]
}

/// Why a feedback packet was refused (counted in `/metrics`, nothing of it used).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FeedbackError {
    /// Not an RTCP transport-layer feedback packet of format 15 (version, type or format).
    #[error("not a transport-cc feedback packet")]
    NotFeedback,
    /// The length field, the chunks or the deltas run past the end of the packet.
    #[error("transport-cc feedback truncated")]
    Truncated,
    /// A status symbol uses the reserved value 3.
    #[error("transport-cc feedback uses a reserved status symbol")]
    ReservedSymbol,
}

/// One packet's fate as a feedback packet states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// `count` packets from `first` on did not arrive (yet).
    Lost { first: u16, count: u16 },
    /// The packet arrived at `arrival_us`, on the player's clock (only differences count).
    Received { seq: u16, arrival_us: i64 },
}

/// A chunk's statuses: a run of one symbol, or a vector of up to 14.
enum Chunk {
    Run { symbol: u8, length: u16 },
    Vector { symbols: [u8; 14], len: u8 },
}

fn chunk(word: u16) -> Chunk {
    if word & 0x8000 == 0 {
        return Chunk::Run {
            symbol: ((word >> 13) & 0x3) as u8,
            length: word & 0x1fff,
        };
    }
    let mut symbols = [0u8; 14];
    if word & 0x4000 == 0 {
        for (i, s) in symbols.iter_mut().enumerate() {
            *s = ((word >> (13 - i)) & 1) as u8;
        }
        Chunk::Vector { symbols, len: 14 }
    } else {
        for (i, s) in symbols.iter_mut().take(7).enumerate() {
            *s = ((word >> (12 - 2 * i)) & 0x3) as u8;
        }
        Chunk::Vector { symbols, len: 7 }
    }
}

/// Bytes of receive delta a symbol needs: none (not received), one (small), two (large).
fn delta_len(symbol: u8) -> Result<usize, FeedbackError> {
    match symbol {
        0 => Ok(0),
        1 => Ok(1),
        2 => Ok(2),
        _ => Err(FeedbackError::ReservedSymbol),
    }
}

/// The fixed part of a feedback packet, and where its chunks and deltas lie.
struct Layout {
    base: u16,
    count: u16,
    reference_us: i64,
    chunks: usize,
    chunks_end: usize,
    end: usize,
}

/// Validates the whole packet: header, every chunk, and that every delta it needs is there.
fn layout(p: &[u8]) -> Result<Layout, FeedbackError> {
    if p.len() < 20 {
        return Err(FeedbackError::Truncated);
    }
    if p[0] >> 6 != 2 || p[0] & 0x1f != 15 || p[1] != 205 {
        return Err(FeedbackError::NotFeedback);
    }
    let mut end = 4 * (usize::from(u16::from_be_bytes([p[2], p[3]])) + 1);
    if end > p.len() || end < 20 {
        return Err(FeedbackError::Truncated);
    }
    if p[0] & 0x20 != 0 {
        end = end.saturating_sub(usize::from(p[end - 1]));
    }
    let base = u16::from_be_bytes([p[12], p[13]]);
    let count = u16::from_be_bytes([p[14], p[15]]);
    // 24-bit signed, in multiples of 64 ms.
    let reference = (i32::from_be_bytes([p[16], p[17], p[18], 0]) >> 8) as i64;
    let body = &p[..end];
    let (mut pos, mut covered, mut deltas) = (20usize, 0usize, 0usize);
    while covered < usize::from(count) {
        let word = body.get(pos..pos + 2).ok_or(FeedbackError::Truncated)?;
        let left = usize::from(count) - covered;
        match chunk(u16::from_be_bytes([word[0], word[1]])) {
            Chunk::Run { symbol, length } => {
                let n = usize::from(length).min(left);
                deltas += n * delta_len(symbol)?;
                // A zero-length run still costs its two bytes: progress is bounded by length.
                covered += n;
            }
            Chunk::Vector { symbols, len } => {
                let n = usize::from(len).min(left);
                for s in &symbols[..n] {
                    deltas += delta_len(*s)?;
                }
                covered += n;
            }
        }
        pos += 2;
    }
    if pos + deltas > end {
        return Err(FeedbackError::Truncated);
    }
    Ok(Layout {
        base,
        count,
        reference_us: reference * 64_000,
        chunks: 20,
        chunks_end: pos,
        end,
    })
}

/// Reads a feedback packet (`p`: the RTCP packet, header included): validates all of it,
/// then hands each status to `each`, in sequence order. Costs O(`p.len()`).
pub(crate) fn parse(p: &[u8], mut each: impl FnMut(Status)) -> Result<(), FeedbackError> {
    let l = layout(p)?;
    let (mut seq, mut left) = (l.base, l.count);
    let mut arrival = l.reference_us;
    let mut delta_pos = l.chunks_end;
    let mut received = |seq: u16, symbol: u8, each: &mut dyn FnMut(Status)| {
        // Validated by `layout`: the bytes are there.
        let delta = if symbol == 1 {
            i64::from(p[delta_pos])
        } else {
            i64::from(i16::from_be_bytes([p[delta_pos], p[delta_pos + 1]]))
        };
        delta_pos += usize::from(symbol);
        arrival += delta * 250;
        each(Status::Received {
            seq,
            arrival_us: arrival,
        });
    };
    let mut pos = l.chunks;
    while left > 0 && pos + 2 <= l.chunks_end {
        match chunk(u16::from_be_bytes([p[pos], p[pos + 1]])) {
            Chunk::Run { symbol, length } => {
                let n = length.min(left);
                if symbol == 0 {
                    if n > 0 {
                        each(Status::Lost {
                            first: seq,
                            count: n,
                        });
                    }
                    seq = seq.wrapping_add(n);
                } else {
                    for _ in 0..n {
                        received(seq, symbol, &mut each);
                        seq = seq.wrapping_add(1);
                    }
                }
                left -= n;
            }
            Chunk::Vector { symbols, len } => {
                let n = u16::from(len).min(left);
                for s in &symbols[..usize::from(n)] {
                    if *s == 0 {
                        each(Status::Lost {
                            first: seq,
                            count: 1,
                        });
                    } else {
                        received(seq, *s, &mut each);
                    }
                    seq = seq.wrapping_add(1);
                }
                left -= n;
            }
        }
        pos += 2;
    }
    debug_assert!(delta_pos <= l.end);
    Ok(())
}

/// A packet the player acknowledged, for the estimator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Acked {
    /// When the node sent it, µs on the node's clock.
    pub send_us: u64,
    /// When the player received it, µs on the player's clock.
    pub arrival_us: i64,
    /// Bytes on the wire (SRTP).
    pub size: u32,
}

/// What one feedback packet said about packets this session sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FeedbackCounts {
    pub received: u32,
    pub lost: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct Sent {
    send_us: u64,
    /// The low 32 bits of the extended sequence number (enough to tell ring laps apart).
    ext_seq: u32,
    size: u16,
    acked: bool,
    valid: bool,
}

/// A player's transport-wide sequence numbers and the packets they were given to.
#[derive(Debug)]
pub(crate) struct SentPackets {
    ring: Vec<Sent>,
    /// The next extended sequence number.
    next: u64,
}

impl SentPackets {
    pub(crate) fn new() -> SentPackets {
        SentPackets {
            ring: vec![Sent::default(); RING],
            next: 0,
        }
    }

    /// Numbers a packet of `size` bytes sent at `send_us`; returns its sequence number.
    pub(crate) fn on_sent(&mut self, send_us: u64, size: usize) -> u16 {
        let ext_seq = self.next;
        self.next += 1;
        self.ring[(ext_seq % RING as u64) as usize] = Sent {
            ext_seq: ext_seq as u32,
            send_us,
            size: u16::try_from(size).unwrap_or(u16::MAX),
            acked: false,
            valid: true,
        };
        ext_seq as u16
    }

    /// The extended sequence number of `seq`, taken as the newest sent one with those 16
    /// bits (numbers "from the future" land 65,536 back, out of the ring).
    fn extend(&self, seq: u16) -> Option<u64> {
        let latest = self.next.checked_sub(1)?;
        latest.checked_sub(u64::from((latest as u16).wrapping_sub(seq)))
    }

    /// How many of `count` sequence numbers from `first` on lie within the ring.
    fn in_ring(&self, first: u16, count: u16) -> u32 {
        let Some(start) = self.extend(first) else {
            return 0;
        };
        let oldest = self.next.saturating_sub(RING as u64);
        let end = (start + u64::from(count)).min(self.next);
        end.saturating_sub(start.max(oldest)) as u32
    }

    /// Reads a feedback packet: packets it acknowledges for the first time go to `acked` (in
    /// sequence order); returns its counts. Nothing is used of a packet that is refused.
    pub(crate) fn on_feedback(
        &mut self,
        packet: &[u8],
        acked: &mut Vec<Acked>,
    ) -> Result<FeedbackCounts, FeedbackError> {
        let mut counts = FeedbackCounts::default();
        parse(packet, |status| match status {
            Status::Lost { first, count } => counts.lost += self.in_ring(first, count),
            Status::Received { seq, arrival_us } => {
                let Some(ext) = self.extend(seq) else { return };
                let entry = &mut self.ring[(ext % RING as u64) as usize];
                if entry.valid && entry.ext_seq == ext as u32 && !entry.acked {
                    entry.acked = true;
                    counts.received += 1;
                    acked.push(Acked {
                        send_us: entry.send_us,
                        arrival_us,
                        size: u32::from(entry.size),
                    });
                }
            }
        })?;
        Ok(counts)
    }
}

#[cfg(test)]
#[path = "twcc_tests.rs"]
mod tests;
