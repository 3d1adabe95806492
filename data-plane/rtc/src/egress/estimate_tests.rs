//! The estimator against a simulated path: a bottleneck link of a given rate with a FIFO
//! buffer (drop-tail) and 20 ms of propagation delay, feedback every 100 ms. Simulated time
//! throughout.

use super::*;

const PACKET: usize = 1_200;
const PROPAGATION_US: u64 = 20_000;
const FEEDBACK_US: u64 = 100_000;

struct Link {
    bps: f64,
    buffer: usize,
    busy_until: u64,
    queue: VecDeque<(u64, usize)>,
}

impl Link {
    fn new(bps: f64, buffer: usize) -> Link {
        Link {
            bps,
            buffer,
            busy_until: 0,
            queue: VecDeque::new(),
        }
    }

    /// When a packet sent at `t` arrives, or `None` when the buffer drops it.
    fn send(&mut self, t: u64, size: usize) -> Option<u64> {
        while self.queue.front().is_some_and(|(done, _)| *done <= t) {
            self.queue.pop_front();
        }
        let queued: usize = self.queue.iter().map(|(_, s)| s).sum();
        if queued + size > self.buffer {
            return None;
        }
        let done = self.busy_until.max(t) + (size as f64 * 8e6 / self.bps) as u64;
        self.busy_until = done;
        self.queue.push_back((done, size));
        Some(done + PROPAGATION_US)
    }
}

/// One run: the sender's rate per `send_bps(t_us, estimate)`; returns (t_us, estimate,
/// drops so far, signal) after each feedback.
fn run(
    link: &mut Link,
    secs: u64,
    mut send_bps: impl FnMut(u64, Option<u64>) -> f64,
) -> Vec<(u64, Option<u64>, u32, Signal)> {
    let t0 = Instant::now();
    let mut e = Estimator::new();
    let mut sent: Vec<(u64, Option<u64>, bool)> = Vec::new();
    let mut reported = 0usize;
    let mut budget = 0.0f64;
    let mut drops = 0u32;
    let mut trace = Vec::new();
    for ms in 0..secs * 1_000 {
        let t = ms * 1_000;
        budget += send_bps(t, e.estimate()) / 8.0 / 1_000.0;
        while budget >= PACKET as f64 {
            budget -= PACKET as f64;
            let arrival = link.send(t, PACKET);
            drops += u32::from(arrival.is_none());
            sent.push((t, arrival, false));
        }
        if t % FEEDBACK_US == 0 && t > 0 {
            let mut acked = Vec::new();
            let mut counts = FeedbackCounts::default();
            // In sequence order: every packet whose fate is known by now.
            for p in sent.iter_mut().skip(reported) {
                match p.1 {
                    Some(a) if a <= t => {
                        acked.push(Acked {
                            send_us: p.0,
                            arrival_us: a as i64,
                            size: PACKET as u32,
                        });
                        counts.received += 1;
                        p.2 = true;
                    }
                    None if p.0 + PROPAGATION_US <= t => {
                        counts.lost += 1;
                        p.2 = true;
                    }
                    _ => break,
                }
            }
            while sent.get(reported).is_some_and(|p| p.2) {
                reported += 1;
            }
            e.on_feedback(t0 + Duration::from_micros(t), &acked, counts);
            trace.push((t, e.estimate(), drops, e.signal()));
        }
    }
    trace
}

fn between(trace: &[(u64, Option<u64>, u32, Signal)], from_s: u64, to_s: u64) -> Vec<u64> {
    trace
        .iter()
        .filter(|(t, ..)| *t >= from_s * 1_000_000 && *t < to_s * 1_000_000)
        .filter_map(|(_, e, ..)| *e)
        .collect()
}

#[test]
fn a_sender_following_the_estimate_settles_near_a_600_kbit_path() {
    // 50 ms of buffer at the bottleneck.
    let mut link = Link::new(600_000.0, 3_750);
    let trace = run(&mut link, 20, |_, e| e.map_or(1_000_000.0, |e| e as f64));
    let settled = between(&trace, 5, 20);
    let (lo, hi) = (
        *settled.iter().min().unwrap_or(&0),
        *settled.iter().max().unwrap_or(&0),
    );
    let mean = settled.iter().sum::<u64>() / settled.len().max(1) as u64;
    eprintln!("600 kbit/s path: estimate from 5 s on {lo}..{hi}, mean {mean}");
    assert!((420_000..=780_000).contains(&mean), "mean {mean}");
    assert!(lo >= 300_000 && hi <= 950_000, "{lo}..{hi}");
}

#[test]
fn a_layer_too_big_for_the_path_brings_the_estimate_near_the_path() {
    // The node keeps sending a 1.5 Mbit/s layer into a 600 kbit/s policer (little buffer):
    // loss says so, and the estimate lands near what got through.
    let mut link = Link::new(600_000.0, 2_400);
    let trace = run(&mut link, 4, |_, _| 1_500_000.0);
    let late = between(&trace, 2, 4);
    eprintln!("1.5 Mbit/s into 600 kbit/s: {late:?}");
    assert!(
        late.iter().all(|e| (400_000..=700_000).contains(e)),
        "{late:?}"
    );
}

#[test]
fn a_clean_path_grows_the_estimate() {
    let mut link = Link::new(50_000_000.0, 1_000_000);
    let trace = run(&mut link, 12, |t, e| {
        if t < 1_000_000 {
            300_000.0
        } else {
            e.map_or(300_000.0, |e| e as f64)
        }
    });
    let first = between(&trace, 1, 2).first().copied().unwrap_or(0);
    let last = between(&trace, 11, 12).last().copied().unwrap_or(0);
    eprintln!("clean path: {first} → {last}");
    assert!(first > 300_000, "{first}");
    assert!(last as f64 > 1.8 * first as f64, "{first} → {last}");
    assert!(
        trace.iter().all(|(.., s)| *s != Signal::Overuse),
        "no over-use on an empty path"
    );
}

#[test]
fn a_growing_queue_brings_the_estimate_down_before_any_loss() {
    // 800 kbit/s into a 600 kbit/s link with a deep buffer: the queue (and the delay) grows
    // by a third of a second each second, and nothing is dropped for a long time.
    let mut link = Link::new(600_000.0, 10_000_000);
    let trace = run(&mut link, 6, |_, _| 800_000.0);
    let down = trace
        .iter()
        .find(|(_, e, ..)| e.is_some_and(|e| e < 600_000));
    let Some((t, e, drops, _)) = down else {
        panic!("no back-off: {trace:?}");
    };
    eprintln!("queue growth: backed off to {e:?} at {t} µs, {drops} drops");
    assert_eq!(*drops, 0);
    assert!(*t <= 3_000_000, "backed off only at {t} µs");
    assert!(trace.iter().any(|(.., s)| *s == Signal::Overuse));
}

#[test]
fn over_use_is_trouble_once_it_lasts() {
    let t0 = Instant::now();
    let mut e = Estimator::new();
    e.trend.signal = Signal::Overuse;
    e.on_feedback(t0, &[], FeedbackCounts::default());
    assert!(!e.trouble(), "a moment of over-use");
    e.on_feedback(
        t0 + Duration::from_millis(600),
        &[],
        FeedbackCounts::default(),
    );
    assert!(!e.trouble());
    e.on_feedback(
        t0 + Duration::from_millis(1_000),
        &[],
        FeedbackCounts::default(),
    );
    assert!(e.trouble(), "a second of it");
    e.trend.signal = Signal::Normal;
    e.on_feedback(
        t0 + Duration::from_millis(1_100),
        &[],
        FeedbackCounts::default(),
    );
    assert!(!e.trouble());
}

#[test]
fn bogus_arrival_times_cost_nothing_and_break_nothing() {
    let t0 = Instant::now();
    let mut e = Estimator::new();
    let mut seed = 7u64;
    for round in 0..200u64 {
        let acked: Vec<Acked> = (0..50u64)
            .map(|i| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                Acked {
                    send_us: round * 100_000 + i * 2_000,
                    arrival_us: (seed >> 20) as i64 - (1 << 43),
                    size: (seed % 1_500) as u32,
                }
            })
            .collect();
        let counts = FeedbackCounts {
            received: 50,
            lost: (seed % 60) as u32,
        };
        e.on_feedback(t0 + Duration::from_millis(round * 100), &acked, counts);
        if let Some(v) = e.estimate() {
            assert!(v < u64::MAX / 2);
        }
    }
    assert!(e.delivered.len() <= RATE_PACKETS);
}
