//! Chaos: five streams with players in three regions while a random node is killed (SIGKILL,
//! sometimes SIGTERM) and later restarted, every few seconds, for `STRATA_CHAOS_SECS` seconds
//! (default 120). The five publishers' main origins are never killed (their failover needs the
//! publisher to come back: `netns_failover_main_origin_sigkill`); every other node is fair game.
//! Two more streams have a backup publisher (`chaos_backup`): their publishers' nodes are
//! killed too (one at a time), the stream switching to the other publisher; a restarted node
//! publishes again as the backup. After every step each of them is live from exactly one of
//! its publishers.
//!
//! After every step: at most one regional origin per (stream, region), no regional origin in
//! the main origin's region, the main origins unchanged, no record of a node dead longer than
//! its lease allows (all checked every 20 ms by `TreeMonitor`), and every player on a live node
//! receives video again within 2 s. Players on a restarted node are replaced by new ones (a
//! new WHEP each), which must join within 10 s.
//!
//! The schedule comes from a seeded RNG: the seed is printed; `STRATA_CHAOS_SEED` replays one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use strata_proto::v1;
use strata_tests::faults::{DeadNodes, TreeMonitor, arm, get_tree, median_max, ms, routing_client};
use strata_tests::media::{TestPlayer, TestPublisher, vp8_clip};
use strata_tests::ports::require_netns;
use strata_tests::procs::{ProcCluster, ProcOptions};
use tokio::time::{Instant, sleep};

mod chaos_backup;
use chaos_backup::Redundant;

const TTL: Duration = Duration::from_secs(3);
/// A dead node's records must be gone this long after its death (see `netns_failover.rs`).
const RECORDS_WITHIN: Duration = Duration::from_millis(4500);
/// Every player on a live node receives video again within this.
const RESUME_WITHIN: Duration = Duration::from_secs(2);
/// A new player on a restarted node plays within this.
const JOIN_WITHIN: Duration = Duration::from_secs(10);
/// A player whose longest gap in a step exceeds this was hit by the step.
const HIT: Duration = Duration::from_millis(250);
/// At most this many nodes are down at once.
const MAX_DEAD: usize = 2;

/// SplitMix64: small, seedable, good enough to pick victims.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

struct Tracked {
    stream: String,
    player: TestPlayer,
}

#[derive(Default)]
struct Tally {
    steps: u32,
    sigkills: u32,
    sigterms: u32,
    restarts: u32,
    joins: u32,
    recoveries: u32,
    stalls: Vec<Duration>,
    violations: Vec<String>,
}

/// Players on `node` for its streams.
async fn start_players(
    c: &ProcCluster,
    node: &str,
    streams: &[String],
) -> Result<Vec<Tracked>, String> {
    let url = c.node(node).unwrap().http_url();
    let mut out = Vec::new();
    for s in streams {
        let p = TestPlayer::start(&url, s)
            .await
            .map_err(|e| format!("WHEP {s} on {node}: {e:#}"))?;
        out.push(Tracked {
            stream: s.clone(),
            player: p,
        });
    }
    for t in &out {
        t.player
            .wait_for(JOIN_WITHIN, "first video", |s| s.video_packets > 0)
            .await
            .map_err(|e| format!("{} on {node}: {e:#}", t.stream))?;
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "runs in the loopback-only network namespace: scripts/test.sh"]
async fn netns_chaos_kill_and_restart() {
    require_netns("netns_chaos_kill_and_restart");
    let secs = env_u64("STRATA_CHAOS_SECS").unwrap_or(120);
    let seed = env_u64("STRATA_CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    eprintln!("chaos: {secs} s, seed {seed} (replay with STRATA_CHAOS_SEED={seed})");
    let mut rng = Rng(seed);

    let regions = ["A", "B", "C"];
    let mut nodes = Vec::new();
    for r in regions {
        for i in 1..=3 {
            nodes.push((format!("{}{i}", r.to_lowercase()), r.to_owned()));
        }
    }
    let mut c = ProcCluster::start(ProcOptions {
        lease_ttl: TTL,
        nodes,
        node_args: vec!["--drain-timeout".into(), "3s".into()],
        ..ProcOptions::default()
    })
    .await
    .unwrap();
    let cp_urls: Vec<String> = c.control_planes().iter().map(|cp| cp.url()).collect();

    // Five streams on three main origins; the other six nodes each play three of them.
    let mains = [
        ("s0", "a1"),
        ("s1", "a1"),
        ("s2", "b1"),
        ("s3", "c1"),
        ("s4", "c1"),
    ];
    let streams: Vec<String> = mains.iter().map(|(s, _)| (*s).to_owned()).collect();
    let mut publishers = Vec::new();
    for (s, n) in mains {
        let url = c.node(n).unwrap().http_url();
        publishers.push(
            TestPublisher::start(&url, s, vp8_clip().unwrap())
                .await
                .unwrap(),
        );
    }
    let victims = ["a2", "a3", "b2", "b3", "c2", "c3"];
    // The redundant streams: primary and backup on two victims of different regions.
    let mut redundant = vec![
        Redundant::start(&c, "r0", "a2", "b2").await,
        Redundant::start(&c, "r1", "c3", "a3").await,
    ];
    let mut plays: BTreeMap<&str, Vec<String>> = victims
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, (0..3).map(|k| streams[(i + k) % 5].clone()).collect()))
        .collect();
    for (node, s) in [("b3", "r0"), ("c2", "r0"), ("b3", "r1"), ("a2", "r1")] {
        plays.get_mut(node).unwrap().push(s.to_owned());
    }
    let all_streams: Vec<String> = streams
        .iter()
        .cloned()
        .chain(redundant.iter().map(|r| r.stream.clone()))
        .collect();
    let mut players: BTreeMap<String, Vec<Tracked>> = BTreeMap::new();
    for n in victims {
        players.insert(n.to_owned(), start_players(&c, n, &plays[n]).await.unwrap());
    }
    let mut epochs = BTreeMap::new();
    let mut routing = routing_client(&cp_urls).await.unwrap();
    for s in &streams {
        let t = get_tree(&mut routing, s).await.unwrap().unwrap();
        epochs.insert(s.clone(), t.main.unwrap());
    }
    eprintln!(
        "chaos: 9 nodes in 3 regions, 5 streams and 2 with a backup publisher, {} players on {victims:?}",
        players.values().map(Vec::len).sum::<usize>()
    );

    let dead_nodes = DeadNodes::default();
    let monitor = TreeMonitor::start(cp_urls.clone(), all_streams, dead_nodes.clone());
    let mut dead: Vec<String> = Vec::new();
    let mut tally = Tally::default();
    let started = Instant::now();
    let end = started + Duration::from_secs(secs);
    while Instant::now() < end {
        tally.steps += 1;
        let step_at = Instant::now();
        let all: Vec<&TestPlayer> = players.values().flatten().map(|t| &t.player).collect();
        let since = arm(&all);
        drop(all);
        for r in &mut redundant {
            r.observe(monitor.last(&r.stream).as_ref(), step_at);
        }
        let killable: Vec<&str> = victims
            .iter()
            .copied()
            .filter(|v| !dead.iter().any(|d| d == v))
            .filter(|v| redundant.iter().all(|r| r.killable(v, step_at)))
            .collect();
        if killable.is_empty() && dead.is_empty() {
            // Every node is spared for now (standbys still warming up).
            sleep(Duration::from_millis(500)).await;
            continue;
        }
        let restart =
            !dead.is_empty() && (dead.len() >= MAX_DEAD || killable.is_empty() || rng.chance(40));
        let what = if restart {
            let node = dead.remove(rng.below(dead.len()));
            c.node_mut(&node).unwrap().restart().await.unwrap();
            dead_nodes.mark_alive(&node);
            tally.restarts += 1;
            for r in &mut redundant {
                if let Err(e) = r.on_restarted(&c, &node).await {
                    tally.violations.push(format!("step {}: {e}", tally.steps));
                }
            }
            match start_players(&c, &node, &plays[node.as_str()]).await {
                Ok(p) => {
                    tally.joins += p.len() as u32;
                    players.insert(node.clone(), p);
                }
                Err(e) => tally.violations.push(format!("step {}: {e}", tally.steps)),
            }
            format!("restart {node}")
        } else {
            let node = killable[rng.below(killable.len())].to_owned();
            players.remove(&node);
            let how = if rng.chance(20) {
                let status = c
                    .node_mut(&node)
                    .unwrap()
                    .process()
                    .terminate(Duration::from_secs(10))
                    .await
                    .unwrap();
                assert!(status.success(), "{node} exited with {status} on SIGTERM");
                // Deregistered on the way out: its records go at once.
                dead_nodes.mark_dead(&node, Duration::from_millis(1500));
                tally.sigterms += 1;
                "SIGTERM"
            } else {
                c.node_mut(&node).unwrap().kill().unwrap();
                dead_nodes.mark_dead(&node, RECORDS_WITHIN);
                tally.sigkills += 1;
                "SIGKILL"
            };
            dead.push(node.clone());
            for r in &mut redundant {
                r.on_killed(&node).await;
            }
            format!("{how} {node}")
        };

        // Every player on a live node plays again within RESUME_WITHIN of the step.
        let deadline = step_at + RESUME_WITHIN;
        let late = loop {
            let late = players
                .iter()
                .flat_map(|(n, ts)| ts.iter().map(move |t| (n, t)))
                .filter(|(_, t)| {
                    t.player
                        .stats()
                        .last_video
                        .is_none_or(|v| v <= step_at.into_std())
                })
                .map(|(n, t)| format!("{} on {n}", t.stream))
                .collect::<Vec<_>>();
            if late.is_empty() || Instant::now() >= deadline {
                break late;
            }
            sleep(Duration::from_millis(20)).await;
        };
        if !late.is_empty() {
            tally.violations.push(format!(
                "step {} ({what}): no video within {} ms: {late:?}",
                tally.steps,
                ms(RESUME_WITHIN)
            ));
        }
        // Media flows until the next step (2 to 4 s apart).
        let next = step_at + Duration::from_millis(2000 + rng.below(2000) as u64);
        sleep(next.saturating_duration_since(Instant::now())).await;
        let mut hit = Vec::new();
        for (n, ts) in &players {
            for t in ts {
                let gap = t.player.stats().longest_video_gap;
                if t.player
                    .stats()
                    .last_video
                    .is_some_and(|v| v > since.into_std())
                    && gap > HIT
                {
                    hit.push(format!("{}@{n} {} ms", t.stream, ms(gap)));
                    tally.recoveries += 1;
                    tally.stalls.push(gap);
                }
                let stuck = t
                    .player
                    .stats()
                    .last_video
                    .is_none_or(|v| v.elapsed() > RESUME_WITHIN);
                if stuck {
                    tally.violations.push(format!(
                        "step {} ({what}): {} on {n} gets no video",
                        tally.steps, t.stream
                    ));
                }
                if gap > RESUME_WITHIN {
                    tally.violations.push(format!(
                        "step {} ({what}): {} on {n} stalled {} ms",
                        tally.steps,
                        t.stream,
                        ms(gap)
                    ));
                }
            }
        }
        // Each redundant stream is live from exactly one of its publishers.
        for r in &redundant {
            if let Err(e) = r.check(monitor.last(&r.stream).as_ref(), &dead) {
                tally
                    .violations
                    .push(format!("step {} ({what}): {e}", tally.steps));
            }
        }
        // The main origins never moved.
        for s in &streams {
            let main = monitor.last(s).and_then(|t| t.main);
            if main.as_ref() != epochs.get(s) {
                tally.violations.push(format!(
                    "step {} ({what}): {s}'s main origin is {main:?}",
                    tally.steps
                ));
            }
        }
        eprintln!(
            "chaos +{:>5.1} s step {:>2}: {what:<13} down {dead:?}; stalls: {}",
            (step_at - started).as_secs_f64(),
            tally.steps,
            if hit.is_empty() {
                "none".to_owned()
            } else {
                hit.join(", ")
            }
        );
    }

    // Every node back; the records of the dead go; then a last look at every tree.
    for node in std::mem::take(&mut dead) {
        c.node_mut(&node).unwrap().restart().await.unwrap();
        dead_nodes.mark_alive(&node);
        tally.restarts += 1;
        for r in &mut redundant {
            if let Err(e) = r.on_restarted(&c, &node).await {
                tally.violations.push(format!("final restart: {e}"));
            }
        }
    }
    sleep(Duration::from_secs(1)).await;
    let report = monitor.stop();
    let mut routing = routing_client(&cp_urls).await.unwrap();
    for s in &streams {
        let t: v1::StreamTree = get_tree(&mut routing, s).await.unwrap().unwrap();
        assert_eq!(t.main.as_ref(), epochs.get(s), "{s}: {t:?}");
    }
    for r in &redundant {
        let t = get_tree(&mut routing, &r.stream).await.unwrap();
        if let Err(e) = r.check(t.as_ref(), &[]) {
            tally.violations.push(format!("at the end: {e}"));
        }
    }
    tally.violations.extend(report.violations.iter().cloned());

    let (median, worst) = median_max(&tally.stalls);
    eprintln!("chaos summary (seed {seed}, {secs} s):");
    eprintln!(
        "  | steps | SIGKILL | SIGTERM | restarts | new players | recoveries | median stall | worst stall | switches to a backup | regional changes | GetStream checks | violations |"
    );
    eprintln!("  |---|---|---|---|---|---|---|---|---|---|---|---|");
    eprintln!(
        "  | {} | {} | {} | {} | {} | {} | {} ms | {} ms | {} | {} | {} | {} |",
        tally.steps,
        tally.sigkills,
        tally.sigterms,
        tally.restarts,
        tally.joins,
        tally.recoveries,
        ms(median),
        ms(worst),
        redundant.iter().map(|r| r.switches).sum::<u32>(),
        report.changes.len(),
        report.samples,
        tally.violations.len()
    );
    for p in publishers {
        p.vanish().await;
    }
    for r in redundant {
        r.stop().await;
    }
    assert!(
        tally.violations.is_empty(),
        "seed {seed}: invariant violations: {:#?}",
        tally.violations
    );
}
