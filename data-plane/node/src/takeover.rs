//! Claiming a stream's main origin for a WHIP publisher, and taking it over
//! at once when its holder is dead (ARCHITECTURE.md, "Taking over a dead main
//! origin").
//!
//! A refused claim (ALREADY_EXISTS) is followed by one look at the holder
//! (the stream's topology from the control plane: who, which epoch, which
//! relay address) and one probe of the holder's relay port
//! ([`crate::probe`]). Only "nothing listens there" is sent back as
//! evidence; a holder that answers, or a probe that gets no answer at all (a
//! partition looks like that), leaves the 409 as it was.
//!
//! Budget: the caller holds the stream's per-node publish reservation, so a
//! node runs at most one look-up and probe per stream at a time, each probe
//! at most [`PROBE_TIMEOUT`] long and two datagrams big, and only towards a
//! registered node's relay address. [`ProbeBudget`] spaces them out: at most
//! one per stream per [`PROBE_EVERY`] (a publisher retrying faster gets the
//! plain 409 in between), so a flood of refused publishes costs the control
//! plane one Publish each and no more. WHIP POSTs are limited per client
//! address before they get here.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use strata_proto::v1;
use tracing::{debug, info};

use crate::control::ControlClient;
use crate::counters::NodeCounters;
use crate::error::ApiError;
use crate::probe::{self, Probe};

/// How long the probe waits for an answer. On a dead process's host the ICMP
/// answer takes one round trip; waiting longer only delays the 409 of a
/// publish that is refused anyway.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
/// How long the look at the holder may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);
/// At most one look-up and probe per stream this often.
pub const PROBE_EVERY: Duration = Duration::from_millis(100);
/// Streams the budget remembers at once (each entry lives [`PROBE_EVERY`]).
const BUDGET_STREAMS: usize = 4096;

/// When a refused publish may look at the holder and probe it: at most once
/// per stream per `every`, over at most `cap` streams at once (sans-IO: the
/// caller passes the time).
#[derive(Debug)]
pub struct ProbeBudget {
    every: Duration,
    cap: usize,
    last: Mutex<HashMap<String, Instant>>,
}

impl Default for ProbeBudget {
    fn default() -> Self {
        ProbeBudget::new(PROBE_EVERY, BUDGET_STREAMS)
    }
}

impl ProbeBudget {
    /// A budget of one probe per stream per `every`, `cap` streams at once.
    pub fn new(every: Duration, cap: usize) -> Self {
        ProbeBudget {
            every,
            cap,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `stream` may be probed at `now`; if so, counts it.
    pub fn allow(&self, stream: &str, now: Instant) -> bool {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = last.get(stream)
            && now.saturating_duration_since(*t) < self.every
        {
            return false;
        }
        if last.len() >= self.cap && !last.contains_key(stream) {
            last.retain(|_, t| now.saturating_duration_since(*t) < self.every);
            if last.len() >= self.cap {
                return false;
            }
        }
        last.insert(stream.to_owned(), now);
        true
    }
}

impl NodeCounters {
    /// Counts one takeover probe by what it found.
    pub fn takeover_probe(&self, found: Probe) {
        self.takeover_probes[found as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What a claim with takeover works with.
pub struct Takeover {
    /// This node's id.
    pub node: String,
    /// This node's region (the holder is looked up there).
    pub region: String,
    /// Publish and the look at the holder.
    pub control: ControlClient,
    /// The node's relay IP, the probe's source.
    pub relay_ip: IpAddr,
    /// Spaces the probes out.
    pub budget: ProbeBudget,
    /// Counts the probes.
    pub counters: Arc<NodeCounters>,
}

impl Takeover {
    /// Claims the main origin of `stream` for this node; takes it over from
    /// a holder found dead. The caller holds the stream's publish reservation.
    pub async fn claim(&self, stream: &str) -> Result<v1::MainOrigin, ApiError> {
        let refused = match self.control.publish(stream, &self.node, None).await {
            Ok(origin) => return Ok(origin),
            Err(e) if e.code() == tonic::Code::AlreadyExists => e,
            Err(e) => return Err(ApiError::from_control(e)),
        };
        if !self.budget.allow(stream, Instant::now()) {
            return Err(ApiError::from_control(refused));
        }
        let Some(holder) = self.holder(stream).await else {
            return Err(ApiError::from_control(refused));
        };
        let Some(addr) = relay_addr(&holder.relay_addr).await else {
            return Err(ApiError::from_control(refused));
        };
        let found = probe::probe(self.relay_ip, addr, PROBE_TIMEOUT).await;
        self.counters.takeover_probe(found);
        if found != Probe::Refused {
            debug!(stream, holder = %holder.node_id, ?found, "main origin holder not found dead");
            return Err(ApiError::from_control(refused));
        }
        info!(stream, holder = %holder.node_id, epoch = holder.epoch,
            "main origin holder's relay port refuses: taking the stream over");
        let dead = v1::Upstream {
            node_id: holder.node_id.clone(),
            region: holder.region.clone(),
            relay_addr: holder.relay_addr.clone(),
            epoch: holder.epoch,
        };
        self.control
            .publish(stream, &self.node, Some(dead))
            .await
            .map_err(ApiError::from_control)
    }

    /// The stream's main origin as the control plane sees it, unless it is
    /// this node or the look fails.
    async fn holder(&self, stream: &str) -> Option<v1::MainOrigin> {
        let req = v1::WatchStreamRequest {
            stream: stream.to_owned(),
            region: self.region.clone(),
        };
        let look = async {
            let mut topology = self.control.watch_stream(req).await.ok()?;
            topology.message().await.ok()?
        };
        let topology: v1::StreamTopology =
            tokio::time::timeout(LOOKUP_TIMEOUT, look).await.ok()??;
        topology.main.filter(|m| m.node_id != self.node)
    }
}

async fn relay_addr(addr: &str) -> Option<SocketAddr> {
    if let Ok(a) = addr.parse() {
        return Some(a);
    }
    tokio::net::lookup_host(addr).await.ok()?.next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_probe_per_stream_per_interval() {
        let b = ProbeBudget::new(Duration::from_millis(100), 16);
        let t0 = Instant::now();
        assert!(b.allow("s", t0));
        assert!(!b.allow("s", t0 + Duration::from_millis(99)));
        assert!(b.allow("t", t0 + Duration::from_millis(1)));
        assert!(b.allow("s", t0 + Duration::from_millis(100)));
    }

    #[test]
    fn the_streams_remembered_are_bounded() {
        let b = ProbeBudget::new(Duration::from_millis(100), 2);
        let t0 = Instant::now();
        assert!(b.allow("a", t0));
        assert!(b.allow("b", t0));
        // Full of fresh entries: a third stream waits.
        assert!(!b.allow("c", t0 + Duration::from_millis(50)));
        // Once they are old, they make room.
        assert!(b.allow("c", t0 + Duration::from_millis(100)));
        assert_eq!(b.last.lock().unwrap().len(), 1);
    }
}
