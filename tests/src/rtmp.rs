//! RTMP test publishers: Debian's ffmpeg as the real encoder, and a scripted
//! client (`rml_rtmp`'s client session) for what ffmpeg will not send
//! (Enhanced RTMP HEVC, a publisher that stalls, refusals to read back).

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::rml_amf0::Amf0Value;
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{Instant, timeout_at};

/// The one-second H.264 (baseline) + AAC FLV file the ingest crate's tests use.
pub const FIXTURE_FLV: &[u8] = include_bytes!("../../data-plane/ingest/fixtures/h264-aac-1s.flv");

/// `ffmpeg -re` publishing a test pattern (H.264 baseline, 25 fps, one
/// keyframe a second) and a 440 Hz tone (AAC) to `url`, until killed or
/// dropped. `extra` goes before the output (e.g. `-t 5`).
pub fn ffmpeg_publish(url: &str, format: &str, extra: &[&str]) -> Result<Child> {
    let mut cmd = Command::new("/usr/bin/ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
        .args([
            "-c:v",
            "libx264",
            "-profile:v",
            "baseline",
            "-preset",
            "ultrafast",
        ])
        .args(["-tune", "zerolatency", "-g", "25", "-pix_fmt", "yuv420p"])
        .args(["-c:a", "aac", "-b:a", "64k", "-ac", "2"])
        .args(extra)
        .args(["-f", format, url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd.spawn().context("starting /usr/bin/ffmpeg")
}

/// Waits for ffmpeg to exit (at most `within`); returns its status and stderr.
pub async fn ffmpeg_exit(mut child: Child, within: Duration) -> Result<(bool, String)> {
    let mut stderr = child.stderr.take().context("no stderr")?;
    let mut text = String::new();
    let r = tokio::time::timeout(within, async {
        let _ = stderr.read_to_string(&mut text).await;
        child.wait().await
    })
    .await;
    match r {
        Ok(status) => Ok((status?.success(), text)),
        Err(_) => {
            let _ = child.kill().await;
            bail!("ffmpeg still running after {within:?}; stderr so far: {text}")
        }
    }
}

/// (tag type, timestamp in ms, body) of every tag of an FLV file.
pub fn flv_tags(file: &[u8]) -> Vec<(u8, u32, Bytes)> {
    let mut tags = Vec::new();
    let Some(header) = file.get(5..9) else {
        return tags;
    };
    let mut at = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize + 4;
    while let Some(h) = file.get(at..at + 11) {
        let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
        let ts = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
        let Some(body) = file.get(at + 11..at + 11 + size) else {
            break;
        };
        tags.push((h[0], ts, Bytes::copy_from_slice(body)));
        at += 11 + size + 4;
    }
    tags
}

/// A scripted RTMP publisher.
pub struct RtmpClient {
    sock: TcpStream,
    session: ClientSession,
}

/// What the server said when it turned a request down: `code: description`.
fn refusal_text(values: &[Amf0Value]) -> String {
    let field = |props: &std::collections::HashMap<String, Amf0Value>, k: &str| match props.get(k) {
        Some(Amf0Value::Utf8String(s)) => s.clone(),
        _ => String::new(),
    };
    match values.first() {
        Some(Amf0Value::Object(props)) => {
            format!("{}: {}", field(props, "code"), field(props, "description"))
        }
        other => format!("{other:?}"),
    }
}

impl RtmpClient {
    /// Connects to `addr`, handshakes, connects to `app` and asks to publish
    /// `key`. `Ok(Err(text))` is the server's refusal (or the connection
    /// closing) within 10 s.
    pub async fn publish(addr: &str, app: &str, key: &str) -> Result<Result<RtmpClient, String>> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut sock = TcpStream::connect(addr).await?;
        sock.set_nodelay(true)?;
        let rest = timeout_at(deadline, handshake(&mut sock))
            .await
            .context("handshake timed out")??;
        let (session, _) =
            ClientSession::new(ClientSessionConfig::new()).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let mut c = RtmpClient { sock, session };
        let r = c.session.request_connection(app.to_owned());
        c.send_result(r).await?;
        let mut input = rest;
        let mut asked_publish = false;
        let mut buf = vec![0u8; 65536];
        loop {
            let results = c
                .session
                .handle_input(&input)
                .map_err(|e| anyhow::anyhow!("client session: {e:?}"))?;
            for r in results {
                match r {
                    ClientSessionResult::OutboundResponse(p) => c.sock.write_all(&p.bytes).await?,
                    ClientSessionResult::RaisedEvent(e) => match e {
                        ClientSessionEvent::ConnectionRequestAccepted if !asked_publish => {
                            asked_publish = true;
                            let r = c
                                .session
                                .request_publishing(key.to_owned(), PublishRequestType::Live);
                            c.send_result(r).await?;
                        }
                        ClientSessionEvent::ConnectionRequestRejected { description } => {
                            return Ok(Err(description));
                        }
                        ClientSessionEvent::UnknownTransactionResultReceived {
                            additional_values,
                            ..
                        } => return Ok(Err(refusal_text(&additional_values))),
                        ClientSessionEvent::PublishRequestAccepted => return Ok(Ok(c)),
                        _ => {}
                    },
                    ClientSessionResult::UnhandleableMessageReceived(_) => {}
                }
            }
            let n = match timeout_at(deadline, c.sock.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Ok(Err(format!("connection failed: {e}"))),
                Err(_) => bail!("no answer to connect/publish within 10 s"),
            };
            if n == 0 {
                return Ok(Err("connection closed by the server".into()));
            }
            input = buf[..n].to_vec();
        }
    }

    async fn send_result(
        &mut self,
        r: Result<ClientSessionResult, rml_rtmp::sessions::ClientSessionError>,
    ) -> Result<()> {
        match r.map_err(|e| anyhow::anyhow!("client session: {e:?}"))? {
            ClientSessionResult::OutboundResponse(p) => self.sock.write_all(&p.bytes).await?,
            other => bail!("unexpected {other:?}"),
        }
        Ok(())
    }

    /// Sends an FLV video tag body.
    pub async fn video(&mut self, ts_ms: u32, body: Bytes) -> Result<()> {
        let r = self
            .session
            .publish_video_data(body, RtmpTimestamp::new(ts_ms), false);
        self.send_result(r).await
    }

    /// Sends an FLV audio tag body.
    pub async fn audio(&mut self, ts_ms: u32, body: Bytes) -> Result<()> {
        let r = self
            .session
            .publish_audio_data(body, RtmpTimestamp::new(ts_ms), false);
        self.send_result(r).await
    }

    /// Sends the tags of an FLV file, timestamps shifted by `offset_ms`.
    pub async fn send_flv(&mut self, file: &[u8], offset_ms: u32) -> Result<()> {
        for (kind, ts, body) in flv_tags(file) {
            match kind {
                8 => self.audio(ts + offset_ms, body).await?,
                9 => self.video(ts + offset_ms, body).await?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads until the server sends an error status or closes the
    /// connection; returns what it said (the status code, or "closed").
    pub async fn refusal(&mut self, within: Duration) -> Result<String> {
        let deadline = Instant::now() + within;
        let mut buf = vec![0u8; 65536];
        loop {
            let n = match timeout_at(deadline, self.sock.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Ok("closed".into()),
                Ok(Ok(n)) => n,
                Err(_) => bail!("the server neither refused nor closed within {within:?}"),
            };
            let Ok(results) = self.session.handle_input(&buf[..n]) else {
                continue;
            };
            for r in results {
                if let ClientSessionResult::RaisedEvent(
                    ClientSessionEvent::UnhandleableOnStatusCode { code },
                ) = r
                {
                    return Ok(code);
                }
            }
        }
    }

    /// Whether the server closed the connection within `within` (reading
    /// and discarding what it sends meanwhile).
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        closed_within(&mut self.sock, within).await
    }
}

/// Whether the peer closes `sock` within `within`.
pub async fn closed_within(sock: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 65536];
    loop {
        match timeout_at(deadline, sock.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

async fn handshake(sock: &mut TcpStream) -> Result<Vec<u8>> {
    let mut hs = Handshake::new(PeerType::Client);
    let p0p1 = hs
        .generate_outbound_p0_and_p1()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    sock.write_all(&p0p1).await?;
    let mut buf = [0u8; 4096];
    loop {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            bail!("closed during the handshake");
        }
        match hs
            .process_bytes(&buf[..n])
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
        {
            HandshakeProcessResult::InProgress { response_bytes } => {
                sock.write_all(&response_bytes).await?
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
