//! Simulcast at the node's HTTP edge: a player's choice of layer (`POST /whep/{s}?layer=`)
//! and what its session reports (`GET /whep/{s}/{session}`: layer and bandwidth estimate, for
//! the `/play` page).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use strata_media::Layer;
use strata_rtc::LayerPref;

use crate::error::ApiError;
use crate::http::failed;
use crate::state::NodeState;

/// The `layer` query parameter of a WHEP POST: `auto` (the default), `low`, `mid` or `high`.
pub fn layer_pref(query: Option<&str>) -> Result<LayerPref, ApiError> {
    let value = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("layer="));
    match value {
        None => Ok(LayerPref::Auto),
        Some(v) => LayerPref::parse(v).ok_or_else(|| {
            ApiError::BadRequest("layer must be one of auto, low, mid, high".into())
        }),
    }
}

/// `GET /whep/{stream}/{session}`: `{"layer": "mid", "estimate_bps": 812000,
/// "estimate_from": "transport-cc"}` (each `null` when unknown; `estimate_from` is
/// `transport-cc` for the node's own estimate, `remb` for the player's). The session id is the capability, as for PATCH and DELETE.
pub async fn player_info(
    State(state): State<Arc<NodeState>>,
    Path((stream, session)): Path<(String, String)>,
) -> Response {
    let found = state.with_session(&session, |s| {
        let info = s.candidates.player_info();
        (
            s.stream == stream,
            info.map(|i| (i.layer(), i.estimate_bps(), i.estimate_from())),
        )
    });
    let Some((true, Some((layer, estimate, from)))) = found else {
        return failed(&state, ApiError::NotFound("no such player session".into()));
    };
    let body = serde_json::json!({
        "layer": layer.map(|l| l.as_str()),
        "estimate_bps": estimate,
        "estimate_from": from,
    });
    (
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        axum::Json(body),
    )
        .into_response()
}

/// Streams a load report lists players of (the control plane keeps as many).
const MAX_REPORTED_STREAMS: usize = 256;

/// Players per stream and layer for the load report: the streams with the most players
/// first, at most [`MAX_REPORTED_STREAMS`], ties by name so the list is stable.
pub fn stream_players(
    by_stream: HashMap<String, Vec<Option<Layer>>>,
) -> Vec<strata_proto::v1::StreamPlayers> {
    let mut out: Vec<strata_proto::v1::StreamPlayers> = by_stream
        .into_iter()
        .map(|(stream, layers)| {
            let on = |l: Layer| layers.iter().filter(|x| **x == Some(l)).count() as u32;
            strata_proto::v1::StreamPlayers {
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

    #[test]
    fn layer_query() {
        assert_eq!(layer_pref(None).ok(), Some(LayerPref::Auto));
        assert_eq!(layer_pref(Some("token=x")).ok(), Some(LayerPref::Auto));
        assert_eq!(
            layer_pref(Some("token=x&layer=low")).ok(),
            Some(LayerPref::Pinned(Layer::Low))
        );
        assert_eq!(layer_pref(Some("layer=auto")).ok(), Some(LayerPref::Auto));
        for bad in ["layer=", "layer=LOW", "layer=ultra", "layer=%00"] {
            assert!(
                matches!(layer_pref(Some(bad)), Err(ApiError::BadRequest(_))),
                "{bad}"
            );
        }
    }
}
