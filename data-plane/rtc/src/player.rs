//! WHEP egress: one player's peer connection, fed with [`MediaPacket`]s of a stream.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpEncodingParameters, RtpCodecKind};
use rtc::shared::marshal::{MarshalSize, Unmarshal};
use strata_media::{Catalog, MediaPacket, TrackId, TrackInfo, TrackKind};
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, debug, info, instrument};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::{MediaEngine, RTCSessionDescription, Registry};

use crate::codec::{Codec, codec_parameters, track_codec};
use crate::interceptor::{is_keyframe_request, with_keyframe_requests};
use crate::publisher::codec_kind;
use crate::rewriter::RtpRewriter;
use crate::sdp::{self, OfferedCodec};
use crate::session::{self, SessionCore, SessionState, wall_clock_us};
use crate::{RtcEngine, RtcError};

/// What became of a packet handed to [`PlayerHandle::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// Queued for the player.
    Queued,
    /// Dropped: the connection is not (yet, or any more) connected.
    NotConnected,
    /// Dropped: the player does not receive this track.
    UnknownTrack,
    /// Dropped: the player's video starts with a keyframe, and this is not one.
    WaitingForKeyframe,
    /// Dropped: the player's queue is full (its connection is slower than the stream).
    QueueFull,
    /// Dropped: not an RTP packet with a payload.
    Malformed,
}

/// Counters of a player session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlayerStats {
    /// RTP packets handed to the WebRTC stack.
    pub packets_sent: u64,
    /// Bytes of those packets (RTP header and payload).
    pub bytes_sent: u64,
    /// Packets dropped before sending (see [`SendOutcome`]).
    pub packets_dropped: u64,
    /// Keyframe requests (PLI, FIR) received from the player.
    pub keyframe_requests: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    bytes: AtomicU64,
    dropped: AtomicU64,
    keyframe_requests: AtomicU64,
}

struct PlayerTrack {
    id: TrackId,
    payload_type: u8,
    rewriter: Mutex<RtpRewriter>,
    waiting_for_keyframe: AtomicBool,
    queue: mpsc::Sender<rtp::Packet>,
}

struct Inner {
    core: SessionCore,
    tracks: Vec<PlayerTrack>,
    counters: Arc<Counters>,
}

/// Control of a player session; cheap to clone, so a stream's fan-out can own one per player.
/// The connection closes when the session and every handle are dropped.
#[derive(Clone)]
pub struct PlayerHandle {
    inner: Arc<Inner>,
}

/// A WHEP player's session.
pub struct PlayerSession {
    handle: PlayerHandle,
    keyframe_requests: mpsc::Receiver<TrackId>,
}

impl PlayerSession {
    /// The next keyframe request: the player sent PLI or FIR for this track, or its connection
    /// just came up and its video waits for a keyframe. `None` once the session is closed.
    pub async fn keyframe_request(&mut self) -> Option<TrackId> {
        tokio::select! {
            biased;
            track = self.keyframe_requests.recv() => track,
            () = self.handle.closed() => self.keyframe_requests.try_recv().ok(),
        }
    }

    /// A handle for the fan-out and for control from other tasks.
    pub fn handle(&self) -> PlayerHandle {
        self.handle.clone()
    }

    /// Splits the session into its handle and its keyframe-request receiver.
    pub fn into_parts(self) -> (PlayerHandle, mpsc::Receiver<TrackId>) {
        (self.handle, self.keyframe_requests)
    }

    /// See [`PlayerHandle::send`].
    pub fn send(&self, packet: &MediaPacket) -> SendOutcome {
        self.handle.send(packet)
    }

    /// See [`PlayerHandle::add_remote_candidates`].
    pub async fn add_remote_candidates(&self, sdpfrag: &str) -> Result<(), RtcError> {
        self.handle.add_remote_candidates(sdpfrag).await
    }

    /// See [`PlayerHandle::closed`].
    pub async fn closed(&self) {
        self.handle.closed().await
    }

    /// See [`PlayerHandle::close`].
    pub async fn close(&self) {
        self.handle.close().await
    }

    /// See [`PlayerHandle::stats`].
    pub fn stats(&self) -> PlayerStats {
        self.handle.stats()
    }
}

impl PlayerHandle {
    /// Sends one packet to the player without waiting: rewrites payload type, SSRC, sequence
    /// number and timestamp for this player and queues it. Dropped (and counted) unless
    /// connected; video is dropped until its first keyframe.
    pub fn send(&self, packet: &MediaPacket) -> SendOutcome {
        let outcome = self.try_send(packet);
        if outcome != SendOutcome::Queued {
            self.inner.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    fn try_send(&self, packet: &MediaPacket) -> SendOutcome {
        if self.inner.core.state() != SessionState::Connected {
            return SendOutcome::NotConnected;
        }
        let Some(track) = self.inner.tracks.iter().find(|t| t.id == packet.track) else {
            return SendOutcome::UnknownTrack;
        };
        if track.waiting_for_keyframe.load(Ordering::Acquire) {
            if !packet.keyframe {
                return SendOutcome::WaitingForKeyframe;
            }
            track.waiting_for_keyframe.store(false, Ordering::Release);
        }
        let Ok(mut rtp) = rtp::Packet::unmarshal(&mut packet.rtp.clone()) else {
            return SendOutcome::Malformed;
        };
        if rtp.payload.is_empty() {
            return SendOutcome::Malformed;
        }
        let out = match track.rewriter.lock() {
            Ok(mut rewriter) => rewriter.rewrite(
                rtp.header.ssrc,
                rtp.header.sequence_number,
                rtp.header.timestamp,
                wall_clock_us(),
            ),
            Err(_) => return SendOutcome::Malformed,
        };
        let header = &mut rtp.header;
        header.ssrc = out.ssrc;
        header.sequence_number = out.sequence_number;
        header.timestamp = out.timestamp;
        header.payload_type = track.payload_type;
        // Extension ids were negotiated with the publisher, not with this player.
        header.extension = false;
        header.extensions.clear();
        header.extensions_padding = 0;
        header.padding = false;
        header.csrc.clear();
        match track.queue.try_send(rtp) {
            Ok(()) => SendOutcome::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => SendOutcome::QueueFull,
            Err(mpsc::error::TrySendError::Closed(_)) => SendOutcome::NotConnected,
        }
    }

    /// Declares that packets of `track` were skipped: the next packet starts a new run for
    /// the rewriter, continuing the player's sequence numbers and timestamps.
    pub fn mark_gap(&self, track: TrackId) {
        if let Some(t) = self.inner.tracks.iter().find(|t| t.id == track)
            && let Ok(mut rewriter) = t.rewriter.lock()
        {
            rewriter.mark_gap();
        }
    }

    /// The catalog tracks this player receives.
    pub fn tracks(&self) -> Vec<TrackId> {
        self.inner.tracks.iter().map(|t| t.id).collect()
    }

    /// The payload type negotiated with this player for `track`.
    pub fn payload_type(&self, track: TrackId) -> Option<u8> {
        let track = self.inner.tracks.iter().find(|t| t.id == track)?;
        Some(track.payload_type)
    }

    /// Where the session stands.
    pub fn state(&self) -> SessionState {
        self.inner.core.state()
    }

    /// A receiver of state changes.
    pub fn state_changes(&self) -> watch::Receiver<SessionState> {
        self.inner.core.status()
    }

    /// Applies trickled ICE candidates (WHEP `PATCH`, RFC 8840 `sdpfrag`).
    pub async fn add_remote_candidates(&self, sdpfrag: &str) -> Result<(), RtcError> {
        self.inner.core.add_remote_candidates(sdpfrag).await
    }

    /// Resolves once the connection has failed, timed out, or been closed by either side.
    pub async fn closed(&self) {
        self.inner.core.closed().await
    }

    /// Closes the connection (WHEP `DELETE`) and waits until it is closed.
    pub async fn close(&self) {
        self.inner.core.close().await
    }

    /// Counters so far.
    pub fn stats(&self) -> PlayerStats {
        let c = &self.inner.counters;
        PlayerStats {
            packets_sent: c.sent.load(Ordering::Relaxed),
            bytes_sent: c.bytes.load(Ordering::Relaxed),
            packets_dropped: c.dropped.load(Ordering::Relaxed),
            keyframe_requests: c.keyframe_requests.load(Ordering::Relaxed),
        }
    }
}

/// Catalog tracks matched to the player's offer, in offer order.
pub(crate) fn assign<'a>(
    offer: &'a sdp::ParsedOffer,
    catalog: &'a Catalog,
) -> Result<Vec<(&'a TrackInfo, Codec, &'a OfferedCodec)>, RtcError> {
    let receiving: Vec<_> = offer
        .media_sections()
        .filter(|s| s.direction.offerer_receives())
        .collect();
    if receiving.is_empty() {
        return Err(RtcError::NoMedia);
    }
    let mut assigned: Vec<(&TrackInfo, Codec, &OfferedCodec)> = Vec::new();
    for section in receiving {
        let candidate = catalog.tracks.iter().find_map(|track| {
            if Some(track.kind) != section.kind || assigned.iter().any(|(t, ..)| t.id == track.id) {
                return None;
            }
            let codec = track_codec(track)?;
            let offered = section
                .codecs
                .iter()
                .find(|c| c.codec == codec && codec.player_accepts(&track.fmtp, &c.fmtp))?;
            Some((track, codec, offered))
        });
        if let Some(found) = candidate {
            assigned.push(found);
        }
    }
    if assigned.is_empty() {
        return Err(RtcError::NoCommonCodec);
    }
    Ok(assigned)
}

#[instrument(name = "rtc.player", skip_all)]
pub(crate) async fn accept(
    engine: &RtcEngine,
    offer_sdp: &str,
    catalog: &Catalog,
) -> Result<(PlayerSession, String), RtcError> {
    let (max_bytes, max_lines) = engine.sdp_limits();
    let offer = sdp::parse_offer(offer_sdp, max_bytes, max_lines)?;
    let assigned = assign(&offer, catalog)?;

    let mut media_engine = MediaEngine::default();
    for (track, codec, offered) in &assigned {
        media_engine.register_codec(
            codec_parameters(*codec, offered.payload_type, track.channels, &offered.fmtp),
            codec_kind(track.kind),
        )?;
    }
    let registry = register_default_interceptors(Registry::new(), &mut media_engine)?;
    let registry = with_keyframe_requests(registry);
    let mut built = engine.new_pc(media_engine, registry, false).await?;
    let pc = Arc::clone(&built.pc);
    let result = async {
        let description = RTCSessionDescription::offer(offer_sdp.to_owned())
            .map_err(|e| RtcError::InvalidSdp(e.to_string()))?;
        pc.set_remote_description(description)
            .await
            .map_err(|e| RtcError::OfferRejected(e.to_string()))?;
        let mut senders = Vec::new();
        for (track, codec, offered) in &assigned {
            let params =
                codec_parameters(*codec, offered.payload_type, track.channels, &offered.fmtp);
            let (kind, name) = match track.kind {
                TrackKind::Audio => (RtpCodecKind::Audio, "audio"),
                TrackKind::Video => (RtpCodecKind::Video, "video"),
            };
            let local = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                "strata".to_owned(),
                format!("strata-{name}-{}", track.id),
                format!("strata-{name}-{}", track.id),
                kind,
                vec![RTCRtpEncodingParameters {
                    codec: params.rtp_codec,
                    ..Default::default()
                }],
            )));
            let sender = pc
                .add_track(Arc::clone(&local) as Arc<dyn TrackLocal>)
                .await?;
            senders.push((local, sender));
        }
        let answer = session::answer(
            &pc,
            &mut built.events.gathered,
            &built.conn,
            engine.candidates(),
        )
        .await?;
        Ok::<_, RtcError>((senders, answer))
    }
    .await;
    let (senders, answer) = match result {
        Ok(done) => done,
        Err(e) => {
            let _ = pc.close().await;
            return Err(e);
        }
    };

    let counters = Arc::new(Counters::default());
    let queue_len = engine.config().queue_packets.max(1);
    let (keyframe_tx, keyframe_requests) = mpsc::channel(64);
    let mut tracks = Vec::new();
    for ((track, codec, offered), (local, sender)) in assigned.iter().zip(senders) {
        let params = sender.get_parameters().await?;
        let payload_type = params
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| Codec::from_mime(&c.rtp_codec.mime_type) == Some(*codec))
            .map_or(offered.payload_type, |c| c.payload_type);
        let ssrc = params
            .encodings
            .first()
            .and_then(|e| e.rtp_coding_parameters.ssrc)
            .ok_or(RtcError::Config("sender without SSRC".into()))?;
        let frame_ticks = codec.clock_rate()
            / if track.kind == TrackKind::Video {
                30
            } else {
                50
            };
        let (queue, rx) = mpsc::channel(queue_len);
        tokio::spawn(write_track(Arc::clone(&local), rx, Arc::clone(&counters)).in_current_span());
        tokio::spawn(
            read_feedback(local, track.id, keyframe_tx.clone(), Arc::clone(&counters))
                .in_current_span(),
        );
        debug!(track = track.id, payload_type, ssrc, "serving track");
        tracks.push(PlayerTrack {
            id: track.id,
            payload_type,
            rewriter: Mutex::new(RtpRewriter::new(ssrc, codec.clock_rate(), frame_ticks)),
            waiting_for_keyframe: AtomicBool::new(track.kind == TrackKind::Video),
            queue,
        });
    }

    let core = SessionCore::start(
        pc,
        built.events.state,
        engine.timeouts(),
        offer.ice_ufrag.clone(),
        engine.sdp_limits(),
        Some(built.conn),
    );
    // Once connected, the player's video needs a keyframe: ask for one right away.
    let video: Vec<TrackId> = assigned
        .iter()
        .filter(|(t, ..)| t.kind == TrackKind::Video)
        .map(|(t, ..)| t.id)
        .collect();
    let mut status = core.status();
    tokio::spawn(async move {
        if let Ok(state) = status.wait_for(|s| *s != SessionState::Connecting).await
            && *state == SessionState::Connected
        {
            for id in video {
                let _ = keyframe_tx.try_send(id);
            }
        }
    });
    info!(tracks = tracks.len(), "player accepted");
    let handle = PlayerHandle {
        inner: Arc::new(Inner {
            core,
            tracks,
            counters,
        }),
    };
    Ok((
        PlayerSession {
            handle,
            keyframe_requests,
        },
        answer,
    ))
}

async fn write_track(
    local: Arc<TrackLocalStaticRTP>,
    mut queue: mpsc::Receiver<rtp::Packet>,
    counters: Arc<Counters>,
) {
    let mut failures = 0u64;
    while let Some(packet) = queue.recv().await {
        let len = packet.marshal_size() as u64;
        match local.write_rtp(packet).await {
            Ok(()) => {
                counters.sent.fetch_add(1, Ordering::Relaxed);
                counters.bytes.fetch_add(len, Ordering::Relaxed);
            }
            Err(e) => {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                failures += 1;
                if failures.is_power_of_two() {
                    debug!(error = %e, failures, "writing RTP to player failed");
                }
            }
        }
    }
}

async fn read_feedback(
    local: Arc<TrackLocalStaticRTP>,
    track: TrackId,
    requests: mpsc::Sender<TrackId>,
    counters: Arc<Counters>,
) {
    while let Some(event) = local.poll().await {
        if let TrackLocalEvent::OnRtcpPacket(packets) = event
            && packets.iter().any(|p| is_keyframe_request(p.as_ref()))
        {
            counters.keyframe_requests.fetch_add(1, Ordering::Relaxed);
            // Requests coalesce: one pending per track is enough.
            let _ = requests.try_send(track);
        }
    }
}
