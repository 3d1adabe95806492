//! Tokens and signing keys never reach the logs, whatever a client sends. Its own test binary
//! (its own process) with one test, because it installs the process-wide tracing subscriber:
//! a thread-scoped one saw events or not depending on which other tests of the process had
//! already cached their callsites' interest.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod security_common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use security_common::*;
use strata_node::auth::{Action, unix_now};
use strata_tests::cluster::Cluster;
use strata_tests::rtmp::RtmpClient;

/// A `MakeWriter` collecting everything logged.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_keys_never_appear_in_logs() {
    // The process-wide subscriber, installed before anything logs: every thread and task of
    // the cluster logs into it at TRACE, and no callsite's interest was cached without it.
    // This binary has this one test, so nothing else shares the subscriber.
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let cluster = Cluster::start(Duration::from_secs(3)).await.unwrap();
    let node = cluster
        .node_with(secured(&cluster, "log", "r"))
        .await
        .unwrap();
    let good = valid("cam", Action::Publish);
    let expired = token("new", "cam", Action::Publish, unix_now() - 600);
    let other = valid("dog", Action::Publish);
    for t in [&good, &expired, &other] {
        let _ = post(&format!("{}/whip/cam", node.http), Some(t), NOT_SDP).await;
        let _ = post(&format!("{}/whep/cam?token={t}", node.http), None, NOT_SDP).await;
        // RTMP: the token in the stream key's query, and as the stream key itself.
        let rtmp = node.rtmp.clone().unwrap();
        let _ = RtmpClient::publish(&rtmp, "live", &format!("cam?token={t}")).await;
        let _ = RtmpClient::publish(&rtmp, "live", t).await;
    }
    node.stop().await.unwrap();

    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    assert!(
        logs.contains("request refused"),
        "the capture saw nothing: {}",
        &logs[..logs.len().min(2000)]
    );
    assert!(
        logs.contains("RTMP publish accepted") && logs.contains("NetStream.Publish.Unauthorized"),
        "the RTMP publishes did not run"
    );
    for (what, secret) in [
        ("valid token", good.as_str()),
        ("expired token", expired.as_str()),
        ("token for another stream", other.as_str()),
        ("key", b64(SECRET_1).as_str()),
        ("key", b64(SECRET_2).as_str()),
    ] {
        // The signature part alone is enough to leak a token.
        let tail = secret.rsplit('.').next().unwrap_or(secret);
        assert!(!logs.contains(tail), "{what} appears in the logs");
    }
}
