//! Smoke runs of every `strata-bench` harness: `control --quick`, `relay --quick` and
//! `scale --quick` (real etcd, QUIC on 127.0.0.1), and the ones that need a network namespace, `fanout --quick`
//! (Strata, and Janus when installed), `ingest --quick` (ffmpeg over RTMP and SRT, and WHIP, into a
//! node, and each path's glass-to-glass stamps) and `wan --quick` (root: nested namespaces). They check
//! that the harnesses work end to end (every call answered, packets delivered with losses
//! under a bound), not the figures.

use strata_tests::bench::control::{self, ControlArgs};
use strata_tests::bench::fanout::simulcast::Mode;
use strata_tests::bench::fanout::{self, FanoutArgs};
use strata_tests::bench::ingest::{self, IngestArgs, Kind as IngestKind};
use strata_tests::bench::relay::{self, RelayArgs};
use strata_tests::bench::scale::{self, ScaleArgs};
use strata_tests::bench::wan::{self, WanArgs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_control_smoke() {
    // In process: the test binary has no `strata-control` beside it.
    control::run(ControlArgs {
        quick: true,
        duration: None,
        warmup: None,
        concurrency: None,
        connections: None,
        separate_process: false,
        in_process: true,
        control_bin: None,
    })
    .await
    .expect("control --quick");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_scale_smoke() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ScaleArgs,
    }
    // In process: the test binary has no `strata-control` beside it.
    let cli = Cli::parse_from(["scale", "--quick", "--in-process"]);
    let report = scale::measure(cli.args).await.expect("scale --quick");
    println!("{}", report.markdown());
    // No lost lease, no failed call, a keep-alive answered in every phase.
    report.check().expect("scale --quick check");
    let step = report.steps.first().expect("one step");
    let phase = |name: &str| {
        step.phases
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no {name} phase"))
    };
    // Every stream of the setup is live and pulled; the churn phase ended some of them and
    // their pullers' watches saw it; the floors and the burst were measured.
    assert_eq!(phase("setup").streams, step.streams, "{step:?}");
    assert!(phase("setup").pulls > 0, "{step:?}");
    assert!(phase("quiet").resolve_settled.count > 0, "{step:?}");
    assert!(phase("churn").watch_delay.count > 0, "{step:?}");
    assert!(
        step.floors.ping.count > 0 && step.floors.raw_txn.count > 0,
        "{step:?}"
    );
    assert_eq!(step.burst.streams, 50, "{step:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_relay_smoke() {
    let report = relay::measure(RelayArgs {
        quick: true,
        streams: vec![1, 4],
        duration: None,
        warmup: None,
        many: Some(4),
        rounds: None,
    })
    .await
    .expect("relay --quick");
    println!("{}", report.text);
    assert_eq!(report.latency.len(), 2, "one latency run per stream count");
    for r in &report.latency {
        // One relay hop on loopback loses nothing: 0 of ~270 (1 stream) and 0 of ~1085
        // (4 streams) in every run so far. Allow 1 % for a busy machine; a skipped group
        // (about 208 packets of one stream) or a hop that drops packets is far over it.
        assert!(r.sent > 0, "{} streams: nothing sent", r.streams);
        assert!(
            r.lost * 100 <= r.sent,
            "{} streams: {} of {} packets lost ({} groups skipped)",
            r.streams,
            r.lost,
            r.sent,
            r.groups_skipped
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_bench_fanout_smoke() {
    strata_tests::ports::require_netns("netns_bench_fanout_smoke");
    let report = fanout::measure(FanoutArgs::quick())
        .await
        .expect("fanout --quick");
    println!("{}", report.text);
    assert!(
        !report.results.is_empty(),
        "no server measured: {:?}",
        report.notes
    );
    for r in &report.results {
        let step = r.steps.first().expect("one step");
        assert_eq!(step.players, 2, "{:?}: {step:?}", r.kind);
        assert_eq!(step.failed, 0, "{:?}: {step:?}", r.kind);
        assert_eq!(step.starved, 0, "{:?}: {step:?}", r.kind);
        assert!(step.mbit_out > 0.0, "{:?}: {step:?}", r.kind);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_bench_fanout_simulcast_smoke() {
    strata_tests::ports::require_netns("netns_bench_fanout_simulcast_smoke");
    // Three players, so the mixed ramp has one on each layer.
    let args = FanoutArgs {
        servers: vec!["strata".into()],
        steps: vec![3],
        simulcast: true,
        ..FanoutArgs::quick()
    };
    let report = fanout::measure(args)
        .await
        .expect("fanout --quick --simulcast");
    println!("{}", report.text);
    let modes: Vec<Mode> = report.results.iter().map(|r| r.mode).collect();
    assert_eq!(
        modes,
        [Mode::Single, Mode::Auto, Mode::Mixed],
        "{:?}",
        report.notes
    );
    for r in &report.results {
        let step = r.steps.first().expect("one step");
        assert_eq!(step.players, 3, "{}: {step:?}", r.label());
        assert_eq!(step.failed, 0, "{}: {step:?}", r.label());
        assert_eq!(step.starved, 0, "{}: {step:?}", r.label());
        assert!(step.mbit_out > 0.0, "{}: {step:?}", r.label());
    }
    assert!(
        report.text.contains("÷ Strata**"),
        "no simulcast ÷ single-layer row:\n{}",
        report.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_bench_fanout_transport_cc_smoke() {
    strata_tests::ports::require_netns("netns_bench_fanout_transport_cc_smoke");
    let args = FanoutArgs {
        servers: vec!["strata".into()],
        transport_cc: true,
        ..FanoutArgs::quick()
    };
    let report = fanout::measure(args)
        .await
        .expect("fanout --quick --transport-cc");
    println!("{}", report.text);
    let step = report
        .results
        .first()
        .and_then(|r| r.steps.first())
        .expect("one step");
    assert_eq!(
        (step.players, step.failed, step.starved),
        (2, 0, 0),
        "{step:?}"
    );
    let [fb] = report.transport_feedback.as_slice() else {
        panic!(
            "one Strata ramp's feedback: {:?}",
            report.transport_feedback
        );
    };
    // Every player negotiated transport-cc and sent feedback (settle + window ≥ 1.5 s at
    // one packet per 100 ms); the node read feedback and refused none.
    assert_eq!(fb.players, (2, 2), "{fb}");
    assert!(fb.sent >= 10, "{fb}");
    assert!(fb.read.is_some_and(|n| n > 0), "{fb}");
    assert_eq!(fb.refused, Some(0), "{fb}");
    assert!(report.text.contains("transport-cc on"), "{}", report.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_bench_wan_smoke() {
    strata_tests::ports::require_netns("netns_bench_wan_smoke");
    if let Some(why) = wan::unavailable() {
        println!("skipped: {why}");
        return;
    }
    let r = wan::measure(WanArgs::quick()).await.expect("wan --quick");
    println!("{}", r.render());
    // Every remote region got the stream across the WAN, and played it.
    for f in r.first.iter().skip(1) {
        assert_eq!(f.cold_region.len(), 1, "{f:?}");
        assert_eq!(f.warm.len(), 1, "{f:?}");
    }
    for l in &r.latency {
        let p50 = l.samples.get(l.samples.len() / 2).copied();
        let p50 = p50.unwrap_or_else(|| panic!("no glass-to-glass samples in {}", l.region));
        assert!(
            p50 >= l.floor,
            "{}: p50 {p50:?} below the link delay {:?}",
            l.region,
            l.floor
        );
    }
    // The region graph (on in --quick): a chain eu → use → usw → ap, read from GetStream.
    let from = |region: &str| {
        r.parents
            .iter()
            .find(|p| p.region == region)
            .map(|p| (p.from.as_str(), p.depth))
    };
    assert_eq!(from("use"), Some(("eu", 1)), "{:?}", r.parents);
    assert_eq!(from("usw"), Some(("use", 2)), "{:?}", r.parents);
    assert_eq!(from("ap"), Some(("usw", 3)), "{:?}", r.parents);
    // One copy of the stream on each link of the chain, nothing on the direct links from eu
    // to usw and ap (bytes counted by the link proxies).
    let bps = |l: &wan::LinkResult| l.ab.wire_bytes() as f64 * 8.0 / r.window.as_secs_f64();
    for l in &r.links {
        let copies = bps(l) / r.stream_sent_bps;
        let chain = matches!((l.a, l.b), ("eu", "use") | ("use", "usw") | ("usw", "ap"));
        if chain {
            assert!(
                (0.7..2.0).contains(&copies),
                "{} → {}: {copies:.2} copies",
                l.a,
                l.b
            );
        } else {
            assert!(copies < 0.2, "{} → {}: {copies:.2} copies", l.a, l.b);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_bench_ingest_smoke() {
    strata_tests::ports::require_netns("netns_bench_ingest_smoke");
    let report = ingest::measure(IngestArgs::quick())
        .await
        .expect("ingest --quick");
    println!("{}", report.text);
    assert_eq!(report.results.len(), 4, "rtmp, rtmp-an, srt and whip");
    for r in &report.results {
        assert_eq!(r.publishers, 1, "{r:?}");
        assert_eq!(r.players_starved, 0, "{r:?}");
        // The node does work for every ingest, media goes in and comes out.
        assert!(r.node_cores > 0.0, "{r:?}");
        assert!(r.mbit_in > 0.1, "{r:?}");
        assert!(r.mbit_out > 0.1, "{r:?}");
        // Loopback, one stream: a busy machine may drop a little, never a tenth.
        assert!(r.loss < 0.1, "{r:?}");
    }
    // ffmpeg's 1 Mbit/s video is about what the node ingests (the encoder's rate control
    // over a short window: loose bounds).
    let rtmp = report.get(IngestKind::RtmpVideoOnly).expect("rtmp-an run");
    assert!((0.3..3.0).contains(&rtmp.mbit_in), "{rtmp:?}");
    // Glass-to-glass: every path's stamps reach the player (for RTMP and SRT, in an H.264 SEI
    // the node must pass through), about one per frame (25 fps) or Opus packet (50/s) over 2 s.
    let g2g = |path| {
        let r = report.g2g.iter().find(|r| r.path == path);
        r.unwrap_or_else(|| panic!("no {path:?} run")).clone()
    };
    for path in ingest::g2g::Path::all() {
        let r = g2g(path);
        assert_eq!(r.players_without_samples, 0, "{r:?}");
        assert!(r.samples >= 25, "{r:?}");
    }
    // SRT holds every packet for its latency before the node reads it: a figure below the
    // configured latency would mean the stamps are not what we think they are.
    let (srt, low) = (g2g(ingest::g2g::Path::Srt), g2g(ingest::g2g::Path::SrtLow));
    let (srt_p50, low_p50) = (srt.p50_ms.unwrap_or(0.0), low.p50_ms.unwrap_or(0.0));
    assert!(srt_p50 >= 120.0, "{srt:?}");
    assert!(low_p50 >= 20.0 && low_p50 < srt_p50, "{low:?} {srt:?}");
}
