//! Adding and removing the nodes of a [`ProcCluster`].

use std::net::Ipv4Addr;
use std::process::ExitStatus;

use anyhow::{Result, anyhow, bail};
use tokio::time::{Instant, sleep};

use super::*;

impl ProcCluster {
    /// Starts a node and waits until it is ready (registered, `/healthz` 200).
    pub async fn add_node(&mut self, id: &str, region: &str) -> Result<&mut NodeProc> {
        self.add_nodes(&[(id.to_owned(), region.to_owned())])
            .await?;
        self.node_mut(id)
    }

    /// Starts nodes, given as (id, region), all at once, and waits until every one is ready.
    /// A node that loses a race for its free ports is started again on new ones.
    pub async fn add_nodes(&mut self, nodes: &[(String, String)]) -> Result<()> {
        let mut pending = Vec::with_capacity(nodes.len());
        for (id, region) in nodes {
            ensure!(
                self.node(id).is_none() && !pending.iter().any(|n: &NodeProc| n.id == *id),
                "node {id} already exists"
            );
            let ips = [Ipv4Addr::LOCALHOST.into(), self.relay_ip(region).into()];
            self.ca.issue(id, &ips)?.write(&self.certs_dir)?;
            let mut node = self.node_proc(id, region)?;
            node.proc.spawn()?;
            pending.push(node);
        }
        // (index in `nodes`, attempt, process)
        let mut pending: Vec<(usize, usize, NodeProc)> = pending
            .into_iter()
            .enumerate()
            .map(|(i, n)| (i, 1, n))
            .collect();
        let mut ready = Vec::with_capacity(pending.len());
        let deadline = Instant::now() + NODE_READY_WITHIN;
        while !pending.is_empty() {
            let mut i = 0;
            while i < pending.len() {
                let (_, attempt, node) = &mut pending[i];
                match node.poll_ready().await {
                    Ok(true) => {
                        ready.push(pending.remove(i));
                        continue;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        let retry = self.ports.retry_on_conflict()
                            && node.proc.lost_port_race()
                            && *attempt < START_ATTEMPTS;
                        if !retry {
                            return Err(e);
                        }
                        tracing::debug!(node = %node.id, error = %e, "port race; retrying");
                        node.proc.rotate_log(*attempt);
                        *attempt += 1;
                        let (id, region) = (node.id.clone(), node.region.clone());
                        let mut fresh = self.node_proc(&id, &region)?;
                        fresh.proc.spawn()?;
                        pending[i].2 = fresh;
                    }
                }
                i += 1;
            }
            if let Some((_, _, late)) = pending.first()
                && Instant::now() >= deadline
            {
                bail!(
                    "node {} not ready within {NODE_READY_WITHIN:?}; log {}:\n{}",
                    late.id,
                    late.proc.log_path.display(),
                    late.proc.log_tail()
                );
            }
            if !pending.is_empty() {
                sleep(POLL).await;
            }
        }
        // In the order asked for, whatever the order they became ready in.
        ready.sort_by_key(|(i, _, _)| *i);
        self.nodes.extend(ready.into_iter().map(|(_, _, n)| n));
        Ok(())
    }

    /// The relay IP of the nodes of `region`.
    fn relay_ip(&self, region: &str) -> Ipv4Addr {
        self.relay_ips
            .iter()
            .find(|(r, _)| r == region)
            .map_or(Ipv4Addr::LOCALHOST, |(_, ip)| *ip)
    }

    /// A node process (not spawned) on new ports.
    fn node_proc(&mut self, id: &str, region: &str) -> Result<NodeProc> {
        let relay_ip = self.relay_ip(region);
        let http_port = self.ports.tcp()?;
        let relay_port = self.ports.udp()?;
        let rtc_port = self.ports.udp()?;
        let rtmp_port = self.ports.tcp()?;
        let srt_port = self.ports.udp()?;
        let control_plane: Vec<String> = self.control_planes.iter().map(ControlProc::url).collect();
        let mut args = vec![
            "--id".to_owned(),
            id.to_owned(),
            "--region".to_owned(),
            region.to_owned(),
            "--http-listen".to_owned(),
            format!("127.0.0.1:{http_port}"),
            "--relay-listen".to_owned(),
            format!("{relay_ip}:{relay_port}"),
            "--rtc-listen".to_owned(),
            format!("127.0.0.1:{rtc_port}"),
            "--rtmp-listen".to_owned(),
            format!("127.0.0.1:{rtmp_port}"),
            "--srt-listen".to_owned(),
            format!("127.0.0.1:{srt_port}"),
            "--announce-ips".to_owned(),
            "127.0.0.1".to_owned(),
            "--control-plane".to_owned(),
            control_plane.join(","),
            "--certs-dir".to_owned(),
            self.certs_dir.display().to_string(),
        ];
        // A dev cluster takes anyone (explicitly: the binary's default is
        // `--auth required`) and puts no rate limit or connection share on
        // 127.0.0.1, the address of every local client; `node_args` may say
        // otherwise.
        let given = |flag: &str| {
            self.node_args
                .iter()
                .any(|a| a.split('=').next() == Some(flag))
        };
        if !given("--auth") {
            args.extend(["--auth".to_owned(), "open".to_owned()]);
        }
        if !given("--post-rate-per-ip") {
            args.extend(["--post-rate-per-ip".to_owned(), "0".to_owned()]);
        }
        if !given("--http-max-connections-per-ip") {
            args.extend(["--http-max-connections-per-ip".to_owned(), "0".to_owned()]);
        }
        args.extend(self.node_args.iter().cloned());
        let proc = Proc::new(
            &format!("node-{id}"),
            &self.bins.node,
            args,
            &self.rust_log,
            &self.dir,
        );
        Ok(NodeProc {
            id: id.to_owned(),
            region: region.to_owned(),
            http_port,
            relay_ip,
            relay_port,
            rtc_port,
            rtmp_port,
            srt_port,
            control_plane,
            proc,
        })
    }

    /// Stops a node gracefully (SIGTERM: drain, deregister) and forgets it; returns its exit
    /// status.
    pub async fn remove_node(&mut self, id: &str) -> Result<ExitStatus> {
        let i = self
            .nodes
            .iter()
            .position(|n| n.id == id)
            .ok_or_else(|| anyhow!("no node {id}"))?;
        let mut node = self.nodes.remove(i);
        node.terminate().await
    }
}
