//! The hub's per-sink layer filter and the union it publishes for the puller.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::timeout;

use super::*;
use crate::media::{Catalog, Layer, MediaPacket, TrackInfo, TrackKind};

const AUDIO: u8 = 0;
const LOW: u8 = 1;
const MID: u8 = 2;
const HIGH: u8 = 3;

fn simulcast_catalog() -> Catalog {
    let track = |id, kind, layer| TrackInfo {
        id,
        kind,
        mime: "video/VP8".into(),
        clock_rate: 90000,
        channels: 0,
        fmtp: String::new(),
        payload_type: 96,
        layer,
    };
    Catalog {
        tracks: vec![
            track(AUDIO, TrackKind::Audio, None),
            track(LOW, TrackKind::Video, Some(Layer::Low)),
            track(MID, TrackKind::Video, Some(Layer::Mid)),
            track(HIGH, TrackKind::Video, Some(Layer::High)),
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

fn tracks(sink: &mut Sink) -> Vec<(u8, u64)> {
    std::iter::from_fn(|| sink.try_recv())
        .map(|p| (p.track, p.ingest_us))
        .collect()
}

fn set(layers: &[Layer]) -> LayerSet {
    layers.iter().fold(LayerSet::EMPTY, |s, l| s.with(*l))
}

#[tokio::test(start_paused = true)]
async fn a_sink_gets_only_its_layers_and_the_union_goes_upstream() {
    let hub = Hub::new(HubConfig::default());
    let mut source = hub.attach_source("s", simulcast_catalog()).unwrap();
    let stream = hub.get("s").unwrap();
    let interest = stream.watch_interest();
    let mut all = stream.subscribe();
    let mut low = stream.subscribe();
    assert_eq!(
        *interest.borrow(),
        LayerSet::ALL,
        "a sink that said nothing gets every layer"
    );
    low.set_layers(LayerSet::EMPTY);
    assert_eq!(*interest.borrow(), LayerSet::ALL);
    drop(all);
    assert_eq!(
        *interest.borrow(),
        set(&[Layer::Low]),
        "the lowest layer is always wanted"
    );
    all = stream.subscribe();
    all.set_layers(set(&[Layer::High]));
    assert_eq!(*interest.borrow(), set(&[Layer::Low, Layer::High]));

    for (i, t) in [LOW, MID, HIGH, AUDIO, LOW, MID, HIGH]
        .into_iter()
        .enumerate()
    {
        source.push(pkt(t, i < 3, i as u64));
    }
    assert_eq!(tracks(&mut low), vec![(LOW, 0), (AUDIO, 3), (LOW, 4)]);
    // `all` dropped mid (it had every layer: nothing to wait for).
    assert_eq!(
        tracks(&mut all),
        vec![(LOW, 0), (HIGH, 2), (AUDIO, 3), (LOW, 4), (HIGH, 6)]
    );
    assert!(
        timeout(Duration::from_secs(1), source.keyframe_request())
            .await
            .is_err(),
        "no layer was added"
    );
}

#[tokio::test(start_paused = true)]
async fn a_sink_subscribed_with_layers_never_widens_the_interest() {
    let hub = Hub::new(HubConfig::default());
    let source = hub.attach_source("s", simulcast_catalog()).unwrap();
    let stream = hub.get("s").unwrap();
    let mut interest = stream.watch_interest();
    source.push(pkt(LOW, true, 0));
    source.push(pkt(HIGH, true, 1));
    let mut sink = stream.subscribe_layers(set(&[Layer::Mid]));
    assert!(interest.has_changed().unwrap());
    assert_eq!(
        *interest.borrow_and_update(),
        set(&[Layer::Low, Layer::Mid])
    );
    // The cached group replays through the filter.
    assert_eq!(tracks(&mut sink), vec![(LOW, 0)]);
}

#[tokio::test(start_paused = true)]
async fn a_layer_wanted_again_starts_at_its_keyframe() {
    let hub = Hub::new(HubConfig::default());
    let mut source = hub.attach_source("s", simulcast_catalog()).unwrap();
    let stream = hub.get("s").unwrap();
    let mut sink = stream.subscribe();
    sink.set_layers(LayerSet::EMPTY);
    source.push(pkt(LOW, true, 0));
    source.push(pkt(MID, true, 1));
    sink.set_layers(set(&[Layer::Mid]));
    assert_eq!(
        timeout(Duration::from_secs(1), source.keyframe_request()).await,
        Ok(Some(MID))
    );
    source.push(pkt(MID, false, 2));
    source.push(pkt(LOW, false, 3));
    source.push(pkt(MID, true, 4));
    source.push(pkt(MID, false, 5));
    assert_eq!(
        tracks(&mut sink),
        vec![(LOW, 0), (LOW, 3), (MID, 4), (MID, 5)]
    );
}

#[tokio::test(start_paused = true)]
async fn streams_without_layers_ignore_interest() {
    let mut catalog = simulcast_catalog();
    for t in &mut catalog.tracks {
        t.layer = None;
    }
    let hub = Hub::new(HubConfig::default());
    let source = hub.attach_source("s", catalog).unwrap();
    let stream = hub.get("s").unwrap();
    let mut sink = stream.subscribe();
    sink.set_layers(LayerSet::EMPTY);
    source.push(pkt(LOW, true, 0));
    source.push(pkt(MID, false, 1));
    source.push(pkt(AUDIO, false, 2));
    assert_eq!(tracks(&mut sink), vec![(LOW, 0), (MID, 1), (AUDIO, 2)]);
}
