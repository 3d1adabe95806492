//! A publisher's media as the node's sessions see it, whatever its protocol: its control side
//! ([`Feed`]: a WHIP session or an encoder connection) and its packets ([`Media`]).

use std::sync::Mutex;

use strata_media::{Catalog, MediaPacket, TrackId};
use strata_rtc::{PublisherHandle, RtcError};
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;

/// The control side of a publisher, whatever its protocol.
pub(crate) enum Feed {
    /// A WHIP publisher's WebRTC session.
    Whip(PublisherHandle),
    /// An encoder's RTMP or SRT connection.
    Encoder(EncoderEnd),
}

/// The session's end of an encoder connection: the catalog read from its
/// codec headers, and the signal that ends the connection.
pub(crate) struct EncoderEnd {
    catalog: Catalog,
    close: Mutex<Option<oneshot::Sender<()>>>,
}

impl EncoderEnd {
    /// The end of a connection whose media has `catalog`; the connection
    /// ends when `close` fires or is dropped.
    pub(crate) fn new(catalog: Catalog, close: oneshot::Sender<()>) -> Self {
        EncoderEnd {
            catalog,
            close: Mutex::new(Some(close)),
        }
    }
}

impl Feed {
    /// The publisher's tracks.
    pub(crate) fn catalog(&self) -> &Catalog {
        match self {
            Feed::Whip(h) => h.catalog(),
            Feed::Encoder(e) => &e.catalog,
        }
    }

    /// Asks the publisher for a keyframe. An encoder cannot be asked (RTMP
    /// and SRT have no such message): players wait for its next one.
    pub(crate) async fn request_keyframe(&self, track: TrackId) -> Result<(), RtcError> {
        match self {
            Feed::Whip(h) => h.request_keyframe(track).await,
            Feed::Encoder(_) => Ok(()),
        }
    }

    /// Resolves when the publisher's session is closed. An encoder's
    /// connection ending shows as the end of its packets instead.
    pub(crate) async fn closed(&self) {
        match self {
            Feed::Whip(h) => h.closed().await,
            Feed::Encoder(_) => std::future::pending().await,
        }
    }

    /// Ends the publisher's session (or connection).
    pub(crate) async fn close(&self) {
        match self {
            Feed::Whip(h) => h.close().await,
            Feed::Encoder(e) => {
                let tx = e.close.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(tx) = tx {
                    let _ = tx.send(());
                }
            }
        }
    }
}

/// A publisher's media: its control side and its packets.
pub(crate) type Media = (Feed, mpsc::Receiver<MediaPacket>);

/// Which publisher of a stream a WHIP POST is (`?role=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The stream's publisher (the default).
    Primary,
    /// Its backup publisher, on another node.
    Backup,
}

/// The `role` query parameter: `primary` (the default) or `backup`; any other
/// value is a 400.
pub fn role_of(query: Option<&str>) -> Result<Role, ApiError> {
    let value = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("role="));
    parse_role(value)
}

/// A role's name (`None`: not given, a primary); any other name than
/// `primary` or `backup` is a 400.
pub fn parse_role(value: Option<&str>) -> Result<Role, ApiError> {
    match value {
        None | Some("primary") => Ok(Role::Primary),
        Some("backup") => Ok(Role::Backup),
        Some(_) => Err(ApiError::BadRequest(
            "role must be primary or backup".into(),
        )),
    }
}
