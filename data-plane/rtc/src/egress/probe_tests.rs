use super::*;

const TICK: Duration = Duration::from_millis(20);
const MEDIA_PACKET: usize = 1_000;

/// A path in simulated time: a policer of `limit_bps` (a token bucket with 20 ms of burst)
/// and 10 ms of latency; `None` for no limit.
struct Path {
    limit_bps: Option<u64>,
    tokens: f64,
    last_us: u64,
    /// Acknowledgements not yet fed back.
    pending: Vec<Acked>,
}

impl Path {
    fn new(limit_bps: Option<u64>) -> Path {
        Path {
            limit_bps,
            tokens: 0.0,
            last_us: 0,
            pending: Vec::new(),
        }
    }

    fn send(&mut self, send_us: u64, size: usize) {
        if let Some(limit) = self.limit_bps {
            let rate = limit as f64 / 8e6;
            self.tokens = (self.tokens + (send_us - self.last_us) as f64 * rate).min(rate * 20e3);
            self.last_us = send_us;
            if self.tokens < size as f64 {
                return;
            }
            self.tokens -= size as f64;
        }
        self.pending.push(Acked {
            send_us,
            arrival_us: send_us as i64 + 10_000,
            size: size as u32,
        });
    }
}

/// Runs a probe of `target` with `current` bit/s of media flowing over `path`, ticking
/// every 20 ms with feedback every 60 ms; returns the outcome and the padding bytes sent.
fn run(prober: &mut Prober, path: &mut Path, target: u64, current: u64) -> (ProbeOutcome, u64) {
    let t0 = Instant::now();
    let mut wall = 1_000_000u64;
    assert!(prober.start(t0, wall, target, current));
    let media_per_tick = current as f64 / 8.0 * TICK.as_secs_f64();
    let mut media_credit = 0.0;
    let mut padding = 0u64;
    for tick in 1..200u32 {
        let now = t0 + TICK * tick;
        wall += TICK.as_micros() as u64;
        media_credit += media_per_tick;
        while media_credit >= MEDIA_PACKET as f64 {
            media_credit -= MEDIA_PACKET as f64;
            prober.on_sent(wall, MEDIA_PACKET);
            path.send(wall, MEDIA_PACKET);
        }
        let due = prober.padding_due(now, wall);
        for _ in 0..due {
            prober.on_sent(wall, PADDING_WIRE as usize);
            path.send(wall, PADDING_WIRE as usize);
        }
        prober.on_padding_sent(due);
        padding += u64::from(due) * PADDING_WIRE;
        if tick % 3 == 0 {
            let acked = std::mem::take(&mut path.pending);
            prober.on_acked(&acked);
        }
        if let Some(outcome) = prober.poll(now) {
            return (outcome, padding);
        }
    }
    panic!("the probe never ended");
}

#[test]
fn a_clean_path_passes_at_the_target_rate() {
    let mut prober = Prober::new(ProbeConfig::default());
    let (outcome, padding) = run(&mut prober, &mut Path::new(None), 1_200_000, 400_000);
    let ProbeOutcome::Passed(bps) = outcome else {
        panic!("{outcome:?}");
    };
    assert!((1_200_000..1_700_000).contains(&bps), "{bps}");
    // The padding made up 1.2 × 1.2 Mbit/s − 0.4 Mbit/s over the 300 ms window (≈ 39 kB).
    assert!((30_000..45_000).contains(&padding), "{padding}");
    assert!(!prober.active());
}

#[test]
fn a_policed_path_fails_and_says_what_it_delivered() {
    let mut prober = Prober::new(ProbeConfig::default());
    let mut path = Path::new(Some(600_000));
    let (outcome, _) = run(&mut prober, &mut path, 1_200_000, 400_000);
    let ProbeOutcome::Failed(bps) = outcome else {
        panic!("{outcome:?}");
    };
    assert!((450_000..800_000).contains(&bps), "{bps}");
    // A limit just above the target passes.
    let mut prober = Prober::new(ProbeConfig::default());
    let mut wide = Path::new(Some(2_000_000));
    assert!(matches!(
        run(&mut prober, &mut wide, 1_200_000, 400_000).0,
        ProbeOutcome::Passed(_)
    ));
}

#[test]
fn feedback_that_never_comes_fails_the_probe() {
    let mut prober = Prober::new(ProbeConfig::default());
    let t0 = Instant::now();
    assert!(prober.start(t0, 0, 1_000_000, 100_000));
    let cfg = ProbeConfig::default();
    let end = t0 + cfg.duration + cfg.settle;
    assert_eq!(prober.poll(end - Duration::from_millis(1)), None);
    assert_eq!(prober.poll(end), Some(ProbeOutcome::Failed(0)));
}

#[test]
fn probes_are_budgeted_per_minute_rate_and_bytes() {
    let cfg = ProbeConfig::default();
    let mut prober = Prober::new(cfg);
    let t0 = Instant::now();
    // Per minute: ten, then refused until the first is a minute old.
    for i in 0..10u32 {
        let at = t0 + Duration::from_secs(i.into());
        assert!(prober.start(at, 0, 500_000, 0), "probe {i}");
        assert!(!prober.start(at, 0, 500_000, 0), "one at a time");
        prober.cancel();
    }
    assert!(!prober.start(t0 + Duration::from_secs(59), 0, 500_000, 0));
    assert!(prober.start(t0 + Duration::from_secs(60), 0, 500_000, 0));
    prober.cancel();
    // A hostile target (a huge layer rate): padding at the rate cap, bytes at the cap.
    let cfg = ProbeConfig {
        max_bytes: 100_000,
        ..cfg
    };
    let mut prober = Prober::new(cfg);
    assert!(prober.start(t0, 0, u64::MAX / 2, 0));
    let mut padding = 0u64;
    let mut first_tick = 0u64;
    for tick in 1..25u32 {
        let due = prober.padding_due(t0 + TICK * tick, 0);
        if tick == 1 {
            first_tick = u64::from(due) * PADDING_WIRE;
        }
        prober.on_padding_sent(due);
        padding += u64::from(due) * PADDING_WIRE;
    }
    let per_tick_cap = cfg.max_rate / 8 * TICK.as_millis() as u64 / 1000;
    assert!(first_tick <= per_tick_cap, "{first_tick} > {per_tick_cap}");
    assert!(padding <= cfg.max_bytes, "{padding}");
    assert!(padding + PADDING_WIRE > cfg.max_bytes, "{padding}");
    // A late tick owes no more than the burst cap.
    let mut prober = Prober::new(cfg);
    assert!(prober.start(t0, 0, 2_000_000, 0));
    let due = prober.padding_due(t0 + Duration::from_millis(400), 0);
    let cap = (2_400_000f64 / 8.0 * cfg.max_burst.as_secs_f64()) as u64;
    assert!(u64::from(due) * PADDING_WIRE <= cap, "{due}");
}

#[test]
fn padding_owed_is_kept_when_it_could_not_go_out() {
    let mut prober = Prober::new(ProbeConfig::default());
    let t0 = Instant::now();
    assert!(prober.start(t0, 0, 1_000_000, 200_000));
    let first = prober.padding_due(t0 + TICK, 0);
    assert!(first > 0);
    // Mid-frame: nothing sent; the next tick owes both ticks' padding.
    prober.on_padding_sent(0);
    let second = prober.padding_due(t0 + TICK * 2, 0);
    assert!(second >= 2 * first - 1, "{first} then {second}");
    // The window's end stops the padding.
    let end = t0 + ProbeConfig::default().duration;
    assert_eq!(prober.padding_due(end, 0), 0);
    assert_eq!(prober.padding_due(end + TICK, 0), 0);
}
