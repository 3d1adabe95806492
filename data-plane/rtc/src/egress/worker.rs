//! One egress loop: owns a share of the node's players and drives them all from one task.
//! Each stream it serves reaches it once, through one hub sink (a small pump task per stream
//! and loop); the loop rewrites and protects each packet for each of its players and sends
//! the whole burst before it waits again.

use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};
use rtc::crypto::RTCCryptoProvider;
use strata_media::hub::{LayerSet, Sink, SinkLayers, StreamHandle};
use strata_media::{MediaPacket, TrackId};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, trace};

use super::flow::Flow;
use super::history::History;
use super::session::{Session, SessionEvent, Transmit};
use crate::mux::{EgressDatagram, EgressRoute, UdpMux};
use crate::session::wall_clock_us;

/// Timers (DTLS retransmissions, timeouts, sender reports, budgets) run at this granularity.
const TICK: Duration = Duration::from_millis(20);
/// Packets a pump hands over in one go.
const PUMP_BATCH: usize = 64;
/// NACK budgets follow each stream's bitrate, measured over this period.
const RATE_PERIOD: Duration = Duration::from_secs(1);

/// Work for a loop.
pub(crate) enum Command {
    /// A new player session, and the stream it plays.
    Add(Box<Session>, StreamHandle),
    /// Close a session (WHEP DELETE, or its handle was dropped).
    Close(u64),
}

/// What a stream's pump hands its loop.
pub(crate) enum MediaInput {
    Packets(Arc<str>, Vec<MediaPacket>),
    /// The sink fell behind and skipped to a keyframe.
    Gap(Arc<str>),
    /// The stream closed.
    Ended(Arc<str>),
}

struct StreamFan {
    players: Vec<u64>,
    history: History,
    keyframes: mpsc::Sender<TrackId>,
    pump: tokio::task::JoinHandle<()>,
    /// Rates and upstream loss by catalog track id (for the layer choice).
    flow: Flow,
    /// The loop's sink's simulcast layers, and the set last given to it.
    layers: SinkLayers,
    wanted: Option<LayerSet>,
}

impl StreamFan {
    /// Narrows the loop's sink to the layers its players need (only when that changed).
    fn update_layers(&mut self, sessions: &HashMap<u64, Session>) {
        let wanted = self
            .players
            .iter()
            .filter_map(|id| sessions.get(id))
            .fold(LayerSet::EMPTY, |set, s| set.union(s.wanted_layers()));
        if self.wanted != Some(wanted) {
            self.wanted = Some(wanted);
            self.layers.set(wanted);
        }
    }
}

impl Drop for StreamFan {
    fn drop(&mut self) {
        // Dropping the pump drops the loop's sink of the stream.
        self.pump.abort();
    }
}

/// The state of one loop.
pub(crate) struct Worker {
    sessions: HashMap<u64, Session>,
    streams: HashMap<Arc<str>, StreamFan>,
    mux: Arc<UdpMux>,
    socket: Arc<UdpSocket>,
    datagram_tx: mpsc::Sender<EgressDatagram>,
    media_tx: mpsc::Sender<MediaInput>,
    crypto: Arc<dyn RTCCryptoProvider>,
    load: Arc<AtomicUsize>,
    out: Vec<Transmit>,
    events: Vec<SessionEvent>,
    next_rate: Instant,
}

/// The receiving ends a loop waits on.
pub(crate) struct Inputs {
    pub commands: mpsc::Receiver<Command>,
    pub datagrams: mpsc::Receiver<EgressDatagram>,
    pub media: mpsc::Receiver<MediaInput>,
    pub media_tx: mpsc::Sender<MediaInput>,
    pub datagram_tx: mpsc::Sender<EgressDatagram>,
}

impl Worker {
    pub(crate) fn new(
        mux: Arc<UdpMux>,
        crypto: Arc<dyn RTCCryptoProvider>,
        load: Arc<AtomicUsize>,
        inputs: &Inputs,
    ) -> Worker {
        Worker {
            sessions: HashMap::new(),
            streams: HashMap::new(),
            socket: mux.socket(),
            mux,
            datagram_tx: inputs.datagram_tx.clone(),
            media_tx: inputs.media_tx.clone(),
            crypto,
            load,
            out: Vec::with_capacity(1024),
            events: Vec::new(),
            next_rate: Instant::now() + RATE_PERIOD,
        }
    }

    /// The loop: one `select!`, every branch drains what is ready, then one send burst.
    pub(crate) async fn run(mut self, mut inputs: Inputs) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = inputs.commands.recv() => match command {
                    Some(c) => self.command(c),
                    None => break,
                },
                Some(d) = inputs.datagrams.recv() => {
                    self.datagram(d);
                    while let Ok(d) = inputs.datagrams.try_recv() {
                        self.datagram(d);
                    }
                }
                Some(m) = inputs.media.recv() => {
                    self.media(m);
                    while let Ok(m) = inputs.media.try_recv() {
                        self.media(m);
                    }
                }
                _ = tick.tick() => self.timers(),
            }
            self.flush().await;
        }
        let now = Instant::now();
        let ids: Vec<u64> = self.sessions.keys().copied().collect();
        for id in ids {
            self.remove(id, now);
        }
        self.flush().await;
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Add(session, stream) => self.add(*session, stream),
            Command::Close(id) => self.remove(id, Instant::now()),
        }
    }

    fn add(&mut self, session: Session, stream: StreamHandle) {
        let name = Arc::clone(&session.stream);
        let route = EgressRoute {
            tx: self.datagram_tx.clone(),
            session: session.id,
        };
        self.mux.register_egress(session.local_ufrag(), route);
        let fan = self.streams.entry(Arc::clone(&name)).or_insert_with(|| {
            let (keyframes, requests) = mpsc::channel(16);
            let sink = stream.subscribe_layers(session.wanted_layers());
            let layers = sink.layers_handle();
            let pump = tokio::spawn(pump(
                sink,
                Arc::clone(&name),
                self.media_tx.clone(),
                requests,
            ));
            let catalog = stream.catalog();
            // Track ids are below 256: a slot per id the catalog uses.
            let slots = catalog
                .tracks
                .iter()
                .map(|t| usize::from(t.id) + 1)
                .max()
                .unwrap_or(0);
            StreamFan {
                players: Vec::new(),
                history: History::new(&catalog),
                keyframes,
                pump,
                flow: Flow::new(slots),
                layers,
                wanted: None,
            }
        });
        fan.players.push(session.id);
        self.load.fetch_add(1, Ordering::Relaxed);
        self.sessions.insert(session.id, session);
        fan.update_layers(&self.sessions);
    }

    fn remove(&mut self, id: u64, now: Instant) {
        let Some(mut session) = self.sessions.remove(&id) else {
            return;
        };
        session.close(now, &mut self.out);
        self.mux
            .forget_egress(session.local_ufrag(), session.remote());
        self.load.fetch_sub(1, Ordering::Relaxed);
        if let Some(fan) = self.streams.get_mut(&session.stream) {
            fan.players.retain(|p| *p != id);
            if fan.players.is_empty() {
                self.streams.remove(&session.stream);
            } else {
                fan.update_layers(&self.sessions);
            }
        }
        trace!(session = id, "egress session removed");
    }

    fn datagram(&mut self, d: EgressDatagram) {
        let Some(session) = self.sessions.get_mut(&d.session) else {
            return;
        };
        let Some(fan) = self.streams.get(&session.stream) else {
            return;
        };
        let now = Instant::now();
        let moved = session.handle_datagram(
            now,
            wall_clock_us(),
            d.from,
            &d.data,
            &self.crypto,
            &fan.history,
            &mut self.out,
            &mut self.events,
        );
        if moved {
            self.mux.claim_egress_addr(
                d.from,
                EgressRoute {
                    tx: self.datagram_tx.clone(),
                    session: d.session,
                },
            );
        }
        self.handle_events(d.session, now);
    }

    fn handle_events(&mut self, id: u64, now: Instant) {
        let events = std::mem::take(&mut self.events);
        for event in events {
            match event {
                SessionEvent::Connected => self.replay_group(id),
                SessionEvent::KeyframeRequest(track) => {
                    if let Some(session) = self.sessions.get(&id)
                        && let Some(fan) = self.streams.get(&session.stream)
                    {
                        let _ = fan.keyframes.try_send(track);
                    }
                }
                SessionEvent::Closed => self.remove(id, now),
            }
        }
    }

    /// A player that just connected starts on the stream's current group, paced.
    fn replay_group(&mut self, id: u64) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        let Some(fan) = self.streams.get(&session.stream) else {
            return;
        };
        session.start_catch_up(fan.history.group());
        session.catch_up(wall_clock_us(), &mut self.out);
    }

    fn media(&mut self, input: MediaInput) {
        match input {
            MediaInput::Packets(name, packets) => {
                let Some(fan) = self.streams.get_mut(&name) else {
                    return;
                };
                let wall = wall_clock_us();
                for packet in &packets {
                    fan.history.push(packet);
                    let seq = packet
                        .rtp
                        .get(2..4)
                        .map(|b| u16::from_be_bytes([b[0], b[1]]));
                    fan.flow.on_packet(packet.track, packet.rtp.len(), seq);
                    for id in &fan.players {
                        if let Some(session) = self.sessions.get_mut(id) {
                            session.send_media(packet, wall, &mut self.out);
                        }
                    }
                }
            }
            MediaInput::Gap(name) => {
                let Some(fan) = self.streams.get_mut(&name) else {
                    return;
                };
                fan.history.break_group();
                for id in &fan.players {
                    if let Some(session) = self.sessions.get_mut(id) {
                        session.mark_all_gaps();
                    }
                }
            }
            MediaInput::Ended(name) => {
                let players = self
                    .streams
                    .get(&name)
                    .map(|fan| fan.players.clone())
                    .unwrap_or_default();
                debug!(stream = %name, players = players.len(), "stream ended; closing its players");
                let now = Instant::now();
                for id in players {
                    self.remove(id, now);
                }
            }
        }
    }

    fn timers(&mut self) {
        let now = Instant::now();
        let wall = wall_clock_us();
        let mut ended = Vec::new();
        let mut started = Vec::new();
        for (id, session) in &mut self.sessions {
            if session.handle_timeout(now, wall, &mut self.out, &mut self.events) {
                ended.push(*id);
            }
            if !self.events.is_empty() {
                started.push((*id, std::mem::take(&mut self.events)));
            }
        }
        for id in ended {
            self.remove(id, now);
        }
        for (id, events) in started {
            self.events = events;
            self.handle_events(id, now);
        }
        // Layer switches start in the sessions' timers (and end at a keyframe in `media`):
        // once a tick, each stream's sink follows what its players need.
        for fan in self.streams.values_mut() {
            fan.update_layers(&self.sessions);
        }
        if now >= self.next_rate {
            self.next_rate = now + RATE_PERIOD;
            for fan in self.streams.values_mut() {
                fan.flow.end_period(RATE_PERIOD.as_secs_f64());
                for id in &fan.players {
                    if let Some(session) = self.sessions.get_mut(id) {
                        session.set_stream_rate(&fan.flow);
                    }
                }
            }
        }
    }

    /// Sends everything queued, [`SEND_BATCH`] datagrams a system call. A full socket buffer
    /// waits for room (the loop's inputs queue up meanwhile, bounded); a datagram the kernel
    /// refuses outright is dropped.
    async fn flush(&mut self) {
        let mut start = 0;
        let mut failures = 0u64;
        while start < self.out.len() {
            let end = (start + SEND_BATCH).min(self.out.len());
            let batch = &self.out[start..end];
            let fd = self.socket.as_raw_fd();
            match self
                .socket
                .try_io(Interest::WRITABLE, || send_batch(fd, batch))
            {
                Ok(0) => start += 1,
                Ok(sent) => start += sent,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.socket.writable().await.is_err() {
                        failures += (self.out.len() - start) as u64;
                        break;
                    }
                }
                Err(_) => {
                    // The first datagram of the batch was refused (e.g. an ICMP error of an
                    // earlier send): skip it, send the rest.
                    failures += 1;
                    start += 1;
                }
            }
        }
        self.out.clear();
        if failures > 0 {
            trace!(failures, "egress sends failed");
        }
    }
}

/// Datagrams per `sendmmsg`.
const SEND_BATCH: usize = 64;

/// Sends a batch with one `sendmmsg`; returns how many datagrams went out.
fn send_batch(fd: std::os::fd::RawFd, batch: &[Transmit]) -> io::Result<usize> {
    let slices: Vec<[IoSlice<'_>; 1]> = batch.iter().map(|(_, d)| [IoSlice::new(d)]).collect();
    let addrs: Vec<Option<SockaddrStorage>> = batch
        .iter()
        .map(|(to, _)| Some(SockaddrStorage::from(*to)))
        .collect();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(batch.len(), None);
    let sent = sendmmsg(
        fd,
        &mut headers,
        &slices,
        &addrs,
        [],
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    Ok(sent.count())
}

/// Forwards one stream's packets from the loop's hub sink to the loop, in batches, and the
/// loop's keyframe requests back to the hub.
async fn pump(
    mut sink: Sink,
    name: Arc<str>,
    tx: mpsc::Sender<MediaInput>,
    mut keyframes: mpsc::Receiver<TrackId>,
) {
    let mut skipped = sink.skipped_groups();
    loop {
        tokio::select! {
            packet = sink.recv() => {
                let Some(packet) = packet else {
                    let _ = tx.send(MediaInput::Ended(name)).await;
                    return;
                };
                let mut batch = Vec::with_capacity(PUMP_BATCH);
                batch.push(packet);
                while batch.len() < PUMP_BATCH {
                    match sink.try_recv() {
                        Some(p) => batch.push(p),
                        None => break,
                    }
                }
                let now_skipped = sink.skipped_groups();
                if now_skipped != skipped {
                    skipped = now_skipped;
                    if tx.send(MediaInput::Gap(Arc::clone(&name))).await.is_err() {
                        return;
                    }
                }
                if tx.send(MediaInput::Packets(Arc::clone(&name), batch)).await.is_err() {
                    return;
                }
            }
            Some(track) = keyframes.recv() => sink.request_keyframe(track),
        }
    }
}
