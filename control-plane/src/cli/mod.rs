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

pub mod table;

use std::io::Write;
use std::time::Duration;

use std::path::PathBuf;

use serde::Serialize;
use strata_proto::v1;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::dashboard::model::{self, NodeView, StreamView, TreeNode};
use table::{Align, Table, age, bitrate};

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
        default_value = "http://127.0.0.1:7400"
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

/// Adds the operator's bearer token to every request.
#[derive(Debug, Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A channel with the operator's credential on every request.
type AuthChannel = InterceptedService<Channel, Bearer>;

impl Common {
    /// The operator token: from `--token-file`, else `STRATA_OPERATOR_TOKEN`, else none.
    fn bearer(&self) -> Result<Bearer, CliError> {
        let token = match &self.token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    CliError::Credentials(format!("reading {}: {e}", path.display()))
                })?;
                Some(token_from_file(&text).ok_or_else(|| {
                    CliError::Credentials(format!("{}: no token in the file", path.display()))
                })?)
            }
            None => std::env::var("STRATA_OPERATOR_TOKEN")
                .ok()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty()),
        };
        let Some(token) = token else {
            return Ok(Bearer(None));
        };
        let value = format!("Bearer {token}").parse().map_err(|_| {
            // Never echo the token itself.
            CliError::Credentials("the operator token has characters a header cannot carry".into())
        })?;
        Ok(Bearer(Some(value)))
    }

    /// Client TLS settings for `https://` addresses.
    fn tls(&self) -> Result<ClientTlsConfig, CliError> {
        let path = self.ca_cert.as_ref().ok_or_else(|| {
            CliError::Credentials(
                "https:// addresses need --ca-cert (the CA of the control plane's certificate)"
                    .into(),
            )
        })?;
        let pem = std::fs::read(path)
            .map_err(|e| CliError::Credentials(format!("reading {}: {e}", path.display())))?;
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
        if let Some(name) = &self.tls_server_name {
            tls = tls.domain_name(name.clone());
        }
        Ok(tls)
    }
}

/// The token in a token file: its first non-empty, non-comment line, and of a
/// `name=token` line (the control plane's own format) the part after the first `=`.
fn token_from_file(text: &str) -> Option<String> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))?;
    let token = match line.split_once('=') {
        Some((_, t)) => t.trim(),
        None => line,
    };
    (!token.is_empty()).then(|| token.to_owned())
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
            | Command::Revoke { common, .. }
            | Command::Revoked { common } => common,
        }
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
    let channel: AuthChannel = InterceptedService::new(channel, bearer);
    let now = crate::service::now_ms();
    match cmd {
        Command::Nodes { region, .. } => {
            let mut client = v1::node_service_client::NodeServiceClient::new(channel);
            let req = v1::ListNodesRequest {
                region: region.clone().unwrap_or_default(),
            };
            let resp = bounded(client.list_nodes(req)).await?;
            let mut nodes: Vec<NodeView> = resp.nodes.iter().filter_map(model::node_view).collect();
            nodes.sort_by(|a, b| (&a.region, &a.id).cmp(&(&b.region, &b.id)));
            if common.json {
                return json(out, &nodes);
            }
            if nodes.is_empty() {
                writeln!(out, "no live nodes")?;
                return Ok(());
            }
            out.write_all(nodes_table(&nodes, now).as_bytes())?;
        }
        Command::Streams { .. } => {
            let mut client = v1::routing_service_client::RoutingServiceClient::new(channel);
            let resp = bounded(client.list_streams(v1::ListStreamsRequest {})).await?;
            let mut streams: Vec<StreamView> =
                resp.streams.iter().filter_map(model::stream_view).collect();
            streams.sort_by(|a, b| a.id.cmp(&b.id));
            if common.json {
                return json(out, &streams);
            }
            if streams.is_empty() {
                writeln!(out, "no live streams")?;
                return Ok(());
            }
            out.write_all(streams_table(&streams, now).as_bytes())?;
        }
        Command::Stream { stream, .. } => {
            let mut client = v1::routing_service_client::RoutingServiceClient::new(channel);
            let req = v1::GetStreamRequest {
                stream: stream.clone(),
            };
            let tree = bounded(client.get_stream(req)).await?;
            let view = model::stream_view(&tree).ok_or_else(|| {
                CliError::Unexpected(format!("stream {stream:?} came without a main origin"))
            })?;
            if common.json {
                return json(out, &view);
            }
            out.write_all(stream_text(&view, now).as_bytes())?;
        }
        Command::Drain { node, .. } => {
            let mut client = v1::node_service_client::NodeServiceClient::new(channel);
            let req = v1::DrainRequest {
                node_id: node.clone(),
            };
            bounded(client.drain(req)).await?;
            if common.json {
                return json(out, &Drained::new(node, true));
            }
            writeln!(
                out,
                "{node} is draining: it gets no new publishers or players, hands its regional \
                 origins over and keeps serving what it has (until `undrain` or it leaves)"
            )?;
        }
        Command::Undrain { node, .. } => {
            let mut client = v1::node_service_client::NodeServiceClient::new(channel);
            let req = v1::UndrainRequest {
                node_id: node.clone(),
            };
            bounded(client.undrain(req)).await?;
            if common.json {
                return json(out, &Drained::new(node, false));
            }
            writeln!(
                out,
                "{node} is back in service: it takes new publishers and players again"
            )?;
        }
        Command::Revoke {
            serial,
            sha256,
            reason,
            ..
        } => {
            let mut client = v1::node_service_client::NodeServiceClient::new(channel);
            let req = v1::RevokeCertificateRequest {
                serial: serial.clone().unwrap_or_default(),
                sha256: sha256.clone().unwrap_or_default(),
                reason: reason.clone(),
            };
            let resp = bounded(client.revoke_certificate(req)).await?;
            let revoked = resp.revoked.as_ref().map(Revoked::from);
            if common.json {
                return json(
                    out,
                    &serde_json::json!({ "revoked": revoked, "deregistered": resp.deregistered }),
                );
            }
            if let Some(r) = revoked {
                writeln!(out, "revoked {}", r.name())?;
            }
            for node in &resp.deregistered {
                writeln!(
                    out,
                    "{node}: its registration with that certificate was ended"
                )?;
            }
        }
        Command::Revoked { .. } => {
            let mut client = v1::node_service_client::NodeServiceClient::new(channel);
            let resp = bounded(client.list_revoked(v1::ListRevokedRequest {})).await?;
            let list: Vec<Revoked> = resp.revoked.iter().map(Revoked::from).collect();
            if common.json {
                return json(out, &list);
            }
            if list.is_empty() {
                writeln!(out, "no revoked certificates")?;
            }
            for r in &list {
                writeln!(
                    out,
                    "{}  by {}  {} ago  {}",
                    r.name(),
                    r.revoked_by,
                    age(now - r.revoked_at_ms),
                    r.reason
                )?;
            }
        }
    }
    Ok(())
}

/// A revoked certificate, as `revoke` and `revoked` print it.
#[derive(Serialize)]
struct Revoked {
    #[serde(skip_serializing_if = "String::is_empty")]
    serial: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    sha256: String,
    reason: String,
    revoked_by: String,
    revoked_at_ms: i64,
}

impl From<&v1::RevokedCertificate> for Revoked {
    fn from(r: &v1::RevokedCertificate) -> Self {
        Revoked {
            serial: r.serial.clone(),
            sha256: r.sha256.clone(),
            reason: r.reason.clone(),
            revoked_by: r.revoked_by.clone(),
            revoked_at_ms: r.revoked_at_ms,
        }
    }
}

impl Revoked {
    fn name(&self) -> String {
        if self.serial.is_empty() {
            format!("sha256 {}", self.sha256)
        } else {
            format!("serial {}", self.serial)
        }
    }
}

/// The `--json` answer of `drain` and `undrain`.
#[derive(Serialize)]
struct Drained<'a> {
    node: &'a str,
    draining: bool,
}

impl<'a> Drained<'a> {
    fn new(node: &'a str, draining: bool) -> Self {
        Self { node, draining }
    }
}

/// A channel to the first address that accepts a connection, and whether it is TLS.
async fn connect(common: &Common) -> Result<(Channel, bool), CliError> {
    let mut reason = String::from("no address given");
    let mut tried = Vec::new();
    let mut tls = None;
    for addr in common
        .control_plane
        .iter()
        .map(|a| a.trim())
        .filter(|a| !a.is_empty())
    {
        let url = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("http://{addr}")
        };
        tried.push(url.clone());
        let mut endpoint = match Endpoint::from_shared(url.clone()) {
            Ok(e) => e.connect_timeout(CONNECT_TIMEOUT).timeout(REQUEST_TIMEOUT),
            Err(e) => {
                reason = format!("{url}: {e}");
                continue;
            }
        };
        if url.starts_with("https://") {
            if tls.is_none() {
                tls = Some(common.tls()?);
            }
            if let Some(tls) = &tls {
                endpoint = match endpoint.tls_config(tls.clone()) {
                    Ok(e) => e,
                    Err(e) => {
                        reason = format!("{url}: {}", chain(&e));
                        continue;
                    }
                };
            }
        }
        match tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect()).await {
            Ok(Ok(ch)) => return Ok((ch, url.starts_with("https://"))),
            Ok(Err(e)) => reason = format!("{url}: {}", chain(&e)),
            Err(_) => reason = format!("{url}: no connection within {CONNECT_TIMEOUT:?}"),
        }
    }
    Err(CliError::Connect {
        tried: tried.join(", "),
        reason,
    })
}

/// An error with its sources, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

async fn bounded<T>(
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, CliError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
        Ok(r) => Ok(r?.into_inner()),
        Err(_) => Err(CliError::Timeout(REQUEST_TIMEOUT)),
    }
}

fn json<T: Serialize + ?Sized>(out: &mut dyn Write, value: &T) -> Result<(), CliError> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

/// `nodes` as a table.
pub fn nodes_table(nodes: &[NodeView], now_ms: i64) -> String {
    let mut t = Table::new(&[
        ("REGION", Align::Left),
        ("ID", Align::Left),
        ("PLAYERS", Align::Right),
        ("STREAMS", Align::Right),
        ("EGRESS", Align::Right),
        ("CPU", Align::Right),
        ("DRAINING", Align::Left),
        ("AGE", Align::Right),
    ]);
    for n in nodes {
        let players = match (&n.load, n.capacity) {
            (Some(l), 0) => l.players.to_string(),
            (Some(l), cap) => format!("{}/{cap}", l.players),
            (None, _) => "-".into(),
        };
        let (streams, egress, cpu) = match &n.load {
            Some(l) => (
                l.streams.to_string(),
                bitrate(l.egress_bps),
                format!("{:.2}", l.cpu),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        t.row(vec![
            n.region.clone(),
            n.id.clone(),
            players,
            streams,
            egress,
            cpu,
            if n.draining { "yes" } else { "no" }.into(),
            age(now_ms - n.registered_at_ms),
        ]);
    }
    t.render()
}

/// `streams` as a table.
pub fn streams_table(streams: &[StreamView], now_ms: i64) -> String {
    let mut t = Table::new(&[
        ("STREAM", Align::Left),
        ("MAIN ORIGIN", Align::Left),
        ("REGIONS", Align::Left),
        ("NODES", Align::Right),
        ("SUBSCRIBERS", Align::Right),
        ("LIVE", Align::Right),
    ]);
    for s in streams {
        t.row(vec![
            s.id.clone(),
            format!("{} ({})", s.main.node, s.main.region),
            s.regions.join(","),
            s.node_count().to_string(),
            s.subscribers.len().to_string(),
            age(now_ms - s.main.started_at_ms),
        ]);
    }
    t.render()
}

/// `stream ID`: a summary line and the tree, one node per line.
pub fn stream_text(s: &StreamView, now_ms: i64) -> String {
    let mut out = format!(
        "stream {}: live {}, main origin {} ({}), {} {}, {} {}\n\n",
        s.id,
        age(now_ms - s.main.started_at_ms),
        s.main.node,
        s.main.region,
        s.regions.len(),
        if s.regions.len() == 1 {
            "region"
        } else {
            "regions"
        },
        s.node_count(),
        if s.node_count() == 1 { "node" } else { "nodes" },
    );
    let mut lines = Vec::new();
    flatten(&s.tree, "", "", &mut lines);
    if !s.detached.is_empty() {
        lines.push((String::new(), None));
        lines.push(("not connected to the main origin (moving):".into(), None));
        for d in &s.detached {
            flatten(d, "", "", &mut lines);
        }
    }
    let w = lines
        .iter()
        .map(|(l, _)| table::width(l))
        .max()
        .unwrap_or(0);
    for (label, node) in lines {
        let Some(n) = node else {
            out.push_str(label.trim_end());
            out.push('\n');
            continue;
        };
        let pad = " ".repeat(w - table::width(&label));
        let mut line = format!("{label}{pad}  {:<6}  {}", n.region, n.role.label());
        if let Some(e) = n.epoch {
            line.push_str(&format!("  epoch {e}"));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Tree lines: (`prefix + node id`, the node).
fn flatten<'a>(
    n: &'a TreeNode,
    lead: &str,
    child_lead: &str,
    lines: &mut Vec<(String, Option<&'a TreeNode>)>,
) {
    lines.push((format!("{lead}{}", n.node), Some(n)));
    let last = n.children.len().saturating_sub(1);
    for (i, c) in n.children.iter().enumerate() {
        let (branch, cont) = if i == last {
            ("└─ ", "   ")
        } else {
            ("├─ ", "│  ")
        };
        flatten(
            c,
            &format!("{child_lead}{branch}"),
            &format!("{child_lead}{cont}"),
            lines,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_is_indented_and_aligned() {
        let msg = v1::StreamTree {
            main: Some(v1::MainOrigin {
                stream: "demo".into(),
                node_id: "eu-1".into(),
                region: "eu".into(),
                relay_addr: "x:1".into(),
                epoch: 7,
                started_at_ms: 0,
            }),
            regional: vec![v1::RegionalOrigin {
                stream: "demo".into(),
                region: "us".into(),
                node_id: "us-1".into(),
                relay_addr: "x:2".into(),
                epoch: 9,
                upstream_node_id: "eu-1".into(),
            }],
            subscribers: vec![
                v1::Subscriber {
                    stream: "demo".into(),
                    region: "us".into(),
                    node_id: "us-2".into(),
                    upstream_node_id: "us-1".into(),
                },
                v1::Subscriber {
                    stream: "demo".into(),
                    region: "eu".into(),
                    node_id: "eu-2".into(),
                    upstream_node_id: "eu-1".into(),
                },
            ],
        };
        let view = model::stream_view(&msg).unwrap();
        let text = stream_text(&view, 65_000);
        let want = "stream demo: live 1m05s, main origin eu-1 (eu), 2 regions, 4 nodes\n\n\
                    eu-1        eu      main origin  epoch 7\n\
                    ├─ eu-2     eu      edge\n\
                    └─ us-1     us      regional origin  epoch 9\n\
                    \u{20}  └─ us-2  us      edge\n";
        assert_eq!(text, want, "\n{text}");
    }

    #[test]
    fn token_files() {
        assert_eq!(token_from_file("s3cret\n").as_deref(), Some("s3cret"));
        assert_eq!(
            token_from_file("# ops\n\nalice = s3cret\nbob=other\n").as_deref(),
            Some("s3cret")
        );
        assert_eq!(token_from_file("a=b=c").as_deref(), Some("b=c"));
        assert_eq!(token_from_file("# only a comment\n"), None);
        assert_eq!(token_from_file("alice=\n"), None);
    }
}
