//! Strata's gRPC API, package `strata.v1`.
//!
//! The `.proto` files under `proto/strata/v1` are the source of truth; this
//! crate compiles them with `tonic-prost-build` and exposes the file
//! descriptor set that the control plane serves over gRPC reflection.

/// Package `strata.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("strata.v1");
}

/// Encoded `FileDescriptorSet` of every Strata proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("strata_descriptor");

pub mod pushback;
