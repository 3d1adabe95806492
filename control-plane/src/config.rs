//! `strata-control` configuration: flags, `STRATA_*` environment variables
//! and a TOML file underneath (flags and environment win over the file).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};

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

    /// Timeout of each etcd request.
    #[arg(long, env = "STRATA_ETCD_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    #[serde(with = "humantime_serde")]
    pub etcd_timeout: Duration,

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

    /// An operator command; without one, the server runs.
    #[command(subcommand)]
    #[serde(skip)]
    pub command: Option<crate::cli::Command>,
}

/// Checks a region name given on the command line.
fn parse_region(s: &str) -> Result<String, String> {
    crate::names::validate(crate::names::NameKind::Region, s).map_err(|e| e.to_string())?;
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

/// Parses "250ms", "3s", "1m" or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("invalid duration unit in {s:?}; use ms, s or m")),
    };
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Durations in TOML as strings like "3s".
mod humantime_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

impl Config {
    /// Flags and environment over the TOML file named by `--config`.
    pub fn load() -> anyhow::Result<Self> {
        let cli = Config::parse();
        // Operator commands do not read the server's file.
        if cli.command.is_some() {
            return Ok(cli);
        }
        let Some(path) = cli.config.clone() else {
            return Ok(cli);
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        let file: Config = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("parsing {}: {e}", path.display()))?;
        // Re-parse with the file's values as defaults so that explicit flags
        // and environment variables still win.
        let mut args = vec!["strata-control".to_owned()];
        let file_val = toml::Value::try_from(&file)?;
        if let toml::Value::Table(t) = file_val {
            for (k, v) in t {
                let flag = format!("--{}", k.replace('_', "-"));
                let explicit =
                    std::env::args().any(|a| a == flag || a.starts_with(&format!("{flag}=")));
                let env = format!("STRATA_{}", k.to_uppercase());
                if explicit || std::env::var_os(&env).is_some() {
                    continue;
                }
                let value = match v {
                    toml::Value::String(s) => s,
                    toml::Value::Array(a) => a
                        .iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect::<Vec<_>>()
                        .join(","),
                    other => other.to_string(),
                };
                args.push(flag);
                args.push(value);
            }
        }
        args.extend(std::env::args().skip(1));
        Ok(Config::try_parse_from(args)?)
    }
}
