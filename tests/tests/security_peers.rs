//! Who may talk to whom: the relay refuses QUIC peers that are not registered nodes, and a
//! control plane over TLS tells nodes from operators by their client certificates. See
//! docs/security.md for the whole matrix.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod certs_common;

use std::time::{Duration, Instant};

use strata_node::NodeConfig;
use strata_node::auth::AuthMode;
use strata_tests::cluster::Cluster;

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
    let anon_ch = certs_common::channel_with(addr, &dir, None).await.unwrap();
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
