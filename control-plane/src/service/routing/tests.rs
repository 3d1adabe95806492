//! The cached resolve against the general path.

use std::time::Duration;

use super::*;
use crate::cache;
use crate::keys::Keys;
use crate::kv::Kv;
use crate::kv::memory::MemoryKv;
use crate::metrics::Metrics;
use crate::service::ServiceConfig;

const WAIT: Duration = Duration::from_secs(5);

struct Fixture {
    api: RoutingApi,
    kv: Kv,
    keys: Keys,
    lease: i64,
}

impl Fixture {
    async fn new() -> Self {
        let kv = Kv::Memory(MemoryKv::new());
        let keys = Keys::new("/t/");
        let cache = cache::spawn(kv.clone(), keys.clone(), Duration::from_millis(100));
        let mut health = cache.health();
        tokio::time::timeout(WAIT, health.wait_for(|h| *h))
            .await
            .expect("cache synced")
            .unwrap();
        let config = ServiceConfig {
            lease_ttl: Duration::from_secs(10),
            load_tolerance: 0.1,
            max_region_hops: 3,
            claims_in_flight: 0,
            link_costs: Default::default(),
        };
        let metrics = Arc::new(Metrics::default());
        let state = State::new(kv.clone(), keys.clone(), cache, config, metrics);
        let lease = kv.grant(Duration::from_secs(60)).await.unwrap();
        Self {
            api: RoutingApi::new(state),
            kv,
            keys,
            lease,
        }
    }

    fn state(&self) -> &State {
        &self.api.state
    }

    /// The store's revision, once the cache has caught up with it.
    async fn settle(&self) -> i64 {
        let (_, rev) = self.kv.range(self.keys.prefix()).await.unwrap();
        self.state().cache().wait_for(rev, WAIT).await;
        assert!(self.state().cache().read().revision >= rev);
        rev
    }

    async fn node(&self, id: &str, region: &str, draining: bool) {
        let record = NodeRecord {
            id: id.into(),
            region: region.into(),
            relay_addr: format!("{id}.relay:4433"),
            http_url: format!("http://{id}"),
            capacity: 0,
            version: "test".into(),
            lease: self.lease,
            registered_at_ms: 0,
            draining,
            cert_serial: String::new(),
            cert_sha256: String::new(),
        };
        let key = self.keys.node(id);
        self.kv
            .put(&key, keys::encode(&record), self.lease)
            .await
            .unwrap();
        self.settle().await;
    }

    fn counts(&self) -> [u64; 4] {
        let m = self.state().metrics();
        [
            m.resolves.get(),
            m.resolves_cached.get(),
            m.cache_hits.get(),
            m.cache_misses.get(),
        ]
    }

    fn cached(&self, req: &v1::ResolveRequest) -> Option<v1::ResolveResponse> {
        self.api.resolve_cached(req, unreachable_of(req))
    }

    async fn full(&self, req: &v1::ResolveRequest) -> Result<v1::ResolveResponse> {
        self.api.resolve_full(req, unreachable_of(req)).await
    }
}

fn unreachable_of(req: &v1::ResolveRequest) -> Option<(&str, i64)> {
    req.unreachable
        .as_ref()
        .map(|u| (u.node_id.as_str(), u.epoch))
}

fn req(node: &str, region: &str) -> v1::ResolveRequest {
    v1::ResolveRequest {
        stream: "s".into(),
        region: region.into(),
        node_id: node.into(),
        unreachable: None,
    }
}

/// A main origin `o` (eu) with an edge `e` (eu), `a` and `b` in us, and a
/// draining `d` in ap.
async fn cluster() -> Fixture {
    let f = Fixture::new().await;
    for (id, region, draining) in [
        ("o", "eu", false),
        ("e", "eu", false),
        ("a", "us", false),
        ("b", "us", false),
        ("d", "ap", true),
    ] {
        f.node(id, region, draining).await;
    }
    f.api
        .publish(v1::PublishRequest {
            stream: "s".into(),
            node_id: "o".into(),
            unreachable: None,
        })
        .await
        .unwrap();
    f.settle().await;
    f
}

#[tokio::test]
async fn the_steady_state_is_the_full_paths_answer_without_writes() {
    let f = cluster().await;
    // Only the main origin needs nothing written for its first resolve.
    assert!(f.cached(&req("o", "eu")).is_some());
    for (node, region) in [("e", "eu"), ("a", "us"), ("b", "us"), ("d", "ap")] {
        assert_eq!(f.cached(&req(node, region)), None, "{node}");
    }
    let callers = [
        ("o", "eu", v1::Role::MainOrigin, None),
        ("e", "eu", v1::Role::Edge, Some("o")),
        ("a", "us", v1::Role::RegionalOrigin, Some("o")),
        ("b", "us", v1::Role::Edge, Some("a")),
        ("d", "ap", v1::Role::Edge, Some("o")),
    ];
    for (node, region, ..) in callers {
        f.full(&req(node, region)).await.unwrap();
    }
    let rev = f.settle().await;

    for (node, region, role, upstream) in callers {
        let r = req(node, region);
        let before = f.counts();
        let fast = f.cached(&r).expect("answered from the cache");
        let counted = f.counts();
        let full = f.full(&r).await.unwrap();
        assert_eq!(fast, full, "{node}");
        assert_eq!(fast.role, role as i32, "{node}");
        assert_eq!(
            fast.upstream.as_ref().map(|u| u.node_id.as_str()),
            upstream,
            "{node}"
        );
        // Counted as the full path counts the same answer.
        let after = f.counts();
        for i in 0..4 {
            assert_eq!(counted[i] - before[i], after[i] - counted[i], "{node} {i}");
        }
    }
    assert_eq!(f.settle().await, rev, "nothing written");
}

#[tokio::test]
async fn anything_else_takes_the_full_path() {
    let f = cluster().await;
    for (node, region) in [("a", "us"), ("b", "us")] {
        f.full(&req(node, region)).await.unwrap();
    }
    f.settle().await;
    assert!(f.cached(&req("b", "us")).is_some());

    // Not the caller's region, not registered, not live: the full path
    // answers (with an error).
    assert_eq!(f.cached(&req("b", "eu")), None);
    assert!(matches!(
        f.full(&req("b", "eu")).await,
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(f.cached(&req("x", "us")), None);
    assert!(matches!(
        f.full(&req("x", "us")).await,
        Err(Error::FailedPrecondition(_))
    ));
    let other = v1::ResolveRequest {
        stream: "t".into(),
        ..req("b", "us")
    };
    assert_eq!(f.cached(&other), None);
    assert!(matches!(f.full(&other).await, Err(Error::NotFound(_))));

    // The regional origin reported unreachable at its epoch: a claim.
    let epoch = f.cached(&req("a", "us")).unwrap().epoch;
    let report = v1::ResolveRequest {
        unreachable: Some(v1::Upstream {
            node_id: "a".into(),
            region: "us".into(),
            relay_addr: String::new(),
            epoch,
        }),
        ..req("b", "us")
    };
    assert_eq!(f.cached(&report), None);
    let claimed = f.full(&report).await.unwrap();
    assert_eq!(claimed.role, v1::Role::RegionalOrigin as i32);
    assert!(claimed.epoch > epoch);
    f.settle().await;
    // A late report of the old epoch changes nothing, from the cache.
    assert_eq!(
        f.cached(&report).map(|r| r.role),
        Some(v1::Role::RegionalOrigin as i32)
    );

    // The deposed holder has no subscriber record yet: written once.
    assert_eq!(f.cached(&req("a", "us")), None);
    let edge = f.full(&req("a", "us")).await.unwrap();
    f.settle().await;
    assert_eq!(f.cached(&req("a", "us")), Some(edge));
}
