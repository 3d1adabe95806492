//! `strata.v1.PlacementService`: which node a publisher or player should use.

use tonic::{Request, Response, Status};

use strata_proto::v1::{self, placement_service_server::PlacementService};

use super::{State, convert};
use crate::cache::View;
use crate::error::{Error, Result};
use strata_common::names::{self, NameKind};

/// The placement service.
#[derive(Clone)]
pub struct PlacementApi {
    state: State,
}

impl PlacementApi {
    /// Serves from this state.
    pub fn new(state: State) -> Self {
        Self { state }
    }
}

/// Picks a node of `region` for `purpose` on `stream`: live, not draining,
/// under capacity, least loaded (players over capacity); for players a node
/// already carrying the stream wins over one that does not. Pure over the
/// view, so the HTTP front door and the gRPC service share it.
pub fn place(view: &View, req: &v1::PlaceRequest) -> Result<v1::PlaceResponse> {
    names::validate(NameKind::Region, &req.region)?;
    let play = req.purpose == v1::Purpose::Play as i32;
    if play || !req.stream.is_empty() {
        names::validate(NameKind::Stream, &req.stream)?;
    }
    if req.purpose == v1::Purpose::Unspecified as i32 || v1::Purpose::try_from(req.purpose).is_err()
    {
        return Err(Error::InvalidArgument(
            "purpose must be PURPOSE_PUBLISH or PURPOSE_PLAY".into(),
        ));
    }
    let carriers: Vec<&str> = match view.streams.get(&req.stream) {
        Some(st) if play => st
            .main
            .iter()
            .filter(|m| m.value.region == req.region)
            .map(|m| m.value.node_id.as_str())
            .chain(
                st.regions
                    .get(&req.region)
                    .map(|r| r.value.node_id.as_str()),
            )
            .chain(
                st.subscribers
                    .iter()
                    .filter(|(_, s)| s.value.region == req.region)
                    .map(|(n, _)| n.as_str()),
            )
            .collect(),
        _ => Vec::new(),
    };
    let best = view
        .nodes
        .values()
        .map(|n| &n.value)
        .filter(|n| n.region == req.region && !n.draining && n.id != req.exclude_node_id)
        .filter_map(|n| {
            let load = view.loads.get(&n.id);
            let players = load.map(|l| l.players).unwrap_or(0);
            let sessions = players + load.map(|l| l.publishers).unwrap_or(0);
            if n.capacity != 0 && sessions >= n.capacity {
                return None;
            }
            let utilisation = f64::from(sessions) / f64::from(n.capacity.max(1));
            let carries = carriers.contains(&n.id.as_str());
            Some((!carries, utilisation, sessions, n.id.clone(), n, carries))
        })
        .min_by(|a, b| {
            (a.0, a.1, a.2, &a.3)
                .partial_cmp(&(b.0, b.1, b.2, &b.3))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
    match best {
        Some((_, _, _, _, n, carries)) => Ok(v1::PlaceResponse {
            node: Some(convert::node_info(n)),
            carries_stream: carries,
        }),
        None => Err(Error::Unavailable(format!(
            "no node of region {:?} can take a new {} now (none live, all draining or full)",
            req.region,
            if play { "player" } else { "publisher" }
        ))),
    }
}

#[tonic::async_trait]
impl PlacementService for PlacementApi {
    async fn place(
        &self,
        r: Request<v1::PlaceRequest>,
    ) -> std::result::Result<Response<v1::PlaceResponse>, Status> {
        // Nodes place too: a full or draining node redirects its clients.
        crate::auth::require(&r, crate::auth::Need::Member)?;
        self.state.ensure_healthy()?;
        let req = r.into_inner();
        let view = self.state.cache().read();
        Ok(Response::new(place(&view, &req)?))
    }
}
