//! A publisher from an encoder (RTMP or SRT): the claim made before its
//! publish is accepted, then the conversion of its media (FLV tags, or
//! MPEG-TS) into the stream's hub source, and the cleanup.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use strata_common::names;
use strata_ingest::aac::AacConfig;
use strata_ingest::flv::{self, AudioTag, VideoTag};
use strata_ingest::h264::AvcConfig;
use strata_ingest::ts::TsDemuxer;
use strata_ingest::{Converter, ConverterConfig, IngestError};
use strata_media::MediaPacket;
use strata_media::hub::Source;
use tokio::sync::oneshot;
use tracing::{Instrument, debug, info, warn};

use crate::auth::{self, Action};
use crate::error::ApiError;
use crate::rtmp::key::{self, StreamKey};
use crate::session_table::{PublishSlot, SessionEntry, SessionKind, session_log_id};
use crate::state::NodeState;

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

/// The stream reserved on this node and claimed as its main origin.
pub(crate) struct Claim {
    stream: String,
    epoch: i64,
    _slot: PublishSlot,
}

impl Claim {
    pub(crate) fn stream(&self) -> &str {
        &self.stream
    }
}

/// Checks an RTMP publish request (stream key, token, node state) and
/// claims the stream, as a WHIP POST does.
pub(crate) async fn claim(state: &Arc<NodeState>, stream_key: &str) -> Result<Claim, Refusal> {
    match key::parse(stream_key) {
        StreamKey::Named { stream, token } => claim_named(state, stream, token).await,
        StreamKey::Token(token) => {
            let stream = state
                .auth
                .stream_of(token, Action::Publish, auth::unix_now())
                .map_err(|e| Refusal::new(RefusalKind::Unauthorized, e.to_string()))?;
            check_name(&stream)?;
            claim_checked(state, stream).await
        }
    }
}

/// Checks a publish of `stream` with `token` (SRT's stream id, or an RTMP
/// key naming the stream) and claims it.
pub(crate) async fn claim_named(
    state: &Arc<NodeState>,
    stream: &str,
    token: Option<&str>,
) -> Result<Claim, Refusal> {
    check_name(stream)?;
    state
        .auth
        .check(token, stream, Action::Publish, auth::unix_now())
        .map_err(|e| Refusal::new(RefusalKind::Unauthorized, e.to_string()))?;
    claim_checked(state, stream.to_owned()).await
}

async fn claim_checked(state: &Arc<NodeState>, stream: String) -> Result<Claim, Refusal> {
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
    let Some(slot) = state.sessions.reserve_publish(&stream) else {
        return Err(Refusal::new(
            RefusalKind::Conflict,
            format!("stream {stream:?} is already published on this node"),
        ));
    };
    // The same claim as a WHIP publish: a dead holder is taken over at once.
    let refusal = |e: ApiError| match e {
        ApiError::Conflict(m) => {
            Refusal::new(RefusalKind::Conflict, format!("stream {stream:?}: {m}"))
        }
        e => {
            warn!(error = %e, "publish: the claim failed");
            Refusal::new(RefusalKind::Unavailable, "the cluster could not be reached")
        }
    };
    let origin = state.takeover.claim(&stream).await.map_err(refusal)?;
    if let Err(e) = crate::sessions::puller_handover(state, &stream).await {
        let _ = state
            .control
            .unpublish(&stream, state.id(), origin.epoch)
            .await;
        return Err(refusal(e));
    }
    Ok(Claim {
        stream,
        epoch: origin.epoch,
        _slot: slot,
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

/// The stream in the hub, once the catalog is known.
struct Live {
    source: Source,
    id: String,
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
    claim: Claim,
    input: Input,
    live: Option<Live>,
    /// Ends the connection (node shutdown), once the session is registered.
    pub stop: Option<oneshot::Receiver<()>>,
    bad_frames: u64,
}

impl Publishing {
    /// A publish whose media comes as FLV tags (RTMP).
    pub(crate) fn new(state: Arc<NodeState>, claim: Claim) -> Self {
        Self::with_input(
            state,
            claim,
            Input::Flv(Box::new(Converter::new(converter_config()))),
        )
    }

    /// A publish whose media comes as MPEG-TS (SRT).
    pub(crate) fn new_ts(state: Arc<NodeState>, claim: Claim) -> Self {
        let demux = TsDemuxer::new(converter_config());
        Self::with_input(state, claim, Input::Ts(Box::new(demux)))
    }

    fn with_input(state: Arc<NodeState>, claim: Claim, input: Input) -> Self {
        Publishing {
            state,
            claim,
            input,
            live: None,
            stop: None,
            bad_frames: 0,
        }
    }

    /// Whether media reaches the hub yet.
    pub(crate) fn is_live(&self) -> bool {
        self.live.is_some()
    }

    /// The stream's name.
    pub(crate) fn stream(&self) -> &str {
        &self.claim.stream
    }

    fn converter(&self) -> &Converter {
        match &self.input {
            Input::Flv(c) => c,
            Input::Ts(d) => d.converter(),
        }
    }

    /// The next bytes of an MPEG-TS stream (SRT).
    pub(crate) fn on_ts(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        let now = wall_clock_us();
        let r = match &mut self.input {
            Input::Ts(d) => d.push(bytes, now),
            Input::Flv(_) => Ok(Vec::new()),
        };
        self.take(r)
    }

    /// One FLV video tag body at `ts_ms`.
    pub(crate) fn on_video(&mut self, ts_ms: u32, body: &[u8]) -> Result<(), Stop> {
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
        self.take(r)
    }

    /// One FLV audio tag body at `ts_ms`.
    pub(crate) fn on_audio(&mut self, ts_ms: u32, body: &[u8]) -> Result<(), Stop> {
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
        self.take(r)
    }

    fn take(&mut self, r: Result<Vec<MediaPacket>, IngestError>) -> Result<(), Stop> {
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
        if self.live.is_none() {
            let Some(catalog) = self.converter().catalog().cloned() else {
                return Ok(());
            };
            self.go_live(catalog)?;
        }
        if let Some(live) = &self.live {
            for p in packets {
                self.state
                    .counters
                    .publisher_bytes_in
                    .fetch_add(p.rtp.len() as u64, Ordering::Relaxed);
                live.source.push(p);
            }
        }
        Ok(())
    }

    fn go_live(&mut self, catalog: strata_media::Catalog) -> Result<(), Stop> {
        let state = &self.state;
        let stream = self.claim.stream.clone();
        let source = state
            .hub
            .attach_source(&stream, catalog.clone())
            .map_err(|e| Stop::Conflict(e.to_string()))?;
        state.origins.set(&stream, self.claim.epoch);
        let id = state.sessions.new_id();
        let (stop_tx, stop_rx) = oneshot::channel();
        state.sessions.insert(
            id.clone(),
            SessionEntry {
                kind: SessionKind::Publisher,
                stream: stream.clone(),
                etag: String::new(),
                candidates: Arc::new(NoCandidates),
                stop: Some(stop_tx),
                connecting: None,
            },
        );
        state
            .counters
            .publishers_total
            .fetch_add(1, Ordering::Relaxed);
        match self.input {
            Input::Flv(_) => &state.counters.rtmp_publishers_total,
            Input::Ts(_) => &state.counters.srt_publishers_total,
        }
        .fetch_add(1, Ordering::Relaxed);
        info!(stream, session = %session_log_id(&id), epoch = self.claim.epoch, ?catalog, "encoder publisher live");
        self.stop = Some(stop_rx);
        self.live = Some(Live { source, id });
        Ok(())
    }

    /// Ends the publish: the session goes, the stream is unpublished (the
    /// epoch this node holds), local players get the orphan grace; the
    /// reservation goes last.
    pub(crate) async fn finish(self) {
        let Publishing {
            state, claim, live, ..
        } = self;
        let stream = claim.stream.as_str();
        let was_live = live.is_some();
        if let Some(live) = live {
            drop(live.source);
            state.sessions.remove(&live.id);
        }
        let epoch = state.origins.get(stream).unwrap_or(claim.epoch);
        state.origins.clear(stream);
        if let Err(e) = state.control.unpublish(stream, state.id(), epoch).await {
            warn!(error = %e, "unpublish failed; the lease will clean up");
        }
        info!(stream, epoch, "encoder publisher left; stream unpublished");
        if was_live && let Some(s) = state.hub.get(stream) {
            let grace = state.cfg.orphan_grace;
            tokio::spawn(
                crate::sessions::close_if_still_orphaned(state.clone(), s, grace).in_current_span(),
            );
        }
        drop(claim);
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
