//! [`super::Kv`] on a real etcd cluster (v3 API through `etcd-client`).
//!
//! Every call is bounded by a timeout: while etcd is unreachable a call would
//! otherwise wait for a ready endpoint forever, and a control plane that hangs
//! is worse than one that answers UNAVAILABLE.
//!
//! One client per member: a call goes to the current member and, when that
//! member cannot answer (down, no leader, unreachable), to the next ones
//! within the same time bound; the member that answers becomes current. (One
//! balanced client over every member kept sending a share of the calls to a
//! dead member: with one member of three killed, probes failed at random, the
//! control plane flapped to UNAVAILABLE and node leases expired.)
//!
//! Lease renewals do not go through these clients: they share a few long-lived
//! LeaseKeepAlive streams on connections of their own (`lease_stream.rs`), so
//! that a node's keep-alive neither opens a stream nor queues behind claims.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, DeleteOptions, GetOptions, TxnOpResponse, WatchOptions};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;

use super::lease_stream::{LeaseStreams, STREAMS as LEASE_STREAMS};
use super::{Compare, KeyValue, KvError, Op, TxnOutcome, WatchBatch, WatchEvent, WatchReceiver};

/// Keys per page of a prefix read (records are a few hundred bytes: about 1 MiB a page).
const RANGE_PAGE: i64 = 4096;

/// Pause before a second round over the members (a leader election under way).
const ROUND_PAUSE: Duration = Duration::from_millis(50);

/// An etcd-backed store.
#[derive(Clone)]
pub struct EtcdKv {
    /// One client per member, in the order the endpoints were given.
    clients: Arc<[Client]>,
    /// The member calls go to first: the last one that answered.
    current: Arc<AtomicUsize>,
    timeout: Duration,
    /// Lease renewals: long-lived LeaseKeepAlive streams on connections of their own
    /// (`None`: a stream opened per renewal through etcd-client).
    leases: Option<Arc<LeaseStreams>>,
    endpoints: Arc<[String]>,
}

impl EtcdKv {
    /// Connects (lazily: etcd need not be up yet) to these endpoints.
    pub async fn connect(endpoints: &[String], timeout: Duration) -> Result<Self, KvError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout);
        let mut clients = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let client = Client::connect([endpoint], Some(options.clone()))
                .await
                .map_err(map_err)?;
            clients.push(client);
        }
        if clients.is_empty() {
            return Err(KvError::Other("no etcd endpoint given".into()));
        }
        Ok(Self {
            clients: clients.into(),
            current: Arc::new(AtomicUsize::new(0)),
            timeout,
            leases: Some(Arc::new(LeaseStreams::start(
                endpoints,
                timeout,
                LEASE_STREAMS,
            )?)),
            endpoints: endpoints.into(),
        })
    }

    /// Renews leases over `streams` long-lived LeaseKeepAlive streams; 0 opens one stream per
    /// renewal through etcd-client instead (the way before those streams, for comparison).
    pub fn with_lease_streams(mut self, streams: usize) -> Result<Self, KvError> {
        self.leases = match streams {
            0 => None,
            n => Some(Arc::new(LeaseStreams::start(
                &self.endpoints,
                self.timeout,
                n,
            )?)),
        };
        Ok(self)
    }

    /// Runs `call` on the current member, and on the next ones while they
    /// answer UNAVAILABLE or not within half the timeout (at most two rounds),
    /// all within the timeout. Retrying is safe: every write is a guarded
    /// transaction, a put of the same value, or a lease operation.
    async fn bounded<T, F, Fut>(&self, call: F) -> Result<T, KvError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + self.timeout;
        let n = self.clients.len();
        let mut at = self.current.load(Ordering::Relaxed) % n;
        let mut last = None;
        for attempt in 0..2 * n {
            if attempt == n {
                tokio::time::sleep(
                    ROUND_PAUSE.min(deadline.saturating_duration_since(Instant::now())),
                )
                .await;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // A call lost in a leader change is never answered: leave time
            // for another member.
            let bound = left.min(self.timeout / 2);
            match tokio::time::timeout(bound, call(self.clients[at].clone())).await {
                Ok(Ok(v)) => {
                    self.current.store(at, Ordering::Relaxed);
                    return Ok(v);
                }
                Ok(Err(e)) => match map_err(e) {
                    KvError::Unavailable(why) => {
                        debug!(member = at, %why, "etcd member unavailable; trying the next");
                        last = Some(KvError::Unavailable(why));
                    }
                    other => {
                        self.current.store(at, Ordering::Relaxed);
                        return Err(other);
                    }
                },
                Err(_) => {
                    debug!(
                        member = at,
                        ?bound,
                        "etcd member did not answer; trying the next"
                    );
                    last = Some(KvError::Unavailable(format!(
                        "etcd did not answer within {bound:?}"
                    )));
                }
            }
            at = (at + 1) % n;
            self.current.store(at, Ordering::Relaxed);
        }
        Err(last.unwrap_or_else(|| {
            KvError::Unavailable(format!("etcd did not answer within {:?}", self.timeout))
        }))
    }

    pub(super) async fn grant(&self, ttl: Duration) -> Result<i64, KvError> {
        let secs = ttl.as_secs_f64().ceil().max(1.0) as i64;
        let granted = self
            .bounded(|mut c| async move { c.lease_grant(secs, None).await })
            .await?;
        Ok(granted.id())
    }

    /// Renews a lease over the replica's shared LeaseKeepAlive streams (`lease_stream.rs`).
    pub(super) async fn keep_alive(&self, lease: i64) -> Result<(), KvError> {
        match &self.leases {
            Some(streams) => streams.keep_alive(lease).await,
            None => self.keep_alive_own_stream(lease).await,
        }
    }

    /// One LeaseKeepAlive stream per renewal: etcd-client opens it, sends one renewal, reads
    /// one answer.
    async fn keep_alive_own_stream(&self, lease: i64) -> Result<(), KvError> {
        let renewed = self
            .bounded(|mut c| async move { c.lease_keep_alive(lease).await })
            .await;
        match renewed {
            Ok(_) => Ok(()),
            // etcd-client reports a renewal answered with TTL 0 (unknown
            // lease) as `LeaseKeepAliveError`, mapped to `Other`.
            Err(KvError::Other(_)) | Err(KvError::LeaseNotFound(_)) => {
                Err(KvError::LeaseNotFound(lease))
            }
            Err(e) => Err(e),
        }
    }

    pub(super) async fn revoke(&self, lease: i64) -> Result<i64, KvError> {
        let revoked = self
            .bounded(|mut c| async move { c.lease_revoke(lease).await })
            .await;
        match revoked {
            Ok(r) => Ok(r.header().map(|h| h.revision()).unwrap_or(0)),
            Err(KvError::LeaseNotFound(_)) => Ok(0),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError> {
        let resp = self
            .bounded(|mut c| async move { c.get(key, None).await })
            .await?;
        Ok(resp.kvs().first().map(convert))
    }

    /// Every key under `prefix`, read in pages at one revision: a single answer for the whole
    /// tree would pass gRPC's 4 MiB message limit at about 10,000 streams, and a replica
    /// could then never load its cache.
    pub(super) async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64), KvError> {
        let end = prefix_end(prefix.as_bytes());
        let mut out = Vec::new();
        let mut from = prefix.as_bytes().to_vec();
        let mut revision = 0;
        loop {
            let mut opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(RANGE_PAGE);
            if revision > 0 {
                opts = opts.with_revision(revision);
            }
            let resp = self
                .bounded(|mut c| {
                    let (key, opts) = (from.clone(), opts.clone());
                    async move { c.get(key, Some(opts)).await }
                })
                .await?;
            if revision == 0 {
                revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            let kvs = resp.kvs();
            out.extend(kvs.iter().map(convert));
            match kvs.last() {
                Some(last) if resp.more() => {
                    // The next page starts just after the last key of this one.
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok((out, revision)),
            }
        }
    }

    pub(super) async fn probe(&self) -> Result<(), KvError> {
        // A serializable-free linearizable read of one missing key: it needs
        // a quorum, so it fails when the cluster cannot serve writes either.
        self.bounded(|mut c| async move { c.get("\0strata-probe", None).await })
            .await
            .map(|_| ())
    }

    pub(super) async fn txn(
        &self,
        compares: Vec<Compare>,
        then: Vec<Op>,
        otherwise: Vec<Op>,
    ) -> Result<TxnOutcome, KvError> {
        use etcd_client::{Compare as C, CompareOp, PutOptions, Txn, TxnOp};
        let cmps: Vec<C> = compares
            .into_iter()
            .map(|c| match c {
                Compare::CreateRevision(k, r) => C::create_revision(k, CompareOp::Equal, r),
                Compare::ModRevision(k, r) => C::mod_revision(k, CompareOp::Equal, r),
            })
            .collect();
        let ops = |ops: Vec<Op>| -> Vec<TxnOp> {
            ops.into_iter()
                .map(|op| match op {
                    Op::Put { key, value, lease } => {
                        let opts = (lease != 0).then(|| PutOptions::new().with_lease(lease));
                        TxnOp::put(key, value, opts)
                    }
                    Op::Delete(k) => TxnOp::delete(k, None),
                    Op::DeletePrefix(p) => {
                        TxnOp::delete(p, Some(DeleteOptions::new().with_prefix()))
                    }
                    Op::Get(k) => TxnOp::get(k, None),
                })
                .collect()
        };
        let txn = Txn::new()
            .when(cmps)
            .and_then(ops(then))
            .or_else(ops(otherwise));
        let resp = self
            .bounded(|mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        let gets = resp
            .op_responses()
            .into_iter()
            .filter_map(|r| match r {
                TxnOpResponse::Get(g) => Some(g.kvs().first().map(convert)),
                _ => None,
            })
            .collect();
        Ok(TxnOutcome {
            succeeded: resp.succeeded(),
            revision: resp.header().map(|h| h.revision()).unwrap_or(0),
            gets,
        })
    }

    pub(super) async fn watch(&self, prefix: &str, from: i64) -> Result<WatchReceiver, KvError> {
        let opts = WatchOptions::new().with_prefix().with_start_revision(from);
        let mut stream = self
            .bounded(|mut c| {
                let opts = opts.clone();
                async move { c.watch(prefix, Some(opts)).await }
            })
            .await?;
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            loop {
                let msg = match stream.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => {
                        let _ = tx
                            .send(Err(KvError::Unavailable("watch closed".into())))
                            .await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(map_err(e))).await;
                        return;
                    }
                };
                if msg.compact_revision() > 0 {
                    let _ = tx.send(Err(KvError::Compacted)).await;
                    return;
                }
                if msg.canceled() {
                    let _ = tx
                        .send(Err(KvError::Unavailable("watch canceled".into())))
                        .await;
                    return;
                }
                let revision = msg.header().map(|h| h.revision()).unwrap_or(0);
                let events = msg
                    .events()
                    .iter()
                    .filter_map(|ev| {
                        let kv = ev.kv()?;
                        Some(match ev.event_type() {
                            etcd_client::EventType::Put => WatchEvent::Put(convert(kv)),
                            etcd_client::EventType::Delete => WatchEvent::Delete {
                                key: String::from_utf8_lossy(kv.key()).into_owned(),
                                mod_revision: kv.mod_revision(),
                            },
                        })
                    })
                    .collect::<Vec<_>>();
                if events.is_empty() {
                    continue;
                }
                if tx.send(Ok(WatchBatch { revision, events })).await.is_err() {
                    debug!("watch receiver gone");
                    return;
                }
            }
        });
        Ok(rx)
    }
}

/// The end of the key range of every key starting with `prefix` (etcd's range end).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff (or empty): to the end of the keyspace.
    vec![0]
}

fn convert(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: kv.lease(),
    }
}

fn map_err(e: etcd_client::Error) -> KvError {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(s) => match s.code() {
            tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::Unknown => KvError::Unavailable(s.message().to_owned()),
            // etcd answers NOT_FOUND only for leases ("requested lease not found").
            tonic::Code::NotFound => KvError::LeaseNotFound(0),
            _ => KvError::Other(format!("{}: {}", s.code(), s.message())),
        },
        E::TransportError(t) => KvError::Unavailable(t.to_string()),
        E::IoError(io) => KvError::Unavailable(io.to_string()),
        E::LeaseKeepAliveError(m) => KvError::Other(m),
        other => KvError::Other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_next_key_after_every_key_with_the_prefix() {
        assert_eq!(prefix_end(b"/strata/"), b"/strata0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }
}
