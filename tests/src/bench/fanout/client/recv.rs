//! One receive loop for every load player's socket.
//!
//! A thread waits on all players' UDP sockets at once (`epoll`) and drains each ready socket
//! with `recvmmsg`. RTP is counted from its clear-text header and dropped right there; the few
//! other datagrams (STUN, DTLS, RTCP) are handed to that player's peer connection through a
//! channel, which its [`CountingSocket`] reads (with transport-cc, also the first RTP packet
//! of each SSRC). Media therefore costs no task wake-up, channel
//! hop or syscall per packet per player: the per-player `webrtc` driver only runs for ICE,
//! DTLS and its timers. Sends go straight out of the player's socket.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};
use tokio::sync::mpsc;
use webrtc::runtime::{AsyncUdpSocket, RecvMeta, Transmit};

use super::twcc::transport_seq;
use super::{Counters, rtp_header};

/// Datagrams read per `recvmmsg`.
const BATCH: usize = 32;
/// Largest datagram kept whole (RTP on loopback stays under the 1500-byte MTU of real paths;
/// anything longer is only counted).
const DATAGRAM: usize = 2048;
/// Ready sockets taken per `epoll_wait`.
const EVENTS: usize = 256;
/// How often the loop looks at its stop flag when no socket is ready.
const IDLE_WAKE_MS: u16 = 100;

/// A datagram for a player's `webrtc` stack: contents and sender.
type ToStack = (Vec<u8>, SocketAddr);

struct Player {
    socket: UdpSocket,
    counters: Arc<Counters>,
    to_stack: mpsc::UnboundedSender<ToStack>,
}

struct Shared {
    epoll: Epoll,
    players: Mutex<HashMap<u64, Arc<Player>>>,
    next: AtomicU64,
    stop: AtomicBool,
    /// Arrival times (transport-cc) are µs since this.
    epoch: Instant,
}

/// The receive loop; stops when dropped.
pub struct RecvLoop {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Registers sockets with a [`RecvLoop`].
#[derive(Clone)]
pub struct RecvHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for RecvHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvHandle").finish_non_exhaustive()
    }
}

impl RecvLoop {
    /// Starts the loop's thread (it inherits this thread's CPU affinity).
    pub fn start() -> io::Result<RecvLoop> {
        let shared = Arc::new(Shared {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            players: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            stop: AtomicBool::new(false),
            epoch: Instant::now(),
        });
        let thread = std::thread::Builder::new()
            .name("fanout-recv".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || run(&shared)
            })?;
        Ok(RecvLoop {
            shared,
            thread: Some(thread),
        })
    }

    /// A handle for registering sockets.
    pub fn handle(&self) -> RecvHandle {
        RecvHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Drop for RecvLoop {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl RecvHandle {
    /// Hands `socket` (non-blocking) to the loop: its RTP is counted in `counters`, the rest
    /// comes out of the returned socket's `poll_recv`.
    pub fn register(
        &self,
        socket: UdpSocket,
        counters: Arc<Counters>,
    ) -> io::Result<CountingSocket> {
        socket.set_nonblocking(true)?;
        let (to_stack, from_loop) = mpsc::unbounded_channel();
        let player = Arc::new(Player {
            socket,
            counters,
            to_stack,
        });
        let token = self.shared.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.shared.players).insert(token, Arc::clone(&player));
        if let Err(e) = self.shared.epoll.add(
            player.socket.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, token),
        ) {
            lock(&self.shared.players).remove(&token);
            return Err(e.into());
        }
        Ok(CountingSocket {
            player,
            from_loop: Mutex::new(from_loop),
            shared: Arc::clone(&self.shared),
            token,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn run(shared: &Shared) {
    let mut events = vec![EpollEvent::empty(); EVENTS];
    let mut batch = Batch::new();
    while !shared.stop.load(Ordering::Relaxed) {
        let n = match shared
            .epoll
            .wait(&mut events, EpollTimeout::from(IDLE_WAKE_MS))
        {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "load client receive loop: epoll_wait failed");
                return;
            }
        };
        for ev in &events[..n] {
            let player = lock(&shared.players).get(&ev.data()).cloned();
            if let Some(player) = player {
                batch.drain(&player, shared.epoch);
            }
        }
    }
}

/// Buffers for one `recvmmsg`, reused.
struct Batch {
    headers: MultiHeaders<SockaddrStorage>,
    bufs: Vec<Vec<u8>>,
    got: Vec<(usize, Option<SocketAddr>)>,
}

impl Batch {
    fn new() -> Self {
        Batch {
            headers: MultiHeaders::preallocate(BATCH, None),
            bufs: vec![vec![0; DATAGRAM]; BATCH],
            got: Vec::with_capacity(BATCH),
        }
    }

    /// Reads everything `player`'s socket holds. Arrival times (for transport-cc) are taken
    /// once per `recvmmsg`, as µs since `epoch`.
    fn drain(&mut self, player: &Player, epoch: Instant) {
        let fd = player.socket.as_raw_fd();
        loop {
            self.got.clear();
            {
                let mut iovs: Vec<[IoSliceMut<'_>; 1]> =
                    self.bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
                match recvmmsg(
                    fd,
                    &mut self.headers,
                    iovs.iter_mut(),
                    MsgFlags::MSG_DONTWAIT,
                    None,
                ) {
                    Ok(msgs) => {
                        for m in msgs {
                            let from = m
                                .address
                                .and_then(|a| a.as_sockaddr_in().map(|a| SocketAddr::from(*a)));
                            self.got.push((m.bytes, from));
                        }
                    }
                    Err(Errno::EINTR) => continue,
                    Err(Errno::EAGAIN) => return,
                    Err(e) => {
                        tracing::debug!(error = %e, "load client recvmmsg");
                        return;
                    }
                }
            }
            let arrival_us = epoch.elapsed().as_micros() as i64;
            let twcc_id = player.counters.transport_cc_id();
            for (buf, &(len, from)) in self.bufs.iter().zip(&self.got) {
                let data = &buf[..len.min(DATAGRAM)];
                if let Some((ssrc, seq)) = rtp_header(data) {
                    let twcc = match twcc_id {
                        0 => None,
                        id => transport_seq(data, id).map(|t| (t, arrival_us)),
                    };
                    let first = player.counters.record(ssrc, seq, len, twcc);
                    // The `webrtc` crate opens a stream's receiver, through which transport
                    // feedback is written, on its first packet: that one goes to the stack.
                    if first
                        && twcc_id != 0
                        && let Some(from) = from
                    {
                        let _ = player.to_stack.send((data.to_vec(), from));
                    }
                } else if let Some(from) = from {
                    // The stack is gone once the player closed: nothing to deliver to.
                    let _ = player.to_stack.send((data.to_vec(), from));
                }
            }
            if self.got.len() < BATCH {
                return;
            }
        }
    }
}

/// The socket a player's `webrtc` driver sees: receives what the loop passes on, sends
/// directly. Leaves the loop when dropped.
pub struct CountingSocket {
    player: Arc<Player>,
    from_loop: Mutex<mpsc::UnboundedReceiver<ToStack>>,
    shared: Arc<Shared>,
    token: u64,
}

impl fmt::Debug for CountingSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountingSocket").finish_non_exhaustive()
    }
}

impl Drop for CountingSocket {
    fn drop(&mut self) {
        let _ = self.shared.epoll.delete(self.player.socket.as_fd());
        lock(&self.shared.players).remove(&self.token);
    }
}

impl AsyncUdpSocket for CountingSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.player.socket.local_addr()
    }

    fn poll_send(&self, _cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        match self
            .player
            .socket
            .send_to(transmit.contents, transmit.destination)
        {
            Ok(n) => Poll::Ready(Ok(n)),
            // The client sends only STUN, DTLS and the odd RTCP packet; with its send buffer
            // full, one is dropped as the network would, and ICE or DTLS sends it again.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                Poll::Ready(Ok(transmit.contents.len()))
            }
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let (Some(buf), Some(meta)) = (bufs.first_mut(), meta.first_mut()) else {
            return Poll::Ready(Ok(0));
        };
        // `None` (the loop stopped) stays pending: the bench is ending.
        let Poll::Ready(Some((data, from))) = lock(&self.from_loop).poll_recv(cx) else {
            return Poll::Pending;
        };
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        *meta = RecvMeta::default();
        meta.addr = from;
        meta.len = n;
        meta.stride = n.max(1);
        Poll::Ready(Ok(1))
    }
}
