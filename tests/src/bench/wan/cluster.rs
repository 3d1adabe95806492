//! Building the benchmark's world: a namespace per region reached over veth pairs, the
//! regions' nodes, and a delaying proxy for every node as seen from every linked region.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use super::launch::{ClusterDir, InProcessControl, NodeProcess, NodeSpec};
use super::netns::{Namespaces, ip};
use super::proxy::{Link, NodeProxy};
use super::{LINKS, REGIONS, Region};

/// A namespace per region, linked to this one, with `per_region` node addresses on its `lo`.
pub(super) fn regions(namespaces: &mut Namespaces, per_region: usize) -> Result<Vec<Region>> {
    let mut regions = Vec::new();
    for (i, name) in REGIONS.iter().enumerate() {
        let ns = namespaces.add(name)?;
        let n = i as u8 + 1;
        let here = format!("sw{}b{i}", std::process::id() % 100_000);
        namespaces.link_to(
            &ns,
            &here,
            "hub0",
            Ipv4Addr::new(10, 98, n, 1),
            Ipv4Addr::new(10, 98, n, 2),
        )?;
        route_region(&ns, n, per_region)?;
        regions.push(Region {
            name,
            ns,
            nodes: Vec::new(),
        });
    }
    Ok(regions)
}

/// Routes between this namespace and region `n`'s, and the region's node addresses.
fn route_region(ns: &str, n: u8, per_region: usize) -> Result<()> {
    ip(&[
        "route",
        "add",
        &format!("10.99.{n}.0/24"),
        "via",
        &format!("10.98.{n}.2"),
    ])?;
    ip(&[
        "-n",
        ns,
        "route",
        "add",
        "10.99.0.0/24",
        "via",
        &format!("10.98.{n}.1"),
    ])?;
    for k in 1..=per_region {
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("10.99.{n}.{k}/32"),
            "dev",
            "lo",
        ])?;
    }
    Ok(())
}

/// Starts `per_region` nodes in each region's namespace (not waiting for them).
pub(super) fn spawn_nodes(
    dir: &ClusterDir,
    control: &InProcessControl,
    regions: &mut [Region],
    per_region: usize,
) -> Result<()> {
    for (i, region) in regions.iter_mut().enumerate() {
        for k in 1..=per_region {
            let spec = NodeSpec {
                id: format!("{}-{k}", region.name),
                region: region.name.to_owned(),
                ip: Ipv4Addr::new(10, 99, i as u8 + 1, k as u8),
                netns: Some(region.ns.clone()),
                cpus: None,
                args: vec!["--linger".into(), "1s".into()],
            };
            region
                .nodes
                .push(NodeProcess::spawn(dir, &control.url(), &spec)?);
        }
    }
    Ok(())
}

/// The emulated links of [`LINKS`], with empty counters.
pub(super) fn links() -> Vec<Arc<Link>> {
    LINKS
        .iter()
        .map(|&(a, b, rtt, loss)| {
            Arc::new(Link {
                a,
                b,
                one_way: Duration::from_millis(rtt / 2),
                loss,
                ab: Default::default(),
                ba: Default::default(),
            })
        })
        .collect()
}

/// Every node, as seen from every other region, behind the link between the two.
pub(super) async fn proxies(links: &[Arc<Link>], regions: &[Region]) -> Result<Vec<NodeProxy>> {
    let mut proxies = Vec::new();
    for link in links {
        for (near, far, forward) in [(link.a, link.b, true), (link.b, link.a, false)] {
            for node in &regions[far].nodes {
                let ip_far = node.relay.ip().to_string();
                ip(&[
                    "-n",
                    &regions[near].ns,
                    "addr",
                    "add",
                    &format!("{ip_far}/32"),
                    "dev",
                    "lo",
                ])?;
                proxies.push(
                    NodeProxy::start(
                        &regions[near].ns,
                        &regions[far].ns,
                        node.relay,
                        Arc::clone(link),
                        forward,
                    )
                    .await?,
                );
            }
        }
    }
    Ok(proxies)
}

/// Waits for every node to be ready; on failure keeps the cluster directory (the logs).
pub(super) async fn wait_ready(regions: &mut [Region], dir: &mut ClusterDir) -> Result<()> {
    let ready: Result<()> = async {
        for region in regions.iter_mut() {
            for node in &mut region.nodes {
                node.wait_ready(Duration::from_secs(40)).await?;
            }
        }
        Ok(())
    }
    .await;
    if ready.is_err() {
        dir.keep();
    }
    ready
}
