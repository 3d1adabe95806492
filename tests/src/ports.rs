//! Free loopback ports, and the guard for tests that must run in a loopback-only network
//! namespace.
//!
//! A free port is found by binding port 0 on 127.0.0.1 and reading back what the kernel chose.
//! The socket is closed before the port is returned, so another process may grab it in between:
//! callers that hand the port to a child process must be ready to retry on a bind failure (as
//! [`crate::etcd`] does). Within one test process, ports already handed out are never handed out
//! again, which removes the common collision: two tests of the same binary racing for ports.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};

/// How many times the kernel is asked before giving up on finding a port not yet handed out.
const ATTEMPTS: usize = 64;

static HANDED_OUT_TCP: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
static HANDED_OUT_UDP: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_tcp_port() -> Result<u16> {
    Ok(free_tcp_ports(1)?[0])
}

/// `n` distinct TCP ports on 127.0.0.1 that were free a moment ago.
///
/// All `n` listeners are held open until every port is chosen, so the ports are distinct.
pub fn free_tcp_ports(n: usize) -> Result<Vec<u16>> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(claim(&HANDED_OUT_TCP, "TCP", || {
            let listener = TcpListener::bind(loopback())?;
            Ok((listener.local_addr()?.port(), listener))
        })?);
    }
    Ok(held.into_iter().map(|(port, _listener)| port).collect())
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> Result<u16> {
    let (port, _socket) = claim(&HANDED_OUT_UDP, "UDP", || {
        let socket = UdpSocket::bind(loopback())?;
        Ok((socket.local_addr()?.port(), socket))
    })?;
    Ok(port)
}

fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

/// Binds with `bind` until the kernel returns a port this process has not handed out yet.
fn claim<S>(
    handed_out: &Mutex<Option<HashSet<u16>>>,
    proto: &str,
    bind: impl Fn() -> std::io::Result<(u16, S)>,
) -> Result<(u16, S)> {
    for _ in 0..ATTEMPTS {
        let (port, socket) =
            bind().with_context(|| format!("binding a {proto} socket on 127.0.0.1:0"))?;
        // A poisoned lock only means another test panicked while holding it; the set is intact.
        let mut guard = handed_out.lock().unwrap_or_else(|e| e.into_inner());
        if guard.get_or_insert_with(HashSet::new).insert(port) {
            return Ok((port, socket));
        }
    }
    bail!("no fresh {proto} port on 127.0.0.1 after {ATTEMPTS} attempts")
}

/// Guard for tests that must run inside the loopback-only network namespace.
///
/// Convention (see `scripts/test.sh`): a test whose name starts with `netns_` is ignored by a
/// plain `cargo test`, so that it shows as *ignored* rather than passing without running, and
/// begins with the guard:
///
/// ```ignore
/// #[tokio::test]
/// #[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
/// async fn netns_my_test() {
///     strata_tests::ports::require_netns("netns_my_test");
///     // ...
/// }
/// ```
///
/// `scripts/test.sh` runs them with `--ignored netns_` inside `unshare -n` with only `lo` up and
/// `STRATA_NETNS=1`, where no packet can leave the machine (browsers and WebRTC stacks otherwise
/// send mDNS on real interfaces). Run outside it (`cargo test -- --ignored` on the host), the
/// guard panics: the test fails visibly instead of touching the real network or passing
/// without having run.
pub fn require_netns(test: &str) {
    assert!(
        netns_enabled(),
        "{test} must run in a loopback-only network namespace (STRATA_NETNS=1), \
         e.g. `unshare -n sh -c 'ip link set lo up; STRATA_NETNS=1 exec cargo test ... \
         -- --ignored netns_'`; scripts/test.sh runs it there"
    );
}

/// Whether this process was started by `scripts/test.sh` inside the test network namespace.
pub fn netns_enabled() -> bool {
    std::env::var_os("STRATA_NETNS").is_some_and(|v| v == "1")
}
