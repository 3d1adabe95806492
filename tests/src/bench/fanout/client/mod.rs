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
//! A peer is negotiated either way round: [`LoadPeer::whep`] offers (WHEP, Strata) and
//! [`LoadPeer::janus`] answers the offer Janus's streaming plugin makes on `watch`.

mod recv;

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use async_trait::async_trait;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::network_type::NetworkType;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use serde_json::{Value, json};
use tokio::sync::watch;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription,
    Registry, SettingEngineBuilder,
};
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, Runtime,
    TokioRuntime,
};

pub use self::recv::{RecvHandle, RecvLoop};
use crate::http;

/// How long ICE gathering (host candidates only) may take.
const GATHER_TIMEOUT: Duration = Duration::from_secs(3);
/// Pace of the client's ICE connectivity checks.
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(20);
/// Receive buffer of each load-client socket.
const RECEIVE_BUFFER: usize = 4 << 20;

/// Packet counts of one peer, by SSRC.
#[derive(Debug, Default)]
pub struct Counters {
    state: Mutex<CountState>,
}

#[derive(Debug, Default)]
struct CountState {
    streams: Vec<SeqTrack>,
    packets: u64,
    bytes: u64,
    first_at: Option<Instant>,
}

#[derive(Debug)]
struct SeqTrack {
    ssrc: u32,
    /// First extended sequence number seen.
    base: i64,
    /// Highest extended sequence number seen.
    highest: i64,
    received: u64,
}

/// Totals of one peer at one moment; differences of two give a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// RTP packets received.
    pub received: u64,
    /// RTP packets the sequence numbers say were sent (highest − first + 1, summed over SSRCs).
    pub expected: u64,
    /// RTP bytes received (header included).
    pub bytes: u64,
}

impl Tally {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Tally) -> Tally {
        Tally {
            received: self.received.saturating_sub(earlier.received),
            expected: self.expected.saturating_sub(earlier.expected),
            bytes: self.bytes.saturating_sub(earlier.bytes),
        }
    }

    /// Packets lost (expected but not received; never negative).
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.received)
    }
}

impl Counters {
    fn record(&self, ssrc: u32, seq: u16, len: usize) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.packets += 1;
        st.bytes += len as u64;
        if st.first_at.is_none() {
            st.first_at = Some(Instant::now());
        }
        match st.streams.iter_mut().find(|s| s.ssrc == ssrc) {
            Some(s) => {
                // Extend the 16-bit sequence number around the highest one seen.
                let delta = i64::from(seq.wrapping_sub(s.highest as u16) as i16);
                let ext = s.highest + delta;
                s.highest = s.highest.max(ext);
                s.base = s.base.min(ext);
                s.received += 1;
            }
            None => {
                // Start high so that early reordering never goes below zero.
                let ext = (1 << 20) + i64::from(seq);
                st.streams.push(SeqTrack {
                    ssrc,
                    base: ext,
                    highest: ext,
                    received: 1,
                });
            }
        }
    }

    /// The totals so far.
    pub fn tally(&self) -> Tally {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Tally {
            received: st.packets,
            expected: st
                .streams
                .iter()
                .map(|s| (s.highest - s.base + 1).max(0) as u64)
                .sum(),
            bytes: st.bytes,
        }
    }

    /// When the first RTP packet arrived.
    pub fn first_packet(&self) -> Option<Instant> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first_at
    }
}

/// SSRC and sequence number of an RTP (not RTCP, RFC 5761 §4) packet; the header is in the
/// clear under SRTP.
fn rtp_header(data: &[u8]) -> Option<(u32, u16)> {
    if data.len() < 12 || data[0] >> 6 != 2 || (192..=223).contains(&data[1]) {
        return None;
    }
    let seq = u16::from_be_bytes([data[2], data[3]]);
    let ssrc = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
    Some((ssrc, seq))
}

/// Tokio, except that UDP sockets are [`CountingSocket`]s read by the [`RecvLoop`].
struct CountingRuntime {
    counters: Arc<Counters>,
    recv: RecvHandle,
}

impl fmt::Debug for CountingRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountingRuntime").finish_non_exhaustive()
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Runtime for CountingRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        TokioRuntime.spawn(future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
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

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        TokioRuntime.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> BoxFuture<'a, io::Result<Arc<dyn AsyncTcpStream>>> {
        let tokio: &'static TokioRuntime = &TokioRuntime;
        tokio.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
        let tokio: &'static TokioRuntime = &TokioRuntime;
        tokio.resolve_host(host)
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        TokioRuntime.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        TokioRuntime.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        TokioRuntime.block_on(future)
    }

    fn name(&self) -> &'static str {
        "strata-bench-counting"
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

/// One receive-only peer connection of the load client.
pub struct LoadPeer {
    pc: Arc<dyn PeerConnection>,
    counters: Arc<Counters>,
    state: watch::Receiver<RTCPeerConnectionState>,
    teardown: Option<Teardown>,
    /// When the request that leads to media was sent: the WHEP offer, or Janus's `watch`.
    pub requested: Instant,
}

struct Built {
    pc: Arc<dyn PeerConnection>,
    counters: Arc<Counters>,
    gathered: watch::Receiver<bool>,
    state: watch::Receiver<RTCPeerConnectionState>,
}

/// A peer connection that receives VP8 (96) or, with `h264`, H.264 baseline (102), and Opus
/// (111), with no interceptors (the media never reaches the stack), mDNS off and one host
/// candidate on `bind_ip`.
async fn build(bind_ip: IpAddr, recv: &RecvHandle, h264: bool) -> Result<Built> {
    let mut media_engine = MediaEngine::default();
    let codec =
        |mime: &str, clock_rate, channels, fmtp: &str, payload_type| RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: mime.to_owned(),
                clock_rate,
                channels,
                sdp_fmtp_line: fmtp.to_owned(),
                rtcp_feedback: Vec::new(),
            },
            payload_type,
        };
    let video = match h264 {
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
        .with_runtime(Arc::new(CountingRuntime {
            counters: Arc::clone(&counters),
            recv: recv.clone(),
        }))
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
        Self::whep_with(url, bind_ip, recv, false).await
    }

    /// [`whep`](Self::whep) offering H.264 rather than VP8 (streams ingested over RTMP/SRT).
    pub async fn whep_h264(url: &str, bind_ip: IpAddr, recv: &RecvHandle) -> Result<LoadPeer> {
        Self::whep_with(url, bind_ip, recv, true).await
    }

    async fn whep_with(
        url: &str,
        bind_ip: IpAddr,
        recv: &RecvHandle,
        h264: bool,
    ) -> Result<LoadPeer> {
        let mut b = build(bind_ip, recv, h264).await?;
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
        let offer = b.pc.create_offer(None).await?;
        let offer = apply_local(&mut b, offer).await?;
        let requested = Instant::now();
        let resp = http::post_sdp(url, &offer).await?;
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
        let answer = RTCSessionDescription::answer(resp.text())?;
        b.pc.set_remote_description(answer).await?;
        Ok(LoadPeer {
            pc: b.pc,
            counters: b.counters,
            state: b.state,
            teardown: Some(Teardown::Whep(session_url)),
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
        let mut b = build(bind_ip, recv, false).await?;
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
            requested,
        })
    }

    /// The packet counters.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
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

/// One Janus API request; fails unless Janus answers `success` or `ack`.
async fn janus_call(url: &str, mut body: Value) -> Result<Value> {
    body["transaction"] = json!(transaction());
    let bytes = serde_json::to_vec(&body)?;
    let resp = http::request("POST", url, &[("Content-Type", "application/json")], &bytes).await?;
    ensure!(resp.status == 200, "Janus {url}: HTTP {}", resp.status);
    let v: Value = serde_json::from_slice(&resp.body).context("Janus reply is not JSON")?;
    match v["janus"].as_str() {
        Some("success" | "ack") => Ok(v),
        _ => bail!("Janus {url}: {v}"),
    }
}

fn janus_id(v: &Value) -> Result<u64> {
    v["data"]["id"]
        .as_u64()
        .context("Janus reply without an id")
}

/// Long-polls the session's events until one carries the JSEP offer.
async fn janus_offer(session_url: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let resp = http::get(&format!("{session_url}?maxev=5")).await?;
        ensure!(resp.status == 200, "Janus events: HTTP {}", resp.status);
        let v: Value = serde_json::from_slice(&resp.body).context("Janus event is not JSON")?;
        let events = match v {
            Value::Array(events) => events,
            one => vec![one],
        };
        for e in events {
            if let Some(err) = e["plugindata"]["data"]["error"].as_str() {
                bail!("Janus watch failed: {err}");
            }
            if e["jsep"]["type"] == "offer"
                && let Some(sdp) = e["jsep"]["sdp"].as_str()
            {
                return Ok(sdp.to_owned());
            }
        }
    }
    bail!("no offer from Janus within 20 s")
}

fn transaction() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests;
