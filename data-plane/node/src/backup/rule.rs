//! When a standby switches (sans-IO): the main origin record is gone, or
//! the live stream, pulled like any other node pulls it, brought no packet
//! for the switch gap.
//!
//! The gap is counted from the last packet under the current main origin
//! record (a new record, i.e. a new epoch, starts the count again). Before
//! the first packet of a record, the longer [`STARTUP`] bound applies: a
//! standby that has only just started pulling has seen nothing yet because
//! its subscription is still being set up, not because the primary is silent.

use std::time::{Duration, Instant};

/// How long a standby waits for the first packet under a main origin record
/// before it counts the primary as silent.
pub const STARTUP: Duration = Duration::from_secs(5);
/// How long after a refused switch the rule may ask again.
pub const RETRY: Duration = Duration::from_millis(100);

/// Why a standby switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The stream has no main origin record.
    Gone,
    /// No packet of the live stream for the switch gap.
    Silent,
}

impl Reason {
    /// The name the control plane's switch request takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Gone => "gone",
            Reason::Silent => "silent",
        }
    }
}

/// What the standby does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing yet; look again at the deadline (or at the next input).
    Wait(Option<Instant>),
    /// Switch, guarded by the main origin record's epoch (0: none).
    Switch {
        /// Epoch of the record the switch replaces.
        main_epoch: i64,
        /// Why.
        reason: Reason,
    },
    /// This node is the main origin (the switch happened).
    Main,
}

/// The switch rule of one standby.
#[derive(Debug)]
pub struct SwitchRule {
    own: String,
    gap: Duration,
    /// `None` until the first topology; then the main origin (node, epoch),
    /// itself `None` when the stream has none.
    main: Option<Option<(String, i64)>>,
    /// When the current record was first seen.
    seen_at: Instant,
    last_packet: Option<Instant>,
    /// No switch before this (after a refused one).
    not_before: Option<Instant>,
}

impl SwitchRule {
    /// The rule of node `own` with this switch gap.
    pub fn new(own: &str, gap: Duration, now: Instant) -> Self {
        SwitchRule {
            own: own.to_owned(),
            gap,
            main: None,
            seen_at: now,
            last_packet: None,
            not_before: None,
        }
    }

    /// The stream's main origin as the topology watch shows it.
    pub fn on_topology(&mut self, now: Instant, main: Option<(String, i64)>) {
        if self.main.as_ref() != Some(&main) {
            self.main = Some(main);
            self.seen_at = now;
            self.last_packet = None;
            self.not_before = None;
        }
    }

    /// A packet of the live stream arrived.
    pub fn on_packet(&mut self, now: Instant) {
        self.last_packet = Some(now);
    }

    /// The switch was refused (the records moved meanwhile) or failed: look
    /// again after [`RETRY`], or at the next topology.
    pub fn on_refused(&mut self, now: Instant) {
        self.not_before = Some(now + RETRY);
    }

    /// The main origin the rule currently follows, if any.
    pub fn main(&self) -> Option<&(String, i64)> {
        self.main.as_ref()?.as_ref()
    }

    /// What to do at `now`.
    pub fn poll(&self, now: Instant) -> Verdict {
        let Some(main) = &self.main else {
            return Verdict::Wait(None);
        };
        if let Some(t) = self.not_before.filter(|t| now < *t) {
            return Verdict::Wait(Some(t));
        }
        let epoch = match main {
            None => {
                return Verdict::Switch {
                    main_epoch: 0,
                    reason: Reason::Gone,
                };
            }
            Some((node, _)) if *node == self.own => return Verdict::Main,
            Some((_, epoch)) => epoch,
        };
        let deadline = match self.last_packet {
            Some(t) => t + self.gap,
            None => self.seen_at + STARTUP.max(self.gap),
        };
        if now >= deadline {
            Verdict::Switch {
                main_epoch: *epoch,
                reason: Reason::Silent,
            }
        } else {
            Verdict::Wait(Some(deadline))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GAP: Duration = Duration::from_millis(500);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn main(node: &str, epoch: i64) -> Option<(String, i64)> {
        Some((node.to_owned(), epoch))
    }

    #[test]
    fn waits_for_the_first_topology() {
        let t0 = Instant::now();
        let r = SwitchRule::new("b", GAP, t0);
        assert_eq!(r.poll(t0 + ms(10_000)), Verdict::Wait(None));
    }

    #[test]
    fn a_gone_main_origin_switches_at_once() {
        let t0 = Instant::now();
        let mut r = SwitchRule::new("b", GAP, t0);
        r.on_topology(t0, None);
        assert_eq!(
            r.poll(t0),
            Verdict::Switch {
                main_epoch: 0,
                reason: Reason::Gone
            }
        );
    }

    #[test]
    fn silence_after_packets_switches_after_the_gap() {
        let t0 = Instant::now();
        let mut r = SwitchRule::new("b", GAP, t0);
        r.on_topology(t0, main("a", 7));
        r.on_packet(t0 + ms(100));
        r.on_packet(t0 + ms(130));
        assert_eq!(r.poll(t0 + ms(629)), Verdict::Wait(Some(t0 + ms(630))));
        assert_eq!(
            r.poll(t0 + ms(630)),
            Verdict::Switch {
                main_epoch: 7,
                reason: Reason::Silent
            }
        );
    }

    #[test]
    fn no_packet_yet_waits_for_the_startup_bound() {
        let t0 = Instant::now();
        let mut r = SwitchRule::new("b", GAP, t0);
        r.on_topology(t0, main("a", 7));
        assert_eq!(r.poll(t0 + ms(600)), Verdict::Wait(Some(t0 + STARTUP)));
        assert!(matches!(r.poll(t0 + STARTUP), Verdict::Switch { .. }));
    }

    #[test]
    fn a_new_record_starts_the_count_again() {
        let t0 = Instant::now();
        let mut r = SwitchRule::new("b", GAP, t0);
        r.on_topology(t0, main("a", 7));
        r.on_packet(t0 + ms(10));
        r.on_topology(t0 + ms(400), main("c", 9));
        // The old record's last packet no longer counts.
        assert_eq!(
            r.poll(t0 + ms(600)),
            Verdict::Wait(Some(t0 + ms(400) + STARTUP))
        );
        // The same record again changes nothing.
        r.on_packet(t0 + ms(700));
        r.on_topology(t0 + ms(800), main("c", 9));
        assert_eq!(r.poll(t0 + ms(1000)), Verdict::Wait(Some(t0 + ms(1200))));
    }

    #[test]
    fn a_refused_switch_waits_before_asking_again() {
        let t0 = Instant::now();
        let mut r = SwitchRule::new("b", GAP, t0);
        r.on_topology(t0, None);
        r.on_refused(t0);
        assert_eq!(r.poll(t0 + ms(50)), Verdict::Wait(Some(t0 + RETRY)));
        assert!(matches!(r.poll(t0 + RETRY), Verdict::Switch { .. }));
    }

    #[test]
    fn the_switched_node_is_main() {
        let t0 = Instant::now();
        let mut r = SwitchRule::new("b", GAP, t0);
        r.on_topology(t0, main("b", 12));
        assert_eq!(r.poll(t0 + ms(10_000)), Verdict::Main);
    }
}
