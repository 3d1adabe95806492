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
}

impl Clocks {
    /// Now.
    pub fn now() -> Self {
        Clocks {
            wall: Instant::now(),
            cpu: process_cpu(),
        }
    }

    /// (wall, cpu) elapsed since `self`.
    pub fn since(&self) -> (Duration, Duration) {
        let now = Clocks::now();
        (now.wall - self.wall, now.cpu.saturating_sub(self.cpu))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_moves_forward() {
        let before = process_cpu();
        let mut x = 0u64;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(process_cpu() > before, "{x}");
    }
}
