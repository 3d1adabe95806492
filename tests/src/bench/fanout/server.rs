//! A server under test (a Strata node or Janus) with the source feeding it, and the players'
//! view of it: how a player connects and which packets it should receive.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::task::JoinHandle;

use super::client::{LoadPeer, Offer, RecvLoop};
use super::janus;
use super::simulcast::Mode;
use super::source::{self, Fed, Source};
use super::{Kind, RampConfig};
use crate::bench::wan::launch::{ClusterDir, InProcessControl, NodeProcess, NodeSpec};
use crate::bench::wan::netns;

/// A server under test with its source running.
pub(super) struct Server {
    pub(super) kind: Kind,
    /// How players choose layers.
    mode: Mode,
    /// Per clip track, whether a player on each layer receives it: `[low, mid, high]`, or
    /// one entry (every track) for a single-layer source.
    received: Vec<Vec<bool>>,
    pub(super) pid: u32,
    /// Signalling target: WHEP URL or Janus API URL.
    pub(super) url: String,
    bind_ip: IpAddr,
    fed: Arc<Fed>,
    feeder: JoinHandle<Result<()>>,
    /// Receives every player's media.
    recv: RecvLoop,
    /// Players offer transport-cc (Strata only).
    pub(super) transport_cc: bool,
    // Kept alive while the server runs.
    _parts: Parts,
}

enum Parts {
    Strata {
        _node: NodeProcess,
        _control: InProcessControl,
        _dir: ClusterDir,
    },
    Janus {
        _janus: janus::Janus,
        _iface: Option<netns::Veth>,
        _dir: ClusterDir,
    },
}

impl Drop for Server {
    fn drop(&mut self) {
        self.feeder.abort();
    }
}

/// What both kinds of server share once started: the players' view and the source's counters.
struct Common {
    kind: Kind,
    mode: Mode,
    received: Vec<Vec<bool>>,
    fed: Arc<Fed>,
}

pub(super) async fn start_server(
    kind: Kind,
    rtc_workers: Option<usize>,
    mode: Mode,
    source: &Source,
    cfg: &RampConfig,
) -> Result<Server> {
    let received = match source.simulcast() {
        true => strata_media::Layer::ALL
            .iter()
            .map(|&l| source.received_by(Some(l)))
            .collect(),
        false => vec![source.received_by(None)],
    };
    let common = Common {
        kind,
        mode,
        received,
        fed: Arc::new(Fed::new(source.tracks.len())),
    };
    match kind {
        Kind::Strata => start_strata(common, rtc_workers, source, cfg).await,
        Kind::Janus => start_janus(common, source, cfg).await,
    }
}

/// One Strata node, the control plane in this process, the source over WHIP.
async fn start_strata(
    common: Common,
    rtc_workers: Option<usize>,
    source: &Source,
    cfg: &RampConfig,
) -> Result<Server> {
    let dir = ClusterDir::new("fanout")?;
    let control =
        InProcessControl::start(Ipv4Addr::LOCALHOST.into(), Duration::from_secs(3)).await?;
    let mut args = vec!["--capacity".to_owned(), "100000".to_owned()];
    if let Some(w) = rtc_workers {
        args.extend(["--rtc-workers".to_owned(), w.to_string()]);
    }
    let spec = NodeSpec {
        id: "fanout-1".into(),
        region: "bench".into(),
        ip: Ipv4Addr::LOCALHOST,
        netns: None,
        cpus: cfg.server_cpus.clone(),
        args,
    };
    let mut node = NodeProcess::spawn(&dir, &control.url(), &spec)?;
    node.wait_ready(Duration::from_secs(40)).await?;
    let whip = format!("{}/whip/fanout", node.http);
    let feeder = source::feed_source_whip(source, &whip, Arc::clone(&common.fed)).await?;
    Ok(Server {
        kind: common.kind,
        mode: common.mode,
        received: common.received,
        pid: node.pid(),
        url: format!("{}/whep/fanout", node.http),
        bind_ip: Ipv4Addr::LOCALHOST.into(),
        fed: common.fed,
        feeder,
        recv: RecvLoop::start()?,
        transport_cc: cfg.transport_cc,
        _parts: Parts::Strata {
            _node: node,
            _control: control,
            _dir: dir,
        },
    })
}

/// Janus with a streaming-plugin mountpoint, the source as plain RTP.
async fn start_janus(common: Common, source: &Source, cfg: &RampConfig) -> Result<Server> {
    let clip = Arc::clone(&source.clip);
    let dir = ClusterDir::new("fanout-janus")?;
    let ice_ip = Ipv4Addr::new(127, 0, 0, 2);
    let iface = netns::Veth::loopback_alias(ice_ip)?;
    let janus = janus::Janus::start(
        dir.path(),
        &clip,
        iface.name(),
        ice_ip,
        cfg.server_cpus.as_deref(),
        cfg.janus_event_loops,
    )
    .await?;
    let feeder = source::feed_rtp(
        Arc::clone(&clip),
        janus.rtp_ports.clone(),
        Arc::clone(&common.fed),
    );
    Ok(Server {
        kind: common.kind,
        mode: common.mode,
        received: common.received,
        pid: janus.pid(),
        url: janus.api.clone(),
        // libnice sends from its 127.0.0.2 socket out of that interface: a player on
        // 127.0.0.1 would never hear back, one on 127.0.0.2 is delivered locally.
        bind_ip: ice_ip.into(),
        fed: common.fed,
        feeder,
        recv: RecvLoop::start()?,
        transport_cc: false,
        _parts: Parts::Janus {
            _janus: janus,
            _iface: Some(iface),
            _dir: dir,
        },
    })
}

impl Server {
    /// Player `index` of the ramp (its index decides its layer in a mixed run).
    pub(super) async fn new_peer(&self, index: usize) -> Result<LoadPeer> {
        match self.kind {
            Kind::Strata => {
                let url = match self.mode.pinned(index) {
                    Some(layer) => format!("{}?layer={}", self.url, layer.as_str()),
                    None => self.url.clone(),
                };
                let offer = Offer {
                    transport_cc: self.transport_cc,
                    ..Offer::default()
                };
                LoadPeer::whep_offering(&url, self.bind_ip, &self.recv.handle(), offer).await
            }
            Kind::Janus => {
                LoadPeer::janus(
                    &self.url,
                    janus::MOUNTPOINT,
                    self.bind_ip,
                    &self.recv.handle(),
                )
                .await
            }
        }
    }

    /// Packets sent per clip track so far.
    pub(super) fn fed(&self) -> Vec<u64> {
        self.fed.snapshot()
    }

    /// Of the packets sent between two [`fed`](Self::fed) snapshots, those player `index`
    /// should have received.
    pub(super) fn expected(&self, index: usize, before: &[u64], after: &[u64]) -> u64 {
        let layer = self.mode.expected(index).map_or(0, |l| l.index());
        let Some(received) = self.received.get(layer).or(self.received.first()) else {
            return 0;
        };
        (after.iter().zip(before))
            .zip(received)
            .filter(|(_, r)| **r)
            .map(|((a, b), _)| a.saturating_sub(*b))
            .sum()
    }
}
