//! The node's hostile-input and credential cases: token modes (401, 403, expiry, keys),
//! the per-address rate limit (429), slow-loris clients, and a real publish and play with
//! tokens (that tokens never reach the logs is `log_secrets.rs`). Tests named `netns_…` open
//! WebRTC sessions and run in the loopback-only namespace (scripts/test.sh); the others speak
//! plain HTTP on 127.0.0.1 and run anywhere. See docs/security.md for the whole matrix.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod security_common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_node::NodeConfig;
use strata_node::auth::{Action, AuthMode, Claims, TokenKeys, unix_now};
use strata_rtc::client::{ClientConfig, Player, PlayerOptions, Publisher};
use strata_tests::cluster::Cluster;
use strata_tests::http;
use strata_tests::media::vp8_clip;
use strata_tests::ports::require_netns;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
async fn rate_limit_answers_429_with_retry_after() {
    let cluster = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let mut cfg = cluster.node_config("rl", "r");
    // Two requests, then one per 100 s: the third is over whatever the timing.
    cfg.post_rate_per_ip = 0.01;
    cfg.post_burst_per_ip = 2;
    let node = cluster.node_with(cfg).await.unwrap();
    let url = format!("{}/whep/x", node.http);
    let wrong_type = [("Content-Type", "text/plain")];
    for _ in 0..2 {
        let r = http::request("POST", &url, &wrong_type, b"x")
            .await
            .unwrap();
        assert_eq!(r.status, 415);
    }
    let r = http::request("POST", &url, &wrong_type, b"x")
        .await
        .unwrap();
    assert_eq!(r.status, 429, "{}", r.text());
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=100).contains(&retry), "Retry-After {retry}");
    // WHIP and trickle PATCH share the budget; other routes are not limited.
    let r = http::request("POST", &format!("{}/whip/x", node.http), &wrong_type, b"x")
        .await
        .unwrap();
    assert_eq!(r.status, 429);
    let frag = [("Content-Type", "application/trickle-ice-sdpfrag")];
    let r = http::request(
        "PATCH",
        &format!("{}/whep/x/some-session", node.http),
        &frag,
        b"a=ice-ufrag:x\r\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 429, "{}", r.text());
    let m = http::get(&format!("{}/metrics", node.http)).await.unwrap();
    assert_eq!(m.status, 200);
    node.stop().await.unwrap();
}

/// Reads until the server closes the connection; returns when, and what it sent.
async fn until_closed(s: &mut TcpStream, within: Duration) -> (Duration, Vec<u8>) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((start + within).into(), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (start.elapsed(), got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("connection still open after {within:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_clients_are_closed_at_the_header_timeout() {
    let cluster = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let mut cfg = cluster.node_config("sl", "r");
    cfg.http_header_timeout = Duration::from_millis(500);
    let node = cluster.node_with(cfg).await.unwrap();
    let (authority, _) = http::split_url(&node.http).unwrap();

    // A client that sends its headers a byte at a time, forever.
    let mut slow = TcpStream::connect(&authority).await.unwrap();
    slow.write_all(b"POST /whip/x HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let trickle = {
        let (mut rd, mut wr) = slow.into_split();
        let writer = tokio::spawn(async move {
            for _ in 0..100 {
                if wr.write_all(b"X").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let start = Instant::now();
        let mut buf = [0u8; 256];
        let closed = loop {
            match tokio::time::timeout(Duration::from_secs(5), rd.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break start.elapsed(),
                Ok(Ok(_)) => continue,
                Err(_) => panic!("slow-loris connection still open after 5 s"),
            }
        };
        writer.abort();
        closed
    };
    assert!(trickle < Duration::from_secs(3), "closed after {trickle:?}");

    // A client that connects and sends nothing.
    let mut idle = TcpStream::connect(&authority).await.unwrap();
    let (after, _) = until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(
        after < Duration::from_secs(3),
        "idle closed after {after:?}"
    );

    // Normal clients are served meanwhile.
    let r = http::get(&format!("{}/healthz", node.http)).await.unwrap();
    assert_eq!(r.status, 200);
    node.stop().await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_grpc_message_is_refused() {
    let cluster = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let mut nodes = cluster.clients.nodes.clone();
    // Over tonic's 4 MiB decoding limit: refused before any handler runs.
    let huge = "x".repeat(5 << 20);
    let r = nodes
        .get_node(strata_proto::v1::GetNodeRequest { node_id: huge })
        .await
        .expect_err("must be refused");
    assert!(
        matches!(
            r.code(),
            tonic::Code::ResourceExhausted | tonic::Code::OutOfRange | tonic::Code::Internal
        ),
        "{r:?}"
    );
    // Just under the limit is still only a bad name.
    let big = "x".repeat(1 << 20);
    let r = nodes
        .get_node(strata_proto::v1::GetNodeRequest { node_id: big })
        .await
        .expect_err("bad name");
    assert_eq!(r.code(), tonic::Code::InvalidArgument, "{r:?}");
}

/// Subscribes with `client` until the refusal satisfies `done` (deadline 10 s).
async fn refusal_until(
    client: &strata_relay::RelayClient,
    addr: std::net::SocketAddr,
    done: impl Fn(strata_relay::SubscribeErrorCode, &str) -> bool,
) -> (strata_relay::SubscribeErrorCode, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.subscribe(addr, "up", "nothing", 1).await {
            Err(strata_relay::RelayError::Refused { code, reason }) => {
                if done(code, &reason) {
                    return (code, reason);
                }
                assert!(Instant::now() < deadline, "last refusal: {code:?} {reason}");
            }
            other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_refuses_peers_that_are_not_registered_nodes() {
    use strata_relay::{RelayClient, RelayConfig, RelayStats, RelayTls, SubscribeErrorCode};
    let cluster = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let cfg = cluster.node_config("up", "r");
    let certs = cfg.certs_dir.clone().unwrap();
    let up = cluster.node_with(cfg).await.unwrap();
    let mut c = cluster.clients.clone();
    let info = c
        .nodes
        .get_node(strata_proto::v1::GetNodeRequest {
            node_id: "up".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    let addr: std::net::SocketAddr = info.relay_addr.parse().unwrap();
    let ca = strata_relay::certs::DevCa::load(&certs).unwrap();
    let client_for = |id: &str| {
        let creds = ca.issue(id, &["127.0.0.1".parse().unwrap()]).unwrap();
        RelayClient::new(
            std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
            &RelayTls::Mutual(creds),
            RelayConfig::default(),
            RelayStats::new(),
        )
        .unwrap()
    };

    // A certificate of the cluster CA, but no registration: refused, first as retryable
    // while the node refreshes its registry view, then for good.
    let rogue = client_for("rogue");
    let (code, reason) = refusal_until(&rogue, addr, |code, _| {
        code == SubscribeErrorCode::NotAuthorized
    })
    .await;
    assert_eq!(code, SubscribeErrorCode::NotAuthorized);
    assert!(
        reason.contains("\"rogue\" is not a registered node"),
        "{reason}"
    );

    // Once registered, the same kind of certificate gets past the peer check to the
    // stream check ("not an origin").
    c.register("legit", "r").await.unwrap();
    let legit = client_for("legit");
    let (code, reason) = refusal_until(&legit, addr, |_, reason| {
        !reason.contains("not a registered node")
    })
    .await;
    assert_eq!(code, SubscribeErrorCode::NotFound, "{reason}");
    assert!(reason.contains("not an origin"), "{reason}");
    up.stop().await.unwrap();
}

/// A gRPC channel to `addr` over TLS trusting `dir/ca.pem`, presenting `dir/{id}.pem` when
/// `id` is given.
async fn tls_channel(
    addr: std::net::SocketAddr,
    dir: &std::path::Path,
    id: Option<&str>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("cp");
    if let Some(id) = id {
        let cert = std::fs::read(dir.join(format!("{id}.pem"))).unwrap();
        let key = std::fs::read(dir.join(format!("{id}.key"))).unwrap();
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_over_tls_knows_nodes_and_operators() {
    use strata_proto::v1;
    use strata_proto::v1::node_service_client::NodeServiceClient;
    use strata_proto::v1::routing_service_client::RoutingServiceClient;
    use tonic::Code;

    let dir = std::env::temp_dir().join(format!("strata-cp-tls-{}", std::process::id()));
    let ca = strata_relay::certs::DevCa::generate().unwrap();
    ca.write(&dir).unwrap();
    let localhost = ["127.0.0.1".parse().unwrap()];
    for id in ["cp", "n1"] {
        ca.issue(id, &localhost).unwrap().write(&dir).unwrap();
    }
    let ops = dir.join("operators");
    std::fs::write(&ops, "alice=alice-token-0123456789\n").unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = strata_control::Config {
        listen: addr,
        store: strata_control::StoreKind::Memory,
        tls_cert: Some(dir.join("cp.pem")),
        tls_key: Some(dir.join("cp.key")),
        client_ca: Some(dir.join("ca.pem")),
        operator_tokens: Some(ops),
        ..strata_control::Config::default()
    };
    config.check_transport().unwrap();
    let kv = strata_control::kv::Kv::Memory(strata_control::kv::memory::MemoryKv::new());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(strata_control::run_with_store(
        config,
        kv,
        listener,
        async {
            let _ = stopped.await;
        },
    ));

    // The node's own client TLS settings (cluster CA, node certificate); the server is
    // verified by the IP address in its certificate.
    let url = format!("https://{addr}");
    let tls = strata_node::control_tls::client_tls(std::slice::from_ref(&url), Some(&dir), "n1")
        .unwrap()
        .unwrap();
    let node_ch = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut node = NodeServiceClient::new(node_ch.clone());
    let info = |id: &str| v1::NodeInfo {
        id: id.into(),
        region: "r".into(),
        relay_addr: "127.0.0.1:4433".into(),
        http_url: format!("http://127.0.0.1:8080/{id}"),
        capacity: 1,
        version: "test".into(),
    };
    // The node registers as itself once the replica serves.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = node
            .register(v1::RegisterRequest {
                node: Some(info("n1")),
            })
            .await;
        match r {
            Ok(_) => break,
            Err(e) if e.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("register as itself: {e:?}"),
        }
    }
    // Not as another node, and not an operator's RPC.
    let e = node
        .register(v1::RegisterRequest {
            node: Some(info("n2")),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = node
        .drain(v1::DrainRequest {
            node_id: "n2".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let mut node_routing = RoutingServiceClient::new(node_ch);
    let e = node_routing
        .list_streams(v1::ListStreamsRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // What a node needs to read is allowed.
    node.list_nodes(v1::ListNodesRequest::default())
        .await
        .unwrap();

    // No certificate and no token: unauthenticated.
    let anon_ch = tls_channel(addr, &dir, None).await.unwrap();
    let e = NodeServiceClient::new(anon_ch.clone())
        .list_nodes(v1::ListNodesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    // An operator token: operator RPCs, and drain of any node, but never a node's own RPCs.
    let with_token = |token: &'static str| {
        move |mut req: tonic::Request<()>| {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            Ok(req)
        }
    };
    let mut op_routing = RoutingServiceClient::with_interceptor(
        anon_ch.clone(),
        with_token("alice-token-0123456789"),
    );
    op_routing
        .list_streams(v1::ListStreamsRequest {})
        .await
        .unwrap();
    let mut op_nodes =
        NodeServiceClient::with_interceptor(anon_ch.clone(), with_token("alice-token-0123456789"));
    op_nodes
        .drain(v1::DrainRequest {
            node_id: "n1".into(),
        })
        .await
        .unwrap();
    let e = op_nodes
        .register(v1::RegisterRequest {
            node: Some(info("n3")),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let mut bad =
        NodeServiceClient::with_interceptor(anon_ch, with_token("mallory-token-0123456789"));
    let e = bad
        .list_nodes(v1::ListNodesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(!e.message().contains("mallory"), "{e:?}");

    // The operator CLI over TLS: the cluster CA and a token file (the control plane's own
    // `name=token` format is accepted), an error naming what is missing otherwise.
    {
        use strata_control::cli::{self, CliError, Command, Common};
        let cli_cmd =
            |ca_cert: Option<std::path::PathBuf>, token_file: Option<&str>| Command::Nodes {
                region: None,
                common: Common {
                    control_plane: vec![format!("https://{addr}")],
                    json: true,
                    ca_cert,
                    tls_server_name: None,
                    token_file: token_file.map(|f| dir.join(f)),
                },
            };
        std::fs::write(dir.join("mallory"), "mallory-token-0123456789\n").unwrap();
        let mut out = Vec::new();
        cli::run(
            &cli_cmd(Some(dir.join("ca.pem")), Some("operators")),
            &mut out,
        )
        .await
        .unwrap();
        let listed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(
            listed
                .as_array()
                .is_some_and(|a| a.iter().any(|n| n["id"] == "n1")),
            "{listed}"
        );
        let e = cli::run(
            &cli_cmd(Some(dir.join("ca.pem")), Some("mallory")),
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&e, CliError::Rpc(s) if s.code() == Code::Unauthenticated),
            "{e:?}"
        );
        assert!(!e.to_string().contains("mallory-token"), "{e}");
        let e = cli::run(&cli_cmd(None, Some("operators")), &mut Vec::new())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("--ca-cert"), "{e}");
        let e = cli::run(
            &cli_cmd(Some(dir.join("ca.pem")), Some("absent")),
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, CliError::Credentials(_)), "{e:?}");
    }

    // A real node registers over TLS with its certificate (and keeps its lease).
    ca.issue("n9", &localhost).unwrap().write(&dir).unwrap();
    let cfg = NodeConfig {
        id: "n9".into(),
        region: "r".into(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        relay_listen: "127.0.0.1:0".parse().unwrap(),
        rtc_listen: "127.0.0.1:0".parse().unwrap(),
        rtmp_listen: "127.0.0.1:0".into(),
        srt_listen: "127.0.0.1:0".into(),
        control_plane: vec![format!("https://{addr}")],
        certs_dir: Some(dir.clone()),
        auth: AuthMode::Open,
        ..NodeConfig::default()
    };
    let listeners = strata_node::Listeners::bind(&cfg).await.unwrap();
    let (node_stop, node_stopped) = tokio::sync::oneshot::channel::<()>();
    let node_task = tokio::spawn(strata_node::run(cfg, listeners, async {
        let _ = node_stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = op_nodes
            .get_node(v1::GetNodeRequest {
                node_id: "n9".into(),
            })
            .await;
        if r.is_ok() {
            break;
        }
        assert!(!node_task.is_finished(), "the node exited: {r:?}");
        assert!(Instant::now() < deadline, "n9 did not register: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = node_stop.send(());
    let stopped = tokio::time::timeout(Duration::from_secs(20), node_task)
        .await
        .unwrap();
    stopped.unwrap().unwrap();

    // A plaintext client gets nothing.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await;
    if let Ok(ch) = plain {
        assert!(
            NodeServiceClient::new(ch)
                .list_nodes(v1::ListNodesRequest::default())
                .await
                .is_err()
        );
    }
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    let _ = std::fs::remove_dir_all(&dir);
}
