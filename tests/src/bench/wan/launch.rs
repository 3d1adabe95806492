//! Starting the parts of a cluster where a benchmark needs them: a control plane in this
//! process on a chosen address, and `strata-node` processes on chosen addresses, optionally
//! inside a network namespace (`ip netns exec`) and pinned to a CPU (`taskset`).
//!
//! [`crate::procs::ProcCluster`] binds everything to 127.0.0.1 in the caller's namespace; the
//! WAN bench needs nodes in other namespaces and the fan-out bench needs a pinned node, hence
//! this smaller launcher (same binaries, same flags, same readiness rule).

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use strata_control::kv::{Kv, memory::MemoryKv};
use strata_control::{Config, StoreKind};
use strata_relay::certs::DevCa;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::control::{HealthCheckRequest, ServingStatus, tonic_health_client};
use crate::grpcurl::find_executable;
use crate::http;
use crate::ports::{free_tcp_port, free_udp_port};
use crate::procs::{Binaries, child_command};

/// `RUST_LOG` of benchmark nodes: warnings only, so logging costs nothing measurable.
pub const BENCH_RUST_LOG: &str = "warn,rtc=error,rtc_ice=error,rtc_dtls=error,webrtc=error";

/// A control plane (memory store) running in this process.
pub struct InProcessControl {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<()>>,
}

impl InProcessControl {
    /// Serves gRPC on `ip` (port 0) with a fresh memory store; returns once SERVING.
    pub async fn start(ip: IpAddr, lease_ttl: Duration) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, 0))
            .await
            .with_context(|| format!("binding the control plane on {ip}"))?;
        let addr = listener.local_addr()?;
        let config = Config {
            listen: addr,
            store: StoreKind::Memory,
            lease_ttl,
            ..Config::default()
        };
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(strata_control::run_with_store(
            config,
            Kv::Memory(MemoryKv::new()),
            listener,
            async move {
                let _ = rx.await;
            },
        ));
        let cp = Self {
            addr,
            shutdown: Some(tx),
            task,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(ch) = tonic::transport::Endpoint::from_shared(cp.url())?
                .connect_timeout(Duration::from_secs(2))
                .connect()
                .await
            {
                let mut h = tonic_health_client(ch);
                let req = HealthCheckRequest {
                    service: String::new(),
                };
                if let Ok(r) = h.check(req).await
                    && r.into_inner().status == ServingStatus::Serving as i32
                {
                    return Ok(cp);
                }
            }
            if cp.task.is_finished() || Instant::now() >= deadline {
                bail!("control plane on {addr} did not start");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for InProcessControl {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.abort();
    }
}

/// Where and how to run one node.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Node id.
    pub id: String,
    /// Region.
    pub region: String,
    /// Address for HTTP, relay and WebRTC, also the one ICE candidate.
    pub ip: Ipv4Addr,
    /// Network namespace to run in (`ip netns exec`), if any.
    pub netns: Option<String>,
    /// CPUs to pin the node to (a `taskset -c` list such as `1` or `0-1`), if any.
    pub cpus: Option<String>,
    /// Extra flags (e.g. `--capacity 100000`).
    pub args: Vec<String>,
}

/// Certificates of a benchmark cluster and the temp dir holding them and the logs.
pub struct ClusterDir {
    dir: PathBuf,
    certs: PathBuf,
    ca: DevCa,
    keep: bool,
}

impl ClusterDir {
    /// A fresh temp dir (`strata-bench-<what>-<pid>-<n>`) with a new CA.
    pub fn new(what: &str) -> Result<Self> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "strata-bench-{what}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        let certs = dir.join("certs");
        fs::create_dir_all(&certs).with_context(|| format!("creating {}", certs.display()))?;
        let ca = DevCa::generate()?;
        ca.write(&certs)?;
        Ok(Self {
            dir,
            certs,
            ca,
            keep: false,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Keep the directory (logs) when dropped.
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for ClusterDir {
    fn drop(&mut self) {
        let keep_env = std::env::var_os("STRATA_KEEP_TEST_LOGS").is_some_and(|v| v == "1");
        if self.keep || keep_env || std::thread::panicking() {
            eprintln!("strata-bench: logs kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Flags of this `strata-node` build that a benchmark node needs when they exist: open
/// access (no tokens) and no per-address rate limit on WHIP/WHEP POSTs (the load client
/// opens hundreds of sessions from one address).
fn optional_node_flags(node: &Path) -> &'static [String] {
    static FLAGS: OnceLock<Vec<String>> = OnceLock::new();
    FLAGS.get_or_init(|| {
        let help = std::process::Command::new(node)
            .arg("--help")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let mut flags = Vec::new();
        if help.contains("--auth ") || help.contains("--auth <") {
            flags.extend(["--auth".to_owned(), "open".to_owned()]);
        }
        if help.contains("--post-rate-per-ip") {
            flags.extend(["--post-rate-per-ip".to_owned(), "0".to_owned()]);
        }
        if help.contains("--http-max-connections-per-ip") {
            flags.extend(["--http-max-connections-per-ip".to_owned(), "0".to_owned()]);
        }
        // Several nodes share a namespace: no RTMP listener on the default port.
        if help.contains("--rtmp-listen") {
            flags.extend(["--rtmp-listen".to_owned(), "off".to_owned()]);
        }
        if help.contains("--srt-listen") {
            flags.extend(["--srt-listen".to_owned(), "off".to_owned()]);
        }
        flags
    })
}

/// A `strata-node` process.
pub struct NodeProcess {
    /// Node id.
    pub id: String,
    /// Region.
    pub region: String,
    /// `http://IP:PORT`.
    pub http: String,
    /// The relay's `IP:PORT`.
    pub relay: SocketAddr,
    child: Child,
    log: PathBuf,
}

impl NodeProcess {
    /// Spawns a node of the cluster whose control plane is at `control_plane`; call
    /// [`wait_ready`](Self::wait_ready) next (several nodes can start at once).
    pub fn spawn(dir: &ClusterDir, control_plane: &str, spec: &NodeSpec) -> Result<Self> {
        let bins = Binaries::locate()?;
        dir.ca
            .issue(&spec.id, &[IpAddr::V4(spec.ip), Ipv4Addr::LOCALHOST.into()])?
            .write(&dir.certs)?;
        // Ports chosen free in this namespace; a node in a fresh namespace has them all.
        let (http_port, relay_port, rtc_port) =
            (free_tcp_port()?, free_udp_port()?, free_udp_port()?);
        let ip = spec.ip;
        let mut args: Vec<String> = vec![
            "--id".into(),
            spec.id.clone(),
            "--region".into(),
            spec.region.clone(),
            "--http-listen".into(),
            format!("{ip}:{http_port}"),
            "--relay-listen".into(),
            format!("{ip}:{relay_port}"),
            "--rtc-listen".into(),
            format!("{ip}:{rtc_port}"),
            "--announce-ips".into(),
            ip.to_string(),
            "--control-plane".into(),
            control_plane.to_owned(),
            "--certs-dir".into(),
            dir.certs.display().to_string(),
        ];
        // A flag the spec sets itself (e.g. `--rtmp-listen ADDR`) wins over the default here.
        for pair in optional_node_flags(&bins.node).chunks(2) {
            if !spec.args.contains(&pair[0]) {
                args.extend(pair.iter().cloned());
            }
        }
        args.extend(spec.args.iter().cloned());
        // [ip netns exec NS] [taskset -c CPU] strata-node ARGS: each execs the next, so the
        // child's pid is the node's.
        let mut chain: Vec<String> = Vec::new();
        if let Some(ns) = &spec.netns {
            let ip_cmd = super::netns::ip_command()?;
            chain.extend([
                ip_cmd.display().to_string(),
                "netns".into(),
                "exec".into(),
                ns.clone(),
            ]);
        }
        if let Some(cpus) = &spec.cpus
            && let Some(taskset) = find_executable("taskset")
        {
            chain.extend([taskset.display().to_string(), "-c".into(), cpus.clone()]);
        }
        chain.push(bins.node.display().to_string());
        chain.extend(args);
        let log = dir.dir.join(format!("node-{}.log", spec.id));
        let file = fs::File::create(&log)?;
        let mut cmd = child_command(Path::new(&chain[0]));
        cmd.args(&chain[1..])
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("STRATA_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("RUST_LOG", BENCH_RUST_LOG).env("NO_COLOR", "1");
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning node {}", spec.id))?;
        Ok(Self {
            id: spec.id.clone(),
            region: spec.region.clone(),
            http: format!("http://{ip}:{http_port}"),
            relay: SocketAddr::from((ip, relay_port)),
            child,
            log,
        })
    }

    /// Waits until `/healthz` answers 200 (the node registers before it serves).
    pub async fn wait_ready(&mut self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "node {} exited ({status}) during start; log {}:\n{}",
                    self.id,
                    self.log.display(),
                    self.log_tail()
                );
            }
            let url = format!("{}/healthz", self.http);
            if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(2), http::get(&url)).await
                && r.status == 200
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "node {} not ready within {within:?}; log {}:\n{}",
                    self.id,
                    self.log.display(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The node's `/metrics`.
    pub async fn metrics(&self) -> Result<String> {
        Ok(http::get(&format!("{}/metrics", self.http)).await?.text())
    }

    /// The last lines of the node's log.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
