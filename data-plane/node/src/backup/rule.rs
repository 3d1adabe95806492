//! When a standby switches (sans-IO): the main origin record is gone, or
//! the live stream, pulled like any other node pulls it, brought no packet
//! for the switch gap.
//!
//! The gap is counted from the last packet under the current main origin
//! record (a new record, i.e. a new epoch, starts the count again). Before
//! the first packet of a record, the longer [`STARTUP`] bound applies: a
//! standby that has only just started pulling has seen nothing yet because
//! its subscription is still being set up, not because the primary is silent.
//!
//! The gap is measured on this node's clock, by a loop that must run to see
//! packets. A loop that wakes later than the deadline it asked for (by more
//! than a quarter of the gap, at least 20 ms) was starved itself: its
//! silence may be its own (packets queued, unread), not the primary's. It
//! then confirms: it switches only if no packet arrives within that quarter
//! gap more, with the loop running on time. A loop that wakes on time
//! switches at once, so a real failure costs no more than before.

use std::time::{Duration, Instant};

/// How long a standby waits for the first packet under a main origin record
/// before it counts the primary as silent.
pub const STARTUP: Duration = Duration::from_secs(5);
/// How long after a refused switch the rule may ask again.
pub const RETRY: Duration = Duration::from_millis(100);
/// Bounds of the starved loop's slack (a quarter of the gap).
const MIN_SLACK: Duration = Duration::from_millis(20);
const MAX_SLACK: Duration = Duration::from_millis(250);

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
    /// The deadline the last [`Verdict::Wait`] asked to be woken at.
    asked: Option<Instant>,
    /// A late wake-up found the gap passed: silence is confirmed only if
    /// no packet comes before this.
    confirm_until: Option<Instant>,
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
            asked: None,
            confirm_until: None,
        }
    }

    /// How late a wake-up may be before the loop counts as starved, and how
    /// long a starved loop then confirms the silence.
    fn slack(&self) -> Duration {
        (self.gap / 4).clamp(MIN_SLACK, MAX_SLACK)
    }

    /// The stream's main origin as the topology watch shows it.
    pub fn on_topology(&mut self, now: Instant, main: Option<(String, i64)>) {
        if self.main.as_ref() != Some(&main) {
            self.main = Some(main);
            self.seen_at = now;
            self.last_packet = None;
            self.not_before = None;
            self.confirm_until = None;
        }
    }

    /// A packet of the live stream arrived.
    pub fn on_packet(&mut self, now: Instant) {
        self.last_packet = Some(now);
        self.confirm_until = None;
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

    /// What to do at `now`. The caller sleeps until the deadline of a
    /// [`Verdict::Wait`] (or the next input) and asks again.
    pub fn poll(&mut self, now: Instant) -> Verdict {
        let v = self.decide(now);
        self.asked = match v {
            Verdict::Wait(d) => d,
            _ => None,
        };
        v
    }

    fn decide(&mut self, now: Instant) -> Verdict {
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
            Some((_, epoch)) => *epoch,
        };
        let deadline = match self.last_packet {
            Some(t) => t + self.gap,
            None => self.seen_at + STARTUP.max(self.gap),
        };
        if now < deadline {
            return Verdict::Wait(Some(deadline));
        }
        let slack = self.slack();
        let late = self.asked.is_some_and(|asked| now > asked + slack);
        match self.confirm_until {
            Some(t) if now < t => return Verdict::Wait(Some(t)),
            None if late => {
                let t = now + slack;
                self.confirm_until = Some(t);
                return Verdict::Wait(Some(t));
            }
            _ => {}
        }
        Verdict::Switch {
            main_epoch: epoch,
            reason: Reason::Silent,
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
        let mut r = SwitchRule::new("b", GAP, t0);
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

    #[test]
    fn a_starved_loop_confirms_the_silence_first() {
        let t0 = Instant::now();
        let mut r = SwitchRule::new("b", GAP, t0);
        r.on_topology(t0, main("a", 7));
        r.on_packet(t0 + ms(100));
        assert_eq!(r.poll(t0 + ms(110)), Verdict::Wait(Some(t0 + ms(600))));
        // The loop wakes 300 ms late (its runtime was starved): the gap
        // looks passed, but it only confirms (a quarter of the gap).
        assert_eq!(r.poll(t0 + ms(900)), Verdict::Wait(Some(t0 + ms(1025))));
        // The packets that were queued meanwhile arrive: no switch.
        r.on_packet(t0 + ms(905));
        assert_eq!(r.poll(t0 + ms(906)), Verdict::Wait(Some(t0 + ms(1405))));
    }

    #[test]
    fn a_starved_loop_still_switches_when_the_silence_holds() {
        let t0 = Instant::now();
        let mut r = SwitchRule::new("b", GAP, t0);
        r.on_topology(t0, main("a", 7));
        r.on_packet(t0 + ms(100));
        assert_eq!(r.poll(t0 + ms(110)), Verdict::Wait(Some(t0 + ms(600))));
        assert_eq!(r.poll(t0 + ms(900)), Verdict::Wait(Some(t0 + ms(1025))));
        // Other wake-ups (the backup's own packets) change nothing.
        assert_eq!(r.poll(t0 + ms(950)), Verdict::Wait(Some(t0 + ms(1025))));
        // Woken on time at the end of the confirmation: silent.
        assert_eq!(
            r.poll(t0 + ms(1025)),
            Verdict::Switch {
                main_epoch: 7,
                reason: Reason::Silent
            }
        );
    }

    #[test]
    fn a_loop_woken_on_time_switches_at_once() {
        let t0 = Instant::now();
        let mut r = SwitchRule::new("b", ms(200), t0);
        r.on_topology(t0, main("a", 7));
        r.on_packet(t0 + ms(100));
        // Woken often (the backup's packets), then at the deadline, a few
        // milliseconds late as timers are: the switch is not delayed.
        for t in (110..300).step_by(25) {
            assert_eq!(r.poll(t0 + ms(t)), Verdict::Wait(Some(t0 + ms(300))));
        }
        assert_eq!(
            r.poll(t0 + ms(315)),
            Verdict::Switch {
                main_epoch: 7,
                reason: Reason::Silent
            }
        );
    }

    #[test]
    fn a_gone_record_needs_no_confirmation() {
        let t0 = Instant::now();
        let mut r = SwitchRule::new("b", GAP, t0);
        r.on_topology(t0, main("a", 7));
        r.on_packet(t0 + ms(100));
        assert_eq!(r.poll(t0 + ms(110)), Verdict::Wait(Some(t0 + ms(600))));
        r.on_topology(t0 + ms(2000), None);
        assert_eq!(
            r.poll(t0 + ms(2000)),
            Verdict::Switch {
                main_epoch: 0,
                reason: Reason::Gone
            }
        );
    }
}
