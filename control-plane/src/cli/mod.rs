//! Operator commands of `strata-control`: `nodes`, `streams`, `stream`,
//! `drain`, `undrain`, `revoke`, `revoked`. They talk to a running control plane over gRPC (the same API as
//! grpcurl) and print aligned tables, or with `--json` the documents of
//! [`crate::dashboard::model`] (the shapes `GET /api/v1/topology` uses).
//!
//! ```text
//! strata-control nodes [--region R]      region, id, players, streams, egress, cpu, draining, age
//! strata-control streams                 stream, main origin, regions, nodes, subscribers, live
//! strata-control stream ID               the stream's tree, indented
//! strata-control drain NODE              no new sessions for NODE; it hands its regional origins over
//! strata-control undrain NODE            NODE takes sessions again
//! strata-control switch STREAM           switch STREAM to its standby (backup) publisher
//! strata-control revoke (--serial HEX | --sha256 HEX) [--reason TEXT]
//!                                        refuse a node certificate for good (control plane and relay)
//! strata-control revoked                 revoked certificates, oldest first
//!   --json                               JSON for scripts
//!   --control-plane http://HOST:PORT     gRPC address(es), comma separated (env STRATA_CONTROL_PLANE)
//!   --ca-cert PATH                       CA of the control plane's certificate, for https:// (env STRATA_CA_CERT)
//!   --token-file PATH                    operator bearer token (env STRATA_OPERATOR_TOKEN_FILE,
//!                                        or the token itself in STRATA_OPERATOR_TOKEN)
//! ```
//!
//! Against a control plane in TLS mode, give `https://` addresses, the cluster CA and an
//! operator token. The token is read from a file or the environment, never from the
//! command line (where `ps` and shell history would show it).

mod connect;
mod drain;
mod nodes;
mod revoke;
mod streams;
mod switch;
pub mod table;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use connect::Bearer;
use connect::{AuthChannel, connect};
pub use nodes::nodes_table;
pub use streams::{stream_text, streams_table};

/// How long one request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// An operator command.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// List live nodes with their load.
    Nodes {
        /// Only nodes of this region.
        #[arg(long)]
        region: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// List live streams.
    Streams {
        #[command(flatten)]
        common: Common,
    },
    /// Show one stream's distribution tree: main origin, regional origins, pulling nodes.
    Stream {
        /// Stream id.
        stream: String,
        #[command(flatten)]
        common: Common,
    },
    /// Stop sending new publishers and players to a node; it keeps what it serves,
    /// redirects new sessions and hands its regional origins over.
    Drain {
        /// Node id.
        node: String,
        #[command(flatten)]
        common: Common,
    },
    /// Put a drained node back: it takes new publishers and players again.
    Undrain {
        /// Node id.
        node: String,
        #[command(flatten)]
        common: Common,
    },
    /// Switch a stream to its standby publisher (the backup's node; after an automatic
    /// switch, the primary's): one guarded etcd transaction; players keep their sessions.
    Switch {
        /// Stream id.
        stream: String,
        #[command(flatten)]
        common: Common,
    },
    /// Revoke a node certificate for good: the control plane refuses it and ends the
    /// registration made with it, nodes refuse it on the relay. Install the node's
    /// renewed certificate first (`certs-issue`, then SIGHUP the node).
    Revoke {
        /// Serial number in hex (`openssl x509 -noout -serial -in NODE.pem`).
        #[arg(long, conflicts_with = "sha256", required_unless_present = "sha256")]
        serial: Option<String>,
        /// SHA-256 fingerprint (`openssl x509 -noout -fingerprint -sha256 -in NODE.pem`).
        #[arg(long)]
        sha256: Option<String>,
        /// Why, kept with the revocation.
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        common: Common,
    },
    /// List revoked certificates.
    Revoked {
        #[command(flatten)]
        common: Common,
    },
}

/// Options every command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Control plane gRPC address(es), comma separated; the first that answers is used.
    #[arg(
        long,
        env = "STRATA_CONTROL_PLANE",
        value_delimiter = ',',
        default_value = strata_common::config::DEFAULT_CONTROL_PLANE
    )]
    pub control_plane: Vec<String>,

    /// Print JSON (for scripts) instead of a table.
    #[arg(long)]
    pub json: bool,

    /// PEM file of the CA that signed the control plane's certificate (the cluster CA);
    /// required for `https://` addresses.
    #[arg(long, env = "STRATA_CA_CERT")]
    pub ca_cert: Option<PathBuf>,

    /// Name to verify in the control plane's certificate, when it differs from the
    /// address's host (e.g. connecting by IP to a certificate issued for a DNS name).
    #[arg(long, env = "STRATA_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,

    /// File holding the operator token (the secret after `name=` in the control plane's
    /// `--operator-tokens`, or a whole file of one line). `STRATA_OPERATOR_TOKEN` may hold
    /// the token itself instead.
    #[arg(long, env = "STRATA_OPERATOR_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// No control-plane address was usable.
    #[error("cannot reach the control plane ({tried}): {reason}")]
    Connect {
        /// The addresses tried.
        tried: String,
        /// The last failure.
        reason: String,
    },
    /// The control plane refused the request.
    #[error("{}", rpc_message(.0))]
    Rpc(#[from] tonic::Status),
    /// The control plane did not answer in time.
    #[error("the control plane did not answer within {0:?}")]
    Timeout(Duration),
    /// The CA file or the operator token could not be used.
    #[error("credentials: {0}")]
    Credentials(String),
    /// The control plane answered with something unusable.
    #[error("unexpected answer from the control plane: {0}")]
    Unexpected(String),
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
    /// Encoding JSON failed.
    #[error("encoding JSON: {0}")]
    Json(#[from] serde_json::Error),
}

fn rpc_message(s: &tonic::Status) -> String {
    match s.code() {
        tonic::Code::Unavailable => format!("control plane unavailable: {}", s.message()),
        tonic::Code::InvalidArgument | tonic::Code::NotFound => s.message().to_owned(),
        code => format!("{} ({code:?})", s.message()),
    }
}

impl Command {
    fn common(&self) -> &Common {
        match self {
            Command::Nodes { common, .. }
            | Command::Streams { common }
            | Command::Stream { common, .. }
            | Command::Drain { common, .. }
            | Command::Undrain { common, .. }
            | Command::Switch { common, .. }
            | Command::Revoke { common, .. }
            | Command::Revoked { common } => common,
        }
    }
}

/// What a command works with: the authenticated channel, the output and its form.
struct Ctx<'a> {
    channel: AuthChannel,
    json: bool,
    now_ms: i64,
    out: &'a mut dyn Write,
}

impl Ctx<'_> {
    /// Writes `value` as the `--json` answer.
    fn json<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CliError> {
        serde_json::to_writer_pretty(&mut *self.out, value)?;
        writeln!(self.out)?;
        Ok(())
    }
}

/// Runs `cmd` against the control plane it names, writing to `out`.
#[tracing::instrument(skip_all)]
pub async fn run(cmd: &Command, out: &mut dyn Write) -> Result<(), CliError> {
    let common = cmd.common();
    let bearer = common.bearer()?;
    let (channel, tls) = connect(common).await?;
    // A token is a secret: it goes only over TLS (a plaintext control plane ignores it anyway).
    let bearer = if tls { bearer } else { Bearer::default() };
    let ctx = Ctx {
        channel: AuthChannel::new(channel, bearer),
        json: common.json,
        now_ms: crate::service::now_ms(),
        out,
    };
    match cmd {
        Command::Nodes { region, .. } => nodes::run(ctx, region.as_deref()).await,
        Command::Streams { .. } => streams::list(ctx).await,
        Command::Stream { stream, .. } => streams::show(ctx, stream).await,
        Command::Drain { node, .. } => drain::run(ctx, node, true).await,
        Command::Undrain { node, .. } => drain::run(ctx, node, false).await,
        Command::Switch { stream, .. } => switch::run(ctx, stream).await,
        Command::Revoke {
            serial,
            sha256,
            reason,
            ..
        } => revoke::revoke(ctx, serial.as_deref(), sha256.as_deref(), reason).await,
        Command::Revoked { .. } => revoke::list(ctx).await,
    }
}

async fn bounded<T>(
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, CliError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
        Ok(r) => Ok(r?.into_inner()),
        Err(_) => Err(CliError::Timeout(REQUEST_TIMEOUT)),
    }
}
