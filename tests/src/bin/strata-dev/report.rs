//! What `strata-dev` tells its user once the cluster is up: the JSON file (`--json`) and
//! the summary it prints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use strata_tests::procs::{NodeProc, ProcCluster, StoreInUse};

use super::{Args, EtcdHolder, STREAM};

/// What `--json` gets.
#[derive(Debug, Serialize)]
struct ClusterJson {
    /// gRPC `127.0.0.1:PORT`.
    control_plane: String,
    /// The stream the test publisher sends, if it runs.
    test_stream: Option<String>,
    /// Nodes by region.
    regions: BTreeMap<String, Vec<JsonNode>>,
}

/// A node in the JSON file.
#[derive(Debug, Serialize)]
struct JsonNode {
    id: String,
    pid: Option<u32>,
    http: String,
    relay: String,
    /// RTMP ingest `127.0.0.1:PORT`: `rtmp://{rtmp}/live/{stream}`.
    rtmp: String,
    /// SRT ingest `127.0.0.1:PORT` (UDP).
    srt: String,
}

pub(super) fn write_json(args: &Args, cluster: &ProcCluster, publishing: bool) -> Result<PathBuf> {
    let path = match &args.json {
        Some(p) => p.clone(),
        None => cluster.dir().join("cluster.json"),
    };
    let mut regions: BTreeMap<String, Vec<JsonNode>> = BTreeMap::new();
    for n in cluster.node_list() {
        regions.entry(n.region).or_default().push(JsonNode {
            id: n.id,
            pid: n.pid,
            http: n.http,
            relay: n.relay,
            rtmp: n.rtmp,
            srt: n.srt,
        });
    }
    let cp = cluster
        .control_planes()
        .first()
        .context("no control plane")?;
    let doc = ClusterJson {
        control_plane: cp.addr().to_string(),
        test_stream: publishing.then(|| STREAM.to_owned()),
        regions,
    };
    // Written aside and renamed: whoever waits for the file never reads half of it.
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&doc)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

pub(super) fn print_summary(
    cluster: &ProcCluster,
    etcd: Option<&EtcdHolder>,
    publishing: bool,
    json: &Path,
) {
    let Some(cp) = cluster.control_planes().first() else {
        return;
    };
    let addr = cp.addr();
    println!();
    println!("Strata dev cluster is up");
    match (cluster.store(), etcd) {
        (StoreInUse::Etcd(_), Some(e)) => {
            println!("  etcd           {} (pid {})", e.endpoint, e.pid)
        }
        (StoreInUse::Etcd(endpoints), None) => println!("  etcd           {}", endpoints.join(",")),
        (StoreInUse::Memory, _) => println!("  store          MEMORY (etcd not installed)"),
    }
    println!(
        "  control plane  {addr} (gRPC)  {}/metrics  pid {}",
        cp.http_url(),
        cp.pid().unwrap_or_default()
    );
    let mut by_region: BTreeMap<&str, Vec<_>> = BTreeMap::new();
    for n in cluster.nodes() {
        by_region.entry(n.region()).or_default().push(n);
    }
    for (region, nodes) in &by_region {
        println!("  region {region}");
        for n in nodes {
            print_node(n);
        }
    }
    println!();
    if publishing {
        println!("Test stream {STREAM:?} is being published; play it in a browser:");
        for (region, nodes) in &by_region {
            if let Some(n) = nodes.first() {
                println!("  {region:<6} {}/play/{STREAM}", n.http_url());
            }
        }
    } else if let Some(n) = cluster.nodes().first() {
        println!("Publish from a browser: {}/publish/<stream>", n.http_url());
    }
    if let Some(n) = cluster.nodes().first() {
        println!(
            "Publish over RTMP:      ffmpeg -re -f lavfi -i testsrc2 -f lavfi -i sine -c:v libx264 \
             -profile:v baseline -tune zerolatency -c:a aac -f flv rtmp://{}/live/<stream>",
            n.rtmp_addr()
        );
    }
    print_grpcurl(&addr);
    println!("logs:    {}", cluster.dir().display());
    println!("json:    {}", json.display());
    println!();
    println!(
        "!!! OPEN CLUSTER, local development only: nodes run with --auth open (anyone may \
         publish and play, no token) and the control plane with --plaintext (gRPC without TLS \
         or authentication). Production settings: docs/security.md !!!"
    );
    println!("Ctrl-C stops everything.");
}

/// A node's line: its id, URLs and pid, and where it takes RTMP and SRT.
fn print_node(n: &NodeProc) {
    println!(
        "    {:<10} {}  relay {}  pid {}",
        n.id(),
        n.http_url(),
        n.relay_addr(),
        n.pid().unwrap_or_default()
    );
    println!("               rtmp://{}/live/<stream>", n.rtmp_addr());
    println!(
        "               srt://{}?streamid=#!::r=<stream>,m=publish",
        n.srt_addr()
    );
}

/// grpcurl calls to try against the control plane at `addr`.
fn print_grpcurl(addr: &std::net::SocketAddr) {
    println!();
    println!("grpcurl (reflection is on):");
    println!("  grpcurl -plaintext {addr} list");
    println!("  grpcurl -plaintext {addr} strata.v1.NodeService/ListNodes");
    println!(
        "  grpcurl -plaintext -d '{{\"stream\":\"{STREAM}\"}}' {addr} strata.v1.RoutingService/GetStream"
    );
    println!("  grpcurl -plaintext {addr} grpc.health.v1.Health/Check");
    println!();
}
