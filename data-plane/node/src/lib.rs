//! Strata data-plane node.
