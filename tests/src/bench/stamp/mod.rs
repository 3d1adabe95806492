//! Send-time stamps for glass-to-glass figures, and reading them back at a player.
//!
//! Publisher and player run in the bench process, so a stamp and its arrival are read from
//! one monotonic clock ([`anchor`]). The format, in one place:
//!
//! - **The stamp** is 12 bytes: the magic `SBT1`, then the microseconds since the anchor as a
//!   big-endian `u64` ([`encode`], [`decode`]).
//! - **Opus (WHIP)**: the first 12 bytes of an audio RTP payload are replaced by the stamp
//!   (the WAN bench's publisher, `wan/probe.rs`). The relay and the egress never look into
//!   Opus payloads, so the packet travels the same path as any other.
//! - **H.264 (RTMP, SRT)**: an SEI NAL unit (type 6) before the access unit's first slice, with
//!   one `user_data_unregistered` message (payload type 5, H.264 D.1.6): the 16-byte UUID
//!   `STRATA-G2G-STAMP` in ASCII, then the stamp ([`sei`]). It belongs to the access unit, so
//!   the node's RTMP/SRT converter passes it on like a slice; a player finds it after
//!   depacketizing (single NAL, STAP-A, FU-A: [`depack`]) and counts the access unit as
//!   arrived with its last packet (RTP marker).

pub mod depack;
pub mod sei;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The magic the stamp starts with.
pub const MAGIC: &[u8; 4] = b"SBT1";
/// Bytes of a stamp.
pub const LEN: usize = 12;

/// The clock stamps are measured against (fixed at its first use in the process).
pub fn anchor() -> Instant {
    static ANCHOR: OnceLock<Instant> = OnceLock::new();
    *ANCHOR.get_or_init(Instant::now)
}

/// The stamp of `at` (times before the anchor read as the anchor).
pub fn encode(at: Instant) -> [u8; LEN] {
    let us = at.saturating_duration_since(anchor()).as_micros() as u64;
    let mut out = [0u8; LEN];
    out[..4].copy_from_slice(MAGIC);
    out[4..].copy_from_slice(&us.to_be_bytes());
    out
}

/// The time a stamp at the start of `bytes` carries.
pub fn decode(bytes: &[u8]) -> Option<Instant> {
    let (magic, rest) = bytes.split_first_chunk::<4>()?;
    if magic != MAGIC {
        return None;
    }
    let (us, _) = rest.split_first_chunk::<8>()?;
    Some(anchor() + Duration::from_micros(u64::from_be_bytes(*us)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_back_to_the_microsecond() {
        let at = anchor() + Duration::from_micros(1_234_567);
        let s = encode(at);
        assert_eq!(&s[..4], MAGIC);
        assert_eq!(decode(&s), Some(at));
        assert_eq!(decode(&s[..11]), None);
        let mut wrong = s;
        wrong[0] = b'X';
        assert_eq!(decode(&wrong), None);
    }
}
