//! The load client: receive-only peer connections whose media is counted, not decrypted.
//!
//! Each [`LoadPeer`] is a `webrtc` peer connection (the same stack as the node, mDNS off,
//! one host candidate) for signalling, ICE and DTLS only. Its UDP socket belongs to the
//! [`RecvLoop`]: one thread that receives every player's datagrams (`epoll` + `recvmmsg`),
//! counts RTP packets from their clear-text header (SSRC, sequence number) and drops them
//! before SRTP, and passes only STUN, DTLS and RTCP on to the player's stack. The client
//! therefore never decrypts media, sends no NACKs (so neither server retransmits), and spends
//! no task wake-up or channel hop per packet per player, which keeps it from being the
//! bottleneck when it shares a machine with the server under test.
//!
//! A WHEP player may also offer transport-cc ([`Offer::transport_cc`]): the loop then reads
//! each media packet's transport-wide sequence number from the clear-text header extension
//! too, and the player sends transport feedback every 100 ms (`twcc.rs`).
//!
//! A peer is negotiated either way round: [`LoadPeer::whep`] offers (WHEP, Strata) and
//! [`LoadPeer::janus`] answers the offer Janus's streaming plugin makes on `watch`.

mod counters;
mod janus_api;
mod recv;
mod twcc;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use async_trait::async_trait;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::network_type::NetworkType;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use serde_json::json;
use tokio::sync::watch;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription,
    Registry, SettingEngineBuilder,
};
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use webrtc::runtime::AsyncUdpSocket;

use self::counters::rtp_header;
pub use self::counters::{Counters, Tally};
use self::janus_api::{janus_call, janus_id, janus_offer};
pub use self::recv::{RecvHandle, RecvLoop};
pub use self::twcc::NodeFeedback;
use crate::http;
use strata_rtc::udp_runtime::{UdpRuntime, WrapUdp};

/// How long ICE gathering (host candidates only) may take.
const GATHER_TIMEOUT: Duration = Duration::from_secs(3);
/// Pace of the client's ICE connectivity checks.
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(20);
/// Receive buffer of each load-client socket.
const RECEIVE_BUFFER: usize = 4 << 20;

/// Where the load peers' UDP sockets come from: [`CountingSocket`]s read by the
/// [`RecvLoop`] (the runtime is otherwise Tokio: `strata_rtc::udp_runtime`).
struct CountingSockets {
    counters: Arc<Counters>,
    recv: RecvHandle,
}

impl WrapUdp for CountingSockets {
    fn wrap(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        // Room for a keyframe burst to every player at once while the client is busy with
        // others: drops here would be counted against the server. Above `rmem_max` only as
        // root (SO_RCVBUFFORCE); otherwise as much as the system allows.
        use nix::sys::socket::{setsockopt, sockopt};
        if setsockopt(&socket, sockopt::RcvBufForce, &RECEIVE_BUFFER).is_err() {
            let _ = setsockopt(&socket, sockopt::RcvBuf, &RECEIVE_BUFFER);
        }
        Ok(Arc::new(
            self.recv.register(socket, Arc::clone(&self.counters))?,
        ))
    }
}

struct Events {
    gathered: watch::Sender<bool>,
    state: watch::Sender<RTCPeerConnectionState>,
}

#[async_trait]
impl PeerConnectionEventHandler for Events {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.state.send_replace(state);
    }
}

/// How a peer's session ends.
enum Teardown {
    /// `DELETE` the WHEP session.
    Whep(String),
    /// `destroy` the Janus session.
    Janus { session_url: String },
}

/// What a WHEP player offers beside audio and video.
#[derive(Debug, Clone, Copy, Default)]
pub struct Offer {
    /// H.264 baseline rather than VP8 (streams ingested over RTMP/SRT).
    pub h264: bool,
    /// Transport-cc: the transport-wide sequence number extension and `transport-cc`
    /// feedback, which the player then sends every 100 ms.
    pub transport_cc: bool,
}

/// One receive-only peer connection of the load client.
pub struct LoadPeer {
    pc: Arc<dyn PeerConnection>,
    counters: Arc<Counters>,
    state: watch::Receiver<RTCPeerConnectionState>,
    teardown: Option<Teardown>,
    /// Sends transport feedback (transport-cc negotiated); stopped with the peer.
    feedback: Option<AbortOnDrop>,
    /// When the request that leads to media was sent: the WHEP offer, or Janus's `watch`.
    pub requested: Instant,
}

struct Built {
    pc: Arc<dyn PeerConnection>,
    counters: Arc<Counters>,
    gathered: watch::Receiver<bool>,
    state: watch::Receiver<RTCPeerConnectionState>,
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The codecs a player receives (and transport-cc on both, if `offer` asks).
fn media_engine(offer: Offer) -> Result<MediaEngine> {
    let mut media_engine = MediaEngine::default();
    let rtcp_feedback = match offer.transport_cc {
        true => vec![RTCPFeedback {
            typ: "transport-cc".to_owned(),
            parameter: String::new(),
        }],
        false => Vec::new(),
    };
    let codec =
        |mime: &str, clock_rate, channels, fmtp: &str, payload_type| RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: mime.to_owned(),
                clock_rate,
                channels,
                sdp_fmtp_line: fmtp.to_owned(),
                rtcp_feedback: rtcp_feedback.clone(),
            },
            payload_type,
        };
    let video = match offer.h264 {
        false => codec("video/VP8", 90_000, 0, "", 96),
        true => codec(
            "video/H264",
            90_000,
            0,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
            102,
        ),
    };
    media_engine.register_codec(video, RtpCodecKind::Video)?;
    media_engine.register_codec(
        codec("audio/opus", 48_000, 2, "minptime=10;useinbandfec=1", 111),
        RtpCodecKind::Audio,
    )?;
    if offer.transport_cc {
        for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
            let uri = rtc::sdp::extmap::TRANSPORT_CC_URI.to_owned();
            media_engine.register_header_extension(
                RTCRtpHeaderExtensionCapability { uri },
                kind,
                None,
            )?;
        }
    }
    Ok(media_engine)
}

/// A peer connection that receives VP8 (96) or, with `h264`, H.264 baseline (102), and Opus
/// (111), with no interceptors (the media never reaches the stack), mDNS off and one host
/// candidate on `bind_ip`; offering transport-cc on both if asked.
async fn build(bind_ip: IpAddr, recv: &RecvHandle, offer: Offer) -> Result<Built> {
    let media_engine = media_engine(offer)?;
    let counters = Arc::new(Counters::default());
    let (gathered_tx, gathered) = watch::channel(false);
    let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
    let setting_engine = SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        // Check the candidate pair at once and every 20 ms rather than on the stack's 200 ms
        // tick (for the same 1.4 s): first packet then times the server, not this timer.
        // Browsers also send their first check without waiting.
        .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(70))
        .with_network_types(vec![if bind_ip.is_ipv6() {
            NetworkType::Udp6
        } else {
            NetworkType::Udp4
        }])
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(setting_engine)
        .with_media_engine(media_engine)
        .with_interceptor_registry(Registry::new())
        .with_handler(Arc::new(Events {
            gathered: gathered_tx,
            state: state_tx,
        }))
        .with_runtime(Arc::new(UdpRuntime::new(
            "strata-bench-counting",
            CountingSockets {
                counters: Arc::clone(&counters),
                recv: recv.clone(),
            },
        )))
        .with_udp_addrs(vec![SocketAddr::new(bind_ip, 0)])
        .build()
        .await?;
    Ok(Built {
        pc: Arc::new(pc),
        counters,
        gathered,
        state,
    })
}

/// Applies `desc` locally and returns the local SDP once ICE gathering is complete.
async fn apply_local(b: &mut Built, desc: RTCSessionDescription) -> Result<String> {
    b.pc.set_local_description(desc).await?;
    let _ = tokio::time::timeout(GATHER_TIMEOUT, b.gathered.wait_for(|done| *done)).await;
    Ok(b.pc
        .local_description()
        .await
        .context("no local description")?
        .sdp)
}

impl LoadPeer {
    /// Plays `url` (`http://…/whep/{stream}`) over WHEP: offers receive-only audio and video.
    pub async fn whep(url: &str, bind_ip: IpAddr, recv: &RecvHandle) -> Result<LoadPeer> {
        Self::whep_offering(url, bind_ip, recv, Offer::default()).await
    }

    /// [`whep`](Self::whep) offering H.264 rather than VP8 (streams ingested over RTMP/SRT).
    pub async fn whep_h264(url: &str, bind_ip: IpAddr, recv: &RecvHandle) -> Result<LoadPeer> {
        let offer = Offer {
            h264: true,
            ..Offer::default()
        };
        Self::whep_offering(url, bind_ip, recv, offer).await
    }

    /// [`whep`](Self::whep) offering what `offer` says. With transport-cc the player sends
    /// transport feedback if the answer accepts it (see [`Self::transport_cc`]).
    pub async fn whep_offering(
        url: &str,
        bind_ip: IpAddr,
        recv: &RecvHandle,
        offer: Offer,
    ) -> Result<LoadPeer> {
        let mut b = build(bind_ip, recv, offer).await?;
        for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
            b.pc.add_transceiver_from_kind(
                kind,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    streams: vec![],
                    send_encodings: vec![],
                }),
            )
            .await?;
        }
        let local = b.pc.create_offer(None).await?;
        let local = apply_local(&mut b, local).await?;
        let requested = Instant::now();
        let resp = http::post_sdp(url, &local).await?;
        if resp.status != 201 {
            b.pc.close().await.ok();
            bail!("WHEP POST {url}: {} {}", resp.status, resp.text());
        }
        let location = resp.header("location").context("no Location")?.to_owned();
        let session_url = if location.starts_with("http") {
            location
        } else {
            let (authority, _) = http::split_url(&resp.url)?;
            format!("http://{authority}{location}")
        };
        let answer = resp.text();
        let twcc_id = twcc::extmap_id(&answer).filter(|_| offer.transport_cc);
        b.pc.set_remote_description(RTCSessionDescription::answer(answer)?)
            .await?;
        let feedback = twcc_id.map(|id| {
            b.counters.enable_transport_cc(id);
            let task = twcc::send_feedback(Arc::clone(&b.pc), Arc::clone(&b.counters));
            AbortOnDrop(tokio::spawn(task))
        });
        Ok(LoadPeer {
            pc: b.pc,
            counters: b.counters,
            state: b.state,
            teardown: Some(Teardown::Whep(session_url)),
            feedback,
            requested,
        })
    }

    /// Watches mountpoint `mountpoint` of the Janus streaming plugin at `api`
    /// (`http://…/janus`): session, attach, `watch` → Janus's offer → our answer with `start`.
    pub async fn janus(
        api: &str,
        mountpoint: u64,
        bind_ip: IpAddr,
        recv: &RecvHandle,
    ) -> Result<LoadPeer> {
        let session = janus_call(api, json!({"janus": "create"})).await?;
        let session_id = janus_id(&session)?;
        let session_url = format!("{api}/{session_id}");
        match Self::janus_watch(&session_url, mountpoint, bind_ip, recv).await {
            Ok(peer) => Ok(peer),
            Err(e) => {
                let _ = janus_call(&session_url, json!({"janus": "destroy"})).await;
                Err(e)
            }
        }
    }

    async fn janus_watch(
        session_url: &str,
        mountpoint: u64,
        bind_ip: IpAddr,
        recv: &RecvHandle,
    ) -> Result<LoadPeer> {
        let attached = janus_call(
            session_url,
            json!({"janus": "attach", "plugin": "janus.plugin.streaming"}),
        )
        .await?;
        let handle_url = format!("{session_url}/{}", janus_id(&attached)?);
        // Built before `watch`, as the WHEP player is before its offer: both clocks then
        // start at the request and count only the server's answer, ICE and DTLS.
        let mut b = build(bind_ip, recv, Offer::default()).await?;
        let requested = Instant::now();
        janus_call(
            &handle_url,
            json!({"janus": "message", "body": {"request": "watch", "id": mountpoint}}),
        )
        .await?;
        let offer = janus_offer(session_url).await?;
        b.pc.set_remote_description(RTCSessionDescription::offer(offer.clone())?)
            .await?;
        let answer = b.pc.create_answer(None).await?;
        let answer = apply_local(&mut b, answer).await?;
        tracing::debug!(%offer, %answer, "Janus negotiation");
        janus_call(
            &handle_url,
            json!({
                "janus": "message",
                "body": {"request": "start"},
                "jsep": {"type": "answer", "sdp": answer},
            }),
        )
        .await?;
        janus_call(
            &handle_url,
            json!({"janus": "trickle", "candidate": {"completed": true}}),
        )
        .await?;
        Ok(LoadPeer {
            pc: b.pc,
            counters: b.counters,
            state: b.state,
            teardown: Some(Teardown::Janus {
                session_url: session_url.to_owned(),
            }),
            feedback: None,
            requested,
        })
    }

    /// The packet counters.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Whether transport-cc was negotiated: the player sends transport feedback.
    pub fn transport_cc(&self) -> bool {
        self.feedback.is_some()
    }

    /// Whether the connection failed or closed.
    pub fn failed(&self) -> bool {
        matches!(
            *self.state.borrow(),
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
        )
    }

    /// Waits until the first RTP packet arrives; returns how long after [`Self::requested`].
    pub async fn first_packet(&self, within: Duration) -> Result<Duration> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(at) = self.counters.first_packet() {
                return Ok(at.saturating_duration_since(self.requested));
            }
            ensure!(!self.failed(), "connection failed before any media");
            ensure!(
                Instant::now() < deadline,
                "no media within {within:?} (connection {:?})",
                *self.state.borrow()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Ends the session (WHEP DELETE or Janus destroy) and closes the connection.
    pub async fn close(mut self) {
        self.feedback.take();
        match self.teardown.take() {
            Some(Teardown::Whep(url)) => {
                let _ = http::request("DELETE", &url, &[], &[]).await;
            }
            Some(Teardown::Janus { session_url }) => {
                let _ = janus_call(&session_url, json!({"janus": "destroy"})).await;
            }
            None => {}
        }
        let _ = self.pc.close().await;
    }
}

#[cfg(test)]
mod tests;
