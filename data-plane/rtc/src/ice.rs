//! ICE-lite for players (RFC 8445 §2.5): the node never sends a connectivity check, it only
//! answers the player's. A Binding request is answered, and may move the session's address,
//! only when its USERNAME names this session and its MESSAGE-INTEGRITY verifies with this
//! session's password. So remote candidates never make the node send anything anywhere, and
//! a forged request cannot steer another session's media.

use std::net::SocketAddr;

use rtc::crypto::RTCCrypto;
use rtc::stun::attributes::{ATTR_USE_CANDIDATE, ATTR_USERNAME};
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Message};
use rtc::stun::xoraddr::XorMappedAddress;

/// Why a STUN datagram was not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StunRefusal {
    /// Not a well-formed STUN message.
    Malformed,
    /// A STUN message, but not a Binding request (responses, indications: ICE-lite sends no
    /// requests, so it expects no responses).
    NotBindingRequest,
    /// USERNAME missing or not `"<our ufrag>:<their ufrag>"` of this session.
    WrongUsername,
    /// MESSAGE-INTEGRITY missing or wrong for this session's password.
    BadIntegrity,
}

/// A Binding request that passed every check.
pub(crate) struct CheckedRequest {
    message: Message,
    /// The controlling agent nominated this pair (USE-CANDIDATE).
    pub use_candidate: bool,
}

/// The ICE credentials of one session: ours (in the answer) and the player's (in its offer).
#[derive(Debug, Clone)]
pub(crate) struct IceCredentials {
    pub local_ufrag: String,
    pub local_pwd: String,
    pub remote_ufrag: String,
}

impl IceCredentials {
    /// Checks a datagram that starts like STUN (RFC 7983: first byte 0..=3).
    pub(crate) fn check(
        &self,
        data: &[u8],
        crypto: &dyn RTCCrypto,
    ) -> Result<CheckedRequest, StunRefusal> {
        let mut message = Message::new();
        message
            .unmarshal_binary(data)
            .map_err(|_| StunRefusal::Malformed)?;
        if message.typ != BINDING_REQUEST {
            return Err(StunRefusal::NotBindingRequest);
        }
        let username = message
            .get(ATTR_USERNAME)
            .map_err(|_| StunRefusal::WrongUsername)?;
        let expected = format!("{}:{}", self.local_ufrag, self.remote_ufrag);
        if username != expected.as_bytes() {
            return Err(StunRefusal::WrongUsername);
        }
        MessageIntegrity::check(&mut message, self.local_pwd.as_bytes(), crypto)
            .map_err(|_| StunRefusal::BadIntegrity)?;
        let use_candidate = message.contains(ATTR_USE_CANDIDATE);
        Ok(CheckedRequest {
            message,
            use_candidate,
        })
    }

    /// The Binding success response to a checked request from `from`.
    pub(crate) fn success(
        &self,
        request: &CheckedRequest,
        from: SocketAddr,
        crypto: &dyn RTCCrypto,
    ) -> Option<Vec<u8>> {
        let mut out = Message::new();
        out.build(&[
            Box::new(request.message.clone()),
            Box::new(BINDING_SUCCESS),
            Box::new(XorMappedAddress {
                ip: from.ip(),
                port: from.port(),
            }),
            Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
                self.local_pwd.clone(),
                crypto,
            )),
            Box::new(FINGERPRINT),
        ])
        .ok()?;
        Some(out.raw)
    }
}

/// Whether a STUN message's MESSAGE-INTEGRITY verifies with `pwd` (short-term credentials).
pub(crate) fn integrity_ok(data: &[u8], pwd: &str, crypto: &dyn RTCCrypto) -> bool {
    let mut message = Message::new();
    message.unmarshal_binary(data).is_ok()
        && MessageIntegrity::check(&mut message, pwd.as_bytes(), crypto).is_ok()
}

/// True when a datagram is STUN by its first byte (RFC 7983 §7).
pub(crate) fn looks_like_stun(data: &[u8]) -> bool {
    data.first().is_some_and(|b| *b <= 3)
}

/// A Binding request from `username`, signed with `pwd` (short-term MESSAGE-INTEGRITY), with
/// a FINGERPRINT: what a player sends. For tests here and of the mux.
#[cfg(test)]
pub(crate) fn signed_binding_request(username: &str, pwd: &str, crypto: &dyn RTCCrypto) -> Vec<u8> {
    use rtc::stun::message::TransactionId;
    use rtc::stun::textattrs::Username;
    let mut m = Message::new();
    m.build(&[
        Box::new(BINDING_REQUEST),
        Box::new(TransactionId::new()),
        Box::new(Username::new(ATTR_USERNAME, username.to_owned())),
        Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
            pwd.to_owned(),
            crypto,
        )),
        Box::new(FINGERPRINT),
    ])
    .expect("build");
    m.raw
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> IceCredentials {
        IceCredentials {
            local_ufrag: "node".into(),
            local_pwd: "node-password-0123456789".into(),
            remote_ufrag: "peer".into(),
        }
    }

    use super::signed_binding_request as request;

    #[test]
    fn answers_only_requests_for_this_session_with_its_password() {
        let provider = rtc::crypto::default_provider().expect("crypto");
        let crypto = provider.crypto();
        let c = creds();
        let from: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let good = request("node:peer", &c.local_pwd, crypto);
        let checked = c.check(&good, crypto).expect("valid request");
        let answer = c.success(&checked, from, crypto).expect("answer");
        let mut parsed = Message::new();
        parsed.unmarshal_binary(&answer).expect("parse answer");
        assert_eq!(parsed.typ, BINDING_SUCCESS);
        MessageIntegrity::check(&mut parsed, c.local_pwd.as_bytes(), crypto).expect("signed");

        let wrong_pwd = request("node:peer", "another-password-0123", crypto);
        assert_eq!(
            c.check(&wrong_pwd, crypto).err(),
            Some(StunRefusal::BadIntegrity)
        );
        let wrong_user = request("other:peer", &c.local_pwd, crypto);
        assert_eq!(
            c.check(&wrong_user, crypto).err(),
            Some(StunRefusal::WrongUsername)
        );
        for len in 0..good.len() {
            assert!(c.check(&good[..len], crypto).is_err());
        }
        assert!(looks_like_stun(&good));
        assert!(!looks_like_stun(&[0x80, 0x60]));
    }
}
