//! Certificate revocation: the record kept for good, and the registrations made with
//! the certificate ended at once.

use tracing::warn;

use strata_proto::v1;

use super::{MAX_FIELD, NodeApi};
use crate::error::{Error, Result};
use crate::keys::{self, RevocationRecord, RevokedBy};
use crate::kv::KvError;
use crate::service::now_ms;

impl NodeApi {
    pub(super) async fn revoke(
        &self,
        req: v1::RevokeCertificateRequest,
        by: &str,
    ) -> Result<v1::RevokeCertificateResponse> {
        self.state.ensure_healthy()?;
        let (kind, id) = revoked_id(&req)?;
        if req.reason.len() > MAX_FIELD {
            return Err(Error::InvalidArgument(
                "reason is longer than 512 bytes".into(),
            ));
        }
        let record = self.record_revocation(kind, &id, req.reason, by).await?;
        warn!(?kind, %id, by, reason = %record.reason, "certificate revoked");
        let deregistered = self.end_registrations(kind, &id).await?;
        Ok(v1::RevokeCertificateResponse {
            revoked: Some(revoked_message(kind, &id, &record)),
            deregistered,
        })
    }

    /// Stores the revocation unless it is stored already; returns the stored one.
    async fn record_revocation(
        &self,
        kind: RevokedBy,
        id: &str,
        reason: String,
        by: &str,
    ) -> Result<RevocationRecord> {
        let s = &self.state;
        let key = s.keys().revoked(kind, id);
        let record = match s.kv().get(&key).await? {
            // Idempotent: the first revocation's reason and time stay.
            Some(kv) => keys::decode::<RevocationRecord>(&kv.value),
            None => None,
        };
        if let Some(r) = record {
            return Ok(r);
        }
        let r = RevocationRecord {
            reason,
            revoked_by: by.to_owned(),
            revoked_at_ms: now_ms(),
        };
        // No lease: a revocation outlives every node and replica.
        let rev = s.kv().put(&key, keys::encode(&r), 0).await?;
        s.cache().wait_for(rev, s.config().lease_ttl).await;
        Ok(r)
    }

    /// Ends the registrations made with the revoked certificate now, rather than at
    /// their next keep-alive (which the interceptor refuses anyway); returns their nodes.
    async fn end_registrations(&self, kind: RevokedBy, id: &str) -> Result<Vec<String>> {
        let s = &self.state;
        let holders: Vec<(String, i64)> = s
            .cache()
            .read()
            .nodes
            .values()
            .filter(|n| match kind {
                RevokedBy::Serial => n.value.cert_serial == id,
                RevokedBy::Sha256 => n.value.cert_sha256 == id,
            })
            .map(|n| (n.value.id.clone(), n.value.lease))
            .collect();
        let mut deregistered = Vec::new();
        for (node, lease) in holders {
            match s.kv().revoke(lease).await {
                Ok(rev) => {
                    s.cache().wait_for(rev, s.config().lease_ttl).await;
                    warn!(%node, "registration made with a revoked certificate ended");
                    deregistered.push(node);
                }
                Err(KvError::LeaseNotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(deregistered)
    }
}

/// The certificate a request revokes: exactly one of a serial and a SHA-256
/// fingerprint, normalized.
fn revoked_id(req: &v1::RevokeCertificateRequest) -> Result<(RevokedBy, String)> {
    use strata_common::cert::{normalize_serial, normalize_sha256};
    match (req.serial.trim(), req.sha256.trim()) {
        (serial, "") if !serial.is_empty() => Ok((
            RevokedBy::Serial,
            normalize_serial(serial).ok_or_else(|| {
                Error::InvalidArgument("serial must be 1 to 40 hex digits".into())
            })?,
        )),
        ("", sha) if !sha.is_empty() => Ok((
            RevokedBy::Sha256,
            normalize_sha256(sha)
                .ok_or_else(|| Error::InvalidArgument("sha256 must be 64 hex digits".into()))?,
        )),
        _ => Err(Error::InvalidArgument(
            "set exactly one of serial and sha256".into(),
        )),
    }
}

fn revoked_message(kind: RevokedBy, id: &str, r: &RevocationRecord) -> v1::RevokedCertificate {
    let (serial, sha256) = match kind {
        RevokedBy::Serial => (id.to_owned(), String::new()),
        RevokedBy::Sha256 => (String::new(), id.to_owned()),
    };
    v1::RevokedCertificate {
        serial,
        sha256,
        reason: r.reason.clone(),
        revoked_by: r.revoked_by.clone(),
        revoked_at_ms: r.revoked_at_ms,
    }
}

/// Every revocation in the view, oldest first.
pub(super) fn revoked_list(view: &crate::cache::View) -> Vec<v1::RevokedCertificate> {
    let mut list: Vec<v1::RevokedCertificate> = view
        .revoked
        .iter()
        .map(|((kind, id), r)| revoked_message(*kind, id, r))
        .collect();
    list.sort_by_key(|r| r.revoked_at_ms);
    list
}
