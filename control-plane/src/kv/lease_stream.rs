//! Lease renewals over a few long-lived etcd LeaseKeepAlive streams, on a connection of their
//! own: the shell around [`Renewals`].
//!
//! etcd-client opens a new LeaseKeepAlive stream for every `lease_keep_alive` call and its
//! stream handle renews only the lease it was opened with, so renewals of many leases cannot
//! share one through it. This module speaks the one RPC itself (two small messages, below)
//! over its own tonic channel per member, which also keeps renewals out of the queue of the
//! connection that carries claims and reads.
//!
//! etcd serves one stream's requests one after another, so the leases are spread over a few
//! streams ([`STREAMS`] by default) by id, each driven by one task; a lease always uses the
//! same stream, so its renewals coalesce there.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use strata_common::backoff::Backoff;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, warn};

use super::KvError;
use super::renewals::{Renewals, Wake};

/// LeaseKeepAlive streams per replica by default.
pub const STREAMS: usize = 4;
/// Renewals unanswered on one stream at most.
const WINDOW: usize = 128;
/// A keep-alive joins a renewal of its lease written at most this long ago.
const JOIN_AGE: Duration = Duration::from_millis(250);
/// Renewal requests waiting for a stream's task at most (callers wait beyond it).
const QUEUE: usize = 4096;
const LEASE_KEEP_ALIVE: &str = "/etcdserverpb.Lease/LeaseKeepAlive";

/// etcd's `LeaseKeepAliveRequest` (etcdserverpb, rpc.proto).
#[derive(Clone, PartialEq, prost::Message)]
struct KeepAliveRequest {
    #[prost(int64, tag = "1")]
    id: i64,
}

/// etcd's `LeaseKeepAliveResponse`; the response header (tag 1) is not needed.
#[derive(Clone, PartialEq, prost::Message)]
struct KeepAliveResponse {
    #[prost(int64, tag = "2")]
    id: i64,
    #[prost(int64, tag = "3")]
    ttl: i64,
}

type Waiter = oneshot::Sender<Result<(), KvError>>;

struct Request {
    lease: i64,
    reply: Waiter,
}

/// An open stream: where renewals are written, and their answers.
struct Link {
    tx: mpsc::Sender<KeepAliveRequest>,
    answers: tonic::Streaming<KeepAliveResponse>,
}

type Opening = Pin<Box<dyn Future<Output = Result<Link, KvError>> + Send>>;

/// Renews leases over a few long-lived streams; shared behind an `Arc`. The stream tasks end
/// when this is dropped.
pub struct LeaseStreams {
    shards: Vec<mpsc::Sender<Request>>,
    timeout: Duration,
}

impl LeaseStreams {
    /// Starts the stream tasks for these etcd endpoints (connected lazily, on the first
    /// renewal). A renewal is answered or failed within `timeout`.
    pub fn start(endpoints: &[String], timeout: Duration, streams: usize) -> Result<Self, KvError> {
        let channels = endpoints
            .iter()
            .map(|e| channel(e, timeout))
            .collect::<Result<Vec<_>, _>>()?;
        if channels.is_empty() {
            return Err(KvError::Other("no etcd endpoint given".into()));
        }
        let channels: Arc<[Channel]> = channels.into();
        let shards = (0..streams.max(1))
            .map(|shard| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(run(shard, channels.clone(), rx, timeout));
                tx
            })
            .collect();
        Ok(Self { shards, timeout })
    }

    /// Renews `lease`: `LeaseNotFound` when etcd does not know it, `Unavailable` when etcd
    /// could not be reached or did not answer within the timeout.
    pub async fn keep_alive(&self, lease: i64) -> Result<(), KvError> {
        let shard = &self.shards[shard_of(lease, self.shards.len())];
        let (reply, answer) = oneshot::channel();
        let renewal = async {
            shard
                .send(Request { lease, reply })
                .await
                .map_err(|_| KvError::Unavailable("lease stream stopped".into()))?;
            answer
                .await
                .map_err(|_| KvError::Unavailable("lease stream stopped".into()))?
        };
        // The task answers within its timeout; this bounds the wait for room in its queue.
        tokio::time::timeout(self.timeout, renewal)
            .await
            .unwrap_or_else(|_| {
                Err(KvError::Unavailable(format!(
                    "lease renewal not answered within {:?}",
                    self.timeout
                )))
            })
    }
}

/// Which stream renews `lease` (etcd's lease ids count up in their low bits).
fn shard_of(lease: i64, shards: usize) -> usize {
    let mixed = (lease as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
    (mixed % shards.max(1) as u64) as usize
}

fn channel(endpoint: &str, timeout: Duration) -> Result<Channel, KvError> {
    let url = if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    };
    let endpoint = Endpoint::from_shared(url)
        .map_err(|e| KvError::Other(format!("etcd endpoint {endpoint:?}: {e}")))?
        .connect_timeout(timeout)
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(timeout)
        .keep_alive_while_idle(false);
    Ok(endpoint.connect_lazy())
}

/// Opens a stream on `channel` with the renewal of `first` written to it; etcd answers the
/// stream's headers with its first answer, which stays in the stream for the loop to read.
async fn open(channel: Channel, first: i64, timeout: Duration) -> Result<Link, KvError> {
    let (tx, rx) = mpsc::channel(WINDOW + 1);
    tx.try_send(KeepAliveRequest { id: first })
        .map_err(|_| KvError::Other("lease stream queue full at open".into()))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    let call = async {
        grpc.ready()
            .await
            .map_err(|e| KvError::Unavailable(e.to_string()))?;
        let codec = tonic_prost::ProstCodec::<KeepAliveRequest, KeepAliveResponse>::default();
        let path = PathAndQuery::from_static(LEASE_KEEP_ALIVE);
        grpc.streaming(tonic::Request::new(ReceiverStream::new(rx)), path, codec)
            .await
            .map_err(status_error)
    };
    let answers = tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| KvError::Unavailable(format!("no LeaseKeepAlive stream within {timeout:?}")))??
        .into_inner();
    Ok(Link { tx, answers })
}

fn status_error(s: tonic::Status) -> KvError {
    KvError::Unavailable(format!("{}: {}", s.code(), s.message()))
}

fn deliver(wake: Wake<Waiter>) {
    for (waiter, result) in wake {
        // The caller may have given up (its request was cancelled): nothing to do.
        let _ = waiter.send(result);
    }
}

async fn next_answer(link: &mut Option<Link>) -> Result<Option<KeepAliveResponse>, tonic::Status> {
    match link {
        Some(l) => l.answers.message().await,
        None => std::future::pending().await,
    }
}

async fn opened(opening: &mut Option<Opening>) -> Result<Link, KvError> {
    match opening {
        Some(o) => o.await,
        None => std::future::pending().await,
    }
}

/// One stream's task: takes renewal requests, keeps a stream open while there are renewals
/// to write, and moves to the next member when one cannot open a stream.
async fn run(
    shard: usize,
    channels: Arc<[Channel]>,
    mut requests: mpsc::Receiver<Request>,
    timeout: Duration,
) {
    let mut s = Shard {
        shard,
        channels,
        timeout,
        core: Renewals::new(timeout, WINDOW, JOIN_AGE),
        backoff: Backoff::new(Duration::from_millis(50), Duration::from_secs(1)),
        member: 0,
        failed_members: 0,
        retry_at: Instant::now(),
        link: None,
        opening: None,
    };
    loop {
        let sleep = tokio::time::sleep_until(s.step(Instant::now()));
        tokio::select! {
            request = requests.recv() => match request {
                Some(r) => s.core.request(Instant::now(), r.lease, r.reply),
                None => return,
            },
            answer = next_answer(&mut s.link) => s.answer(answer),
            result = opened(&mut s.opening) => s.opened(result),
            _ = sleep => s.tick(Instant::now()),
        }
    }
}

/// What one stream's task holds: the renewals, and the stream open or opening on one
/// member.
struct Shard {
    shard: usize,
    channels: Arc<[Channel]>,
    timeout: Duration,
    core: Renewals<Waiter>,
    backoff: Backoff,
    /// The member streams are opened on.
    member: usize,
    /// Members that failed to open a stream in a row.
    failed_members: usize,
    /// No stream is opened before this.
    retry_at: Instant,
    link: Option<Link>,
    opening: Option<Opening>,
}

impl Shard {
    /// Writes the renewals due on the open stream, starts opening one when renewals want
    /// it; returns when to wake next.
    fn step(&mut self, now: Instant) -> Instant {
        if let Some(l) = &self.link {
            while let Some(lease) = self.core.poll_send(now) {
                // The window is smaller than the channel: this never fails for room.
                let _ = l.tx.try_send(KeepAliveRequest { id: lease });
            }
        }
        if self.opening.is_none()
            && self.core.wants_stream()
            && self.retry_at <= now
            && let Some(first) = self.core.open(now)
        {
            let channel = self.channels[self.member].clone();
            self.opening = Some(Box::pin(open(channel, first, self.timeout)));
        }
        let mut wake_at = self.core.next_deadline();
        if self.opening.is_none() && self.core.wants_stream() {
            wake_at = Some(wake_at.map_or(self.retry_at, |w| w.min(self.retry_at)));
        }
        wake_at.unwrap_or(now + self.timeout)
    }

    /// An answer on the open stream, or its end.
    fn answer(&mut self, answer: Result<Option<KeepAliveResponse>, tonic::Status>) {
        let (shard, member) = (self.shard, self.member);
        match answer {
            Ok(Some(a)) => deliver(self.core.answered(a.id, a.ttl)),
            ended => {
                let why = ended.err().map(|s| s.to_string()).unwrap_or_default();
                debug!(shard, member, %why, "lease keep-alive stream ended; reopening");
                self.link = None;
                self.core.disconnected();
                self.retry_at = Instant::now() + self.backoff.next_delay();
            }
        }
    }

    /// A stream opened, or the member could not open one.
    fn opened(&mut self, result: Result<Link, KvError>) {
        let (shard, member) = (self.shard, self.member);
        self.opening = None;
        match result {
            Ok(l) => {
                self.core.opened();
                self.link = Some(l);
                self.backoff.reset();
                self.failed_members = 0;
            }
            Err(e) => {
                self.core.disconnected();
                debug!(shard, member, error = %e, "no lease keep-alive stream; trying the next member");
                self.member = (self.member + 1) % self.channels.len();
                self.failed_members += 1;
                if self.failed_members >= self.channels.len() {
                    self.failed_members = 0;
                    warn!(shard, error = %e, "no etcd member opens a lease keep-alive stream");
                    deliver(self.core.fail_all(&e.to_string()));
                    self.retry_at = Instant::now() + self.backoff.next_delay();
                }
            }
        }
    }

    /// The wake-up: expires what waited too long, and leaves a stalled stream.
    fn tick(&mut self, now: Instant) {
        deliver(self.core.expire(now));
        if self.link.is_some() && self.core.stalled(now) {
            let (shard, member) = (self.shard, self.member);
            warn!(
                shard,
                member, "lease keep-alive stream stalled; reopening on the next member"
            );
            self.link = None;
            self.core.disconnected();
            self.member = (self.member + 1) % self.channels.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shard_of;

    #[test]
    fn consecutive_lease_ids_spread_over_every_stream() {
        let base = 0x694d_8c2f_5a10_0000_i64;
        let mut seen = [0usize; 4];
        for lease in base..base + 400 {
            seen[shard_of(lease, 4)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }
}
