//! Strata relay over QUIC.
