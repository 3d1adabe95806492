//! A WHIP publisher sending simulcast: one video section with up to three encodings
//! (`a=rid:low|mid|high send`, `a=simulcast:send low;mid;high`), each fed with its own
//! pre-encoded RTP, plus plain tracks beside it (audio).
//!
//! Each packet of a layer goes out with the layer's SSRC and the `mid` and `rid` header
//! extensions, the way a browser sends simulcast: the node's stack maps an SSRC to its rid
//! through them (the SSRCs are not in the offer).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use bytes::Bytes;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use strata_media::{Layer, TrackId, TrackInfo, TrackKind};
use tokio::sync::{Mutex, mpsc};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::{MediaEngine, Registry};
use webrtc::rtp_transceiver::RtpTransceiver;

use super::outgoing::outgoing;
use super::{ClientConfig, ClientPc};
use crate::RtcError;
use crate::codec::{Codec, codec_parameters};
use crate::interceptor::{is_keyframe_request, with_keyframe_requests};
use crate::publisher::codec_kind;

const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
const RID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";

/// One encoding (a layer) or one plain track.
struct Stream {
    info: TrackInfo,
    codec: Codec,
    ssrc: u32,
    /// The layer's rid; `None` for a plain track.
    rid: Option<&'static str>,
    /// Index into `Senders`.
    sender: usize,
}

/// A sender (one per section) and what the answer settled for it.
struct Sender {
    local: Arc<TrackLocalStaticRTP>,
    transceiver: Arc<dyn RtpTransceiver>,
    payload_type: AtomicU8,
    /// (mid value, mid extension id, rid extension id), once negotiated.
    ext: std::sync::Mutex<Option<(Bytes, u8, u8)>>,
}

/// A WHIP publisher sending the video tracks that carry a [`TrackInfo::layer`] as simulcast
/// encodings of one section and every other track as a section of its own.
pub struct SimulcastPublisher {
    pc: ClientPc,
    streams: Vec<Stream>,
    senders: Vec<Sender>,
    keyframe_requests: Mutex<mpsc::Receiver<TrackId>>,
}

impl SimulcastPublisher {
    /// A publisher for `tracks`: the video tracks with a layer (at most three, one per
    /// layer, one codec) become the encodings `low`/`mid`/`high` of one video section.
    pub async fn new(
        tracks: &[TrackInfo],
        config: &ClientConfig,
    ) -> Result<SimulcastPublisher, RtcError> {
        let mut layered: Vec<&TrackInfo> = tracks.iter().filter(|t| t.layer.is_some()).collect();
        layered.sort_by_key(|t| t.layer);
        layered.dedup_by_key(|t| t.layer);
        if layered.is_empty() || layered.iter().any(|t| t.kind != TrackKind::Video) {
            return Err(RtcError::Config(
                "a simulcast publisher needs video tracks with layers".into(),
            ));
        }
        let mut media_engine = MediaEngine::default();
        let mut registered: Vec<(Codec, u8)> = Vec::new();
        for info in tracks {
            let codec = Codec::from_mime(&info.mime).ok_or(RtcError::NoUsableCodec)?;
            if registered.contains(&(codec, info.payload_type)) {
                continue;
            }
            registered.push((codec, info.payload_type));
            media_engine.register_codec(
                codec_parameters(codec, info.payload_type, info.channels, &info.fmtp),
                codec_kind(info.kind),
            )?;
        }
        // The default interceptors register the mid, rid and repaired-rid extensions too.
        let registry = register_default_interceptors(Registry::new(), &mut media_engine)?;
        let registry = with_keyframe_requests(registry);
        let (pc, _events) = ClientPc::build(media_engine, registry, config, false).await?;
        let (requests_tx, requests) = mpsc::channel(64);
        let mut publisher = SimulcastPublisher {
            pc,
            streams: Vec::new(),
            senders: Vec::new(),
            keyframe_requests: Mutex::new(requests),
        };
        publisher.add_section(&layered, requests_tx.clone()).await?;
        for info in tracks.iter().filter(|t| t.layer.is_none()) {
            publisher.add_section(&[info], requests_tx.clone()).await?;
        }
        Ok(publisher)
    }

    /// Adds one send-only section carrying `tracks` (several: simulcast encodings).
    async fn add_section(
        &mut self,
        tracks: &[&TrackInfo],
        requests: mpsc::Sender<TrackId>,
    ) -> Result<(), RtcError> {
        let first = tracks.first().ok_or(RtcError::NoUsableCodec)?;
        let codec = Codec::from_mime(&first.mime).ok_or(RtcError::NoUsableCodec)?;
        let params = codec_parameters(codec, first.payload_type, first.channels, &first.fmtp);
        let simulcast = first.layer.is_some();
        let mut encodings = Vec::new();
        let mut streams = Vec::new();
        for info in tracks {
            let ssrc = rand::random::<u32>();
            let rid = info.layer.filter(|_| simulcast).map(Layer::as_str);
            encodings.push(RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    rid: rid.unwrap_or_default().to_owned(),
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: params.rtp_codec.clone(),
                ..Default::default()
            });
            streams.push(Stream {
                info: (*info).clone(),
                codec,
                ssrc,
                rid,
                sender: self.senders.len(),
            });
        }
        let (kind, name) = match first.kind {
            TrackKind::Audio => (RtpCodecKind::Audio, "audio"),
            TrackKind::Video => (RtpCodecKind::Video, "video"),
        };
        let id = format!("{name}-{}", first.id);
        let local = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "strata-client".to_owned(),
            id.clone(),
            id,
            kind,
            encodings,
        )));
        let transceiver = self.pc.add_sendonly(&local).await?;
        let ssrcs: Vec<(u32, TrackId)> = streams.iter().map(|s| (s.ssrc, s.info.id)).collect();
        tokio::spawn(read_feedback(Arc::clone(&local), ssrcs, requests));
        self.senders.push(Sender {
            local,
            transceiver,
            payload_type: AtomicU8::new(first.payload_type),
            ext: std::sync::Mutex::new(None),
        });
        self.streams.extend(streams);
        Ok(())
    }

    /// Creates the local offer (ICE gathered, no trickle needed).
    pub async fn offer(&self) -> Result<String, RtcError> {
        self.pc.offer().await
    }

    /// Applies the server's answer: payload types, the `mid` and extension ids to send.
    pub async fn set_answer(&self, answer_sdp: &str) -> Result<(), RtcError> {
        self.pc.set_answer(answer_sdp).await?;
        for (index, sender) in self.senders.iter().enumerate() {
            let Some(rtp_sender) = sender.transceiver.sender().await? else {
                continue;
            };
            let params = rtp_sender.get_parameters().await?;
            if let Some(stream) = self.streams.iter().find(|s| s.sender == index)
                && let Some(c) = params
                    .rtp_parameters
                    .codecs
                    .iter()
                    .find(|c| Codec::from_mime(&c.rtp_codec.mime_type) == Some(stream.codec))
            {
                sender.payload_type.store(c.payload_type, Ordering::Relaxed);
            }
            let ext_id = |uri: &str| {
                params
                    .rtp_parameters
                    .header_extensions
                    .iter()
                    .find(|e| e.uri == uri)
                    .map(|e| e.id as u8)
            };
            let mid = sender.transceiver.mid().await?;
            if let (Some(mid), Some(mid_id), Some(rid_id)) = (mid, ext_id(MID_URI), ext_id(RID_URI))
                && let Ok(mut ext) = sender.ext.lock()
            {
                *ext = Some((Bytes::from(mid.into_bytes()), mid_id, rid_id));
            }
        }
        let layered = self.streams.iter().any(|s| s.rid.is_some());
        let negotiated = self
            .senders
            .first()
            .and_then(|s| s.ext.lock().ok().map(|e| e.is_some()))
            .unwrap_or(false);
        if layered && !negotiated {
            return Err(RtcError::OfferRejected(
                "the answer did not accept the mid and rid header extensions".into(),
            ));
        }
        Ok(())
    }

    /// Sends one pre-encoded RTP packet of `track` (a layer or a plain track) with that
    /// stream's SSRC, the negotiated payload type and, for a layer, `mid` and `rid`;
    /// sequence number and timestamp are kept.
    pub async fn send_packet(&self, track: TrackId, rtp_packet: &[u8]) -> Result<(), RtcError> {
        let stream = self.pc.sending(&self.streams, track, |s| s.info.id)?;
        let sender = self
            .senders
            .get(stream.sender)
            .ok_or(RtcError::UnknownTrack(track))?;
        let pt = sender.payload_type.load(Ordering::Relaxed);
        let mut packet = outgoing(rtp_packet, stream.ssrc, pt)?;
        let ext = sender.ext.lock().ok().and_then(|e| e.clone());
        if let (Some(rid), Some((mid, mid_id, rid_id))) = (stream.rid, ext) {
            let set = |h: &mut rtp::header::Header, id: u8, v: Bytes| {
                h.set_extension(id, v)
                    .map_err(|e| RtcError::MalformedRtp(e.to_string()))
            };
            set(&mut packet.header, mid_id, mid)?;
            set(
                &mut packet.header,
                rid_id,
                Bytes::from_static(rid.as_bytes()),
            )?;
        }
        sender.local.write_rtp(packet).await?;
        Ok(())
    }

    publishing_client!();
}

/// Forwards keyframe requests about any of `ssrcs` as the track they name (the first
/// stream's when the request names none of them).
async fn read_feedback(
    local: Arc<TrackLocalStaticRTP>,
    ssrcs: Vec<(u32, TrackId)>,
    requests: mpsc::Sender<TrackId>,
) {
    while let Some(event) = local.poll().await {
        let TrackLocalEvent::OnRtcpPacket(packets) = event else {
            continue;
        };
        for p in packets.iter().filter(|p| is_keyframe_request(p.as_ref())) {
            let named = p.destination_ssrc();
            let track = ssrcs
                .iter()
                .find(|(ssrc, _)| named.contains(ssrc))
                .or(ssrcs.first())
                .map(|(_, t)| *t);
            if let Some(track) = track {
                let _ = requests.try_send(track);
            }
        }
    }
}
