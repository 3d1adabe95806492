//! Failover of the control plane and its store, with real processes: a control-plane replica
//! killed, an etcd member killed, the whole of etcd down for 5 s; and the node's control
//! client moving between replicas. Same harness and reports as `netns_failover.rs`
//! (`failover_common`); the figures are summed up in `docs/failover.md`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use strata_node::control::ControlClient;
use strata_proto::v1;
use strata_tests::control::{
    ControlPlane, HealthCheckRequest, ServingStatus, Store, tonic_health_client,
};
use strata_tests::etcd::EtcdCluster;
use strata_tests::faults::{
    DeadNodes, TreeMonitor, arm, etcd_leader, median_max, ms, regionals, tree_violations,
};
use strata_tests::media::TestPlayer;
use strata_tests::ports::{free_tcp_port, require_netns};
use strata_tests::procs::{ProcOptions, StoreMode};
use tokio::time::{Instant, sleep};

mod failover_common;
use failover_common::*;

/// Case 4: two control-plane replicas; one is SIGKILLed (then restarted, and the other one
/// killed). Nodes carry on through the survivor: media never stops, no lease is lost, the tree
/// stays as it was, and a new node and new players still join.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_failover_control_plane_replica_killed() {
    require_netns("netns_failover_control_plane_replica_killed");
    let _serial = SERIAL.lock().await;
    let case = "control-plane replica killed";
    let (mut c, _publisher, [p11, p21, p22], tree) = live(
        ProcOptions {
            control_planes: 2,
            nodes: nodes(&[
                ("O1", "Region1"),
                ("E11", "Region1"),
                ("E21", "Region2"),
                ("E22", "Region2"),
            ]),
            ..ProcOptions::default()
        },
        ["E11", "E21", "E22"],
        "settled",
        settled_on_e21,
    )
    .await;
    let mut before = tree_key(&tree);
    let mut leases_before = leases(&c).await;
    let monitor = TreeMonitor::start(cp_urls(&c), vec![STREAM.into()], DeadNodes::default());
    let mut players = vec![p11, p21, p22];
    for (round, (kill, join)) in [(0usize, ("E23", "Region2")), (1, ("E12", "Region1"))]
        .into_iter()
        .enumerate()
    {
        let refs: Vec<&TestPlayer> = players.iter().collect();
        arm(&refs);
        c.control_plane_mut(kill).unwrap().kill().unwrap();
        // Two lease TTLs: every node renews its lease through the survivor.
        media_window(2 * TTL + Duration::from_secs(1)).await;
        let window_gaps = gaps(&refs);
        let (_, worst) = median_max(&window_gaps);
        let leases_now = leases(&c).await;
        assert_eq!(leases_now, leases_before, "a node lost its lease");
        let tree = wait_tree(&c, Duration::from_secs(2), "readable", |t| t.is_some())
            .await
            .unwrap();
        assert_eq!(tree_key(&tree), before, "the tree changed");
        // A new node registers, and a player there pulls the stream (a new resolve).
        let joined = Instant::now();
        c.add_node(join.0, join.1).await.unwrap();
        let p = play(&c, join.0).await;
        eprintln!(
            "[{case}] round {round}: control plane {kill} killed; longest player gap over {} ms: \
             {} ms; leases and tree unchanged; {} joined and played in {} ms",
            ms(2 * TTL + Duration::from_secs(1)),
            ms(worst),
            join.0,
            ms(joined.elapsed())
        );
        assert!(
            worst < NO_INTERRUPTION,
            "[{case}] players stalled {worst:?}"
        );
        players.push(p);
        let tree = wait_tree(&c, Duration::from_secs(5), "with the new node", |t| {
            upstream_of(t, join.0).is_some()
        })
        .await
        .unwrap();
        before = tree_key(&tree);
        leases_before = leases(&c).await;
        if round == 0 {
            // Back, and the other one goes next.
            c.control_plane_mut(kill).unwrap().restart().await.unwrap();
        }
    }
    assert_no_violations(case, monitor);
}

/// Case 5a: a three-member etcd cluster loses its leader (SIGKILL). The control plane carries on
/// through the other two: no interruption for players, no lease lost, and a new player on a
/// node that does not carry the stream yet (a new resolve and claim) joins at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_failover_etcd_member_killed() {
    require_netns("netns_failover_etcd_member_killed");
    let _serial = SERIAL.lock().await;
    let case = "etcd member killed";
    let mut etcd = EtcdCluster::start(3).await.unwrap();
    let (c, _publisher, [p11, p21, p22], tree) = live(
        ProcOptions {
            store: StoreMode::External(etcd.endpoints()),
            nodes: nodes(&[
                ("O1", "Region1"),
                ("E11", "Region1"),
                ("E21", "Region2"),
                ("E22", "Region2"),
                ("E31", "Region3"),
            ]),
            ..ProcOptions::default()
        },
        ["E11", "E21", "E22"],
        "settled",
        settled_on_e21,
    )
    .await;
    let before = tree_key(&tree);
    let leases_before = leases(&c).await;
    let monitor = TreeMonitor::start(cp_urls(&c), vec![STREAM.into()], DeadNodes::default());
    let players = [&p11, &p21, &p22];
    let leader = etcd_leader(&mut etcd).await.unwrap();
    arm(&players);
    etcd.kill_member(leader).unwrap();
    let killed_at = Instant::now();
    // A new resolve at once: E31 claims Region3.
    let p31 = play(&c, "E31").await;
    let joined = killed_at.elapsed();
    media_window((killed_at + 2 * TTL + Duration::from_secs(1)) - Instant::now()).await;
    let (_, worst) = median_max(&gaps(&players));
    let tree = wait_tree(&c, Duration::from_secs(2), "readable", |t| t.is_some())
        .await
        .unwrap();
    let (main, mut regional, subs) = before.clone();
    regional.insert("Region3".into(), regionals(&tree)["Region3"].clone());
    assert_eq!(tree_key(&tree), (main, regional, subs), "the tree changed");
    assert_eq!(regional_of(Some(&tree), "Region3").as_deref(), Some("E31"));
    assert_eq!(leases(&c).await, leases_before, "a node lost its lease");
    let report = monitor.report();
    eprintln!(
        "[{case}] leader (member {leader}) killed: longest player gap over {} ms: {} ms; a player \
         on a new region joined {} ms after the kill (first frame {} ms); {} of {} GetStream \
         polls unanswered",
        ms(2 * TTL + Duration::from_secs(1)),
        ms(worst),
        ms(joined),
        ms(p31
            .stats()
            .first_video
            .unwrap()
            .duration_since(p31.requested_at)),
        report.unavailable,
        report.samples + report.unavailable
    );
    etcd.restart_member(leader).await.unwrap();
    assert_no_violations(case, monitor);
    assert!(
        worst < NO_INTERRUPTION,
        "[{case}] players stalled {worst:?}"
    );
}

/// Case 5b: all of etcd is down for 5 s. Media keeps flowing on the paths already set up; new
/// claims fail cleanly (gRPC UNAVAILABLE; WHEP on a node that does not carry the stream: 503);
/// once etcd is back everything converges: same tree, no lease lost, new players join.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_failover_etcd_down() {
    require_netns("netns_failover_etcd_down");
    let _serial = SERIAL.lock().await;
    let case = "etcd down 5 s";
    let outage = Duration::from_secs(5);
    let (mut c, _publisher, [p11, p21, p22], tree) = live(
        ProcOptions {
            nodes: nodes(&[
                ("O1", "Region1"),
                ("E11", "Region1"),
                ("E21", "Region2"),
                ("E22", "Region2"),
                ("E23", "Region2"),
            ]),
            ..ProcOptions::default()
        },
        ["E11", "E21", "E22"],
        "settled",
        settled_on_e21,
    )
    .await;
    let before = tree_key(&tree);
    let leases_before = leases(&c).await;
    let monitor = TreeMonitor::start(cp_urls(&c), vec![STREAM.into()], DeadNodes::default());
    let players = [&p11, &p21, &p22];
    arm(&players);
    c.etcd_mut().unwrap().kill().unwrap();
    let down_at = Instant::now();

    // The control plane notices and says so.
    let mut clients = c.clients().await.unwrap();
    let noticed = loop {
        let r = clients
            .routing
            .get_stream(v1::GetStreamRequest {
                stream: STREAM.into(),
            })
            .await;
        if let Err(s) = &r
            && s.code() == tonic::Code::Unavailable
        {
            break down_at.elapsed();
        }
        assert!(down_at.elapsed() < outage, "GetStream still answers: {r:?}");
        sleep(Duration::from_millis(20)).await;
    };
    // New claims fail cleanly.
    let resolve = clients.resolve(STREAM, "Region2", "E23").await;
    assert_eq!(
        resolve.as_ref().map_err(tonic::Status::code).err(),
        Some(tonic::Code::Unavailable),
        "{resolve:?}"
    );
    let publish_other = clients.publish("other", "E11").await;
    assert_eq!(
        publish_other.as_ref().map_err(tonic::Status::code).err(),
        Some(tonic::Code::Unavailable),
        "{publish_other:?}"
    );
    let asked = Instant::now();
    let whep = TestPlayer::start(&url(&c, "E23"), STREAM).await;
    let whep_took = asked.elapsed();
    let whep_err = format!(
        "{:#}",
        whep.err().expect("WHEP on E23 succeeded without etcd")
    );
    assert!(whep_err.contains(": 503 "), "{whep_err}");
    assert!(
        down_at.elapsed() < outage,
        "the 503 came only after {:?}",
        down_at.elapsed()
    );
    media_window(outage.saturating_sub(down_at.elapsed())).await;
    let (_, worst_during) = median_max(&gaps(&players));

    c.etcd_mut().unwrap().restart().await.unwrap();
    let up_at = Instant::now();
    let tree = wait_tree(&c, Duration::from_secs(10), "served again", |t| t.is_some())
        .await
        .unwrap();
    let serving_after = up_at.elapsed();
    assert_eq!(tree_key(&tree), before, "the tree changed");
    assert_eq!(leases(&c).await, leases_before, "a node lost its lease");
    let p23 = play(&c, "E23").await;
    let tree = wait_tree(&c, Duration::from_secs(5), "with E23", |t| {
        upstream_of(t, "E23").as_deref() == Some("E21")
    })
    .await
    .unwrap();
    assert!(tree_violations(STREAM, &tree, &[]).is_empty(), "{tree:?}");
    let (_, worst) = median_max(&gaps(&players));
    eprintln!(
        "[{case}] control plane UNAVAILABLE {} ms after etcd died; WHEP on E23 → 503 in {} ms; \
         longest player gap {} ms during the outage, {} ms overall; GetStream served {} ms after \
         etcd restarted; E23 played {} ms after its WHEP",
        ms(noticed),
        ms(whep_took),
        ms(worst_during),
        ms(worst),
        ms(serving_after),
        ms(p23
            .stats()
            .first_video
            .unwrap()
            .duration_since(p23.requested_at))
    );
    assert_no_violations(case, monitor);
    assert!(
        worst < NO_INTERRUPTION,
        "[{case}] players stalled {worst:?}"
    );
}

fn node_info(id: &str, region: &str) -> v1::NodeInfo {
    v1::NodeInfo {
        id: id.into(),
        region: region.into(),
        relay_addr: "127.0.0.1:4433".into(),
        http_url: format!("http://127.0.0.1:8080/{id}"),
        capacity: 100,
        version: "test".into(),
    }
}

/// The node's control-plane client goes on through the surviving replica: after one of two
/// replicas stops, every request succeeds (one balanced channel over both sent a share of them
/// to the dead one, and leases expired), and a dead replica listed first is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_client_fails_over_between_replicas() {
    let store = Store::memory();
    let a = ControlPlane::start(&store, TTL).await.unwrap();
    let b = ControlPlane::start(&store, TTL).await.unwrap();
    let client = ControlClient::new(&[a.url(), b.url()]).unwrap();
    let lease = client
        .register(node_info("n1", "r1"))
        .await
        .unwrap()
        .lease_id;
    client.publish("s", "n1", None).await.unwrap();
    a.stop().await.unwrap();
    for i in 0..20 {
        client
            .keep_alive("n1", lease, v1::Load::default())
            .await
            .unwrap_or_else(|e| panic!("keep-alive {i} after a replica stopped: {e}"));
        let nodes = client.list_nodes().await.unwrap();
        assert_eq!(nodes.len(), 1);
    }
    let req = v1::WatchStreamRequest {
        stream: "s".into(),
        region: "r1".into(),
    };
    let mut watch = client.watch_stream(req).await.unwrap();
    assert!(watch.message().await.unwrap().unwrap().live);

    let dead = format!("http://127.0.0.1:{}", free_tcp_port().unwrap());
    let client = ControlClient::new(&[dead, b.url()]).unwrap();
    for _ in 0..10 {
        client
            .keep_alive("n1", lease, v1::Load::default())
            .await
            .unwrap();
    }
}

/// The control plane rides out the loss of an etcd member (the leader, then another one):
/// it stays SERVING and every keep-alive, resolve and claim succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_rides_out_etcd_member_loss() {
    let mut etcd = EtcdCluster::start(3).await.unwrap();
    let store = Store::Etcd(etcd.endpoints());
    let cp = ControlPlane::start(&store, TTL).await.unwrap();
    let mut c = cp.clients().await.unwrap();
    let mut health = tonic_health_client(cp.channel().await.unwrap());
    let lease = c.register("o", "eu").await.unwrap().lease_id;
    for i in 0..3 {
        c.register(&format!("u{i}"), "us").await.unwrap();
    }
    c.publish("s", "o").await.unwrap();
    let leader = etcd_leader(&mut etcd).await.unwrap();
    let other = (leader + 1) % 3;
    for (round, member) in [leader, other].into_iter().enumerate() {
        etcd.kill_member(member).unwrap();
        let killed = Instant::now();
        let mut slowest = Duration::ZERO;
        for i in 0..30 {
            let started = Instant::now();
            c.nodes
                .keep_alive(v1::KeepAliveRequest {
                    node_id: "o".into(),
                    lease_id: lease,
                    load: None,
                })
                .await
                .unwrap_or_else(|e| panic!("round {round}: keep-alive {i}: {e}"));
            c.resolve("s", "us", &format!("u{}", i % 3))
                .await
                .unwrap_or_else(|e| panic!("round {round}: resolve {i}: {e}"));
            c.publish(&format!("s{round}-{i}"), "o")
                .await
                .unwrap_or_else(|e| panic!("round {round}: publish {i}: {e}"));
            let status = health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .status;
            assert_eq!(status, ServingStatus::Serving as i32, "round {round}, {i}");
            slowest = slowest.max(started.elapsed());
        }
        eprintln!(
            "etcd member {member} killed: 30 × (keep-alive, resolve, claim) in {} ms, slowest {} ms",
            ms(killed.elapsed()),
            ms(slowest)
        );
        etcd.restart_member(member).await.unwrap();
    }
}
