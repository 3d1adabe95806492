//! The chaos test's redundant streams: a primary and a backup WHIP publisher (`?role=backup`)
//! on two nodes of different regions, both of which the chaos may kill, one at a time: a node
//! is spared while it holds the stream's only publisher left, or while the other publisher's
//! standby is too new to have seen the live stream. A restarted node publishes again as the
//! backup (the stream is live on the other node by then), so the stream keeps two publishers.
//!
//! After every step the stream must be live from exactly one of them: its main origin on one
//! publisher's node, alive, and the standby (if any) on the other, never the same node.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use strata_proto::v1;
use strata_tests::media::{PreparedPublisher, TestPublisher, vp8_clip};
use strata_tests::procs::ProcCluster;
use tokio::time::{Instant, sleep};

/// A standby seen for less than this may not have seen the live stream yet (its rule waits up
/// to 5 s for the first packet): the main origin's node is spared meanwhile.
const WARM: Duration = Duration::from_secs(2);
/// How long a restarted node retries its backup publish: the standby record of its previous
/// process may still hold (ALREADY_EXISTS, a 409) until that process's lease expires.
const REPUBLISH_WITHIN: Duration = Duration::from_secs(8);

/// One redundant stream.
pub struct Redundant {
    pub stream: String,
    /// The two publishers' nodes (the first starts as the primary).
    pub nodes: [String; 2],
    publishers: BTreeMap<String, TestPublisher>,
    /// The standby's node and when the chaos first saw it there.
    standby_seen: Option<(String, Instant)>,
    /// Switches seen (main origin moved between the two nodes).
    pub switches: u32,
    last_main: Option<String>,
}

impl Redundant {
    /// Publishes `stream` on `primary`, then its backup on `backup`.
    pub async fn start(c: &ProcCluster, stream: &str, primary: &str, backup: &str) -> Self {
        let mut r = Redundant {
            stream: stream.to_owned(),
            nodes: [primary.to_owned(), backup.to_owned()],
            publishers: BTreeMap::new(),
            standby_seen: None,
            switches: 0,
            last_main: Some(primary.to_owned()),
        };
        let url = c.node(primary).unwrap().http_url();
        let p = TestPublisher::start(&url, stream, vp8_clip().unwrap())
            .await
            .unwrap();
        r.publishers.insert(primary.to_owned(), p);
        r.publish_backup(c, backup).await.unwrap();
        r
    }

    /// Publishes as the backup on `node`, retrying a 409 for [`REPUBLISH_WITHIN`].
    async fn publish_backup(&mut self, c: &ProcCluster, node: &str) -> Result<(), String> {
        let url = c.node(node).unwrap().http_url();
        let path = format!("{}?role=backup", self.stream);
        let deadline = Instant::now() + REPUBLISH_WITHIN;
        loop {
            let prepared = PreparedPublisher::new(vp8_clip().unwrap())
                .await
                .map_err(|e| format!("{e:#}"))?;
            match prepared.post(&url, &path).await {
                Ok(Ok(p)) => {
                    self.publishers.insert(node.to_owned(), p);
                    return Ok(());
                }
                Ok(Err(resp)) if resp.status == 409 && Instant::now() < deadline => {
                    sleep(Duration::from_millis(200)).await;
                }
                Ok(Err(resp)) => {
                    return Err(format!(
                        "backup of {} on {node}: {} {}",
                        self.stream,
                        resp.status,
                        resp.text()
                    ));
                }
                Err(e) => return Err(format!("backup of {} on {node}: {e:#}", self.stream)),
            }
        }
    }

    fn other(&self, node: &str) -> Option<&str> {
        match &self.nodes {
            [a, b] if a == node => Some(b),
            [a, b] if b == node => Some(a),
            _ => None,
        }
    }

    /// Follows the stream's tree (the monitor's last answer).
    pub fn observe(&mut self, tree: Option<&v1::StreamTree>, now: Instant) {
        let standby = tree
            .and_then(|t| t.standby.as_ref())
            .map(|s| s.node_id.clone());
        match (&self.standby_seen, standby) {
            (Some((n, _)), Some(s)) if *n == s => {}
            (_, Some(s)) => self.standby_seen = Some((s, now)),
            (_, None) => self.standby_seen = None,
        }
        let main = tree
            .and_then(|t| t.main.as_ref())
            .map(|m| m.node_id.clone());
        if main.is_some() && main != self.last_main {
            if self.last_main.is_some() {
                self.switches += 1;
            }
            self.last_main = main;
        }
    }

    /// Whether the chaos may kill `node` now.
    pub fn killable(&self, node: &str, now: Instant) -> bool {
        let Some(other) = self.other(node) else {
            return true;
        };
        if !self.publishers.contains_key(other) {
            return false;
        }
        match &self.standby_seen {
            // Killing the standby leaves the live stream alone.
            Some((s, _)) if s == node => true,
            Some((s, since)) => s == other && now.duration_since(*since) >= WARM,
            None => false,
        }
    }

    /// `node` was killed: its publisher is gone with it.
    pub async fn on_killed(&mut self, node: &str) {
        if let Some(p) = self.publishers.remove(node) {
            p.vanish().await;
        }
        if self.standby_seen.as_ref().is_some_and(|(s, _)| s == node) {
            self.standby_seen = None;
        }
    }

    /// `node` runs again: it publishes again, as the backup.
    pub async fn on_restarted(&mut self, c: &ProcCluster, node: &str) -> Result<(), String> {
        if self.other(node).is_none() {
            return Ok(());
        }
        self.publish_backup(c, node).await
    }

    /// The stream is live from exactly one of its publishers: the main origin on a publisher's
    /// node that runs, the standby (if any) on the other.
    pub fn check(&self, tree: Option<&v1::StreamTree>, dead: &[String]) -> Result<(), String> {
        let s = &self.stream;
        let tree = tree.ok_or_else(|| format!("{s}: no tree"))?;
        let main = tree
            .main
            .as_ref()
            .map(|m| m.node_id.as_str())
            .ok_or_else(|| format!("{s}: not live"))?;
        if self.other(main).is_none() || dead.iter().any(|d| d == main) {
            return Err(format!(
                "{s}: live from {main}, not a live publisher's node"
            ));
        }
        if !self.publishers.contains_key(main) {
            return Err(format!("{s}: live from {main}, whose publisher is gone"));
        }
        if let Some(st) = &tree.standby {
            if st.node_id == main {
                return Err(format!("{s}: {main} is both main origin and standby"));
            }
            if self.other(&st.node_id).is_none() {
                return Err(format!("{s}: standby on {}", st.node_id));
            }
        }
        Ok(())
    }

    /// Ends the publishers.
    pub async fn stop(self) {
        for (_, p) in self.publishers {
            p.vanish().await;
        }
    }
}
