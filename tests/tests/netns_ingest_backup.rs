//! A backup publisher over RTMP and SRT (`role=backup` in the stream key or the stream id):
//! the token must carry the backup claim, an unknown role is refused with the protocol's
//! refusal, and an accepted backup registers its node as the stream's standby (given back if
//! its encoder leaves before sending media). The switch itself is in `netns_failover_encoders.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use strata_node::auth::{Action, Claims, unix_now};
use strata_tests::cluster::{Cluster, TestNode};
use strata_tests::http::metric_sum;
use strata_tests::ports::require_netns;
use strata_tests::rtmp::{RtmpClient, ffmpeg_exit, ffmpeg_publish};

#[path = "security_common/mod.rs"]
mod security_common;

/// A publish token for `stream` with the backup claim.
fn backup_token(stream: &str) -> String {
    let claims = Claims {
        sub: stream.into(),
        act: Action::Publish,
        exp: unix_now() + 600,
        nbf: None,
        iat: None,
        backup: true,
    };
    security_common::keys().mint("new", &claims).unwrap()
}

async fn standby_of(c: &Cluster, stream: &str) -> Option<String> {
    c.tree(stream).await.ok()?.standby.map(|s| s.node_id)
}

async fn wait_standby(c: &Cluster, stream: &str, want: Option<&str>, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let now = standby_of(c, stream).await;
        if now.as_deref() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "standby of {stream}: {now:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn rtmp(n: &TestNode) -> String {
    n.rtmp.clone().expect("the test node listens for RTMP")
}

fn srt_url(n: &TestNode, stream_id: &str) -> String {
    let addr = n.srt.clone().expect("the test node listens for SRT");
    format!("srt://{addr}?streamid={stream_id}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_ingest_backup_roles_and_tokens_are_checked() {
    require_netns("netns_ingest_backup_roles_and_tokens_are_checked");
    let c = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let a = c
        .node_with(security_common::secured(&c, "a-1", "eu"))
        .await
        .unwrap();
    let b = c
        .node_with(security_common::secured(&c, "b-1", "us"))
        .await
        .unwrap();
    let plain = security_common::valid("cam7", Action::Publish);
    let backup = backup_token("cam7");
    // The primary: ffmpeg over RTMP on a-1.
    let url = format!("rtmp://{}/live/cam7?token={plain}", rtmp(&a));
    let _primary = ffmpeg_publish(&url, "flv", &[]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.tree("cam7").await.ok().and_then(|t| t.main).is_none() {
        assert!(Instant::now() < deadline, "the primary never went live");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // RTMP: the refusal names the reason (`NetStream.Publish.*` status).
    for (key, want) in [
        (format!("cam7?role=standby&token={backup}"), "BadName"),
        (format!("cam7?role=backup&token={plain}"), "Unauthorized"),
        ("cam7?role=backup".to_owned(), "Unauthorized"),
        (
            format!("cam7?role=backup&token={}", backup_token("cam8")),
            "Unauthorized",
        ),
    ] {
        let r = RtmpClient::publish(&rtmp(&b), "live", &key).await.unwrap();
        let why = r.err().unwrap_or_else(|| panic!("{key}: accepted"));
        assert!(why.contains(want), "{key}: {why}");
    }
    assert_eq!(standby_of(&c, "cam7").await, None);

    // SRT: rejected in the handshake; ffmpeg gives up.
    for id in [
        format!("#!::r=cam7,m=publish,role=standby,t={backup}"),
        format!("#!::r=cam7,m=publish,role=backup,t={plain}"),
        format!("cam7?role=backup&token={plain}"),
    ] {
        let child = ffmpeg_publish(&srt_url(&b, &id), "mpegts", &[]).unwrap();
        let (ok, stderr) = ffmpeg_exit(child, Duration::from_secs(15)).await.unwrap();
        assert!(!ok, "{id}: ffmpeg must fail: {stderr}");
    }
    let m = b.metrics().await.unwrap();
    assert!(metric_sum(&m, "strata_node_srt_refused_total", &[]) >= 3.0);
    assert!(metric_sum(&m, "strata_node_rtmp_refused_total", &[]) >= 4.0);
    assert_eq!(standby_of(&c, "cam7").await, None);

    // With the claim: the node becomes the standby at once (before any media); a backup whose
    // encoder leaves before sending media gives the standby back.
    let key = format!("cam7?role=backup&token={backup}");
    let client = RtmpClient::publish(&rtmp(&b), "live", &key).await.unwrap();
    let client = client.unwrap_or_else(|why| panic!("refused: {why}"));
    wait_standby(&c, "cam7", Some("b-1"), Duration::from_secs(5)).await;
    // A second backup (SRT, on the primary's node) is refused while b-1 holds the standby.
    let id = format!("#!::r=cam7,m=publish,role=backup,t={backup}");
    let child = ffmpeg_publish(&srt_url(&a, &id), "mpegts", &[]).unwrap();
    let (ok, stderr) = ffmpeg_exit(child, Duration::from_secs(15)).await.unwrap();
    assert!(!ok, "a second backup must fail: {stderr}");
    drop(client);
    wait_standby(&c, "cam7", None, Duration::from_secs(15)).await;
    assert_eq!(
        metric_sum(
            &b.metrics().await.unwrap(),
            "strata_node_backup_publishers_total",
            &[]
        ),
        0.0,
        "a backup without media never became a session"
    );
}
