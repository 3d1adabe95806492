//! Strata integration harness.

pub mod control;
pub mod etcd;
pub mod grpcurl;
pub mod ports;
