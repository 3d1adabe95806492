//! Network partitions between loopback ranges (`nft`), and the etcd leader to fault.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};

use crate::grpcurl::find_executable;

/// A /24 of loopback addresses, e.g. `127.0.2.0/24`.
#[derive(Debug, Clone, Copy)]
pub struct Net24(pub Ipv4Addr);

impl std::fmt::Display for Net24 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, _] = self.0.octets();
        write!(f, "{a}.{b}.{c}.0/24")
    }
}

/// The nftables table the partition rules live in.
const NFT_TABLE: &str = "strata_partition";

/// A network partition between two address ranges: UDP between them is dropped (both
/// directions, on input: the sender sees no error, the packet is simply lost). Only inside the
/// test's network namespace (`STRATA_NETNS=1`), never on the machine's own firewall. Healed on
/// drop.
pub struct Partition {
    nft: std::path::PathBuf,
    cut: bool,
}

impl Partition {
    /// Checks that `nft` is installed and that this runs in the test namespace.
    pub fn new() -> Result<Self> {
        ensure!(
            crate::ports::netns_enabled(),
            "a partition changes packet filtering: only inside the test network namespace \
             (STRATA_NETNS=1, scripts/test.sh)"
        );
        let nft = find_executable("nft").context(
            "`nft` (Debian package nftables) is not installed: the partition test drops packets \
             with it; install it (scripts/setup.sh should)",
        )?;
        Ok(Self { nft, cut: false })
    }

    /// Drops UDP between `a` and `b`.
    pub fn cut(&mut self, a: Net24, b: Net24) -> Result<()> {
        let script = format!(
            "table inet {NFT_TABLE} {{\n\
             \tchain input {{\n\
             \t\ttype filter hook input priority 0; policy accept;\n\
             \t\tip saddr {a} ip daddr {b} meta l4proto udp counter drop\n\
             \t\tip saddr {b} ip daddr {a} meta l4proto udp counter drop\n\
             \t}}\n\
             }}\n"
        );
        self.run(&["-f", "-"], Some(&script))?;
        self.cut = true;
        Ok(())
    }

    /// Removes the rules.
    pub fn heal(&mut self) -> Result<()> {
        if self.cut {
            self.run(&["delete", "table", "inet", NFT_TABLE], None)?;
            self.cut = false;
        }
        Ok(())
    }

    /// Packets the rules dropped so far (their counters), while cut.
    pub fn dropped_packets(&self) -> Result<u64> {
        let table = self.run(&["list", "table", "inet", NFT_TABLE], None)?;
        Ok(table
            .split("counter packets ")
            .skip(1)
            .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .sum())
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut child = Command::new(&self.nft)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", self.nft.display()))?;
        if let Some(input) = stdin
            && let Some(mut w) = child.stdin.take()
        {
            w.write_all(input.as_bytes())?;
        }
        drop(child.stdin.take());
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "nft {args:?} failed ({}): {} (the test needs CAP_NET_ADMIN in its namespace)",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        let _ = self.heal();
    }
}

/// The index of the etcd cluster's leader among its members (`etcdctl endpoint status`).
pub async fn etcd_leader(etcd: &mut crate::etcd::EtcdCluster) -> Result<usize> {
    let endpoints = etcd.live_endpoints();
    let out = crate::etcd::etcdctl_ok(&endpoints, &["endpoint", "status", "-w", "json"]).await?;
    let status: serde_json::Value = serde_json::from_str(&out).context("endpoint status JSON")?;
    for entry in status.as_array().context("endpoint status: not a list")? {
        let st = &entry["Status"];
        if st["leader"].as_u64().is_some() && st["leader"] == st["header"]["member_id"] {
            let endpoint = entry["Endpoint"].as_str().context("no Endpoint")?;
            return etcd
                .endpoints()
                .iter()
                .position(|e| e == endpoint)
                .with_context(|| format!("leader {endpoint} is not a member"));
        }
    }
    bail!("no etcd member says it leads: {out}")
}
