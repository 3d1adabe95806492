//! RTMP ingest end to end: Debian's ffmpeg publishes H.264 + AAC over RTMP
//! to a node of one region; a WebRTC player on a node of another region
//! gets keyframe-first, gap-free video and Opus audio. Then what must be
//! refused or cleaned up: bad tokens, a second publisher, HEVC, a stalled
//! publisher, garbage and silent connections, the per-address share.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_node::auth::Action;
use strata_proto::v1;
use strata_tests::cluster::{Cluster, TestNode};
use strata_tests::http::metric_sum;
use strata_tests::media::TestPlayer;
use strata_tests::ports::require_netns;
use strata_tests::rtmp::{FIXTURE_FLV, RtmpClient, closed_within, ffmpeg_exit, ffmpeg_publish};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[path = "security_common/mod.rs"]
mod security_common;

fn init() {
    strata_tests::init_test_tracing(
        "warn,strata_node=info,rtc=error,rtc_ice=error,rtc_dtls=error,webrtc=error",
    );
}

fn rtmp(node: &TestNode) -> String {
    node.rtmp.clone().expect("the test node listens for RTMP")
}

async fn metric(node: &TestNode, name: &str) -> f64 {
    metric_sum(&node.metrics().await.unwrap(), name, &[])
}

/// Waits until `cond` holds, polling every 20 ms, or fails after `within`.
async fn wait_until<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn main_origin(c: &Cluster, stream: &str) -> Option<String> {
    c.tree(stream).await.ok()?.main.map(|m| m.node_id)
}

/// Plays `stream` on `node` once it is live anywhere (WHEP answers 404 before).
async fn play_when_live(node: &TestNode, stream: &str) -> TestPlayer {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match TestPlayer::start(&node.http, stream).await {
            Ok(p) => return p,
            Err(e) => {
                assert!(Instant::now() < deadline, "never playable: {e:#}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_rtmp_ffmpeg_plays_over_whep_in_another_region() {
    require_netns("netns_rtmp_ffmpeg_plays_over_whep_in_another_region");
    init();
    let c = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let eu = c.node("eu-1", "eu").await.unwrap();
    let us = c.node("us-1", "us").await.unwrap();

    let url = format!("rtmp://{}/live/cam1", rtmp(&eu));
    let ffmpeg = ffmpeg_publish(&url, "flv", &[]).unwrap();
    let player = play_when_live(&us, "cam1").await;
    let st = player
        .wait_for(Duration::from_secs(20), "3 s of media", |s| {
            s.video_packets >= 150 && s.audio_packets >= 150
        })
        .await
        .unwrap();
    assert_eq!(st.first_video_is_keyframe, Some(true), "{st:?}");
    assert_eq!(st.seq_gaps, 0, "{st:?}");
    assert_eq!(st.ssrc_changes, 0, "{st:?}");
    // One keyframe a second (-g 25 at 25 fps): at least two by now.
    assert!(st.keyframes >= 2, "{st:?}");
    assert_eq!(main_origin(&c, "cam1").await.as_deref(), Some("eu-1"));
    assert_eq!(metric(&eu, "strata_node_rtmp_publishers_total").await, 1.0);
    assert_eq!(metric(&eu, "strata_node_publishers").await, 1.0);

    // The encoder goes away: the node unpublishes the stream.
    drop(ffmpeg);
    wait_until(
        Duration::from_secs(10),
        "the stream to be unpublished",
        || async { main_origin(&c, "cam1").await.is_none() },
    )
    .await;
    assert_eq!(metric(&eu, "strata_node_publishers").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_rtmp_tokens_names_and_duplicates_are_refused() {
    require_netns("netns_rtmp_tokens_names_and_duplicates_are_refused");
    init();
    let c = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let a = c
        .node_with(security_common::secured(&c, "a-1", "eu"))
        .await
        .unwrap();
    let b = c
        .node_with(security_common::secured(&c, "b-1", "us"))
        .await
        .unwrap();
    let good = security_common::valid("cam2", Action::Publish);
    let play_only = security_common::valid("cam2", Action::Play);
    let other = security_common::valid("cam3", Action::Publish);

    for (key, want) in [
        ("cam2".to_owned(), "Unauthorized"),
        ("cam2?token=garbage".to_owned(), "Unauthorized"),
        (format!("cam2?token={play_only}"), "Unauthorized"),
        (format!("cam2?token={other}"), "Unauthorized"),
        (format!("bad/name?token={good}"), "BadName"),
    ] {
        let r = RtmpClient::publish(&rtmp(&a), "live", &key).await.unwrap();
        let why = r.err().unwrap_or_else(|| panic!("{key}: accepted"));
        assert!(why.contains(want), "{key}: {why}");
    }
    let r = RtmpClient::publish(&rtmp(&a), "other-app", &format!("cam2?token={good}"))
        .await
        .unwrap();
    assert!(r.is_err(), "an unknown application must be refused");

    // ffmpeg with a bad token gives up with the node's reason.
    let child = ffmpeg_publish(
        &format!("rtmp://{}/live/cam2?token=nope", rtmp(&a)),
        "flv",
        &[],
    )
    .unwrap();
    let (ok, stderr) = ffmpeg_exit(child, Duration::from_secs(15)).await.unwrap();
    assert!(!ok, "ffmpeg must fail: {stderr}");

    // The token as the stream key itself; ffmpeg publishes with it.
    let ffmpeg = ffmpeg_publish(&format!("rtmp://{}/live/{good}", rtmp(&a)), "flv", &[]).unwrap();
    wait_until(Duration::from_secs(15), "cam2 live on a-1", || async {
        main_origin(&c, "cam2").await.as_deref() == Some("a-1")
    })
    .await;
    // A second publisher: on the same node, and on a node of another region.
    for node in [&a, &b] {
        let r = RtmpClient::publish(&rtmp(node), "live", &format!("cam2?token={good}"))
            .await
            .unwrap();
        let why = r.err().expect("a second publisher must be refused");
        assert!(why.contains("BadName") && why.contains("already"), "{why}");
    }
    assert!(metric(&a, "strata_node_rtmp_refused_total").await >= 6.0);
    assert_eq!(main_origin(&c, "cam2").await.as_deref(), Some("a-1"));
    drop(ffmpeg);

    // A drained node takes no new RTMP publisher.
    let mut nodes = c.clients.nodes.clone();
    nodes
        .drain(v1::DrainRequest {
            node_id: "b-1".into(),
        })
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "b-1 to learn it is drained",
        || async {
            strata_tests::http::get(&format!("{}/healthz", b.http))
                .await
                .is_ok_and(|r| r.status == 503)
        },
    )
    .await;
    let cam9 = security_common::valid("cam9", Action::Publish);
    let r = RtmpClient::publish(&rtmp(&b), "live", &format!("cam9?token={cam9}"))
        .await
        .unwrap();
    let why = r.err().expect("a drained node must refuse");
    assert!(
        why.contains("Rejected") && why.contains("draining"),
        "{why}"
    );
    assert!(main_origin(&c, "cam9").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_rtmp_hevc_stalls_and_garbage_are_cleaned_up() {
    require_netns("netns_rtmp_hevc_stalls_and_garbage_are_cleaned_up");
    init();
    let c = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let mut cfg = c.node_config("n-1", "eu");
    cfg.rtmp_idle_timeout = Duration::from_millis(800);
    cfg.rtmp_setup_timeout = Duration::from_secs(2);
    cfg.rtmp_max_connections_per_ip = 3;
    let n = c.node_with(cfg).await.unwrap();
    let addr = rtmp(&n);

    // Enhanced RTMP HEVC: refused with a status error, then closed; nothing stays published.
    let mut hevc = RtmpClient::publish(&addr, "live", "hevc")
        .await
        .unwrap()
        .unwrap();
    let mut tag = vec![0x90];
    tag.extend_from_slice(b"hvc1");
    tag.extend_from_slice(&[1, 2, 3, 4]);
    hevc.video(0, Bytes::from(tag)).await.unwrap();
    let said = hevc.refusal(Duration::from_secs(5)).await.unwrap();
    assert!(
        said == "NetStream.Publish.Rejected" || said == "closed",
        "{said}"
    );
    assert!(hevc.closed_within(Duration::from_secs(5)).await);
    wait_until(Duration::from_secs(5), "hevc unpublished", || async {
        main_origin(&c, "hevc").await.is_none()
    })
    .await;

    // A publisher that goes live, then stalls: unpublished after the idle timeout.
    let mut stall = RtmpClient::publish(&addr, "live", "stall")
        .await
        .unwrap()
        .unwrap();
    stall.send_flv(FIXTURE_FLV, 0).await.unwrap();
    wait_until(Duration::from_secs(5), "stall live", || async {
        main_origin(&c, "stall").await.is_some()
    })
    .await;
    let went_live = Instant::now();
    assert!(
        stall.closed_within(Duration::from_secs(5)).await,
        "a stalled publisher is closed"
    );
    assert!(went_live.elapsed() >= Duration::from_millis(500));
    wait_until(Duration::from_secs(5), "stall unpublished", || async {
        main_origin(&c, "stall").await.is_none()
    })
    .await;

    // Garbage instead of a handshake: closed.
    let mut junk = TcpStream::connect(&addr).await.unwrap();
    let bytes: Vec<u8> = (0..8192u32).map(|i| (i * 7919 % 251) as u8).collect();
    let _ = junk.write_all(&bytes).await;
    assert!(closed_within(&mut junk, Duration::from_secs(3)).await);
    // A valid handshake, then a chunk claiming a 16 MiB message that never
    // comes: closed at the setup deadline.
    let mut partial = TcpStream::connect(&addr).await.unwrap();
    let mut p0p1 = vec![3u8];
    p0p1.extend(std::iter::repeat_n(0u8, 1536));
    partial.write_all(&p0p1).await.unwrap();
    // Type-0 chunk header on csid 3: timestamp 0, length 0xffffff, type 20, stream 0.
    let mut c0 = vec![0x03, 0, 0, 0, 0xff, 0xff, 0xff, 20, 0, 0, 0, 0];
    c0.extend(std::iter::repeat_n(0u8, 128));
    let _ = partial.write_all(&c0).await;
    let t = Instant::now();
    assert!(closed_within(&mut partial, Duration::from_secs(5)).await);
    assert!(t.elapsed() <= Duration::from_secs(3), "{:?}", t.elapsed());
    // Silent connections beyond the per-address share are closed at once.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    wait_until(Duration::from_secs(2), "3 connections admitted", || async {
        metric(&n, "strata_node_rtmp_connections_total").await >= 7.0
    })
    .await;
    let mut fourth = TcpStream::connect(&addr).await.unwrap();
    assert!(closed_within(&mut fourth, Duration::from_millis(500)).await);
    // ... and the held ones at the setup deadline.
    for mut s in held {
        assert!(closed_within(&mut s, Duration::from_secs(4)).await);
    }

    // The node still serves: a real publisher goes live and plays.
    let ffmpeg = ffmpeg_publish(&format!("rtmp://{addr}/live/after"), "flv", &[]).unwrap();
    let player = play_when_live(&n, "after").await;
    let st = player
        .wait_for(Duration::from_secs(20), "media after the abuse", |s| {
            s.video_packets >= 50 && s.audio_packets >= 50
        })
        .await
        .unwrap();
    assert_eq!(st.first_video_is_keyframe, Some(true), "{st:?}");
    assert_eq!(st.seq_gaps, 0, "{st:?}");
    drop(ffmpeg);
}

/// `srt://ADDR?streamid=…`; ffmpeg passes the stream id on as written (it
/// does not URL-decode it), `#`, `:` and `,` included.
fn srt_url(node: &TestNode, stream_id: &str) -> String {
    let addr = node.srt.clone().expect("the test node listens for SRT");
    format!("srt://{addr}?streamid={stream_id}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_srt_ffmpeg_plays_over_whep_in_another_region() {
    require_netns("netns_srt_ffmpeg_plays_over_whep_in_another_region");
    init();
    let c = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let eu = c.node("eu-1", "eu").await.unwrap();
    let us = c.node("us-1", "us").await.unwrap();

    let ffmpeg = ffmpeg_publish(&srt_url(&eu, "#!::r=cam5,m=publish"), "mpegts", &[]).unwrap();
    let player = play_when_live(&us, "cam5").await;
    let st = player
        .wait_for(Duration::from_secs(20), "3 s of media", |s| {
            s.video_packets >= 150 && s.audio_packets >= 150
        })
        .await
        .unwrap();
    assert_eq!(st.first_video_is_keyframe, Some(true), "{st:?}");
    assert_eq!(st.seq_gaps, 0, "{st:?}");
    assert_eq!(st.ssrc_changes, 0, "{st:?}");
    assert!(st.keyframes >= 2, "{st:?}");
    assert_eq!(main_origin(&c, "cam5").await.as_deref(), Some("eu-1"));
    assert_eq!(metric(&eu, "strata_node_srt_publishers_total").await, 1.0);

    // A second publisher of the stream, on another region's node: rejected.
    let second = ffmpeg_publish(&srt_url(&us, "#!::r=cam5,m=publish"), "mpegts", &[]).unwrap();
    let (ok, stderr) = ffmpeg_exit(second, Duration::from_secs(15)).await.unwrap();
    assert!(!ok, "a second publisher must fail: {stderr}");
    assert!(metric(&us, "strata_node_srt_refused_total").await >= 1.0);

    drop(ffmpeg);
    wait_until(
        Duration::from_secs(15),
        "cam5 to be unpublished",
        || async { main_origin(&c, "cam5").await.is_none() },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_srt_tokens_hevc_and_garbage_are_refused() {
    require_netns("netns_srt_tokens_hevc_and_garbage_are_refused");
    init();
    let c = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let n = c
        .node_with(security_common::secured(&c, "s-1", "eu"))
        .await
        .unwrap();
    // No token, a bad one, and playing (m=request): rejected in the handshake.
    for id in [
        "#!::r=cam6,m=publish",
        "#!::r=cam6,m=publish,t=garbage",
        "#!::r=cam6,m=request",
    ] {
        let child = ffmpeg_publish(&srt_url(&n, id), "mpegts", &[]).unwrap();
        let (ok, stderr) = ffmpeg_exit(child, Duration::from_secs(15)).await.unwrap();
        assert!(!ok, "{id}: ffmpeg must fail: {stderr}");
    }
    assert!(metric(&n, "strata_node_srt_refused_total").await >= 3.0);

    // Garbage datagrams on the SRT port.
    let addr = n.srt.clone().unwrap();
    let junk = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..200u32 {
        let d: Vec<u8> = (0..(i % 1400 + 1)).map(|j| (j * 31 + i) as u8).collect();
        let _ = junk.send_to(&d, &addr).await;
    }

    // HEVC over MPEG-TS: accepted by SRT, refused at the PMT; nothing stays published.
    let token = security_common::valid("hevc", Action::Publish);
    let hevc_url = srt_url(&n, &format!("#!::r=hevc,m=publish,t={token}"));
    let mut cmd = tokio::process::Command::new("/usr/bin/ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25"])
        .args([
            "-c:v",
            "libx265",
            "-x265-params",
            "log-level=error",
            "-t",
            "30",
        ])
        .args(["-f", "mpegts", &hevc_url])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let hevc = cmd.spawn().unwrap();
    let (ok, _) = ffmpeg_exit(hevc, Duration::from_secs(25)).await.unwrap();
    assert!(!ok, "the HEVC publisher must be cut off");
    assert!(main_origin(&c, "hevc").await.is_none());

    // The node still serves: a publisher with a token goes live and plays.
    let good = security_common::valid("cam6", Action::Publish);
    let url = srt_url(&n, &format!("#!::r=cam6,m=publish,t={good}"));
    let ffmpeg = ffmpeg_publish(&url, "mpegts", &[]).unwrap();
    wait_until(Duration::from_secs(15), "cam6 live", || async {
        main_origin(&c, "cam6").await.as_deref() == Some("s-1")
    })
    .await;
    drop(ffmpeg);
}
