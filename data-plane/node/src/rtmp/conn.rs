//! One RTMP connection: handshake, then `rml_rtmp`'s server session fed
//! from the socket, its answers written back, its events acted on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rml_rtmp::chunk_io::{ChunkSerializer, Packet};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::RtmpMessage;
use rml_rtmp::rml_amf0::Amf0Value;
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use rml_rtmp::time::RtmpTimestamp;
use strata_common::limits::ConnectionPermit;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tracing::{debug, info, warn};

use crate::encoder::key::APP;
use crate::encoder::{self, Publishing, Stop};
use crate::state::NodeState;

/// Chunk size this server sends with.
const OUT_CHUNK_SIZE: u32 = 4096;
/// Socket reads at most this much at once.
const READ_BUF: usize = 64 * 1024;
/// Most time writing one answer may take (a peer that reads nothing).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer closed the connection")]
    Closed,
    #[error("setup took longer than the setup timeout")]
    SetupTimeout,
    #[error("no media for the idle timeout: the publisher stalled")]
    Stalled,
    #[error("RTMP handshake: {0}")]
    Handshake(String),
    #[error("RTMP protocol: {0}")]
    Protocol(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("the node stopped the session")]
    Stopped,
    #[error("the publisher finished")]
    Finished,
}

/// Serves one connection until it ends; cleans up whatever it published.
pub(super) async fn run(
    state: Arc<NodeState>,
    mut sock: TcpStream,
    peer: SocketAddr,
    _permit: ConnectionPermit,
) {
    let setup_deadline = Instant::now() + state.cfg.rtmp_setup_timeout;
    let mut conn = Conn {
        state: state.clone(),
        session: None,
        publishing: None,
        setup_deadline,
        last_media: Instant::now(),
    };
    let result = conn.serve(&mut sock).await;
    match &result {
        Err(ConnError::Finished | ConnError::Closed | ConnError::Stopped) => {
            debug!(error = ?result.as_ref().err(), "RTMP connection ended")
        }
        Err(e @ (ConnError::Refused(_) | ConnError::Stalled)) => info!(%peer, "RTMP: {e}"),
        Err(e) => debug!(%peer, error = %e, "RTMP connection failed"),
        Ok(()) => {}
    }
    let _ = sock.shutdown().await;
    if let Some(p) = conn.publishing.take() {
        p.finish().await;
    }
}

struct Conn {
    state: Arc<NodeState>,
    session: Option<ServerSession>,
    publishing: Option<Publishing>,
    setup_deadline: Instant,
    /// When the last audio or video message arrived.
    last_media: Instant,
}

impl Conn {
    async fn serve(&mut self, sock: &mut TcpStream) -> Result<(), ConnError> {
        let rest = timeout_at(self.setup_deadline, handshake(sock))
            .await
            .map_err(|_| ConnError::SetupTimeout)??;
        let mut config = ServerSessionConfig::new();
        config.chunk_size = OUT_CHUNK_SIZE;
        let (session, first) =
            ServerSession::new(config).map_err(|e| ConnError::Protocol(e.to_string()))?;
        self.session = Some(session);
        self.handle(sock, first).await?;
        let mut input = rest;
        let mut buf = vec![0u8; READ_BUF];
        loop {
            if !input.is_empty() {
                let results = self
                    .session()?
                    .handle_input(&input)
                    .map_err(|e| ConnError::Protocol(e.to_string()))?;
                self.handle(sock, results).await?;
            }
            let deadline = self.deadline();
            let stop = async {
                match self.publishing.as_mut().and_then(|p| p.stop.as_mut()) {
                    Some(rx) => {
                        let _ = rx.await;
                    }
                    None => std::future::pending().await,
                }
            };
            let n = tokio::select! {
                r = timeout_at(deadline, sock.read(&mut buf)) => match r {
                    Ok(r) => r?,
                    Err(_) if self.live() => return Err(ConnError::Stalled),
                    Err(_) => return Err(ConnError::SetupTimeout),
                },
                () = stop => return Err(ConnError::Stopped),
            };
            if n == 0 {
                return Err(ConnError::Closed);
            }
            input.clear();
            input.extend_from_slice(&buf[..n]);
        }
    }

    fn live(&self) -> bool {
        self.publishing.as_ref().is_some_and(Publishing::is_live)
    }

    /// Until the stream is live, the setup deadline; then the idle one from
    /// the last media message (other messages do not keep a publish alive).
    fn deadline(&self) -> Instant {
        if self.live() {
            self.last_media + self.state.cfg.rtmp_idle_timeout
        } else {
            self.setup_deadline
        }
    }

    fn session(&mut self) -> Result<&mut ServerSession, ConnError> {
        self.session
            .as_mut()
            .ok_or_else(|| ConnError::Protocol("no session".into()))
    }

    async fn handle(
        &mut self,
        sock: &mut TcpStream,
        results: Vec<ServerSessionResult>,
    ) -> Result<(), ConnError> {
        let mut queue: std::collections::VecDeque<_> = results.into();
        while let Some(r) = queue.pop_front() {
            match r {
                ServerSessionResult::OutboundResponse(p) => write(sock, &p).await?,
                ServerSessionResult::RaisedEvent(e) => {
                    let more = self.on_event(sock, e).await?;
                    queue.extend(more);
                }
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(())
    }

    async fn on_event(
        &mut self,
        sock: &mut TcpStream,
        event: ServerSessionEvent,
    ) -> Result<Vec<ServerSessionResult>, ConnError> {
        let protocol =
            |e: rml_rtmp::sessions::ServerSessionError| ConnError::Protocol(e.to_string());
        match event {
            ServerSessionEvent::ConnectionRequested {
                request_id,
                app_name,
            } => {
                if app_name.trim_end_matches('/') == APP {
                    return self.session()?.accept_request(request_id).map_err(protocol);
                }
                let why = format!(
                    "unknown application {app_name:?}: publish to rtmp://HOST/{APP}/{{stream}}"
                );
                self.refuse(sock, request_id, "NetConnection.Connect.Rejected", &why)
                    .await
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                stream_key,
                ..
            } => {
                if self.publishing.is_some() {
                    return self
                        .refuse(
                            sock,
                            request_id,
                            "NetStream.Publish.BadName",
                            "this connection publishes already",
                        )
                        .await;
                }
                match encoder::claim(&self.state, &stream_key).await {
                    Ok(claim) => {
                        info!(stream = claim.stream(), role = ?claim.role(), "RTMP publish accepted");
                        self.publishing = Some(Publishing::new(self.state.clone(), claim));
                        self.session()?.accept_request(request_id).map_err(protocol)
                    }
                    Err(r) => {
                        self.refuse(sock, request_id, r.rtmp_code(), &r.description)
                            .await
                    }
                }
            }
            ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                let why = "this node takes publishers over RTMP; play over WHEP";
                self.refuse(sock, request_id, "NetStream.Play.Failed", why)
                    .await
            }
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => {
                self.last_media = Instant::now();
                let r = match self.publishing.as_mut() {
                    Some(p) => p.on_video(timestamp.value, &data).await,
                    None => Ok(()),
                };
                self.media_result(sock, r).await
            }
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => {
                self.last_media = Instant::now();
                let r = match self.publishing.as_mut() {
                    Some(p) => p.on_audio(timestamp.value, &data).await,
                    None => Ok(()),
                };
                self.media_result(sock, r).await
            }
            ServerSessionEvent::PublishStreamFinished { .. } => Err(ConnError::Finished),
            _ => Ok(Vec::new()),
        }
    }

    /// Refuses a request with an RTMP `_error` (code and description), then
    /// ends the connection.
    async fn refuse(
        &mut self,
        sock: &mut TcpStream,
        request_id: u32,
        code: &str,
        why: &str,
    ) -> Result<Vec<ServerSessionResult>, ConnError> {
        self.state
            .counters
            .refused_total
            .fetch_add(1, Ordering::Relaxed);
        self.state
            .counters
            .rtmp_refused_total
            .fetch_add(1, Ordering::Relaxed);
        if let Ok(results) = self.session()?.reject_request(request_id, code, why) {
            for r in results {
                if let ServerSessionResult::OutboundResponse(p) = r {
                    write(sock, &p).await?;
                }
            }
        }
        Err(ConnError::Refused(format!("{code}: {why}")))
    }

    async fn media_result(
        &mut self,
        sock: &mut TcpStream,
        r: Result<(), Stop>,
    ) -> Result<Vec<ServerSessionResult>, ConnError> {
        let why = match r {
            Ok(()) => return Ok(Vec::new()),
            Err(Stop::Unsupported(why)) => {
                warn!(reason = %why, "RTMP publish refused: a codec WebRTC players cannot take");
                why
            }
            Err(Stop::Conflict(why)) => why,
        };
        self.state
            .counters
            .rtmp_refused_total
            .fetch_add(1, Ordering::Relaxed);
        // After the publish was accepted there is no request left to reject:
        // an onStatus error on the stream says it.
        if let Ok(p) = status_error("NetStream.Publish.Rejected", &why) {
            write(sock, &p).await?;
        }
        Err(ConnError::Refused(why))
    }
}

async fn write(sock: &mut TcpStream, p: &Packet) -> Result<(), ConnError> {
    tokio::time::timeout(WRITE_TIMEOUT, sock.write_all(&p.bytes))
        .await
        .map_err(|_| ConnError::Stalled)??;
    Ok(())
}

/// The server side of the RTMP handshake; returns the bytes after it.
async fn handshake(sock: &mut TcpStream) -> Result<Vec<u8>, ConnError> {
    let mut hs = Handshake::new(PeerType::Server);
    let mut buf = [0u8; 4096];
    loop {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            return Err(ConnError::Closed);
        }
        match hs
            .process_bytes(&buf[..n])
            .map_err(|e| ConnError::Handshake(e.to_string()))?
        {
            HandshakeProcessResult::InProgress { response_bytes } => {
                sock.write_all(&response_bytes).await?;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                sock.write_all(&response_bytes).await?;
                return Ok(remaining_bytes);
            }
        }
    }
}

/// An `onStatus` error on stream 1 (the stream `createStream` gave), sent
/// with a serializer of our own at the session's chunk size and a full
/// chunk header, so the peer parses it whatever was sent before.
fn status_error(code: &str, description: &str) -> Result<Packet, String> {
    let mut status = std::collections::HashMap::new();
    status.insert("level".to_owned(), Amf0Value::Utf8String("error".into()));
    status.insert("code".to_owned(), Amf0Value::Utf8String(code.into()));
    status.insert(
        "description".to_owned(),
        Amf0Value::Utf8String(description.into()),
    );
    let message = RtmpMessage::Amf0Command {
        command_name: "onStatus".into(),
        transaction_id: 0.0,
        command_object: Amf0Value::Null,
        additional_arguments: vec![Amf0Value::Object(status)],
    };
    let payload = message
        .into_message_payload(RtmpTimestamp::new(0), 1)
        .map_err(|e| e.to_string())?;
    let mut serializer = ChunkSerializer::new();
    serializer
        .set_max_chunk_size(OUT_CHUNK_SIZE, RtmpTimestamp::new(0))
        .map_err(|e| e.to_string())?;
    serializer
        .serialize(&payload, true, false)
        .map_err(|e| e.to_string())
}
