//! Encodes the bench's clips with ffmpeg: one or more VP8 encodings of the same picture
//! (`testsrc2` with temporal noise, so the encoder reaches its rate) plus Opus (a sine), sent
//! by ffmpeg as RTP to loopback sockets of this process in real time and stored as a `.strm`
//! clip (format: `tests/fixtures/README.md`; the recipe of `tests/fixtures/make-clip.sh`).
//!
//! Several encodings are simulcast layers: one `split` of the noisy picture, each branch
//! scaled and encoded at its own rate with the same keyframe interval, so every layer has a
//! keyframe at the same frames, as a browser's simulcast encoder does.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use tokio::net::UdpSocket;

use crate::grpcurl::find_executable;
use crate::procs::child_command;

pub const VIDEO_PT: u8 = 96;
pub const AUDIO_PT: u8 = 111;

/// One VP8 encoding: picture size and constant bit rate.
#[derive(Debug, Clone, Copy)]
pub struct VideoOut {
    pub width: u32,
    pub height: u32,
    /// ffmpeg rate, e.g. `2M`.
    pub rate: &'static str,
}

/// The single-layer source: 1280×720 at 2 Mbit/s.
pub const SINGLE: VideoOut = VideoOut {
    width: 1280,
    height: 720,
    rate: "2M",
};

/// Simulcast layers, lowest first: 1/4, 1/2 and full resolution; the top one is [`SINGLE`],
/// the lower ones at about the rates a browser gives them.
pub const SIMULCAST: [VideoOut; 3] = [
    VideoOut {
        width: 320,
        height: 180,
        rate: "200k",
    },
    VideoOut {
        width: 640,
        height: 360,
        rate: "600k",
    },
    SINGLE,
];

/// Runs ffmpeg for `seconds` and returns the `.strm` bytes: one video track per entry of
/// `videos` (in that order), then the audio track.
pub async fn encode(videos: &[VideoOut], seconds: u32) -> Result<Vec<u8>> {
    ensure!(!videos.is_empty(), "no video to encode");
    let mut sockets = Vec::new();
    for _ in 0..=videos.len() {
        sockets.push(UdpSocket::bind("127.0.0.1:0").await?);
    }
    let mut ports = Vec::new();
    for s in &sockets {
        ports.push(s.local_addr()?.port());
    }
    let mut child = tokio::process::Command::from(ffmpeg_command(videos, seconds, &ports)?)
        .kill_on_drop(true)
        .spawn()
        .context("spawning ffmpeg")?;
    let sockets = std::sync::Arc::new(sockets);
    // (track index, RTP bytes) in arrival order.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Vec<u8>)>();
    let mut readers = Vec::new();
    for i in 0..sockets.len() {
        let (sockets, tx) = (std::sync::Arc::clone(&sockets), tx.clone());
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok(n) = sockets[i].recv(&mut buf).await {
                if tx.send((i, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(u64::from(seconds) + 30);
    let status = tokio::select! {
        s = child.wait() => s?,
        () = tokio::time::sleep_until(deadline) => bail!("ffmpeg took too long"),
    };
    // Whatever is still queued in the sockets.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for r in &readers {
        r.abort();
    }
    let mut captured = Vec::new();
    while let Ok(c) = rx.try_recv() {
        captured.push(c);
    }
    if !status.success() {
        let mut err = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            use tokio::io::AsyncReadExt;
            let _ = stderr.read_to_string(&mut err).await;
        }
        bail!("ffmpeg failed ({status}): {}", err.trim());
    }
    build_strm(videos.len(), &captured, seconds)
}

/// ffmpeg encoding `seconds` of test pattern and tone: each of `videos` as VP8 over RTP to
/// `ports[i]`, the audio as Opus to the last port.
fn ffmpeg_command(
    videos: &[VideoOut],
    seconds: u32,
    ports: &[u16],
) -> Result<std::process::Command> {
    let ffmpeg = find_executable("ffmpeg").context("ffmpeg")?;
    let secs = seconds.to_string();
    let mut cmd = child_command(&ffmpeg);
    cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args(["-t", &secs, "-f", "lavfi", "-i"])
        .arg(format!(
            "testsrc2=size={}x{}:rate=30",
            videos[videos.len() - 1].width,
            videos[videos.len() - 1].height
        ))
        .args(["-t", &secs, "-f", "lavfi", "-i"])
        .arg("sine=frequency=440:sample_rate=48000")
        .args(["-filter_complex", &filter(videos)]);
    for (i, (v, port)) in videos.iter().zip(ports).enumerate() {
        let bufsize = format!("{}k", rate_kbit(v.rate) / 2);
        cmd.args(["-map", &format!("[v{i}]"), "-g", "60", "-keyint_min", "60"])
            .args(["-c:v", "libvpx", "-b:v", v.rate, "-minrate", v.rate])
            .args(["-maxrate", v.rate, "-bufsize", &bufsize])
            .args([
                "-deadline",
                "realtime",
                "-cpu-used",
                "8",
                "-lag-in-frames",
                "0",
            ])
            .args(["-auto-alt-ref", "0", "-error-resilient", "1"])
            .args(["-payload_type", &VIDEO_PT.to_string()])
            .args(["-ssrc", &(287_454_020 + i as u32).to_string()])
            .args(["-pkt_size", "1200", "-f", "rtp"])
            .arg(format!("rtp://127.0.0.1:{port}"));
    }
    let aport = ports[videos.len()];
    cmd.args([
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
    Ok(cmd)
}

/// The filter graph: noise once, then one scaled branch per output `[vN]`.
fn filter(videos: &[VideoOut]) -> String {
    let n = videos.len();
    let mut f = format!("[0:v]noise=alls=12:allf=t,format=yuv420p,split={n}");
    for i in 0..n {
        f.push_str(&format!("[s{i}]"));
    }
    for (i, v) in videos.iter().enumerate() {
        f.push_str(&format!(";[s{i}]scale={}:{}[v{i}]", v.width, v.height));
    }
    f
}

/// `2M` → 2000, `600k` → 600.
fn rate_kbit(rate: &str) -> u64 {
    let (digits, unit) = rate.split_at(rate.len().saturating_sub(1));
    let n: u64 = digits.parse().unwrap_or(1000);
    match unit {
        "M" => n * 1000,
        _ => n,
    }
}

/// A track of the `.strm` table: (kind, payload type, clock rate, channels, mime, fmtp).
pub type StrmTrack = (u8, u8, u32, u8, String, String);

/// The track table for `videos` VP8 tracks and one Opus track.
fn vp8_tracks(videos: usize) -> Vec<StrmTrack> {
    let mut tracks: Vec<StrmTrack> = (0..videos)
        .map(|_| {
            (
                1,
                VIDEO_PT,
                90_000,
                0,
                "video/VP8".to_owned(),
                String::new(),
            )
        })
        .collect();
    tracks.push((
        0,
        AUDIO_PT,
        48_000,
        2,
        "audio/opus".to_owned(),
        "minptime=10;useinbandfec=1".to_owned(),
    ));
    tracks
}

/// Builds a `.strm` clip from captured RTP (RTCP is skipped; timing from RTP timestamps).
fn build_strm(videos: usize, captured: &[(usize, Vec<u8>)], seconds: u32) -> Result<Vec<u8>> {
    let tracks = vp8_tracks(videos);
    let duration_us = u64::from(seconds) * 1_000_000;
    let mut first_ts: Vec<Option<u32>> = vec![None; tracks.len()];
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
    for t in 0..tracks.len() {
        ensure!(
            records.iter().any(|r| r.2 == t),
            "ffmpeg sent nothing on track {t}"
        );
    }
    records.sort_by_key(|r| (r.0, r.1));
    let packets = records.into_iter().map(|(o, _, t, d)| (o, t, d));
    Ok(write_strm(&tracks, duration_us, packets))
}

/// Serialises a `.strm` clip: the track table, then `(offset_us, track, rtp)` in send order.
pub fn write_strm<'a>(
    tracks: &[StrmTrack],
    duration_us: u64,
    packets: impl Iterator<Item = (u64, usize, &'a [u8])>,
) -> Vec<u8> {
    let mut out = b"STRM".to_vec();
    out.push(1);
    out.push(tracks.len() as u8);
    out.extend_from_slice(&(duration_us as u32).to_be_bytes());
    for (kind, pt, clock, channels, mime, fmtp) in tracks {
        out.extend_from_slice(&[*kind, *pt]);
        out.extend_from_slice(&clock.to_be_bytes());
        out.extend_from_slice(&[*channels, mime.len() as u8]);
        out.extend_from_slice(mime.as_bytes());
        out.extend_from_slice(&(fmtp.len() as u16).to_be_bytes());
        out.extend_from_slice(fmtp.as_bytes());
    }
    let count_at = out.len();
    out.extend_from_slice(&0u32.to_be_bytes());
    let mut count = 0u32;
    for (offset_us, track, data) in packets {
        out.extend_from_slice(&(offset_us as u32).to_be_bytes());
        out.push(track as u8);
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
        count += 1;
    }
    out[count_at..count_at + 4].copy_from_slice(&count.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_splits_once_and_scales_each_branch() {
        assert_eq!(
            filter(&SIMULCAST),
            "[0:v]noise=alls=12:allf=t,format=yuv420p,split=3[s0][s1][s2];\
             [s0]scale=320:180[v0];[s1]scale=640:360[v1];[s2]scale=1280:720[v2]"
        );
        assert_eq!(rate_kbit("2M"), 2000);
        assert_eq!(rate_kbit("600k"), 600);
    }
}
