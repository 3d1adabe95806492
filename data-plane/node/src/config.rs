//! `strata-node` configuration: flags, `STRATA_*` environment variables and a
//! TOML file underneath (flags and environment win over the file), merged by
//! `strata_common::config::layered`. `deploy/examples/strata-node.toml` sets
//! every setting.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgMatches, Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};

use crate::auth::{Action, AuthMode, SecretString};

/// `strata-node`: run a node, manage cluster certificates, or mint tokens.
#[derive(Debug, Parser)]
#[command(
    name = "strata-node",
    version,
    about = "Strata data-plane node",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to do; without a subcommand the node runs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Node settings (when running).
    #[command(flatten)]
    pub run: NodeConfig,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a cluster CA (ca.pem, ca.key) in a directory.
    CertsInit {
        /// Directory to write to.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue a node certificate signed by the CA in `--dir`, written there as
    /// `NODE_ID.pem` and `NODE_ID.key` (over the old ones: renewal is issuing
    /// again, then `systemctl reload strata-node`).
    CertsIssue {
        /// Directory holding the CA.
        #[arg(long)]
        dir: PathBuf,
        /// The node id (the certificate's first DNS name).
        #[arg(long)]
        node_id: String,
        /// IP addresses to include, comma separated. The control plane accepts a
        /// node's relay address and public URL only on hosts its certificate names.
        #[arg(long, value_delimiter = ',')]
        ip: Vec<IpAddr>,
        /// Further DNS names, comma separated (e.g. the host of `--public-url`).
        #[arg(long, value_delimiter = ',')]
        dns: Vec<String>,
        /// How long the certificate is valid: 30d, 12h, 90m (1 minute to 397 days).
        #[arg(long, default_value = "30d", value_parser = parse_validity)]
        valid_for: Duration,
        /// A server-only certificate (the control plane's): no clientAuth usage,
        /// so it cannot act as a node.
        #[arg(long)]
        server_only: bool,
    },
    /// Print a publish or play token (a JWT signed with HS256).
    Token {
        /// File (or directory) of `kid=base64secret` entries, as given to
        /// the nodes' `--token-keys`.
        #[arg(long)]
        key_file: PathBuf,
        /// The key to sign with.
        #[arg(long)]
        kid: String,
        /// The stream, or a prefix ending in `*` (`*` alone: every stream).
        #[arg(long)]
        stream: String,
        /// What the token allows.
        #[arg(long, value_enum)]
        action: Action,
        /// How long the token is valid (e.g. 90s, 15m, 1h; at most 24h).
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: Duration,
        /// Also allow publishing as the stream's backup publisher
        /// (`POST /whip/{stream}?role=backup`).
        #[arg(long)]
        backup: bool,
    },
}

/// Parses a certificate lifetime: `30d`, `12h`, `90m` (1 minute to 397 days,
/// the longest public CAs may issue).
pub fn parse_validity(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid lifetime {s:?}; use e.g. 30d, 12h, 90m"))?;
    let secs = match unit {
        "d" => n.saturating_mul(86_400),
        "h" => n.saturating_mul(3600),
        "m" => n.saturating_mul(60),
        _ => return Err(format!("invalid lifetime unit in {s:?}; use d, h or m")),
    };
    if !(60..=397 * 86_400).contains(&secs) {
        return Err(format!("lifetime {s:?} out of range (1m to 397d)"));
    }
    Ok(Duration::from_secs(secs))
}

/// Everything a running node needs.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// TOML file with any of these settings (flags and environment win).
    #[arg(long, env = "STRATA_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Node id, unique in the cluster: [A-Za-z0-9._~-]{1,128}.
    #[arg(long, env = "STRATA_NODE_ID", default_value = "")]
    pub id: String,

    /// Region of the node.
    #[arg(long, env = "STRATA_REGION", default_value = "")]
    pub region: String,

    /// HTTP listen address (WHIP, WHEP, pages, metrics).
    #[arg(long, env = "STRATA_HTTP_LISTEN", default_value = "127.0.0.1:8080")]
    pub http_listen: SocketAddr,

    /// Public base URL players and publishers use; default http://<http_listen>.
    #[arg(long, env = "STRATA_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// UDP address of the QUIC relay server.
    #[arg(long, env = "STRATA_RELAY_LISTEN", default_value = "127.0.0.1:4433")]
    pub relay_listen: SocketAddr,

    /// host:port other nodes dial for the relay; default the relay listen
    /// address with the first announce IP.
    #[arg(long, env = "STRATA_RELAY_ADVERTISE")]
    pub relay_advertise: Option<String>,

    /// UDP address shared by every WebRTC session of the node.
    #[arg(long, env = "STRATA_RTC_LISTEN", default_value = "127.0.0.1:8443")]
    pub rtc_listen: SocketAddr,

    /// Addresses announced as ICE host candidates, comma separated.
    #[arg(
        long,
        env = "STRATA_ANNOUNCE_IPS",
        value_delimiter = ',',
        default_value = "127.0.0.1"
    )]
    pub announce_ips: Vec<IpAddr>,

    /// Egress loops serving WHEP players; 0: one per core.
    #[arg(long, env = "STRATA_RTC_WORKERS", default_value_t = 0)]
    pub rtc_workers: usize,

    /// How long a new WebRTC session may take to connect (ICE and DTLS).
    #[arg(long, env = "STRATA_RTC_CONNECT_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    #[serde(with = "duration_str")]
    pub rtc_connect_timeout: Duration,

    /// Players still connecting (ICE/DTLS) the node holds at most; they do not count
    /// against --capacity, and beyond this limit new offers get 503.
    #[arg(long, env = "STRATA_RTC_MAX_PENDING", default_value_t = 500)]
    pub rtc_max_pending: usize,

    /// Control-plane gRPC endpoints, comma separated; any live one is used.
    #[arg(
        long,
        env = "STRATA_CONTROL_PLANE",
        value_delimiter = ',',
        default_value = strata_common::config::DEFAULT_CONTROL_PLANE
    )]
    pub control_plane: Vec<String>,

    /// Most players (WHEP sessions) the node accepts.
    #[arg(long, env = "STRATA_CAPACITY", default_value_t = 500)]
    pub capacity: u32,

    /// Most publishers (WHIP sessions) the node accepts.
    #[arg(long, env = "STRATA_MAX_PUBLISHERS", default_value_t = 100)]
    pub max_publishers: u32,

    /// How long a stream with no players left is kept before its upstream
    /// subscription and regional claim are released.
    #[arg(long, env = "STRATA_LINGER", default_value = "5s", value_parser = parse_duration)]
    #[serde(with = "duration_str")]
    pub linger: Duration,

    /// How long players wait for a stream whose source went away before they
    /// are disconnected.
    #[arg(long, env = "STRATA_ORPHAN_GRACE", default_value = "30s", value_parser = parse_duration)]
    #[serde(with = "duration_str")]
    pub orphan_grace: Duration,

    /// How long a stream's standby (the node of its backup publisher) sees
    /// no packet of the live stream before it switches the stream to its
    /// backup publisher.
    #[arg(long, env = "STRATA_BACKUP_SWITCH_GAP", default_value = "500ms", value_parser = parse_duration)]
    #[serde(with = "duration_str")]
    pub backup_switch_gap: Duration,

    /// Most time a graceful stop (SIGTERM) takes.
    #[arg(long, env = "STRATA_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    #[serde(with = "duration_str")]
    pub drain_timeout: Duration,

    /// Directory with `ca.pem`, `<id>.pem` and `<id>.key` (made by
    /// `strata-node certs-init` and `certs-issue`).
    #[arg(long, env = "STRATA_CERTS_DIR")]
    pub certs_dir: Option<PathBuf>,

    /// Run the relay without TLS authentication (experiments only).
    #[arg(long, env = "STRATA_INSECURE_RELAY")]
    #[serde(default)]
    pub insecure_relay: bool,

    /// Whether WHIP and WHEP need a token: `required` (needs token keys) or
    /// `open` (anyone may publish and play: local development only).
    #[arg(long, env = "STRATA_AUTH", value_enum, default_value = "required")]
    pub auth: AuthMode,

    /// File, or directory of files, with token keys: `kid=base64secret`
    /// entries, one per line (several at once, so keys can be rotated).
    #[arg(long, env = "STRATA_TOKEN_KEYS_FILE")]
    pub token_keys: Option<PathBuf>,

    /// Token key entries (`kid=base64secret`, comma or whitespace separated)
    /// taken from the `STRATA_TOKEN_KEYS` environment variable at start; no
    /// flag, so that secrets stay off command lines. Never printed.
    #[arg(skip)]
    #[serde(skip)]
    pub token_key_entries: Option<SecretString>,

    /// Longest lifetime a token may claim: `exp` minus `iat` (minus now when
    /// it has no `iat`). Longer-lived tokens are refused (401), so a leaked
    /// token cannot have been minted to last for years.
    #[arg(long, env = "STRATA_TOKEN_MAX_TTL", default_value = "24h", value_parser = parse_duration)]
    #[serde(with = "duration_str")]
    pub token_max_ttl: Duration,

    /// WHIP/WHEP POSTs one client address may make per second (0: no limit).
    /// IPv6 clients are counted per /64.
    #[arg(long, env = "STRATA_POST_RATE_PER_IP", default_value_t = 10.0)]
    pub post_rate_per_ip: f64,

    /// Burst of WHIP/WHEP POSTs one client address may make above the rate.
    #[arg(long, env = "STRATA_POST_BURST_PER_IP", default_value_t = 40)]
    pub post_burst_per_ip: u32,

    /// Client addresses the rate limit remembers (least recently seen go first).
    #[arg(long, env = "STRATA_RATE_LIMIT_CLIENTS", default_value_t = 65536)]
    pub rate_limit_clients: usize,

    /// Time a client has to send a request's headers; slower connections
    /// (slow-loris) and idle keep-alive connections are closed.
    #[arg(long, env = "STRATA_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    #[serde(with = "duration_str")]
    pub http_header_timeout: Duration,

    /// Most time one HTTP request may take, body upload and answer included
    /// (then 503 with Retry-After).
    #[arg(long, env = "STRATA_HTTP_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    #[serde(with = "duration_str")]
    pub http_request_timeout: Duration,

    /// Most concurrent HTTP connections; more are closed at once.
    #[arg(long, env = "STRATA_HTTP_MAX_CONNECTIONS", default_value_t = 4096)]
    pub http_max_connections: usize,

    /// Most concurrent HTTP connections from one client address (IPv6: one
    /// /64), so one client cannot hold every slot; 0: only the total cap.
    /// Players behind one NAT share an address, hence a generous default.
    #[arg(
        long,
        env = "STRATA_HTTP_MAX_CONNECTIONS_PER_IP",
        default_value_t = 256
    )]
    pub http_max_connections_per_ip: usize,

    /// RTMP ingest listen address (`rtmp://HOST/live/{stream}`), or `off`.
    #[arg(long, env = "STRATA_RTMP_LISTEN", default_value = "0.0.0.0:1935")]
    pub rtmp_listen: String,

    /// Most concurrent RTMP connections; more are closed at once.
    #[arg(long, env = "STRATA_RTMP_MAX_CONNECTIONS", default_value_t = 64)]
    pub rtmp_max_connections: usize,

    /// Most concurrent RTMP connections from one client address (IPv6: one
    /// /64); 0: only the total cap.
    #[arg(long, env = "STRATA_RTMP_MAX_CONNECTIONS_PER_IP", default_value_t = 4)]
    pub rtmp_max_connections_per_ip: usize,

    /// Time an RTMP client has from connecting until its media starts
    /// (handshake, connect, publish, codec headers).
    #[arg(long, env = "STRATA_RTMP_SETUP_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    #[serde(with = "duration_str")]
    pub rtmp_setup_timeout: Duration,

    /// An RTMP publisher that sends nothing for this long has stalled: it is
    /// disconnected and its stream unpublished.
    #[arg(long, env = "STRATA_RTMP_IDLE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    #[serde(with = "duration_str")]
    pub rtmp_idle_timeout: Duration,

    /// SRT ingest listen address (UDP; MPEG-TS, stream id
    /// `#!::r={stream},m=publish,t={token}`), or `off`.
    #[arg(long, env = "STRATA_SRT_LISTEN", default_value = "0.0.0.0:8890")]
    pub srt_listen: String,

    /// SRT receive latency (the buffer that absorbs retransmissions).
    #[arg(long, env = "STRATA_SRT_LATENCY", default_value = "120ms", value_parser = parse_duration)]
    #[serde(with = "duration_str")]
    pub srt_latency: Duration,

    /// Most concurrent SRT connections; more are rejected.
    #[arg(long, env = "STRATA_SRT_MAX_CONNECTIONS", default_value_t = 64)]
    pub srt_max_connections: usize,

    /// Most concurrent SRT connections from one client address (IPv6: one
    /// /64); 0: only the total cap.
    #[arg(long, env = "STRATA_SRT_MAX_CONNECTIONS_PER_IP", default_value_t = 4)]
    pub srt_max_connections_per_ip: usize,

    /// An SRT caller that sends nothing for this long (from its handshake
    /// on) has stalled: it is disconnected and its stream unpublished.
    #[arg(long, env = "STRATA_SRT_IDLE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    #[serde(with = "duration_str")]
    pub srt_idle_timeout: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        let cli = Cli::parse_from(["strata-node"]);
        cli.run
    }
}

impl NodeConfig {
    /// The public base URL, without a trailing slash.
    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.http_listen))
            .trim_end_matches('/')
            .to_owned()
    }

    /// The first announce IP (or loopback).
    pub fn primary_ip(&self) -> IpAddr {
        self.announce_ips
            .first()
            .copied()
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// The RTMP listen address; `None` when RTMP is `off`.
    pub fn rtmp_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        listen_addr("--rtmp-listen", &self.rtmp_listen)
    }

    /// The SRT listen address; `None` when SRT is `off`.
    pub fn srt_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        listen_addr("--srt-listen", &self.srt_listen)
    }

    /// Puts the TOML file of `--config` (if any) under the values clap
    /// parsed into `matches` from flags and the environment.
    pub fn with_file(self, matches: &ArgMatches) -> anyhow::Result<Self> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let mut merged = strata_common::config::layered(matches, &self, &path)?;
        // Not settings of the file (serde skips them): keep what was given.
        merged.config = self.config;
        merged.token_key_entries = self.token_key_entries;
        Ok(merged)
    }
}

/// A listen address, or `None` for `off` (or empty).
fn listen_addr(flag: &str, v: &str) -> anyhow::Result<Option<SocketAddr>> {
    let v = v.trim();
    if v.is_empty() || v.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| anyhow::anyhow!("{flag}: {v:?} is not host:port or off"))
}

use strata_common::config::duration as duration_str;
pub use strata_common::config::parse_duration;

#[cfg(test)]
mod tests;
