//! The built-in pages, embedded in the binary (no external assets).

/// `GET /play/{stream}`: plays over WHEP, shows live stats.
pub const PLAY: &str = include_str!("pages/play.html");

/// `GET /publish/{stream}`: publishes the camera over WHIP.
pub const PUBLISH: &str = include_str!("pages/publish.html");
