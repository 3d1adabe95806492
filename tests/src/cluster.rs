//! A whole cluster in one test process: etcd (real), one or more
//! control-plane replicas, and nodes, all on `127.0.0.1` port 0, with a
//! cluster CA made for the occasion.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use strata_node::NodeConfig;
use strata_proto::v1;
use strata_relay::certs::DevCa;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::control::{Clients, ControlPlane, Options, Store};
use crate::etcd::EtcdProcess;

/// A node running in this process.
pub struct TestNode {
    /// Node id.
    pub id: String,
    /// Region.
    pub region: String,
    /// `http://127.0.0.1:PORT`.
    pub http: String,
    /// `127.0.0.1:PORT` of the RTMP ingest.
    pub rtmp: Option<String>,
    /// `127.0.0.1:PORT` of the SRT ingest (UDP).
    pub srt: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<()>>,
}

impl TestNode {
    /// Drains and stops the node (as on SIGTERM); waits for it.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match tokio::time::timeout(Duration::from_secs(20), &mut self.task).await {
            Ok(r) => r?,
            Err(_) => anyhow::bail!("node {} did not stop within 20 s", self.id),
        }
    }

    /// The node's `/metrics` text.
    pub async fn metrics(&self) -> Result<String> {
        Ok(crate::http::get(&format!("{}/metrics", self.http))
            .await?
            .text())
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// etcd + control plane + nodes.
pub struct Cluster {
    /// The etcd process.
    pub etcd: EtcdProcess,
    /// The control-plane replica.
    pub cp: ControlPlane,
    /// gRPC clients of the control plane.
    pub clients: Clients,
    certs: PathBuf,
    ca: DevCa,
}

impl Cluster {
    /// Starts etcd and a control plane with this lease TTL.
    pub async fn start(lease_ttl: Duration) -> Result<Cluster> {
        Self::start_with(lease_ttl, Options::default()).await
    }

    /// Like [`Cluster::start`], the control plane started with `options` (e.g. its HTTP
    /// side, for the dashboard's topology).
    pub async fn start_with(lease_ttl: Duration, options: Options) -> Result<Cluster> {
        let (etcd, store) = Store::etcd().await?;
        let cp = ControlPlane::start_with(&store, lease_ttl, options).await?;
        let clients = cp.clients().await?;
        let certs = std::env::temp_dir().join(format!(
            "strata-certs-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&certs)?;
        let ca = DevCa::generate()?;
        ca.write(&certs)?;
        Ok(Cluster {
            etcd,
            cp,
            clients,
            certs,
            ca,
        })
    }

    /// The config a node of this cluster runs with (ports 0, loopback).
    pub fn node_config(&self, id: &str, region: &str) -> NodeConfig {
        let mut cfg = NodeConfig::default();
        cfg.id = id.into();
        cfg.region = region.into();
        cfg.http_listen = "127.0.0.1:0".parse().unwrap_or(cfg.http_listen);
        cfg.relay_listen = "127.0.0.1:0".parse().unwrap_or(cfg.relay_listen);
        cfg.rtc_listen = "127.0.0.1:0".parse().unwrap_or(cfg.rtc_listen);
        cfg.rtmp_listen = "127.0.0.1:0".into();
        cfg.rtmp_max_connections_per_ip = 0;
        cfg.srt_listen = "127.0.0.1:0".into();
        cfg.srt_max_connections_per_ip = 0;
        cfg.control_plane = vec![self.cp.url()];
        cfg.certs_dir = Some(self.certs.clone());
        cfg.linger = Duration::from_secs(2);
        // Test clusters take anyone (tests of tokens set `Required` and keys)
        // and put no rate limit or connection share on 127.0.0.1, the address
        // of every test client.
        cfg.auth = strata_node::auth::AuthMode::Open;
        cfg.post_rate_per_ip = 0.0;
        cfg.http_max_connections_per_ip = 0;
        cfg
    }

    /// Starts a node with the default test config.
    pub async fn node(&self, id: &str, region: &str) -> Result<TestNode> {
        self.node_with(self.node_config(id, region)).await
    }

    /// Starts a node with this config; returns once it is registered.
    pub async fn node_with(&self, cfg: NodeConfig) -> Result<TestNode> {
        // The sender is dropped at once: this node never reloads.
        let (_, reloads) = tokio::sync::mpsc::channel(1);
        self.node_with_reloads(cfg, reloads).await
    }

    /// Starts a node that reloads its token keys on every message of
    /// `reloads`, as `strata-node` does on SIGHUP.
    pub async fn node_with_reloads(
        &self,
        cfg: NodeConfig,
        reloads: tokio::sync::mpsc::Receiver<()>,
    ) -> Result<TestNode> {
        let creds = self.ca.issue(&cfg.id, &["127.0.0.1".parse()?])?;
        creds.write(&self.certs)?;
        let listeners = strata_node::Listeners::bind(&cfg).await?;
        let http = format!("http://{}", listeners.http.local_addr()?);
        let rtmp = match &listeners.rtmp {
            Some(l) => Some(l.local_addr()?.to_string()),
            None => None,
        };
        let srt = match &listeners.srt {
            Some(s) => Some(s.local_addr()?.to_string()),
            None => None,
        };
        let (tx, rx) = oneshot::channel::<()>();
        let (id, region) = (cfg.id.clone(), cfg.region.clone());
        let task = tokio::spawn(strata_node::run_with_reload(
            cfg,
            listeners,
            async move {
                let _ = rx.await;
            },
            reloads,
        ));
        let node = TestNode {
            id: id.clone(),
            region,
            http,
            rtmp,
            srt,
            stop: Some(tx),
            task,
        };
        let mut c = self.clients.clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let r = c
                .nodes
                .get_node(v1::GetNodeRequest {
                    node_id: id.clone(),
                })
                .await;
            if r.is_ok() {
                return Ok(node);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "node {id} did not register"
            );
            anyhow::ensure!(!node.task.is_finished(), "node {id} exited during start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The control plane's view of a stream.
    pub async fn tree(&self, stream: &str) -> Result<v1::StreamTree> {
        let mut c = self.clients.clone();
        let r = c
            .routing
            .get_stream(v1::GetStreamRequest {
                stream: stream.into(),
            })
            .await;
        Ok(r.context("GetStream")?.into_inner())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.certs);
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish()
}

/// Pairs of names, e.g. (region, node).
pub type Pairs = Vec<(String, String)>;

/// Regional origins of a tree as (region, node), subscribers as (node, upstream).
pub fn topology(tree: &v1::StreamTree) -> (Pairs, Pairs) {
    let regional = tree
        .regional
        .iter()
        .map(|r| (r.region.clone(), r.node_id.clone()))
        .collect();
    let subs = tree
        .subscribers
        .iter()
        .map(|s| (s.node_id.clone(), s.upstream_node_id.clone()))
        .collect();
    (regional, subs)
}
