//! `strata-control` configuration: flags, `STRATA_*` environment variables
//! and a TOML file underneath (flags and environment win over the file),
//! merged by `strata_common::config::layered`.
//! `deploy/examples/strata-control.toml` sets every setting.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum};
use serde::{Deserialize, Serialize};
use strata_common::names::{self, NameKind};

/// Which store backs the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// etcd (production; several replicas may share it).
    Etcd,
    /// In-process memory: single replica, dev only, NOT highly available.
    Memory,
}

/// The control plane's settings.
#[derive(Debug, Clone, Parser, Serialize, Deserialize)]
#[command(
    name = "strata-control",
    version,
    about = "Strata control plane",
    after_help = "Without a subcommand, runs the server. The subcommands are operator tools \
                  that talk to a running control plane over gRPC.",
    args_conflicts_with_subcommands = true
)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// TOML file with any of these settings (flags and environment win).
    #[arg(long, env = "STRATA_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// gRPC listen address.
    #[arg(long, env = "STRATA_LISTEN", default_value = "127.0.0.1:7400")]
    pub listen: SocketAddr,

    /// HTTP listen address (metrics; front door and dashboard).
    #[arg(long, env = "STRATA_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,

    /// Region the HTTP front door sends WHIP/WHEP clients to when the request
    /// has no `region` query parameter (e.g. this replica's own region).
    #[arg(long, env = "STRATA_DEFAULT_REGION", value_parser = parse_region)]
    pub default_region: Option<String>,

    /// Store backing the registry.
    #[arg(long, env = "STRATA_STORE", value_enum, default_value = "etcd")]
    pub store: StoreKind,

    /// etcd endpoints, comma separated.
    #[arg(
        long,
        env = "STRATA_ETCD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    pub etcd_endpoints: Vec<String>,

    /// Key prefix in etcd.
    #[arg(long, env = "STRATA_PREFIX", default_value = "/strata/")]
    pub prefix: String,

    /// Node lease time to live, e.g. "3s" (whole seconds with etcd).
    #[arg(long, env = "STRATA_LEASE_TTL", default_value = "3s", value_parser = parse_duration)]
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,

    /// Relative change of a node's load report (sessions, egress, CPU) that is written to
    /// etcd; smaller changes are noise and cost a write per node per second. Session counts
    /// near the node's capacity are written on every change. 0 writes every change.
    #[arg(long, env = "STRATA_LOAD_REPORT_TOLERANCE", default_value_t = 0.1, value_parser = parse_tolerance)]
    pub load_report_tolerance: f64,

    /// Timeout of each etcd request.
    #[arg(long, env = "STRATA_ETCD_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    #[serde(with = "humantime_serde")]
    pub etcd_timeout: Duration,

    /// Long-lived etcd LeaseKeepAlive streams that carry every node's lease renewals
    /// (0: one stream opened per renewal, as before; kept for comparison).
    #[arg(long, env = "STRATA_ETCD_LEASE_STREAMS", default_value_t = 4)]
    pub etcd_lease_streams: usize,

    /// Claims (publishes, and resolves that must write: a regional origin or a subscriber
    /// record) in flight at most per replica; more are refused RESOURCE_EXHAUSTED with a
    /// `grpc-retry-pushback-ms` hint, so that a storm of stream starts cannot starve lease
    /// renewals. 0: no limit.
    #[arg(long, env = "STRATA_CLAIMS_IN_FLIGHT",
          default_value_t = crate::service::admission::DEFAULT_CLAIMS_IN_FLIGHT)]
    pub claims_in_flight: usize,

    /// PEM certificate (chain) the gRPC server presents; with `--tls-key`
    /// and `--client-ca`, gRPC is served over TLS and nodes authenticate
    /// with client certificates.
    #[arg(long, env = "STRATA_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "STRATA_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA whose client certificates identify nodes (the cluster CA,
    /// `ca.pem` of `strata-node certs-init`); a certificate's DNS name is the
    /// node id.
    #[arg(long, env = "STRATA_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,

    /// File of operator tokens, `name=token` lines: an operator calls with
    /// `authorization: Bearer <token>`.
    #[arg(long, env = "STRATA_OPERATOR_TOKENS")]
    pub operator_tokens: Option<PathBuf>,

    /// Serve gRPC without TLS and without authentication (local development
    /// only; logged loudly). The server refuses to start with neither this
    /// nor the TLS files.
    #[arg(long, env = "STRATA_PLAINTEXT")]
    #[serde(default)]
    pub plaintext: bool,

    /// Time an HTTP client has to send a request's headers; slower
    /// connections (slow-loris) and idle keep-alive connections are closed.
    #[arg(long, env = "STRATA_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    #[serde(with = "humantime_serde")]
    pub http_header_timeout: Duration,

    /// Most time one HTTP request may take (then 503 with Retry-After).
    #[arg(long, env = "STRATA_HTTP_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    #[serde(with = "humantime_serde")]
    pub http_request_timeout: Duration,

    /// Most concurrent HTTP connections; more are closed at once.
    #[arg(long, env = "STRATA_HTTP_MAX_CONNECTIONS", default_value_t = 4096)]
    pub http_max_connections: usize,

    /// Most concurrent HTTP connections from one client address (IPv6: one
    /// /64), so one client cannot hold every slot; 0: only the total cap.
    #[arg(long, env = "STRATA_HTTP_MAX_CONNECTIONS_PER_IP", default_value_t = 64)]
    pub http_max_connections_per_ip: usize,

    /// Time a gRPC client has to complete the TLS handshake; connections
    /// that stall in it are closed.
    #[arg(long, env = "STRATA_GRPC_TLS_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    #[serde(with = "humantime_serde")]
    pub grpc_tls_handshake_timeout: Duration,

    /// Most concurrent gRPC connections (nodes keep one each); more are
    /// closed at once.
    #[arg(long, env = "STRATA_GRPC_MAX_CONNECTIONS", default_value_t = 4096)]
    pub grpc_max_connections: usize,

    /// Most hops from the main origin in a stream's region tree: a region
    /// pulls from the main origin (1 hop) or from a nearer region that
    /// already carries the stream, as long as its path stays this short.
    /// 1 makes every region pull from the main origin.
    #[arg(long, env = "STRATA_MAX_REGION_HOPS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=8))]
    pub max_region_hops: u32,

    /// Pinned one-way costs of region links, `FROM:TO=MS` (media sent from
    /// region FROM to region TO costs MS milliseconds), comma separated.
    /// They win over measured costs; `SetLinkCost` pins win over these.
    #[arg(long, env = "STRATA_LINK_COSTS", value_delimiter = ',', value_parser = parse_link_cost)]
    #[serde(default)]
    pub link_costs: Vec<String>,

    /// An operator command; without one, the server runs.
    #[command(subcommand)]
    #[serde(skip)]
    pub command: Option<crate::cli::Command>,
}

/// A tolerance between 0 and 1.
fn parse_tolerance(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err("must be between 0 and 1".into())
    }
}

/// Checks a `FROM:TO=MS` link cost.
fn parse_link_cost(s: &str) -> Result<String, String> {
    link_cost(s)?;
    Ok(s.to_owned())
}

/// Parses a `FROM:TO=MS` link cost into (from, to, ms).
pub fn link_cost(s: &str) -> Result<(String, String, u32), String> {
    let bad = || format!("{s:?} is not FROM:TO=MS (two region names, a cost in milliseconds)");
    let (pair, ms) = s.split_once('=').ok_or_else(bad)?;
    let (from, to) = pair.split_once(':').ok_or_else(bad)?;
    for r in [from, to] {
        names::validate(NameKind::Region, r).map_err(|e| e.to_string())?;
    }
    if from == to {
        return Err(format!("{s:?}: a link joins two different regions"));
    }
    let ms: u32 = ms.trim().parse().map_err(|_| bad())?;
    if ms > crate::graph::costs::MAX_COST_MS {
        return Err(format!(
            "{s:?}: at most {} ms",
            crate::graph::costs::MAX_COST_MS
        ));
    }
    Ok((from.to_owned(), to.to_owned(), ms))
}

/// Checks a region name given on the command line.
fn parse_region(s: &str) -> Result<String, String> {
    names::validate(NameKind::Region, s).map_err(|e| e.to_string())?;
    Ok(s.to_owned())
}

impl Config {
    /// Checks the transport flags of a server: the three TLS files go
    /// together and exclude `--plaintext`, and one of the two is required, so
    /// an unauthenticated control plane is always asked for explicitly.
    pub fn check_transport(&self) -> anyhow::Result<()> {
        let tls = [&self.tls_cert, &self.tls_key, &self.client_ca];
        let given = tls.iter().filter(|p| p.is_some()).count();
        anyhow::ensure!(
            given == 0 || given == 3,
            "--tls-cert, --tls-key and --client-ca go together"
        );
        anyhow::ensure!(
            !(given == 3 && self.plaintext),
            "--plaintext and --tls-cert exclude each other"
        );
        anyhow::ensure!(
            given == 3 || self.plaintext,
            "gRPC needs --tls-cert, --tls-key and --client-ca (production), or --plaintext to \
             serve without TLS and without authentication (local development only)"
        );
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::parse_from(["strata-control"])
    }
}

use strata_common::config::duration as humantime_serde;
pub use strata_common::config::parse_duration;

impl Config {
    /// Flags and environment over the TOML file named by `--config`.
    /// `--help`, `--version` and bad flags print and exit, like clap's `parse`.
    pub fn load() -> anyhow::Result<Self> {
        let matches = Config::command().get_matches();
        let cli = Config::from_arg_matches(&matches)?;
        cli.with_file(&matches)
    }

    /// [`Config::load`] from these arguments (the program name first).
    pub fn load_from<I, T>(args: I) -> anyhow::Result<Self>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Config::command().try_get_matches_from(args)?;
        let cli = Config::from_arg_matches(&matches)?;
        cli.with_file(&matches)
    }

    /// Puts the TOML file of `--config` (if any) under the values clap
    /// parsed into `matches`. Operator commands do not read the server's file.
    pub fn with_file(self, matches: &ArgMatches) -> anyhow::Result<Self> {
        let (None, Some(path)) = (&self.command, self.config.clone()) else {
            return Ok(self);
        };
        let mut merged = strata_common::config::layered(matches, &self, &path)?;
        // Not settings of the file (serde skips them): keep what was given.
        merged.config = self.config;
        merged.command = self.command;
        Ok(merged)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const EXAMPLE: &str = include_str!("../../deploy/examples/strata-control.toml");

    /// The example written to a file of its own (tests run in parallel).
    fn example_file(name: &str, text: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("strata-control-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn the_example_sets_every_setting() {
        let missing =
            strata_common::config::missing_from_example(&Config::command(), EXAMPLE, &["config"])
                .unwrap();
        assert!(
            missing.is_empty(),
            "deploy/examples/strata-control.toml lacks {missing:?}"
        );
    }

    #[test]
    fn the_example_file_loads() {
        let path = example_file("full.toml", EXAMPLE);
        let c = Config::load_from(["strata-control", "--config", path.to_str().unwrap()]).unwrap();
        assert_eq!(c.listen, "0.0.0.0:7400".parse().unwrap());
        assert_eq!(c.http_listen, Some("0.0.0.0:7401".parse().unwrap()));
        assert_eq!(c.default_region.as_deref(), Some("eu"));
        assert_eq!(c.store, StoreKind::Etcd);
        assert_eq!(c.etcd_endpoints.len(), 3);
        assert_eq!(c.lease_ttl, Duration::from_secs(3));
        assert_eq!(c.load_report_tolerance, 0.1);
        assert_eq!(c.etcd_lease_streams, 4);
        assert_eq!(c.claims_in_flight, 32);
        assert_eq!(
            c.tls_cert,
            Some(PathBuf::from("/etc/strata/certs/cp-1.pem"))
        );
        assert_eq!(
            c.operator_tokens,
            Some(PathBuf::from("/etc/strata/operator-tokens"))
        );
        assert!(!c.plaintext);
        assert_eq!(c.http_max_connections_per_ip, 64);
        assert_eq!(c.grpc_tls_handshake_timeout, Duration::from_secs(5));
        assert_eq!(c.config, Some(path));
        assert!(c.check_transport().is_ok());
    }

    #[test]
    fn booleans_from_the_file_load() {
        // Every boolean used to become `--flag false`, which clap refused.
        let path = example_file("plaintext.toml", "plaintext = true\nstore = \"memory\"\n");
        let c = Config::load_from(["strata-control", "--config", path.to_str().unwrap()]).unwrap();
        assert!(c.plaintext);
        assert_eq!(c.store, StoreKind::Memory);
        assert!(c.check_transport().is_ok());
    }

    #[test]
    fn flags_override_the_file() {
        let path = example_file("override.toml", EXAMPLE);
        let c = Config::load_from([
            "strata-control",
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:9400",
            "--etcd-endpoints",
            "http://127.0.0.1:2379",
            "--lease-ttl",
            "5s",
            "--http-max-connections-per-ip=8",
            "--store",
            "memory",
        ])
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:9400".parse().unwrap());
        assert_eq!(c.etcd_endpoints, ["http://127.0.0.1:2379"]);
        assert_eq!(c.lease_ttl, Duration::from_secs(5));
        assert_eq!(c.http_max_connections_per_ip, 8);
        assert_eq!(c.store, StoreKind::Memory);
        // What no flag named still comes from the file.
        assert_eq!(c.prefix, "/strata/");
        assert_eq!(c.default_region.as_deref(), Some("eu"));
        assert_eq!(c.http_listen, Some("0.0.0.0:7401".parse().unwrap()));
    }

    #[test]
    fn link_costs_parse() {
        let c =
            Config::load_from(["strata-control", "--link-costs", "eu:use=40,use:usw=15"]).unwrap();
        assert_eq!(c.link_costs, ["eu:use=40", "use:usw=15"]);
        assert_eq!(c.max_region_hops, 3);
        assert_eq!(
            link_cost("eu:use=40"),
            Ok(("eu".to_owned(), "use".to_owned(), 40))
        );
        for bad in [
            "eu:eu=1",
            "eu=1",
            "eu:use",
            "eu:use=-1",
            "eu:use=60001",
            "e u:use=1",
        ] {
            assert!(link_cost(bad).is_err(), "{bad}");
        }
        assert!(Config::load_from(["strata-control", "--max-region-hops", "0"]).is_err());
    }

    #[test]
    fn unknown_settings_are_refused() {
        let path = example_file("typo.toml", "lease_tll = \"3s\"\n");
        let e = Config::load_from(["strata-control", "--config", path.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("lease_tll"), "{e}");
    }
}
