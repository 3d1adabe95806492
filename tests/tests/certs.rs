//! Node certificates against a TLS control plane on a real etcd: revocation
//! (control plane and relay), the certificate's names bounding what a node may
//! advertise, the control plane's own certificate as a client, expiry, and
//! renewal while running.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant, SystemTime};

use strata_common::cert::CertInfo;
use strata_proto::v1;
use strata_proto::v1::node_service_client::NodeServiceClient;
use strata_relay::certs::{IssueOptions, NodeCredentials};
use strata_relay::{LiveTls, Revocations};
use tonic::Code;

mod certs_common;
use certs_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_node_cannot_register_keep_alive_or_relay() {
    let s = Setup::start("revoke").await;
    let stolen = s.issue("n1", &IssueOptions::default());
    let stolen_info = CertInfo::parse(&stolen.chain[0]).unwrap();
    let n1 = s.node_channel("n1").await.unwrap();
    let lease = register(n1.clone(), info("n1")).await.unwrap().lease_id;
    keep_alive(n1.clone(), "n1", lease).await.unwrap();

    // The operator revokes it (by fingerprint, as openssl prints it).
    let colons: Vec<String> = stolen_info
        .sha256
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_uppercase())
        .collect();
    let anon = channel_with(s.addr, &s.dir, None).await.unwrap();
    let answer = s
        .operator(anon.clone())
        .revoke_certificate(v1::RevokeCertificateRequest {
            serial: String::new(),
            sha256: colons.join(":"),
            reason: "key leaked".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.deregistered, ["n1"], "the registration ends at once");
    assert_eq!(answer.revoked.unwrap().sha256, stolen_info.sha256);
    // A node cannot revoke.
    let e = NodeServiceClient::new(n1.clone())
        .revoke_certificate(v1::RevokeCertificateRequest {
            serial: "1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // Register and KeepAlive with it: PERMISSION_DENIED.
    let e = keep_alive(n1.clone(), "n1", lease).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("revoked"), "{e:?}");
    let e = register(n1.clone(), info("n1")).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // Other nodes learn it from ListNodes, and their relay refuses it.
    s.issue("n2", &IssueOptions::default());
    let n2_creds = NodeCredentials::load(&s.dir, "n2").unwrap();
    let n2 = s.node_channel("n2").await.unwrap();
    register(n2.clone(), info("n2")).await.unwrap();
    let registry = NodeServiceClient::new(n2)
        .list_nodes(v1::ListNodesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(registry.revoked.len(), 1);
    let mut revoked = Revocations::default();
    for r in registry.revoked {
        revoked.sha256.insert(r.sha256);
    }
    let relay = LiveTls::new(&n2_creds).unwrap();
    assert!(
        relay_accepts(&relay, &stolen).await,
        "accepted before it knew"
    );
    relay.set_revoked(revoked);
    assert!(
        !relay_accepts(&relay, &stolen).await,
        "refused once it knows"
    );

    // The node's renewed certificate works everywhere.
    let renewed = s.issue("n1", &IssueOptions::default());
    assert!(relay_accepts(&relay, &renewed).await);
    let n1 = s.node_channel("n1").await.unwrap();
    let lease = register(n1.clone(), info("n1")).await.unwrap().lease_id;
    keep_alive(n1, "n1", lease).await.unwrap();
    let listed = s
        .operator(anon)
        .list_revoked(v1::ListRevokedRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.revoked.len(), 1);
    assert_eq!(listed.revoked[0].reason, "key leaked");
    assert_eq!(listed.revoked[0].revoked_by, "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_may_advertise_only_hosts_its_certificate_names() {
    let s = Setup::start("sans").await;
    s.issue(
        "n1",
        &IssueOptions {
            dns_names: vec!["n1.example.net".into()],
            ..IssueOptions::default()
        },
    );
    let n1 = s.node_channel("n1").await.unwrap();
    let mut other_relay = info("n1");
    other_relay.relay_addr = "10.9.9.9:4433".into();
    let e = register(n1.clone(), other_relay).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("relay_addr"), "{e:?}");
    let mut other_url = info("n1");
    other_url.http_url = "https://attacker.example.org/".into();
    let e = register(n1.clone(), other_url).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("http_url"), "{e:?}");
    // Names the certificate carries pass: its IP, its DNS names.
    let mut by_name = info("n1");
    by_name.http_url = "https://n1.example.net".into();
    by_name.relay_addr = "n1:4433".into();
    register(n1, by_name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_planes_certificate_is_no_node_credential() {
    let s = Setup::start("cp-client").await;
    // Let the replica serve first, so a refusal is about the credential.
    s.issue("n1", &IssueOptions::default());
    register(s.node_channel("n1").await.unwrap(), info("n1"))
        .await
        .unwrap();
    // Presenting cp.pem/cp.key (no clientAuth): the handshake or the request fails.
    let refused = match s.node_channel("cp").await {
        Err(_) => true,
        Ok(ch) => {
            let mut cp_info = info("cp");
            cp_info.id = "cp".into();
            match register(ch, cp_info).await {
                Ok(_) => false,
                Err(e) => {
                    assert_ne!(e.code(), Code::Unavailable, "{e:?}");
                    true
                }
            }
        }
    };
    assert!(
        refused,
        "the control plane's certificate registered as a node"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused() {
    let s = Setup::start("expired").await;
    s.issue("n1", &IssueOptions::default());
    register(s.node_channel("n1").await.unwrap(), info("n1"))
        .await
        .unwrap();
    s.issue(
        "n1",
        &IssueOptions {
            valid_from: SystemTime::now() - Duration::from_secs(2 * 86_400),
            valid_for: Duration::from_secs(86_400),
            ..IssueOptions::default()
        },
    );
    let refused = match s.node_channel("n1").await {
        Err(_) => true,
        Ok(ch) => register(ch, info("n1")).await.is_err(),
    };
    assert!(refused, "an expired certificate registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_keeps_the_node_registered_and_the_old_certificate_can_go() {
    let s = Setup::start("renew").await;
    let old = s.issue("n1", &IssueOptions::default());
    let old_info = CertInfo::parse(&old.chain[0]).unwrap();
    let cfg = strata_node::NodeConfig {
        id: "n1".into(),
        control_plane: vec![format!("https://{}", s.addr)],
        certs_dir: Some(s.dir.clone()),
        ..strata_node::NodeConfig::default()
    };
    let tls = strata_node::control_tls::client_tls(&cfg.control_plane, Some(&s.dir), "n1")
        .unwrap()
        .map(|t| t.domain_name("cp"));
    let control = strata_node::control::ControlClient::with_tls(&cfg.control_plane, tls).unwrap();
    let live = LiveTls::new(&old).unwrap();
    let deadline = Instant::now() + DEADLINE;
    let lease = loop {
        match control.register(info("n1")).await {
            Ok(r) => break r.lease_id,
            Err(e) if e.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    };

    // Renewal: certs-issue writes new files, the node reloads them (what SIGHUP runs).
    let renewed = s.issue("n1", &IssueOptions::default());
    let renewed_info = CertInfo::parse(&renewed.chain[0]).unwrap();
    strata_node::node::reload_certificates(&cfg, &live, &control).unwrap();
    assert_eq!(live.not_after(), renewed_info.not_after);
    control
        .keep_alive("n1", lease, v1::Load::default())
        .await
        .unwrap();

    // The registration now names the renewed certificate: revoking the old one
    // ends nothing, and the node keeps going.
    let anon = channel_with(s.addr, &s.dir, None).await.unwrap();
    let answer = s
        .operator(anon)
        .revoke_certificate(v1::RevokeCertificateRequest {
            serial: old_info.serial.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(answer.deregistered.is_empty(), "{:?}", answer.deregistered);
    control
        .keep_alive("n1", lease, v1::Load::default())
        .await
        .unwrap();

    // A broken renewal (a key that is not the certificate's) changes nothing.
    let other = s.ca.issue("n1", &localhost()).unwrap();
    std::fs::write(s.dir.join("n1.key"), rustls_pem(&other)).unwrap();
    assert!(strata_node::node::reload_certificates(&cfg, &live, &control).is_err());
    assert_eq!(live.not_after(), renewed_info.not_after);
    control
        .keep_alive("n1", lease, v1::Load::default())
        .await
        .unwrap();
}

/// The PEM of a credential's private key.
fn rustls_pem(creds: &NodeCredentials) -> String {
    let dir = std::env::temp_dir().join(format!("strata-certs-key-{}", std::process::id()));
    creds.write(&dir).unwrap();
    let pem = std::fs::read_to_string(dir.join(format!("{}.key", creds.node_id))).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    pem
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tls_handshake_is_closed_at_the_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let setup = Setup::start("stall").await;
    // Half a ClientHello record header, then nothing.
    let mut stalled = tokio::net::TcpStream::connect(setup.addr).await.unwrap();
    stalled.write_all(&[0x16, 0x03]).await.unwrap();
    let opened = std::time::Instant::now();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    let after = opened.elapsed();
    assert!(
        closed.is_ok(),
        "a stalled handshake held its connection for 10 s"
    );
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(5),
        "closed after {after:?}, the timeout is 1 s"
    );
    // The control plane still answers real clients.
    setup.issue("n-ok", &IssueOptions::default());
    let ch = setup.node_channel("n-ok").await.unwrap();
    register(ch, info("n-ok")).await.unwrap();
}
