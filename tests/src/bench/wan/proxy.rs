//! The WAN links: a delaying, lossy UDP proxy between region namespaces.
//!
//! The kernel here has no `netem` qdisc, so the links are emulated in this process. For every
//! node N of region B and every other region A, namespace A holds N's relay address on its
//! `lo`, where a proxy socket listens; what a node of A sends to N's advertised relay address
//! therefore enters the proxy, which delays it by the A–B one-way time, drops the link's loss
//! share, and forwards it from a socket inside namespace B to N. Replies take the same way
//! back. A node's relay traffic to its own region goes straight to the node. Every datagram
//! crossing a link is counted, per direction.
//!
//! Delay is a constant one-way time per link (half the RTT) applied in FIFO order with tokio's
//! millisecond timer; there is no bandwidth limit or jitter. Loss is independent per datagram.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::netns::bind_udp_in;

/// Datagrams queued in one direction of one proxied flow before the link drops.
const QUEUE: usize = 65_536;

/// Counters of one direction of a link.
#[derive(Debug, Default)]
pub struct DirStats {
    /// UDP payload bytes that entered the link.
    pub bytes: AtomicU64,
    /// Datagrams that entered the link.
    pub datagrams: AtomicU64,
    /// Datagrams the link dropped (loss).
    pub dropped: AtomicU64,
}

/// Totals of one direction at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct DirTotals {
    /// UDP payload bytes.
    pub bytes: u64,
    /// Datagrams.
    pub datagrams: u64,
    /// Dropped datagrams.
    pub dropped: u64,
}

impl DirTotals {
    /// What happened since `earlier`.
    pub fn since(&self, earlier: &DirTotals) -> DirTotals {
        DirTotals {
            bytes: self.bytes - earlier.bytes,
            datagrams: self.datagrams - earlier.datagrams,
            dropped: self.dropped - earlier.dropped,
        }
    }

    /// Bytes on the wire: payload plus 28 bytes of IPv4 + UDP header per datagram.
    pub fn wire_bytes(&self) -> u64 {
        self.bytes + 28 * self.datagrams
    }
}

impl DirStats {
    /// The totals now.
    pub fn totals(&self) -> DirTotals {
        DirTotals {
            bytes: self.bytes.load(Ordering::Relaxed),
            datagrams: self.datagrams.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// One emulated link between two regions.
#[derive(Debug)]
pub struct Link {
    /// Region index of one end.
    pub a: usize,
    /// Region index of the other end.
    pub b: usize,
    /// One-way delay.
    pub one_way: Duration,
    /// Loss probability per datagram, each direction.
    pub loss: f64,
    /// a → b.
    pub ab: DirStats,
    /// b → a.
    pub ba: DirStats,
}

/// A direction of a link as seen by a proxied flow.
#[derive(Clone)]
struct Hop {
    link: Arc<Link>,
    /// Whether this hop goes a → b.
    forward: bool,
}

impl Hop {
    fn stats(&self) -> &DirStats {
        if self.forward {
            &self.link.ab
        } else {
            &self.link.ba
        }
    }

    /// Counts a datagram entering the link; false if the link drops it.
    fn admit(&self, len: usize, rng: &mut Rng) -> bool {
        let st = self.stats();
        st.bytes.fetch_add(len as u64, Ordering::Relaxed);
        st.datagrams.fetch_add(1, Ordering::Relaxed);
        if self.link.loss > 0.0 && rng.next_f64() < self.link.loss {
            st.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// xorshift64*: enough randomness for loss, no dependency.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64);
        Self(t | 1)
    }

    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Sends what arrives on `rx` from `socket` to `dest` once its time has come.
fn delayed_sender(
    tasks: &mut JoinSet<()>,
    socket: Arc<UdpSocket>,
    dest: SocketAddr,
    mut rx: mpsc::Receiver<(Instant, Bytes)>,
) {
    tasks.spawn(async move {
        while let Some((at, data)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            let _ = socket.send_to(&data, dest).await;
        }
    });
}

/// A proxy for one node as seen from one other region.
pub struct NodeProxy {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for NodeProxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl NodeProxy {
    /// Listens on `node_relay` inside namespace `near_ns` and forwards to the node at
    /// `node_relay` inside `far_ns` through `link` (`forward`: near → far is a → b).
    pub async fn start(
        near_ns: &str,
        far_ns: &str,
        node_relay: SocketAddr,
        link: Arc<Link>,
        forward: bool,
    ) -> Result<NodeProxy> {
        let near = near_ns.to_owned();
        let listener =
            tokio::task::spawn_blocking(move || bind_udp_in(&near, node_relay)).await??;
        let listener = Arc::new(UdpSocket::from_std(listener)?);
        let far_ns = far_ns.to_owned();
        let task = tokio::spawn(async move {
            let out_hop = Hop {
                link: Arc::clone(&link),
                forward,
            };
            let back_hop = Hop {
                link,
                forward: !forward,
            };
            let mut flows: HashMap<SocketAddr, mpsc::Sender<(Instant, Bytes)>> = HashMap::new();
            // Dropped (and so aborted) with this task.
            let mut flow_tasks = JoinSet::new();
            let mut rng = Rng::seeded();
            let mut buf = vec![0u8; 65_536];
            loop {
                let Ok((n, from)) = listener.recv_from(&mut buf).await else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                };
                if let Entry::Vacant(slot) = flows.entry(from) {
                    // A new client of this node: its own socket in the far namespace.
                    let far = far_ns.clone();
                    let bind = SocketAddr::from(([127, 0, 0, 1], 0));
                    let Ok(Ok(up)) =
                        tokio::task::spawn_blocking(move || bind_udp_in(&far, bind)).await
                    else {
                        continue;
                    };
                    let Ok(up) = UdpSocket::from_std(up) else {
                        continue;
                    };
                    let up = Arc::new(up);
                    let (tx, rx) = mpsc::channel(QUEUE);
                    delayed_sender(&mut flow_tasks, Arc::clone(&up), node_relay, rx);
                    // Replies: node → proxy (far) → delay → client (near).
                    let (btx, brx) = mpsc::channel(QUEUE);
                    delayed_sender(&mut flow_tasks, Arc::clone(&listener), from, brx);
                    let back = back_hop.clone();
                    flow_tasks.spawn(async move {
                        let mut rng = Rng::seeded();
                        let mut buf = vec![0u8; 65_536];
                        loop {
                            let Ok(n) = up.recv(&mut buf).await else {
                                tokio::time::sleep(Duration::from_millis(1)).await;
                                continue;
                            };
                            if back.admit(n, &mut rng) {
                                let at = Instant::now() + back.link.one_way;
                                let _ = btx.try_send((at, Bytes::copy_from_slice(&buf[..n])));
                            }
                        }
                    });
                    slot.insert(tx);
                }
                if let Some(tx) = flows.get(&from)
                    && out_hop.admit(n, &mut rng)
                {
                    let at = Instant::now() + out_hop.link.one_way;
                    let _ = tx.try_send((at, Bytes::copy_from_slice(&buf[..n])));
                }
            }
        });
        Ok(NodeProxy { tasks: vec![task] })
    }
}
