//! Strata control plane.
