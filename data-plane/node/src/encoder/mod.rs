//! A publisher from an encoder (RTMP or SRT): the claim made before its
//! publish is accepted, then the conversion of its media (FLV tags, or
//! MPEG-TS) into the stream's hub source, and the cleanup.

pub mod key;

use std::sync::Arc;

use strata_common::names;
use strata_ingest::aac::AacConfig;
use strata_ingest::flv::{self, AudioTag, VideoTag};
use strata_ingest::h264::AvcConfig;
use strata_ingest::ts::TsDemuxer;
use strata_ingest::{Converter, ConverterConfig, IngestError};
use strata_media::MediaPacket;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::auth::{self, Action};
use crate::error::ApiError;
use crate::feed::{self, EncoderEnd, Feed, Role};
use crate::publish::{self, Admitted};
use crate::session_table::SessionKind;
use crate::state::NodeState;
use key::StreamKey;

/// Why a publish was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefusalKind {
    /// No token, or one that does not allow this publish.
    Unauthorized,
    /// Not a valid stream name.
    BadName,
    /// The stream is published already (here or elsewhere): WHIP's 409.
    Conflict,
    /// Draining, full, or the cluster unreachable: try another node or later.
    Unavailable,
}

/// A publish refused, with a description the encoder shows.
#[derive(Debug)]
pub(crate) struct Refusal {
    /// What kind of refusal.
    pub kind: RefusalKind,
    /// What went wrong, for the publisher.
    pub description: String,
}

impl Refusal {
    fn new(kind: RefusalKind, description: impl Into<String>) -> Self {
        Refusal {
            kind,
            description: description.into(),
        }
    }

    /// The RTMP status code (ffmpeg prints it with the description as
    /// "Server error: …").
    pub(crate) fn rtmp_code(&self) -> &'static str {
        match self.kind {
            RefusalKind::Unauthorized => "NetStream.Publish.Unauthorized",
            RefusalKind::BadName | RefusalKind::Conflict => "NetStream.Publish.BadName",
            RefusalKind::Unavailable => "NetStream.Publish.Rejected",
        }
    }
}

/// Checks an RTMP publish request (stream key, token, role, node state)
/// and admits the stream as a primary or backup, as a WHIP POST does.
pub(crate) async fn claim(state: &Arc<NodeState>, stream_key: &str) -> Result<Admitted, Refusal> {
    match key::parse(stream_key) {
        StreamKey::Named {
            stream,
            token,
            query,
        } => {
            let role = feed::role_of(query).map_err(bad_role)?;
            claim_named(state, stream, token, role).await
        }
        StreamKey::Token(token) => {
            let stream = state
                .auth
                .stream_of(token, Action::Publish, auth::unix_now())
                .map_err(|e| Refusal::new(RefusalKind::Unauthorized, e.to_string()))?;
            check_name(&stream)?;
            claim_checked(state, stream, Role::Primary).await
        }
    }
}

/// The refusal of an unknown `role`.
pub(crate) fn bad_role(e: ApiError) -> Refusal {
    Refusal::new(RefusalKind::BadName, e.to_string())
}

/// Checks a publish of `stream` as `role` with `token` (SRT's stream id, or
/// an RTMP key naming the stream) and admits it: a backup needs a token
/// with the backup claim.
pub(crate) async fn claim_named(
    state: &Arc<NodeState>,
    stream: &str,
    token: Option<&str>,
    role: Role,
) -> Result<Admitted, Refusal> {
    check_name(stream)?;
    let now = auth::unix_now();
    let checked = match role {
        Role::Primary => state.auth.check(token, stream, Action::Publish, now),
        Role::Backup => state.auth.check_backup(token, stream, now),
    };
    checked.map_err(|e| Refusal::new(RefusalKind::Unauthorized, e.to_string()))?;
    claim_checked(state, stream.to_owned(), role).await
}

async fn claim_checked(
    state: &Arc<NodeState>,
    stream: String,
    role: Role,
) -> Result<Admitted, Refusal> {
    if state.is_draining() {
        return Err(Refusal::new(
            RefusalKind::Unavailable,
            "this node is draining; publish to another node",
        ));
    }
    if state.sessions.count(SessionKind::Publisher) >= state.cfg.max_publishers as usize {
        return Err(Refusal::new(
            RefusalKind::Unavailable,
            "this node is at its publisher capacity; publish to another node",
        ));
    }
    // The same admission as a WHIP publish: a dead holder is taken over at
    // once; a backup registers the standby.
    publish::admit(state, &stream, role)
        .await
        .map_err(|e| match e {
            ApiError::Conflict(m) => {
                Refusal::new(RefusalKind::Conflict, format!("stream {stream:?}: {m}"))
            }
            e => {
                warn!(error = %e, "publish: the claim failed");
                Refusal::new(RefusalKind::Unavailable, "the cluster could not be reached")
            }
        })
}

fn check_name(stream: &str) -> Result<(), Refusal> {
    if names::is_valid(stream) {
        Ok(())
    } else {
        Err(Refusal::new(
            RefusalKind::BadName,
            "invalid stream name: allowed are 1 to 128 characters of A-Z a-z 0-9 . _ ~ -",
        ))
    }
}

/// Why a publishing connection must end.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The publisher sends a codec this node cannot carry.
    Unsupported(String),
    /// The stream got another source meanwhile.
    Conflict(String),
}

/// Packets an encoder connection may have on their way to its session.
const PACKETS: usize = 1024;

/// Where an encoder's publish is.
enum Phase {
    /// Admitted; its codec headers not read yet.
    Admitted(Admitted),
    /// A session ([`publish::start`]) takes its packets.
    Live(mpsc::Sender<MediaPacket>),
    /// Refused after admission, or given back.
    Ended,
}

/// What the encoder sends.
enum Input {
    /// FLV tags (RTMP).
    Flv(Box<Converter>),
    /// An MPEG-TS byte stream (SRT).
    Ts(Box<TsDemuxer>),
}

/// A publish accepted on an RTMP or SRT connection.
pub(crate) struct Publishing {
    state: Arc<NodeState>,
    stream: String,
    role: Role,
    input: Input,
    phase: Phase,
    /// Ends the connection (node shutdown), once the session is registered.
    pub stop: Option<oneshot::Receiver<()>>,
    bad_frames: u64,
}

impl Publishing {
    /// A publish whose media comes as FLV tags (RTMP).
    pub(crate) fn new(state: Arc<NodeState>, admitted: Admitted) -> Self {
        Self::with_input(
            state,
            admitted,
            Input::Flv(Box::new(Converter::new(converter_config()))),
        )
    }

    /// A publish whose media comes as MPEG-TS (SRT).
    pub(crate) fn new_ts(state: Arc<NodeState>, admitted: Admitted) -> Self {
        let demux = TsDemuxer::new(converter_config());
        Self::with_input(state, admitted, Input::Ts(Box::new(demux)))
    }

    fn with_input(state: Arc<NodeState>, admitted: Admitted, input: Input) -> Self {
        Publishing {
            state,
            stream: admitted.stream().to_owned(),
            role: admitted.role(),
            input,
            phase: Phase::Admitted(admitted),
            stop: None,
            bad_frames: 0,
        }
    }

    /// Whether media reaches the hub yet.
    pub(crate) fn is_live(&self) -> bool {
        matches!(self.phase, Phase::Live(_))
    }

    /// The stream's name.
    pub(crate) fn stream(&self) -> &str {
        &self.stream
    }

    fn converter(&self) -> &Converter {
        match &self.input {
            Input::Flv(c) => c,
            Input::Ts(d) => d.converter(),
        }
    }

    /// The next bytes of an MPEG-TS stream (SRT).
    pub(crate) async fn on_ts(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        let now = wall_clock_us();
        let r = match &mut self.input {
            Input::Ts(d) => d.push(bytes, now),
            Input::Flv(_) => Ok(Vec::new()),
        };
        self.take(r).await
    }

    /// One FLV video tag body at `ts_ms`.
    pub(crate) async fn on_video(&mut self, ts_ms: u32, body: &[u8]) -> Result<(), Stop> {
        let now = wall_clock_us();
        let Input::Flv(converter) = &mut self.input else {
            return Ok(());
        };
        let r = flv::parse_video(body).and_then(|tag| match tag {
            VideoTag::AvcConfig(record) => {
                converter.set_avc_config(AvcConfig::parse(record)?);
                Ok(Vec::new())
            }
            VideoTag::AvcFrame { cts_ms, data, .. } => {
                converter.push_video(ts_ms, cts_ms, data, now)
            }
            VideoTag::Ignored => Ok(Vec::new()),
        });
        self.take(r).await
    }

    /// One FLV audio tag body at `ts_ms`.
    pub(crate) async fn on_audio(&mut self, ts_ms: u32, body: &[u8]) -> Result<(), Stop> {
        let now = wall_clock_us();
        let Input::Flv(converter) = &mut self.input else {
            return Ok(());
        };
        let r = flv::parse_audio(body).and_then(|tag| match tag {
            AudioTag::AacConfig(asc) => {
                converter.set_aac_config(AacConfig::parse_asc(asc)?)?;
                Ok(Vec::new())
            }
            AudioTag::AacFrame(frame) => converter.push_aac(ts_ms, frame, now),
        });
        self.take(r).await
    }

    async fn take(&mut self, r: Result<Vec<MediaPacket>, IngestError>) -> Result<(), Stop> {
        let packets = match r {
            Ok(p) => p,
            Err(e) if e.is_unsupported() => return Err(Stop::Unsupported(e.to_string())),
            Err(e) => {
                // One bad frame is dropped; the stream goes on.
                self.bad_frames += 1;
                if self.bad_frames.is_power_of_two() {
                    debug!(error = %e, count = self.bad_frames, "frame dropped");
                }
                return Ok(());
            }
        };
        if matches!(self.phase, Phase::Admitted(_)) {
            let Some(catalog) = self.converter().catalog().cloned() else {
                return Ok(());
            };
            self.go_live(catalog).await?;
        }
        if let Phase::Live(tx) = &self.phase {
            for p in packets {
                if tx.send(p).await.is_err() {
                    return Err(Stop::Conflict("the stream's session ended".into()));
                }
            }
        }
        Ok(())
    }

    /// The codec headers are in: the publisher becomes a session (the hub's
    /// source, or the standby's warm group) fed through a channel.
    async fn go_live(&mut self, catalog: strata_media::Catalog) -> Result<(), Stop> {
        let Phase::Admitted(admitted) = std::mem::replace(&mut self.phase, Phase::Ended) else {
            return Ok(());
        };
        let state = &self.state;
        let (tx, rx) = mpsc::channel(PACKETS);
        let (close_tx, close_rx) = oneshot::channel();
        let feed = Feed::Encoder(EncoderEnd::new(catalog, close_tx));
        let counter = match self.input {
            Input::Flv(_) => &state.counters.rtmp_publishers_total,
            Input::Ts(_) => &state.counters.srt_publishers_total,
        };
        publish::start(
            state,
            admitted,
            (feed, rx),
            Arc::new(NoCandidates),
            Some(counter),
        )
        .await
        .map_err(|e| Stop::Conflict(e.to_string()))?;
        info!(stream = self.stream, role = ?self.role, "encoder publisher live");
        self.stop = Some(close_rx);
        self.phase = Phase::Live(tx);
        Ok(())
    }

    /// Ends the publish. A live one's session sees its packets end and
    /// cleans up (the stream unpublished or the standby released, local
    /// players given the orphan grace, the reservation last); one not live
    /// yet gives its admission back here.
    pub(crate) async fn finish(self) {
        match self.phase {
            Phase::Admitted(admitted) => admitted.give_back(&self.state).await,
            Phase::Live(tx) => drop(tx),
            Phase::Ended => {}
        }
        info!(stream = self.stream, "encoder publisher left");
    }
}

fn converter_config() -> ConverterConfig {
    ConverterConfig {
        video_ssrc: rand::random(),
        audio_ssrc: rand::random(),
        first_seq: rand::random(),
        ..ConverterConfig::default()
    }
}

/// The wall clock in microseconds, as the WHIP ingest stamps packets.
fn wall_clock_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// An RTMP or SRT session has no ICE: its (never handed out) session URL takes no
/// candidates.
struct NoCandidates;

#[tonic::async_trait]
impl crate::session_table::CandidateSink for NoCandidates {
    async fn add(&self, _sdpfrag: &str) -> Result<(), strata_rtc::RtcError> {
        Err(strata_rtc::RtcError::InvalidSdp(
            "an RTMP or SRT session takes no ICE candidates".into(),
        ))
    }
}
