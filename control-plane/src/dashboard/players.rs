//! Players of a stream per region and simulcast layer, for the topology document: from
//! `StreamTree.players`, which the control plane sums from the nodes' load reports.

use serde::{Deserialize, Serialize};
use strata_proto::v1;

/// A stream's players in one region.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionPlayers {
    /// Region name.
    pub region: String,
    /// Players of the stream in the region.
    pub players: u32,
    /// Of which on the low, mid and high layer (all 0 for a stream without simulcast).
    pub low: u32,
    pub mid: u32,
    pub high: u32,
}

/// The tree's players per region, ordered by region.
pub fn region_players(t: &v1::StreamTree) -> Vec<RegionPlayers> {
    let mut out: Vec<RegionPlayers> = t
        .players
        .iter()
        .map(|p| RegionPlayers {
            region: p.region.clone(),
            players: p.players,
            low: p.low,
            mid: p.mid,
            high: p.high,
        })
        .collect();
    out.sort_by(|a, b| a.region.cmp(&b.region));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::model::stream_view;
    use crate::dashboard::model::tests::tree_msg;

    #[test]
    fn stream_view_has_players_per_region_and_layer() {
        let mut t = tree_msg();
        let players = |region: &str, players, [low, mid, high]: [u32; 3]| v1::StreamPlayers {
            stream: "demo".into(),
            region: region.into(),
            players,
            low,
            mid,
            high,
        };
        t.players = vec![players("us", 3, [2, 0, 1]), players("eu", 1, [0, 0, 0])];
        let s = stream_view(&t).expect("view");
        let got: Vec<(&str, u32, u32, u32, u32)> = s
            .players
            .iter()
            .map(|p| (p.region.as_str(), p.players, p.low, p.mid, p.high))
            .collect();
        assert_eq!(got, [("eu", 1, 0, 0, 0), ("us", 3, 2, 0, 1)]);
        let v = serde_json::to_value(&s).expect("json");
        assert_eq!(v["players"][1]["region"], "us");
        assert_eq!(v["players"][1]["low"], 2);
        assert_eq!(v["players"][1]["high"], 1);
        // A tree without the field (an older control plane) reads as no players.
        let mut old = v.clone();
        old.as_object_mut().expect("object").remove("players");
        let back: crate::dashboard::model::StreamView =
            serde_json::from_value(old).expect("older document");
        assert!(back.players.is_empty());
    }
}
