//! CPU time of processes, from `/proc/PID/stat`, to say where a benchmark's CPU went.

use std::time::Duration;

/// `/proc` reports CPU times in USER_HZ ticks, 100 per second on Linux.
const USER_HZ: u64 = 100;

/// User plus system CPU time `pid` has used so far, all its threads (including exited ones)
/// together; `None` when it cannot be read (no such process, not Linux).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: count from after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of proc(5); `rest` starts at field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / USER_HZ))
}

/// Time the live threads of `pid` have spent runnable but waiting for a CPU (the second field
/// of `/proc/PID/task/*/schedstat`); `None` when it cannot be read.
pub fn wait_time(pid: u32) -> Option<Duration> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut ns = 0u64;
    for task in tasks.flatten() {
        // A thread may exit between the listing and the read; it is skipped.
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        ns += stat
            .split_whitespace()
            .nth(1)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(Duration::from_nanos(ns))
}

/// CPU and run-queue wait time of several processes, taken before and after a measurement.
#[derive(Debug, Clone)]
pub struct Snapshot {
    cpu: Vec<Option<Duration>>,
    wait: Vec<Option<Duration>>,
}

impl Snapshot {
    /// The CPU and wait times of each of `pids` now.
    pub fn take(pids: &[Option<u32>]) -> Self {
        Self {
            cpu: pids.iter().map(|p| p.and_then(cpu_time)).collect(),
            wait: pids.iter().map(|p| p.and_then(wait_time)).collect(),
        }
    }

    /// Seconds per second that the processes' threads, together, waited for a CPU since
    /// `before`: a measure of how contended the machine was (other load, or each other).
    pub fn waiting_since(&self, before: &Snapshot, elapsed: Duration) -> Option<f64> {
        let secs = elapsed.as_secs_f64();
        let waited: f64 = self
            .wait
            .iter()
            .zip(&before.wait)
            .filter_map(|(a, b)| Some(a.as_ref()?.saturating_sub(*b.as_ref()?).as_secs_f64()))
            .sum();
        (secs > 0.0).then(|| waited / secs)
    }

    /// CPU time used per process since `before`, divided by `calls`, in microseconds.
    pub fn per_call_since(&self, before: &Snapshot, calls: usize) -> Vec<Option<f64>> {
        self.cpu
            .iter()
            .zip(&before.cpu)
            .map(|(after, before)| {
                let used = after.as_ref()?.checked_sub(*before.as_ref()?)?;
                (calls > 0).then(|| used.as_secs_f64() * 1e6 / calls as f64)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu_time() {
        let t = cpu_time(std::process::id());
        assert!(t.is_some(), "no CPU time for this process");
        assert!(wait_time(std::process::id()).is_some());
    }
}
