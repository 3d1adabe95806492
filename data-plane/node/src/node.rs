//! Assembles and runs one node: relay server and client, WebRTC engine,
//! control-plane registration, HTTP API; and the graceful drain.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use anyhow::Context;
use strata_common::names::{self, NameKind};
use strata_media::hub::{Hub, HubConfig};
use strata_proto::v1;
use strata_relay::{
    LiveTls, Refusal, RelayClient, RelayConfig, RelayServer, RelayStats, RelayTls, Revocations,
    SubscribeErrorCode, SubscribeRequest, certs::NodeCredentials,
};
use strata_rtc::{RtcConfig, RtcEngine};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::auth::{Auth, AuthMode, KeyError, KeySource};
use crate::config::NodeConfig;
use crate::control::{self, ControlClient};
use crate::limits::HttpLimits;
use crate::state::{NodeState, PeerVerdict, SessionKind};

/// A relay peer missing from the registry view triggers a refresh of the
/// view, at most this often.
const PEER_REFRESH_ON_MISS: Duration = Duration::from_secs(1);

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

/// The relay's TLS; with certificates, also the handle to renew them and to
/// set the revocation list while the node runs.
fn relay_tls(cfg: &NodeConfig) -> anyhow::Result<(RelayTls, Option<LiveTls>)> {
    if cfg.insecure_relay {
        warn!("relay runs WITHOUT authentication (--insecure-relay): experiments only");
        return Ok((
            RelayTls::Insecure {
                node_id: cfg.id.clone(),
            },
            None,
        ));
    }
    let live = LiveTls::new(&load_credentials(cfg)?)?;
    log_certificate(&live, "certificate loaded");
    Ok((RelayTls::Live(live.clone()), Some(live)))
}

fn load_credentials(cfg: &NodeConfig) -> anyhow::Result<NodeCredentials> {
    let dir = cfg.certs_dir.as_ref().context(
        "--certs-dir is required (or --insecure-relay): create one with `strata-node certs-init` and `certs-issue`",
    )?;
    NodeCredentials::load(dir, &cfg.id)
        .with_context(|| format!("loading certificates of {} from {}", cfg.id, dir.display()))
}

/// Seconds from now until `unix`.
fn seconds_until(unix: i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    unix - now
}

fn log_certificate(live: &LiveTls, what: &str) {
    let left = seconds_until(live.not_after());
    if left < 7 * 86_400 {
        warn!(
            not_after = live.not_after(),
            hours_left = left / 3600,
            "{what}; it expires soon: renew it (strata-node certs-issue, then SIGHUP)"
        );
    } else {
        info!(
            not_after = live.not_after(),
            days_left = left / 86_400,
            "{what}"
        );
    }
}

/// Reads the node's certificate files again, as on SIGHUP, for the relay
/// (next handshakes) and the control-plane client (new connections). On
/// failure the node keeps the certificate it had and says why: a
/// half-installed renewal must not cut the node off.
pub fn reload_certificates(
    cfg: &NodeConfig,
    live: &LiveTls,
    control: &ControlClient,
) -> anyhow::Result<()> {
    let result = (|| {
        let creds = load_credentials(cfg)?;
        let control_tls =
            crate::control_tls::client_tls(&cfg.control_plane, cfg.certs_dir.as_deref(), &cfg.id)?;
        live.replace(&creds)?;
        control.set_tls(control_tls)?;
        anyhow::Ok(())
    })();
    match &result {
        Ok(()) => log_certificate(live, "certificate reloaded"),
        Err(e) => {
            warn!(error = %format!("{e:#}"), "certificate NOT reloaded; the previous one stays in use");
        }
    }
    result
}

/// The token policy of the configuration: keys from `--token-keys` and
/// `STRATA_TOKEN_KEYS`; `required` without keys is a configuration error.
pub fn load_auth(cfg: &NodeConfig) -> anyhow::Result<Auth> {
    let source = KeySource {
        path: cfg.token_keys.clone(),
        entries: cfg.token_key_entries.clone(),
    };
    let auth = match Auth::new(cfg.auth, source, cfg.token_max_ttl.as_secs()) {
        Err(KeyError::NoKeys) => anyhow::bail!(
            "--auth required needs token keys (--token-keys FILE|DIR or STRATA_TOKEN_KEYS); \
             pass --auth open only for local development"
        ),
        r => r.context("loading token keys")?,
    };
    match cfg.auth {
        AuthMode::Required => {
            info!(kids = ?auth.kids(), max_ttl = ?cfg.token_max_ttl, "publish and play need a token");
        }
        AuthMode::Open => {
            warn!(
                "!!! --auth open: ANYONE CAN PUBLISH AND PLAY ANY STREAM ON THIS NODE. \
                 Local development only; use --auth required with --token-keys in production !!!"
            );
            if !auth.kids().is_empty() {
                warn!("token keys are configured but ignored with --auth open");
            }
        }
    }
    Ok(auth)
}

/// Reads the token keys again, as on SIGHUP; on failure the node keeps the
/// keys it had (and says why). What the signal handler of `strata-node` runs.
pub fn reload_token_keys(auth: &Auth) -> Result<Vec<String>, KeyError> {
    match auth.reload() {
        Ok(kids) => {
            info!(?kids, "token keys reloaded");
            Ok(kids)
        }
        Err(e) => {
            warn!(error = %e, "token keys NOT reloaded; the previous keys stay in use");
            Err(e)
        }
    }
}

/// Measures egress bit/s and CPU between load reports.
struct LoadMeter {
    last: Mutex<(Instant, u64, f64)>,
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (100 Hz on Linux).
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

impl LoadMeter {
    fn report(&self, state: &NodeState) -> v1::Load {
        let bytes = state.rtc.egress().counters().bytes_out.get()
            + state
                .relay_stats
                .peers()
                .iter()
                .map(|(_, p)| p.bytes_out.load(Ordering::Relaxed))
                .sum::<u64>();
        let cpu_now = cpu_seconds();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let dt = last.0.elapsed().as_secs_f64().max(1e-3);
        let egress_bps = ((bytes.saturating_sub(last.1)) as f64 * 8.0 / dt) as u64;
        let cpu = ((cpu_now - last.2).max(0.0) / dt) as f32;
        *last = (Instant::now(), bytes, cpu_now);
        v1::Load {
            streams: state.hub.streams().len() as u32,
            players: state.session_count(SessionKind::Player) as u32,
            publishers: state.session_count(SessionKind::Publisher) as u32,
            egress_bps,
            cpu,
            stream_players: crate::layers::stream_players(state.players_by_stream()),
        }
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
    mut reloads: mpsc::Receiver<()>,
) -> anyhow::Result<()> {
    names::validate(NameKind::Node, &cfg.id).map_err(|e| anyhow::anyhow!("--id: {e}"))?;
    names::validate(NameKind::Region, &cfg.region).map_err(|e| anyhow::anyhow!("--region: {e}"))?;
    let auth = load_auth(&cfg)?;
    let (tls, live_tls) = relay_tls(&cfg)?;
    let hub = Hub::new(HubConfig::default());
    let relay_stats = RelayStats::new();
    let relay_cfg = RelayConfig::default();

    // The authorizer consults the node state, which exists only after
    // registration; until then nothing is served.
    let me: Arc<OnceLock<Weak<NodeState>>> = Arc::new(OnceLock::new());
    let authorizer = {
        let me = me.clone();
        let insecure = cfg.insecure_relay;
        move |req: &SubscribeRequest<'_>| -> Result<(), Refusal> {
            let Some(state) = me.get().and_then(Weak::upgrade) else {
                return Err(Refusal {
                    code: SubscribeErrorCode::NotFound,
                    reason: "node starting".into(),
                });
            };
            // A CA-signed certificate is not enough: the peer must be a node
            // the control plane has registered (a stolen or stale certificate
            // of a node that left is refused).
            match req
                .peer
                .map(|p| (p, state.check_peer(p, PEER_REFRESH_ON_MISS)))
            {
                Some((_, PeerVerdict::Registered)) => {}
                // Maybe registered since the view was fetched: retryable
                // (`NotFound` keeps the peer's puller retrying rather than
                // reporting this node unreachable) while the view refreshes.
                Some((peer, PeerVerdict::NotYet)) => {
                    return Err(Refusal {
                        code: SubscribeErrorCode::NotFound,
                        reason: format!(
                            "peer {peer:?} is not a registered node in this node's view; \
                             refreshing the view, retry"
                        ),
                    });
                }
                Some((peer, PeerVerdict::NotRegistered)) => {
                    return Err(Refusal {
                        code: SubscribeErrorCode::NotAuthorized,
                        reason: format!("peer {peer:?} is not a registered node"),
                    });
                }
                // Insecure mode authenticates nobody: there is no identity to check.
                None if insecure => {}
                None => {
                    return Err(Refusal {
                        code: SubscribeErrorCode::NotAuthorized,
                        reason: "the peer's certificate names no node".into(),
                    });
                }
            }
            match state.origin_epoch(req.stream) {
                Some(e) if u64::try_from(e).ok() == Some(req.epoch) => Ok(()),
                Some(e) => Err(Refusal {
                    code: SubscribeErrorCode::StaleEpoch,
                    reason: format!(
                        "this node's origin record of {:?} has epoch {e}, not {}",
                        req.stream, req.epoch
                    ),
                }),
                None => Err(Refusal {
                    code: SubscribeErrorCode::NotFound,
                    reason: format!("this node is not an origin of {:?}", req.stream),
                }),
            }
        }
    };
    let relay_server = RelayServer::new(
        listeners.relay,
        &tls,
        relay_cfg.clone(),
        hub.clone(),
        relay_stats.clone(),
    )?
    .with_authorizer(Arc::new(authorizer));
    let relay_port = relay_server.local_addr()?.port();
    let client_bind = SocketAddr::new(cfg.relay_listen.ip(), 0);
    let relay_client = RelayClient::new(
        std::net::UdpSocket::bind(client_bind)?,
        &tls,
        relay_cfg,
        relay_stats.clone(),
    )?;
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
    let control_tls =
        crate::control_tls::client_tls(&cfg.control_plane, cfg.certs_dir.as_deref(), &cfg.id)?;
    if control_tls.is_none() {
        warn!(
            "control-plane connections are PLAINTEXT (http:// endpoints): local development only"
        );
    }
    let control = ControlClient::with_tls(&cfg.control_plane, control_tls)?;

    let http_addr = listeners.http.local_addr()?;
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
    let info = v1::NodeInfo {
        id: cfg.id.clone(),
        region: cfg.region.clone(),
        relay_addr: relay_addr.clone(),
        http_url: public_url.clone(),
        capacity: cfg.capacity,
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let meter = Arc::new(LoadMeter {
        last: Mutex::new((Instant::now(), 0, cpu_seconds())),
    });
    let load = {
        let (me, meter) = (me.clone(), meter.clone());
        move || match me.get().and_then(Weak::upgrade) {
            Some(state) => meter.report(&state),
            None => v1::Load::default(),
        }
    };
    let registration = control::register_and_keep_alive(
        control.clone(),
        info,
        Duration::from_secs(30),
        load,
        stop_rx.clone(),
    )
    .await?;
    let mut cfg = cfg;
    cfg.public_url = Some(public_url.clone());
    let state = NodeState::new(
        cfg,
        hub,
        rtc,
        relay_client,
        relay_stats,
        control,
        registration,
        auth,
    );
    // The registry view before the relay serves anyone (then every 2 s).
    if let Ok(registry) = state.control.registry().await {
        apply_registry(&state, live_tls.as_ref(), registry);
    }
    let _ = me.set(Arc::downgrade(&state));
    info!(
        node = %state.id(), region = %state.region(), http = %public_url, relay = %relay_addr,
        rtc = %state.rtc.local_addr(), "node ready"
    );

    let (relay_stop_tx, relay_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let relay_task = tokio::spawn(relay_server.run(async move {
        let _ = relay_stop_rx.await;
    }));
    let (http_stop_tx, http_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app = crate::http::router(state.clone());
    let http_limits = HttpLimits {
        header_timeout: state.cfg.http_header_timeout,
        max_connections: state.cfg.http_max_connections,
        max_connections_per_address: state.cfg.http_max_connections_per_ip,
    };
    let http_task = tokio::spawn(crate::limits::serve(
        listeners.http,
        app,
        http_limits,
        async move {
            let _ = http_stop_rx.await;
        },
        Duration::from_secs(2),
    ));
    if let Some(rtmp) = listeners.rtmp {
        info!(rtmp = %rtmp.local_addr().map(crate::rtmp::url_of).unwrap_or_default(), "RTMP ingest listening");
        tokio::spawn(crate::rtmp::serve(rtmp, state.clone(), stop_rx.clone()));
    }
    if let Some(srt) = listeners.srt {
        info!(srt = %srt.local_addr().map(|a| a.to_string()).unwrap_or_default(), "SRT ingest listening");
        tokio::spawn(crate::srt::serve(srt, state.clone(), stop_rx.clone()));
    }
    tokio::spawn(refresh_peer_regions(
        state.clone(),
        live_tls.clone(),
        stop_rx.clone(),
    ));
    {
        let state = state.clone();
        tokio::spawn(async move {
            while reloads.recv().await.is_some() {
                let _ = reload_token_keys(&state.auth);
                if let Some(live) = &live_tls {
                    let _ = reload_certificates(&state.cfg, live, &state.control);
                }
            }
        });
    }
    tokio::spawn(reclaim_after_reregistration(state.clone(), stop_rx.clone()));
    tokio::spawn(crate::links::report_links(state.clone(), stop_rx.clone()));
    tokio::spawn(follow_drain_orders(state.clone(), stop_rx.clone()));

    shutdown.await;
    drain(&state).await;
    let _ = stop_tx.send(true);
    state.stop_all_sessions();
    if let Err(e) = state.control.deregister(state.id()).await {
        warn!(error = %e, "deregister failed; the lease will expire");
    }
    let _ = http_stop_tx.send(());
    let _ = relay_stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(2), http_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), relay_task).await;
    state.relay.close();
    info!(node = %state.id(), "node stopped");
    Ok(())
}

/// Takes no new sessions, gives up regional origins so that the nodes
/// pulling from this one move to a new regional origin while this node still
/// serves them, then waits (bounded) until they have moved.
async fn drain(state: &Arc<NodeState>) {
    let started = Instant::now();
    state.draining.store(true, Ordering::Relaxed);
    info!(node = %state.id(), "draining");
    if let Err(e) = state.control.drain(state.id()).await {
        warn!(error = %e, "could not mark the node draining");
    }
    // (After an operator's Drain there is usually nothing left to hand over:
    // a drained node does not claim.)
    let regional = hand_over_regional_origins(state).await;
    // Downstream nodes hold hub sinks of their own; wait for them to leave.
    let deadline = started + state.cfg.drain_timeout;
    while Instant::now() < deadline {
        let downstream: usize = regional
            .iter()
            .filter_map(|s| state.hub.get(s))
            .map(|h| {
                h.sink_count()
                    .saturating_sub(local_players(state, h.name()))
            })
            .sum();
        if downstream == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    info!(node = %state.id(), took = ?started.elapsed(), handed_over = regional.len(), "drained");
}

/// Releases every regional origin this node holds (not the streams it
/// ingests), so that a node of its region that pulls from it claims the
/// region instead, and this node's own pullers move to the new holder (a
/// draining node never claims). Returns the released streams.
async fn hand_over_regional_origins(state: &Arc<NodeState>) -> Vec<String> {
    let regional: Vec<String> = state
        .origin_streams()
        .into_iter()
        .filter(|s| !state.has_publisher(s))
        .collect();
    for stream in &regional {
        if let Err(e) = state.control.release(stream, state.id()).await {
            warn!(%stream, error = %e, "could not hand over the regional origin");
        }
    }
    regional
}

/// Follows the control plane's draining mark, as keep-alive answers carry
/// it: an operator's Drain makes the node drain as on SIGTERM without
/// leaving (new sessions get a 307 or 503, regional origins are handed over,
/// publishers and players stay); Undrain puts it back. A node that is
/// shutting down stays drained and marks itself again if undrained.
async fn follow_drain_orders(state: Arc<NodeState>, mut stop: watch::Receiver<bool>) {
    let mut orders = state.registration.draining();
    loop {
        tokio::select! {
            r = orders.changed() => if r.is_err() { return },
            _ = stop.changed() => return,
        }
        let marked = *orders.borrow_and_update();
        if state.is_shutting_down() {
            // The SIGTERM drain does its own hand-over; it must not be undone.
            if !marked && let Err(e) = state.control.drain(state.id()).await {
                warn!(error = %e, "could not mark the node draining again");
            }
            continue;
        }
        if state.drained.swap(marked, Ordering::Relaxed) == marked {
            continue;
        }
        if marked {
            info!(node = %state.id(), "drained by the control plane: no new sessions; handing regional origins over");
            let released = hand_over_regional_origins(&state).await;
            info!(node = %state.id(), handed_over = released.len(), "drained; still serving");
        } else {
            info!(node = %state.id(), "undrained: taking sessions again");
        }
    }
}

fn local_players(state: &NodeState, stream: &str) -> usize {
    state.players_of(stream)
}

fn registry_view(nodes: Vec<v1::Node>) -> HashMap<String, String> {
    nodes
        .into_iter()
        .filter_map(|n| n.info.map(|i| (i.id, i.region)))
        .collect()
}

/// Takes a `ListNodes` answer: the registered nodes, and the revoked
/// certificates the relay must refuse from its next handshake on.
fn apply_registry(state: &NodeState, live: Option<&LiveTls>, registry: v1::ListNodesResponse) {
    if let Some(live) = live {
        let mut revoked = Revocations::default();
        for r in registry.revoked {
            if !r.serial.is_empty() {
                revoked.serials.insert(r.serial);
            }
            if !r.sha256.is_empty() {
                revoked.sha256.insert(r.sha256);
            }
        }
        if *live.revoked() != revoked {
            info!(
                serials = revoked.serials.len(),
                fingerprints = revoked.sha256.len(),
                "revocation list updated"
            );
            live.set_revoked(revoked);
        }
    }
    state.set_peer_regions(registry_view(registry.nodes));
}

/// Keeps the registry view (node id → region): per-region metrics, and the
/// relay's check that a peer is a registered node; and the revocation list.
/// Every 2 s, and at once when the relay meets a peer it does not know. A
/// failed `ListNodes` keeps the last view, so a control-plane outage does
/// not cut the relay (nor forget a revocation).
async fn refresh_peer_regions(
    state: Arc<NodeState>,
    live: Option<LiveTls>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if let Ok(registry) = state.control.registry().await {
            apply_registry(&state, live.as_ref(), registry);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = state.peer_refresh.notified() => {}
            _ = stop.changed() => return,
        }
    }
}

/// After the node had to register again (its lease was lost, e.g. during a
/// long control-plane outage), claims the streams it ingests again.
async fn reclaim_after_reregistration(state: Arc<NodeState>, mut stop: watch::Receiver<bool>) {
    let mut generations = state.registration.generations();
    loop {
        tokio::select! {
            r = generations.changed() => if r.is_err() { return },
            _ = stop.changed() => return,
        }
        for stream in state.published_streams() {
            match state.control.publish(&stream, state.id(), None).await {
                Ok(o) => {
                    state.set_origin_epoch(&stream, o.epoch);
                    info!(%stream, epoch = o.epoch, "stream claimed again after re-registration");
                }
                Err(e) => warn!(%stream, error = %e, "could not claim the stream again"),
            }
        }
    }
}
