//! Strata integration harness.

pub mod bench;
pub mod cluster;
pub mod control;
pub mod dirs;
pub mod etcd;
pub mod faults;
pub mod grpcurl;
pub mod http;
pub mod media;
pub mod ports;
pub mod procs;
