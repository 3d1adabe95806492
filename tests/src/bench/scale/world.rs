//! The driver's view of the simulated cluster: which streams are live, who pulls them, which
//! nodes are up; and the churn applied to it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use anyhow::Result;
use strata_proto::v1;
use tokio::sync::mpsc;

use super::sim::{Life, Rng, SimNode};
use super::streams::{self, Done, Live, Ops};

/// Players a new pull starts with at most.
const PLAYERS_PER_PULL: u32 = 20;

/// The driver's bookkeeping.
pub struct World {
    /// Operations.
    pub ops: Ops,
    /// Node indices by region (every node, whatever its life).
    pub by_region: Vec<Vec<usize>>,
    lives: Vec<Live>,
    index: HashMap<String, usize>,
    results: mpsc::UnboundedReceiver<Done>,
    /// Operations sent whose result has not come back.
    pub pending: usize,
    next_stream: u64,
    /// Publishes, pulls and node events that found nothing to act on.
    pub skipped: u64,
    rng: Rng,
}

impl World {
    /// A world over these nodes (spares included), grouped by region.
    pub fn new(ops: Ops, results: mpsc::UnboundedReceiver<Done>, regions: usize) -> Self {
        let mut by_region = vec![Vec::new(); regions];
        for (i, n) in ops.nodes.iter().enumerate() {
            if let Some(r) = n
                .region
                .strip_prefix('r')
                .and_then(|r| r.parse::<usize>().ok())
                && r < regions
            {
                by_region[r].push(i);
            }
        }
        Self {
            ops,
            by_region,
            lives: Vec::new(),
            index: HashMap::new(),
            results,
            pending: 0,
            next_stream: 0,
            skipped: 0,
            rng: Rng::new(0x5eed),
        }
    }

    /// Live streams the driver knows of.
    pub fn live_count(&self) -> usize {
        self.lives.len()
    }

    /// Pulls of every live stream together.
    pub fn pull_count(&self) -> usize {
        self.lives.iter().map(|l| l.pulls.len()).sum()
    }

    /// Takes in every finished operation.
    pub fn absorb(&mut self) {
        while let Ok(done) = self.results.try_recv() {
            self.handle(done);
        }
    }

    /// Waits until no operation is in flight.
    pub async fn settle(&mut self) {
        while self.pending > 0 {
            match self.results.recv().await {
                Some(done) => self.handle(done),
                None => return,
            }
        }
    }

    fn handle(&mut self, done: Done) {
        self.pending = self.pending.saturating_sub(1);
        match done {
            Done::Published(live) => {
                self.index.insert(live.name.clone(), self.lives.len());
                self.lives.push(live);
            }
            Done::Pulled { stream, pull } => match self.index.get(&stream) {
                Some(&i) => self.lives[i].pulls.push(pull),
                // Ended meanwhile.
                None => self.ops.release(stream, pull),
            },
            Done::Failed => {}
        }
    }

    /// Takes a pull's players and stream off its node's counts and drops it.
    fn forget(&self, pull: streams::Pull) {
        let n = &self.ops.nodes[pull.node];
        n.players.fetch_sub(pull.players, Relaxed);
        n.streams.fetch_sub(1, Relaxed);
    }

    /// A random node of `region` that is alive, if one is found in a few tries.
    fn alive_in(&mut self, region: usize) -> Option<usize> {
        let nodes = self.by_region.get(region)?;
        for _ in 0..16 {
            let i = nodes[self.rng.below(nodes.len())];
            if self.ops.nodes[i].life() == Life::Alive {
                return Some(i);
            }
        }
        None
    }

    fn random_region(&mut self) -> usize {
        self.rng.below(self.by_region.len())
    }

    /// A new stream published by an alive node of `region` (a random one if `None`).
    pub fn start_stream(&mut self, region: Option<usize>) -> Option<String> {
        let r = region.unwrap_or_else(|| self.random_region());
        let Some(origin) = self.alive_in(r) else {
            self.skipped += 1;
            return None;
        };
        self.next_stream += 1;
        let name = format!("s{}", self.next_stream);
        self.pending += 1;
        self.ops.publish(name.clone(), origin);
        Some(name)
    }

    /// A player arrives for a random live stream at a random region's node.
    pub fn player_arrives(&mut self) {
        if self.lives.is_empty() {
            self.skipped += 1;
            return;
        }
        let s = self.rng.below(self.lives.len());
        let r = self.random_region();
        self.pull_at(s, r);
    }

    /// A node of region `r` starts pulling stream number `s` (or gains a player if it does).
    fn pull_at(&mut self, s: usize, r: usize) {
        let Some(node) = self.alive_in(r) else {
            self.skipped += 1;
            return;
        };
        let live = &mut self.lives[s];
        if node == live.origin {
            self.skipped += 1;
            return;
        }
        if let Some(p) = live.pulls.iter_mut().find(|p| p.node == node) {
            p.players += 1;
            self.ops.nodes[node].players.fetch_add(1, Relaxed);
            return;
        }
        let players = 1 + self.rng.below(PLAYERS_PER_PULL as usize) as u32;
        self.pending += 1;
        self.ops
            .pull(live.name.clone(), live.ended.clone(), node, players);
    }

    /// Every live stream gains `pulls` pulls in random regions (the initial population).
    pub fn pull_everywhere(&mut self, pulls: usize) {
        for s in 0..self.lives.len() {
            for _ in 0..pulls {
                let r = self.random_region();
                self.pull_at(s, r);
            }
        }
    }

    /// A player leaves a random pull; the pull ends with its last player.
    pub fn player_leaves(&mut self) {
        if self.lives.is_empty() {
            return;
        }
        let s = self.rng.below(self.lives.len());
        let live = &mut self.lives[s];
        if live.pulls.is_empty() {
            self.skipped += 1;
            return;
        }
        let p = self.rng.below(live.pulls.len());
        let pull = &mut live.pulls[p];
        pull.players -= 1;
        self.ops.nodes[pull.node].players.fetch_sub(1, Relaxed);
        if pull.players == 0 {
            let pull = live.pulls.swap_remove(p);
            // The release path takes the pull's counts off; it still has none left.
            self.ops.release(live.name.clone(), pull);
        }
    }

    /// A random live stream ends.
    pub fn end_stream(&mut self) {
        if self.lives.is_empty() {
            return;
        }
        let s = self.rng.below(self.lives.len());
        let live = self.remove(s);
        self.ops.end(live);
    }

    fn remove(&mut self, s: usize) -> Live {
        let live = self.lives.swap_remove(s);
        self.index.remove(&live.name);
        if let Some(moved) = self.lives.get(s) {
            self.index.insert(moved.name.clone(), s);
        }
        live
    }

    /// A pulling node and its stream, for the floors.
    pub fn sample_pull(&self) -> Option<(Arc<SimNode>, String)> {
        let live = self.lives.iter().find(|l| !l.pulls.is_empty())?;
        let node = self.ops.nodes[live.pulls[0].node].clone();
        Some((node, live.name.clone()))
    }

    /// A node that already pulls a stream asks again (a settled resolve, from the cache).
    pub fn re_resolve(&mut self) {
        if self.lives.is_empty() {
            return;
        }
        let live = &self.lives[self.rng.below(self.lives.len())];
        if live.pulls.is_empty() {
            self.skipped += 1;
            return;
        }
        let node = self.ops.nodes[live.pulls[self.rng.below(live.pulls.len())].node].clone();
        let (stream, counters) = (live.name.clone(), self.ops.counters.clone());
        let permits = self.ops.permits.clone();
        tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            let _ = streams::resolve(&node, &stream, &counters, true).await;
        });
    }

    /// A random alive node dies (its lease runs out; its records go with it) and a spare of
    /// the same region joins in its place.
    pub fn node_dies(&mut self) {
        let r = self.random_region();
        let Some(dead) = self.alive_in(r) else {
            self.skipped += 1;
            return;
        };
        self.ops.nodes[dead].set_life(Life::Dead);
        // Its streams end by lease expiry; its pulls stop.
        let mut s = 0;
        while s < self.lives.len() {
            if self.lives[s].origin == dead {
                let mut live = self.remove(s);
                for pull in std::mem::take(&mut live.pulls) {
                    self.forget(pull);
                }
                continue;
            }
            let pulls = std::mem::take(&mut self.lives[s].pulls);
            let (gone, kept): (Vec<_>, Vec<_>) = pulls.into_iter().partition(|p| p.node == dead);
            self.lives[s].pulls = kept;
            for pull in gone {
                self.forget(pull);
            }
            s += 1;
        }
        let spare = self.by_region[r]
            .iter()
            .copied()
            .find(|&i| self.ops.nodes[i].life() == Life::Spare);
        match spare {
            Some(i) => self.join(i),
            None => self.skipped += 1,
        }
    }

    /// Spare node `i` registers and starts its keep-alives.
    fn join(&mut self, i: usize) {
        let node = self.ops.nodes[i].clone();
        node.set_life(Life::Alive);
        let counters = self.ops.counters.clone();
        tokio::spawn(async move {
            match node.register(&counters).await {
                Ok(every) => drop(node.clone().keep_alive(every, counters)),
                Err(e) => counters.error("join", &e),
            }
        });
    }

    /// A random alive node is drained by an operator.
    pub fn node_drains(&mut self) {
        let r = self.random_region();
        let Some(i) = self.alive_in(r) else {
            self.skipped += 1;
            return;
        };
        let node = self.ops.nodes[i].clone();
        node.set_life(Life::Draining);
        let counters = self.ops.counters.clone();
        tokio::spawn(async move {
            let req = v1::DrainRequest {
                node_id: node.id.clone(),
            };
            if let Err(e) = node.nodes().drain(req).await {
                counters.error("drain", &e);
            }
        });
    }
}

/// Registers every non-spare node (at most `parallel` at once) and starts its keep-alives.
pub async fn register_all(
    nodes: &[Arc<SimNode>],
    counters: &Arc<super::sim::Counters>,
    parallel: usize,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    use futures::StreamExt;
    let results: Vec<Result<tokio::task::JoinHandle<()>>> =
        futures::stream::iter(nodes.iter().filter(|n| n.life() == Life::Alive))
            .map(|n| async move {
                let every = n.register(counters).await?;
                Ok(n.clone().keep_alive(every, counters.clone()))
            })
            .buffer_unordered(parallel)
            .collect()
            .await;
    results.into_iter().collect()
}
