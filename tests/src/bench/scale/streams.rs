//! The streams of a run and the operations on them: publish, pull (resolve and watch), drop a
//! pull (release), end (unpublish). Each operation is one spawned task that reports back to
//! the driver, which alone owns the bookkeeping.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use strata_proto::v1;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::sim::{Counters, SimNode};

/// How long a topology watch waits for "ended" after an unpublish before it gives up.
const ENDED_WITHIN: Duration = Duration::from_secs(15);
/// How often a waiting watch looks at whether it should give up.
const SLICE: Duration = Duration::from_millis(500);
/// How long a simulated node keeps retrying a refused claim (as `strata-node`'s
/// `control/pushback.rs` does).
const CLAIM_BUDGET: Duration = Duration::from_secs(6);

/// One node pulling a stream.
pub struct Pull {
    /// Index of the pulling node.
    pub node: usize,
    /// Players it serves of this stream.
    pub players: u32,
    watch: Option<JoinHandle<()>>,
}

impl Pull {
    /// Lets the watch run on by itself (it ends once it has seen the stream end).
    fn detach(mut self) {
        self.watch.take();
    }
}

impl Drop for Pull {
    fn drop(&mut self) {
        if let Some(w) = self.watch.take() {
            w.abort();
        }
    }
}

/// A topology watch's task, aborted when dropped unless detached.
#[derive(Default)]
pub struct WatchTask(Option<JoinHandle<()>>);

impl WatchTask {
    /// Lets the watch run on by itself (it ends once it has seen the stream end).
    fn detach(&mut self) {
        self.0.take();
    }
}

impl Drop for WatchTask {
    fn drop(&mut self) {
        if let Some(w) = self.0.take() {
            w.abort();
        }
    }
}

/// A live stream.
pub struct Live {
    /// Stream name.
    pub name: String,
    /// Index of the publishing node.
    pub origin: usize,
    /// Main-origin epoch as Publish returned it.
    pub epoch: i64,
    /// When it ended (set just before the unpublish), for the watch delay.
    pub ended: Arc<OnceLock<Instant>>,
    /// Its pulls.
    pub pulls: Vec<Pull>,
    /// The publishing node's own topology watch (a WHIP primary keeps one open, to learn
    /// when its standby took the stream over), with `--publisher-watches`.
    pub publisher_watch: WatchTask,
}

/// What an operation reports back.
pub enum Done {
    /// Published.
    Published(Live),
    /// Pulled (resolved and watching).
    Pulled {
        /// Stream name.
        stream: String,
        /// The new pull.
        pull: Pull,
    },
    /// Failed; nothing to record.
    Failed,
}

/// Runs operations with a bound on how many are in flight.
#[derive(Clone)]
pub struct Ops {
    /// The nodes, by index.
    pub nodes: Arc<Vec<Arc<SimNode>>>,
    /// Shared counters.
    pub counters: Arc<Counters>,
    /// Bound on operations in flight.
    pub permits: Arc<Semaphore>,
    /// Where results go.
    pub done: mpsc::UnboundedSender<Done>,
    /// Whether a publishing node keeps a topology watch of its stream open.
    pub publisher_watches: bool,
}

impl Ops {
    async fn permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.permits.clone().acquire_owned().await.ok()
    }

    /// Publishes `name` from node `origin`.
    pub fn publish(&self, name: String, origin: usize) {
        let ops = self.clone();
        tokio::spawn(async move {
            let _permit = ops.permit().await;
            let node = ops.nodes[origin].clone();
            let req = v1::PublishRequest {
                stream: name.clone(),
                node_id: node.id.clone(),
                unreachable: None,
            };
            let t0 = Instant::now();
            let answer = claim(&ops.counters, || {
                let (mut routing, req) = (node.routing(), req.clone());
                async move { routing.publish(req).await }
            });
            let done = match answer.await {
                Ok(r) => {
                    ops.counters.claim.record(t0.elapsed());
                    let epoch = r.into_inner().origin.map(|o| o.epoch).unwrap_or(0);
                    node.publishers.fetch_add(1, Relaxed);
                    node.streams.fetch_add(1, Relaxed);
                    let ended = Arc::new(OnceLock::new());
                    let publisher_watch = WatchTask(ops.publisher_watches.then(|| {
                        let c = ops.counters.clone();
                        watch(node.clone(), name.clone(), ended.clone(), c, false)
                    }));
                    Done::Published(Live {
                        name,
                        origin,
                        epoch,
                        ended,
                        pulls: Vec::new(),
                        publisher_watch,
                    })
                }
                Err(e) => {
                    ops.counters.error("publish", &e);
                    Done::Failed
                }
            };
            let _ = ops.done.send(done);
        });
    }

    /// Node `node` starts pulling `stream` for `players` players: resolve, then watch.
    pub fn pull(&self, stream: String, ended: Arc<OnceLock<Instant>>, node: usize, players: u32) {
        let ops = self.clone();
        tokio::spawn(async move {
            let _permit = ops.permit().await;
            let n = ops.nodes[node].clone();
            if resolve(&n, &stream, &ops.counters, false).await.is_err() {
                let _ = ops.done.send(Done::Failed);
                return;
            }
            let watch = watch(n.clone(), stream.clone(), ended, ops.counters.clone(), true);
            n.players.fetch_add(players, Relaxed);
            n.streams.fetch_add(1, Relaxed);
            let pull = Pull {
                node,
                players,
                watch: Some(watch),
            };
            let _ = ops.done.send(Done::Pulled { stream, pull });
        });
    }

    /// Drops a pull: the node releases what it claimed for the stream.
    pub fn release(&self, stream: String, pull: Pull) {
        let ops = self.clone();
        let n = ops.nodes[pull.node].clone();
        n.players.fetch_sub(pull.players, Relaxed);
        n.streams.fetch_sub(1, Relaxed);
        drop(pull);
        tokio::spawn(async move {
            let _permit = ops.permit().await;
            let req = v1::ReleaseRequest {
                stream,
                node_id: n.id.clone(),
            };
            if let Err(e) = n.routing().release(req).await {
                ops.counters.error("release", &e);
            }
        });
    }

    /// Ends a stream: its origin unpublishes; the pulls' watches record when they learn it.
    pub fn end(&self, mut live: Live) {
        let ops = self.clone();
        tokio::spawn(async move {
            let _permit = ops.permit().await;
            let origin = ops.nodes[live.origin].clone();
            let _ = live.ended.set(Instant::now());
            let req = v1::UnpublishRequest {
                stream: live.name.clone(),
                node_id: origin.id.clone(),
                epoch: live.epoch,
            };
            if let Err(e) = origin.routing().unpublish(req).await {
                ops.counters.error("unpublish", &e);
            }
            origin.publishers.fetch_sub(1, Relaxed);
            origin.streams.fetch_sub(1, Relaxed);
            live.publisher_watch.detach();
            for pull in std::mem::take(&mut live.pulls) {
                let n = &ops.nodes[pull.node];
                n.players.fetch_sub(pull.players, Relaxed);
                n.streams.fetch_sub(1, Relaxed);
                pull.detach();
            }
        });
    }
}

/// One resolve of `stream` by `node`, timed as settled (a repeat) or new.
pub async fn resolve(
    node: &SimNode,
    stream: &str,
    counters: &Counters,
    settled: bool,
) -> Result<v1::ResolveResponse, tonic::Status> {
    let req = v1::ResolveRequest {
        stream: stream.to_owned(),
        region: node.region.clone(),
        node_id: node.id.clone(),
        unreachable: None,
    };
    let t0 = Instant::now();
    let answer = claim(counters, || {
        let (mut routing, req) = (node.routing(), req.clone());
        async move { routing.resolve(req).await }
    });
    match answer.await {
        Ok(r) => {
            let hist = if settled {
                &counters.resolve_settled
            } else {
                &counters.resolve_new
            };
            hist.record(t0.elapsed());
            Ok(r.into_inner())
        }
        Err(e) => {
            counters.error("resolve", &e);
            Err(e)
        }
    }
}

/// One claim (a publish, or a resolve that may claim) retried after RESOURCE_EXHAUSTED as a
/// node does (the hint, then the common backoff), for at most [`CLAIM_BUDGET`].
async fn claim<T, F, Fut>(counters: &Counters, attempt: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let r = crate::pushback::retrying(CLAIM_BUDGET, attempt).await;
    counters.refused.fetch_add(u64::from(r.refusals), Relaxed);
    r.result
}

/// Counts a watch open while it lives.
struct OpenWatch(Arc<Counters>);

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.watches_open.fetch_sub(1, Relaxed);
    }
}

/// A topology watch (a puller's, or a publisher's): counts what it receives and, once the
/// stream has been ended through [`Live::ended`], for a puller (`delay`) how long the news
/// took.
fn watch(
    node: Arc<SimNode>,
    stream: String,
    ended: Arc<OnceLock<Instant>>,
    counters: Arc<Counters>,
    delay: bool,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        counters.watches_open.fetch_add(1, Relaxed);
        let _open = OpenWatch(counters.clone());
        let req = v1::WatchStreamRequest {
            stream,
            region: node.region.clone(),
        };
        let mut updates = match node.routing().watch_stream(req).await {
            Ok(r) => r.into_inner(),
            Err(e) => {
                counters.error("watch", &e);
                return;
            }
        };
        loop {
            // Polled in slices (cancel-safe) so that a watch left running after its stream
            // ended gives up when the end does not come.
            let next = match tokio::time::timeout(SLICE, updates.message()).await {
                Ok(m) => m,
                Err(_) => match ended.get() {
                    Some(at) if at.elapsed() > ENDED_WITHIN => {
                        counters.error("watch", &"stream end not seen within 15 s");
                        return;
                    }
                    _ => continue,
                },
            };
            match next {
                Ok(Some(t)) => {
                    counters.watch_events.fetch_add(1, Relaxed);
                    if !t.live
                        && let Some(at) = ended.get()
                    {
                        if delay {
                            counters.watch_delay.record(at.elapsed());
                        }
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    counters.error("watch", &e);
                    return;
                }
            }
        }
    })
}
