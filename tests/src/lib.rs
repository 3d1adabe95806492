//! Strata integration harness.
