//! The node's background tasks, each given the parts it works with: the
//! registry view's refresh, SIGHUP reloads, claims after re-registration,
//! link reports and the control plane's drain orders.

use std::sync::Arc;

use strata_relay::LiveTls;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::auth::Auth;
use crate::config::NodeConfig;
use crate::control::{ControlClient, Registration};
use crate::drain::Drainer;
use crate::origins::OriginEpochs;
use crate::session_table::SessionTable;
use crate::state::NodeState;

/// Starts every background task; they end when `stop` turns true.
pub(super) fn spawn(
    state: &NodeState,
    drainer: &Arc<Drainer>,
    live_tls: Option<LiveTls>,
    reloads: mpsc::Receiver<()>,
    stop: &watch::Receiver<bool>,
) {
    let peers = state.peers.clone();
    let (control, live, s) = (state.control.clone(), live_tls.clone(), stop.clone());
    tokio::spawn(async move { peers.refresh(control, live, s).await });
    let reload = Reload {
        cfg: state.cfg.clone(),
        auth: state.auth.clone(),
        live: live_tls,
        control: state.control.clone(),
    };
    tokio::spawn(reload.run(reloads));
    let reclaim = Reclaim {
        node: state.id().to_owned(),
        control: state.control.clone(),
        registration: state.registration.clone(),
        sessions: state.sessions.clone(),
        origins: state.origins.clone(),
    };
    tokio::spawn(reclaim.run(stop.clone()));
    tokio::spawn(crate::links::report_links(
        crate::links::Reporter {
            node: state.id().to_owned(),
            region: state.region().to_owned(),
            control: state.control.clone(),
            stats: state.relay_stats.clone(),
            peers: state.peers.clone(),
        },
        stop.clone(),
    ));
    let (drainer, orders) = (drainer.clone(), state.registration.draining());
    let s = stop.clone();
    tokio::spawn(async move { drainer.follow_orders(orders, s).await });
}

/// Reloads the token keys and certificates on every message.
struct Reload {
    cfg: NodeConfig,
    auth: Auth,
    live: Option<LiveTls>,
    control: ControlClient,
}

impl Reload {
    async fn run(self, mut reloads: mpsc::Receiver<()>) {
        while reloads.recv().await.is_some() {
            let _ = super::reload_token_keys(&self.auth);
            if let Some(live) = &self.live {
                let _ = super::reload_certificates(&self.cfg, live, &self.control);
            }
        }
    }
}

/// After the node had to register again (its lease was lost, e.g. during a
/// long control-plane outage), claims the streams it ingests again.
struct Reclaim {
    node: String,
    control: ControlClient,
    registration: Registration,
    sessions: Arc<SessionTable>,
    origins: Arc<OriginEpochs>,
}

impl Reclaim {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut generations = self.registration.generations();
        loop {
            tokio::select! {
                r = generations.changed() => if r.is_err() { return },
                _ = stop.changed() => return,
            }
            self.claim_again().await;
        }
    }

    async fn claim_again(&self) {
        for stream in self.sessions.published_streams() {
            match self.control.publish(&stream, &self.node, None).await {
                Ok(o) => {
                    self.origins.set(&stream, o.epoch);
                    info!(%stream, epoch = o.epoch, "stream claimed again after re-registration");
                }
                Err(e) => warn!(%stream, error = %e, "could not claim the stream again"),
            }
        }
    }
}
