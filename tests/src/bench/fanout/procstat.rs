//! CPU time, resident memory and CPU affinity of processes, from `/proc`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;

use crate::bench::cpu::cpu_time;

/// Resident set size of `pid` in bytes (`VmRSS`), if readable.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Wall clock and CPU time of one process at one moment.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    at: Instant,
    cpu: Option<Duration>,
}

impl CpuMark {
    /// Now, for `pid`.
    pub fn take(pid: u32) -> Self {
        Self {
            at: Instant::now(),
            cpu: cpu_time(pid),
        }
    }

    /// Cores used on average since `earlier` (CPU seconds per wall second).
    pub fn cores_since(&self, earlier: &CpuMark) -> Option<f64> {
        let wall = self.at.saturating_duration_since(earlier.at).as_secs_f64();
        let cpu = self.cpu?.checked_sub(earlier.cpu?)?.as_secs_f64();
        (wall > 0.0).then(|| cpu / wall)
    }
}

/// Pins every thread of this process to `cpu` (threads created later inherit it).
pub fn pin_self(cpu: usize) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    set_affinity_all(&set)
}

/// Lets every thread of this process run on every CPU again.
pub fn unpin_self() {
    let mut set = CpuSet::new();
    for cpu in 0..CpuSet::count() {
        let _ = set.set(cpu);
    }
    let _ = set_affinity_all(&set);
}

/// Sets the affinity of every thread of this process to `set`.
fn set_affinity_all(set: &CpuSet) -> Result<()> {
    let tasks = std::fs::read_dir("/proc/self/task").context("listing /proc/self/task")?;
    for task in tasks.flatten() {
        if let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        {
            // A thread may have exited since the listing.
            let _ = sched_setaffinity(Pid::from_raw(tid), set);
        }
    }
    Ok(())
}

/// UDP datagrams dropped so far for full socket buffers in this network namespace
/// (`RcvbufErrors` + `SndbufErrors` of `/proc/net/snmp`).
pub fn udp_drops() -> u64 {
    let Ok(snmp) = std::fs::read_to_string("/proc/self/net/snmp") else {
        return 0;
    };
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .filter(|(n, _)| matches!(*n, "RcvbufErrors" | "SndbufErrors"))
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum()
}

/// The 1-minute load average.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu_and_rss() {
        let me = std::process::id();
        assert!(cpu_time(me).is_some());
        assert!(rss_bytes(me).is_some_and(|b| b > 0));
        assert!(load_average().is_some());
    }
}
