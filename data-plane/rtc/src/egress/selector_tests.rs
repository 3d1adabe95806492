use super::*;

const RATES: [u64; 3] = [150_000, 500_000, 1_500_000];

fn selector(t0: Instant) -> Selector {
    let mut s = Selector::new(
        SelectorConfig::default(),
        Layer::ALL.to_vec(),
        Layer::High,
        t0,
    );
    s.set_rates(RATES);
    s
}

fn secs(t0: Instant, s: f32) -> Instant {
    t0 + Duration::from_secs_f32(s)
}

#[test]
fn heavy_loss_moves_down_at_once_to_what_got_through() {
    let t0 = Instant::now();
    let mut s = selector(t0);
    // 1.5 Mbit/s through a 600 kbit/s path: 60 % lost, 600 kbit/s delivered.
    s.on_loss(secs(t0, 1.0), 0.6);
    assert_eq!(s.layer(), Layer::Mid);
    // Still too much: mid loses a third.
    s.on_loss(secs(t0, 2.0), 0.35);
    assert_eq!(s.layer(), Layer::Low);
    // Nothing lower: stays.
    s.on_loss(secs(t0, 3.0), 0.5);
    assert_eq!(s.layer(), Layer::Low);
}

#[test]
fn loss_before_the_node_is_not_the_players() {
    let t0 = Instant::now();
    let mut s = selector(t0);
    // The publisher's top layer loses 15 % on its way in: every player sees that much.
    s.set_upstream_loss([0.0, 0.0, 0.15]);
    s.on_loss(secs(t0, 1.0), 0.16);
    assert_eq!(s.layer(), Layer::High);
    s.on_loss(secs(t0, 2.0), 0.45);
    assert_eq!(
        s.layer(),
        Layer::Mid,
        "30 % more than upstream is the player's"
    );
}

#[test]
fn moderate_loss_holds_and_clean_time_climbs() {
    let t0 = Instant::now();
    let mut s = selector(t0);
    s.on_loss(t0, 0.9);
    assert_eq!(s.layer(), Layer::Low);
    s.on_loss(secs(t0, 1.0), 0.0);
    assert_eq!(s.poll(secs(t0, 3.9)), Layer::Low, "not stable long enough");
    s.on_loss(secs(t0, 2.0), 0.05);
    assert_eq!(
        s.poll(secs(t0, 4.5)),
        Layer::Low,
        "a lossy report restarts the wait"
    );
    s.on_loss(secs(t0, 5.0), 0.0);
    assert_eq!(s.poll(secs(t0, 7.9)), Layer::Low);
    assert_eq!(
        s.poll(secs(t0, 8.0)),
        Layer::Mid,
        "up one layer after 3 s clean"
    );
    assert_eq!(
        s.poll(secs(t0, 10.9)),
        Layer::Mid,
        "the probe restarts the clock"
    );
    assert_eq!(s.poll(secs(t0, 11.0)), Layer::High);
}

#[test]
fn a_failed_probe_doubles_the_wait() {
    let t0 = Instant::now();
    let mut s = selector(t0);
    s.on_loss(t0, 0.9);
    s.on_loss(secs(t0, 0.5), 0.0);
    assert_eq!(s.poll(secs(t0, 3.5)), Layer::Mid);
    // Trouble within the probe: back down, and the next try waits 6 s.
    s.on_loss(secs(t0, 4.0), 0.4);
    assert_eq!(s.layer(), Layer::Low);
    s.on_loss(secs(t0, 5.0), 0.0);
    assert_eq!(s.poll(secs(t0, 10.9)), Layer::Low);
    assert_eq!(s.poll(secs(t0, 11.0)), Layer::Mid);
    // This one holds: the wait goes back to 3 s.
    assert_eq!(s.poll(secs(t0, 14.0)), Layer::High);
    // Trouble long after a probe held is no failed probe; repeated failed probes wait
    // 3, 6, 12, then never more than 12 s.
    let mut t = t0 + Duration::from_secs(20);
    s.on_loss(t, 0.9);
    assert_eq!(s.layer(), Layer::Low);
    let mut waits = Vec::new();
    for _ in 0..4 {
        s.on_loss(t, 0.0);
        let mut up = t;
        while s.poll(up) == Layer::Low {
            up += Duration::from_millis(500);
        }
        waits.push((up - t).as_secs());
        t = up + Duration::from_millis(500);
        s.on_loss(t, 0.9);
    }
    assert_eq!(waits, [3, 6, 12, 12]);
}

#[test]
fn the_estimate_moves_down_only_with_loss() {
    let t0 = Instant::now();
    let mut s = selector(t0);
    // A low estimate from a player that loses nothing (a receive-side estimator ramping
    // up) moves nobody.
    s.on_estimate(secs(t0, 0.5), 300_000);
    assert_eq!(s.layer(), Layer::High);
    assert_eq!(s.estimate(), Some(300_000));
    // With some loss reported, the estimate decides where to go.
    s.on_loss(secs(t0, 1.0), 0.05);
    assert_eq!(s.layer(), Layer::High, "5 % alone is no reason to move");
    s.on_estimate(secs(t0, 1.1), 700_000);
    assert_eq!(s.layer(), Layer::Mid);
    s.on_estimate(secs(t0, 1.2), 100_000);
    assert_eq!(s.layer(), Layer::Low, "nothing fits: the lowest");
    // Clean again: it climbs whatever the (stale) estimate says.
    s.on_loss(secs(t0, 2.0), 0.0);
    assert_eq!(s.poll(secs(t0, 5.0)), Layer::Mid);
}

#[test]
fn the_transport_estimate_moves_down_without_loss_and_outranks_remb() {
    let t0 = Instant::now();
    let mut s = selector(t0);
    // A clean path on the top layer: the estimate is above it.
    s.on_transport_estimate(secs(t0, 0.5), 2_300_000, false);
    assert_eq!(s.layer(), Layer::High);
    // A REMB far below is ignored now, even with loss reported.
    s.on_loss(secs(t0, 0.6), 0.05);
    s.on_estimate(secs(t0, 0.7), 100_000);
    assert_eq!(s.layer(), Layer::High);
    assert_eq!(s.estimate(), Some(2_300_000));
    // An estimate still lagging the layer, with no trouble: nothing moves.
    s.on_transport_estimate(secs(t0, 0.9), 700_000, false);
    assert_eq!(s.layer(), Layer::High);
    // A back-off while the path delivered nearly all of the layer (delay variation from
    // a busy receiver, say): it stays.
    s.on_transport_estimate(secs(t0, 0.95), 1_232_500, true);
    assert_eq!(s.layer(), Layer::High);
    s.on_loss(secs(t0, 0.97), 0.0);
    // A back-off to 85 % of a 600 kbit/s path: mid (500 kbit/s) fits, high does not;
    // no receiver report lost anything.
    s.on_loss(secs(t0, 0.8), 0.0);
    s.on_transport_estimate(secs(t0, 1.0), 510_000, true);
    assert_eq!(s.layer(), Layer::Mid);
    // Trouble holds the climb back; 3 s clean on both counts lets it probe.
    s.on_transport_estimate(secs(t0, 2.0), 520_000, true);
    s.on_loss(secs(t0, 2.5), 0.0);
    assert_eq!(s.poll(secs(t0, 5.2)), Layer::Mid, "trouble at 2 s");
    s.on_transport_estimate(secs(t0, 3.0), 560_000, false);
    assert_eq!(s.poll(secs(t0, 5.9)), Layer::Mid);
    assert_eq!(s.probe_wanted(), None);
    // With transport-cc the move up waits for a padding probe at the top layer's rate.
    assert_eq!(s.poll(secs(t0, 6.0)), Layer::Mid, "a probe first");
    assert_eq!(s.probe_wanted(), Some((1_500_000, 500_000)));
    assert_eq!(s.poll(secs(t0, 6.5)), Layer::Mid, "while it runs");
    s.on_probe(secs(t0, 7.0), true);
    assert_eq!(s.layer(), Layer::High, "the probe passed");
    assert_eq!(s.probe_wanted(), None);
    // The move still fails if trouble follows it: back to mid, and the wait doubles.
    s.on_transport_estimate(secs(t0, 7.5), 510_000, true);
    assert_eq!(s.layer(), Layer::Mid);
    s.on_transport_estimate(secs(t0, 8.0), 520_000, false);
    assert_eq!(s.poll(secs(t0, 13.9)), Layer::Mid);
    assert_eq!(s.poll(secs(t0, 14.0)), Layer::Mid);
    assert!(s.probe_wanted().is_some());
}

#[test]
fn layers_that_do_not_flow_are_left_and_not_climbed_to() {
    let t0 = Instant::now();
    let mut s = Selector::new(
        SelectorConfig::default(),
        Layer::ALL.to_vec(),
        Layer::High,
        t0,
    );
    // Nothing measured yet: no decision.
    s.set_rates([0; 3]);
    assert_eq!(s.layer(), Layer::High);
    // The publisher sends only low and mid so far.
    s.set_rates([150_000, 500_000, 0]);
    assert_eq!(s.layer(), Layer::Mid);
    assert_eq!(s.poll(secs(t0, 30.0)), Layer::Mid, "high does not flow");
    s.set_rates(RATES);
    assert_eq!(s.poll(secs(t0, 30.0)), Layer::High);
}

#[test]
fn unknown_rates_go_to_the_lowest_layer() {
    let t0 = Instant::now();
    let mut s = Selector::new(
        SelectorConfig::default(),
        Layer::ALL.to_vec(),
        Layer::High,
        t0,
    );
    s.on_loss(t0, 0.5);
    assert_eq!(s.layer(), Layer::Low);
    let mut two = Selector::new(
        SelectorConfig::default(),
        vec![Layer::Low, Layer::High],
        Layer::High,
        t0,
    );
    two.set_rates(RATES);
    two.on_loss(t0, 0.2);
    assert_eq!(two.layer(), Layer::Low);
    two.on_loss(secs(t0, 0.1), 0.0);
    assert_eq!(two.poll(secs(t0, 3.2)), Layer::High);
}

#[test]
fn a_failed_or_troubled_probe_keeps_the_layer_and_doubles_the_wait() {
    let t0 = Instant::now();
    let mut s = selector(t0);
    s.on_transport_estimate(secs(t0, 0.1), 400_000, true);
    assert_eq!(s.layer(), Layer::Low);
    s.on_transport_estimate(secs(t0, 0.2), 400_000, false);
    assert_eq!(s.poll(secs(t0, 3.2)), Layer::Low);
    assert_eq!(s.probe_wanted(), Some((500_000, 150_000)));
    // The probe fails: no move, the next one after 6 s.
    s.on_probe(secs(t0, 4.0), false);
    assert_eq!(s.layer(), Layer::Low);
    assert_eq!(s.probe_wanted(), None);
    assert_eq!(s.poll(secs(t0, 9.9)), Layer::Low);
    assert_eq!(s.probe_wanted(), None);
    assert_eq!(s.poll(secs(t0, 10.0)), Layer::Low);
    assert!(s.probe_wanted().is_some(), "the second try");
    // Trouble while it runs fails it too (the wait stays at 6 s, the longest between
    // probes), and a late report of it changes nothing.
    s.on_transport_estimate(secs(t0, 10.3), 300_000, true);
    assert_eq!(s.probe_wanted(), None);
    s.on_probe(secs(t0, 10.5), true);
    assert_eq!(s.layer(), Layer::Low);
    s.on_transport_estimate(secs(t0, 11.0), 300_000, false);
    assert_eq!(s.poll(secs(t0, 16.9)), Layer::Low);
    assert_eq!(s.probe_wanted(), None);
    assert_eq!(s.poll(secs(t0, 17.0)), Layer::Low);
    assert!(s.probe_wanted().is_some());
    // A probe nobody reports on times out as failed.
    assert_eq!(s.poll(secs(t0, 19.9)), Layer::Low);
    assert!(s.probe_wanted().is_some());
    assert_eq!(s.poll(secs(t0, 20.0)), Layer::Low);
    assert_eq!(s.probe_wanted(), None);
}

#[test]
fn without_transport_cc_the_move_up_is_the_probe() {
    let t0 = Instant::now();
    let mut s = selector(t0);
    s.on_loss(t0, 0.9);
    s.on_loss(secs(t0, 0.5), 0.0);
    assert_eq!(s.poll(secs(t0, 3.5)), Layer::Mid);
    assert_eq!(s.probe_wanted(), None);
}

#[test]
fn loss_the_probe_caused_fails_it_without_moving_down() {
    let t0 = Instant::now();
    let mut s = selector(t0);
    s.on_transport_estimate(secs(t0, 0.1), 500_000, true);
    assert_eq!(s.layer(), Layer::Mid);
    s.on_transport_estimate(secs(t0, 0.2), 600_000, false);
    assert_eq!(s.poll(secs(t0, 3.2)), Layer::Mid);
    assert!(s.probe_wanted().is_some());
    // The padding overflowed the bottleneck: the report shows 30 % loss. The probe failed;
    // the player stays on mid.
    s.on_loss(secs(t0, 3.5), 0.3);
    assert_eq!(s.probe_wanted(), None);
    assert_eq!(s.layer(), Layer::Mid);
    // The next report still covers the probe's time: no move either.
    s.on_loss(secs(t0, 4.9), 0.2);
    assert_eq!(s.layer(), Layer::Mid);
    // Loss after the shadow is the path's: down.
    s.on_loss(secs(t0, 5.1), 0.4);
    assert_eq!(s.layer(), Layer::Low);
    // A probe that failed on its own measure casts the same shadow.
    let mut s = selector(t0);
    s.on_transport_estimate(secs(t0, 0.1), 500_000, true);
    s.on_transport_estimate(secs(t0, 0.2), 600_000, false);
    s.poll(secs(t0, 3.2));
    s.on_probe(secs(t0, 4.0), false);
    s.on_loss(secs(t0, 5.0), 0.3);
    assert_eq!(s.layer(), Layer::Mid);
    s.on_loss(secs(t0, 5.6), 0.3);
    assert_eq!(s.layer(), Layer::Low);
}
