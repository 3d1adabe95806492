//! Clusters of real processes: etcd, the control plane and nodes each in its own OS process
//! (`strata_tests::procs`), and the `strata-dev` launcher end to end.
//!
//! Needs the `strata-control` and `strata-node` binaries: `cargo build --bins` first
//! (`scripts/test.sh` builds the whole workspace before it tests).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod security_common;

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use strata_proto::v1;
use strata_tests::control::Clients;
use strata_tests::media::TestPlayer;
use strata_tests::ports::require_netns;
use strata_tests::procs::{ProcCluster, ProcOptions, StoreMode, child_command};
use tokio::time::{Instant, sleep};
use tonic::transport::Endpoint;

/// Whether `pid` is a live process (a zombie counts as dead: it only awaits reaping).
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "PID (COMM) STATE ...": COMM may hold spaces and parentheses; STATE follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// The parent pid of `pid`, if it is alive.
fn parent(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Every live descendant of `root`.
fn descendants(root: u32) -> Vec<u32> {
    let all: Vec<u32> = fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let mut found = vec![root];
    let mut grew = true;
    while grew {
        grew = false;
        for &p in &all {
            if !found.contains(&p) && parent(p).is_some_and(|pp| found.contains(&pp)) {
                found.push(p);
                grew = true;
            }
        }
    }
    found.retain(|&p| p != root);
    found
}

/// Polls until none of `pids` is alive; panics with the survivors after `within`.
async fn wait_all_gone(pids: &[u32], within: Duration, context: &str) {
    let deadline = Instant::now() + within;
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes {left:?} still alive {within:?} after {context}"
        );
        sleep(Duration::from_millis(20)).await;
    }
}

async fn node_ids(clients: &mut Clients) -> BTreeSet<String> {
    let req = v1::ListNodesRequest {
        region: String::new(),
    };
    clients
        .nodes
        .list_nodes(req)
        .await
        .unwrap()
        .into_inner()
        .nodes
        .into_iter()
        .filter_map(|n| n.info.map(|i| i.id))
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn procs_cluster_starts_and_stops() {
    let lease_ttl = Duration::from_secs(1);
    let drain_timeout = Duration::from_secs(3);
    let mut cluster = ProcCluster::start(ProcOptions {
        store: StoreMode::Etcd,
        lease_ttl,
        nodes: vec![("n1".into(), "r1".into()), ("n2".into(), "r2".into())],
        node_args: vec!["--drain-timeout".into(), "3s".into()],
        ..ProcOptions::default()
    })
    .await
    .unwrap();

    // Everything registered, with the addresses the cluster reports.
    let mut clients = cluster.clients().await.unwrap();
    assert_eq!(node_ids(&mut clients).await, set(&["n1", "n2"]));
    for entry in cluster.node_list() {
        let req = v1::GetNodeRequest {
            node_id: entry.id.clone(),
        };
        let info = clients
            .nodes
            .get_node(req)
            .await
            .unwrap()
            .into_inner()
            .info
            .unwrap();
        assert_eq!(info.region, entry.region);
        assert_eq!(info.http_url, entry.http);
        assert_eq!(info.relay_addr, entry.relay);
        assert!(entry.http.starts_with("http://127.0.0.1:"), "{entry:?}");
        assert!(entry.pid.is_some_and(alive), "{entry:?}");
    }
    let mut pids = vec![
        cluster.etcd().unwrap().pid().unwrap(),
        cluster.control_planes()[0].pid().unwrap(),
    ];
    pids.extend(cluster.node_list().iter().filter_map(|n| n.pid));

    // SIGKILL: no deregistration; the lease expires.
    let n1 = cluster.node_mut("n1").unwrap();
    let n1_pid = n1.pid().unwrap();
    n1.kill().unwrap();
    assert!(!n1.is_running());
    assert!(!alive(n1_pid));
    let took = cluster
        .wait_node_gone("n1", lease_ttl + Duration::from_secs(1))
        .await
        .unwrap();
    eprintln!("n1 removed {took:?} after SIGKILL (lease TTL {lease_ttl:?})");
    assert_eq!(node_ids(&mut clients).await, set(&["n2"]));

    // Restarted on the same ports; another node joins while the cluster runs.
    let n1 = cluster.node_mut("n1").unwrap();
    let http_before = n1.http_url();
    n1.restart().await.unwrap();
    assert_eq!(n1.http_url(), http_before);
    pids.push(n1.pid().unwrap());
    let n3 = cluster.add_node("n3", "r1").await.unwrap();
    assert_eq!(n3.region(), "r1");
    pids.push(n3.pid().unwrap());
    assert_eq!(node_ids(&mut clients).await, set(&["n1", "n2", "n3"]));
    assert!(cluster.remove_node("n3").await.unwrap().success());
    assert!(cluster.node("n3").is_none());

    // SIGTERM: the node drains, deregisters and exits 0 within its drain timeout.
    let n2 = cluster.node_mut("n2").unwrap();
    let started = Instant::now();
    let status = n2
        .process()
        .terminate(drain_timeout + Duration::from_secs(5))
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(status.success(), "n2 exited with {status}");
    assert!(
        took <= drain_timeout,
        "n2 took {took:?} to stop (drain timeout {drain_timeout:?})"
    );
    let log = fs::read_to_string(n2.process().log_path()).unwrap();
    assert!(log.contains("node stopped"), "{log}");
    assert!(!log.contains("deregister failed"), "{log}");
    // Deregistered: gone well before the 1 s lease could have expired.
    cluster
        .wait_node_gone("n2", Duration::from_millis(500))
        .await
        .unwrap();

    cluster.stop().await.unwrap();
    drop(cluster);
    wait_all_gone(&pids, Duration::from_secs(5), "the cluster stopped").await;
}

/// `strata-dev` as a child process, SIGKILLed if the test fails before it stops it.
struct DevProcess {
    child: Child,
    log: PathBuf,
}

impl DevProcess {
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fresh_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let dir = std::env::temp_dir().join(format!("{name}-{}-{nanos:08x}", std::process::id()));
    fs::create_dir(&dir).unwrap();
    dir
}

fn check_node(node: &Value, id: &str) -> (u32, String) {
    assert_eq!(node["id"], id, "{node}");
    let pid = u32::try_from(node["pid"].as_u64().expect("pid")).unwrap();
    let http = node["http"].as_str().expect("http").to_owned();
    assert!(http.starts_with("http://127.0.0.1:"), "{node}");
    let relay = node["relay"].as_str().expect("relay");
    assert!(relay.starts_with("127.0.0.1:"), "{node}");
    let rtmp = node["rtmp"].as_str().expect("rtmp");
    assert!(rtmp.starts_with("127.0.0.1:"), "{node}");
    // The node listens there: an RTMP handshake's first bytes are answered.
    let mut s = std::net::TcpStream::connect(rtmp).expect("RTMP port open");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::io::Write::write_all(&mut s, &[3u8; 1537]).unwrap();
    let mut s0 = [0u8; 1];
    std::io::Read::read_exact(&mut s, &mut s0).expect("RTMP answer");
    assert_eq!(s0[0], 3, "RTMP version");
    assert!(alive(pid), "{node}: process not alive");
    (pid, http)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_strata_dev_smoke() {
    require_netns("netns_strata_dev_smoke");
    let dir = fresh_dir("strata-dev-smoke");
    let json_path = dir.join("cluster.json");
    let log = dir.join("strata-dev.log");
    let out = File::create(&log).unwrap();
    let child = child_command(Path::new(env!("CARGO_BIN_EXE_strata-dev")))
        .args(["--regions", "eu,us", "--nodes-per-region", "2", "--json"])
        .arg(&json_path)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let mut dev = DevProcess { child, log };

    // The file appears once every node is ready and the test stream is published.
    let deadline = Instant::now() + Duration::from_secs(90);
    while !json_path.exists() {
        if let Some(status) = dev.child.try_wait().unwrap() {
            panic!("strata-dev exited ({status}) early:\n{}", dev.log());
        }
        assert!(
            Instant::now() < deadline,
            "no {} after 90 s:\n{}",
            json_path.display(),
            dev.log()
        );
        sleep(Duration::from_millis(50)).await;
    }
    let doc: Value = serde_json::from_slice(&fs::read(&json_path).unwrap()).unwrap();
    let cp = doc["control_plane"].as_str().expect("control_plane");
    assert!(cp.starts_with("127.0.0.1:"), "{doc}");
    assert_eq!(doc["test_stream"], "demo", "{doc}");
    let regions = doc["regions"].as_object().expect("regions");
    assert_eq!(
        regions.keys().cloned().collect::<BTreeSet<_>>(),
        set(&["eu", "us"]),
        "{doc}"
    );
    let mut pids = Vec::new();
    let mut us_http = Vec::new();
    for (region, nodes) in regions {
        let nodes = nodes.as_array().expect("node list");
        assert_eq!(nodes.len(), 2, "{doc}");
        for (i, node) in nodes.iter().enumerate() {
            let (pid, http) = check_node(node, &format!("{region}-{}", i + 1));
            pids.push(pid);
            if region == "us" {
                us_http.push(http);
            }
        }
    }

    // The control plane at that address knows all four nodes.
    let channel = Endpoint::from_shared(format!("http://{cp}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut clients = Clients::new(channel).unwrap();
    assert_eq!(
        node_ids(&mut clients).await,
        set(&["eu-1", "eu-2", "us-1", "us-2"])
    );

    // The test stream, published into eu, plays in us: keyframe first.
    let player = TestPlayer::start(&us_http[0], "demo").await.unwrap();
    let stats = player
        .wait_for(Duration::from_secs(20), "video", |s| s.video_packets >= 50)
        .await
        .unwrap();
    assert_eq!(stats.first_video_is_keyframe, Some(true), "{stats:?}");
    player.stop().await.unwrap();
    // No token was needed, and the output says so loudly.
    let printed = dev.log();
    assert!(
        printed.contains("OPEN CLUSTER") && printed.contains("--auth open"),
        "{printed}"
    );

    // SIGTERM: everything stops, nothing is left: not the nodes, nor anything else
    // strata-dev started (etcd, the control plane).
    let dev_pid = dev.child.id();
    let started = descendants(dev_pid);
    assert!(started.len() >= 6, "strata-dev runs only {started:?}");
    pids.extend(started);
    signal::kill(
        Pid::from_raw(i32::try_from(dev_pid).unwrap()),
        Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = dev.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "strata-dev still running 60 s after SIGTERM:\n{}",
            dev.log()
        );
        sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "strata-dev: {status}\n{}", dev.log());
    wait_all_gone(&pids, Duration::from_secs(5), "strata-dev exited").await;
    let log = dev.log();
    assert!(log.contains("no process left"), "{log}");
    let _ = fs::remove_dir_all(&dir);
}

/// A real `strata-node` reads its token keys again on SIGHUP, keeps running, and keeps the
/// keys it has when the file is broken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_token_keys() {
    use security_common::{NOT_SDP, SECRET_1, SECRET_2, b64, post, token};
    use strata_node::auth::{Action, unix_now};

    let dir = fresh_dir("strata-sighup");
    let keys = dir.join("token-keys");
    fs::write(&keys, format!("old={}\n", b64(SECRET_1))).unwrap();
    let mut cluster = ProcCluster::start(ProcOptions {
        store: StoreMode::Etcd,
        nodes: vec![("n1".into(), "r1".into())],
        node_args: vec![
            "--auth".into(),
            "required".into(),
            "--token-keys".into(),
            keys.display().to_string(),
        ],
        ..ProcOptions::default()
    })
    .await
    .unwrap();
    let node = cluster.node_mut("n1").unwrap();
    let pid = node.pid().unwrap();
    let whip = format!("{}/whip/cam", node.http_url());
    let log = node.process().log_path().to_owned();
    let old = token("old", "cam", Action::Publish, unix_now() + 600);
    let new = token("new", "cam", Action::Publish, unix_now() + 600);
    // 400: past the token gate, refused by the offer check; 401: the gate.
    assert_eq!(post(&whip, Some(&old), NOT_SDP).await.status, 400);
    assert_eq!(post(&whip, Some(&new), NOT_SDP).await.status, 401);

    // Rotate in the file (a rename, as an operator's tooling would), then SIGHUP.
    let staged = dir.join(".token-keys.new");
    fs::write(&staged, format!("new={}\n", b64(SECRET_2))).unwrap();
    fs::rename(&staged, &keys).unwrap();
    signal::kill(Pid::from_raw(pid as i32), Signal::SIGHUP).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = post(&whip, Some(&new), NOT_SDP).await.status;
        if status == 400 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new key is not in use 10 s after SIGHUP: {status}"
        );
        assert!(alive(pid), "the node died of SIGHUP");
        sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(post(&whip, Some(&old), NOT_SDP).await.status, 401);

    // A broken file is refused: the node says so, keeps the key it has and keeps running.
    fs::write(&keys, "new=short\n").unwrap();
    signal::kill(Pid::from_raw(pid as i32), Signal::SIGHUP).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("token keys NOT reloaded")
    {
        assert!(
            Instant::now() < deadline,
            "no refused reload logged 10 s after SIGHUP"
        );
        sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(post(&whip, Some(&new), NOT_SDP).await.status, 400);
    assert!(alive(pid));
    cluster.stop().await.unwrap();
    let _ = fs::remove_dir_all(&dir);
}
