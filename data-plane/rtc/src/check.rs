//! The checks an offer or a trickled `sdpfrag` goes through before the WebRTC stack or any
//! socket sees it, as pure functions: the same code [`RtcEngine`](crate::RtcEngine) runs
//! on every WHIP/WHEP body, exposed for the fuzz targets (`fuzz/`) and their corpus test.

use std::net::SocketAddr;

use strata_media::Catalog;

use crate::{RtcError, egress, publisher, sdp};

/// A WHIP offer: size and line limits, SDP parse, codec choice. Returns the catalog a
/// publisher with this offer would publish.
pub fn publisher_offer(
    offer: &str,
    max_bytes: usize,
    max_lines: usize,
) -> Result<Catalog, RtcError> {
    let parsed = sdp::parse_offer(offer, max_bytes, max_lines)?;
    Ok(publisher::catalog_of(&parsed)?.0)
}

/// A WHEP offer for a stream with `catalog`: limits, parse, codec assignment and the answer
/// the egress would write. Returns the number of tracks the player would get.
pub fn player_offer(
    offer: &str,
    max_bytes: usize,
    max_lines: usize,
    catalog: &Catalog,
) -> Result<usize, RtcError> {
    let parsed = sdp::parse_offer(offer, max_bytes, max_lines)?;
    egress::check_offer(&parsed, catalog)
}

/// A trickle-ICE `sdpfrag` (PATCH body): returns the number of candidates taken.
pub fn sdpfrag(body: &str, max_bytes: usize, max_lines: usize) -> Result<usize, RtcError> {
    Ok(sdp::parse_sdpfrag(body, max_bytes, max_lines)?
        .candidates
        .len())
}

/// The candidate rewrite applied to every answer (untrusted text from the stack, which
/// echoes parts of the offer).
pub fn rewrite_candidates(answer: &str, addrs: &[SocketAddr]) -> String {
    sdp::rewrite_candidates(answer, addrs)
}
