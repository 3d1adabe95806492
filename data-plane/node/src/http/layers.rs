//! Simulcast at the node's HTTP edge: a player's choice of layer (`POST /whep/{s}?layer=`)
//! and what its session reports (`GET /whep/{s}/{session}`: layer and bandwidth estimate, for
//! the `/play` page).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use strata_rtc::LayerPref;

use super::failed;
use crate::error::ApiError;
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
    let found = state.sessions.with(&session, |s| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use strata_media::Layer;

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
