//! `strata.v1.GraphService`: link costs between regions and rebalancing of
//! the region trees (operators only).

use tonic::{Request, Response, Status};
use tracing::info;

use strata_proto::v1::{self, graph_service_server::GraphService};

use super::{RoutingApi, State, now_ms};
use crate::auth::{self, Caller, Need};
use crate::error::{Error, Result};
use crate::graph::costs::{MAX_COST_MS, measured_cost_ms};
use crate::graph::{Costs, Source};
use crate::keys::{self, LinkPinRecord};
use crate::kv::Op;
use strata_common::names::{self, NameKind};

type Reply<T> = std::result::Result<Response<T>, Status>;

/// The graph service.
#[derive(Clone)]
pub struct GraphApi {
    state: State,
    routing: RoutingApi,
}

impl GraphApi {
    /// Serves from this state.
    pub fn new(state: State) -> Self {
        Self {
            routing: RoutingApi::new(state.clone()),
            state,
        }
    }

    async fn set_link_cost(&self, req: v1::SetLinkCostRequest, by: &str) -> Result<()> {
        let s = &self.state;
        s.ensure_healthy()?;
        names::validate(NameKind::Region, &req.from_region)?;
        names::validate(NameKind::Region, &req.to_region)?;
        if req.from_region == req.to_region {
            return Err(Error::InvalidArgument(
                "a link joins two different regions".into(),
            ));
        }
        let key = s.keys().link(&req.from_region, &req.to_region);
        let op = if req.unpin {
            Op::Delete(key)
        } else {
            let cost_ms = u32::try_from(req.cost_ms)
                .ok()
                .filter(|c| *c <= MAX_COST_MS)
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "cost_ms must be between 0 and {MAX_COST_MS}, not {}",
                        req.cost_ms
                    ))
                })?;
            let record = LinkPinRecord {
                cost_ms,
                operator: by.to_owned(),
                pinned_at_ms: now_ms(),
            };
            // No lease: a pin outlives every node and replica.
            Op::Put {
                key,
                value: keys::encode(&record),
                lease: 0,
            }
        };
        let out = s.kv().txn(Vec::new(), vec![op], Vec::new()).await?;
        s.cache().wait_for(out.revision, s.config().lease_ttl).await;
        info!(from = %req.from_region, to = %req.to_region, cost_ms = req.cost_ms,
            unpin = req.unpin, operator = %by, "link cost set");
        Ok(())
    }

    fn list_link_costs(&self) -> Result<v1::ListLinkCostsResponse> {
        let s = &self.state;
        s.ensure_healthy()?;
        let view = s.cache().read();
        let measured = s.measured().snapshot();
        let costs = Costs {
            pins: &view.link_pins,
            configured: &s.config().link_costs,
            measured: &measured,
        };
        let mut pairs: Vec<&(String, String)> = view
            .link_pins
            .keys()
            .chain(s.config().link_costs.keys())
            .chain(measured.keys())
            .collect();
        pairs.sort();
        pairs.dedup();
        let links = pairs
            .into_iter()
            .filter_map(|(from, to)| {
                let (cost_ms, source) = costs.link(from, to);
                (source != Source::Unknown).then(|| v1::LinkCost {
                    from_region: from.clone(),
                    to_region: to.clone(),
                    cost_ms,
                    source: source.name().into(),
                })
            })
            .collect();
        Ok(v1::ListLinkCostsResponse { links })
    }
}

impl GraphApi {
    async fn report_links(&self, req: v1::ReportLinksRequest) -> Result<()> {
        let s = &self.state;
        s.ensure_healthy()?;
        names::validate(NameKind::Node, &req.node_id)?;
        if req.links.len() > MAX_LINK_REPORTS {
            return Err(Error::InvalidArgument(format!(
                "at most {MAX_LINK_REPORTS} links per report, not {}",
                req.links.len()
            )));
        }
        for l in &req.links {
            names::validate(NameKind::Region, &l.region)?;
        }
        let node = s.caller(&req.node_id).await?;
        let from = &node.value.region;
        for l in req.links.iter().filter(|l| &l.region != from) {
            let cost = measured_cost_ms(l.rtt_us, f64::from(l.loss));
            s.measured().report(from, &l.region, cost);
        }
        Ok(())
    }
}

/// Most entries of one `ReportLinks`.
const MAX_LINK_REPORTS: usize = 64;

fn operator<T>(r: &Request<T>) -> String {
    match r.extensions().get::<Caller>() {
        Some(Caller::Operator(name)) => name.clone(),
        _ => "dev".to_owned(),
    }
}

#[tonic::async_trait]
impl GraphService for GraphApi {
    async fn set_link_cost(
        &self,
        r: Request<v1::SetLinkCostRequest>,
    ) -> Reply<v1::SetLinkCostResponse> {
        auth::require(&r, Need::Operator)?;
        let by = operator(&r);
        GraphApi::set_link_cost(self, r.into_inner(), &by).await?;
        Ok(Response::new(v1::SetLinkCostResponse {}))
    }

    async fn list_link_costs(
        &self,
        r: Request<v1::ListLinkCostsRequest>,
    ) -> Reply<v1::ListLinkCostsResponse> {
        auth::require(&r, Need::Operator)?;
        Ok(Response::new(GraphApi::list_link_costs(self)?))
    }

    async fn report_links(
        &self,
        r: Request<v1::ReportLinksRequest>,
    ) -> Reply<v1::ReportLinksResponse> {
        auth::require(&r, Need::NodeItself(&r.get_ref().node_id))?;
        GraphApi::report_links(self, r.into_inner()).await?;
        Ok(Response::new(v1::ReportLinksResponse {}))
    }

    async fn rebalance(&self, r: Request<v1::RebalanceRequest>) -> Reply<v1::RebalanceResponse> {
        auth::require(&r, Need::Operator)?;
        let req = r.into_inner();
        self.state.ensure_healthy()?;
        let stream = (!req.stream.is_empty()).then_some(req.stream.as_str());
        if let Some(s) = stream {
            names::validate(NameKind::Stream, s).map_err(Error::from)?;
        }
        let moved = self.routing.rebalance(stream).await?;
        Ok(Response::new(v1::RebalanceResponse { moved }))
    }
}
