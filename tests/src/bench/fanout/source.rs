//! The one media source both servers get: a VP8 + Opus RTP clip, paced from its RTP timestamps.
//!
//! With ffmpeg installed the bench encodes a 1280×720 30 fps VP8 stream at ~2 Mbit/s plus Opus
//! (ffmpeg's `testsrc2` with temporal noise so the encoder reaches its rate, and a sine), sent
//! by ffmpeg as RTP to two loopback sockets of this process and stored as a `.strm` clip in the
//! temp dir (reused by later runs). Without ffmpeg it falls back to the committed 640×360
//! ~600 kbit/s fixture, and the report says so. The same packets then go to Janus as plain RTP
//! ([`feed_rtp`]) and to Strata over WHIP ([`feed_whip`]); the pacer and the packets are the
//! same, only the transport into the server differs.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use strata_media::TrackKind;
use strata_rtc::client::{ClientConfig, Publisher};
use strata_rtc::fixture::{Clip, ClipPacer, fixture_path};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use crate::grpcurl::find_executable;
use crate::http;
use crate::procs::child_command;

/// Length of the generated clip (it loops seamlessly).
const CLIP_SECONDS: u32 = 10;
const VIDEO_PT: u8 = 96;
const AUDIO_PT: u8 = 111;

/// The clip and a description of it for the report.
pub struct Source {
    /// The packets.
    pub clip: Arc<Clip>,
    /// e.g. "VP8 1280×720 30 fps + Opus, 2.08 Mbit/s (generated with ffmpeg)".
    pub label: String,
}

/// Average RTP bit rate of a clip.
fn clip_rate(clip: &Clip) -> f64 {
    let bytes: usize = clip.packets().iter().map(|p| p.rtp.len()).sum();
    bytes as f64 * 8.0 / clip.duration().as_secs_f64()
}

/// The 2 Mbit/s 720p clip (generated once with ffmpeg), or the committed fixture.
pub async fn load(quick: bool) -> Result<Source> {
    if !quick && find_executable("ffmpeg").is_some() {
        let path =
            std::env::temp_dir().join(format!("strata-bench-vp8-720p-2M-{CLIP_SECONDS}s-v1.strm"));
        let clip = match Clip::load(&path) {
            Ok(clip) => clip,
            Err(_) => {
                eprintln!("encoding a {CLIP_SECONDS} s 720p VP8 clip with ffmpeg (once)...");
                let bytes = encode_with_ffmpeg().await?;
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, &bytes)?;
                std::fs::rename(&tmp, &path)?;
                Clip::from_bytes(&bytes).context("reading the generated clip")?
            }
        };
        let rate = clip_rate(&clip);
        return Ok(Source {
            clip: Arc::new(clip),
            label: format!(
                "VP8 1280×720 30 fps + Opus, {:.2} Mbit/s (ffmpeg testsrc2 + noise, {})",
                rate / 1e6,
                path.display()
            ),
        });
    }
    let clip = Clip::load(fixture_path("clip-vp8.strm")).context("loading the VP8 fixture")?;
    let rate = clip_rate(&clip);
    let why = if quick {
        "--quick"
    } else {
        "ffmpeg not installed"
    };
    Ok(Source {
        clip: Arc::new(clip),
        label: format!(
            "VP8 640×360 30 fps + Opus, {:.2} Mbit/s (committed fixture clip-vp8.strm; {why})",
            rate / 1e6
        ),
    })
}

/// Runs ffmpeg in real time into two loopback sockets and returns the `.strm` bytes
/// (format: `tests/fixtures/README.md`; same recipe as `tests/fixtures/make-clip.sh`).
async fn encode_with_ffmpeg() -> Result<Vec<u8>> {
    let video = UdpSocket::bind("127.0.0.1:0").await?;
    let audio = UdpSocket::bind("127.0.0.1:0").await?;
    let (vport, aport) = (video.local_addr()?.port(), audio.local_addr()?.port());
    let ffmpeg = find_executable("ffmpeg").context("ffmpeg")?;
    let secs = CLIP_SECONDS.to_string();
    let mut cmd = child_command(&ffmpeg);
    cmd.args([
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-re",
        "-t",
        &secs,
    ])
    .args([
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1280x720:rate=30",
        "-t",
        &secs,
    ])
    .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
    .args([
        "-map",
        "0:v",
        "-vf",
        "noise=alls=12:allf=t",
        "-pix_fmt",
        "yuv420p",
    ])
    .args([
        "-g",
        "60",
        "-keyint_min",
        "60",
        "-c:v",
        "libvpx",
        "-b:v",
        "2M",
    ])
    .args(["-minrate", "2M", "-maxrate", "2M", "-bufsize", "1M"])
    .args([
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-lag-in-frames",
        "0",
    ])
    .args(["-auto-alt-ref", "0", "-error-resilient", "1"])
    .args(["-payload_type", &VIDEO_PT.to_string(), "-ssrc", "287454020"])
    .args(["-pkt_size", "1200", "-f", "rtp"])
    .arg(format!("rtp://127.0.0.1:{vport}"))
    .args([
        "-map", "1:a", "-c:a", "libopus", "-b:a", "64k", "-ac", "2", "-ar", "48000",
    ])
    .args(["-frame_duration", "20", "-application", "lowdelay"])
    .args([
        "-payload_type",
        &AUDIO_PT.to_string(),
        "-ssrc",
        "1432778632",
    ])
    .args(["-pkt_size", "1200", "-f", "rtp"])
    .arg(format!("rtp://127.0.0.1:{aport}"))
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .context("spawning ffmpeg")?;
    // (track index, RTP bytes) in arrival order: 0 = video, 1 = audio.
    let mut captured: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut vbuf = vec![0u8; 65_536];
    let mut abuf = vec![0u8; 65_536];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(u64::from(CLIP_SECONDS) + 30);
    let status = loop {
        tokio::select! {
            r = video.recv(&mut vbuf) => captured.push((0, vbuf[..r?].to_vec())),
            r = audio.recv(&mut abuf) => captured.push((1, abuf[..r?].to_vec())),
            s = child.wait() => break s?,
            () = tokio::time::sleep_until(deadline) => bail!("ffmpeg took too long"),
        }
    };
    // Whatever is still queued in the sockets.
    let drain_until = tokio::time::Instant::now() + Duration::from_millis(200);
    loop {
        tokio::select! {
            r = video.recv(&mut vbuf) => captured.push((0, vbuf[..r?].to_vec())),
            r = audio.recv(&mut abuf) => captured.push((1, abuf[..r?].to_vec())),
            () = tokio::time::sleep_until(drain_until) => break,
        }
    }
    if !status.success() {
        let mut err = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            use tokio::io::AsyncReadExt;
            let _ = stderr.read_to_string(&mut err).await;
        }
        bail!("ffmpeg failed ({status}): {}", err.trim());
    }
    build_strm(&captured)
}

/// Builds a `.strm` clip from captured RTP (RTCP is skipped; timing from RTP timestamps).
fn build_strm(captured: &[(usize, Vec<u8>)]) -> Result<Vec<u8>> {
    // (kind, payload type, clock rate, channels, mime, fmtp)
    let tracks: [(u8, u8, u32, u8, &str, &str); 2] = [
        (1, VIDEO_PT, 90_000, 0, "video/VP8", ""),
        (
            0,
            AUDIO_PT,
            48_000,
            2,
            "audio/opus",
            "minptime=10;useinbandfec=1",
        ),
    ];
    let duration_us = u64::from(CLIP_SECONDS) * 1_000_000;
    let mut first_ts: [Option<u32>; 2] = [None, None];
    let mut records: Vec<(u64, usize, usize, &[u8])> = Vec::new();
    for (order, (track, data)) in captured.iter().enumerate() {
        if data.len() < 12 || data[0] >> 6 != 2 || (192..=223).contains(&data[1]) {
            continue;
        }
        let ts = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
        let base = *first_ts[*track].get_or_insert(ts);
        let offset_us = u64::from(ts.wrapping_sub(base)) * 1_000_000 / u64::from(tracks[*track].2);
        // One loop is exactly the clip length: a packet at or past its end would collide with
        // the first packet of the next loop.
        if offset_us < duration_us {
            records.push((offset_us, order, *track, data));
        }
    }
    ensure!(
        records.iter().any(|r| r.2 == 0) && records.iter().any(|r| r.2 == 1),
        "ffmpeg sent no video or no audio"
    );
    records.sort_by_key(|r| (r.0, r.1));
    let mut out = b"STRM".to_vec();
    out.push(1);
    out.push(tracks.len() as u8);
    out.extend_from_slice(&(duration_us as u32).to_be_bytes());
    for (kind, pt, clock, channels, mime, fmtp) in tracks {
        out.extend_from_slice(&[kind, pt]);
        out.extend_from_slice(&clock.to_be_bytes());
        out.extend_from_slice(&[channels, mime.len() as u8]);
        out.extend_from_slice(mime.as_bytes());
        out.extend_from_slice(&(fmtp.len() as u16).to_be_bytes());
        out.extend_from_slice(fmtp.as_bytes());
    }
    out.extend_from_slice(&(records.len() as u32).to_be_bytes());
    for (offset_us, _, track, data) in records {
        out.extend_from_slice(&(offset_us as u32).to_be_bytes());
        out.push(track as u8);
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
    }
    Ok(out)
}

/// Sends the clip, looped, as plain RTP to `ports` (one per clip track, in clip order).
pub fn feed_rtp(
    clip: Arc<Clip>,
    ports: Vec<(TrackKind, u16)>,
    fed: Arc<AtomicU64>,
) -> JoinHandle<Result<()>> {
    tokio::spawn(async move {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let dests: Vec<SocketAddr> = ports
            .iter()
            .map(|(_, port)| SocketAddr::from(([127, 0, 0, 1], *port)))
            .collect();
        let mut pacer = ClipPacer::new(clip, None);
        while let Some(p) = pacer.next().await {
            if let Some(dest) = dests.get(usize::from(p.track)) {
                // A full socket buffer drops the packet, as a network would.
                let _ = socket.send_to(&p.rtp, dest).await;
            }
            fed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    })
}

/// Publishes the clip, looped, to `whip_url` over WHIP; returns once media flows.
pub async fn feed_whip(
    clip: Arc<Clip>,
    whip_url: &str,
    fed: Arc<AtomicU64>,
) -> Result<JoinHandle<Result<()>>> {
    let publisher = Publisher::new(clip.tracks(), &ClientConfig::default()).await?;
    let offer = publisher.offer().await?;
    let resp = http::post_sdp(whip_url, &offer).await?;
    if resp.status != 201 {
        bail!("WHIP POST {whip_url}: {} {}", resp.status, resp.text());
    }
    publisher.set_answer(&resp.text()).await?;
    publisher.connected(Duration::from_secs(15)).await?;
    let publisher = Arc::new(publisher);
    // Keyframe requests are answered by the clip's own keyframes (every 2 s); drain them.
    {
        let publisher = Arc::clone(&publisher);
        tokio::spawn(async move { while publisher.keyframe_request().await.is_some() {} });
    }
    Ok(tokio::spawn(async move {
        let mut pacer = ClipPacer::new(clip, None);
        while let Some(p) = pacer.next().await {
            publisher.send_packet(p.track, &p.rtp).await?;
            fed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }))
}
