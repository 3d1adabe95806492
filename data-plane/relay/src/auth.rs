//! Who may subscribe to what: the node's policy, called on every `Subscribe`.

use crate::framing::SubscribeErrorCode;

/// A subscription request as the authorizer sees it.
#[derive(Debug, Clone, Copy)]
pub struct SubscribeRequest<'a> {
    /// The peer's node id from its certificate (`None` in insecure mode).
    pub peer: Option<&'a str>,
    /// The stream asked for.
    pub stream: &'a str,
    /// The origin-record epoch the peer resolved.
    pub epoch: u64,
}

/// Why the authorizer refused a request; sent to the peer as `SubscribeError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Usually [`SubscribeErrorCode::StaleEpoch`] or [`SubscribeErrorCode::NotAuthorized`].
    pub code: SubscribeErrorCode,
    /// Human-readable detail for the peer's logs.
    pub reason: String,
}

/// The node's subscription policy (epoch check, peer allow-list…).
pub trait Authorizer: Send + Sync + 'static {
    /// `Ok` to serve the request.
    fn authorize(&self, request: &SubscribeRequest<'_>) -> Result<(), Refusal>;
}

impl<F> Authorizer for F
where
    F: Fn(&SubscribeRequest<'_>) -> Result<(), Refusal> + Send + Sync + 'static,
{
    fn authorize(&self, request: &SubscribeRequest<'_>) -> Result<(), Refusal> {
        self(request)
    }
}

/// Serves every request for a stream the hub carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize(&self, _request: &SubscribeRequest<'_>) -> Result<(), Refusal> {
        Ok(())
    }
}
