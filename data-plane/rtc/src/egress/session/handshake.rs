//! A player session's handshake: ICE-lite answers to the player's checks (which may move its
//! address) and the DTLS handshake, with its retransmissions, until media may flow.

use super::*;

impl Session {
    pub(super) fn handle_stun(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
        crypto: &Arc<dyn RTCCryptoProvider>,
        out: &mut Vec<Transmit>,
    ) -> bool {
        let request = match self.ice.check(data, crypto.crypto()) {
            Ok(request) => request,
            Err(_) => {
                self.counters.refused_stun.inc();
                return false;
            }
        };
        self.last_received = now;
        if let Some(answer) = self.ice.success(&request, from, crypto.crypto()) {
            out.push((from, Bytes::from(answer)));
        }
        // ICE-lite: the controlling player nominates; until it does, its first checked
        // address serves. Only a request that passed MESSAGE-INTEGRITY gets here.
        let moved = self.remote != Some(from) && (request.use_candidate || self.remote.is_none());
        if moved {
            tracing::trace!(session = self.id, %from, nominated = request.use_candidate, "player address checked");
            self.remote = Some(from);
        }
        moved
    }

    pub(super) fn handle_dtls(
        &mut self,
        now: Instant,
        data: &[u8],
        crypto: &Arc<dyn RTCCryptoProvider>,
        out: &mut Vec<Transmit>,
        events: &mut Vec<SessionEvent>,
    ) {
        let result = self.dtls.read(now, DTLS_PEER, None, BytesMut::from(data));
        let before = out.len();
        self.flush_dtls(out);
        tracing::trace!(
            session = self.id,
            len = data.len(),
            replies = out.len() - before,
            ok = result.is_ok(),
            "DTLS in"
        );
        let dtls_events = match result {
            Ok(events) => events,
            Err(_) => {
                if self.local.is_none() {
                    // A failed handshake does not recover.
                    self.counters.dtls_failures.inc();
                    self.state.send_replace(SessionState::Closed);
                    events.push(SessionEvent::Closed);
                }
                return;
            }
        };
        for event in dtls_events {
            match event {
                EndpointEvent::HandshakeComplete => match self.srtp_contexts(crypto) {
                    Ok((local, remote)) => {
                        tracing::trace!(session = self.id, "DTLS complete");
                        self.local = Some(local);
                        self.remote_srtcp = Some(remote);
                        self.state.send_replace(SessionState::Connected);
                        self.next_report = now + MEDIA_DELAY;
                        self.media_at = Some(now + MEDIA_DELAY);
                    }
                    Err(_) => {
                        self.counters.dtls_failures.inc();
                        self.state.send_replace(SessionState::Closed);
                        events.push(SessionEvent::Closed);
                    }
                },
                EndpointEvent::PeerClosed => {
                    self.state.send_replace(SessionState::Closed);
                    events.push(SessionEvent::Closed);
                }
                _ => {}
            }
        }
    }

    pub(super) fn flush_dtls(&mut self, out: &mut Vec<Transmit>) {
        while let Some(transmit) = self.dtls.poll_transmit() {
            if let Some(to) = self.remote {
                out.push((to, transmit.message.freeze()));
            }
        }
    }

    /// Before DTLS completes: retransmits the handshake when due. True when it failed and the
    /// session closed.
    pub(super) fn handshake_timeout(&mut self, now: Instant, out: &mut Vec<Transmit>) -> bool {
        // The association exists from the player's first DTLS record on.
        let due = self
            .dtls
            .poll_timeout(&DTLS_PEER)
            .is_some_and(|at| at <= now);
        if due && self.dtls.handle_timeout(DTLS_PEER, now).is_err() {
            self.counters.dtls_failures.inc();
            self.close(now, out);
            return true;
        }
        self.flush_dtls(out);
        false
    }
}
