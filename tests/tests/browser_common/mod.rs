//! What the browser tests share: the installed tooling (Debian's Chromium, `node` and
//! playwright-core in `tests/browser/`), the driver (`tests/browser/drive.mjs`) and the
//! questions they ask a node about a player's simulcast layer.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod limited;
pub mod simulcast;
pub mod timeline;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use strata_tests::media::TestPlayer;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const SETUP_HINT: &str = "run scripts/setup.sh --browser";
/// How long the driver may take for everything (its own per-page deadline is 40 s).
pub const DRIVER_DEADLINE: Duration = Duration::from_secs(180);

pub fn init() {
    strata_tests::init_test_tracing("warn");
}

pub fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

pub fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `node` and the WHIP/WHEP driver (`drive.mjs`), see [`browser_tools_for`].
pub fn browser_tools() -> (PathBuf, PathBuf) {
    browser_tools_for("drive.mjs")
}

/// `node` and the driver `script` of `tests/browser/`; fails (not skips) when the browser
/// tooling is missing.
pub fn browser_tools_for(script: &str) -> (PathBuf, PathBuf) {
    let node =
        find_on_path("node").unwrap_or_else(|| panic!("`node` is not on PATH; {SETUP_HINT}"));
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing; {SETUP_HINT}"
    );
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/playwright-core/package.json")
            .is_file(),
        "playwright-core is not installed in {}; {SETUP_HINT}",
        dir.display()
    );
    let driver = dir.join(script);
    assert!(driver.is_file(), "{} is missing", driver.display());
    (node, driver)
}

/// A number from the driver's JSON.
pub fn num(v: &Value, path: &str) -> f64 {
    v.pointer(path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("driver result has no number at {path}: {v}"))
}

/// Starts the driver with `args` (plus `--timeout-ms 40000 --hold`) and waits for its JSON
/// line; panics unless it says `ok`. The driver keeps its sessions open until its stdin
/// closes.
pub async fn run_driver(
    node: &Path,
    driver: &Path,
    args: &[&str],
) -> (tokio::process::Child, Value) {
    let (child, res, _) = run_driver_with_output(node, driver, args).await;
    (child, res)
}

/// The rest of a held driver's stdout (the lines of its stdin commands).
pub type DriverOutput = Lines<BufReader<ChildStdout>>;

/// As [`run_driver`], and the rest of the driver's stdout.
pub async fn run_driver_with_output(
    node: &Path,
    driver: &Path,
    args: &[&str],
) -> (tokio::process::Child, Value, DriverOutput) {
    let mut child = Command::new(node)
        .arg(driver)
        .args(args)
        .args(["--timeout-ms", "40000", "--hold"])
        .current_dir(browser_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {} {}: {e}", node.display(), driver.display()));
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(DRIVER_DEADLINE, async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if l.trim_start().starts_with('{') {
                return Some(l);
            }
            eprintln!("driver stdout: {l}");
        }
        None
    })
    .await
    .expect("the browser driver printed no result in time");
    let Some(line) = line else {
        let status = child.wait().await.unwrap();
        panic!("the browser driver exited ({status}) without a result");
    };
    let res: Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("driver result is not JSON ({e}): {line}"));
    eprintln!("browser result: {res}");
    if res["ok"] != Value::Bool(true) {
        let status = child.wait().await.unwrap();
        panic!(
            "browser check failed ({status}): {}\nfull result: {res}",
            res["error"].as_str().unwrap_or("?")
        );
    }
    (child, res, lines)
}

/// Closes the driver's stdin and waits for it to exit cleanly.
pub async fn release_driver(mut child: tokio::process::Child) {
    drop(child.stdin.take());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the browser driver did not exit after stdin closed")
        .unwrap();
    assert!(status.success(), "driver exit status {status}");
}

/// The layer the node says a player receives (`GET` on its WHEP session).
pub async fn layer_of(player: &TestPlayer) -> Option<String> {
    session_layer(&player.session_url).await
}

/// The layer the node says the player of WHEP session `url` receives.
pub async fn session_layer(url: &str) -> Option<String> {
    let resp = strata_tests::http::get(url).await.ok()?;
    let v: Value = serde_json::from_str(&resp.text()).ok()?;
    v["layer"].as_str().map(str::to_owned)
}

/// Waits until the layer of WHEP session `url` satisfies `cond`; returns when it was seen.
/// Panics at `deadline`.
pub async fn wait_session_layer(
    url: &str,
    deadline: Instant,
    what: &str,
    cond: impl Fn(&str) -> bool,
) -> Instant {
    loop {
        let layer = session_layer(url).await;
        if layer.as_deref().is_some_and(&cond) {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "no {what} in time: the node says {url} is on {layer:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the player's layer satisfies `cond`; returns how long it took.
pub async fn wait_layer(
    player: &TestPlayer,
    within: Duration,
    what: &str,
    cond: impl Fn(&str) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let layer = layer_of(player).await;
        if layer.as_deref().is_some_and(&cond) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "no {what} within {within:?}: layer {layer:?}, stats {:?}",
            player.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
