//! A WHIP publisher sending pre-encoded RTP.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpEncodingParameters, RtpCodecKind};
use strata_media::{Catalog, TrackId, TrackInfo, TrackKind};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::{MediaEngine, Registry};

use super::outgoing::outgoing;
use super::{ClientConfig, ClientPc, exchange_with};
use crate::RtcError;
use crate::codec::{Codec, codec_parameters};
use crate::fixture::{Clip, ClipPacer};
use crate::interceptor::{is_keyframe_request, with_keyframe_requests};
use crate::publisher::codec_kind;

struct Track {
    info: TrackInfo,
    codec: Codec,
    local: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    /// Payload type the answer settled on.
    payload_type: AtomicU8,
}

/// A WHIP publisher: one send-only transceiver per track, fed with RTP packets.
pub struct Publisher {
    pc: ClientPc,
    tracks: Vec<Track>,
    keyframe_requests: tokio::sync::Mutex<mpsc::Receiver<TrackId>>,
}

impl Publisher {
    /// A publisher offering `tracks` (their codec, fmtp and payload type; ids as given).
    pub async fn new(tracks: &[TrackInfo], config: &ClientConfig) -> Result<Publisher, RtcError> {
        let mut media_engine = MediaEngine::default();
        let mut codecs = Vec::new();
        for info in tracks {
            let codec = Codec::from_mime(&info.mime).ok_or(RtcError::NoUsableCodec)?;
            media_engine.register_codec(
                codec_parameters(codec, info.payload_type, info.channels, &info.fmtp),
                codec_kind(info.kind),
            )?;
            codecs.push(codec);
        }
        let registry = register_default_interceptors(Registry::new(), &mut media_engine)?;
        let registry = with_keyframe_requests(registry);
        let (pc, _events) = ClientPc::build(media_engine, registry, config, false).await?;

        let (requests_tx, requests) = mpsc::channel(64);
        let mut built = Vec::new();
        for (info, codec) in tracks.iter().zip(codecs) {
            let params = codec_parameters(codec, info.payload_type, info.channels, &info.fmtp);
            let (kind, name) = match info.kind {
                TrackKind::Audio => (RtpCodecKind::Audio, "audio"),
                TrackKind::Video => (RtpCodecKind::Video, "video"),
            };
            let local = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                "strata-client".to_owned(),
                format!("{name}-{}", info.id),
                format!("{name}-{}", info.id),
                kind,
                vec![RTCRtpEncodingParameters {
                    codec: params.rtp_codec,
                    ..Default::default()
                }],
            )));
            let transceiver = pc.add_sendonly(&local).await?;
            let sender = transceiver
                .sender()
                .await?
                .ok_or(RtcError::Config("transceiver without sender".into()))?;
            let ssrc = sender
                .get_parameters()
                .await?
                .encodings
                .first()
                .and_then(|e| e.rtp_coding_parameters.ssrc)
                .ok_or(RtcError::Config("sender without SSRC".into()))?;
            tokio::spawn(read_feedback(
                Arc::clone(&local),
                info.id,
                requests_tx.clone(),
            ));
            built.push(Track {
                info: info.clone(),
                codec,
                local,
                ssrc,
                payload_type: AtomicU8::new(info.payload_type),
            });
        }
        Ok(Publisher {
            pc,
            tracks: built,
            keyframe_requests: tokio::sync::Mutex::new(requests),
        })
    }

    /// The tracks as offered.
    pub fn catalog(&self) -> Catalog {
        Catalog {
            tracks: self.tracks.iter().map(|t| t.info.clone()).collect(),
        }
    }

    /// Creates the local offer (ICE gathered, no trickle needed).
    pub async fn offer(&self) -> Result<String, RtcError> {
        self.pc.offer().await
    }

    /// Applies the server's answer.
    pub async fn set_answer(&self, answer_sdp: &str) -> Result<(), RtcError> {
        self.pc.set_answer(answer_sdp).await?;
        for track in &self.tracks {
            let pt = self.negotiated_payload_type(track).await;
            track.payload_type.store(pt, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn negotiated_payload_type(&self, track: &Track) -> u8 {
        for sender in self.pc.pc().get_senders().await {
            let Ok(params) = sender.get_parameters().await else {
                continue;
            };
            let ours = params
                .encodings
                .iter()
                .any(|e| e.rtp_coding_parameters.ssrc == Some(track.ssrc));
            if !ours {
                continue;
            }
            if let Some(codec) = params
                .rtp_parameters
                .codecs
                .iter()
                .find(|c| Codec::from_mime(&c.rtp_codec.mime_type) == Some(track.codec))
            {
                return codec.payload_type;
            }
        }
        track.info.payload_type
    }

    /// Offer, exchange (e.g. an HTTP `POST` returning the answer body), answer.
    pub async fn negotiate<F, Fut, E>(&self, exchange: F) -> Result<(), RtcError>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<String, E>>,
        E: std::fmt::Display,
    {
        exchange_with(&self.pc, exchange).await?;
        for track in &self.tracks {
            let pt = self.negotiated_payload_type(track).await;
            track.payload_type.store(pt, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Sends one pre-encoded RTP packet on `track`, with this track's SSRC and negotiated
    /// payload type and without header extensions; sequence number and timestamp are kept.
    pub async fn send_packet(&self, track: TrackId, rtp_packet: &[u8]) -> Result<(), RtcError> {
        let t = self.pc.sending(&self.tracks, track, |t| t.info.id)?;
        let pt = t.payload_type.load(Ordering::Relaxed);
        let packet = outgoing(rtp_packet, t.ssrc, pt)?;
        t.local.write_rtp(packet).await?;
        Ok(())
    }

    /// Sends a recorded clip at its original pace, `loops` times (`None`: until the connection
    /// closes), starting now. Waits for the connection first. Clip tracks map to publisher
    /// tracks by id, so build the publisher from [`Clip::tracks`].
    pub async fn send_clip(&self, clip: Arc<Clip>, loops: Option<u32>) -> Result<(), RtcError> {
        self.connected(Duration::from_secs(30)).await?;
        let mut pacer = ClipPacer::new(clip, loops);
        while let Some(packet) = pacer.next().await {
            match self.send_packet(packet.track, &packet.rtp).await {
                Ok(()) | Err(RtcError::UnknownTrack(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    publishing_client!();
}

async fn read_feedback(
    local: Arc<TrackLocalStaticRTP>,
    track: TrackId,
    requests: mpsc::Sender<TrackId>,
) {
    while let Some(event) = local.poll().await {
        if let TrackLocalEvent::OnRtcpPacket(packets) = event
            && packets.iter().any(|p| is_keyframe_request(p.as_ref()))
        {
            let _ = requests.try_send(track);
        }
    }
}
