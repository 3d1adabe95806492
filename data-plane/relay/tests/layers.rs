//! Layer interest over real QUIC: a downstream that asks for some simulcast
//! layers gets only those, and a layer it adds starts at a keyframe.

mod common;

use common::*;
use strata_media::hub::LayerSet;
use strata_media::{Catalog, Layer, MediaPacket, TrackKind};
use strata_relay::certs::DevCa;
use strata_relay::{RelayTls, Subscription, SubscriptionEvent};
use tokio::time::timeout;

const LOW: u8 = 1;
const MID: u8 = 2;
const HIGH: u8 = 3;

fn simulcast() -> Catalog {
    let mut catalog = catalog();
    let video = catalog.tracks[1].clone();
    catalog.tracks.truncate(1);
    for (id, layer) in [(LOW, Layer::Low), (MID, Layer::Mid), (HIGH, Layer::High)] {
        let mut t = video.clone();
        t.id = id;
        t.kind = TrackKind::Video;
        t.layer = Some(layer);
        catalog.tracks.push(t);
    }
    catalog
}

/// Packets up to (and including) the one with ingest time `last`.
async fn packets_until(sub: &mut Subscription, last: u64) -> Vec<(u8, u64)> {
    let mut got = Vec::new();
    loop {
        match timeout(DEADLINE, sub.recv()).await.expect("packet in time") {
            Some(SubscriptionEvent::Packet(MediaPacket {
                track, ingest_us, ..
            })) => {
                got.push((track, ingest_us));
                if ingest_us == last {
                    return got;
                }
            }
            other => panic!("expected a packet, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_downstream_gets_only_the_layers_it_asks_for() {
    let ca = DevCa::generate().unwrap();
    let up = Upstream::start(&RelayTls::Mutual(creds(&ca, "node-a")), None);
    let mut source = up.hub.attach_source("cam", simulcast()).unwrap();
    let stream = up.hub.get("cam").unwrap();
    let mut interest = stream.watch_interest();
    let (client, client_stats) = client(&RelayTls::Mutual(creds(&ca, "node-b")));
    let mut sub = client.subscribe(up.addr, "node-a", "cam", 1).await.unwrap();
    timeout(DEADLINE, interest.wait_for(|i| *i == LayerSet::ALL))
        .await
        .unwrap()
        .unwrap();

    let low = LayerSet::EMPTY.with(Layer::Low);
    sub.set_layers(low);
    timeout(DEADLINE, interest.wait_for(|i| *i == low))
        .await
        .expect("the upstream applies the interest")
        .unwrap();
    let mut seq = 0..;
    let mut next = || seq.next().unwrap_or(0);
    for (track, key) in [(LOW, true), (MID, true), (HIGH, true), (AUDIO, false)] {
        source.push(pkt(track, key, next()));
    }
    for track in [LOW, MID, HIGH, AUDIO] {
        source.push(pkt(track, false, next()));
    }
    assert_eq!(
        packets_until(&mut sub, 7).await,
        vec![(LOW, 0), (AUDIO, 3), (LOW, 4), (AUDIO, 7)]
    );

    // High is wanted again: the upstream asks its source for a keyframe and
    // starts high there.
    let low_high = low.with(Layer::High);
    sub.set_layers(low_high);
    timeout(DEADLINE, interest.wait_for(|i| *i == low_high))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        timeout(DEADLINE, source.keyframe_request()).await.unwrap(),
        Some(HIGH)
    );
    source.push(pkt(HIGH, false, 8));
    source.push(pkt(MID, true, 9));
    source.push(pkt(HIGH, true, 10));
    source.push(pkt(HIGH, false, 11));
    source.push(pkt(AUDIO, false, 12));
    assert_eq!(
        packets_until(&mut sub, 12).await,
        vec![(HIGH, 10), (HIGH, 11), (AUDIO, 12)]
    );
    let sent = client_stats
        .layer_interest_out
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(sent, 2);
    up.stop().await;
}

#[tokio::test]
async fn interest_is_not_sent_for_a_stream_without_layers() {
    let ca = DevCa::generate().unwrap();
    let up = Upstream::start(&RelayTls::Mutual(creds(&ca, "node-a")), None);
    let source = up.hub.attach_source("cam", catalog()).unwrap();
    let (client, client_stats) = client(&RelayTls::Mutual(creds(&ca, "node-b")));
    let mut sub = client.subscribe(up.addr, "node-a", "cam", 1).await.unwrap();
    sub.set_layers(LayerSet::EMPTY);
    source.push(pkt(VIDEO, true, 0));
    source.push(pkt(AUDIO, false, 1));
    assert_eq!(
        packets_until(&mut sub, 1).await,
        vec![(VIDEO, 0), (AUDIO, 1)]
    );
    let sent = client_stats
        .layer_interest_out
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(sent, 0);
    up.stop().await;
}
