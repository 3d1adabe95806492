//! `strata.v1.NodeService`: register, keep alive, drain and undrain,
//! deregister, list.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::{info, warn};

use strata_proto::v1::{self, node_service_server::NodeService};

use super::{State, convert, now_ms};
use crate::auth::{Caller, NodeCert};
use crate::cache::Versioned;
use crate::error::{Error, Result};
use crate::keys::{self, NodeRecord, RevokedBy};
use crate::kv::KvError;
use strata_common::names::{self, NameKind};

mod revoke;

use revoke::revoked_list;

/// The node lifecycle service.
#[derive(Clone)]
pub struct NodeApi {
    state: State,
}

impl NodeApi {
    /// Serves from this state.
    pub fn new(state: State) -> Self {
        Self { state }
    }
}

const MAX_FIELD: usize = 512;

fn validate_info(info: &v1::NodeInfo) -> Result<()> {
    names::validate(NameKind::Node, &info.id)?;
    names::validate(NameKind::Region, &info.region)?;
    let addr_ok = !info.relay_addr.is_empty()
        && info.relay_addr.len() <= MAX_FIELD
        && info
            .relay_addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
            });
    if !addr_ok {
        return Err(Error::InvalidArgument(format!(
            "invalid relay_addr {:?}: expected host:port with a non-zero port",
            info.relay_addr.chars().take(64).collect::<String>()
        )));
    }
    let url_ok = info.http_url.len() <= MAX_FIELD
        && (info.http_url.starts_with("http://") || info.http_url.starts_with("https://"))
        && info.http_url.len() > "https://".len()
        && !info
            .http_url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control());
    if !url_ok {
        return Err(Error::InvalidArgument(format!(
            "invalid http_url {:?}: expected an http:// or https:// base URL",
            info.http_url.chars().take(64).collect::<String>()
        )));
    }
    if info.version.len() > MAX_FIELD {
        return Err(Error::InvalidArgument(
            "version is longer than 512 bytes".into(),
        ));
    }
    Ok(())
}

/// Over TLS, a node may advertise only hosts its certificate names: with a
/// stolen key, an attacker could otherwise register as the node and send its
/// relay peers and redirected players (tokens and all) to a host of theirs.
fn check_hosts(info: &v1::NodeInfo, cert: &NodeCert) -> Result<()> {
    let cert = &cert.0;
    for (what, value) in [
        ("relay_addr", &info.relay_addr),
        ("http_url", &info.http_url),
    ] {
        let host = strata_common::cert::host_of(value).unwrap_or_default();
        if !cert.covers_host(host) {
            return Err(Error::PermissionDenied(format!(
                "{what} host {:?} is not among the certificate's subject alternative names \
                 (DNS {:?}, IP {:?}); issue the node a certificate naming it",
                host.chars().take(64).collect::<String>(),
                cert.dns_names,
                cert.ips
            )));
        }
    }
    Ok(())
}

impl NodeApi {
    /// A healthy store, a well-formed name and the node registered under it (NOT_FOUND
    /// otherwise): what a request about one node starts with.
    async fn live_node(&self, node_id: &str) -> Result<Arc<Versioned<NodeRecord>>> {
        let s = &self.state;
        s.ensure_healthy()?;
        names::validate(NameKind::Node, node_id)?;
        s.node(node_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no live node {node_id:?}")))
    }

    /// Whether a certificate is revoked, from the store: a revocation made
    /// through another replica may not have reached this cache yet.
    async fn revoked_in_store(&self, cert: &NodeCert) -> Result<bool> {
        let s = &self.state;
        for (by, id) in [
            (RevokedBy::Serial, &cert.0.serial),
            (RevokedBy::Sha256, &cert.0.sha256),
        ] {
            if s.kv().get(&s.keys().revoked(by, id)).await?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn register(
        &self,
        req: v1::RegisterRequest,
        cert: Option<NodeCert>,
    ) -> Result<v1::RegisterResponse> {
        let s = &self.state;
        s.ensure_healthy()?;
        let info = req
            .node
            .ok_or_else(|| Error::InvalidArgument("node is required".into()))?;
        validate_info(&info)?;
        if let Some(cert) = &cert {
            if self.revoked_in_store(cert).await? {
                return Err(Error::PermissionDenied(format!(
                    "certificate serial {} is revoked",
                    cert.0.serial
                )));
            }
            check_hosts(&info, cert)?;
        }
        if let Some(old) = s.node(&info.id).await? {
            // A restarted node comes back without its streams: drop what the
            // old registration held so nobody is sent to it for them.
            warn!(node = %info.id, lease = old.value.lease, "node registered again; old lease revoked");
            s.kv().revoke(old.value.lease).await?;
        }
        let ttl = s.config().lease_ttl;
        let lease = s.kv().grant(ttl).await?;
        let record = NodeRecord {
            id: info.id.clone(),
            region: info.region.clone(),
            relay_addr: info.relay_addr,
            http_url: info.http_url,
            capacity: info.capacity,
            version: info.version,
            lease,
            registered_at_ms: now_ms(),
            draining: false,
            cert_serial: cert
                .as_ref()
                .map(|c| c.0.serial.clone())
                .unwrap_or_default(),
            cert_sha256: cert.map(|c| c.0.sha256).unwrap_or_default(),
        };
        let rev = s
            .kv()
            .put(&s.keys().node(&info.id), keys::encode(&record), lease)
            .await?;
        s.cache().wait_for(rev, ttl).await;
        s.metrics().registrations.inc();
        info!(node = %info.id, region = %info.region, lease, "node registered");
        let ttl_ms = u32::try_from(ttl.as_millis()).unwrap_or(u32::MAX);
        Ok(v1::RegisterResponse {
            lease_id: lease,
            ttl_ms,
            keepalive_interval_ms: ttl_ms / 3,
        })
    }

    async fn keep_alive(
        &self,
        req: v1::KeepAliveRequest,
        cert: Option<NodeCert>,
    ) -> Result<v1::KeepAliveResponse> {
        let s = &self.state;
        s.ensure_healthy()?;
        names::validate(NameKind::Node, &req.node_id)?;
        let not_found = || {
            Error::NotFound(format!(
                "node {:?} has no live registration with lease {}; register again",
                req.node_id, req.lease_id
            ))
        };
        let node = s.node(&req.node_id).await?.ok_or_else(not_found)?;
        if node.value.lease != req.lease_id {
            return Err(not_found());
        }
        match s.kv().keep_alive(req.lease_id).await {
            Ok(()) => {}
            Err(KvError::LeaseNotFound(_)) => return Err(not_found()),
            Err(e) => return Err(e.into()),
        }
        // A renewed certificate (the node reloaded its files): the
        // registration is bound to it from now on, so that revoking the old
        // one afterwards does not end the node's registration. The new one
        // must name the hosts the node registered with, like at Register.
        if let Some(cert) = cert
            && (cert.0.serial != node.value.cert_serial || cert.0.sha256 != node.value.cert_sha256)
        {
            let info = v1::NodeInfo {
                relay_addr: node.value.relay_addr.clone(),
                http_url: node.value.http_url.clone(),
                ..v1::NodeInfo::default()
            };
            check_hosts(&info, &cert)?;
            let mut record = node.value.clone();
            record.cert_serial = cert.0.serial;
            record.cert_sha256 = cert.0.sha256;
            let key = s.keys().node(&req.node_id);
            s.kv()
                .put(&key, keys::encode(&record), req.lease_id)
                .await?;
            info!(node = %req.node_id, serial = %record.cert_serial, "node presents a renewed certificate");
        }
        if let Some(l) = req.load {
            super::load::report_behind(s, &node.value, l);
        }
        s.metrics().keepalives.inc();
        let ttl_ms = u32::try_from(s.config().lease_ttl.as_millis()).unwrap_or(u32::MAX);
        // The node learns an operator's Drain or Undrain here: the control
        // plane never calls nodes.
        Ok(v1::KeepAliveResponse {
            ttl_ms,
            draining: node.value.draining,
        })
    }

    /// Sets the node record's draining flag (Drain and Undrain).
    async fn set_draining(&self, node_id: &str, draining: bool) -> Result<()> {
        let s = &self.state;
        let node = self.live_node(node_id).await?;
        if node.value.draining != draining {
            let mut record = node.value.clone();
            record.draining = draining;
            let key = s.keys().node(node_id);
            let rev = s
                .kv()
                .put(&key, keys::encode(&record), record.lease)
                .await?;
            s.cache().wait_for(rev, s.config().lease_ttl).await;
            if draining {
                info!(node = %node_id, "node draining");
            } else {
                info!(node = %node_id, "node undrained: back in placement");
            }
        }
        Ok(())
    }

    async fn deregister(&self, req: v1::DeregisterRequest) -> Result<v1::DeregisterResponse> {
        let s = &self.state;
        let node = self.live_node(&req.node_id).await?;
        let rev = s.kv().revoke(node.value.lease).await?;
        s.cache().wait_for(rev, s.config().lease_ttl).await;
        info!(node = %req.node_id, "node deregistered");
        Ok(v1::DeregisterResponse {})
    }

    fn list(&self, req: v1::ListNodesRequest) -> Result<v1::ListNodesResponse> {
        let s = &self.state;
        s.ensure_healthy()?;
        if !req.region.is_empty() {
            names::validate(NameKind::Region, &req.region)?;
        }
        let view = s.cache().read();
        let revoked = revoked_list(&view);
        let mut nodes: Vec<v1::Node> = view
            .nodes
            .values()
            .filter(|n| req.region.is_empty() || n.value.region == req.region)
            .map(|n| convert::node(&n.value, view.loads.get(&n.value.id)))
            .collect();
        nodes.sort_by(|a, b| {
            let key = |n: &v1::Node| n.info.as_ref().map(|i| (i.region.clone(), i.id.clone()));
            key(a).cmp(&key(b))
        });
        Ok(v1::ListNodesResponse { nodes, revoked })
    }

    async fn get(&self, req: v1::GetNodeRequest) -> Result<v1::Node> {
        let s = &self.state;
        let node = self.live_node(&req.node_id).await?;
        let load = s.cache().read().loads.get(&req.node_id).cloned();
        Ok(convert::node(&node.value, load.as_ref()))
    }
}

use crate::auth::{self, Need};

type Reply<T> = std::result::Result<Response<T>, Status>;

#[tonic::async_trait]
impl NodeService for NodeApi {
    async fn register(&self, r: Request<v1::RegisterRequest>) -> Reply<v1::RegisterResponse> {
        let id = r
            .get_ref()
            .node
            .as_ref()
            .map(|n| n.id.as_str())
            .unwrap_or("");
        auth::require(&r, Need::NodeItself(id))?;
        let cert = r.extensions().get::<NodeCert>().cloned();
        Ok(Response::new(
            NodeApi::register(self, r.into_inner(), cert).await?,
        ))
    }

    async fn keep_alive(&self, r: Request<v1::KeepAliveRequest>) -> Reply<v1::KeepAliveResponse> {
        auth::require(&r, Need::NodeItself(&r.get_ref().node_id))?;
        let cert = r.extensions().get::<NodeCert>().cloned();
        Ok(Response::new(
            NodeApi::keep_alive(self, r.into_inner(), cert).await?,
        ))
    }

    async fn drain(&self, r: Request<v1::DrainRequest>) -> Reply<v1::DrainResponse> {
        auth::require(&r, Need::NodeItselfOrOperator(&r.get_ref().node_id))?;
        self.set_draining(&r.get_ref().node_id, true).await?;
        Ok(Response::new(v1::DrainResponse {}))
    }

    async fn undrain(&self, r: Request<v1::UndrainRequest>) -> Reply<v1::UndrainResponse> {
        auth::require(&r, Need::NodeItselfOrOperator(&r.get_ref().node_id))?;
        self.set_draining(&r.get_ref().node_id, false).await?;
        Ok(Response::new(v1::UndrainResponse {}))
    }

    async fn deregister(&self, r: Request<v1::DeregisterRequest>) -> Reply<v1::DeregisterResponse> {
        auth::require(&r, Need::NodeItselfOrOperator(&r.get_ref().node_id))?;
        Ok(Response::new(
            NodeApi::deregister(self, r.into_inner()).await?,
        ))
    }

    async fn list_nodes(&self, r: Request<v1::ListNodesRequest>) -> Reply<v1::ListNodesResponse> {
        // Nodes list the registry too: it is who may use their relay.
        auth::require(&r, Need::Member)?;
        Ok(Response::new(self.list(r.into_inner())?))
    }

    async fn get_node(&self, r: Request<v1::GetNodeRequest>) -> Reply<v1::Node> {
        auth::require(&r, Need::Member)?;
        Ok(Response::new(self.get(r.into_inner()).await?))
    }

    async fn revoke_certificate(
        &self,
        r: Request<v1::RevokeCertificateRequest>,
    ) -> Reply<v1::RevokeCertificateResponse> {
        auth::require(&r, Need::Operator)?;
        let by = match r.extensions().get::<Caller>() {
            Some(Caller::Operator(name)) => name.clone(),
            _ => "dev".to_owned(),
        };
        Ok(Response::new(self.revoke(r.into_inner(), &by).await?))
    }

    async fn list_revoked(
        &self,
        r: Request<v1::ListRevokedRequest>,
    ) -> Reply<v1::ListRevokedResponse> {
        auth::require(&r, Need::Member)?;
        self.state.ensure_healthy()?;
        let revoked = revoked_list(&self.state.cache().read());
        Ok(Response::new(v1::ListRevokedResponse { revoked }))
    }
}
