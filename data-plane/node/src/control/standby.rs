//! The redundant-ingest calls: a backup publisher's node registers as the
//! stream's standby, gives it up, and switches to it.

use strata_proto::v1;
use strata_proto::v1::routing_service_client::RoutingServiceClient as RoutingClient;

use super::{ControlClient, ControlError};

impl ControlClient {
    /// Registers `node` as the standby of `stream`.
    pub async fn standby(
        &self,
        stream: &str,
        node: &str,
    ) -> Result<v1::StandbyResponse, ControlError> {
        let req = v1::StandbyRequest {
            stream: stream.into(),
            node_id: node.into(),
        };
        rpc!(self, RoutingClient, standby, req)
    }

    /// Gives up the standby record of `stream` held at `epoch`.
    pub async fn release_standby(
        &self,
        stream: &str,
        node: &str,
        epoch: i64,
    ) -> Result<(), ControlError> {
        let req = v1::ReleaseStandbyRequest {
            stream: stream.into(),
            node_id: node.into(),
            epoch,
        };
        rpc!(self, RoutingClient, release_standby, req).map(drop)
    }

    /// Makes `node`, the standby at `standby_epoch`, the main origin in place
    /// of the record at `main_epoch` (0: none).
    pub async fn switch_to_standby(
        &self,
        req: v1::SwitchToStandbyRequest,
    ) -> Result<v1::MainOrigin, ControlError> {
        let r = rpc!(self, RoutingClient, switch_to_standby, req)?;
        r.origin
            .ok_or_else(|| tonic::Status::internal("switch answer without origin").into())
    }
}
