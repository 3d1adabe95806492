use super::*;

const TIMEOUT: Duration = Duration::from_secs(2);
const JOIN: Duration = Duration::from_millis(250);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn core(window: usize) -> Renewals<u32> {
    Renewals::new(TIMEOUT, window, JOIN)
}

/// Opens the stream and writes what the window allows; returns every lease written.
fn connect(c: &mut Renewals<u32>, now: Instant) -> Vec<i64> {
    let mut out: Vec<i64> = c.open(now).into_iter().collect();
    c.opened();
    out.extend(std::iter::from_fn(|| c.poll_send(now)));
    out
}

fn ok(wake: &Wake<u32>) -> Vec<u32> {
    let mut w: Vec<u32> = wake
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(w, _)| *w)
        .collect();
    w.sort_unstable();
    w
}

#[test]
fn answers_wake_the_waiters_of_their_own_lease_only() {
    let t0 = Instant::now();
    let mut c = core(16);
    c.request(t0, 10, 1);
    c.request(t0, 20, 2);
    c.request(t0, 30, 3);
    assert_eq!(connect(&mut c, t0), [10, 20, 30]);
    // Answers come in any order and are matched by lease id.
    let w = c.answered(20, 3);
    assert_eq!(ok(&w), [2]);
    let w = c.answered(30, 0);
    assert!(matches!(w[..], [(3, Err(KvError::LeaseNotFound(30)))]));
    assert_eq!(ok(&c.answered(10, 3)), [1]);
    // A duplicate answer wakes nobody.
    assert!(c.answered(10, 3).is_empty());
    assert_eq!(c.next_deadline().map(|d| d > t0), Some(true));
}

#[test]
fn a_keep_alive_arriving_while_its_renewal_is_in_flight_joins_it() {
    let t0 = Instant::now();
    let mut c = core(16);
    c.request(t0, 7, 1);
    c.request(t0 + ms(10), 7, 2); // queued: joins
    assert_eq!(connect(&mut c, t0 + ms(20)), [7]);
    c.request(t0 + ms(100), 7, 3); // written 80 ms ago: joins
    assert_eq!(c.poll_send(t0 + ms(100)), None, "no second renewal written");
    assert_eq!(ok(&c.answered(7, 3)), [1, 2, 3]);
    assert_eq!(c.coalesced(), 2);
}

#[test]
fn a_keep_alive_long_after_the_write_gets_a_fresh_renewal() {
    let t0 = Instant::now();
    let mut c = core(16);
    c.request(t0, 7, 1);
    assert_eq!(connect(&mut c, t0), [7]);
    // The renewal in flight may have happened 400 ms before this caller asked.
    c.request(t0 + ms(400), 7, 2);
    assert_eq!(
        c.poll_send(t0 + ms(400)),
        None,
        "one renewal of a lease at a time"
    );
    assert_eq!(ok(&c.answered(7, 3)), [1]);
    assert_eq!(
        c.poll_send(t0 + ms(410)),
        Some(7),
        "the late caller's own renewal"
    );
    assert_eq!(ok(&c.answered(7, 3)), [2]);
    assert_eq!(c.coalesced(), 0);
}

#[test]
fn the_window_bounds_renewals_unanswered_on_the_stream() {
    let t0 = Instant::now();
    let mut c = core(2);
    for lease in 1..=5 {
        c.request(t0, lease, lease as u32);
    }
    assert_eq!(connect(&mut c, t0), [1, 2]);
    assert_eq!(ok(&c.answered(1, 3)), [1]);
    assert_eq!(c.poll_send(t0), Some(3));
    assert_eq!(c.poll_send(t0), None);
}

#[test]
fn nothing_is_written_before_the_stream_opens_and_only_one_while_it_opens() {
    let t0 = Instant::now();
    let mut c = core(16);
    c.request(t0, 1, 1);
    c.request(t0, 2, 2);
    assert!(c.wants_stream());
    assert_eq!(c.poll_send(t0), None);
    assert_eq!(c.open(t0), Some(1));
    assert!(!c.wants_stream());
    assert_eq!(c.poll_send(t0), None, "the window opens with the stream");
    c.opened();
    assert_eq!(c.poll_send(t0), Some(2));
}

#[test]
fn waiters_past_their_deadline_fail_unavailable_and_others_stay() {
    let t0 = Instant::now();
    let mut c = core(16);
    c.request(t0, 1, 1);
    c.request(t0 + ms(500), 2, 2);
    assert_eq!(c.next_deadline(), Some(t0 + TIMEOUT));
    assert!(c.expire(t0 + TIMEOUT - ms(1)).is_empty());
    let w = c.expire(t0 + TIMEOUT);
    assert!(matches!(w[..], [(1, Err(KvError::Unavailable(_)))]));
    // The expired lease is not written; the other one is.
    assert_eq!(connect(&mut c, t0 + TIMEOUT), [2]);
    assert_eq!(ok(&c.answered(2, 3)), [2]);
}

#[test]
fn a_stream_with_a_renewal_unanswered_for_a_timeout_is_stalled() {
    let t0 = Instant::now();
    let mut c = core(16);
    c.request(t0, 1, 1);
    assert_eq!(connect(&mut c, t0), [1]);
    assert!(!c.stalled(t0 + TIMEOUT - ms(1)));
    assert_eq!(c.next_deadline(), Some(t0 + TIMEOUT));
    assert!(c.stalled(t0 + TIMEOUT));
    // Answered renewals never make a stream stalled.
    let mut c = core(16);
    c.request(t0, 1, 1);
    connect(&mut c, t0);
    c.answered(1, 3);
    assert!(!c.stalled(t0 + TIMEOUT * 2));
}

#[test]
fn renewals_written_to_a_broken_stream_are_written_again_first() {
    let t0 = Instant::now();
    let mut c = core(2);
    for lease in 1..=3 {
        c.request(t0, lease, lease as u32);
    }
    assert_eq!(connect(&mut c, t0), [1, 2]);
    c.disconnected();
    assert!(c.wants_stream());
    assert!(
        c.answered(1, 3).is_empty(),
        "the old stream's answers are gone"
    );
    assert_eq!(connect(&mut c, t0 + ms(50)), [1, 2]);
    assert_eq!(ok(&c.answered(2, 3)), [2]);
    assert_eq!(c.poll_send(t0 + ms(50)), Some(3));
}

#[test]
fn a_failed_open_requeues_its_renewal() {
    let t0 = Instant::now();
    let mut c = core(16);
    c.request(t0, 1, 1);
    assert_eq!(c.open(t0), Some(1));
    c.disconnected();
    assert_eq!(c.open(t0 + ms(10)), Some(1));
}

#[test]
fn when_no_stream_can_be_opened_every_waiter_fails_at_once() {
    let t0 = Instant::now();
    let mut c = core(16);
    c.request(t0, 1, 1);
    c.request(t0, 1, 2);
    c.request(t0, 2, 3);
    assert_eq!(c.open(t0), Some(1));
    let mut w = c.fail_all("connection refused");
    w.sort_by_key(|(w, _)| *w);
    assert_eq!(w.len(), 3);
    assert!(
        w.iter()
            .all(|(_, r)| matches!(r, Err(KvError::Unavailable(m)) if m.contains("refused")))
    );
    assert!(!c.wants_stream());
    assert_eq!(c.next_deadline(), None);
    // Later renewals start afresh.
    c.request(t0 + ms(100), 1, 4);
    assert_eq!(connect(&mut c, t0 + ms(100)), [1]);
    assert_eq!(ok(&c.answered(1, 3)), [4]);
}

#[test]
fn many_leases_over_one_stream_under_a_simulated_clock() {
    // 1,000 leases renewed every second for 10 s over one stream answering 300 a tick.
    let t0 = Instant::now();
    let mut c = core(128);
    let mut now = t0;
    let mut renewed = 0;
    for round in 0..10u32 {
        for lease in 0..1000 {
            c.request(now, lease, round);
        }
        if round == 0 {
            assert_eq!(c.open(now), Some(0));
            c.opened();
            renewed += ok(&c.answered(0, 3)).len();
        }
        for _ in 0..10 {
            let written: Vec<i64> = std::iter::from_fn(|| c.poll_send(now)).collect();
            for lease in written.into_iter().take(300) {
                renewed += ok(&c.answered(lease, 3)).len();
            }
            now += ms(100);
            assert!(c.expire(now).is_empty(), "no waiter timed out");
        }
    }
    assert_eq!(renewed, 10_000);
}
