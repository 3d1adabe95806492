//! Players per stream and simulcast layer: taken from a node's load report into its load
//! record, judged for materiality beside the rest of the load, and summed per region for
//! `GetStream`/`ListStreams` and the dashboard.
//!
//! They live in the load record (`load/{node}`), not in a replica's memory: any replica
//! answers the dashboard and `GetStream`, and only the store is shared. The record is
//! written only on a material change (`load.rs`), and a layer's count is judged like the
//! node's session counts: a change beyond the tolerance, or any change near capacity.

use std::collections::BTreeMap;

use strata_common::names::{self, NameKind};
use strata_proto::v1;

use crate::cache::View;
use crate::keys::StreamPlayersRecord;

/// Most streams kept from one report: the node lists those with the most players first.
pub const MAX_STREAMS: usize = 256;

/// The report's list as stored: at most [`MAX_STREAMS`] streams with valid names and
/// players, one entry per stream (the first), layers never above the stream's players.
pub(super) fn record(report: &[v1::StreamPlayers]) -> Vec<StreamPlayersRecord> {
    let mut out: Vec<StreamPlayersRecord> = Vec::new();
    for p in report {
        if out.len() == MAX_STREAMS {
            break;
        }
        let valid = p.players > 0 && names::validate(NameKind::Stream, &p.stream).is_ok();
        if !valid || out.iter().any(|o| o.stream == p.stream) {
            continue;
        }
        out.push(StreamPlayersRecord {
            stream: p.stream.clone(),
            players: p.players,
            layers: [p.low, p.mid, p.high].map(|n| n.min(p.players)),
        });
    }
    out
}

/// Whether any stream's counts changed materially: `count(old, new)` is the load record's
/// rule for a session count. A stream that appears or goes counts as a change from 0.
pub(super) fn material(
    old: &[StreamPlayersRecord],
    new: &[StreamPlayersRecord],
    count: impl Fn(u32, u32) -> bool,
) -> bool {
    let counts = |list: &[StreamPlayersRecord]| -> BTreeMap<String, [u32; 4]> {
        list.iter()
            .map(|p| {
                let [l, m, h] = p.layers;
                (p.stream.clone(), [p.players, l, m, h])
            })
            .collect()
    };
    let (old, new) = (counts(old), counts(new));
    let zero = [0; 4];
    old.keys().chain(new.keys()).any(|stream| {
        let a = old.get(stream).unwrap_or(&zero);
        let b = new.get(stream).unwrap_or(&zero);
        a.iter().zip(b).any(|(a, b)| count(*a, *b))
    })
}

/// `stream`'s players per region, summed over the live nodes' load records, ordered by
/// region; regions without players are left out.
pub(crate) fn by_region(view: &View, stream: &str) -> Vec<v1::StreamPlayers> {
    let mut regions: BTreeMap<&str, v1::StreamPlayers> = BTreeMap::new();
    for (node, load) in &view.loads {
        let Some(region) = view.nodes.get(node).map(|n| n.value.region.as_str()) else {
            continue;
        };
        for p in load.stream_players.iter().filter(|p| p.stream == stream) {
            let sum = regions.entry(region).or_insert_with(|| v1::StreamPlayers {
                stream: stream.to_owned(),
                region: region.to_owned(),
                ..Default::default()
            });
            sum.players = sum.players.saturating_add(p.players);
            sum.low = sum.low.saturating_add(p.layers[0]);
            sum.mid = sum.mid.saturating_add(p.layers[1]);
            sum.high = sum.high.saturating_add(p.layers[2]);
        }
    }
    regions.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(stream: &str, players: u32, layers: [u32; 3]) -> v1::StreamPlayers {
        v1::StreamPlayers {
            stream: stream.into(),
            players,
            low: layers[0],
            mid: layers[1],
            high: layers[2],
            region: String::new(),
        }
    }

    #[test]
    fn hostile_reports_are_cut_to_size() {
        let mut list: Vec<v1::StreamPlayers> = (0..1000)
            .map(|i| report(&format!("s{i}"), 1, [0, 0, 1]))
            .collect();
        list.insert(0, report("../etc", 5, [5, 0, 0]));
        list.insert(1, report("s0", 7, [0, 0, 7]));
        list.insert(2, report("over", 2, [u32::MAX, 9, 1]));
        list.insert(3, report("none", 0, [0, 0, 0]));
        let r = record(&list);
        assert_eq!(r.len(), MAX_STREAMS);
        assert_eq!(r[0].stream, "s0", "a bad name and a duplicate are dropped");
        assert_eq!(r[0].players, 7);
        assert_eq!(
            r[1].layers,
            [2, 2, 1],
            "a layer never counts more than the stream"
        );
        assert!(r.iter().all(|p| p.stream != "none" && p.stream != "../etc"));
    }

    #[test]
    fn layer_changes_are_material_past_the_tolerance() {
        let count = |a: u32, b: u32| a != b && f64::from(a.abs_diff(b)) > 0.1 * f64::from(a.max(b));
        let rec = |players, layers| record(&[report("s", players, layers)]);
        let old = rec(100, [50, 0, 50]);
        // 5 players move from high to low: within 10 % of each layer's count.
        assert!(!material(&old, &rec(100, [53, 0, 47]), count));
        // 20 move: material.
        assert!(material(&old, &rec(100, [70, 0, 30]), count));
        // A stream appears or goes.
        assert!(material(&old, &[], count));
        assert!(material(&[], &old, count));
        assert!(!material(&old, &old, count));
    }
}
