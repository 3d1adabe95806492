//! Unit tests of the load client's packet counting.

use super::*;

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p
}

#[test]
fn tells_rtp_from_rtcp_stun_and_dtls() {
    assert_eq!(rtp_header(&rtp(7, 42)), Some((42, 7)));
    let mut rtcp = rtp(7, 42);
    rtcp[1] = 200; // sender report
    assert_eq!(rtp_header(&rtcp), None);
    assert_eq!(rtp_header(&[0x00, 0x01, 0, 0]), None);
    assert_eq!(
        rtp_header(&[22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        None
    );
}

#[test]
fn counts_loss_across_wrap_and_reordering() {
    let c = Counters::default();
    for seq in [65_533u16, 65_534, 65_535, 1, 0, 3] {
        c.record(9, seq, 100, None);
    }
    c.record(10, 5, 50, None);
    let t = c.tally();
    // SSRC 9: 65533..=3 is 7 numbers, 6 received (2 missing); SSRC 10: 1 of 1.
    assert_eq!(t.received, 7);
    assert_eq!(t.expected, 8);
    assert_eq!(t.lost(), 1);
    assert_eq!(t.bytes, 650);
    let later = Tally {
        received: 17,
        expected: 20,
        bytes: 1000,
    };
    assert_eq!(later.since(&t).lost(), 2);
}

/// A socket registered with `recv` for `counters`, its address, and a peer socket.
fn registered(
    recv: &RecvLoop,
    counters: &Arc<Counters>,
) -> (recv::CountingSocket, SocketAddr, std::net::UdpSocket) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let to = socket.local_addr().expect("addr");
    let socket = recv
        .handle()
        .register(socket, Arc::clone(counters))
        .expect("register");
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    (socket, to, peer)
}

/// The next datagram the loop passes on to the stack, and its sender.
async fn passed_on(socket: &recv::CountingSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 64];
    let mut meta = [webrtc::runtime::RecvMeta::default()];
    let n = tokio::time::timeout(
        Duration::from_secs(5),
        futures::future::poll_fn(|cx| {
            let mut bufs = [std::io::IoSliceMut::new(&mut buf)];
            socket.poll_recv(cx, &mut bufs, &mut meta)
        }),
    )
    .await
    .expect("a datagram passed on")
    .expect("poll_recv");
    assert_eq!(n, 1);
    (buf[..meta[0].len].to_vec(), meta[0].addr)
}

#[tokio::test]
async fn receive_loop_counts_rtp_and_passes_the_rest_on() {
    let recv = RecvLoop::start().expect("receive loop");
    let counters = Arc::new(Counters::default());
    let (socket, to, peer) = registered(&recv, &counters);
    for seq in 0..40u16 {
        peer.send_to(&rtp(seq, 7), to).expect("send");
    }
    let stun = [0x00, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42];
    peer.send_to(&stun, to).expect("send");
    // The one non-RTP datagram comes out of the socket, from the peer.
    let (data, from) = passed_on(&socket).await;
    assert_eq!(data, stun);
    assert_eq!(from, peer.local_addr().expect("addr"));
    // RTP was counted before it, on the same socket, in order.
    let t = counters.tally();
    assert_eq!((t.received, t.expected), (40, 40));
    assert!(counters.first_packet().is_some());
}

/// `rtp(seq, ssrc)` with the transport-wide sequence number `tseq` in extension 3.
fn rtp_twcc(seq: u16, ssrc: u32, tseq: u16) -> Vec<u8> {
    let mut p = rtp(seq, ssrc);
    p[0] |= 0x10;
    let [hi, lo] = tseq.to_be_bytes();
    p.splice(12..12, [0xbe, 0xde, 0, 1, (3 << 4) | 1, hi, lo, 0]);
    p
}

#[tokio::test]
async fn with_transport_cc_the_loop_records_arrivals_and_opens_each_stream() {
    let recv = RecvLoop::start().expect("receive loop");
    let counters = Arc::new(Counters::default());
    counters.enable_transport_cc(3);
    let (socket, to, peer) = registered(&recv, &counters);
    for i in 0..10u16 {
        peer.send_to(&rtp_twcc(100 + i, 7, 500 + i), to)
            .expect("send");
    }
    peer.send_to(&rtp_twcc(1, 8, 510), to).expect("send");
    // The first packet of each SSRC goes to the stack (which opens the stream's receiver).
    let passed = [passed_on(&socket).await.0, passed_on(&socket).await.0];
    assert_eq!(passed, [rtp_twcc(100, 7, 500), rtp_twcc(1, 8, 510)]);
    // Every packet's transport-wide number was recorded, in arrival order.
    let mut arrivals = Vec::new();
    assert_eq!(counters.take_arrivals(&mut arrivals), Some(8));
    let seqs: Vec<u16> = arrivals.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (500..=510).collect::<Vec<_>>());
    assert!(arrivals.windows(2).all(|w| w[0].1 <= w[1].1));
    assert_eq!(counters.tally().received, 11);
}
