//! Process CPU time, for "per core" figures.

use std::time::{Duration, Instant};

/// CPU time (user + system, all threads) of this process, from `/proc/self/stat`.
pub fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name (field 2) may contain spaces; fields after it are plain.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the file (utime, stime) are 12th and 13th after the name.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second())
}

/// Time this process's threads have spent runnable but waiting for a CPU
/// (`/proc/self/task/*/schedstat`, second field). Threads that exited are not
/// counted; the runtime's worker threads live for the whole run.
pub fn run_queue_wait() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
}

/// `USER_HZ`: 100 on every Linux the project runs on; asked of `getconf` in case.
fn clock_ticks_per_second() -> f64 {
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|hz| *hz > 0.0)
            .unwrap_or(100.0)
    })
}

/// Wall and CPU time at one instant; subtract two to get a window's usage.
#[derive(Debug, Clone, Copy)]
pub struct Clocks {
    wall: Instant,
    cpu: Duration,
    wait: Duration,
}

/// What a window used.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub wall: Duration,
    /// CPU time of the process.
    pub cpu: Duration,
    /// Time its threads waited for a CPU: other load on the machine.
    pub wait: Duration,
}

impl Clocks {
    /// Now.
    pub fn now() -> Self {
        Clocks {
            wall: Instant::now(),
            cpu: process_cpu(),
            wait: run_queue_wait(),
        }
    }

    /// What was used since `self`.
    pub fn since(&self) -> Usage {
        let now = Clocks::now();
        Usage {
            wall: now.wall - self.wall,
            cpu: now.cpu.saturating_sub(self.cpu),
            wait: now.wait.saturating_sub(self.wait),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spins until the process's CPU time has moved on (it moves in clock ticks, and a busy
    /// machine may give this thread none for a while), within a generous deadline.
    #[test]
    fn cpu_time_moves_forward() {
        let before = process_cpu();
        let mut x = 0u64;
        let deadline = Instant::now() + Duration::from_secs(60);
        while process_cpu() <= before && Instant::now() < deadline {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        assert!(
            process_cpu() > before,
            "no CPU time counted in 60 s ({x} turns)"
        );
    }
}
