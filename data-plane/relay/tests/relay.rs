//! The relay over real QUIC on 127.0.0.1, mutual TLS from a generated CA.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use strata_media::MediaPacket;
use strata_relay::certs::DevCa;
use strata_relay::{
    Refusal, RelayError, RelayTls, SubscribeErrorCode, SubscribeRequest, Subscription,
    SubscriptionEvent,
};
use tokio::time::timeout;

async fn next_packet(sub: &mut Subscription) -> MediaPacket {
    loop {
        match timeout(DEADLINE, sub.recv()).await.expect("packet in time") {
            Some(SubscriptionEvent::Packet(p)) => return p,
            Some(SubscriptionEvent::CatalogChanged(_)) => continue,
            other => panic!("expected a packet, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn subscribe_delivers_from_a_keyframe_in_order_and_keyframe_requests_travel_up() {
    let ca = DevCa::generate().unwrap();
    let up = Upstream::start(&RelayTls::Mutual(creds(&ca, "node-a")), None);
    let mut source = up.hub.attach_source("cam", catalog()).unwrap();
    source.push(pkt(VIDEO, false, 100)); // before any keyframe: never sent
    source.push(pkt(VIDEO, true, 0));
    source.push(pkt(AUDIO, false, 1));
    source.push(pkt(VIDEO, false, 2));

    let (client, client_stats) = client(&RelayTls::Mutual(creds(&ca, "node-b")));
    let mut sub = client.subscribe(up.addr, "node-a", "cam", 1).await.unwrap();
    assert_eq!(sub.catalog(), &catalog());
    assert_eq!(sub.peer(), "node-a");
    for seq in 3..12 {
        source.push(pkt(if seq % 3 == 0 { AUDIO } else { VIDEO }, seq == 7, seq));
    }
    let mut got = Vec::new();
    for _ in 0..12 {
        got.push(next_packet(&mut sub).await);
    }
    assert!(
        got[0].keyframe && got[0].track == VIDEO,
        "starts on a keyframe"
    );
    let seqs: Vec<u64> = got.iter().map(|p| p.ingest_us).collect();
    assert_eq!(seqs, (0..12).collect::<Vec<_>>());
    assert_eq!(got[3], pkt(AUDIO, false, 3), "payload intact");

    sub.request_keyframe(VIDEO);
    let asked = timeout(DEADLINE, source.keyframe_request()).await.unwrap();
    assert_eq!(asked, Some(VIDEO));

    // Metrics: per-peer counters keyed by the certificate's node id.
    let served: Vec<String> = up.stats.peers().into_iter().map(|(id, _)| id).collect();
    assert_eq!(served, vec!["node-b".to_string()]);
    assert!(client_stats.hop_latency.count() >= 12);
    let (peer, counters) = &client_stats.peers()[0];
    assert_eq!(peer, "node-a");
    assert_eq!(
        counters
            .packets_in
            .load(std::sync::atomic::Ordering::Relaxed),
        12
    );

    // Dropping the subscription unsubscribes: the upstream's sink goes away.
    drop(sub);
    let mut sinks = up.hub.get("cam").unwrap().watch_sink_count();
    timeout(DEADLINE, sinks.wait_for(|n| *n == 0))
        .await
        .unwrap()
        .unwrap();
    up.stop().await;
}

#[tokio::test]
async fn refusals_carry_code_and_reason_and_see_the_peer() {
    let ca = DevCa::generate().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let authorizer = move |req: &SubscribeRequest<'_>| {
        seen2.lock().unwrap().push(req.peer.map(str::to_owned));
        if req.epoch == 7 {
            Ok(())
        } else {
            Err(Refusal {
                code: SubscribeErrorCode::StaleEpoch,
                reason: format!("epoch {} is stale, current is 7", req.epoch),
            })
        }
    };
    let up = Upstream::start(
        &RelayTls::Mutual(creds(&ca, "node-a")),
        Some(Arc::new(authorizer)),
    );
    let _source = up.hub.attach_source("cam", catalog()).unwrap();
    let (client, _) = client(&RelayTls::Mutual(creds(&ca, "node-b")));

    match client.subscribe(up.addr, "node-a", "nope", 7).await {
        Err(RelayError::Refused { code, reason }) => {
            assert_eq!(code, SubscribeErrorCode::NotFound);
            assert!(reason.contains("nope"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    match client.subscribe(up.addr, "node-a", "cam", 6).await {
        Err(RelayError::Refused { code, reason }) => {
            assert_eq!(code, SubscribeErrorCode::StaleEpoch);
            assert!(reason.contains("stale"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let ok = client.subscribe(up.addr, "node-a", "cam", 7).await.unwrap();
    let again = client.subscribe(up.addr, "node-a", "cam", 7).await.unwrap();
    assert_eq!(
        client.open_connections(),
        1,
        "one pooled connection per upstream"
    );
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .all(|p| p.as_deref() == Some("node-b"))
    );
    drop((ok, again));
    up.stop().await;
}

#[tokio::test]
async fn subscriptions_per_connection_are_bounded() {
    let ca = DevCa::generate().unwrap();
    let cfg = strata_relay::RelayConfig {
        max_subscriptions_per_connection: 2,
        ..Default::default()
    };
    let up = Upstream::start_with(&RelayTls::Mutual(creds(&ca, "node-a")), None, cfg);
    let _source = up.hub.attach_source("cam", catalog()).unwrap();
    let (client, _) = client(&RelayTls::Mutual(creds(&ca, "node-b")));
    let first = client.subscribe(up.addr, "node-a", "cam", 1).await.unwrap();
    let _second = client.subscribe(up.addr, "node-a", "cam", 1).await.unwrap();
    match client.subscribe(up.addr, "node-a", "cam", 1).await {
        Err(RelayError::Refused { code, .. }) => {
            assert_eq!(code, SubscribeErrorCode::TooManySubscriptions)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Unsubscribing frees a slot.
    drop(first);
    let mut sinks = up.hub.get("cam").unwrap().watch_sink_count();
    timeout(DEADLINE, sinks.wait_for(|n| *n == 1))
        .await
        .unwrap()
        .unwrap();
    let third = timeout(DEADLINE, async {
        loop {
            // The slot frees when the upstream's session task has finished.
            match client.subscribe(up.addr, "node-a", "cam", 1).await {
                Ok(sub) => break sub,
                Err(RelayError::Refused { .. }) => tokio::task::yield_now().await,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .unwrap();
    drop(third);
    up.stop().await;
}

#[tokio::test]
async fn a_client_without_a_ca_signed_certificate_is_refused() {
    let ca = DevCa::generate().unwrap();
    let up = Upstream::start(&RelayTls::Mutual(creds(&ca, "node-a")), None);
    let _source = up.hub.attach_source("cam", catalog()).unwrap();

    // Trusts the right CA, but presents a certificate from another one.
    let rogue = DevCa::generate().unwrap();
    let mut forged = creds(&rogue, "node-b");
    forged.ca = ca.certificate().clone();
    let (forger, _) = client(&RelayTls::Mutual(forged));
    let result = timeout(DEADLINE, forger.subscribe(up.addr, "node-a", "cam", 1))
        .await
        .expect("refused in time");
    assert!(result.is_err(), "{result:?}");

    // Nor does an insecure client (no certificate at all) get in.
    let (anon, _) = client(&RelayTls::Insecure {
        node_id: "anon".into(),
    });
    let result = timeout(DEADLINE, anon.subscribe(up.addr, "node-a", "cam", 1))
        .await
        .expect("refused in time");
    assert!(result.is_err(), "{result:?}");
    assert_eq!(up.subscriptions_served(), 0);
    up.stop().await;
}

#[tokio::test]
async fn insecure_mode_works_when_both_sides_ask_for_it() {
    let up = Upstream::start(
        &RelayTls::Insecure {
            node_id: "node-a".into(),
        },
        None,
    );
    let source = up.hub.attach_source("cam", catalog()).unwrap();
    let (client, _) = client(&RelayTls::Insecure {
        node_id: "node-b".into(),
    });
    let mut sub = client.subscribe(up.addr, "node-a", "cam", 1).await.unwrap();
    source.push(pkt(VIDEO, true, 0));
    assert_eq!(next_packet(&mut sub).await.ingest_us, 0);
    up.stop().await;
}

#[tokio::test]
async fn certificates_from_files_work() {
    let dir = std::env::temp_dir().join(format!("strata-relay-it-{}", std::process::id()));
    DevCa::generate().unwrap().write(&dir).unwrap();
    let ca = DevCa::load(&dir).unwrap();
    for node in ["node-a", "node-b"] {
        creds(&ca, node).write(&dir).unwrap();
    }
    let load = |node| strata_relay::certs::NodeCredentials::load(&dir, node).unwrap();
    let up = Upstream::start(&RelayTls::Mutual(load("node-a")), None);
    let source = up.hub.attach_source("cam", catalog()).unwrap();
    let (client, _) = client(&RelayTls::Mutual(load("node-b")));
    let mut sub = client.subscribe(up.addr, "node-a", "cam", 1).await.unwrap();
    source.push(pkt(VIDEO, true, 5));
    assert_eq!(next_packet(&mut sub).await.ingest_us, 5);
    up.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A CA rotation without a cut-over: while `ca.pem` holds both CAs, a node still on a
/// certificate of the old CA and a node already on the new one relay to each other; a node
/// that trusts only the new CA refuses the old certificate.
#[tokio::test]
async fn a_ca_bundle_bridges_a_ca_rotation() {
    let base = std::env::temp_dir().join(format!("strata-relay-rotation-{}", std::process::id()));
    let (old_dir, new_dir) = (base.join("old"), base.join("new"));
    DevCa::generate().unwrap().write(&old_dir).unwrap();
    DevCa::generate().unwrap().write(&new_dir).unwrap();
    let (old, new) = (
        DevCa::load(&old_dir).unwrap(),
        DevCa::load(&new_dir).unwrap(),
    );
    creds(&old, "node-a").write(&old_dir).unwrap();
    creds(&new, "node-b").write(&new_dir).unwrap();
    creds(&new, "node-c").write(&new_dir).unwrap();
    let old_pem = std::fs::read_to_string(old_dir.join("ca.pem")).unwrap();
    let new_pem = std::fs::read_to_string(new_dir.join("ca.pem")).unwrap();
    // node-a's directory trusts old + new; node-b's new + old (its own CA first).
    std::fs::write(old_dir.join("ca.pem"), format!("{old_pem}{new_pem}")).unwrap();
    let a = strata_relay::certs::NodeCredentials::load(&old_dir, "node-a").unwrap();
    assert_eq!(a.extra_cas.len(), 1);
    let strict = strata_relay::certs::NodeCredentials::load(&new_dir, "node-c").unwrap();
    assert!(strict.extra_cas.is_empty());
    std::fs::write(new_dir.join("ca.pem"), format!("{new_pem}{old_pem}")).unwrap();
    let b = strata_relay::certs::NodeCredentials::load(&new_dir, "node-b").unwrap();

    let up = Upstream::start(&RelayTls::Mutual(a), None);
    let source = up.hub.attach_source("cam", catalog()).unwrap();
    let (bridged, _) = client(&RelayTls::Mutual(b));
    let mut sub = timeout(DEADLINE, bridged.subscribe(up.addr, "node-a", "cam", 1))
        .await
        .expect("in time")
        .unwrap();
    source.push(pkt(VIDEO, true, 7));
    assert_eq!(next_packet(&mut sub).await.ingest_us, 7);

    let (strict, _) = client(&RelayTls::Mutual(strict));
    let refused = timeout(DEADLINE, strict.subscribe(up.addr, "node-a", "cam", 1))
        .await
        .expect("refused in time");
    assert!(refused.is_err(), "{refused:?}");
    up.stop().await;
    std::fs::remove_dir_all(&base).unwrap();
}

#[tokio::test]
async fn stream_end_and_catalog_change_reach_the_subscriber() {
    let ca = DevCa::generate().unwrap();
    let up = Upstream::start(&RelayTls::Mutual(creds(&ca, "node-a")), None);
    let source = up.hub.attach_source("cam", catalog()).unwrap();
    let (client, _) = client(&RelayTls::Mutual(creds(&ca, "node-b")));
    let mut sub = client.subscribe(up.addr, "node-a", "cam", 1).await.unwrap();

    let mut audio_only = catalog();
    audio_only.tracks.retain(|t| t.track_is_audio());
    source.set_catalog(audio_only.clone());
    match timeout(DEADLINE, sub.recv()).await.unwrap() {
        Some(SubscriptionEvent::CatalogChanged(c)) => assert_eq!(c, audio_only),
        other => panic!("expected CatalogChanged, got {other:?}"),
    }
    assert_eq!(sub.catalog(), &audio_only);

    source.stream().close();
    match timeout(DEADLINE, sub.recv()).await.unwrap() {
        Some(SubscriptionEvent::Ended { reason }) => assert!(reason.contains("closed")),
        other => panic!("expected Ended, got {other:?}"),
    }
    assert!(sub.recv().await.is_none(), "terminal");
    up.stop().await;
}

trait IsAudio {
    fn track_is_audio(&self) -> bool;
}

impl IsAudio for strata_media::TrackInfo {
    fn track_is_audio(&self) -> bool {
        self.kind == strata_media::TrackKind::Audio
    }
}

#[tokio::test]
async fn closed_upstream_is_noticed_within_a_second() {
    let ca = DevCa::generate().unwrap();
    let up = Upstream::start(&RelayTls::Mutual(creds(&ca, "node-a")), None);
    let _source = up.hub.attach_source("cam", catalog()).unwrap();
    let (client, _) = client(&RelayTls::Mutual(creds(&ca, "node-b")));
    let mut sub = client.subscribe(up.addr, "node-a", "cam", 1).await.unwrap();
    let stopped = tokio::time::Instant::now();
    up.stop().await;
    match timeout(Duration::from_secs(1), sub.recv())
        .await
        .expect("noticed in time")
    {
        Some(SubscriptionEvent::Lost(_)) => {}
        other => panic!("expected Lost, got {other:?}"),
    }
    assert!(stopped.elapsed() < Duration::from_secs(1));
}
