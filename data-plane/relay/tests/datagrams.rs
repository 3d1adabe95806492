//! Audio as QUIC datagrams: a bare downstream sees audio frames as datagrams
//! and video on the group stream; the relay client plays both; a downstream
//! that refuses datagrams gets audio on the group stream.

#![allow(clippy::unwrap_used)] // test: failing fast is the point

mod common;

use bytes::BytesMut;
use common::*;
use strata_relay::certs::DevCa;
use strata_relay::framing::{
    ControlMessage, decode_control, decode_datagram, decode_frame, decode_group_header,
    encode_control,
};
use strata_relay::{RelayConfig, RelayTls, SubscriptionEvent};
use tokio::time::timeout;

#[tokio::test]
async fn audio_goes_as_datagrams_and_video_on_the_group_stream() {
    let ca = DevCa::generate().unwrap();
    let up = Upstream::start(&RelayTls::Mutual(creds(&ca, "node-a")), None);
    let source = up.hub.attach_source("cam", catalog()).unwrap();
    let endpoint = raw_endpoint(&creds(&ca, "node-b"), strata_relay::ALPN);
    let conn = timeout(DEADLINE, endpoint.connect(up.addr, "node-a").unwrap())
        .await
        .unwrap()
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut buf = BytesMut::new();
    let sub = ControlMessage::Subscribe {
        id: 5,
        stream: "cam".into(),
        epoch: 1,
    };
    encode_control(&sub, &mut buf).unwrap();
    send.write_all(&buf).await.unwrap();
    let mut ctrl = BytesMut::new();
    let answer = timeout(DEADLINE, async {
        loop {
            if let Some(msg) = decode_control(&mut ctrl).unwrap() {
                return msg;
            }
            let chunk = recv.read_chunk(1 << 16, true).await.unwrap().unwrap();
            ctrl.extend_from_slice(&chunk.bytes);
        }
    })
    .await
    .unwrap();
    assert!(
        matches!(answer, ControlMessage::SubscribeOk { .. }),
        "{answer:?}"
    );

    source.push(pkt(VIDEO, true, 0));
    source.push(pkt(AUDIO, false, 1));
    source.push(pkt(VIDEO, false, 2));
    source.push(pkt(AUDIO, false, 3));

    for want in [1, 3] {
        let d = timeout(DEADLINE, conn.read_datagram())
            .await
            .unwrap()
            .unwrap();
        let (id, frame) = decode_datagram(d).unwrap();
        assert_eq!((id, frame.track, frame.ingest_us), (5, AUDIO, want));
    }
    let mut group = timeout(DEADLINE, conn.accept_uni()).await.unwrap().unwrap();
    let mut data = BytesMut::new();
    let mut video = Vec::new();
    timeout(DEADLINE, async {
        let mut header = None;
        while video.len() < 2 {
            let chunk = group.read_chunk(1 << 16, true).await.unwrap().unwrap();
            data.extend_from_slice(&chunk.bytes);
            if header.is_none() {
                header = decode_group_header(&mut data).unwrap();
            }
            if header.is_some() {
                while let Some(f) = decode_frame(&mut data).unwrap() {
                    video.push((f.track, f.ingest_us));
                }
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        video,
        [(VIDEO, 0), (VIDEO, 2)],
        "no audio on the group stream"
    );
    up.stop().await;
}

#[tokio::test]
async fn the_client_plays_datagram_audio_or_refuses_it() {
    let ca = DevCa::generate().unwrap();
    let up = Upstream::start(&RelayTls::Mutual(creds(&ca, "node-a")), None);
    let source = up.hub.attach_source("cam", catalog()).unwrap();
    for datagrams in [true, false] {
        let cfg = RelayConfig {
            audio_datagrams: datagrams,
            ..RelayConfig::default()
        };
        let (client, _) = client_with(&RelayTls::Mutual(creds(&ca, "node-b")), cfg);
        let mut sub = client.subscribe(up.addr, "node-a", "cam", 1).await.unwrap();
        source.push(pkt(VIDEO, true, 10));
        let mut got = Vec::new();
        while got.len() < 6 {
            match timeout(DEADLINE, sub.recv()).await.unwrap() {
                Some(SubscriptionEvent::Packet(p)) => got.push((p.track, p.ingest_us)),
                other => panic!("{other:?}"),
            }
            if got.len() == 1 {
                for seq in 11..16 {
                    source.push(pkt(AUDIO, false, seq));
                }
            }
        }
        let audio: Vec<u64> = got.iter().filter(|p| p.0 == AUDIO).map(|p| p.1).collect();
        assert_eq!(got[0], (VIDEO, 10), "starts on the keyframe");
        assert_eq!(audio, [11, 12, 13, 14, 15], "datagrams: {datagrams}");
    }
    up.stop().await;
}
