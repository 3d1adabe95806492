//! WHIP ingest: a publisher's peer connection, turned into a [`Catalog`] and a stream of
//! [`MediaPacket`]s.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::shared::marshal::Marshal;
use strata_media::{Catalog, Layer, MediaPacket, TrackId, TrackInfo};
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, debug, info, instrument, trace};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{MediaEngine, PeerConnection, Registry};

use crate::codec::{Codec, codec_parameters};
use crate::interceptor::with_keyframe_requests;
use crate::session::{self, SessionCore, SessionState, wall_clock_us};
use crate::{RtcEngine, RtcError, sdp};

/// Counters of a publisher session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// RTP packets received and queued.
    pub packets_received: u64,
    /// Bytes of those packets.
    pub bytes_received: u64,
    /// Packets dropped because [`PublisherSession::recv`] fell behind.
    pub packets_dropped: u64,
    /// Keyframe requests (PLI) sent to the publisher.
    pub keyframe_requests: u64,
}

#[derive(Default)]
struct Counters {
    packets: AtomicU64,
    bytes: AtomicU64,
    dropped: AtomicU64,
    plis: AtomicU64,
}

/// The remote track carrying a catalog track, and its SSRC (the target of keyframe requests).
type Remote = (Arc<dyn TrackRemote>, u32);

struct Ingest {
    catalog: Catalog,
    /// Catalog track of each (receiver, rid); the rid is `None` without simulcast.
    receivers: HashMap<(RTCRtpReceiverId, Option<String>), TrackId>,
    /// The remote track of each catalog track and its SSRC, once media flows.
    remotes: Mutex<HashMap<TrackId, Remote>>,
    packets: mpsc::Sender<MediaPacket>,
    counters: Counters,
}

struct Inner {
    core: SessionCore,
    ingest: Arc<Ingest>,
}

/// Control of a publisher session; cheap to clone. The connection closes when the session and
/// every handle are dropped.
#[derive(Clone)]
pub struct PublisherHandle {
    inner: Arc<Inner>,
}

/// A WHIP publisher's session: the negotiated [`Catalog`] and the packets it sends.
pub struct PublisherSession {
    handle: PublisherHandle,
    packets: mpsc::Receiver<MediaPacket>,
}

impl PublisherSession {
    /// The tracks negotiated with the publisher: one per media section it sends, with the
    /// codec and payload type it uses.
    pub fn catalog(&self) -> &Catalog {
        self.handle.catalog()
    }

    /// The next packet, or `None` once the session is closed and drained.
    pub async fn recv(&mut self) -> Option<MediaPacket> {
        tokio::select! {
            biased;
            packet = self.packets.recv() => packet,
            () = self.handle.closed() => self.packets.try_recv().ok(),
        }
    }

    /// A handle for control from other tasks (trickle ICE, keyframe requests, close).
    pub fn handle(&self) -> PublisherHandle {
        self.handle.clone()
    }

    /// Splits the session into its handle and its packet receiver. The receiver yields
    /// `None` only once the connection is gone; select on [`PublisherHandle::closed`] too.
    pub fn into_parts(self) -> (PublisherHandle, mpsc::Receiver<MediaPacket>) {
        (self.handle, self.packets)
    }

    /// See [`PublisherHandle::request_keyframe`].
    pub async fn request_keyframe(&self, track: TrackId) -> Result<(), RtcError> {
        self.handle.request_keyframe(track).await
    }

    /// See [`PublisherHandle::add_remote_candidates`].
    pub async fn add_remote_candidates(&self, sdpfrag: &str) -> Result<(), RtcError> {
        self.handle.add_remote_candidates(sdpfrag).await
    }

    /// See [`PublisherHandle::closed`].
    pub async fn closed(&self) {
        self.handle.closed().await
    }

    /// See [`PublisherHandle::close`].
    pub async fn close(&self) {
        self.handle.close().await
    }
}

impl PublisherHandle {
    /// The negotiated tracks.
    pub fn catalog(&self) -> &Catalog {
        &self.inner.ingest.catalog
    }

    /// Where the session stands.
    pub fn state(&self) -> SessionState {
        self.inner.core.state()
    }

    /// Asks the publisher for a keyframe on `track` (RTCP PLI). Before the track's first
    /// packet arrived there is nobody to ask yet: the first packets of a publisher are a
    /// keyframe anyway, so this succeeds without sending anything.
    pub async fn request_keyframe(&self, track: TrackId) -> Result<(), RtcError> {
        let ingest = &self.inner.ingest;
        if ingest.catalog.track(track).is_none() {
            return Err(RtcError::UnknownTrack(track));
        }
        if self.state() == SessionState::Closed {
            return Err(RtcError::Closed);
        }
        let remote = ingest
            .remotes
            .lock()
            .ok()
            .and_then(|remotes| remotes.get(&track).cloned());
        let Some((remote, media_ssrc)) = remote else {
            return Ok(());
        };
        remote
            .write_rtcp(vec![Box::new(PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc,
            })])
            .await?;
        ingest.counters.plis.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Applies trickled ICE candidates (WHIP `PATCH`, RFC 8840 `sdpfrag`).
    pub async fn add_remote_candidates(&self, sdpfrag: &str) -> Result<(), RtcError> {
        self.inner.core.add_remote_candidates(sdpfrag).await
    }

    /// Resolves once the connection has failed, timed out, or been closed by either side.
    pub async fn closed(&self) {
        self.inner.core.closed().await
    }

    /// A receiver of state changes.
    pub fn state_changes(&self) -> watch::Receiver<SessionState> {
        self.inner.core.status()
    }

    /// Closes the connection (WHIP `DELETE`) and waits until it is closed.
    pub async fn close(&self) {
        self.inner.core.close().await
    }

    /// Counters so far.
    pub fn stats(&self) -> PublisherStats {
        let c = &self.inner.ingest.counters;
        PublisherStats {
            packets_received: c.packets.load(Ordering::Relaxed),
            bytes_received: c.bytes.load(Ordering::Relaxed),
            packets_dropped: c.dropped.load(Ordering::Relaxed),
            keyframe_requests: c.plis.load(Ordering::Relaxed),
        }
    }
}

/// Where a catalog track comes from in the offer: its section's mid and, for a simulcast
/// layer, its rid.
pub(crate) type TrackSource = (Option<String>, Option<String>);

/// The catalog a publisher's offer implies: one track per media section it sends, in the
/// first supported codec it lists; a simulcast section gives one track per layer, lowest
/// first, each tagged with its layer.
pub(crate) fn catalog_of(
    offer: &sdp::ParsedOffer,
) -> Result<(Catalog, Vec<TrackSource>), RtcError> {
    let sending: Vec<_> = offer
        .media_sections()
        .filter(|s| s.direction.offerer_sends())
        .collect();
    if sending.is_empty() {
        return Err(RtcError::NoMedia);
    }
    if sending.iter().filter(|s| !s.layers.is_empty()).count() > 1 {
        return Err(RtcError::InvalidSdp(
            "simulcast is accepted for one video section only".into(),
        ));
    }
    let mut catalog = Catalog::default();
    let mut sources = Vec::new();
    for (section, codec) in sending
        .iter()
        .filter_map(|s| s.codecs.first().map(|c| (s, c)))
    {
        let layers: Vec<(Option<String>, Option<Layer>)> = if section.layers.is_empty() {
            vec![(None, None)]
        } else {
            section
                .layers
                .iter()
                .map(|(rid, layer)| (Some(rid.clone()), Some(*layer)))
                .collect()
        };
        for (rid, layer) in layers {
            let id = TrackId::try_from(catalog.tracks.len())
                .map_err(|_| RtcError::InvalidSdp("too many media sections".into()))?;
            catalog.tracks.push(TrackInfo {
                id,
                kind: codec.codec.kind(),
                mime: codec.codec.mime().to_owned(),
                clock_rate: codec.codec.clock_rate(),
                channels: codec.channels,
                fmtp: codec.fmtp.clone(),
                payload_type: codec.payload_type,
                layer,
            });
            sources.push((section.mid.clone(), rid));
        }
    }
    if catalog.tracks.is_empty() {
        return Err(RtcError::NoUsableCodec);
    }
    Ok((catalog, sources))
}

#[instrument(name = "rtc.publisher", skip_all)]
pub(crate) async fn accept(
    engine: &RtcEngine,
    offer_sdp: &str,
) -> Result<(PublisherSession, String), RtcError> {
    let (max_bytes, max_lines) = engine.sdp_limits();
    let offer = sdp::parse_offer(offer_sdp, max_bytes, max_lines)?;
    let (catalog, sources) = catalog_of(&offer)?;

    let (media_engine, registry) = media_engine_for(&catalog)?;
    let mut built = engine.new_pc(media_engine, registry, true).await?;
    let pc = Arc::clone(&built.pc);
    let answer = session::answer_offer(
        &pc,
        offer_sdp,
        &mut built.events.gathered,
        &built.conn,
        engine.candidates(),
    )
    .await?;
    let receivers = receivers_of(pc.as_ref(), &catalog, &sources).await;

    let (packets_tx, packets) = mpsc::channel(engine.config().queue_packets.max(1));
    let ingest = Arc::new(Ingest {
        catalog,
        receivers,
        remotes: Mutex::new(HashMap::new()),
        packets: packets_tx,
        counters: Counters::default(),
    });
    if let Some(tracks) = built.events.tracks.take() {
        spawn_track_readers(tracks, Arc::downgrade(&ingest));
    }
    let core = SessionCore::start(
        pc,
        built.events.state,
        engine.timeouts(),
        offer.ice_ufrag.clone(),
        engine.sdp_limits(),
        Some(built.conn),
    );
    info!(tracks = ?ingest.catalog.tracks.iter().map(|t| &t.mime).collect::<Vec<_>>(), "publisher accepted");
    let handle = PublisherHandle {
        inner: Arc::new(Inner { core, ingest }),
    };
    Ok((PublisherSession { handle, packets }, answer))
}

/// A media engine with only the catalog's codecs (negotiation cannot pick anything else) and
/// the interceptors a publisher needs.
fn media_engine_for(catalog: &Catalog) -> Result<(MediaEngine, Registry), RtcError> {
    let mut media_engine = MediaEngine::default();
    for track in &catalog.tracks {
        let codec = Codec::from_mime(&track.mime).ok_or(RtcError::NoUsableCodec)?;
        media_engine.register_codec(
            codec_parameters(codec, track.payload_type, track.channels, &track.fmtp),
            codec_kind(track.kind),
        )?;
    }
    // The default interceptors also register the mid, rid and repaired-rid header
    // extensions, through which the stack matches a simulcast layer's SSRC to its rid.
    let registry = register_default_interceptors(Registry::new(), &mut media_engine)?;
    Ok((media_engine, with_keyframe_requests(registry)))
}

/// The catalog track each (receiver, rid) carries, by the negotiated mids.
async fn receivers_of(
    pc: &dyn PeerConnection,
    catalog: &Catalog,
    sources: &[TrackSource],
) -> HashMap<(RTCRtpReceiverId, Option<String>), TrackId> {
    let mut receivers = HashMap::new();
    for transceiver in pc.get_transceivers().await {
        let Ok(Some(mid)) = transceiver.mid().await else {
            continue;
        };
        let receiver = RTCRtpReceiverId::from(transceiver.id());
        for (index, (_, rid)) in sources
            .iter()
            .enumerate()
            .filter(|(_, (m, _))| m.as_deref() == Some(mid.as_str()))
        {
            receivers.insert((receiver, rid.clone()), catalog.tracks[index].id);
        }
    }
    receivers
}

/// Reads each remote track the peer connection opens, for as long as the ingest lives.
fn spawn_track_readers(
    mut tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
    ingest: std::sync::Weak<Ingest>,
) {
    tokio::spawn(
        async move {
            while let Some(track) = tracks.recv().await {
                let Some(ingest) = ingest.upgrade() else {
                    break;
                };
                tokio::spawn(read_track(track, ingest).in_current_span());
            }
        }
        .in_current_span(),
    );
}

pub(crate) fn codec_kind(
    kind: strata_media::TrackKind,
) -> rtc::rtp_transceiver::rtp_sender::RtpCodecKind {
    use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
    match kind {
        strata_media::TrackKind::Audio => RtpCodecKind::Audio,
        strata_media::TrackKind::Video => RtpCodecKind::Video,
    }
}

/// Ingest state of one RTP stream (one SSRC) of a remote track.
struct Incoming {
    id: TrackId,
    codec: Codec,
    /// Timestamp of the last keyframe start: only the first packet of a keyframe is flagged
    /// (an SPS packet and the IDR slice after it share one timestamp).
    last_keyframe_ts: Option<u32>,
    /// Padding-only packets (bandwidth probes) are dropped; later packets are renumbered so
    /// the dropped ones leave no hole that players would report as loss and NACK in vain.
    padding_dropped: u16,
}

impl Incoming {
    /// The catalog track an opening RTP stream carries, if any (and not already open).
    fn open(
        ingest: &Ingest,
        track: &Arc<dyn TrackRemote>,
        init: &rtc::peer_connection::event::RTCTrackEventInit,
        open: &HashMap<u32, Incoming>,
    ) -> Option<Incoming> {
        let key = (init.receiver_id, init.rid.clone());
        let info = ingest
            .receivers
            .get(&key)
            .and_then(|id| ingest.catalog.track(*id));
        let Some(info) = info else {
            debug!(ssrc = init.ssrc, rid = ?init.rid, "RTP stream matches no catalog track");
            return None;
        };
        if open.values().any(|i| i.id == info.id) {
            debug!(
                ssrc = init.ssrc,
                track = info.id,
                "ignoring a second RTP stream of a track"
            );
            return None;
        }
        let codec = Codec::from_mime(&info.mime)?;
        if let Ok(mut remotes) = ingest.remotes.lock() {
            remotes.insert(info.id, (Arc::clone(track), init.ssrc));
        }
        debug!(track = info.id, ssrc = init.ssrc, layer = ?info.layer, mime = %info.mime, "media flowing");
        Some(Incoming {
            id: info.id,
            codec,
            last_keyframe_ts: None,
            padding_dropped: 0,
        })
    }

    /// The packet as it enters the cluster, or `None` for padding.
    fn packet(&mut self, mut packet: rtc::rtp::Packet) -> Option<MediaPacket> {
        if packet.payload.is_empty() {
            self.padding_dropped = self.padding_dropped.wrapping_add(1);
            return None;
        }
        packet.header.sequence_number = packet
            .header
            .sequence_number
            .wrapping_sub(self.padding_dropped);
        let mut keyframe = self.codec.is_keyframe(&packet.payload);
        if keyframe {
            let ts = packet.header.timestamp;
            keyframe = self.last_keyframe_ts != Some(ts);
            self.last_keyframe_ts = Some(ts);
        }
        packet.header.padding = false;
        let rtp = packet.marshal().ok()?;
        Some(MediaPacket {
            track: self.id,
            keyframe,
            ingest_us: wall_clock_us(),
            rtp: rtp.freeze(),
        })
    }
}

/// Turns one remote track's RTP into [`MediaPacket`]s: one RTP stream without simulcast,
/// one per layer (each its own catalog track) with it.
async fn read_track(track: Arc<dyn TrackRemote>, ingest: Arc<Ingest>) {
    // Bounded by the catalog: at most one entry per catalog track.
    let mut open: HashMap<u32, Incoming> = HashMap::new();
    while let Some(event) = track.poll().await {
        match event {
            TrackRemoteEvent::OnOpen(init) => {
                if open.contains_key(&init.ssrc) {
                    continue;
                }
                if let Some(incoming) = Incoming::open(&ingest, &track, &init, &open) {
                    open.insert(init.ssrc, incoming);
                }
            }
            TrackRemoteEvent::OnRtpPacket(packet) => {
                let Some(incoming) = open.get_mut(&packet.header.ssrc) else {
                    continue; // not a stream of the catalog (e.g. a layer beyond it)
                };
                let id = incoming.id;
                let Some(media) = incoming.packet(packet) else {
                    continue;
                };
                let len = media.rtp.len() as u64;
                match ingest.packets.try_send(media) {
                    Ok(()) => {
                        ingest.counters.packets.fetch_add(1, Ordering::Relaxed);
                        ingest.counters.bytes.fetch_add(len, Ordering::Relaxed);
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        ingest.counters.dropped.fetch_add(1, Ordering::Relaxed);
                        trace!(track = id, "ingest queue full, dropping packet");
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => break,
                }
            }
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
}
