//! `revoke (--serial HEX | --sha256 HEX) [--reason TEXT]` and `revoked`.

use serde::Serialize;
use strata_proto::v1;

use super::table::age;
use super::{CliError, Ctx, bounded};

/// Revokes a node certificate by serial or fingerprint.
pub(super) async fn revoke(
    mut ctx: Ctx<'_>,
    serial: Option<&str>,
    sha256: Option<&str>,
    reason: &str,
) -> Result<(), CliError> {
    let mut client = v1::node_service_client::NodeServiceClient::new(ctx.channel.clone());
    let req = v1::RevokeCertificateRequest {
        serial: serial.unwrap_or_default().to_owned(),
        sha256: sha256.unwrap_or_default().to_owned(),
        reason: reason.to_owned(),
    };
    let resp = bounded(client.revoke_certificate(req)).await?;
    let revoked = resp.revoked.as_ref().map(Revoked::from);
    if ctx.json {
        return ctx
            .json(&serde_json::json!({ "revoked": revoked, "deregistered": resp.deregistered }));
    }
    if let Some(r) = revoked {
        writeln!(ctx.out, "revoked {}", r.name())?;
    }
    for node in &resp.deregistered {
        writeln!(
            ctx.out,
            "{node}: its registration with that certificate was ended"
        )?;
    }
    Ok(())
}

/// Lists revoked certificates, oldest first.
pub(super) async fn list(mut ctx: Ctx<'_>) -> Result<(), CliError> {
    let mut client = v1::node_service_client::NodeServiceClient::new(ctx.channel.clone());
    let resp = bounded(client.list_revoked(v1::ListRevokedRequest {})).await?;
    let list: Vec<Revoked> = resp.revoked.iter().map(Revoked::from).collect();
    if ctx.json {
        return ctx.json(&list);
    }
    if list.is_empty() {
        writeln!(ctx.out, "no revoked certificates")?;
    }
    for r in &list {
        writeln!(
            ctx.out,
            "{}  by {}  {} ago  {}",
            r.name(),
            r.revoked_by,
            age(ctx.now_ms - r.revoked_at_ms),
            r.reason
        )?;
    }
    Ok(())
}

/// A revoked certificate, as `revoke` and `revoked` print it.
#[derive(Serialize)]
struct Revoked {
    #[serde(skip_serializing_if = "String::is_empty")]
    serial: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    sha256: String,
    reason: String,
    revoked_by: String,
    revoked_at_ms: i64,
}

impl From<&v1::RevokedCertificate> for Revoked {
    fn from(r: &v1::RevokedCertificate) -> Self {
        Revoked {
            serial: r.serial.clone(),
            sha256: r.sha256.clone(),
            reason: r.reason.clone(),
            revoked_by: r.revoked_by.clone(),
            revoked_at_ms: r.revoked_at_ms,
        }
    }
}

impl Revoked {
    fn name(&self) -> String {
        if self.serial.is_empty() {
            format!("sha256 {}", self.sha256)
        } else {
            format!("serial {}", self.serial)
        }
    }
}
