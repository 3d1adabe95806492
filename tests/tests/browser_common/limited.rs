//! A Chromium player behind a rate-limited path: the driver's `limited-play` command opens a
//! `/play` page whose WHEP answer it points at a [`strata_tests::shaper::ShapedLink`], and
//! then samples that page and the clean `play` page every 200 ms; the samples are collected
//! here as they arrive.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::Child;
use tokio::task::JoinHandle;

use super::DriverOutput;
use super::timeline::{Sample, compact, longest_interval};

/// What the driver said about its pages since the limited page opened.
#[derive(Default)]
struct Seen {
    samples: Vec<Sample>,
    errors: Vec<String>,
}

/// The limited page, and the samples of both players.
pub struct LimitedPage {
    /// The WHEP session URL (the node's view of this player).
    pub session: String,
    /// The node that answered.
    pub node: String,
    /// The node's RTC address as its answer gave it (before the rewrite).
    pub answer_candidate: String,
    /// When the test read the answer.
    pub answered: Instant,
    seen: Arc<Mutex<Seen>>,
    reader: JoinHandle<()>,
}

impl Drop for LimitedPage {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The IPv4 `ip:port` in a candidate description such as `host udp 127.0.0.1:4000`.
pub fn candidate_address(desc: &str) -> Option<SocketAddr> {
    desc.split_whitespace().last()?.parse().ok()
}

/// Tells a held driver to open `url` as the limited page with its media through `via`, and
/// collects the samples the driver prints from then on.
pub async fn open_limited(
    child: &mut Child,
    mut out: DriverOutput,
    url: &str,
    via: SocketAddr,
) -> LimitedPage {
    let stdin = child.stdin.as_mut().expect("the driver's stdin");
    stdin
        .write_all(format!("limited-play {url} {via}\n").as_bytes())
        .await
        .expect("writing to the driver");
    stdin.flush().await.expect("writing to the driver");
    let info = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = out.next_line().await.expect("reading the driver") {
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                eprintln!("driver stdout: {line}");
                continue;
            };
            if let Some(e) = v.get("error") {
                panic!("the driver could not open the limited page: {e}");
            }
            if let Some(info) = v.get("limited") {
                return info.clone();
            }
        }
        panic!("the driver exited before opening the limited page");
    })
    .await
    .expect("the driver did not open the limited page in time");
    eprintln!("limited page: {info}");
    let answered = Instant::now();
    let text = |k: &str| info[k].as_str().unwrap_or_default().to_owned();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let reader = tokio::spawn(collect(out, Arc::clone(&seen)));
    LimitedPage {
        session: text("session"),
        node: text("node"),
        answer_candidate: text("answerCandidate"),
        answered,
        seen,
        reader,
    }
}

async fn collect(mut out: DriverOutput, seen: Arc<Mutex<Seen>>) {
    while let Ok(Some(line)) = out.next_line().await {
        let v: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(_) => {
                eprintln!("driver stdout: {line}");
                continue;
            }
        };
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = v.get("error") {
            seen.errors.push(e.to_string());
        } else if let Some(s) = v.get("sample") {
            match serde_json::from_value::<Sample>(s.clone()) {
                Ok(mut s) => {
                    s.seen = Some(Instant::now());
                    seen.samples.push(s);
                }
                Err(e) => seen.errors.push(format!("bad sample ({e}): {s}")),
            }
        }
    }
}

impl LimitedPage {
    /// The samples of `page` (`play` or `limited`) so far.
    pub fn samples(&self, page: &str) -> Vec<Sample> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        assert!(seen.errors.is_empty(), "driver errors: {:?}", seen.errors);
        seen.samples
            .iter()
            .filter(|s| s.page == page)
            .cloned()
            .collect()
    }

    /// The latest sample of `page`.
    pub fn last(&self, page: &str) -> Option<Sample> {
        self.samples(page).pop()
    }

    /// Both pages' samples, one line each, for the log.
    pub fn timelines(&self) -> String {
        ["limited", "play"]
            .iter()
            .map(|page| {
                let all = self.samples(page);
                format!(
                    "{page} Chromium timeline (ms since the first sample: \
                     frames/width/keyframes/dropped/packets/freezes(s)/layer; longest sample \
                     interval {} ms): {}",
                    longest_interval(&all).as_millis(),
                    compact(&all)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// When media reached the limited page: the last sample before the first one that
    /// counted a video packet (so a time at or before the first packet), or the answer.
    pub fn media_start(&self) -> Option<Instant> {
        let all = self.samples("limited");
        let first = all.iter().position(|s| s.packets_received > 0)?;
        Some(match first {
            0 => self.answered,
            i => all[i - 1].seen.unwrap_or(self.answered),
        })
    }

    /// Waits until `cond(clean, limited)` holds for the latest samples of both pages taken
    /// after `after`; returns when the sample that satisfied it was read. Panics at
    /// `deadline`.
    pub async fn wait(
        &self,
        after: Instant,
        deadline: Instant,
        what: &str,
        cond: impl Fn(&Sample, &Sample) -> bool,
    ) -> Instant {
        loop {
            let fresh = |p: &str| self.last(p).filter(|s| s.seen.is_some_and(|t| t >= after));
            if let (Some(clean), Some(limited)) = (fresh("play"), fresh("limited"))
                && cond(&clean, &limited)
            {
                return limited.seen.unwrap_or_else(Instant::now);
            }
            assert!(
                Instant::now() < deadline,
                "no {what} in time; last clean sample {:?}, last limited sample {:?}\n{}",
                self.last("play"),
                self.last("limited"),
                self.timelines(),
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
