//! The load report riding on every keep-alive: streams, sessions, egress
//! bit/s and CPU, measured between reports.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use strata_media::Layer;
use strata_media::hub::Hub;
use strata_proto::v1;
use strata_relay::RelayStats;
use strata_rtc::RtcEngine;

use crate::session_table::{SessionKind, SessionTable};

/// Measures egress bit/s and CPU between load reports.
pub(super) struct LoadMeter {
    pub hub: Hub,
    pub rtc: RtcEngine,
    pub relay_stats: Arc<RelayStats>,
    pub sessions: Arc<SessionTable>,
    /// When, egress bytes, CPU seconds: at the last report.
    pub last: Mutex<(Instant, u64, f64)>,
}

/// CPU seconds this process used (user and system).
pub(super) fn cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (100 Hz on Linux).
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

impl LoadMeter {
    /// The load since the last report.
    pub fn report(&self) -> v1::Load {
        let bytes = self.rtc.egress().counters().bytes_out.get()
            + self
                .relay_stats
                .peers()
                .iter()
                .map(|(_, p)| p.bytes_out.load(Ordering::Relaxed))
                .sum::<u64>();
        let cpu_now = cpu_seconds();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let dt = last.0.elapsed().as_secs_f64().max(1e-3);
        let egress_bps = ((bytes.saturating_sub(last.1)) as f64 * 8.0 / dt) as u64;
        let cpu = ((cpu_now - last.2).max(0.0) / dt) as f32;
        *last = (Instant::now(), bytes, cpu_now);
        v1::Load {
            streams: self.hub.streams().len() as u32,
            players: self.sessions.count(SessionKind::Player) as u32,
            publishers: self.sessions.count(SessionKind::Publisher) as u32,
            egress_bps,
            cpu,
            stream_players: stream_players(self.sessions.players_by_stream()),
        }
    }
}

/// Streams a load report lists players of (the control plane keeps as many).
const MAX_REPORTED_STREAMS: usize = 256;

/// Players per stream and layer for the load report: the streams with the most players
/// first, at most [`MAX_REPORTED_STREAMS`], ties by name so the list is stable.
pub fn stream_players(by_stream: HashMap<String, Vec<Option<Layer>>>) -> Vec<v1::StreamPlayers> {
    let mut out: Vec<v1::StreamPlayers> = by_stream
        .into_iter()
        .map(|(stream, layers)| {
            let on = |l: Layer| layers.iter().filter(|x| **x == Some(l)).count() as u32;
            v1::StreamPlayers {
                players: layers.len() as u32,
                low: on(Layer::Low),
                mid: on(Layer::Mid),
                high: on(Layer::High),
                stream,
                region: String::new(),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.players
            .cmp(&a.players)
            .then_with(|| a.stream.cmp(&b.stream))
    });
    out.truncate(MAX_REPORTED_STREAMS);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn players_per_stream_and_layer_most_watched_first() {
        let mut by_stream = HashMap::new();
        by_stream.insert(
            "a".to_owned(),
            vec![Some(Layer::Low), Some(Layer::High), Some(Layer::Low)],
        );
        by_stream.insert("b".to_owned(), vec![None]);
        for i in 0..300 {
            by_stream.insert(format!("z{i:03}"), vec![None]);
        }
        let list = stream_players(by_stream);
        assert_eq!(list.len(), MAX_REPORTED_STREAMS);
        let a = &list[0];
        assert_eq!(
            (a.stream.as_str(), a.players, a.low, a.mid, a.high),
            ("a", 3, 2, 0, 1)
        );
        // Ties by name: "b" before the z… streams; a stream without layers counts players only.
        assert_eq!(
            (list[1].stream.as_str(), list[1].players, list[1].low),
            ("b", 1, 0)
        );
    }
}
