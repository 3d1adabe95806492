//! Strata media units and the per-stream hub.

pub mod hub;
pub mod media;

pub use media::{Catalog, Layer, MediaPacket, TrackId, TrackInfo, TrackKind};
