//! Tests of the async shell: real channels, paused tokio time, no sleeping.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::{Instant, timeout};

use super::*;
use crate::media::{Catalog, MediaPacket, TrackInfo, TrackKind};

const AUDIO: u8 = 0;
const VIDEO: u8 = 1;

fn av_catalog() -> Catalog {
    let track = |id, kind, mime: &str| TrackInfo {
        id,
        kind,
        mime: mime.into(),
        clock_rate: 90000,
        channels: 0,
        fmtp: String::new(),
        payload_type: 96,
        layer: None,
    };
    Catalog {
        tracks: vec![
            track(AUDIO, TrackKind::Audio, "audio/opus"),
            track(VIDEO, TrackKind::Video, "video/VP8"),
        ],
    }
}

fn pkt(track: u8, keyframe: bool, seq: u64) -> MediaPacket {
    MediaPacket {
        track,
        keyframe,
        ingest_us: seq,
        rtp: Bytes::from(seq.to_be_bytes().to_vec()),
    }
}

fn small_queue(n: usize) -> HubConfig {
    HubConfig {
        sink_queue: n,
        ..HubConfig::default()
    }
}

fn drain(sink: &mut Sink) -> Vec<u64> {
    std::iter::from_fn(|| sink.try_recv())
        .map(|p| p.ingest_us)
        .collect()
}

#[tokio::test]
async fn slow_sink_skips_to_next_keyframe_fast_sink_gets_everything() {
    let hub = Hub::new(small_queue(4));
    let source = hub.attach_source("s", av_catalog()).unwrap();
    let stream = hub.get("s").unwrap();
    let mut fast = stream.subscribe();
    let mut slow = stream.subscribe();
    let mut fast_got = Vec::new();
    // Group 1: keyframe at 0, packets 1..=9; group 2: keyframe at 10, 11..=12.
    for seq in 0..13 {
        source.push(pkt(VIDEO, seq % 10 == 0, seq));
        fast_got.extend(drain(&mut fast));
    }
    assert_eq!(fast_got, (0..13).collect::<Vec<_>>());
    assert_eq!(fast.skipped_groups(), 0);
    // The slow sink got the head of group 1, skipped its tail, resumed at 10.
    assert_eq!(drain(&mut slow), vec![0, 1, 2, 3]);
    assert_eq!(slow.skipped_groups(), 1);
    for seq in 13..15 {
        source.push(pkt(VIDEO, false, seq));
    }
    assert_eq!(drain(&mut slow), Vec::<u64>::new(), "still skipping");
    source.push(pkt(VIDEO, true, 20));
    source.push(pkt(AUDIO, false, 21));
    assert_eq!(drain(&mut slow), vec![20, 21]);
}

#[tokio::test]
async fn new_sink_starts_on_cached_group() {
    let hub = Hub::new(HubConfig::default());
    let source = hub.attach_source("s", av_catalog()).unwrap();
    let stream = hub.get("s").unwrap();
    // Before any keyframe: nothing cached, a new sink waits.
    source.push(pkt(VIDEO, false, 0));
    let mut early = stream.subscribe();
    source.push(pkt(VIDEO, false, 1));
    assert_eq!(drain(&mut early), Vec::<u64>::new());

    for (seq, kf) in [(2, true), (3, false), (4, false), (5, true), (6, false)] {
        source.push(pkt(VIDEO, kf, seq));
    }
    source.push(pkt(AUDIO, false, 7));
    let mut late = stream.subscribe();
    assert_eq!(
        drain(&mut late),
        vec![5, 6, 7],
        "replayed from the last keyframe"
    );
    source.push(pkt(VIDEO, false, 8));
    let first = timeout(Duration::from_secs(1), late.recv()).await.unwrap();
    assert_eq!(first.map(|p| p.ingest_us), Some(8));
    assert_eq!(drain(&mut early), vec![2, 3, 4, 5, 6, 7, 8]);
}

#[tokio::test(start_paused = true)]
async fn keyframe_requests_are_coalesced_per_track() {
    let hub = Hub::new(HubConfig::default());
    let mut source = hub.attach_source("s", av_catalog()).unwrap();
    let stream = hub.get("s").unwrap();
    let a = stream.subscribe();
    let b = stream.subscribe();
    let t0 = Instant::now();
    a.request_keyframe(VIDEO);
    b.request_keyframe(VIDEO);
    a.request_keyframe(VIDEO);
    assert_eq!(source.keyframe_request().await, Some(VIDEO));
    assert_eq!(Instant::now(), t0, "first one immediately");
    // The burst's remainder is forwarded once, when the window ends.
    assert_eq!(source.keyframe_request().await, Some(VIDEO));
    assert_eq!(Instant::now() - t0, Duration::from_millis(300));
    // Nothing more is pending.
    assert!(
        timeout(Duration::from_secs(5), source.keyframe_request())
            .await
            .is_err()
    );

    // A keyframe arriving inside the window serves the pending request.
    b.request_keyframe(VIDEO);
    assert_eq!(source.keyframe_request().await, Some(VIDEO));
    a.request_keyframe(VIDEO);
    assert!(
        timeout(Duration::from_millis(50), source.keyframe_request())
            .await
            .is_err()
    );
    source.push(pkt(VIDEO, true, 0));
    assert!(
        timeout(Duration::from_secs(5), source.keyframe_request())
            .await
            .is_err()
    );

    // Tracks are independent.
    a.request_keyframe(AUDIO);
    assert_eq!(source.keyframe_request().await, Some(AUDIO));
}

#[tokio::test]
async fn upstream_switch_keeps_sinks() {
    let hub = Hub::new(HubConfig::default());
    let first = hub.attach_source("s", av_catalog()).unwrap();
    let stream = hub.get("s").unwrap();
    let mut sink = stream.subscribe();
    let mut state = stream.watch_state();
    first.push(pkt(VIDEO, true, 0));
    first.push(pkt(VIDEO, false, 1));
    assert_eq!(drain(&mut sink), vec![0, 1]);
    assert!(
        matches!(
            hub.attach_source("s", av_catalog()),
            Err(HubError::SourceAttached(_))
        ),
        "one source at a time"
    );

    drop(first);
    assert!(!stream.has_source());
    timeout(Duration::from_secs(1), stream.source_ended())
        .await
        .unwrap();
    assert_eq!(hub.streams(), vec!["s".to_string()], "kept for its sink");

    let mut second = hub.attach_source("s", av_catalog()).unwrap();
    let s = state
        .wait_for(|s| s.source_epoch == 2)
        .await
        .unwrap()
        .clone();
    assert!(s.has_source);
    // The sink waits for the new source's keyframe, which was asked for.
    assert_eq!(second.keyframe_request().await, Some(VIDEO));
    second.push(pkt(VIDEO, false, 10));
    second.push(pkt(VIDEO, true, 11));
    second.push(pkt(AUDIO, false, 12));
    let got = timeout(Duration::from_secs(1), sink.recv()).await.unwrap();
    assert_eq!(got.map(|p| p.ingest_us), Some(11));
    assert_eq!(drain(&mut sink), vec![12]);
}

#[tokio::test]
async fn push_never_blocks_on_a_stalled_sink() {
    let hub = Hub::new(small_queue(16));
    let source = hub.attach_source("s", av_catalog()).unwrap();
    let stream = hub.get("s").unwrap();
    let stalled = stream.subscribe();
    let mut live = stream.subscribe();
    for seq in 0..100_000u64 {
        source.push(pkt(VIDEO, seq % 100 == 0, seq));
        if seq % 8 == 0 {
            drain(&mut live);
        }
    }
    assert_eq!(live.skipped_groups(), 0);
    assert_eq!(
        stalled.skipped_groups(),
        1,
        "stays skipping: never has room"
    );
}

#[tokio::test]
async fn stream_lives_while_it_has_a_source_or_a_sink() {
    let hub = Hub::new(HubConfig::default());
    let source = hub.attach_source("s", av_catalog()).unwrap();
    let stream = hub.get("s").unwrap();
    let mut count = stream.watch_sink_count();
    let sink = stream.subscribe();
    let other = stream.subscribe();
    assert_eq!(*count.borrow_and_update(), 2);
    assert_eq!(stream.sink_count(), 2);
    drop(sink);
    drop(other);
    timeout(Duration::from_secs(1), count.wait_for(|n| *n == 0))
        .await
        .unwrap()
        .unwrap();
    assert!(hub.get("s").is_some(), "source still attached");
    drop(source);
    assert!(hub.get("s").is_none());
    assert!(hub.streams().is_empty());

    // A handle taken before the release can still subscribe; it brings the
    // stream back, and a new source feeds it.
    let mut sink = stream.subscribe();
    assert!(hub.get("s").is_some());
    let source = hub.attach_source("s", av_catalog()).unwrap();
    source.push(pkt(VIDEO, true, 1));
    assert_eq!(drain(&mut sink), vec![1]);
}

#[tokio::test]
async fn close_ends_sinks() {
    let hub = Hub::new(HubConfig::default());
    let source = hub.attach_source("s", av_catalog()).unwrap();
    let mut sink = hub.get("s").unwrap().subscribe();
    source.push(pkt(VIDEO, true, 1));
    source.stream().close();
    assert_eq!(sink.recv().await.map(|p| p.ingest_us), Some(1));
    assert_eq!(sink.recv().await, None);
    assert_eq!(source.stream().sink_count(), 0);
}

#[tokio::test]
async fn audio_only_stream_starts_on_any_packet() {
    let hub = Hub::new(HubConfig::default());
    let mut catalog = av_catalog();
    catalog.tracks.retain(|t| t.kind == TrackKind::Audio);
    let source = hub.attach_source("a", catalog).unwrap();
    source.push(pkt(AUDIO, false, 0));
    let mut sink = hub.get("a").unwrap().subscribe();
    source.push(pkt(AUDIO, false, 1));
    assert_eq!(drain(&mut sink), vec![1]);
}

#[tokio::test]
async fn catalog_change_is_observable() {
    let hub = Hub::new(HubConfig::default());
    let source = hub.attach_source("s", Catalog::default()).unwrap();
    let stream = hub.get("s").unwrap();
    let mut state = stream.watch_state();
    state.borrow_and_update();
    source.set_catalog(av_catalog());
    timeout(Duration::from_secs(1), state.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.borrow().catalog, av_catalog());
    assert_eq!(stream.catalog(), av_catalog());
}
