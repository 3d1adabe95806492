//! Which load reports are worth a store write.
//!
//! Every node renews its lease about once a second with a load report. Egress bit/s and CPU
//! are measured rates and differ in every report, so writing each changed report costs one
//! etcd write per node per second: 1,000 nodes alone would be 1,000 writes/s, five times the
//! steady-state budget. A report is written only when it differs *materially* from the
//! record in the store, compared with the stored record (not the previous report), so slow
//! drift still accumulates into a write and the stored values never lag the truth by more
//! than the tolerance.

use strata_proto::v1;

use super::{State, stream_players};
use crate::error::Result;
use crate::keys::{self, LoadRecord, NodeRecord};

/// Changes in CPU below this many cores are noise whatever the tolerance.
const CPU_FLOOR: f32 = 0.05;
/// Changes in egress below this many bit/s are noise whatever the tolerance.
const EGRESS_FLOOR: u64 = 64_000;
/// At or above this share of its capacity a node's session counts are written on every
/// change: placement stops sending clients to a full node, and "full" must be exact.
const NEAR_FULL: f64 = 0.9;

/// Stores `node`'s load report like [`report`], but in the background: the keep-alive that
/// carries it answers as soon as the lease is renewed, instead of waiting for a raft write
/// that queues behind every claim in a burst (and made renewals late enough to lose leases).
/// At most one write per node is in flight; a report arriving meanwhile waits, replacing any
/// report already waiting (the newest wins), and is compared and written when the write in
/// flight ends, so the last report a node sends is never lost.
pub(super) fn report_behind(s: &State, node: &NodeRecord, l: v1::Load) {
    let Some(mut l) = s.start_load_write(node, l) else {
        return;
    };
    let (s, mut node) = (s.clone(), node.clone());
    tokio::spawn(async move {
        loop {
            if let Err(e) = report(&s, &node, l).await {
                tracing::debug!(node = %node.id, error = %e, "load report not written");
            }
            match s.next_load_write(&node.id) {
                Some((next_node, next)) => (node, l) = (next_node, next),
                None => break,
            }
        }
    });
}

/// Stores `node`'s load report if it differs materially from the stored one (bound to the
/// node's lease, like every record of the node).
pub(super) async fn report(s: &State, node: &NodeRecord, l: v1::Load) -> Result<()> {
    let record = LoadRecord {
        streams: l.streams,
        players: l.players,
        publishers: l.publishers,
        egress_bps: l.egress_bps,
        // A rate that is not a number would make every report differ (NaN != NaN), and JSON
        // cannot carry it.
        cpu: if l.cpu.is_finite() {
            l.cpu.max(0.0)
        } else {
            0.0
        },
        stream_players: stream_players::record(&l.stream_players),
    };
    let write = {
        let view = s.cache().read();
        let stored = view.loads.get(&node.id);
        worth_writing(stored, &record, node.capacity, s.config().load_tolerance)
    };
    if write {
        let key = s.keys().load(&node.id);
        s.kv().put(&key, keys::encode(&record), node.lease).await?;
        s.metrics().load_writes.inc();
    } else {
        s.metrics().load_unwritten.inc();
    }
    Ok(())
}

/// Whether `new` must replace `stored` in the store. `capacity` is the node's (0: unlimited);
/// `tolerance` is the relative change that matters (0: any change, the old behaviour).
pub fn worth_writing(
    stored: Option<&LoadRecord>,
    new: &LoadRecord,
    capacity: u32,
    tolerance: f64,
) -> bool {
    let Some(old) = stored else { return true };
    if tolerance <= 0.0 {
        return old != new;
    }
    let sessions = |l: &LoadRecord| f64::from(l.players.saturating_add(l.publishers));
    let near_full =
        capacity > 0 && (sessions(old).max(sessions(new)) >= NEAR_FULL * f64::from(capacity));
    let count = |a: u32, b: u32| {
        a != b && (near_full || f64::from(a.abs_diff(b)) > tolerance * f64::from(a.max(b)))
    };
    let egress = {
        let diff = old.egress_bps.abs_diff(new.egress_bps);
        diff >= EGRESS_FLOOR && diff as f64 > tolerance * old.egress_bps.max(new.egress_bps) as f64
    };
    let cpu = {
        let diff = (old.cpu - new.cpu).abs();
        diff.is_nan() != (old.cpu.is_nan() && new.cpu.is_nan())
            || (diff >= CPU_FLOOR && f64::from(diff) > tolerance * f64::from(old.cpu.max(new.cpu)))
    };
    count(old.streams, new.streams)
        || count(old.players, new.players)
        || count(old.publishers, new.publishers)
        || egress
        || cpu
        || stream_players::material(&old.stream_players, &new.stream_players, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(players: u32, egress_bps: u64, cpu: f32) -> LoadRecord {
        LoadRecord {
            streams: 3,
            players,
            publishers: 1,
            egress_bps,
            cpu,
            stream_players: Vec::new(),
        }
    }

    const TOL: f64 = 0.1;

    #[test]
    fn the_first_report_is_always_written() {
        assert!(worth_writing(None, &load(0, 0, 0.0), 100, TOL));
    }

    #[test]
    fn noise_in_measured_rates_is_not_written() {
        let old = load(40, 100_000_000, 0.50);
        // 3 % more egress, 0.02 cores more CPU: what every second's measurement looks like.
        assert!(!worth_writing(
            Some(&old),
            &load(40, 103_000_000, 0.52),
            100,
            TOL
        ));
        assert!(!worth_writing(Some(&old), &old.clone(), 100, TOL));
    }

    #[test]
    fn material_changes_are_written() {
        let old = load(40, 100_000_000, 0.50);
        assert!(worth_writing(
            Some(&old),
            &load(40, 115_000_000, 0.50),
            100,
            TOL
        ));
        assert!(worth_writing(
            Some(&old),
            &load(40, 100_000_000, 0.60),
            100,
            TOL
        ));
        assert!(worth_writing(
            Some(&old),
            &load(50, 100_000_000, 0.50),
            100,
            TOL
        ));
        // From nothing to something is always a change.
        assert!(worth_writing(
            Some(&load(0, 0, 0.0)),
            &load(1, 0, 0.0),
            100,
            TOL
        ));
    }

    #[test]
    fn drift_accumulates_against_the_stored_record() {
        let stored = load(40, 100_000_000, 0.5);
        // Each step is 3 % over the last report, but the comparison is with the store.
        let mut bps = 100_000_000u64;
        let mut written = false;
        for _ in 0..5 {
            bps = bps * 103 / 100;
            written |= worth_writing(Some(&stored), &load(40, bps, 0.5), 100, TOL);
        }
        assert!(written, "16 % drift over five reports was never written");
    }

    #[test]
    fn near_capacity_every_session_counts() {
        let old = load(89, 0, 0.1);
        // 89 → 90 players (+1 publisher = 91 of 100): within 10 %, but the node nears full.
        assert!(worth_writing(Some(&old), &load(90, 0, 0.1), 100, TOL));
        // Far from full, the same one-player change waits.
        assert!(!worth_writing(Some(&old), &load(90, 0, 0.1), 1000, TOL));
    }

    #[test]
    fn zero_tolerance_writes_every_change() {
        let old = load(40, 100_000_000, 0.50);
        assert!(worth_writing(
            Some(&old),
            &load(40, 100_000_001, 0.50),
            100,
            0.0
        ));
        assert!(!worth_writing(Some(&old), &old.clone(), 100, 0.0));
    }

    #[test]
    fn nan_cpu_does_not_stick() {
        let old = load(40, 0, f32::NAN);
        assert!(worth_writing(Some(&old), &load(40, 0, 0.3), 100, TOL));
        let old = load(40, 0, 0.3);
        assert!(worth_writing(Some(&old), &load(40, 0, f32::NAN), 100, TOL));
    }
}
