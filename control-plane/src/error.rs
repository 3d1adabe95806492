//! Control-plane errors and their one conversion to gRPC status codes.

use crate::kv::KvError;
use strata_common::names::InvalidName;

/// Why a control-plane request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of the request is malformed (a name, an address, a URL).
    #[error("{0}")]
    InvalidArgument(String),
    /// The thing asked about does not exist (stream not live, unknown node).
    #[error("{0}")]
    NotFound(String),
    /// Another node already holds what was claimed.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is well formed but the caller's state forbids it (e.g. the
    /// calling node is not registered, or is not the stream's origin).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller may not do this (a revoked certificate, an address its
    /// certificate does not name).
    #[error("{0}")]
    PermissionDenied(String),
    /// The store (etcd) is unreachable; retry later.
    #[error("{0}")]
    Unavailable(String),
    /// A store failure that is not about reachability.
    #[error("{0}")]
    Internal(String),
    /// The replica's budget for this kind of call is spent (see `service/admission.rs`);
    /// retry after `retry_after`.
    #[error("{message}")]
    ResourceExhausted {
        /// What ran out.
        message: String,
        /// How long the caller should wait before retrying.
        retry_after: std::time::Duration,
    },
}

impl From<InvalidName> for Error {
    fn from(e: InvalidName) -> Self {
        Error::InvalidArgument(e.to_string())
    }
}

impl From<KvError> for Error {
    fn from(e: KvError) -> Self {
        match e {
            KvError::Unavailable(m) => Error::Unavailable(format!("store unavailable: {m}")),
            KvError::LeaseNotFound(_) => Error::FailedPrecondition(
                "the node's lease has expired; the node must register again".into(),
            ),
            KvError::Compacted => Error::Unavailable("store resyncing; retry".into()),
            KvError::Other(m) => Error::Internal(format!("store error: {m}")),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        match e {
            Error::InvalidArgument(_) => tonic::Status::invalid_argument(msg),
            Error::NotFound(_) => tonic::Status::not_found(msg),
            Error::AlreadyExists(_) => tonic::Status::already_exists(msg),
            Error::FailedPrecondition(_) => tonic::Status::failed_precondition(msg),
            Error::PermissionDenied(_) => tonic::Status::permission_denied(msg),
            Error::Unavailable(_) => tonic::Status::unavailable(msg),
            Error::Internal(_) => tonic::Status::internal(msg),
            Error::ResourceExhausted { retry_after, .. } => {
                strata_proto::pushback::resource_exhausted(msg, retry_after)
            }
        }
    }
}

/// Result of a control-plane operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
