//! The control plane's bookkeeping at scale, against a real etcd:
//! - a load report that differs from the stored one only by measurement noise costs no etcd
//!   write; a material change, or a session count near capacity, is written (in the
//!   background of its keep-alive; read back as the load key's mod revision and version), and
//!   the newest of reports sent while a write is in flight is written after it;
//! - a replica loads a tree larger than one gRPC message (4 MiB) into its cache and serves.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use strata_proto::v1;
use strata_tests::control::{Clients, ControlPlane, Store};
use tokio::time::Instant;

fn load(players: u32, egress_bps: u64, cpu: f32) -> v1::Load {
    v1::Load {
        streams: 2,
        players,
        publishers: 0,
        egress_bps,
        cpu,
        stream_players: Vec::new(),
    }
}

struct Node {
    c: Clients,
    etcd: etcd_client::Client,
    lease: i64,
}

impl Node {
    async fn report(&mut self, l: v1::Load) {
        let req = v1::KeepAliveRequest {
            node_id: "n1".into(),
            lease_id: self.lease,
            load: Some(l),
        };
        self.c.nodes.keep_alive(req).await.unwrap();
    }

    /// The load key's mod revision and version (puts since it was created) in etcd
    /// (0, 0: absent).
    async fn load_key(&mut self) -> (i64, i64) {
        let r = self.etcd.get("/strata/load/n1", None).await.unwrap();
        r.kvs()
            .first()
            .map_or((0, 0), |kv| (kv.mod_revision(), kv.version()))
    }

    /// Waits until the load key was written after `revision` (the write is the keep-alive's
    /// background work) and gives its mod revision and version.
    async fn written_after(&mut self, revision: i64, what: &str) -> (i64, i64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let key = self.load_key().await;
            if key.0 > revision {
                return key;
            }
            assert!(Instant::now() < deadline, "{what} not written");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the control plane's cache shows `players` for the node (its next report is
    /// then compared with that record).
    async fn cached(&mut self, players: u32) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let req = v1::GetNodeRequest {
                node_id: "n1".into(),
            };
            let node = self.c.nodes.get_node(req).await.unwrap().into_inner();
            if node.load.is_some_and(|l| l.players == players) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "load of {players} players never cached"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noisy_load_reports_cost_no_write_material_ones_do() {
    let (etcd, store) = Store::etcd().await.unwrap();
    let cp = ControlPlane::start(&store, Duration::from_secs(10))
        .await
        .unwrap();
    let mut c = cp.clients().await.unwrap();
    let lease = c.register("n1", "eu").await.unwrap().lease_id;
    let etcd = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    let mut n = Node { c, etcd, lease };

    n.report(load(40, 100_000_000, 0.50)).await;
    let (first, _) = n.written_after(0, "the first report").await;
    n.cached(40).await;

    // A minute of noise: egress within ±3 %, CPU within ±0.02 cores.
    for i in 0..60u64 {
        let wobble = (i % 7) as f64 / 6.0 * 0.06 - 0.03;
        let bps = (100_000_000.0 * (1.0 + wobble)) as u64;
        n.report(load(40, bps, 0.50 + wobble as f32 * 0.6)).await;
    }

    // A material change is written by the report that carries it, and nothing before it
    // was: the key's second put.
    n.report(load(60, 100_000_000, 0.50)).await;
    let (_, version) = n.written_after(first, "20 more players").await;
    assert_eq!(version, 2, "noise was written");
    n.cached(60).await;

    // Reports that arrive while a write is in flight are not lost: the newest is written
    // after it.
    for players in [70, 80] {
        n.report(load(players, 100_000_000, 0.50)).await;
    }
    n.cached(80).await;
    let (second, _) = n.load_key().await;

    // Near capacity (100 for the harness's nodes) a single player counts.
    n.report(load(90, 100_000_000, 0.50)).await;
    let (third, _) = n.written_after(second, "90 of 100 players").await;
    n.cached(90).await;
    n.report(load(91, 100_000_000, 0.50)).await;
    n.written_after(third, "91 of 100 players").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_loads_a_tree_larger_than_one_grpc_message() {
    const RECORDS: usize = 9_000;
    let (etcd, store) = Store::etcd().await.unwrap();
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    // 9,000 revocations of ~600 bytes each: 5 MiB under the prefix, more than one answer
    // may carry.
    let reason = "r".repeat(500);
    for chunk in (0..RECORDS).collect::<Vec<_>>().chunks(100) {
        let ops: Vec<etcd_client::TxnOp> = chunk
            .iter()
            .map(|i| {
                let value =
                    format!(r#"{{"reason":"{reason}","revoked_by":"test","revoked_at_ms":{i}}}"#);
                etcd_client::TxnOp::put(format!("/strata/revoked/serial/{i:08x}"), value, None)
            })
            .collect();
        client
            .txn(etcd_client::Txn::new().and_then(ops))
            .await
            .unwrap();
    }
    let cp = ControlPlane::start(&store, Duration::from_secs(10))
        .await
        .expect("the replica serves: its cache loaded the whole tree");
    // Every record made it into the cache, the last page's too.
    let mut nodes = v1::node_service_client::NodeServiceClient::new(cp.channel().await.unwrap())
        .max_decoding_message_size(64 << 20);
    let list = nodes
        .list_revoked(v1::ListRevokedRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.revoked.len(), RECORDS);
}
