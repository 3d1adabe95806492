//! The gRPC services, written once against [`crate::kv::Kv`] and the cache.

pub mod admission;
pub(crate) mod convert;
mod graph_api;
mod load;
mod nodes;
mod placement;
mod routing;
pub(crate) mod stream_players;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use strata_proto::v1;

use crate::cache::{Cache, Versioned};
use crate::error::{Error, Result};
use crate::graph;
use crate::keys::{self, Keys, NodeRecord};
use crate::kv::Kv;
use crate::metrics::{Metrics, TimedKv};
use strata_common::names::{self, NameKind};

pub use graph_api::GraphApi;
pub use nodes::NodeApi;
pub use placement::{PlacementApi, place};
pub use routing::RoutingApi;
pub(crate) use routing::upstream::tree as annotated_tree;

/// Settings the services need.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Lease time to live granted to nodes.
    pub lease_ttl: Duration,
    /// Relative change of a load report that is written to the store (0: every change).
    pub load_tolerance: f64,
    /// Most hops from the main origin in a region tree (`--max-region-hops`).
    pub max_region_hops: u32,
    /// This replica's pinned link costs (`--link-costs`) by (from, to).
    pub link_costs: BTreeMap<(String, String), u32>,
    /// Claims in flight at most (`--claims-in-flight`; 0: no limit).
    pub claims_in_flight: usize,
}

/// Shared state of all services of one replica.
#[derive(Clone)]
pub struct State {
    inner: Arc<Inner>,
}

struct Inner {
    kv: Kv,
    keys: Keys,
    cache: Cache,
    config: ServiceConfig,
    metrics: Arc<Metrics>,
    /// Nodes whose load report is being written, each with the newest report waiting for
    /// that write to end (see `load::report_behind`).
    load_writes: std::sync::Mutex<HashMap<String, Option<(NodeRecord, v1::Load)>>>,
    /// Link costs measured by the nodes reporting to this replica.
    measured: graph::Measured,
    /// Admission control of claims.
    admission: admission::Admission,
}

impl State {
    /// Builds the state over a store and its cache.
    pub fn new(
        kv: Kv,
        keys: Keys,
        cache: Cache,
        config: ServiceConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        let admission = admission::Admission::new(config.claims_in_flight);
        Self {
            inner: Arc::new(Inner {
                admission,
                kv,
                keys,
                cache,
                config,
                metrics,
                load_writes: std::sync::Mutex::default(),
                measured: graph::Measured::default(),
            }),
        }
    }

    /// Marks `node`'s load write as in flight and gives `load` back to write now; when one
    /// already is, keeps `load` as the report to write after it (replacing an older waiting
    /// one) and gives `None`.
    pub(crate) fn start_load_write(&self, node: &NodeRecord, load: v1::Load) -> Option<v1::Load> {
        let Ok(mut writes) = self.inner.load_writes.lock() else {
            return None;
        };
        match writes.get_mut(&node.id) {
            Some(waiting) => {
                if waiting.replace((node.clone(), load)).is_some() {
                    // The older waiting report is superseded: it is never compared.
                    self.metrics().load_unwritten.inc();
                }
                None
            }
            None => {
                writes.insert(node.id.clone(), None);
                Some(load)
            }
        }
    }

    /// `node`'s load write ended: the report that waited for it, to write next (the write
    /// stays in flight), or `None` (and no write is in flight any more).
    pub(crate) fn next_load_write(&self, node: &str) -> Option<(NodeRecord, v1::Load)> {
        let mut writes = self.inner.load_writes.lock().ok()?;
        let next = writes.get_mut(node).and_then(Option::take);
        if next.is_none() {
            writes.remove(node);
        }
        next
    }

    /// The store; every call through it is timed into the metrics.
    pub(crate) fn kv(&self) -> TimedKv<'_> {
        TimedKv::new(&self.inner.kv, &self.inner.metrics.store)
    }

    /// A slot for one claim (after a short wait for one), or RESOURCE_EXHAUSTED when this
    /// replica has too many in flight and waiting.
    pub(crate) async fn admit_claim(&self) -> Result<admission::Slot> {
        self.inner.admission.admit(&self.inner.metrics).await
    }

    /// Link costs measured by nodes, as reported to this replica.
    pub(crate) fn measured(&self) -> &graph::Measured {
        &self.inner.measured
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// The read cache.
    pub fn cache(&self) -> &Cache {
        &self.inner.cache
    }

    pub(crate) fn config(&self) -> &ServiceConfig {
        &self.inner.config
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// UNAVAILABLE unless the cache is in sync with a reachable store.
    pub(crate) fn ensure_healthy(&self) -> Result<()> {
        if self.cache().is_healthy() {
            Ok(())
        } else {
            Err(Error::Unavailable(
                "store (etcd) unreachable; retry shortly".into(),
            ))
        }
    }

    /// A registered node, from the cache or, on a miss (a registration
    /// through another replica may not have reached this cache yet), the store.
    /// A cache hit shares the cached record.
    pub(crate) async fn node(&self, id: &str) -> Result<Option<Arc<Versioned<NodeRecord>>>> {
        if let Some(n) = self.cache().read().nodes.get(id) {
            self.metrics().cache_hits.inc();
            return Ok(Some(n.clone()));
        }
        self.metrics().cache_misses.inc();
        let Some(kv) = self.kv().get(&self.keys().node(id)).await? else {
            return Ok(None);
        };
        Ok(keys::decode::<NodeRecord>(&kv.value).map(|value| {
            Arc::new(Versioned {
                value,
                create_revision: kv.create_revision,
                mod_revision: kv.mod_revision,
            })
        }))
    }

    /// The calling node, which must be registered (FAILED_PRECONDITION if not).
    pub(crate) async fn caller(&self, id: &str) -> Result<Arc<Versioned<NodeRecord>>> {
        names::validate(NameKind::Node, id)?;
        match self.node(id).await? {
            Some(n) => Ok(n),
            None => Err(Error::FailedPrecondition(format!(
                "node {id:?} is not registered (or its lease expired); register first"
            ))),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The no-op service used as the latency floor.
#[derive(Clone, Default)]
pub struct DiagnosticsApi;

#[tonic::async_trait]
impl v1::diagnostics_service_server::DiagnosticsService for DiagnosticsApi {
    async fn ping(
        &self,
        req: tonic::Request<v1::PingRequest>,
    ) -> std::result::Result<tonic::Response<v1::PingResponse>, tonic::Status> {
        crate::auth::require(&req, crate::auth::Need::Member)?;
        Ok(tonic::Response::new(v1::PingResponse {}))
    }
}
