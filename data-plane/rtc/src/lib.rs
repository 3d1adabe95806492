//! Strata WebRTC edge.
