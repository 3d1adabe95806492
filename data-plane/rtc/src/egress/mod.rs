//! The WHEP egress engine: a few loops (one per core by default) drive every player of the
//! node, instead of a peer connection with its own tasks per player.
//!
//! * A player is a sans-IO [`session::Session`]: ICE-lite ([`ice`]), a DTLS server (the
//!   `rtc` family's DTLS endpoint), SRTP contexts, and per track an [`RtpRewriter`](crate::RtpRewriter).
//! * Each loop ([`worker`]) owns its sessions. A stream's packets reach a loop once, through
//!   one hub sink, and the loop fans them out to its players of that stream: one rewrite and
//!   one SRTP seal per player, no task, no channel hop, no copy of the packet per player.
//! * NACKs are answered from the loop's shared history of the stream ([`history`]) within a
//!   per-player budget ([`nack`]); keyframe requests go to the hub, which coalesces them.
//! * The node's one UDP port is shared with the publishers' peer connections: the mux routes
//!   a player's STUN by its ufrag to its loop, and its other datagrams by the address a
//!   checked STUN request proved.

pub(crate) mod answer;
mod estimate;
mod flow;
mod history;
mod layers;
mod nack;
mod pacer;
mod player;
mod probe;
mod rtp;
mod selector;
mod session;
mod stats;
mod twcc;
mod vp8ids;
mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use rand::Rng;
use rtc::crypto::{HashAlgorithm, RTCCryptoProvider};
use rtc::dtls::config::{
    ClientAuthType, ConfigBuilder, ExtendedMasterSecretType, HandshakeConfig,
    VerifyPeerCertificateFn,
};
use rtc::dtls::crypto::Certificate;
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use strata_media::hub::StreamHandle;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info};

pub use answer::LayerPref;
pub use player::EgressPlayer;
pub use stats::{Counter, EgressCounters, Gauge, PlayerInfo};

use crate::ice::IceCredentials;
use crate::mux::UdpMux;
use crate::sdp::{self, ParsedOffer};
use crate::{RtcConfig, RtcError, SessionState};
use answer::LocalDescription;
use nack::NackBudget;
use player::count_offer_candidates;
use session::{Session, SessionLimits};
use worker::{Command, Inputs, Worker};

/// Queued commands per loop.
const COMMAND_QUEUE: usize = 1024;
/// Queued datagrams per loop (players' STUN, DTLS, RTCP).
const DATAGRAM_QUEUE: usize = 4096;
/// Queued packet batches per loop.
const MEDIA_QUEUE: usize = 1024;

struct LoopHandle {
    commands: mpsc::Sender<Command>,
    load: Arc<AtomicUsize>,
}

struct Inner {
    loops: Vec<LoopHandle>,
    candidates: Vec<SocketAddr>,
    certificate: Certificate,
    fingerprint: String,
    crypto: Arc<dyn RTCCryptoProvider>,
    counters: Arc<EgressCounters>,
    next_id: AtomicU64,
    pending: Arc<AtomicUsize>,
    config: RtcConfig,
}

/// The egress engine of a node. Cheap to clone.
#[derive(Clone)]
pub struct Egress {
    inner: Arc<Inner>,
}

impl Egress {
    /// Starts `config.rtc_workers` loops on the mux's socket. Must be called within a Tokio
    /// runtime.
    pub(crate) fn start(
        config: &RtcConfig,
        mux: &Arc<UdpMux>,
        candidates: Vec<SocketAddr>,
    ) -> Result<Egress, RtcError> {
        let crypto =
            rtc::crypto::default_provider().map_err(|e| RtcError::Config(e.to_string()))?;
        let certificate =
            Certificate::generate_self_signed(vec!["strata".to_owned()], crypto.crypto())
                .map_err(|e| RtcError::Config(format!("DTLS certificate: {e}")))?;
        let der = certificate
            .certificate
            .first()
            .ok_or_else(|| RtcError::Config("DTLS certificate without DER".into()))?;
        let digest = crypto
            .crypto()
            .hash(HashAlgorithm::Sha256, der.as_ref())
            .map_err(|e| RtcError::Config(e.to_string()))?;
        let fingerprint = digest
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        let counters = Arc::new(EgressCounters::default());
        let workers = config.rtc_workers.max(1);
        let mut loops = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (commands, commands_rx) = mpsc::channel(COMMAND_QUEUE);
            let (datagram_tx, datagrams) = mpsc::channel(DATAGRAM_QUEUE);
            let (media_tx, media) = mpsc::channel(MEDIA_QUEUE);
            let inputs = Inputs {
                commands: commands_rx,
                datagrams,
                media,
                media_tx,
                datagram_tx,
            };
            let load = Arc::new(AtomicUsize::new(0));
            let worker = Worker::new(
                Arc::clone(mux),
                Arc::clone(&crypto),
                Arc::clone(&load),
                &inputs,
            );
            tokio::spawn(worker.run(inputs));
            loops.push(LoopHandle { commands, load });
        }
        info!(workers, "egress loops started");
        Ok(Egress {
            inner: Arc::new(Inner {
                loops,
                candidates,
                certificate,
                fingerprint,
                crypto,
                counters,
                next_id: AtomicU64::new(1),
                pending: Arc::new(AtomicUsize::new(0)),
                config: config.clone(),
            }),
        })
    }

    /// The egress's counters.
    pub fn counters(&self) -> &EgressCounters {
        &self.inner.counters
    }

    /// Sessions that have not completed DTLS yet.
    pub fn pending(&self) -> usize {
        self.inner.pending.load(Ordering::Relaxed)
    }

    /// Player sessions per loop.
    pub fn loop_loads(&self) -> Vec<usize> {
        self.inner
            .loops
            .iter()
            .map(|l| l.load.load(Ordering::Relaxed))
            .collect()
    }

    /// Accepts a WHEP offer for a stream the node carries: the player's session goes to the
    /// least loaded loop, and the answer comes back at once (ICE-lite, no gathering).
    pub async fn accept(
        &self,
        offer_sdp: &str,
        stream: &StreamHandle,
    ) -> Result<(EgressPlayer, String), RtcError> {
        self.accept_with(offer_sdp, stream, LayerPref::Auto).await
    }

    /// [`Egress::accept`] with the player's choice of simulcast layer (ignored for a stream
    /// without layers).
    pub async fn accept_with(
        &self,
        offer_sdp: &str,
        stream: &StreamHandle,
        pref: LayerPref,
    ) -> Result<(EgressPlayer, String), RtcError> {
        let inner = &self.inner;
        if inner.pending.load(Ordering::Relaxed) >= inner.config.max_pending {
            return Err(RtcError::Busy("too many players still connecting".into()));
        }
        let (offer, remote_ufrag) = self.parse_offer(offer_sdp)?;
        let dtls = self.dtls_config(&offer)?;
        let catalog = stream.catalog();
        let (assigned, ice) = {
            let mut rng = rand::rng();
            let assigned = answer::assign(&offer, &catalog, pref, || rng.random::<u32>() | 1)?;
            let ice = IceCredentials {
                local_ufrag: random_token(&mut rng, 16),
                local_pwd: random_token(&mut rng, 32),
                remote_ufrag,
            };
            (assigned, ice)
        };
        let (usable, refused) = count_offer_candidates(offer_sdp, &inner.config);
        inner.counters.refused_candidates.add(refused);
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let answer = answer::write(
            &offer,
            &assigned,
            &LocalDescription {
                ice_ufrag: &ice.local_ufrag,
                ice_pwd: &ice.local_pwd,
                fingerprint: &inner.fingerprint,
                candidates: &inner.candidates,
                session_id: id,
            },
        )?;
        let (state_tx, state) = watch::channel(SessionState::Connecting);
        let info = Arc::new(PlayerInfo::default());
        let session = Session::new(
            id,
            Arc::from(stream.name()),
            ice,
            dtls,
            &assigned,
            state_tx,
            Instant::now(),
            self.session_limits(),
            NackBudget::new(),
            Arc::clone(&inner.counters),
        )
        .with_info(Arc::clone(&info));
        let chosen = self.add_to_least_loaded(session, stream).await?;
        inner.pending.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(count_pending(state.clone(), Arc::clone(&inner.pending)));
        debug!(
            session = id,
            tracks = assigned.len(),
            "egress player accepted"
        );
        Ok((
            EgressPlayer {
                id,
                commands: chosen.commands.clone(),
                state,
                counters: Arc::clone(&inner.counters),
                // The cap covers the offer and PATCH together.
                candidates: Arc::new(AtomicUsize::new(usable)),
                remote_ufrag: offer.ice_ufrag.clone().unwrap_or_default(),
                config: inner.config.clone(),
                info,
            },
            answer,
        ))
    }

    /// The player's offer, within the size limits, with the ICE credentials a session needs
    /// (returned: the remote ufrag).
    fn parse_offer(&self, offer_sdp: &str) -> Result<(ParsedOffer, String), RtcError> {
        let config = &self.inner.config;
        let offer = sdp::parse_offer(offer_sdp, config.max_sdp_bytes, config.max_sdp_lines)?;
        let remote_ufrag = offer
            .ice_ufrag
            .clone()
            .ok_or_else(|| RtcError::InvalidSdp("no a=ice-ufrag".into()))?;
        if offer.ice_pwd.is_none() {
            return Err(RtcError::InvalidSdp("no a=ice-pwd".into()));
        }
        Ok((offer, remote_ufrag))
    }

    fn session_limits(&self) -> SessionLimits {
        SessionLimits {
            connect_timeout: self.inner.config.connect_timeout,
            idle_timeout: self.inner.config.idle_timeout,
        }
    }

    /// Hands the session to the loop with the fewest players; returns that loop.
    async fn add_to_least_loaded(
        &self,
        session: Session,
        stream: &StreamHandle,
    ) -> Result<&LoopHandle, RtcError> {
        let chosen = self
            .inner
            .loops
            .iter()
            .min_by_key(|l| l.load.load(Ordering::Relaxed))
            .ok_or_else(|| RtcError::Config("no egress loop".into()))?;
        chosen
            .commands
            .send(Command::Add(Box::new(session), stream.clone()))
            .await
            .map_err(|_| RtcError::Closed)?;
        Ok(chosen)
    }

    /// A DTLS server configuration that accepts only the certificate the offer names.
    fn dtls_config(&self, offer: &ParsedOffer) -> Result<Arc<HandshakeConfig>, RtcError> {
        let wanted: Vec<String> = offer
            .fingerprints
            .iter()
            .filter(|(algorithm, _)| algorithm == "sha-256")
            .map(|(_, value)| value.clone())
            .collect();
        if wanted.is_empty() {
            return Err(RtcError::InvalidSdp(
                "no a=fingerprint:sha-256 in the offer".into(),
            ));
        }
        if offer.setup.as_deref() == Some("passive") {
            return Err(RtcError::OfferRejected(
                "a=setup:passive: the player must be the DTLS client".into(),
            ));
        }
        let crypto = Arc::clone(&self.inner.crypto);
        let verify: VerifyPeerCertificateFn = Arc::new(move |certs, _| {
            let first = certs
                .first()
                .ok_or(rtc::shared::error::Error::ErrNonCertificate)?;
            let digest = crypto
                .crypto()
                .hash(HashAlgorithm::Sha256, first)
                .map_err(|e| rtc::shared::error::Error::Crypto(e.to_string()))?;
            let seen = digest
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":");
            if wanted.contains(&seen) {
                Ok(())
            } else {
                Err(rtc::shared::error::Error::ErrNoMatchingCertificateFingerprint)
            }
        });
        let config = ConfigBuilder::default()
            .with_crypto_provider(Arc::clone(&self.inner.crypto))
            .with_certificates(vec![self.inner.certificate.clone()])
            .with_srtp_protection_profiles(vec![
                SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
                SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
            ])
            .with_client_auth(ClientAuthType::RequireAnyClientCert)
            .with_insecure_skip_verify(true)
            .with_verify_peer_certificate(Some(verify))
            .with_extended_master_secret(ExtendedMasterSecretType::Require)
            .build(false, None)
            .map_err(|e| RtcError::Config(format!("DTLS configuration: {e}")))?;
        Ok(Arc::new(config))
    }
}

/// What [`Egress::accept`] does to an offer before any session exists: codec assignment and
/// the answer (for the fuzz targets, through [`crate::check`]). Returns the tracks assigned.
pub(crate) fn check_offer(
    offer: &ParsedOffer,
    catalog: &strata_media::Catalog,
) -> Result<usize, RtcError> {
    let mut ssrc = 0u32;
    let assigned = answer::assign(offer, catalog, LayerPref::Auto, || {
        ssrc += 1;
        ssrc
    })?;
    let candidates = [SocketAddr::from(([127, 0, 0, 1], 9))];
    answer::write(
        offer,
        &assigned,
        &LocalDescription {
            ice_ufrag: "check",
            ice_pwd: "check-password-0123456789",
            fingerprint: "00:11",
            candidates: &candidates,
            session_id: 1,
        },
    )?;
    Ok(assigned.len())
}

/// Keeps the pending count while a session connects.
async fn count_pending(mut state: watch::Receiver<SessionState>, pending: Arc<AtomicUsize>) {
    let _ = state.wait_for(|s| *s != SessionState::Connecting).await;
    pending.fetch_sub(1, Ordering::Relaxed);
}

fn random_token(rng: &mut impl Rng, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}
