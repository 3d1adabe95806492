//! Helpers for the child processes the harness starts (etcd, control planes, nodes):
//! below both [`crate::etcd`] and [`crate::procs`], which use them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::grpcurl::find_executable;

/// `setpriv` if it supports `--pdeathsig` (util-linux 2.33 and later).
pub fn pdeathsig_wrapper() -> Option<&'static Path> {
    static SETPRIV: OnceLock<Option<PathBuf>> = OnceLock::new();
    SETPRIV
        .get_or_init(|| {
            let path = find_executable("setpriv")?;
            let help = Command::new(&path)
                .arg("--help")
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .ok()?;
            String::from_utf8_lossy(&help.stdout)
                .contains("--pdeathsig")
                .then_some(path)
        })
        .as_deref()
}

/// The last `lines` lines of the log at `path` (or why it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    match fs::read_to_string(path) {
        Ok(log) => {
            let all: Vec<&str> = log.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
