//! A player session's RTCP: feedback in (keyframe requests, NACKs answered from the stream's
//! history within the budget, receiver reports for the RTT) and sender reports out.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::source_description::{
    SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem,
};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

use super::super::history::History;
use super::super::nack::NackVerdict;
use super::super::rtp::RtpView;
use super::transport::seal;
use super::{Session, SessionEvent, Transmit};

impl Session {
    pub(super) fn handle_rtcp(
        &mut self,
        now: Instant,
        wall_us: u64,
        data: &[u8],
        history: &History,
        out: &mut Vec<Transmit>,
        events: &mut Vec<SessionEvent>,
    ) {
        let Some(remote) = self.remote_srtcp.as_mut() else {
            return;
        };
        let Ok(plain) = remote.decrypt_rtcp(data) else {
            self.counters.refused_datagrams.inc();
            return;
        };
        let plain = plain.freeze();
        // Transport-cc feedback is read by our own bounded parser (`twcc.rs`), never by the
        // `rtc` crate's (which allocates per status a packet claims); the rest of the compound
        // packet by the `rtc` crate's.
        let (mut feedback, mut others) = (0usize, 0usize);
        for (range, twcc) in compound(&plain) {
            if twcc {
                feedback += 1;
                self.on_transport_feedback(now, &plain[range]);
            } else {
                others += 1;
            }
        }
        let mut rest = match (feedback, others) {
            (_, 0) => return,
            (0, _) => plain,
            _ => {
                let mut rest = bytes::BytesMut::with_capacity(plain.len());
                for (range, _) in compound(&plain).filter(|(_, twcc)| !twcc) {
                    rest.extend_from_slice(&plain[range]);
                }
                rest.freeze()
            }
        };
        let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut rest) else {
            return;
        };
        for packet in &packets {
            self.handle_rtcp_packet(now, wall_us, packet.as_ref(), history, out, events);
        }
    }

    fn handle_rtcp_packet(
        &mut self,
        now: Instant,
        wall_us: u64,
        packet: &dyn rtc::rtcp::packet::Packet,
        history: &History,
        out: &mut Vec<Transmit>,
        events: &mut Vec<SessionEvent>,
    ) {
        let any = packet.as_any();
        if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
            self.keyframe_request(pli.media_ssrc, events);
        } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
            for entry in &fir.fir {
                self.keyframe_request(entry.ssrc, events);
            }
        } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
            self.handle_nack(now, wall_us, nack, history, out);
        } else if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
            let bps = remb.bitrate.max(0.0) as u64;
            for track in &mut self.tracks {
                track.layers.on_estimate(now, bps);
            }
        } else if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
            for report in &rr.reports {
                if let Some(track) = self
                    .tracks
                    .iter_mut()
                    .find(|t| t.rewriter.ssrc() == report.ssrc)
                {
                    track
                        .layers
                        .on_loss(now, f32::from(report.fraction_lost) / 256.0);
                }
                if report.last_sender_report != 0 {
                    let now_mid = (ntp_time(wall_us) >> 16) as u32;
                    let ticks = now_mid
                        .wrapping_sub(report.last_sender_report)
                        .wrapping_sub(report.delay);
                    if ticks < 65_536 * 10 {
                        self.rtt =
                            Some(Duration::from_micros(u64::from(ticks) * 1_000_000 / 65_536));
                    }
                }
            }
        }
    }

    fn keyframe_request(&mut self, ssrc: u32, events: &mut Vec<SessionEvent>) {
        if let Some(track) = self.tracks.iter().find(|t| t.rewriter.ssrc() == ssrc) {
            self.counters.keyframe_requests.inc();
            events.push(SessionEvent::KeyframeRequest(track.id));
        }
    }

    fn handle_nack(
        &mut self,
        now: Instant,
        wall_us: u64,
        nack: &TransportLayerNack,
        history: &History,
        out: &mut Vec<Transmit>,
    ) {
        let Some(index) = self
            .tracks
            .iter()
            .position(|t| t.rewriter.ssrc() == nack.media_ssrc)
        else {
            return;
        };
        let Some(to) = self.remote else { return };
        let rtt = self.rtt.unwrap_or(Duration::from_millis(50));
        for pair in &nack.nacks {
            for out_seq in pair.packet_list() {
                self.counters.nacked_packets.inc();
                let track = &self.tracks[index];
                let Some(origin) = track.rewriter.origin_of(out_seq) else {
                    self.counters.nack_unknown.inc();
                    continue;
                };
                let Some(packet) = history.get(track.id, origin.in_ssrc, origin.in_seq) else {
                    self.counters.nack_unknown.inc();
                    continue;
                };
                let Some(view) = RtpView::parse(&packet.rtp) else {
                    continue;
                };
                let payload = view.payload(&packet.rtp);
                match self
                    .nack
                    .admit(now, track.id, out_seq, payload.len() + 12, rtt)
                {
                    NackVerdict::Send => {}
                    NackVerdict::Duplicate => {
                        self.counters.nack_duplicates.inc();
                        continue;
                    }
                    NackVerdict::OverBudget => {
                        self.counters.nack_over_budget.inc();
                        continue;
                    }
                }
                let header = rtc::rtp::header::Header {
                    version: 2,
                    marker: view.marker,
                    payload_type: track.payload_type,
                    sequence_number: out_seq,
                    timestamp: view.timestamp.wrapping_add(origin.ts_offset),
                    ssrc: track.rewriter.ssrc(),
                    ..Default::default()
                };
                let stamp = track.transport_cc;
                let vp8 = &self.tracks[index].vp8;
                let twcc = self.transport.as_mut().filter(|_| stamp);
                let sealed = seal(self.local.as_mut(), twcc, header, payload, wall_us, |p| {
                    if let Some(ids) = vp8 {
                        ids.retransmit(view.ssrc, p);
                    }
                });
                if let Some(datagram) = sealed {
                    self.counters.retransmitted_packets.inc();
                    self.counters.retransmitted_bytes.add(datagram.len() as u64);
                    self.counters.bytes_out.add(datagram.len() as u64);
                    out.push((to, datagram));
                }
            }
        }
    }

    pub(super) fn sender_reports(&mut self, wall_us: u64, out: &mut Vec<Transmit>) {
        let Some(to) = self.remote else { return };
        let ntp = ntp_time(wall_us);
        let mut packets: Vec<Box<dyn rtc::rtcp::packet::Packet>> = Vec::new();
        for track in &self.tracks {
            let Some((last_ts, last_wall)) = track.rewriter.last_output() else {
                continue;
            };
            let elapsed = wall_us.saturating_sub(last_wall);
            let ticks = elapsed.saturating_mul(u64::from(track.clock_rate)) / 1_000_000;
            packets.push(Box::new(SenderReport {
                ssrc: track.rewriter.ssrc(),
                ntp_time: ntp,
                rtp_time: last_ts.wrapping_add(ticks as u32),
                packet_count: track.packets,
                octet_count: track.octets,
                ..Default::default()
            }));
        }
        if packets.is_empty() {
            return;
        }
        packets.push(Box::new(SourceDescription {
            chunks: self
                .tracks
                .iter()
                .map(|t| SourceDescriptionChunk {
                    source: t.rewriter.ssrc(),
                    items: vec![SourceDescriptionItem {
                        sdes_type: SdesType::SdesCname,
                        text: Bytes::from_static(b"strata"),
                    }],
                })
                .collect(),
        }));
        let Ok(plain) = rtc::rtcp::packet::marshal(&packets) else {
            return;
        };
        if let Some(local) = self.local.as_mut()
            && let Ok(sealed) = local.encrypt_rtcp(&plain)
        {
            self.counters.bytes_out.add(sealed.len() as u64);
            out.push((to, sealed.freeze()));
        }
    }
}

/// The packets of a compound RTCP packet: each one's byte range, and whether it is
/// transport-cc feedback (RTPFB, FMT 15). Stops at the first header that does not fit.
fn compound(data: &[u8]) -> impl Iterator<Item = (std::ops::Range<usize>, bool)> + '_ {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let header = data.get(pos..pos + 4)?;
        let len = 4 * (usize::from(u16::from_be_bytes([header[2], header[3]])) + 1);
        let range = pos..pos.checked_add(len).filter(|end| *end <= data.len())?;
        pos = range.end;
        Some((range, header[1] == 205 && header[0] & 0x1f == 15))
    })
}

/// NTP time of a wall-clock time in µs since the Unix epoch (RFC 3550 §4: seconds since 1900
/// in the high 32 bits, fraction in the low).
fn ntp_time(wall_us: u64) -> u64 {
    const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
    let secs = (wall_us / 1_000_000).wrapping_add(NTP_UNIX_OFFSET);
    let frac = ((wall_us % 1_000_000) << 32) / 1_000_000;
    (secs << 32) | frac
}
