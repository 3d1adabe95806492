//! [`EtcdCluster`]: several etcd members on loopback, and waiting for members' health.

use anyhow::{Context, Result, anyhow, bail};
use tokio::time::{Instant, sleep};

use super::*;

/// A multi-member etcd cluster on loopback.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<EtcdProcess>,
}

impl EtcdCluster {
    /// Starts a cluster of `size` members and waits until every member is healthy.
    ///
    /// If a member loses a race for its ports, the whole cluster is started afresh on new
    /// ports, a few times at most.
    pub async fn start(size: usize) -> Result<Self> {
        if size == 0 {
            bail!("an etcd cluster needs at least one member");
        }
        let etcd = etcd_bin()?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let ports = free_tcp_ports(2 * size)?;
            let (client_ports, peer_ports) = ports.split_at(size);
            let names: Vec<String> = (0..size).map(|i| format!("strata{i}")).collect();
            let initial_cluster = names
                .iter()
                .zip(peer_ports)
                .map(|(name, &port)| format!("{name}={}", peer_url(port)))
                .collect::<Vec<_>>()
                .join(",");
            let mut members: Vec<EtcdProcess> = Vec::with_capacity(size);
            let mut token = None;
            for (i, name) in names.into_iter().enumerate() {
                let dir = crate::dirs::fresh_temp_dir("etcd")?;
                // The first member's directory names the cluster.
                let token = token.get_or_insert_with(|| cluster_token(&dir)).clone();
                members.push(EtcdProcess::new(
                    name,
                    dir,
                    client_ports[i],
                    peer_ports[i],
                    initial_cluster.clone(),
                    token,
                ));
            }
            for member in &mut members {
                member.spawn(&etcd)?;
            }
            match wait_all_healthy(&mut members).await {
                Ok(()) => return Ok(Self { members }),
                Err(e) if members.iter_mut().any(EtcdProcess::lost_port_race) => {
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("etcd cluster did not start"))).context(format!(
            "etcd lost the race for its ports {START_ATTEMPTS} times"
        ))
    }

    /// Client URLs of all members, running or not.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdProcess::endpoint).collect()
    }

    /// Client URLs of the members whose process is alive.
    pub fn live_endpoints(&mut self) -> Vec<String> {
        self.members
            .iter_mut()
            .filter_map(|m| m.is_running().then(|| m.endpoint()))
            .collect()
    }

    /// All members, in order.
    pub fn members(&self) -> &[EtcdProcess] {
        &self.members
    }

    /// Member `i`.
    pub fn member(&self, i: usize) -> Result<&EtcdProcess> {
        let len = self.members.len();
        self.members
            .get(i)
            .ok_or_else(|| anyhow!("no etcd member {i} in a cluster of {len}"))
    }

    /// Member `i`, mutably.
    pub fn member_mut(&mut self, i: usize) -> Result<&mut EtcdProcess> {
        let len = self.members.len();
        self.members
            .get_mut(i)
            .ok_or_else(|| anyhow!("no etcd member {i} in a cluster of {len}"))
    }

    /// Kills member `i` with SIGKILL; its data dir and ports are kept.
    pub fn kill_member(&mut self, i: usize) -> Result<()> {
        self.member_mut(i)?.kill()
    }

    /// Restarts member `i` with its ports and data dir, and waits until it is healthy
    /// (which needs a quorum of the cluster to be up).
    pub async fn restart_member(&mut self, i: usize) -> Result<()> {
        self.member_mut(i)?.restart().await
    }

    /// Runs `etcdctl` (v3 API) against the live members; returns stdout, or an error.
    pub async fn ctl(&mut self, args: &[&str]) -> Result<String> {
        let endpoints = self.live_endpoints();
        if endpoints.is_empty() {
            bail!("no etcd member is running");
        }
        etcdctl_ok(&endpoints, args).await
    }
}

/// Polls until every member answers `/health` with `{"health":"true"}`; fails early with the
/// member's log tail if one exits, and after [`HEALTHY_WITHIN`] if one is still unhealthy.
pub(super) async fn wait_all_healthy(members: &mut [EtcdProcess]) -> Result<()> {
    let deadline = Instant::now() + HEALTHY_WITHIN;
    let mut healthy = vec![false; members.len()];
    loop {
        for (member, ok) in members.iter_mut().zip(healthy.iter_mut()) {
            if *ok {
                continue;
            }
            if let Some(status) = member.exit_status() {
                bail!(
                    "etcd {} exited ({status}) before becoming healthy; log {}:\n{}",
                    member.name,
                    member.log_path.display(),
                    member.log_tail()
                );
            }
            if member.child.is_none() {
                bail!("etcd {} is not running", member.name);
            }
            // Healthy, and still our process: if etcd exited after losing its port, another
            // process may be answering on that port.
            *ok = member.is_healthy().await && member.exit_status().is_none();
        }
        if healthy.iter().all(|&ok| ok) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let (member, _) = members
                .iter()
                .zip(&healthy)
                .find(|(_, ok)| !**ok)
                .ok_or_else(|| anyhow!("no unhealthy member"))?;
            bail!(
                "etcd {} ({}) not healthy within {HEALTHY_WITHIN:?}; log {}:\n{}",
                member.name,
                member.endpoint(),
                member.log_path.display(),
                member.log_tail()
            );
        }
        sleep(POLL).await;
    }
}
