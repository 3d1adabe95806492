//! A node as a process.

use std::net::Ipv4Addr;
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Result, bail};
use serde::Serialize;
use strata_proto::v1;
use tokio::time::{Instant, sleep, timeout};

use super::*;

/// One node process.
#[derive(Debug)]
pub struct NodeProc {
    pub(super) id: String,
    pub(super) region: String,
    pub(super) http_port: u16,
    pub(super) relay_ip: Ipv4Addr,
    pub(super) relay_port: u16,
    pub(super) rtc_port: u16,
    pub(super) rtmp_port: u16,
    pub(super) srt_port: u16,
    pub(super) control_plane: Vec<String>,
    pub(super) proc: Proc,
}

/// A node as listed by [`ProcCluster::node_list`] (and in `strata-dev`'s JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeEntry {
    /// Node id.
    pub id: String,
    /// Region.
    pub region: String,
    /// Process id, while the process runs.
    pub pid: Option<u32>,
    /// `http://127.0.0.1:PORT`.
    pub http: String,
    /// `IP:PORT` (QUIC, UDP): 127.0.0.1 unless [`ProcOptions::relay_ips`] says otherwise.
    pub relay: String,
    /// `127.0.0.1:PORT` of the RTMP ingest (TCP): `rtmp://{rtmp}/live/{stream}`.
    pub rtmp: String,
    /// `127.0.0.1:PORT` of the SRT ingest (UDP): `srt://{srt}?streamid=#!::r={stream},m=publish`.
    pub srt: String,
}

impl NodeProc {
    /// Node id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Region.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// `http://127.0.0.1:PORT`: WHIP, WHEP, pages, `/healthz`, `/metrics`.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The relay's `IP:PORT` (QUIC over UDP); the IP is 127.0.0.1 unless
    /// [`ProcOptions::relay_ips`] names one for the node's region.
    pub fn relay_addr(&self) -> String {
        format!("{}:{}", self.relay_ip, self.relay_port)
    }

    /// The RTMP ingest's `127.0.0.1:PORT` (TCP).
    pub fn rtmp_addr(&self) -> String {
        format!("127.0.0.1:{}", self.rtmp_port)
    }

    /// The SRT ingest's `127.0.0.1:PORT` (UDP).
    pub fn srt_addr(&self) -> String {
        format!("127.0.0.1:{}", self.srt_port)
    }

    /// The WebRTC `127.0.0.1:PORT` (UDP).
    pub fn rtc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.rtc_port)
    }

    proc_accessors!();

    /// SIGKILL: no drain, no deregistration; the lease expires.
    pub fn kill(&mut self) -> Result<()> {
        self.proc.kill()
    }

    /// SIGTERM (the node drains and deregisters), then waits up to 20 s for the exit.
    pub async fn terminate(&mut self) -> Result<ExitStatus> {
        self.proc.terminate(NODE_STOP_GRACE).await
    }

    /// Stops the process if it runs (SIGTERM), starts it again with the same ports and
    /// arguments, and waits until it is ready.
    pub async fn restart(&mut self) -> Result<()> {
        self.proc.respawn(NODE_STOP_GRACE).await?;
        self.wait_ready().await
    }

    /// This node as a list entry.
    pub fn entry(&self) -> NodeEntry {
        NodeEntry {
            id: self.id.clone(),
            region: self.region.clone(),
            pid: self.pid(),
            http: self.http_url(),
            relay: self.relay_addr(),
            rtmp: self.rtmp_addr(),
            srt: self.srt_addr(),
        }
    }

    pub(super) async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + NODE_READY_WITHIN;
        loop {
            match self.poll_ready().await? {
                true => return Ok(()),
                false if Instant::now() >= deadline => {
                    bail!(
                        "node {} not ready within {NODE_READY_WITHIN:?}; log {}:\n{}",
                        self.id,
                        self.proc.log_path.display(),
                        self.proc.log_tail()
                    )
                }
                false => sleep(POLL).await,
            }
        }
    }

    /// Ready: registered (a control plane's `GetNode` finds it) and `/healthz` answers 200.
    /// Fails if the process exited.
    pub(super) async fn poll_ready(&mut self) -> Result<bool> {
        if !self.proc.is_running() {
            return Err(self.proc.exited_error("before it was ready"));
        }
        Ok(self.registered().await && self.healthy().await)
    }

    pub(super) async fn registered(&self) -> bool {
        for url in &self.control_plane {
            let Ok(channel) = connect(url).await else {
                continue;
            };
            let mut nodes = v1::node_service_client::NodeServiceClient::new(channel);
            let req = v1::GetNodeRequest {
                node_id: self.id.clone(),
            };
            if let Ok(node) = nodes.get_node(req).await {
                return node
                    .into_inner()
                    .info
                    .is_some_and(|i| i.http_url == self.http_url());
            }
        }
        false
    }

    pub(super) async fn healthy(&self) -> bool {
        let url = format!("{}/healthz", self.http_url());
        matches!(
            timeout(Duration::from_secs(2), crate::http::get(&url)).await,
            Ok(Ok(resp)) if resp.status == 200
        )
    }
}
