//! The few calls of Janus's HTTP API a load player makes (session, attach, `watch`, events).

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::{Value, json};

use crate::http;

/// One Janus API request; fails unless Janus answers `success` or `ack`.
pub(super) async fn janus_call(url: &str, mut body: Value) -> Result<Value> {
    body["transaction"] = json!(transaction());
    let bytes = serde_json::to_vec(&body)?;
    let resp = http::request("POST", url, &[("Content-Type", "application/json")], &bytes).await?;
    ensure!(resp.status == 200, "Janus {url}: HTTP {}", resp.status);
    let v: Value = serde_json::from_slice(&resp.body).context("Janus reply is not JSON")?;
    match v["janus"].as_str() {
        Some("success" | "ack") => Ok(v),
        _ => bail!("Janus {url}: {v}"),
    }
}

pub(super) fn janus_id(v: &Value) -> Result<u64> {
    v["data"]["id"]
        .as_u64()
        .context("Janus reply without an id")
}

/// Long-polls the session's events until one carries the JSEP offer.
pub(super) async fn janus_offer(session_url: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let resp = http::get(&format!("{session_url}?maxev=5")).await?;
        ensure!(resp.status == 200, "Janus events: HTTP {}", resp.status);
        let v: Value = serde_json::from_slice(&resp.body).context("Janus event is not JSON")?;
        let events = match v {
            Value::Array(events) => events,
            one => vec![one],
        };
        for e in events {
            if let Some(err) = e["plugindata"]["data"]["error"].as_str() {
                bail!("Janus watch failed: {err}");
            }
            if e["jsep"]["type"] == "offer"
                && let Some(sdp) = e["jsep"]["sdp"].as_str()
            {
                return Ok(sdp.to_owned());
            }
        }
    }
    bail!("no offer from Janus within 20 s")
}

fn transaction() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed))
}
