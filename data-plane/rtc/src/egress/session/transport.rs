//! A player session's transport-wide congestion control: every RTP packet it sends is sealed
//! with the player's transport-wide sequence number (when negotiated), and the player's
//! feedback feeds the session's bandwidth estimator and, through it, the layer choice.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rtc::rtp::header::{EXTENSION_PROFILE_ONE_BYTE, Extension, Header};
use rtc::srtp::context::Context;

use super::super::estimate::Estimator;
use super::super::probe::{PADDING_BYTES, ProbeConfig, ProbeOutcome, Prober};
use super::super::twcc::{Acked, SentPackets, extension_block};
use super::{Session, Transmit};
use strata_media::TrackKind;

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
    /// Padding probes before moves up.
    prober: Prober,
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
            prober: Prober::new(ProbeConfig::default()),
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
        0x80 | if header.padding { 0x20 } else { 0 } | if twcc.is_some() { 0x10 } else { 0 },
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
    let size = plain.len() + 8 + payload.len() + 10;
    let seq = twcc.sent.on_sent(wall_us, size);
    twcc.prober.on_sent(wall_us, size);
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
                twcc.prober.on_acked(&twcc.acked);
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

impl Session {
    /// Runs the padding probe the layer choice asks for before a move up (`probe.rs`):
    /// starts it (within the player's budget), sends its padding, and reports its outcome.
    pub(super) fn drive_probe(&mut self, now: Instant, wall_us: u64, out: &mut Vec<Transmit>) {
        let Some(twcc) = self.transport.as_mut() else {
            return;
        };
        if let Some(outcome) = twcc.prober.poll(now) {
            let passed = matches!(outcome, ProbeOutcome::Passed(_));
            if passed {
                self.counters.probes_passed.inc();
            } else {
                self.counters.probes_failed.inc();
            }
            for track in &mut self.tracks {
                track.layers.on_probe(now, passed);
            }
            return;
        }
        let wanted = self.tracks.iter().find_map(|t| t.layers.probe_wanted());
        match (wanted, twcc.prober.active()) {
            (Some((target, current)), false) => {
                if twcc.prober.start(now, wall_us, target, current) {
                    self.counters.probes.inc();
                } else {
                    // The minute's probes are spent: as good as a failed one.
                    self.counters.probes_refused.inc();
                    for track in &mut self.tracks {
                        track.layers.on_probe(now, false);
                    }
                    return;
                }
            }
            (None, true) => {
                // Trouble (or a move) while it ran: the selector counts it as failed.
                self.counters.probes_failed.inc();
                twcc.prober.cancel();
            }
            _ => {}
        }
        self.send_padding(now, wall_us, out);
    }

    /// The probe's padding due now: padding-only packets on the video track, numbered in
    /// its sequence, only between frames (a padding packet inside a frame's run of sequence
    /// numbers would leave the frame incomplete).
    fn send_padding(&mut self, now: Instant, wall_us: u64, out: &mut Vec<Transmit>) {
        let (Some(to), Some(twcc)) = (self.remote, self.transport.as_mut()) else {
            return;
        };
        let due = twcc.prober.padding_due(now, wall_us);
        let Some(track) = self
            .tracks
            .iter_mut()
            .find(|t| t.kind == TrackKind::Video && t.transport_cc)
        else {
            return;
        };
        if due == 0 || !track.frame_ended || track.waiting_for_keyframe {
            return;
        }
        let Some((first, timestamp)) = track.rewriter.pad(due) else {
            return;
        };
        let mut payload = [0u8; PADDING_BYTES];
        payload[PADDING_BYTES - 1] = PADDING_BYTES as u8;
        for i in 0..due {
            let header = Header {
                version: 2,
                padding: true,
                payload_type: track.payload_type,
                sequence_number: first.wrapping_add(i),
                timestamp,
                ssrc: track.rewriter.ssrc(),
                ..Default::default()
            };
            let sealed = seal(
                self.local.as_mut(),
                Some(&mut *twcc),
                header,
                &payload,
                wall_us,
                |_| {},
            );
            if let Some(datagram) = sealed {
                track.packets = track.packets.wrapping_add(1);
                self.counters.probe_padding_bytes.add(datagram.len() as u64);
                self.counters.bytes_out.add(datagram.len() as u64);
                out.push((to, datagram));
            }
        }
        twcc.prober.on_padding_sent(due);
    }
}
