//! Hostile peers and a silently dead upstream.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use strata_relay::certs::DevCa;
use strata_relay::{RelayTls, Subscription, SubscriptionEvent};
use tokio::net::UdpSocket;
use tokio::time::timeout;

async fn expect_packet(sub: &mut Subscription, seq: u64) {
    match timeout(DEADLINE, sub.recv()).await.expect("packet in time") {
        Some(SubscriptionEvent::Packet(p)) => assert_eq!(p.ingest_us, seq),
        other => panic!("expected packet {seq}, got {other:?}"),
    }
}

#[tokio::test]
async fn garbage_wrong_alpn_and_junk_streams_do_not_disturb_a_subscription() {
    let ca = DevCa::generate().unwrap();
    let up = Upstream::start(&RelayTls::Mutual(creds(&ca, "node-a")), None);
    let source = up.hub.attach_source("cam", catalog()).unwrap();
    let (client, _) = client(&RelayTls::Mutual(creds(&ca, "node-b")));
    let mut sub = client.subscribe(up.addr, "node-a", "cam", 1).await.unwrap();
    source.push(pkt(VIDEO, true, 0));
    expect_packet(&mut sub, 0).await;

    // Garbage datagrams, including Initial-sized ones.
    let junk = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..200u32 {
        let len = [1usize, 20, 1200, 1500][i as usize % 4];
        let bytes: Vec<u8> = (0..len).map(|j| (j as u32 * 31 + i * 7) as u8).collect();
        junk.send_to(&bytes, up.addr).await.unwrap();
    }
    source.push(pkt(VIDEO, false, 1));
    expect_packet(&mut sub, 1).await;

    // A proper certificate but the wrong ALPN: refused at the handshake.
    let stranger = raw_endpoint(&creds(&ca, "node-c"), b"h3");
    let attempt = timeout(DEADLINE, stranger.connect(up.addr, "node-a").unwrap()).await;
    assert!(
        matches!(attempt, Ok(Err(_))),
        "wrong ALPN must fail: {attempt:?}"
    );

    // The right ALPN, then junk on a control stream and a stray uni stream.
    let rude = raw_endpoint(&creds(&ca, "node-d"), strata_relay::ALPN);
    let conn = timeout(DEADLINE, rude.connect(up.addr, "node-a").unwrap())
        .await
        .unwrap()
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&[0xff; 64]).await.unwrap();
    let answer = timeout(DEADLINE, recv.read_to_end(1024)).await.unwrap();
    assert!(answer.is_err(), "junk control stream is reset: {answer:?}");
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&[0, 0, 0, 1, 0x04]).await.unwrap(); // KeyframeRequest before Subscribe: truncated
    send.finish().unwrap();
    let answer = timeout(DEADLINE, recv.read_to_end(1024)).await.unwrap();
    assert!(
        answer.is_err(),
        "malformed first message is refused: {answer:?}"
    );

    source.push(pkt(VIDEO, false, 2));
    expect_packet(&mut sub, 2).await;
    assert!(
        up.stats
            .protocol_errors
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );
    up.stop().await;
}

/// Forwards datagrams between one client and `upstream` until aborted; then
/// the upstream is silent, as if its machine died.
#[allow(clippy::unwrap_used)] // test helper
async fn udp_proxy(upstream: SocketAddr) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let front = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let back = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    back.connect(upstream).await.unwrap();
    let addr = front.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut client = None;
        let (mut a, mut b) = (vec![0u8; 65536], vec![0u8; 65536]);
        loop {
            tokio::select! {
                r = front.recv_from(&mut a) => {
                    let Ok((n, from)) = r else { continue };
                    client = Some(from);
                    let _ = back.send(&a[..n]).await;
                }
                r = back.recv(&mut b) => {
                    let Ok(n) = r else { continue };
                    if let Some(to) = client {
                        let _ = front.send_to(&b[..n], to).await;
                    }
                }
            }
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_silently_dead_upstream_is_noticed_within_a_second() {
    let ca = DevCa::generate().unwrap();
    let up = Upstream::start(&RelayTls::Mutual(creds(&ca, "node-a")), None);
    let source = up.hub.attach_source("cam", catalog()).unwrap();
    let (proxy, proxy_task) = udp_proxy(up.addr).await;
    let (client, _) = client(&RelayTls::Mutual(creds(&ca, "node-b")));
    let mut sub = client.subscribe(proxy, "node-a", "cam", 1).await.unwrap();
    source.push(pkt(VIDEO, true, 0));
    expect_packet(&mut sub, 0).await;

    proxy_task.abort();
    let died = tokio::time::Instant::now();
    match timeout(Duration::from_secs(1), sub.recv())
        .await
        .expect("noticed within 1 s")
    {
        Some(SubscriptionEvent::Lost(e)) => {
            tracing::debug!(error = %e, "lost");
        }
        other => panic!("expected Lost, got {other:?}"),
    }
    assert!(died.elapsed() < Duration::from_secs(1));
    up.stop().await;
}
