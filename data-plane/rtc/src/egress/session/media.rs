//! A player session's media path: each packet of the stream rewritten for the player, the
//! simulcast layer it follows, the catch-up after connecting, and SRTP sealing.

use strata_media::{MediaPacket, TrackId, TrackKind};

use super::super::layers::Admit;
use super::super::rtp::RtpView;
use super::transport::seal;
use super::{BACKLOG_MAX, CATCH_UP_PER_TICK, Session, Transmit};

impl Session {
    /// Sends one packet of the stream to this player, rewritten for it. `wall_us` is the
    /// wall-clock time in µs (for the rewriter across discontinuities).
    pub(crate) fn send_media(
        &mut self,
        packet: &MediaPacket,
        wall_us: u64,
        out: &mut Vec<Transmit>,
    ) {
        if !self.media_ready {
            return;
        }
        if self.backlog.is_empty() && self.pacer.ready(wall_us) {
            let sent = self.send_now(packet, wall_us, out);
            self.pacer.spend(sent);
            return;
        }
        // Catching up, or paced: live packets wait their turn, in order (only those the
        // player is sent).
        if self.track_index(packet.track).is_none() {
            return;
        }
        let paced_full = !self.catching_up && self.backlog_bytes > self.pacer.queue_limit();
        if self.backlog.len() >= BACKLOG_MAX || paced_full {
            // Drop what waits; each track resumes at its next keyframe.
            self.backlog.clear();
            self.backlog_bytes = 0;
            self.catching_up = false;
            self.mark_all_gaps();
            return;
        }
        self.backlog_bytes += packet.rtp.len();
        self.backlog.push_back(packet.clone());
    }

    /// Starts a player that just connected on `group` (the stream's packets from its last
    /// resume point), paced by [`Session::catch_up`].
    pub(crate) fn start_catch_up(&mut self, group: &[MediaPacket]) {
        self.backlog.extend(group.iter().cloned());
        self.backlog_bytes += group.iter().map(|p| p.rtp.len()).sum::<usize>();
        self.catching_up = true;
    }

    /// Sends the next packets of the backlog (catch-up, or what the pacer held back): at
    /// most [`CATCH_UP_PER_TICK`], and only while the pacer allows.
    pub(crate) fn catch_up(&mut self, wall_us: u64, out: &mut Vec<Transmit>) {
        for _ in 0..CATCH_UP_PER_TICK {
            if !self.pacer.ready(wall_us) {
                return;
            }
            let Some(packet) = self.backlog.pop_front() else {
                self.catching_up = false;
                return;
            };
            self.backlog_bytes = self.backlog_bytes.saturating_sub(packet.rtp.len());
            let sent = self.send_now(&packet, wall_us, out);
            self.pacer.spend(sent);
        }
        if self.backlog.is_empty() {
            self.catching_up = false;
        }
    }

    /// The player's track that `track` (a stream track, or one of its simulcast layers) feeds.
    fn track_index(&self, track: TrackId) -> Option<usize> {
        self.tracks
            .iter()
            .position(|t| t.id == track || t.layers.carries(track))
    }

    /// Rewrites, seals and queues one packet; returns the bytes sent (0 for none).
    fn send_now(&mut self, packet: &MediaPacket, wall_us: u64, out: &mut Vec<Transmit>) -> usize {
        let Some(to) = self.remote else { return 0 };
        let Some(index) = self.track_index(packet.track) else {
            return 0;
        };
        let Some(view) = RtpView::parse(&packet.rtp) else {
            return 0;
        };
        let track = &mut self.tracks[index];
        match track.layers.admit(packet.track, packet.keyframe) {
            Admit::Current => {}
            Admit::Switched => {
                // The target layer's keyframe: the rewriter sees its SSRC and starts a run.
                track.id = packet.track;
                track.waiting_for_keyframe = false;
            }
            Admit::Drop => return 0,
        }
        if track.waiting_for_keyframe {
            if !packet.keyframe {
                return 0;
            }
            track.waiting_for_keyframe = false;
        }
        let out_ids =
            track
                .rewriter
                .rewrite(view.ssrc, view.sequence_number, view.timestamp, wall_us);
        let header = rtc::rtp::header::Header {
            version: 2,
            marker: view.marker,
            payload_type: track.payload_type,
            sequence_number: out_ids.sequence_number,
            timestamp: out_ids.timestamp,
            ssrc: out_ids.ssrc,
            ..Default::default()
        };
        let payload = view.payload(&packet.rtp);
        track.packets = track.packets.wrapping_add(1);
        track.octets = track.octets.wrapping_add(payload.len() as u32);
        track.frame_ended = view.marker;
        let vp8 = &mut track.vp8;
        let twcc = self.transport.as_mut().filter(|_| track.transport_cc);
        let sealed = seal(self.local.as_mut(), twcc, header, payload, wall_us, |p| {
            if let Some(ids) = vp8 {
                ids.rewrite(view.ssrc, p);
            }
        });
        let Some(datagram) = sealed else { return 0 };
        let len = datagram.len();
        self.counters.packets_out.inc();
        self.counters.bytes_out.add(len as u64);
        out.push((to, datagram));
        len
    }

    /// Declares that packets were skipped (the loop's sink fell behind): the next packet of
    /// each track starts a new run, and video waits for a keyframe.
    pub(crate) fn mark_all_gaps(&mut self) {
        for t in &mut self.tracks {
            t.rewriter.mark_gap();
            if t.kind == TrackKind::Video {
                t.waiting_for_keyframe = true;
            }
        }
    }
}
