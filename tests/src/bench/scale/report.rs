//! The report: markdown tables on stdout, the same figures as JSON.

use std::fmt::Write as _;

use anyhow::{Result, bail};
use serde::Serialize;

use super::hist::{Summary, fmt_ms};
use super::meter::ProcUse;
use super::step::StepResult;
use super::{Plan, Step};
use crate::bench::control::target::Placement;
use crate::bench::machine::Machine;

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// CPUs.
    pub nproc: usize,
    /// CPU model.
    pub cpu_model: Option<String>,
    /// Debug or release build of the bench.
    pub profile: String,
    /// 1-minute load average before the run (other work on the machine).
    pub load_before: Option<f64>,
    /// And after.
    pub load_after: Option<f64>,
    /// The parameters.
    pub params: Params,
    /// Where the replicas ran, when not as asked.
    pub placement_note: Option<String>,
    /// Every step (and its baseline run, if any).
    pub steps: Vec<StepResult>,
    /// Steps that could not be measured, and why.
    pub failed_steps: Vec<String>,
}

/// The parameters of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Params {
    /// Steps.
    pub steps: Vec<Step>,
    /// Regions.
    pub regions: usize,
    /// Pulls per stream at setup.
    pub pulls: usize,
    /// Stream ends (and starts) per second.
    pub churn: f64,
    /// Player arrivals (and departures) per second.
    pub players_rate: f64,
    /// Settled resolves per second.
    pub resolve_rate: f64,
    /// Node events per minute.
    pub node_churn: f64,
    /// Replicas.
    pub replicas: usize,
    /// Replicas as processes.
    pub replicas_as_processes: bool,
    /// etcd members.
    pub etcd_members: usize,
    /// Lease TTL, s.
    pub lease_ttl_s: f64,
    /// Whether publishers keep a topology watch open (`--publisher-watches`).
    pub publisher_watches: bool,
    /// Churn phase, s.
    pub churn_s: f64,
    /// Quiet phase, s.
    pub quiet_s: f64,
}

impl Report {
    /// Assembles the report.
    pub fn new(
        machine: Machine,
        plan: &Plan,
        load_before: Option<f64>,
        steps: Vec<StepResult>,
    ) -> Self {
        Self {
            nproc: machine.nproc,
            cpu_model: machine.cpu_model.clone(),
            profile: machine.profile().to_owned(),
            load_before,
            load_after: crate::bench::fanout::procstat::load_average(),
            params: Params {
                steps: plan.steps.clone(),
                regions: plan.regions,
                pulls: plan.pulls,
                churn: plan.churn,
                players_rate: plan.players_rate,
                resolve_rate: plan.resolve_rate,
                node_churn: plan.node_churn,
                replicas: plan.replicas,
                replicas_as_processes: matches!(plan.placement, Placement::Process(_)),
                etcd_members: plan.etcd_members,
                lease_ttl_s: plan.lease_ttl.as_secs_f64(),
                publisher_watches: plan.publisher_watches,
                churn_s: plan.duration.as_secs_f64(),
                quiet_s: plan.quiet.as_secs_f64(),
            },
            placement_note: plan.placement_note.clone(),
            steps,
            failed_steps: Vec::new(),
        }
    }

    /// The JSON form.
    pub fn json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// Fails when a healthy node lost its lease, a call failed, or a phase measured nothing.
    pub fn check(&self) -> Result<()> {
        if let Some(f) = self.failed_steps.first() {
            bail!("step failed: {f}");
        }
        for s in &self.steps {
            let at = format!("{} nodes × {} streams ({})", s.nodes, s.streams, s.variant);
            for p in &s.phases {
                if p.leases_lost > 0 {
                    bail!(
                        "{at}, {}: {} leases lost by healthy nodes",
                        p.name,
                        p.leases_lost
                    );
                }
                if p.errors > 0 {
                    bail!(
                        "{at}, {}: {} calls failed; first: {:?}",
                        p.name,
                        p.errors,
                        s.first_error
                    );
                }
                if p.name != "setup" && p.keepalive.count == 0 {
                    bail!("{at}, {}: no keep-alive answered", p.name);
                }
            }
            if let Some(e) = &s.fresh_replica_error {
                bail!("{at}: a replica started at this size did not serve: {e}");
            }
            if s.burst.failed > 0 {
                bail!("{at}: {} of the burst's resolves failed", s.burst.failed);
            }
        }
        Ok(())
    }

    /// The markdown report.
    pub fn markdown(&self) -> String {
        let mut o = String::new();
        let p = &self.params;
        let _ = writeln!(o, "# strata-bench scale\n");
        let _ = writeln!(
            o,
            "{} CPUs ({}), {} build; load average {} before, {} after. {} regions, {} pulls per \
             stream, churn {}/s streams, {}/s players, {}/s settled resolves, {}/min node events; \
             {} replicas ({}), {} etcd member(s), lease TTL {} s, quiet {} s, churn {} s; \
             publishers watch their streams: {}.\n",
            self.nproc,
            self.cpu_model.as_deref().unwrap_or("?"),
            self.profile,
            fmt_opt(self.load_before),
            fmt_opt(self.load_after),
            p.regions,
            p.pulls,
            p.churn,
            p.players_rate,
            p.resolve_rate,
            p.node_churn,
            p.replicas,
            if p.replicas_as_processes {
                "processes"
            } else {
                "in process"
            },
            p.etcd_members,
            p.lease_ttl_s,
            p.quiet_s,
            p.churn_s,
            p.publisher_watches,
        );
        if let Some(n) = &self.placement_note {
            let _ = writeln!(o, "Note: {n}\n");
        }
        for f in &self.failed_steps {
            let _ = writeln!(o, "Step failed: {f}\n");
        }
        self.phase_table(&mut o);
        self.sources_table(&mut o);
        self.latency_table(&mut o);
        self.step_table(&mut o);
        o
    }

    fn phase_table(&self, o: &mut String) {
        let _ = writeln!(o, "## etcd and replicas per phase\n");
        let _ = writeln!(
            o,
            "| step | variant | phase | streams | pulls | etcd writes/s (raft) | key changes/s | \
             renewals/s | DB MiB (in use) | keys | replica CPU (cores) | replica RSS MiB | etcd CPU | \
             leases lost | errors |"
        );
        let _ = writeln!(o, "|{}", "---|".repeat(15));
        for s in &self.steps {
            for ph in &s.phases {
                let _ = writeln!(
                    o,
                    "| {}×{} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.1} ({:.1}) | {} | {} | {} | {} | {} | {} |",
                    s.nodes,
                    s.streams,
                    s.variant,
                    ph.name,
                    ph.streams,
                    ph.pulls,
                    ph.etcd.proposals_per_s,
                    ph.key_changes_per_s,
                    ph.etcd.renewals_per_s,
                    ph.etcd.db_bytes as f64 / (1 << 20) as f64,
                    ph.etcd.db_in_use_bytes as f64 / (1 << 20) as f64,
                    ph.etcd.keys,
                    list(&ph.replicas, |u| u.cores.map(|c| format!("{c:.2}"))),
                    list(&ph.replicas, |u| u.rss_mib.map(|m| format!("{m:.0}"))),
                    list(&ph.etcd_members, |u| u.cores.map(|c| format!("{c:.2}"))),
                    ph.leases_lost,
                    ph.errors + ph.keepalive_errors,
                );
            }
        }
        let _ = writeln!(o);
    }

    fn sources_table(&self, o: &mut String) {
        let _ = writeln!(o, "## Key changes per second by source (puts / deletes)\n");
        let sources = ["nodes", "load", "main", "regions", "subscribers"];
        let _ = writeln!(o, "| step | variant | phase | {} |", sources.join(" | "));
        let _ = writeln!(o, "|{}", "---|".repeat(3 + sources.len()));
        for s in &self.steps {
            for ph in &s.phases {
                let cells: Vec<String> = sources
                    .iter()
                    .map(|k| {
                        let (p, d) = ph.sources.get(*k).copied().unwrap_or_default();
                        format!("{p:.1} / {d:.1}")
                    })
                    .collect();
                let _ = writeln!(
                    o,
                    "| {}×{} | {} | {} | {} |",
                    s.nodes,
                    s.streams,
                    s.variant,
                    ph.name,
                    cells.join(" | ")
                );
            }
        }
        let _ = writeln!(o);
    }

    fn latency_table(&self, o: &mut String) {
        let _ = writeln!(o, "## Latency at the nodes, p50 / p99\n");
        let _ = writeln!(
            o,
            "| step | variant | phase | keep-alive | settled resolve | new resolve | claim | \
             claims refused | watches open | watch events/s | watch delay (unpublish → node) | \
             etcd watch delay |"
        );
        let _ = writeln!(o, "|{}", "---|".repeat(12));
        for s in &self.steps {
            for ph in &s.phases {
                let _ = writeln!(
                    o,
                    "| {}×{} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {} |",
                    s.nodes,
                    s.streams,
                    s.variant,
                    ph.name,
                    pair(&ph.keepalive),
                    pair(&ph.resolve_settled),
                    pair(&ph.resolve_new),
                    pair(&ph.claim),
                    ph.claims_refused,
                    ph.watches_open,
                    ph.watch_events_per_s,
                    pair(&ph.watch_delay),
                    pair(&ph.etcd_watch_delay),
                );
            }
        }
        let _ = writeln!(o);
    }

    fn step_table(&self, o: &mut String) {
        let _ = writeln!(
            o,
            "## Floors (one caller, under the same load) and the burst\n"
        );
        let _ = writeln!(
            o,
            "| step | variant | register | populate s | ping | settled resolve | raw etcd txn | \
             claim | claim ÷ raw txn | burst: streams | burst s | burst resolve | burst refused | \
             new replica serves after | skipped |"
        );
        let _ = writeln!(o, "|{}", "---|".repeat(15));
        for s in &self.steps {
            let f = &s.floors;
            let ratio = match (f.claim.p50_ms, f.raw_txn.p50_ms) {
                (Some(c), Some(r)) if r > 0.0 => format!("{:.1}×", c / r),
                _ => "–".into(),
            };
            let _ = writeln!(
                o,
                "| {}×{} | {} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {:.2} | {} | {} | {} | {} |",
                s.nodes,
                s.streams,
                s.variant,
                pair(&s.register),
                s.populate_secs,
                pair(&f.ping),
                pair(&f.resolve),
                pair(&f.raw_txn),
                pair(&f.claim),
                ratio,
                s.burst.streams,
                s.burst.secs,
                pair(&s.burst.resolve),
                s.burst.refused,
                s.fresh_replica_secs
                    .map_or_else(|| "failed".into(), |x| format!("{x:.2} s")),
                s.skipped,
            );
        }
        let _ = writeln!(o);
        for s in &self.steps {
            if let Some(e) = &s.first_error {
                let _ = writeln!(
                    o,
                    "{}×{} ({}): first failure: {e}",
                    s.nodes, s.streams, s.variant
                );
            }
        }
    }
}

fn pair(s: &Summary) -> String {
    if s.count == 0 {
        return "–".into();
    }
    format!("{} / {}", fmt_ms(s.p50_ms), fmt_ms(s.p99_ms))
}

fn list(v: &[ProcUse], f: impl Fn(&ProcUse) -> Option<String>) -> String {
    let items: Vec<String> = v
        .iter()
        .map(|u| f(u).unwrap_or_else(|| "–".into()))
        .collect();
    items.join(", ")
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "?".into(), |v| format!("{v:.2}"))
}
