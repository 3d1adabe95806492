//! Group order over real QUIC: a scripted upstream (a bare quinn server that
//! speaks the wire format) interleaves group streams the way a loaded sender
//! does, and the relay client must still play every group in order.

#![allow(clippy::unwrap_used)] // scripted peer and helpers: failing fast is the point

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use common::*;
use strata_relay::certs::{DevCa, NodeCredentials};
use strata_relay::framing::{
    ControlMessage, Frame, GroupHeader, decode_control, encode_control, encode_frame,
    encode_group_header,
};
use strata_relay::{RelayConfig, RelayStats, RelayTls, Subscription, SubscriptionEvent};
use tokio::time::timeout;

/// A bare quinn server presenting `creds`, with the relay's ALPN.
fn scripted_endpoint(creds: &NodeCredentials) -> quinn::Endpoint {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(creds.chain.clone(), creds.key.clone_key())
        .unwrap();
    tls.alpn_protocols = vec![strata_relay::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap()
}

/// The upstream's side of one subscription.
struct Script {
    conn: quinn::Connection,
    id: u64,
    _ctrl: quinn::SendStream,
}

impl Script {
    /// Accept a connection and one subscription, answer `SubscribeOk`.
    async fn accept(endpoint: &quinn::Endpoint) -> Script {
        let conn = endpoint.accept().await.unwrap().await.unwrap();
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        let mut buf = BytesMut::new();
        let id = loop {
            if let Some(msg) = decode_control(&mut buf).unwrap() {
                match msg {
                    ControlMessage::Subscribe { id, .. } => break id,
                    other => panic!("expected Subscribe, got {other:?}"),
                }
            }
            let chunk = recv.read_chunk(1 << 16, true).await.unwrap().unwrap();
            buf.extend_from_slice(&chunk.bytes);
        };
        let mut out = BytesMut::new();
        let ok = ControlMessage::SubscribeOk { catalog: catalog() };
        encode_control(&ok, &mut out).unwrap();
        send.write_all(&out).await.unwrap();
        Script {
            conn,
            id,
            _ctrl: send,
        }
    }

    /// Open the stream of group `sequence` and write its header.
    async fn open_group(&self, sequence: u64) -> quinn::SendStream {
        let mut stream = self.conn.open_uni().await.unwrap();
        let mut buf = BytesMut::new();
        let header = GroupHeader {
            subscription: self.id,
            sequence,
        };
        encode_group_header(&header, &mut buf);
        stream.write_all(&buf).await.unwrap();
        stream
    }
}

/// Write the frame carrying packet `seq`.
async fn write_packet(stream: &mut quinn::SendStream, seq: u64, keyframe: bool) {
    let send_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let frame = Frame::from_packet(pkt(VIDEO, keyframe, seq), send_us);
    let mut buf = BytesMut::new();
    encode_frame(&frame, &mut buf).unwrap();
    stream.write_all(&buf).await.unwrap();
}

/// Wait until the client's group readers have handed `n` frames to subscriptions.
async fn frames_read(stats: &RelayStats, n: u64) {
    timeout(DEADLINE, async {
        loop {
            let read = stats
                .peers()
                .first()
                .map_or(0, |(_, p)| p.packets_in.load(Ordering::Relaxed));
            if read >= n {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("frames read in time");
}

async fn next_seq(sub: &mut Subscription) -> u64 {
    match timeout(DEADLINE, sub.recv()).await.expect("packet in time") {
        Some(SubscriptionEvent::Packet(p)) => p.ingest_us,
        other => panic!("expected a packet, got {other:?}"),
    }
}

/// A scripted upstream and a client subscribed to it.
async fn setup(cfg: RelayConfig) -> (Script, Subscription, Arc<RelayStats>, quinn::Endpoint) {
    let ca = DevCa::generate().unwrap();
    let endpoint = scripted_endpoint(&creds(&ca, "node-a"));
    let addr: SocketAddr = endpoint.local_addr().unwrap();
    let (client, stats) = client_with(&RelayTls::Mutual(creds(&ca, "node-b")), cfg);
    let (script, sub) = tokio::join!(
        Script::accept(&endpoint),
        client.subscribe(addr, "node-a", "cam", 1)
    );
    (script, sub.unwrap(), stats, endpoint)
}

#[tokio::test]
async fn the_tail_of_a_group_arriving_after_the_next_groups_start_is_played_first() {
    let (up, mut sub, stats, _endpoint) = setup(RelayConfig::default()).await;
    let mut g0 = up.open_group(0).await;
    write_packet(&mut g0, 0, true).await;
    write_packet(&mut g0, 1, false).await;
    frames_read(&stats, 2).await;
    assert_eq!(next_seq(&mut sub).await, 0);
    assert_eq!(next_seq(&mut sub).await, 1);

    // Group 1 starts on its own stream before group 0's tail is sent...
    let mut g1 = up.open_group(1).await;
    write_packet(&mut g1, 10, true).await;
    frames_read(&stats, 3).await;
    // ...which then arrives, then more of group 1.
    write_packet(&mut g0, 2, false).await;
    write_packet(&mut g0, 3, false).await;
    g0.finish().unwrap();
    frames_read(&stats, 5).await;
    write_packet(&mut g1, 11, false).await;
    g1.finish().unwrap();

    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(next_seq(&mut sub).await);
    }
    assert_eq!(got, [2, 3, 10, 11], "group 0 to its end, then group 1");
    assert_eq!(sub.skipped_groups(), 0);
    assert_eq!(stats.groups_skipped.load(Ordering::Relaxed), 0);
    assert_eq!(stats.late_frames.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_reset_group_releases_the_held_next_group_at_once() {
    // Only the reset can release group 1 within the test's deadline.
    let cfg = RelayConfig {
        group_order_window: Duration::from_secs(600),
        ..RelayConfig::default()
    };
    let (up, mut sub, stats, _endpoint) = setup(cfg).await;
    let mut g0 = up.open_group(0).await;
    write_packet(&mut g0, 0, true).await;
    assert_eq!(next_seq(&mut sub).await, 0);
    let mut g1 = up.open_group(1).await;
    write_packet(&mut g1, 10, true).await;
    frames_read(&stats, 2).await;

    g0.reset(quinn::VarInt::from_u32(2)).unwrap();
    assert_eq!(next_seq(&mut sub).await, 10);
    write_packet(&mut g1, 11, false).await;
    assert_eq!(next_seq(&mut sub).await, 11, "group 1 flows");
    assert_eq!(sub.skipped_groups(), 1);
    assert_eq!(stats.groups_skipped.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_group_that_stalls_is_given_up_after_the_window() {
    let window = Duration::from_millis(50);
    let cfg = RelayConfig {
        group_order_window: window,
        ..RelayConfig::default()
    };
    let (up, mut sub, stats, _endpoint) = setup(cfg).await;
    let mut g0 = up.open_group(0).await;
    write_packet(&mut g0, 0, true).await;
    assert_eq!(next_seq(&mut sub).await, 0);
    let mut g1 = up.open_group(1).await;
    write_packet(&mut g1, 10, true).await;
    frames_read(&stats, 2).await;

    let asked = tokio::time::Instant::now();
    assert_eq!(next_seq(&mut sub).await, 10);
    assert!(asked.elapsed() >= window, "held for the window");
    assert_eq!(sub.skipped_groups(), 1);

    // Group 0's tail, now too late, is dropped; group 1 goes on.
    write_packet(&mut g0, 1, false).await;
    frames_read(&stats, 3).await;
    write_packet(&mut g1, 11, false).await;
    assert_eq!(next_seq(&mut sub).await, 11);
    assert_eq!(stats.late_frames.load(Ordering::Relaxed), 1);
}
