//! What the control plane's behaviour suites share: a control plane on a real etcd or the
//! in-memory store, the macro that runs each scenario against both, lease keep-alives and
//! accessors for resolve answers.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use strata_proto::v1;
use strata_tests::control::{Clients, ControlPlane, Store};
use strata_tests::etcd::EtcdProcess;

/// Lease TTL used by the suite (etcd leases are whole seconds).
pub const TTL: Duration = Duration::from_secs(1);

pub struct Env {
    pub _etcd: Option<EtcdProcess>,
    pub store: Store,
    pub cp: ControlPlane,
    pub c: Clients,
}

impl Env {
    pub async fn new(etcd: bool) -> Env {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let (etcd, store) = if etcd {
            let (p, s) = Store::etcd()
                .await
                .expect("etcd starts (run scripts/setup.sh)");
            (Some(p), s)
        } else {
            (None, Store::memory())
        };
        let cp = ControlPlane::start(&store, TTL)
            .await
            .expect("control plane starts");
        let c = cp.clients().await.expect("clients");
        Env {
            _etcd: etcd,
            store,
            cp,
            c,
        }
    }
}

/// Runs a scenario `async fn(Env)` against both stores.
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn etcd() {
                super::$name(super::Env::new(true).await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                super::$name(super::Env::new(false).await).await;
            }
        }
    )*};
}

pub(crate) use both_stores;

/// Keeps these nodes' leases alive until the returned guard is dropped.
pub fn keep_alive(mut c: Clients, leases: Vec<(String, i64)>) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        loop {
            for (n, l) in &leases {
                let req = v1::KeepAliveRequest {
                    node_id: n.clone(),
                    lease_id: *l,
                    load: None,
                };
                let _ = c.nodes.keep_alive(req).await;
            }
            tokio::time::sleep(TTL / 4).await;
        }
    }))
}

pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub fn role(r: &v1::ResolveResponse) -> v1::Role {
    v1::Role::try_from(r.role).unwrap_or(v1::Role::Unspecified)
}

pub fn upstream(r: &v1::ResolveResponse) -> &str {
    r.upstream
        .as_ref()
        .map(|u| u.node_id.as_str())
        .unwrap_or("")
}
