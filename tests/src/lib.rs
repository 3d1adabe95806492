//! Strata integration harness.

pub mod etcd;
pub mod grpcurl;
pub mod ports;
