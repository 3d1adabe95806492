//! [`super::Kv`] on a real etcd cluster (v3 API through `etcd-client`).
//!
//! Every call is bounded by a timeout: while etcd is unreachable the balanced
//! channel would otherwise wait for a ready endpoint forever, and a control
//! plane that hangs is worse than one that answers UNAVAILABLE.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions, DeleteOptions, GetOptions, TxnOpResponse, WatchOptions};
use tokio::sync::mpsc;
use tracing::debug;

use super::{Compare, KeyValue, KvError, Op, TxnOutcome, WatchBatch, WatchEvent, WatchReceiver};

/// An etcd-backed store.
#[derive(Clone)]
pub struct EtcdKv {
    client: Client,
    timeout: Duration,
}

impl EtcdKv {
    /// Connects (lazily: etcd need not be up yet) to these endpoints.
    pub async fn connect(endpoints: &[String], timeout: Duration) -> Result<Self, KvError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout);
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(map_err)?;
        Ok(Self { client, timeout })
    }

    async fn bounded<T>(
        &self,
        fut: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, KvError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r.map_err(map_err),
            Err(_) => Err(KvError::Unavailable(format!(
                "etcd did not answer within {:?}",
                self.timeout
            ))),
        }
    }

    pub(super) async fn grant(&self, ttl: Duration) -> Result<i64, KvError> {
        let secs = ttl.as_secs_f64().ceil().max(1.0) as i64;
        let mut c = self.client.clone();
        Ok(self.bounded(c.lease_grant(secs, None)).await?.id())
    }

    pub(super) async fn keep_alive(&self, lease: i64) -> Result<(), KvError> {
        let mut c = self.client.clone();
        // Opening the keep-alive stream sends one renewal and checks its answer.
        match self.bounded(c.lease_keep_alive(lease)).await {
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
        let mut c = self.client.clone();
        match self.bounded(c.lease_revoke(lease)).await {
            Ok(r) => Ok(r.header().map(|h| h.revision()).unwrap_or(0)),
            Err(KvError::LeaseNotFound(_)) => Ok(0),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError> {
        let mut c = self.client.clone();
        let resp = self.bounded(c.get(key, None)).await?;
        Ok(resp.kvs().first().map(convert))
    }

    pub(super) async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64), KvError> {
        let mut c = self.client.clone();
        let resp = self
            .bounded(c.get(prefix, Some(GetOptions::new().with_prefix())))
            .await?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        Ok((resp.kvs().iter().map(convert).collect(), rev))
    }

    pub(super) async fn probe(&self) -> Result<(), KvError> {
        // A serializable-free linearizable read of one missing key: it needs
        // a quorum, so it fails when the cluster cannot serve writes either.
        let mut c = self.client.clone();
        self.bounded(c.get("\0strata-probe", None))
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
        let mut c = self.client.clone();
        let resp = self.bounded(c.txn(txn)).await?;
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
        let mut c = self.client.clone();
        let opts = WatchOptions::new().with_prefix().with_start_revision(from);
        let mut stream = self.bounded(c.watch(prefix, Some(opts))).await?;
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
