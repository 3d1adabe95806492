//! A player session's transport-wide congestion control: every RTP packet it sends is sealed
//! with the player's transport-wide sequence number (when negotiated), and the player's
//! feedback feeds the session's bandwidth estimator and, through it, the layer choice.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rtc::rtp::header::{EXTENSION_PROFILE_ONE_BYTE, Extension, Header};
use rtc::srtp::context::Context;

use super::super::estimate::Estimator;
use super::super::twcc::{Acked, SentPackets, extension_block};
use super::Session;

/// What a session keeps for transport-cc.
pub(super) struct TransportCc {
    /// The negotiated extension id (1–14).
    id: u8,
    sent: SentPackets,
    estimator: Estimator,
    /// Reused for each feedback packet's acknowledged packets.
    acked: Vec<Acked>,
    /// The header's extension list as the SRTP context reads it (only its length counts
    /// there: the bytes sealed are the ones written by [`seal`]). Lent to each
    /// header and taken back, so stamping allocates nothing.
    template: Vec<Extension>,
}

impl TransportCc {
    pub(super) fn new(id: u8) -> TransportCc {
        TransportCc {
            id,
            sent: SentPackets::new(),
            estimator: Estimator::new(),
            acked: Vec::new(),
            template: vec![Extension {
                id,
                payload: Bytes::from_static(&[0, 0]),
            }],
        }
    }

    /// The estimate in bit/s, once known.
    pub(super) fn estimate(&self) -> Option<u64> {
        self.estimator.estimate()
    }
}

/// Seals one RTP packet for the player: `header`'s fields and `payload` (after `patch`
/// rewrote it in the copy: the VP8 descriptor's picture IDs), with the transport-wide sequence
/// number added when `twcc` is given (the track negotiated it). `wall_us` is the send time the
/// feedback will be matched against. `None` before SRTP is set up.
pub(super) fn seal(
    local: Option<&mut Context>,
    twcc: Option<&mut TransportCc>,
    mut header: Header,
    payload: &[u8],
    wall_us: u64,
    patch: impl FnOnce(&mut [u8]),
) -> Option<Bytes> {
    let local = local?;
    let mut plain = Vec::with_capacity(20 + payload.len());
    plain.extend_from_slice(&[
        0x80 | if twcc.is_some() { 0x10 } else { 0 },
        (u8::from(header.marker) << 7) | (header.payload_type & 0x7f),
    ]);
    plain.extend_from_slice(&header.sequence_number.to_be_bytes());
    plain.extend_from_slice(&header.timestamp.to_be_bytes());
    plain.extend_from_slice(&header.ssrc.to_be_bytes());
    let Some(twcc) = twcc else {
        plain.extend_from_slice(payload);
        patch(&mut plain[12..]);
        return local
            .encrypt_rtp_with_header(&plain, &header)
            .ok()
            .map(BytesMut::freeze);
    };
    // Size and time first: the sequence number is in the bytes sealed.
    let seq = twcc
        .sent
        .on_sent(wall_us, plain.len() + 8 + payload.len() + 10);
    plain.extend_from_slice(&extension_block(twcc.id, seq));
    let start = plain.len();
    plain.extend_from_slice(payload);
    patch(&mut plain[start..]);
    header.extension = true;
    header.extension_profile = EXTENSION_PROFILE_ONE_BYTE;
    header.extensions = std::mem::take(&mut twcc.template);
    let sealed = local.encrypt_rtp_with_header(&plain, &header);
    twcc.template = std::mem::take(&mut header.extensions);
    sealed.ok().map(BytesMut::freeze)
}

impl Session {
    /// One transport-cc feedback packet (RTCP RTPFB FMT 15, `packet` whole): refused and
    /// counted when malformed, else fed to the estimator and the estimate to the layer choice.
    pub(super) fn on_transport_feedback(&mut self, now: Instant, packet: &[u8]) {
        let Some(twcc) = self.transport.as_mut() else {
            // Not negotiated: nothing was stamped, nothing to learn.
            return;
        };
        twcc.acked.clear();
        match twcc.sent.on_feedback(packet, &mut twcc.acked) {
            Ok(counts) => {
                self.counters.transport_feedback.inc();
                twcc.estimator.on_feedback(now, &twcc.acked, counts);
            }
            Err(e) => {
                self.counters.transport_feedback_refused.inc();
                tracing::trace!(session = self.id, error = %e, "transport-cc feedback refused");
                return;
            }
        }
        let (Some(bps), trouble) = (twcc.estimator.estimate(), twcc.estimator.trouble()) else {
            return;
        };
        for track in &mut self.tracks {
            track.layers.on_transport_estimate(now, bps, trouble);
        }
    }
}
