//! The node's token and credential cases: token modes (401, 403, expiry, keys), key reload,
//! the redirect carrying the token, and a real publish and play with tokens (that tokens
//! never reach the logs is `log_secrets.rs`; limits are `security_limits.rs`, peers and TLS
//! `security_peers.rs`). Tests named `netns_…` open WebRTC sessions and run in the
//! loopback-only namespace (scripts/test.sh); the others speak plain HTTP on 127.0.0.1 and run
//! anywhere. See docs/security.md for the whole matrix.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod security_common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_node::auth::{Action, AuthMode, Claims, TokenKeys, unix_now};
use strata_rtc::client::{ClientConfig, Player, PlayerOptions, Publisher};
use strata_tests::cluster::Cluster;
use strata_tests::http;
use strata_tests::media::vp8_clip;
use strata_tests::ports::require_netns;

use security_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_gate_whip_and_whep() {
    let cluster = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let node = cluster
        .node_with(secured(&cluster, "s1", "r"))
        .await
        .unwrap();
    let whip = format!("{}/whip/cam-1", node.http);
    let whep = format!("{}/whep/cam-1", node.http);

    // No token: 401 with the bare challenge.
    let r = post(&whip, None, NOT_SDP).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"strata\"")
    );
    // Not a JWT, a forged signature, an unknown key, alg none, expired: 401 invalid_token.
    let good = valid("cam-*", Action::Publish);
    let mut forged = good.clone();
    forged.pop();
    forged.push(if good.ends_with('A') { 'B' } else { 'A' });
    let mut other = TokenKeys::new();
    other
        .insert("new", b"another-secret-another-secret-0123")
        .unwrap();
    let wrong_key = other
        .mint(
            "new",
            &Claims {
                sub: "cam-1".into(),
                act: Action::Publish,
                exp: unix_now() + 600,
                nbf: None,
                iat: None,
                backup: false,
            },
        )
        .unwrap();
    let none = "eyJhbGciOiJub25lIiwia2lkIjoibmV3In0.eyJzdWIiOiIqIiwiYWN0IjoicHVibGlzaCIsImV4cCI6OTk5OTk5OTk5OX0.";
    let expired = token("new", "cam-1", Action::Publish, unix_now() - 600);
    let unknown_kid = {
        let mut k = TokenKeys::new();
        k.insert("gone", SECRET_1).unwrap();
        k.mint(
            "gone",
            &Claims {
                sub: "cam-1".into(),
                act: Action::Publish,
                exp: unix_now() + 600,
                nbf: None,
                iat: None,
                backup: false,
            },
        )
        .unwrap()
    };
    // Longer-lived than --token-max-ttl (24 h by default), counted from now without iat.
    let too_long = token("new", "cam-1", Action::Publish, unix_now() + 25 * 3600);
    // A wildcard inside a part (`cam-1*` would cover `cam-10` too) is malformed.
    let mid_part = valid("cam-1*", Action::Publish);
    for (what, t) in [
        ("garbage", "not-a-token"),
        ("forged", forged.as_str()),
        ("wrong key", wrong_key.as_str()),
        ("alg none", none),
        ("expired", expired.as_str()),
        ("unknown kid", unknown_kid.as_str()),
        ("lifetime over the maximum", too_long.as_str()),
        ("wildcard inside a part", mid_part.as_str()),
    ] {
        let r = post(&whip, Some(t), NOT_SDP).await;
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        assert!(
            r.header("www-authenticate")
                .is_some_and(|h| h.contains("invalid_token")),
            "{what}: {:?}",
            r.headers
        );
        assert!(!r.text().contains(t), "{what}: the answer echoes the token");
    }
    // Valid tokens for another stream or another action: 403.
    for (what, t) in [
        ("other stream", valid("dog", Action::Publish)),
        ("other prefix", valid("cam-2-*", Action::Publish)),
        ("play token on WHIP", valid("cam-1", Action::Play)),
    ] {
        let r = post(&whip, Some(&t), NOT_SDP).await;
        assert_eq!(r.status, 403, "{what}: {}", r.text());
        assert!(
            r.header("www-authenticate")
                .is_some_and(|h| h.contains("insufficient_scope"))
        );
    }
    let r = post(&whep, Some(&valid("cam-1", Action::Publish)), NOT_SDP).await;
    assert_eq!(r.status, 403, "publish token on WHEP: {}", r.text());

    // A valid token gets past the gate to the offer checks: both keys of the rotation work.
    let r = post(&whip, Some(&good), NOT_SDP).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let old = token("old", "cam-1", Action::Publish, unix_now() + 600);
    assert_eq!(post(&whip, Some(&old), NOT_SDP).await.status, 400);
    // The built-in pages' way: `?token=` (here on a stream that is not live: 404).
    let url = format!("{whep}?token={}", valid("*", Action::Play));
    let r = post(&url, None, NOT_SDP).await;
    assert_ne!(r.status, 401, "{}", r.text());
    assert_ne!(r.status, 403, "{}", r.text());

    // Path tricks get past a wildcard token only to meet the name check: 400.
    let any = valid("*", Action::Publish);
    for path in [
        "/whip/..",
        "/whip/%2e%2e",
        "/whip/a%2Fb",
        "/whip/a%00b",
        "/whip/caf%C3%A9",
    ] {
        let r = post(&format!("{}{path}", node.http), Some(&any), NOT_SDP).await;
        assert!(
            r.status == 400 || r.status == 404,
            "{path}: {} {}",
            r.status,
            r.text()
        );
    }

    // Pages, health and metrics need no token; preflight neither. Tokens travel in page
    // URLs (`?token=`): no answer lets the browser send its URL on as a Referer.
    let page = http::get(&format!("{}/play/cam-1?token=x", node.http))
        .await
        .unwrap();
    assert_eq!(page.status, 200);
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    let refused = post(&whip, None, NOT_SDP).await;
    assert_eq!(refused.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(
        http::request("OPTIONS", &whip, &[], &[])
            .await
            .unwrap()
            .status,
        204
    );
    node.stop().await.unwrap();
}

/// POSTs until `want` answers, within 10 s; returns the last status.
async fn until_status(url: &str, token: &str, want: u16) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = post(url, Some(token), NOT_SDP).await.status;
        if status == want || Instant::now() >= deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_keys_reload_without_a_restart() {
    let cluster = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let dir = std::env::temp_dir().join(format!(
        "strata-reload-{}-{}",
        std::process::id(),
        unix_now()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token-keys");
    std::fs::write(&file, format!("old={}\n", b64(SECRET_1))).unwrap();
    let mut cfg = cluster.node_config("rk", "r");
    cfg.auth = AuthMode::Required;
    cfg.token_keys = Some(file.clone());
    let (reload, reloads) = tokio::sync::mpsc::channel(1);
    let node = cluster.node_with_reloads(cfg, reloads).await.unwrap();
    let whip = format!("{}/whip/cam-1", node.http);
    let old = token("old", "cam-1", Action::Publish, unix_now() + 600);
    let new = token("new", "cam-1", Action::Publish, unix_now() + 600);
    // 400: past the token gate, refused by the offer check.
    assert_eq!(post(&whip, Some(&old), NOT_SDP).await.status, 400);
    assert_eq!(post(&whip, Some(&new), NOT_SDP).await.status, 401);

    // Rotate in the file, then reload (what SIGHUP does in strata-node).
    std::fs::write(&file, format!("new={}\n", b64(SECRET_2))).unwrap();
    reload.send(()).await.unwrap();
    assert_eq!(until_status(&whip, &new, 400).await, 400);
    assert_eq!(post(&whip, Some(&old), NOT_SDP).await.status, 401);

    // A broken file is not taken: the node keeps the keys it has.
    std::fs::write(&file, "new=not-base64-and-short\n").unwrap();
    // The node takes one message at a time and reloads before it takes the next, and the
    // channel holds one: the third send returns only once the first reload is done.
    for _ in 0..3 {
        reload.send(()).await.unwrap();
    }
    assert_eq!(post(&whip, Some(&new), NOT_SDP).await.status, 400);
    node.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_names_no_node_or_region() {
    let cluster = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let here = cluster.node("edge-here", "region-here").await.unwrap();
    let there = cluster.node("origin-7f3a", "region-far").await.unwrap();
    // The stream is live on the other node (claimed as its WHIP would).
    let mut c = cluster.clients.clone();
    c.routing
        .publish(strata_proto::v1::PublishRequest {
            stream: "cam".into(),
            node_id: "origin-7f3a".into(),
            unreachable: None,
        })
        .await
        .unwrap();
    let r = post(&format!("{}/whip/cam", here.http), None, NOT_SDP).await;
    assert_eq!(r.status, 409, "{}", r.text());
    let text = r.text();
    assert!(text.contains("live elsewhere"), "{text}");
    for secret in ["origin-7f3a", "region-far"] {
        assert!(!text.contains(secret), "the 409 names {secret}: {text}");
    }
    there.stop().await.unwrap();
    here.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_without_keys_refuses_to_start() {
    let cluster = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let mut cfg = cluster.node_config("nokeys", "r");
    cfg.auth = AuthMode::Required;
    let err = cluster.node_with(cfg).await.err().expect("must not start");
    assert!(format!("{err:#}").contains("exited"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_carries_the_token_to_the_next_node() {
    let cluster = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let mut full = secured(&cluster, "full", "r");
    full.max_publishers = 0;
    let full = cluster.node_with(full).await.unwrap();
    let spare = cluster
        .node_with(secured(&cluster, "spare", "r"))
        .await
        .unwrap();
    let t = valid("cam", Action::Publish);
    let r = post(&format!("{}/whip/cam", full.http), Some(&t), NOT_SDP).await;
    assert_eq!(r.status, 307, "{}", r.text());
    let loc = r.header("location").unwrap().to_owned();
    assert!(
        loc.starts_with(&format!("{}/whip/cam?token=", spare.http)),
        "{loc}"
    );
    // A browser drops Authorization on a cross-origin redirect: the query carries it.
    let r = post(&loc, None, NOT_SDP).await;
    assert_eq!(r.status, 400, "{}", r.text());
    spare.stop().await.unwrap();
    full.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_publish_and_play_with_tokens() {
    require_netns("netns_publish_and_play_with_tokens");
    let cluster = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let node = cluster
        .node_with(secured(&cluster, "t1", "r"))
        .await
        .unwrap();
    let clip = vp8_clip().unwrap();

    let publisher = Publisher::new(clip.tracks(), &ClientConfig::default())
        .await
        .unwrap();
    let offer = publisher.offer().await.unwrap();
    let whip = format!("{}/whip/cam-1", node.http);
    assert_eq!(post(&whip, None, &offer).await.status, 401);
    let r = post(&whip, Some(&valid("cam-1", Action::Publish)), &offer).await;
    assert_eq!(r.status, 201, "{}", r.text());
    publisher.set_answer(&r.text()).await.unwrap();
    publisher.connected(Duration::from_secs(15)).await.unwrap();
    let session = format!("{}{}", node.http, r.header("location").unwrap());
    let sender = {
        let clip = clip.clone();
        let publisher = Arc::new(publisher);
        let p = publisher.clone();
        (
            publisher,
            tokio::spawn(async move { p.send_clip(clip, None).await }),
        )
    };

    // A prefix play token.
    let player = Player::new(&PlayerOptions::default(), &ClientConfig::default())
        .await
        .unwrap();
    let offer = player.offer().await.unwrap();
    let whep = format!("{}/whep/cam-1", node.http);
    let r = post(&whep, Some(&valid("cam-1", Action::Publish)), &offer).await;
    assert_eq!(r.status, 403);
    let r = post(&whep, Some(&valid("cam-*", Action::Play)), &offer).await;
    assert_eq!(r.status, 201, "{}", r.text());
    player.set_answer(&r.text()).await.unwrap();
    player.connected(Duration::from_secs(15)).await.unwrap();

    // The session URL is the capability: a guessed one is 404, the real one needs no token.
    let guessed = format!("{}/whip/cam-1/1{}", node.http, "0".repeat(32));
    let r = http::request("DELETE", &guessed, &[], &[]).await.unwrap();
    assert_eq!(r.status, 404);
    let r = http::request("DELETE", &session, &[], &[]).await.unwrap();
    assert_eq!(r.status, 200);
    sender.1.abort();
    sender.0.close().await;
    player.close().await;
    node.stop().await.unwrap();
}
