//! Is anything listening on a relay address? One UDP datagram answers it.
//!
//! A takeover of a main origin needs a definite sign that its process is gone
//! (ARCHITECTURE.md, "Taking over a dead main origin"). The probe sends one
//! QUIC long-header packet of a reserved version (RFC 9000 §15, 0x?a?a?a?a),
//! padded to 1,200 bytes, from a connected UDP socket:
//!
//! - a QUIC server answers it with a Version Negotiation packet (RFC 9000
//!   §6; quinn does) that echoes the probe's connection ids: **listening**;
//! - a host with nothing on that port answers with ICMP port unreachable,
//!   which the connected socket reports as `ECONNREFUSED`: **refused**;
//! - nothing within the timeout (a partition, a dead host, a lost packet):
//!   **no answer**, which is not evidence of anything.
//!
//! The answer is never bigger than the probe, and the target is a registered
//! node's relay address from the control plane, never the client's choice.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

/// What a probe found (the discriminant indexes the node's counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// The host said nothing listens on that port.
    Refused = 0,
    /// A QUIC endpoint answered.
    Listening = 1,
    /// No answer within the timeout, or the socket failed otherwise.
    NoAnswer = 2,
}

/// Size of the probe: QUIC servers ignore smaller packets of unknown versions.
pub const PROBE_LEN: usize = 1200;
/// A reserved version (RFC 9000 §15) no server supports.
const RESERVED_VERSION: u32 = 0x1a2a_3a4a;
/// Connection id length used by the probe (both ids).
const CID_LEN: usize = 8;

/// The probe datagram: long header, reserved version, the two connection
/// ids, zero padding.
pub fn datagram(dcid: [u8; CID_LEN], scid: [u8; CID_LEN]) -> Vec<u8> {
    let mut p = Vec::with_capacity(PROBE_LEN);
    p.push(0xc0);
    p.extend_from_slice(&RESERVED_VERSION.to_be_bytes());
    p.push(CID_LEN as u8);
    p.extend_from_slice(&dcid);
    p.push(CID_LEN as u8);
    p.extend_from_slice(&scid);
    p.resize(PROBE_LEN, 0);
    p
}

/// Whether `reply` is a Version Negotiation packet answering the probe sent
/// with `dcid` and `scid` (its ids swapped), and not some other datagram.
pub fn answers(reply: &[u8], dcid: &[u8; CID_LEN], scid: &[u8; CID_LEN]) -> bool {
    // form bit, version 0, dcid len, dcid, scid len, scid
    let want = 1 + 4 + 1 + CID_LEN + 1 + CID_LEN;
    reply.len() >= want
        && reply[0] & 0x80 != 0
        && reply[1..5] == [0, 0, 0, 0]
        && usize::from(reply[5]) == CID_LEN
        && reply[6..6 + CID_LEN] == scid[..]
        && usize::from(reply[6 + CID_LEN]) == CID_LEN
        && reply[7 + CID_LEN..want] == dcid[..]
}

/// Probes `target` from an ephemeral port on `from` (the node's relay IP, so
/// the probe takes the relay's path; unspecified is fine). Sends the probe
/// again halfway through `timeout` in case the first was lost.
pub async fn probe(from: IpAddr, target: SocketAddr, timeout: Duration) -> Probe {
    let from = match (from, target) {
        (IpAddr::V4(_), SocketAddr::V4(_)) | (IpAddr::V6(_), SocketAddr::V6(_)) => from,
        (_, SocketAddr::V4(_)) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (_, SocketAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let Ok(socket) = UdpSocket::bind((from, 0)).await else {
        return Probe::NoAnswer;
    };
    if socket.connect(target).await.is_err() {
        return Probe::NoAnswer;
    }
    let (dcid, scid): ([u8; CID_LEN], [u8; CID_LEN]) = (rand::random(), rand::random());
    let packet = datagram(dcid, scid);
    let deadline = Instant::now() + timeout;
    let mut resend = Some(Instant::now() + timeout / 2);
    if let Some(p) = sent(socket.send(&packet).await) {
        return p;
    }
    let mut buf = [0u8; 1500];
    loop {
        let until = resend.unwrap_or(deadline).min(deadline);
        match tokio::time::timeout_at(until, socket.recv(&mut buf)).await {
            Ok(Ok(n)) if answers(&buf[..n], &dcid, &scid) => return Probe::Listening,
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => return Probe::Refused,
            Ok(Err(_)) => return Probe::NoAnswer,
            Err(_) if resend.take().is_some() => {
                if let Some(p) = sent(socket.send(&packet).await) {
                    return p;
                }
            }
            Err(_) => return Probe::NoAnswer,
        }
    }
}

/// The probe's result when sending already decided it (an ICMP error queued
/// on the connected socket surfaces on the next send).
fn sent(r: std::io::Result<usize>) -> Option<Probe> {
    match r {
        Ok(_) => None,
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Some(Probe::Refused),
        Err(_) => Some(Probe::NoAnswer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_is_a_full_size_long_header_of_a_reserved_version() {
        let p = datagram([1; 8], [2; 8]);
        assert_eq!(p.len(), PROBE_LEN);
        assert_eq!(p[0] & 0xc0, 0xc0);
        let v = u32::from_be_bytes([p[1], p[2], p[3], p[4]]);
        assert_eq!(v & 0x0f0f_0f0f, 0x0a0a_0a0a, "reserved version pattern");
        assert_eq!(
            &p[5..23],
            &[&[8u8][..], &[1; 8], &[8], &[2; 8]].concat()[..]
        );
    }

    #[test]
    fn only_a_version_negotiation_for_this_probe_answers_it() {
        let (d, s) = ([1u8; 8], [2u8; 8]);
        let mut vn = vec![0x80 | 0x3f, 0, 0, 0, 0, 8];
        vn.extend_from_slice(&s);
        vn.push(8);
        vn.extend_from_slice(&d);
        vn.extend_from_slice(&1u32.to_be_bytes());
        assert!(answers(&vn, &d, &s));
        // Truncated, another probe's ids, not version 0, short header.
        assert!(!answers(&vn[..20], &d, &s));
        assert!(!answers(&vn, &s, &d));
        let mut v1 = vn.clone();
        v1[4] = 1;
        assert!(!answers(&v1, &d, &s));
        let mut short = vn.clone();
        short[0] = 0x40;
        assert!(!answers(&short, &d, &s));
        assert!(!answers(&[], &d, &s));
    }

    #[tokio::test]
    async fn a_closed_port_is_refused() {
        // A port that was just free: nothing listens on it.
        let addr = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap()
        };
        let from = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(
            probe(from, addr, Duration::from_secs(5)).await,
            Probe::Refused
        );
    }

    #[tokio::test]
    async fn a_silent_port_is_no_answer() {
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let from = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(
            probe(from, addr, Duration::from_millis(100)).await,
            Probe::NoAnswer
        );
    }
}
