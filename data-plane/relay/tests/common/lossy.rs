//! A delaying, lossy UDP path in front of a relay server: one socket facing the
//! clients, one socket towards the server per client address. Each direction
//! delays every datagram by the same one-way delay and drops datagrams from a
//! seeded generator, so the n-th datagram of a path is lost or not the same way
//! every run.

#![allow(dead_code, clippy::unwrap_used)] // test harness: failing fast is the point

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Counters of the path.
#[derive(Debug, Default)]
pub struct PathStats {
    pub passed: AtomicU64,
    pub dropped: AtomicU64,
}

/// The running path; dropping it stops it.
pub struct LossyPath {
    /// Where clients send to reach the server.
    pub addr: SocketAddr,
    pub stats: Arc<PathStats>,
    _tasks: JoinSet<()>,
}

/// One direction: datagrams in, the same datagrams out `delay` later, some dropped.
fn delayed_sender(
    tasks: &mut JoinSet<()>,
    out: Arc<UdpSocket>,
    to: SocketAddr,
    delay: Duration,
    loss: f64,
    seed: u64,
    stats: Arc<PathStats>,
) -> mpsc::UnboundedSender<Vec<u8>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let mut rng = StdRng::seed_from_u64(seed);
    let (in_tx, mut in_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let stats2 = stats.clone();
    tasks.spawn(async move {
        while let Some(data) = in_rx.recv().await {
            if rng.random::<f64>() < loss {
                stats2.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let _ = tx.send((Instant::now() + delay, data));
        }
    });
    tasks.spawn(async move {
        while let Some((at, data)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            stats.passed.fetch_add(1, Ordering::Relaxed);
            let _ = out.send_to(&data, to).await;
        }
    });
    in_tx
}

impl LossyPath {
    /// A path to `server` with `one_way` delay and `loss` (0..1) each way.
    pub async fn start(server: SocketAddr, one_way: Duration, loss: f64, seed: u64) -> LossyPath {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = front.local_addr().unwrap();
        let stats = Arc::new(PathStats::default());
        let mut tasks = JoinSet::new();
        let (front2, stats2) = (front.clone(), stats.clone());
        tasks.spawn(async move {
            let mut paths: HashMap<SocketAddr, mpsc::UnboundedSender<Vec<u8>>> = HashMap::new();
            let mut inner = JoinSet::new();
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok((n, client)) = front2.recv_from(&mut buf).await else {
                    return;
                };
                let up = match paths.get(&client) {
                    Some(up) => up.clone(),
                    None => {
                        let k = paths.len() as u64;
                        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                        let up = delayed_sender(
                            &mut inner,
                            back.clone(),
                            server,
                            one_way,
                            loss,
                            seed ^ (k * 2 + 1),
                            stats2.clone(),
                        );
                        let down = delayed_sender(
                            &mut inner,
                            front2.clone(),
                            client,
                            one_way,
                            loss,
                            seed ^ (k * 2 + 2),
                            stats2.clone(),
                        );
                        inner.spawn(async move {
                            let mut buf = vec![0u8; 65536];
                            while let Ok(n) = back.recv(&mut buf).await {
                                let _ = down.send(buf[..n].to_vec());
                            }
                        });
                        paths.insert(client, up.clone());
                        up
                    }
                };
                let _ = up.send(buf[..n].to_vec());
            }
        });
        LossyPath {
            addr,
            stats,
            _tasks: tasks,
        }
    }
}
