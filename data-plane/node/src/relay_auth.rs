//! Who may subscribe to a stream over this node's relay: a registered node
//! (a CA-signed certificate is not enough: a stolen or stale certificate of a
//! node that left is refused), naming the epoch of the origin record this
//! node holds for the stream. Revoked certificates never get this far: the
//! relay's TLS refuses them at the handshake (`peers.rs` keeps its list).

use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_relay::{Authorizer, Refusal, SubscribeErrorCode, SubscribeRequest};

use crate::origins::OriginEpochs;
use crate::peers::{PeerVerdict, PeerView};

/// A relay peer missing from the registry view triggers a refresh of the
/// view, at most this often.
pub const PEER_REFRESH_ON_MISS: Duration = Duration::from_secs(1);

/// The node's relay authorizer.
pub struct RelayAuthorizer {
    peers: Arc<PeerView>,
    origins: Arc<OriginEpochs>,
    /// `--insecure-relay`: peers carry no identity, so none is checked.
    insecure: bool,
}

fn refuse(code: SubscribeErrorCode, reason: String) -> Refusal {
    Refusal { code, reason }
}

impl RelayAuthorizer {
    /// An authorizer over the node's registry view and origin records.
    pub fn new(peers: Arc<PeerView>, origins: Arc<OriginEpochs>, insecure: bool) -> Self {
        RelayAuthorizer {
            peers,
            origins,
            insecure,
        }
    }

    /// The decision at `now`.
    pub fn decide(&self, req: &SubscribeRequest<'_>, now: Instant) -> Result<(), Refusal> {
        self.check_peer(req.peer, now)?;
        self.check_epoch(req.stream, req.epoch)
    }

    fn check_peer(&self, peer: Option<&str>, now: Instant) -> Result<(), Refusal> {
        let Some(peer) = peer else {
            // Insecure mode authenticates nobody: there is no identity to check.
            return match self.insecure {
                true => Ok(()),
                false => Err(refuse(
                    SubscribeErrorCode::NotAuthorized,
                    "the peer's certificate names no node".into(),
                )),
            };
        };
        match self.peers.check(peer, now, PEER_REFRESH_ON_MISS) {
            PeerVerdict::Registered => Ok(()),
            // Maybe registered since the view was fetched: retryable
            // (`NotFound` keeps the peer's puller retrying rather than
            // reporting this node unreachable) while the view refreshes.
            PeerVerdict::NotYet => Err(refuse(
                SubscribeErrorCode::NotFound,
                format!(
                    "peer {peer:?} is not a registered node in this node's view; \
                     refreshing the view, retry"
                ),
            )),
            PeerVerdict::NotRegistered => Err(refuse(
                SubscribeErrorCode::NotAuthorized,
                format!("peer {peer:?} is not a registered node"),
            )),
        }
    }

    fn check_epoch(&self, stream: &str, epoch: u64) -> Result<(), Refusal> {
        match self.origins.get(stream) {
            Some(e) if u64::try_from(e).ok() == Some(epoch) => Ok(()),
            Some(e) => Err(refuse(
                SubscribeErrorCode::StaleEpoch,
                format!("this node's origin record of {stream:?} has epoch {e}, not {epoch}"),
            )),
            None => Err(refuse(
                SubscribeErrorCode::NotFound,
                format!("this node is not an origin of {stream:?}"),
            )),
        }
    }
}

impl Authorizer for RelayAuthorizer {
    fn authorize(&self, request: &SubscribeRequest<'_>) -> Result<(), Refusal> {
        self.decide(request, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        peers: Arc<PeerView>,
        origins: Arc<OriginEpochs>,
        t0: Instant,
    }

    fn fixture() -> Fixture {
        let peers = Arc::new(PeerView::default());
        let t0 = Instant::now();
        let listing = [("n2", "eu"), ("n3", "us")].map(|(n, r)| (n.to_owned(), r.to_owned()));
        peers.set_regions(listing.into(), t0);
        let origins = Arc::new(OriginEpochs::default());
        origins.set("s", 7);
        Fixture { peers, origins, t0 }
    }

    impl Fixture {
        fn authorizer(&self, insecure: bool) -> RelayAuthorizer {
            RelayAuthorizer::new(self.peers.clone(), self.origins.clone(), insecure)
        }
    }

    fn req<'a>(peer: Option<&'a str>, stream: &'a str, epoch: u64) -> SubscribeRequest<'a> {
        SubscribeRequest {
            peer,
            stream,
            epoch,
        }
    }

    fn code(r: Result<(), Refusal>) -> Option<SubscribeErrorCode> {
        r.err().map(|r| r.code)
    }

    #[test]
    fn a_registered_peer_naming_the_held_epoch_is_served() {
        let f = fixture();
        let a = f.authorizer(false);
        assert_eq!(a.decide(&req(Some("n2"), "s", 7), f.t0), Ok(()));
        // Any region: the relay serves every registered node.
        assert_eq!(a.decide(&req(Some("n3"), "s", 7), f.t0), Ok(()));
    }

    #[test]
    fn a_stale_epoch_or_a_stream_not_held_is_refused() {
        let f = fixture();
        let a = f.authorizer(false);
        let stale = a.decide(&req(Some("n2"), "s", 6), f.t0);
        assert_eq!(code(stale), Some(SubscribeErrorCode::StaleEpoch));
        let other = a.decide(&req(Some("n2"), "other", 7), f.t0);
        assert_eq!(code(other), Some(SubscribeErrorCode::NotFound));
        // Released: not an origin any more.
        f.origins.clear("s");
        let gone = a.decide(&req(Some("n2"), "s", 7), f.t0);
        assert_eq!(code(gone), Some(SubscribeErrorCode::NotFound));
    }

    #[test]
    fn an_unknown_node_is_retryable_until_a_newer_view_still_lacks_it() {
        let f = fixture();
        let a = f.authorizer(false);
        let t1 = f.t0 + Duration::from_millis(10);
        let first = a.decide(&req(Some("rogue"), "s", 7), t1);
        assert_eq!(code(first), Some(SubscribeErrorCode::NotFound));
        // The refresh after the miss still does not list it.
        let t2 = t1 + Duration::from_millis(10);
        let listing = [("n2", "eu")].map(|(n, r)| (n.to_owned(), r.to_owned()));
        f.peers.set_regions(listing.into(), t2);
        let then = a.decide(&req(Some("rogue"), "s", 7), t2);
        assert_eq!(code(then), Some(SubscribeErrorCode::NotAuthorized));
        // A node that left the registry is refused the same way.
        let left = a.decide(&req(Some("n3"), "s", 7), t2);
        assert_eq!(code(left), Some(SubscribeErrorCode::NotFound));
    }

    #[test]
    fn a_node_registered_after_the_view_is_served_once_listed() {
        let f = fixture();
        let a = f.authorizer(false);
        let t1 = f.t0 + Duration::from_millis(10);
        let early = a.decide(&req(Some("n4"), "s", 7), t1);
        assert_eq!(code(early), Some(SubscribeErrorCode::NotFound));
        let listing = [("n2", "eu"), ("n4", "eu")].map(|(n, r)| (n.to_owned(), r.to_owned()));
        f.peers
            .set_regions(listing.into(), t1 + Duration::from_millis(10));
        let later = a.decide(&req(Some("n4"), "s", 7), t1 + Duration::from_millis(20));
        assert_eq!(later, Ok(()));
    }

    #[test]
    fn a_peer_without_identity_passes_only_in_insecure_mode() {
        let f = fixture();
        let secure = f.authorizer(false).decide(&req(None, "s", 7), f.t0);
        assert_eq!(code(secure), Some(SubscribeErrorCode::NotAuthorized));
        let insecure = f.authorizer(true);
        assert_eq!(insecure.decide(&req(None, "s", 7), f.t0), Ok(()));
        // The epoch is still checked.
        let stale = insecure.decide(&req(None, "s", 8), f.t0);
        assert_eq!(code(stale), Some(SubscribeErrorCode::StaleEpoch));
    }

    #[test]
    fn an_empty_view_at_start_refuses_as_retryable() {
        // Before the first listing arrives (the node is still registering).
        let peers = Arc::new(PeerView::default());
        let origins = Arc::new(OriginEpochs::default());
        let a = RelayAuthorizer::new(peers, origins, false);
        let r = a.decide(&req(Some("n2"), "s", 1), Instant::now());
        assert_eq!(code(r), Some(SubscribeErrorCode::NotFound));
    }
}
