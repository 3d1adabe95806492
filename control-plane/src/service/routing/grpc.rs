//! The gRPC face of [`RoutingApi`]: authorization, then the handlers.

use std::pin::Pin;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use strata_proto::v1::{self, routing_service_server::RoutingService};

use super::RoutingApi;
use crate::error::Error;
use crate::service::convert;
use strata_common::names::{self, NameKind};

use crate::auth::{self, Need};

type Reply<T> = std::result::Result<Response<T>, Status>;

/// The server stream of `WatchStream`.
pub type TopologyStream =
    Pin<Box<dyn Stream<Item = std::result::Result<v1::StreamTopology, Status>> + Send>>;

#[tonic::async_trait]
impl RoutingService for RoutingApi {
    async fn publish(&self, r: Request<v1::PublishRequest>) -> Reply<v1::PublishResponse> {
        auth::require(&r, Need::NodeItself(&r.get_ref().node_id))?;
        Ok(Response::new(
            RoutingApi::publish(self, r.into_inner()).await?,
        ))
    }

    async fn unpublish(&self, r: Request<v1::UnpublishRequest>) -> Reply<v1::UnpublishResponse> {
        auth::require(&r, Need::NodeItself(&r.get_ref().node_id))?;
        Ok(Response::new(
            RoutingApi::unpublish(self, r.into_inner()).await?,
        ))
    }

    async fn resolve(&self, r: Request<v1::ResolveRequest>) -> Reply<v1::ResolveResponse> {
        auth::require(&r, Need::NodeItself(&r.get_ref().node_id))?;
        Ok(Response::new(
            RoutingApi::resolve(self, r.into_inner()).await?,
        ))
    }

    async fn release(&self, r: Request<v1::ReleaseRequest>) -> Reply<v1::ReleaseResponse> {
        auth::require(&r, Need::NodeItself(&r.get_ref().node_id))?;
        Ok(Response::new(
            RoutingApi::release(self, r.into_inner()).await?,
        ))
    }

    type WatchStreamStream = TopologyStream;

    async fn watch_stream(&self, r: Request<v1::WatchStreamRequest>) -> Reply<TopologyStream> {
        auth::require(&r, Need::Member)?;
        let req = r.into_inner();
        self.state.ensure_healthy()?;
        names::validate(NameKind::Stream, &req.stream).map_err(Error::from)?;
        names::validate(NameKind::Region, &req.region).map_err(Error::from)?;
        let (tx, rx) = mpsc::channel(16);
        let api = self.clone();
        // Woken by changes of this stream's records only, not by every revision.
        let mut changes = self.state.cache().stream_changes(&req.stream);
        tokio::spawn(async move {
            let key = |t: &v1::StreamTopology| (t.live, t.main.clone(), t.regional.clone());
            let mut last = api.topology(&req.stream, &req.region);
            if tx.send(Ok(last.clone())).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    _ = changes.changed() => {}
                    _ = tx.closed() => return,
                }
                let now = api.topology(&req.stream, &req.region);
                if key(&now) != key(&last) {
                    if tx.send(Ok(now.clone())).await.is_err() {
                        return;
                    }
                    last = now;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_streams(
        &self,
        r: Request<v1::ListStreamsRequest>,
    ) -> Reply<v1::ListStreamsResponse> {
        auth::require(&r, Need::Operator)?;
        self.state.ensure_healthy()?;
        let view = self.state.cache().read();
        let streams = view
            .streams
            .iter()
            .filter_map(|(id, st)| convert::tree_with_players(&view, id, st))
            .collect();
        Ok(Response::new(v1::ListStreamsResponse { streams }))
    }

    async fn get_stream(&self, r: Request<v1::GetStreamRequest>) -> Reply<v1::StreamTree> {
        auth::require(&r, Need::Operator)?;
        let req = r.into_inner();
        self.state.ensure_healthy()?;
        names::validate(NameKind::Stream, &req.stream).map_err(Error::from)?;
        let view = self.state.cache().read();
        let tree = view
            .streams
            .get(&req.stream)
            .and_then(|st| convert::tree_with_players(&view, &req.stream, st));
        tree.map(Response::new).ok_or_else(|| {
            Status::from(Error::NotFound(format!(
                "stream {:?} is not live",
                req.stream
            )))
        })
    }
}
