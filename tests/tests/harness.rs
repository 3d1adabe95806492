//! Tests of the harness itself: real etcd processes and clusters, free ports, grpcurl and the
//! network-namespace guard.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use strata_tests::etcd::{EtcdCluster, EtcdProcess, etcdctl_ok};
use strata_tests::grpcurl::grpcurl;
use strata_tests::ports::{free_tcp_port, free_tcp_ports, free_udp_port, require_netns};
use tokio::time::{Instant, sleep};

/// Retries `f` every 20 ms until it succeeds; after `within`, returns its last error.
async fn eventually<T>(within: Duration, mut f: impl AsyncFnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + within;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!("still failing after {within:?}")));
            }
            Err(_) => sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn get(endpoint: &str, key: &str) -> Result<String> {
    let out = etcdctl_ok(&[endpoint.to_owned()], &["get", key, "--print-value-only"]).await?;
    Ok(out.trim().to_owned())
}

fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn port_refuses(port: u16) -> bool {
    TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err()
}

#[tokio::test]
async fn etcd_keeps_data_across_kill_and_restart() -> Result<()> {
    let mut etcd = EtcdProcess::start().await?;
    let endpoint = etcd.endpoint();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    assert!(etcd.log_path().exists());

    etcd.ctl(&["put", "/strata/test/k", "v1"]).await?;
    assert_eq!(get(&endpoint, "/strata/test/k").await?, "v1");

    let pid = etcd.pid().context("no pid while running")?;
    etcd.kill()?;
    assert!(!etcd.is_running());
    assert!(
        !process_exists(pid),
        "etcd pid {pid} still exists after kill"
    );
    assert!(port_refuses(etcd.client_port()));

    etcd.restart().await?;
    assert_eq!(etcd.endpoint(), endpoint, "restart must keep the ports");
    assert_eq!(get(&endpoint, "/strata/test/k").await?, "v1");

    // A restart of a running process stops it first.
    etcd.restart().await?;
    assert_eq!(get(&endpoint, "/strata/test/k").await?, "v1");

    etcd.stop().await?;
    assert!(!etcd.is_running());
    assert!(port_refuses(etcd.client_port()));
    Ok(())
}

#[tokio::test]
async fn etcd_drop_kills_the_process_and_removes_its_data() -> Result<()> {
    let etcd = EtcdProcess::start().await?;
    let pid = etcd.pid().context("no pid while running")?;
    let data_dir = etcd.data_dir().to_owned();
    assert!(data_dir.exists());
    drop(etcd);
    assert!(!process_exists(pid), "etcd pid {pid} outlived its handle");
    assert!(!data_dir.exists(), "{} left behind", data_dir.display());
    Ok(())
}

/// Whether `pid` is gone or a zombie (dead, not yet reaped).
fn process_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => true,
    }
}

#[test]
fn etcd_dies_with_the_thread_that_started_it() -> Result<()> {
    // The handle outlives the thread that spawned etcd, and its destructor has not run: as if
    // the test process had been killed outright.
    let etcd = std::thread::spawn(|| -> Result<_> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(EtcdProcess::start())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("starter thread panicked"))??;
    let pid = etcd.pid().context("no pid")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !process_dead(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "etcd pid {pid} outlived the thread that started it"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Reaps the zombie and removes the temp dir.
    drop(etcd);
    Ok(())
}

#[tokio::test]
async fn etcd_processes_started_together_are_independent() -> Result<()> {
    let (a, b, c) = tokio::try_join!(
        EtcdProcess::start(),
        EtcdProcess::start(),
        EtcdProcess::start()
    )?;
    let endpoints: HashSet<String> = [&a, &b, &c].iter().map(|e| e.endpoint()).collect();
    assert_eq!(endpoints.len(), 3);

    a.ctl(&["put", "only-in-a", "x"]).await?;
    assert_eq!(get(&a.endpoint(), "only-in-a").await?, "x");
    assert_eq!(get(&b.endpoint(), "only-in-a").await?, "");
    assert_eq!(get(&c.endpoint(), "only-in-a").await?, "");
    Ok(())
}

/// Index of the member that `endpoint status` reports as leader.
async fn leader(cluster: &EtcdCluster) -> Result<usize> {
    for (i, member) in cluster.members().iter().enumerate() {
        let json = member.ctl(&["endpoint", "status", "-w", "json"]).await?;
        let status: serde_json::Value = serde_json::from_str(&json)?;
        let status = &status[0]["Status"];
        let (Some(id), Some(leader)) = (
            status["header"]["member_id"].as_u64(),
            status["leader"].as_u64(),
        ) else {
            bail!("unexpected endpoint status: {json}");
        };
        if id == leader {
            return Ok(i);
        }
    }
    bail!("no member reports itself as leader")
}

#[tokio::test]
async fn etcd_cluster_serves_with_its_leader_down() -> Result<()> {
    let mut cluster = EtcdCluster::start(3).await?;
    assert_eq!(cluster.endpoints().len(), 3);
    let members = cluster.ctl(&["member", "list"]).await?;
    assert_eq!(members.lines().count(), 3, "{members}");
    cluster.ctl(&["put", "k", "before"]).await?;

    let down = leader(&cluster).await?;
    cluster.kill_member(down)?;
    assert_eq!(cluster.live_endpoints().len(), 2);

    let alive: Vec<String> = (0..3)
        .filter(|&i| i != down)
        .map(|i| cluster.member(i).map(EtcdProcess::endpoint))
        .collect::<Result<_>>()?;
    // The survivors elect a new leader first; writes fail until then (a write forwarded to
    // the dead leader times out, hence the short command timeout).
    eventually(Duration::from_secs(10), async || {
        etcdctl_ok(&alive[..1], &["--command-timeout=1s", "put", "k", "after"]).await
    })
    .await?;
    assert_eq!(get(&alive[1], "k").await?, "after");

    cluster.restart_member(down).await?;
    assert_eq!(cluster.live_endpoints().len(), 3);
    // A linearizable read through the restarted member sees the write it missed.
    assert_eq!(get(&cluster.member(down)?.endpoint(), "k").await?, "after");
    Ok(())
}

#[test]
fn free_ports_are_bindable_and_distinct() -> Result<()> {
    let tcp = free_tcp_port()?;
    TcpListener::bind((Ipv4Addr::LOCALHOST, tcp))?;
    let udp = free_udp_port()?;
    UdpSocket::bind((Ipv4Addr::LOCALHOST, udp))?;

    let many = free_tcp_ports(16)?;
    let distinct: HashSet<u16> = many.iter().copied().collect();
    assert_eq!(distinct.len(), many.len());
    assert!(!distinct.contains(&tcp), "a port was handed out twice");
    for port in many {
        TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
    }
    Ok(())
}

#[tokio::test]
async fn grpcurl_is_installed_and_runs() -> Result<()> {
    let out = grpcurl(&["-version"]).await?;
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("grpcurl v1."), "{text}");
    Ok(())
}

#[test]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
fn netns_has_loopback_and_no_route_out() -> Result<()> {
    require_netns("netns_has_loopback_and_no_route_out");
    // No route in the main table: nothing can leave the namespace (lo's routes live in the
    // local table, which /proc/net/route does not list).
    let routes = std::fs::read_to_string("/proc/net/route")?;
    assert_eq!(
        routes.lines().count(),
        1,
        "routes in the test namespace:\n{routes}"
    );
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    TcpStream::connect(listener.local_addr()?).context("loopback is not up")?;
    Ok(())
}
