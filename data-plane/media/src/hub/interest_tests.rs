use std::time::{Duration, Instant};

use super::*;

const LOW: LayerSet = LayerSet(0b001);
const LOW_HIGH: LayerSet = LayerSet(0b101);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn wire_bits_refuse_unknown_layers() {
    assert_eq!(LayerSet::from_bits(0b101), Some(LOW_HIGH));
    assert_eq!(LayerSet::from_bits(0), Some(LayerSet::EMPTY));
    assert_eq!(LayerSet::from_bits(0b1000), None);
    assert_eq!(LayerSet::from_bits(0xff), None);
    assert_eq!(
        LOW_HIGH.iter().collect::<Vec<_>>(),
        vec![Layer::Low, Layer::High]
    );
    assert_eq!(LayerSet::EMPTY.with_floor(Some(Layer::Low)), LOW);
    assert_eq!(LayerSet::EMPTY.with_floor(None), LayerSet::EMPTY);
}

#[test]
fn filter_passes_every_layer_until_told_otherwise() {
    let t0 = Instant::now();
    let mut f = LayerFilter::default();
    for layer in Layer::ALL {
        assert_eq!(f.offer(t0, layer, false), LayerVerdict::Pass);
    }
}

#[test]
fn an_added_layer_starts_at_its_keyframe() {
    let t0 = Instant::now();
    let mut f = LayerFilter::default();
    assert_eq!(f.set(t0, LOW), LayerSet::EMPTY);
    assert_eq!(f.offer(t0, Layer::High, true), LayerVerdict::Drop);
    assert_eq!(f.offer(t0, Layer::Low, false), LayerVerdict::Pass);
    // High comes back: asked for, and dropped until its keyframe.
    assert_eq!(f.set(t0, LOW_HIGH), LayerSet::EMPTY.with(Layer::High));
    assert_eq!(f.offer(t0, Layer::High, false), LayerVerdict::Drop);
    assert_eq!(f.offer(t0, Layer::High, true), LayerVerdict::Pass);
    assert_eq!(f.offer(t0, Layer::High, false), LayerVerdict::Pass);
    // Removed while waiting, then added again: waits again.
    f.set(t0, LOW);
    f.set(t0, LOW_HIGH);
    f.set(t0, LOW);
    f.set(t0, LOW_HIGH);
    assert_eq!(f.offer(t0, Layer::High, false), LayerVerdict::Drop);
    assert_eq!(f.offer(t0, Layer::Mid, true), LayerVerdict::Drop);
}

#[test]
fn a_waiting_layer_asks_for_its_keyframe_again_while_its_packets_arrive() {
    let t0 = Instant::now();
    let mut f = LayerFilter::default();
    f.set(t0, LOW);
    f.set(t0, LOW_HIGH);
    let mut asked = Vec::new();
    for i in 0..3_000u64 {
        let now = t0 + ms(i);
        if f.offer(now, Layer::High, false) == LayerVerdict::DropAndAsk {
            asked.push(i);
        }
    }
    assert_eq!(asked, vec![1_000, 2_000]);
    assert_eq!(
        f.offer(t0 + ms(3_000), Layer::High, true),
        LayerVerdict::Pass
    );
    assert_eq!(
        f.offer(t0 + ms(9_000), Layer::High, false),
        LayerVerdict::Pass
    );
}

#[test]
fn nothing_is_sent_while_every_layer_is_wanted() {
    let t0 = Instant::now();
    let mut d = InterestDebounce::new(DebounceConfig::default());
    d.want(t0, LayerSet::ALL);
    assert_eq!(d.poll(t0), None);
    assert_eq!(d.next_deadline(), None);
}

#[test]
fn removals_wait_for_the_hold_down_additions_do_not() {
    let cfg = DebounceConfig::default();
    let t0 = Instant::now();
    let mut d = InterestDebounce::new(cfg);
    d.want(t0, LOW);
    // Upstream sends everything until told: the removal is held first.
    assert_eq!(d.poll(t0), None);
    assert_eq!(d.next_deadline(), Some(t0 + cfg.hold_down));
    assert_eq!(d.poll(t0 + cfg.hold_down - ms(1)), None);
    let t1 = t0 + cfg.hold_down;
    assert_eq!(d.poll(t1), Some(LOW));
    assert_eq!(d.next_deadline(), None);
    // An addition after the interval goes out at once.
    let t2 = t1 + cfg.min_interval;
    d.want(t2, LOW_HIGH);
    assert_eq!(d.poll(t2), Some(LOW_HIGH));
    // Dropping it again is held: a flip back within the hold costs nothing.
    d.want(t2 + ms(10), LOW);
    assert_eq!(d.poll(t2 + ms(500)), None);
    d.want(t2 + ms(600), LOW_HIGH);
    assert_eq!(d.poll(t2 + ms(600)), None);
    assert_eq!(d.next_deadline(), None);
    assert_eq!(d.poll(t2 + cfg.hold_down * 2), None);
}

#[test]
fn a_flipping_interest_is_sent_at_a_bounded_rate() {
    let cfg = DebounceConfig {
        min_interval: ms(250),
        hold_down: Duration::ZERO,
    };
    let t0 = Instant::now();
    let mut d = InterestDebounce::new(cfg);
    let mut sent = 0u32;
    let mut last = None;
    // Flip every millisecond for 10 s, polling every millisecond.
    for i in 0..10_000u64 {
        let now = t0 + ms(i);
        d.want(now, if i % 2 == 0 { LOW } else { LOW_HIGH });
        if let Some(set) = d.poll(now) {
            if let Some(prev) = last {
                assert!(
                    now >= prev + cfg.min_interval,
                    "sent twice within the interval"
                );
            }
            last = Some(now);
            sent += 1;
            assert!(set == LOW || set == LOW_HIGH);
        }
    }
    assert!(sent <= 41, "{sent} messages in 10 s");
    assert!(sent >= 2, "the interest never went out");
}

#[test]
fn additions_within_the_interval_wait_for_it() {
    let cfg = DebounceConfig {
        min_interval: ms(250),
        hold_down: Duration::ZERO,
    };
    let t0 = Instant::now();
    let mut d = InterestDebounce::new(cfg);
    d.want(t0, LOW);
    assert_eq!(d.poll(t0), Some(LOW));
    d.want(t0 + ms(10), LOW_HIGH);
    assert_eq!(d.poll(t0 + ms(10)), None);
    assert_eq!(d.next_deadline(), Some(t0 + ms(250)));
    assert_eq!(d.poll(t0 + ms(250)), Some(LOW_HIGH));
    assert_eq!(d.next_deadline(), None);
}
