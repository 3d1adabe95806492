//! Where the binaries are, and what a cluster is asked to run.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};

use crate::etcd::ETCD_ENV;
use crate::grpcurl::find_executable;

use super::*;

/// The two binaries a cluster runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `strata-control`.
    pub control: PathBuf,
    /// `strata-node`.
    pub node: PathBuf,
}

impl Binaries {
    /// Finds both binaries in `$STRATA_BIN_DIR`, or in the closest ancestor directory of the
    /// running executable that holds them (`target/<profile>/`).
    pub fn locate() -> Result<Self> {
        if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
            let dir = PathBuf::from(dir);
            return Self::in_dir(&dir).ok_or_else(|| {
                anyhow!(
                    "${BIN_DIR_ENV}={} holds no strata-control and strata-node",
                    dir.display()
                )
            });
        }
        let exe = std::env::current_exe().context("finding the running executable")?;
        exe.ancestors()
            .skip(1)
            .find_map(Self::in_dir)
            .ok_or_else(|| {
                anyhow!(
                    "strata-control and strata-node not found in any directory above {}: \
                     build them first with `cargo build --bins` (or set ${BIN_DIR_ENV})",
                    exe.display()
                )
            })
    }

    pub(super) fn in_dir(dir: &Path) -> Option<Self> {
        let control = dir.join("strata-control");
        let node = dir.join("strata-node");
        (control.is_file() && node.is_file()).then_some(Self { control, node })
    }
}

/// Whether etcd can be started (`$STRATA_ETCD` is set, or `etcd` is on `PATH`).
pub fn etcd_installed() -> bool {
    std::env::var_os(ETCD_ENV).is_some() || find_executable("etcd").is_some()
}

/// Which store the control planes of a [`ProcCluster`] use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreMode {
    /// A fresh etcd process owned by the cluster.
    Etcd,
    /// etcd when it is installed, otherwise the memory store (one control plane only).
    EtcdOrMemory,
    /// Each control plane's in-process memory store: one control plane only.
    Memory,
    /// An etcd the caller runs, at these client URLs.
    External(Vec<String>),
}

/// The store a running [`ProcCluster`] uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreInUse {
    /// etcd at these client URLs.
    Etcd(Vec<String>),
    /// The control plane's memory store.
    Memory,
}

/// What [`ProcCluster::start`] starts.
#[derive(Debug, Clone)]
pub struct ProcOptions {
    /// The store.
    pub store: StoreMode,
    /// Control-plane replicas (at least 1).
    pub control_planes: usize,
    /// Node lease TTL of the control planes (whole seconds with etcd).
    pub lease_ttl: Duration,
    /// Nodes started with the cluster, as (id, region).
    pub nodes: Vec<(String, String)>,
    /// When set, ports are taken consecutively from here (control planes first: gRPC then
    /// HTTP; then each node: HTTP, relay, RTC) instead of free ports. etcd still takes free
    /// ports.
    pub port_base: Option<u16>,
    /// `RUST_LOG` of the processes; default: the environment's, else [`DEFAULT_RUST_LOG`].
    pub rust_log: Option<String>,
    /// Extra arguments of every `strata-control`.
    pub control_args: Vec<String>,
    /// Extra arguments of every `strata-node` (e.g. `--drain-timeout 3s`).
    pub node_args: Vec<String>,
    /// Keep the temp directory (logs, certificates) when the cluster is dropped. It is kept
    /// anyway when the thread is panicking or `STRATA_KEEP_TEST_LOGS=1`.
    pub keep_dir: bool,
    /// Relay address per region, as (region, IP): the nodes of a listed region bind their
    /// relay server and client on this loopback address instead of 127.0.0.1, so that a test
    /// can cut regions apart by address inside its network namespace (all of 127.0.0.0/8 is
    /// on `lo`). HTTP and WebRTC stay on 127.0.0.1.
    pub relay_ips: Vec<(String, Ipv4Addr)>,
}

impl Default for ProcOptions {
    fn default() -> Self {
        Self {
            store: StoreMode::Etcd,
            control_planes: 1,
            lease_ttl: Duration::from_secs(3),
            nodes: Vec::new(),
            port_base: None,
            rust_log: None,
            control_args: Vec::new(),
            node_args: Vec::new(),
            keep_dir: false,
            relay_ips: Vec::new(),
        }
    }
}
