//! SRTP keys of a player session, exported from its completed DTLS handshake (RFC 5764).

use std::sync::Arc;

use rtc::crypto::RTCCryptoProvider;
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;

use super::{DTLS_PEER, Session};

impl Session {
    pub(super) fn srtp_contexts(
        &self,
        crypto: &Arc<dyn RTCCryptoProvider>,
    ) -> Result<(Context, Context), rtc::shared::error::Error> {
        let state = self
            .dtls
            .get_connection_state(DTLS_PEER)
            .ok_or(rtc::shared::error::Error::ErrNoSuchSrtpProfile)?;
        let profile = match state.srtp_protection_profile() {
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => ProtectionProfile::AeadAes128Gcm,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => {
                ProtectionProfile::Aes128CmHmacSha1_80
            }
            _ => return Err(rtc::shared::error::Error::ErrNoSuchSrtpProfile),
        };
        let mut config = rtc::srtp::config::Config {
            profile,
            ..Default::default()
        };
        let material = state.export_keying_material(
            rtc::srtp::config::LABEL_EXTRACTOR_DTLS_SRTP,
            &[],
            config.keying_material_len(),
        )?;
        config.set_session_keys_from_keying_material(material.as_ref(), state.is_client())?;
        let local = Context::new(
            &config.keys.local_master_key,
            &config.keys.local_master_salt,
            profile,
            None,
            None,
            crypto.crypto(),
        )?;
        let remote = Context::new(
            &config.keys.remote_master_key,
            &config.keys.remote_master_salt,
            profile,
            None,
            Some(rtc::srtp::option::srtcp_replay_protection(64)),
            crypto.crypto(),
        )?;
        Ok((local, remote))
    }
}
