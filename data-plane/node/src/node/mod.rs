//! Assembles and runs one node, in named steps: the configuration's checks
//! and secrets, the shared parts, the relay (server with its authorizer, and
//! client), the WebRTC engine, control-plane registration, the servers
//! (relay, HTTP, RTMP, SRT) and background tasks, then the graceful drain.

mod keys;
mod load;
mod tasks;
mod tls;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use strata_common::names::{self, NameKind};
use strata_media::hub::{Hub, HubConfig};
use strata_proto::v1;
use strata_relay::{LiveTls, RelayClient, RelayConfig, RelayServer, RelayStats, RelayTls};
use strata_rtc::{RtcConfig, RtcEngine};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::auth::Auth;
use crate::config::NodeConfig;
use crate::control::{self, ControlClient, Registration};
use crate::counters::NodeCounters;
use crate::drain::{DrainFlags, Drainer};
use crate::limits::{ClientLimiter, HttpLimits, RateLimiter};
use crate::origins::OriginEpochs;
use crate::peers::PeerView;
use crate::pull::{PullContext, Pullers};
use crate::relay_auth::RelayAuthorizer;
use crate::session_table::SessionTable;
use crate::state::NodeState;
use crate::takeover::{ProbeBudget, Takeover};
pub use keys::{load_auth, reload_token_keys};
pub use tls::reload_certificates;

/// The sockets a node serves on, bound by the caller (port 0 in tests).
pub struct Listeners {
    /// HTTP (WHIP, WHEP, pages, metrics).
    pub http: TcpListener,
    /// UDP socket of the QUIC relay server.
    pub relay: std::net::UdpSocket,
    /// RTMP ingest, unless `--rtmp-listen off`.
    pub rtmp: Option<TcpListener>,
    /// SRT ingest (UDP), unless `--srt-listen off`.
    pub srt: Option<std::net::UdpSocket>,
}

impl Listeners {
    /// Binds the addresses of the configuration.
    pub async fn bind(cfg: &NodeConfig) -> anyhow::Result<Self> {
        let http = TcpListener::bind(cfg.http_listen)
            .await
            .with_context(|| format!("binding HTTP {}", cfg.http_listen))?;
        let relay = std::net::UdpSocket::bind(cfg.relay_listen)
            .with_context(|| format!("binding relay {}", cfg.relay_listen))?;
        let rtmp = match cfg.rtmp_addr()? {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding RTMP {addr}"))?,
            ),
            None => None,
        };
        let srt = match cfg.srt_addr()? {
            Some(addr) => Some(
                std::net::UdpSocket::bind(addr).with_context(|| format!("binding SRT {addr}"))?,
            ),
            None => None,
        };
        Ok(Self {
            http,
            relay,
            rtmp,
            srt,
        })
    }
}

/// Runs a node until `shutdown` resolves, then drains: the node stops
/// taking sessions, hands its regional origins over (other nodes take over
/// before it leaves), deregisters and returns, within `drain_timeout`.
pub async fn run(
    cfg: NodeConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    // No sender: the reload task ends at once.
    let (_, reloads) = mpsc::channel(1);
    run_with_reload(cfg, listeners, shutdown, reloads).await
}

/// [`run`], reloading the token keys ([`reload_token_keys`]) on every
/// message of `reloads`: `strata-node` sends one per SIGHUP, tests send
/// their own (a signal would reach every node of a test process).
pub async fn run_with_reload(
    cfg: NodeConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
    reloads: mpsc::Receiver<()>,
) -> anyhow::Result<()> {
    let (auth, tls, live_tls) = check_config(&cfg)?;
    let parts = Parts::default();
    let Listeners {
        http,
        relay,
        rtmp,
        srt,
    } = listeners;
    let (relay_server, relay_client) = start_relay(&cfg, relay, &tls, &parts)?;
    let rtc = bind_rtc(&cfg).await?;
    let control = connect_control(&cfg)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let advertised = advertise(&cfg, &http, &relay_server)?;
    let meter = parts.load_meter(&rtc);
    let load = move || meter.report();
    let registration = control::register_and_keep_alive(
        control.clone(),
        advertised.clone(),
        Duration::from_secs(30),
        load,
        stop_rx.clone(),
    )
    .await?;
    let mut cfg = cfg;
    cfg.public_url = Some(advertised.http_url.clone());
    let node = Node {
        cfg,
        parts,
        rtc,
        relay: relay_client.clone(),
        control,
        registration,
        auth,
    };
    let state = node.assemble();
    // The registry view before the relay serves anyone (then every 2 s).
    if let Ok(registry) = state.control.registry().await {
        state.peers.apply(live_tls.as_ref(), registry);
    }
    info!(
        node = %state.id(), region = %state.region(), http = %advertised.http_url,
        relay = %advertised.relay_addr, rtc = %state.rtc.local_addr(), "node ready"
    );
    let relay = (relay_server, relay_client);
    let servers = serve(&state, relay, http, (rtmp, srt), &stop_rx);
    let drainer = Arc::new(drainer(&state));
    tasks::spawn(&state, &drainer, live_tls, reloads, &stop_rx);
    shutdown.await;
    drainer.drain_to_leave().await;
    let _ = stop_tx.send(true);
    servers.stop(&state).await;
    info!(node = %state.id(), "node stopped");
    Ok(())
}

/// Checks the node's names, loads the token keys and the relay's TLS.
fn check_config(cfg: &NodeConfig) -> anyhow::Result<(Auth, RelayTls, Option<LiveTls>)> {
    names::validate(NameKind::Node, &cfg.id).map_err(|e| anyhow::anyhow!("--id: {e}"))?;
    names::validate(NameKind::Region, &cfg.region).map_err(|e| anyhow::anyhow!("--region: {e}"))?;
    let auth = load_auth(cfg)?;
    let (tls, live_tls) = tls::relay_tls(cfg)?;
    Ok((auth, tls, live_tls))
}

/// The parts that exist before registration: the relay authorizer and the
/// load reports use them from the start.
struct Parts {
    hub: Hub,
    relay_stats: Arc<RelayStats>,
    sessions: Arc<SessionTable>,
    origins: Arc<OriginEpochs>,
    peers: Arc<PeerView>,
}

impl Default for Parts {
    fn default() -> Self {
        Parts {
            hub: Hub::new(HubConfig::default()),
            relay_stats: RelayStats::new(),
            sessions: Arc::default(),
            origins: Arc::default(),
            peers: Arc::default(),
        }
    }
}

impl Parts {
    fn load_meter(&self, rtc: &RtcEngine) -> load::LoadMeter {
        load::LoadMeter {
            hub: self.hub.clone(),
            rtc: rtc.clone(),
            relay_stats: self.relay_stats.clone(),
            sessions: self.sessions.clone(),
            last: Mutex::new((Instant::now(), 0, load::cpu_seconds())),
        }
    }
}

/// The relay server (not serving yet), with the node's authorizer, and the
/// relay client, bound to the relay's IP.
fn start_relay(
    cfg: &NodeConfig,
    socket: std::net::UdpSocket,
    tls: &RelayTls,
    parts: &Parts,
) -> anyhow::Result<(RelayServer, RelayClient)> {
    let relay_cfg = RelayConfig::default();
    let authorizer = RelayAuthorizer::new(
        parts.peers.clone(),
        parts.origins.clone(),
        cfg.insecure_relay,
    );
    let stats = parts.relay_stats.clone();
    let server = RelayServer::new(socket, tls, relay_cfg.clone(), parts.hub.clone(), stats)?
        .with_authorizer(Arc::new(authorizer));
    let client_bind = SocketAddr::new(cfg.relay_listen.ip(), 0);
    let client = RelayClient::new(
        std::net::UdpSocket::bind(client_bind)?,
        tls,
        relay_cfg,
        parts.relay_stats.clone(),
    )?;
    Ok((server, client))
}

/// The WebRTC engine on `--rtc-listen`.
async fn bind_rtc(cfg: &NodeConfig) -> anyhow::Result<RtcEngine> {
    let defaults = RtcConfig::default();
    let rtc = RtcEngine::bind(RtcConfig {
        udp_bind: cfg.rtc_listen,
        announce_ips: cfg.announce_ips.clone(),
        rtc_workers: match cfg.rtc_workers {
            0 => defaults.rtc_workers,
            n => n,
        },
        connect_timeout: cfg.rtc_connect_timeout,
        max_pending: cfg.rtc_max_pending,
        ..defaults
    })
    .await?;
    Ok(rtc)
}

/// The control-plane client, over TLS unless the endpoints are `http://`.
fn connect_control(cfg: &NodeConfig) -> anyhow::Result<ControlClient> {
    let control_tls =
        crate::control_tls::client_tls(&cfg.control_plane, cfg.certs_dir.as_deref(), &cfg.id)?;
    if control_tls.is_none() {
        warn!(
            "control-plane connections are PLAINTEXT (http:// endpoints): local development only"
        );
    }
    Ok(ControlClient::with_tls(&cfg.control_plane, control_tls)?)
}

/// What the node registers as: its public URL (`--public-url`, default the
/// HTTP listener's address) and relay address (`--relay-advertise`, default
/// the relay's listen address, with the primary IP when that is unspecified).
fn advertise(
    cfg: &NodeConfig,
    http: &TcpListener,
    relay: &RelayServer,
) -> anyhow::Result<v1::NodeInfo> {
    let http_addr = http.local_addr()?;
    let relay_port = relay.local_addr()?.port();
    let public_url = match &cfg.public_url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => format!("http://{http_addr}"),
    };
    let relay_addr = cfg.relay_advertise.clone().unwrap_or_else(|| {
        let ip = if cfg.relay_listen.ip().is_unspecified() {
            cfg.primary_ip()
        } else {
            cfg.relay_listen.ip()
        };
        SocketAddr::new(ip, relay_port).to_string()
    });
    Ok(v1::NodeInfo {
        id: cfg.id.clone(),
        region: cfg.region.clone(),
        relay_addr,
        http_url: public_url,
        capacity: cfg.capacity,
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// Everything the node is made of, once registered.
struct Node {
    cfg: NodeConfig,
    parts: Parts,
    rtc: RtcEngine,
    relay: RelayClient,
    control: ControlClient,
    registration: Registration,
    auth: Auth,
}

impl Node {
    /// The parts, with the ones made from the configuration.
    fn assemble(self) -> Arc<NodeState> {
        let Node { cfg, parts, .. } = self;
        let limiter = RateLimiter::new(
            cfg.post_rate_per_ip,
            cfg.post_burst_per_ip,
            cfg.rate_limit_clients,
        );
        let pullers = Pullers::new(PullContext {
            node: cfg.id.clone(),
            region: cfg.region.clone(),
            control: self.control.clone(),
            hub: parts.hub.clone(),
            relay: self.relay,
            origins: parts.origins.clone(),
            linger: cfg.linger,
            orphan_grace: cfg.orphan_grace,
        });
        let counters = Arc::new(NodeCounters::default());
        let takeover = Takeover {
            node: cfg.id.clone(),
            region: cfg.region.clone(),
            control: self.control.clone(),
            relay_ip: cfg.relay_listen.ip(),
            budget: ProbeBudget::default(),
            counters: counters.clone(),
        };
        Arc::new(NodeState {
            cfg,
            hub: parts.hub,
            rtc: self.rtc,
            relay_stats: parts.relay_stats,
            control: self.control,
            registration: self.registration,
            counters,
            drain: Arc::new(DrainFlags::default()),
            auth: self.auth,
            limiter: ClientLimiter::new(limiter),
            sessions: parts.sessions,
            takeover,
            pullers,
            origins: parts.origins,
            peers: parts.peers,
        })
    }
}

fn drainer(state: &NodeState) -> Drainer {
    Drainer {
        node: state.id().to_owned(),
        control: state.control.clone(),
        flags: state.drain.clone(),
        origins: state.origins.clone(),
        sessions: state.sessions.clone(),
        hub: state.hub.clone(),
        timeout: state.cfg.drain_timeout,
    }
}

/// The running servers, and how to stop them.
struct Servers {
    relay: JoinHandle<()>,
    relay_stop: oneshot::Sender<()>,
    http: JoinHandle<()>,
    http_stop: oneshot::Sender<()>,
    relay_client: RelayClient,
}

/// Starts serving: the relay, HTTP, and RTMP and SRT ingest if configured.
fn serve(
    state: &Arc<NodeState>,
    (relay, relay_client): (RelayServer, RelayClient),
    http: TcpListener,
    (rtmp, srt): (Option<TcpListener>, Option<std::net::UdpSocket>),
    stop: &watch::Receiver<bool>,
) -> Servers {
    let (relay_stop, relay_stop_rx) = oneshot::channel::<()>();
    let relay = tokio::spawn(relay.run(async move {
        let _ = relay_stop_rx.await;
    }));
    let (http_stop, http_stop_rx) = oneshot::channel::<()>();
    let app = crate::http::router(state.clone());
    let http_limits = HttpLimits {
        header_timeout: state.cfg.http_header_timeout,
        max_connections: state.cfg.http_max_connections,
        max_connections_per_address: state.cfg.http_max_connections_per_ip,
    };
    let http = tokio::spawn(crate::limits::serve(
        http,
        app,
        http_limits,
        async move {
            let _ = http_stop_rx.await;
        },
        Duration::from_secs(2),
    ));
    if let Some(rtmp) = rtmp {
        info!(rtmp = %rtmp.local_addr().map(crate::rtmp::url_of).unwrap_or_default(), "RTMP ingest listening");
        tokio::spawn(crate::rtmp::serve(rtmp, state.clone(), stop.clone()));
    }
    if let Some(srt) = srt {
        info!(srt = %srt.local_addr().map(|a| a.to_string()).unwrap_or_default(), "SRT ingest listening");
        tokio::spawn(crate::srt::serve(srt, state.clone(), stop.clone()));
    }
    Servers {
        relay,
        relay_stop,
        http,
        http_stop,
        relay_client,
    }
}

impl Servers {
    /// After the drain: ends the sessions, deregisters, stops the servers.
    async fn stop(self, state: &NodeState) {
        state.sessions.stop_all();
        if let Err(e) = state.control.deregister(state.id()).await {
            warn!(error = %e, "deregister failed; the lease will expire");
        }
        let _ = self.http_stop.send(());
        let _ = self.relay_stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(2), self.http).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.relay).await;
        self.relay_client.close();
    }
}
