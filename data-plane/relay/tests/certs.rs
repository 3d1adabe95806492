//! Certificate lifetimes on the relay: expiry, revocation, renewal while
//! running, and server-only certificates that must not serve as clients.

#![allow(clippy::unwrap_used)] // tests: failing fast is the point

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use strata_common::cert::CertInfo;
use strata_relay::certs::{CertKind, DevCa, IssueOptions};
use strata_relay::{LiveTls, RelayTls, Revocations};
use tokio::time::timeout;

fn localhost() -> Vec<std::net::IpAddr> {
    vec!["127.0.0.1".parse().unwrap()]
}

async fn refused(tls: &RelayTls, up: &Upstream) {
    let (c, _) = client(tls);
    let result = timeout(DEADLINE, c.subscribe(up.addr, "node-a", "cam", 1))
        .await
        .expect("answered in time");
    assert!(result.is_err(), "{result:?}");
}

async fn served(tls: &RelayTls, up: &Upstream) {
    let (c, _) = client(tls);
    let sub = timeout(DEADLINE, c.subscribe(up.addr, "node-a", "cam", 1))
        .await
        .expect("answered in time");
    assert!(sub.is_ok(), "{:?}", sub.err());
}

#[tokio::test]
async fn node_certificates_are_short_lived() {
    let ca = DevCa::generate().unwrap();
    let node = creds(&ca, "node-a");
    let info = CertInfo::parse(&node.chain[0]).unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let days = (info.not_after - now) / 86_400;
    assert!((29..=30).contains(&days), "valid for {days} days");
    assert!(info.client_auth);
    let server = ca
        .issue_with(
            "cp.example.net",
            &[],
            &IssueOptions {
                kind: CertKind::Server,
                ..IssueOptions::default()
            },
        )
        .unwrap();
    assert!(!CertInfo::parse(&server.chain[0]).unwrap().client_auth);
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let ca = DevCa::generate().unwrap();
    let up = Upstream::start(&RelayTls::Mutual(creds(&ca, "node-a")), None);
    let _source = up.hub.attach_source("cam", catalog()).unwrap();
    let expired = ca
        .issue_with(
            "node-b",
            &localhost(),
            &IssueOptions {
                valid_from: SystemTime::now() - Duration::from_secs(2 * 86_400),
                valid_for: Duration::from_secs(86_400),
                ..IssueOptions::default()
            },
        )
        .unwrap();
    refused(&RelayTls::Mutual(expired), &up).await;
    served(&RelayTls::Mutual(creds(&ca, "node-b")), &up).await;
    up.stop().await;
}

#[tokio::test]
async fn a_server_only_certificate_is_no_client_credential() {
    let ca = DevCa::generate().unwrap();
    let up = Upstream::start(&RelayTls::Mutual(creds(&ca, "node-a")), None);
    let _source = up.hub.attach_source("cam", catalog()).unwrap();
    let server_only = ca
        .issue_with(
            "node-b",
            &localhost(),
            &IssueOptions {
                kind: CertKind::Server,
                ..IssueOptions::default()
            },
        )
        .unwrap();
    refused(&RelayTls::Mutual(server_only), &up).await;
    assert_eq!(up.subscriptions_served(), 0);
    up.stop().await;
}

#[tokio::test]
async fn revoked_peers_are_refused_both_ways() {
    let ca = DevCa::generate().unwrap();
    let server = LiveTls::new(&creds(&ca, "node-a")).unwrap();
    let up = Upstream::start(&RelayTls::Live(server.clone()), None);
    let _source = up.hub.attach_source("cam", catalog()).unwrap();
    let stolen = creds(&ca, "node-b");
    let stolen_info = CertInfo::parse(&stolen.chain[0]).unwrap();
    served(&RelayTls::Mutual(stolen.clone()), &up).await;

    // Revoked by fingerprint: the next handshake fails.
    server.set_revoked(Revocations {
        sha256: [stolen_info.sha256.clone()].into(),
        ..Revocations::default()
    });
    refused(&RelayTls::Mutual(stolen.clone()), &up).await;
    // By serial too; another certificate of the same node passes.
    server.set_revoked(Revocations {
        serials: [stolen_info.serial.clone()].into(),
        ..Revocations::default()
    });
    refused(&RelayTls::Mutual(stolen), &up).await;
    served(&RelayTls::Mutual(creds(&ca, "node-b")), &up).await;

    // A client refuses an upstream whose certificate is revoked.
    let a_cert = creds(&ca, "node-a");
    let a_info = CertInfo::parse(&a_cert.chain[0]).unwrap();
    server.replace(&a_cert).unwrap();
    let wary = LiveTls::new(&creds(&ca, "node-c")).unwrap();
    wary.set_revoked(Revocations {
        sha256: [a_info.sha256].into(),
        ..Revocations::default()
    });
    refused(&RelayTls::Live(wary), &up).await;
    up.stop().await;
}

#[tokio::test]
async fn a_renewed_certificate_is_used_without_a_restart() {
    let ca = DevCa::generate().unwrap();
    let old = creds(&ca, "node-a");
    let old_info = CertInfo::parse(&old.chain[0]).unwrap();
    let server = LiveTls::new(&old).unwrap();
    let up = Upstream::start(&RelayTls::Live(server.clone()), None);
    let _source = up.hub.attach_source("cam", catalog()).unwrap();
    let renewed = creds(&ca, "node-a");
    let renewed_info = CertInfo::parse(&renewed.chain[0]).unwrap();
    server.replace(&renewed).unwrap();
    assert_eq!(server.not_after(), renewed_info.not_after);
    // A client that no longer trusts the old certificate connects: the
    // server presents the renewed one.
    let client_tls = LiveTls::new(&creds(&ca, "node-b")).unwrap();
    client_tls.set_revoked(Revocations {
        sha256: [old_info.sha256].into(),
        ..Revocations::default()
    });
    served(&RelayTls::Live(client_tls), &up).await;
    // Another node's certificate is not taken for this node.
    assert!(server.replace(&creds(&ca, "node-z")).is_err());
    up.stop().await;
}
