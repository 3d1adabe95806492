//! A control-plane replica as a process.

use std::net::SocketAddr;
use std::process::ExitStatus;

use anyhow::{Result, bail};
use tokio::time::{Instant, sleep};
use tonic::transport::Channel;

use crate::control::{Clients, HealthCheckRequest, ServingStatus, tonic_health_client};

use super::*;

/// One control-plane replica process.
#[derive(Debug)]
pub struct ControlProc {
    pub(super) grpc: SocketAddr,
    pub(super) http: SocketAddr,
    pub(super) proc: Proc,
}

impl ControlProc {
    /// The gRPC address.
    pub fn addr(&self) -> SocketAddr {
        self.grpc
    }

    /// `http://ADDR` of the gRPC service, for clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// Base URL of the HTTP side (`/healthz`, `/metrics`).
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }

    proc_accessors!();

    /// SIGKILL.
    pub fn kill(&mut self) -> Result<()> {
        self.proc.kill()
    }

    /// SIGTERM, then waits up to 10 s for the exit.
    pub async fn terminate(&mut self) -> Result<ExitStatus> {
        self.proc.terminate(CONTROL_STOP_GRACE).await
    }

    /// Stops the process if it runs (SIGTERM), starts it again with the same ports and
    /// arguments, and waits until it serves.
    pub async fn restart(&mut self) -> Result<()> {
        self.proc.respawn(CONTROL_STOP_GRACE).await?;
        self.wait_ready().await
    }

    /// A channel to this replica.
    pub async fn channel(&self) -> Result<Channel> {
        connect(&self.url()).await
    }

    /// Typed clients of this replica.
    pub async fn clients(&self) -> Result<Clients> {
        Clients::new(self.channel().await?)
    }

    pub(super) async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + CONTROL_READY_WITHIN;
        loop {
            if !self.proc.is_running() {
                return Err(self.proc.exited_error("before serving"));
            }
            let last = match self.health().await {
                Ok(ServingStatus::Serving) => return Ok(()),
                Ok(status) => format!("{status:?}"),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "{} ({}) not SERVING within {CONTROL_READY_WITHIN:?} (last: {last}); log {}:\n{}",
                    self.proc.name,
                    self.grpc,
                    self.proc.log_path.display(),
                    self.proc.log_tail()
                );
            }
            sleep(POLL).await;
        }
    }

    pub(super) async fn health(&self) -> Result<ServingStatus> {
        let mut client = tonic_health_client(self.channel().await?);
        let req = HealthCheckRequest {
            service: String::new(),
        };
        let status = client.check(req).await?.into_inner().status;
        Ok(if status == ServingStatus::Serving as i32 {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        })
    }
}
