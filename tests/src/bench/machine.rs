//! What a benchmark ran on, for its report.

use std::fmt;

/// The machine and the build.
#[derive(Debug, Clone)]
pub struct Machine {
    /// CPUs this process may use (`nproc`).
    pub nproc: usize,
    /// The first `model name` of `/proc/cpuinfo`, if any.
    pub cpu_model: Option<String>,
    /// The kernel release (`/proc/sys/kernel/osrelease`), if readable.
    pub kernel: Option<String>,
    /// Whether this binary was built without debug assertions (a release build).
    pub release: bool,
}

impl Machine {
    /// Describes this machine and this build.
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == "model name")
            .map(|(_, v)| v.trim().to_owned());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|s| s.trim().to_owned());
        Self {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            kernel,
            release: !cfg!(debug_assertions),
        }
    }

    /// "release" or "debug".
    pub fn profile(&self) -> &'static str {
        if self.release { "release" } else { "debug" }
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cpu = self.cpu_model.as_deref().unwrap_or("unknown CPU");
        write!(f, "{cpu}, nproc {}", self.nproc)?;
        if let Some(k) = &self.kernel {
            write!(f, ", Linux {k}")?;
        }
        Ok(())
    }
}
