//! Janus (Debian's `janus` 1.1) as the peer under test: a generated configuration in a temp
//! dir, only the streaming plugin and the HTTP transport loaded, an RTP mountpoint for VP8 +
//! Opus on loopback ports, no STUN, ICE restricted to one interface carrying a 127.x address.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use strata_media::TrackKind;
use strata_rtc::fixture::Clip;

use crate::grpcurl::find_executable;
use crate::http;
use crate::ports::{free_tcp_port, free_udp_port};
use crate::procs::child_command;

/// The mountpoint id the bench watches.
pub const MOUNTPOINT: u64 = 1;

/// Where Debian installs Janus's plugins and transports.
fn janus_lib_dir() -> Option<PathBuf> {
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/janus",
        "/usr/lib/aarch64-linux-gnu/janus",
        "/usr/lib/janus",
        "/usr/local/lib/janus",
        "/opt/janus/lib/janus",
    ];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|d| d.join("plugins/libjanus_streaming.so").is_file())
}

/// Why Janus cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    if find_executable("janus").is_none() {
        return Some("janus is not installed (apt-get install -y janus)".into());
    }
    if janus_lib_dir().is_none() {
        return Some("Janus's streaming plugin (libjanus_streaming.so) was not found".into());
    }
    None
}

/// A running Janus with one RTP mountpoint.
pub struct Janus {
    child: Child,
    /// `http://127.0.0.1:PORT/janus`.
    pub api: String,
    /// Where the mountpoint listens for RTP, per track of the source clip (in clip order).
    pub rtp_ports: Vec<(TrackKind, u16)>,
}

/// The generated configuration's folders.
struct Layout {
    /// `janus/`: the log lives here.
    dir: PathBuf,
    cfg: PathBuf,
    plugins: PathBuf,
    transports: PathBuf,
}

impl Layout {
    /// Creates the folders under `dir`; only the two shared objects the bench needs are made
    /// visible to Janus.
    fn create(dir: &Path) -> Result<Layout> {
        let lib = janus_lib_dir().context("Janus plugins not found")?;
        let dir = dir.join("janus");
        let layout = Layout {
            cfg: dir.join("cfg"),
            plugins: dir.join("plugins"),
            transports: dir.join("transports"),
            dir,
        };
        for d in [&layout.cfg, &layout.plugins, &layout.transports] {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        std::os::unix::fs::symlink(
            lib.join("plugins/libjanus_streaming.so"),
            layout.plugins.join("libjanus_streaming.so"),
        )?;
        std::os::unix::fs::symlink(
            lib.join("transports/libjanus_http.so"),
            layout.transports.join("libjanus_http.so"),
        )?;
        Ok(layout)
    }

    /// Writes `janus.jcfg` (ICE on `iface` only, `event_loops` when not 0).
    fn write_main(&self, iface: &str, event_loops: usize) -> Result<()> {
        let none = self.dir.join("none");
        // STRATA_BENCH_JANUS_DEBUG=1: Janus's verbose log and libnice's (kept with
        // STRATA_KEEP_TEST_LOGS=1), for when a connection does not come up.
        let verbose = std::env::var_os("STRATA_BENCH_JANUS_DEBUG").is_some_and(|v| v == "1");
        let (debug_level, nice_debug) = if verbose { (6, true) } else { (3, false) };
        let loops = match event_loops {
            0 => String::new(),
            n => format!("\tevent_loops = {n}\n"),
        };
        fs::write(
            self.cfg.join("janus.jcfg"),
            format!(
                r#"general: {{
	configs_folder = "{cfg}"
	plugins_folder = "{plugins}"
	transports_folder = "{transports}"
	events_folder = "{none}"
	loggers_folder = "{none}"
	debug_level = {debug_level}
	session_timeout = 0
	protected_folders = []
{loops}}}
certificates: {{}}
media: {{}}
nat: {{
	nice_debug = {nice_debug}
	ice_enforce_list = "{iface}"
	ignore_mdns = true
}}
plugins: {{}}
transports: {{}}
loggers: {{}}
events: {{ broadcast = false }}
"#,
                cfg = self.cfg.display(),
                plugins = self.plugins.display(),
                transports = self.transports.display(),
                none = none.display(),
            ),
        )?;
        Ok(())
    }

    /// Writes the HTTP transport's and the streaming plugin's configuration.
    fn write_http_and_mountpoint(&self, http_port: u16, media: &str) -> Result<()> {
        fs::write(
            self.cfg.join("janus.transport.http.jcfg"),
            format!(
                "general: {{\n\tjson = \"plain\"\n\tbase_path = \"/janus\"\n\thttp = true\n\
                 \tport = {http_port}\n\tip = \"127.0.0.1\"\n\thttps = false\n}}\n\
                 admin: {{\n\tadmin_http = false\n\tadmin_https = false\n}}\n"
            ),
        )?;
        fs::write(
            self.cfg.join("janus.plugin.streaming.jcfg"),
            format!(
                "general: {{}}\nbench: {{\n\ttype = \"rtp\"\n\tid = {MOUNTPOINT}\n\
                 \tdescription = \"strata-bench fan-out source\"\n{media}}}\n"
            ),
        )?;
        Ok(())
    }
}

/// A free RTP port per track of `clip`, and the mountpoint's media lines for them.
fn mountpoint_media(clip: &Clip) -> Result<(Vec<(TrackKind, u16)>, String)> {
    let mut rtp_ports = Vec::new();
    let mut media = String::new();
    for t in clip.tracks() {
        let port = free_udp_port()?;
        rtp_ports.push((t.kind, port));
        let (kind, codec) = match t.kind {
            TrackKind::Video => ("video", "vp8"),
            TrackKind::Audio => ("audio", "opus"),
        };
        ensure!(
            t.mime.eq_ignore_ascii_case(&format!("{kind}/{codec}")),
            "the Janus mountpoint takes VP8 + Opus, not {}",
            t.mime
        );
        media.push_str(&format!(
            "\t{kind} = true\n\t{kind}port = {port}\n\t{kind}iface = \"127.0.0.1\"\n\
             \t{kind}pt = {}\n\t{kind}codec = \"{codec}\"\n",
            t.payload_type
        ));
    }
    Ok((rtp_ports, media))
}

/// Spawns Janus on `cfg`, under `taskset -c cpus` when given and installed, logging to `log`.
fn spawn(cfg: &Path, log: fs::File, cpus: Option<&str>) -> Result<Child> {
    let janus = find_executable("janus").context("janus not on PATH")?;
    let janus_args = [
        "-F".to_owned(),
        cfg.display().to_string(),
        "-C".to_owned(),
        cfg.join("janus.jcfg").display().to_string(),
    ];
    let mut cmd = match (cpus, find_executable("taskset")) {
        (Some(cpus), Some(taskset)) => {
            let mut cmd = child_command(&taskset);
            cmd.arg("-c").arg(cpus).arg(&janus);
            cmd
        }
        _ => child_command(&janus),
    };
    cmd.args(janus_args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    cmd.spawn().context("spawning janus")
}

impl Janus {
    /// Starts Janus (pinned to the `taskset` CPU list `cpus` when given) with a mountpoint for `clip`'s VP8 and Opus
    /// tracks, ICE on interface `iface` (which carries `ice_ip`), and waits until it answers.
    pub async fn start(
        dir: &Path,
        clip: &Clip,
        iface: &str,
        ice_ip: Ipv4Addr,
        cpus: Option<&str>,
        event_loops: usize,
    ) -> Result<Janus> {
        let layout = Layout::create(dir)?;
        let http_port = free_tcp_port()?;
        let (rtp_ports, media) = mountpoint_media(clip)?;
        layout.write_main(iface, event_loops)?;
        layout.write_http_and_mountpoint(http_port, &media)?;
        let log_path = layout.dir.join("janus.log");
        let log = fs::File::create(&log_path)?;
        let child = spawn(&layout.cfg, log, cpus)?;
        let mut janus = Janus {
            child,
            api: format!("http://127.0.0.1:{http_port}/janus"),
            rtp_ports,
        };
        janus.wait_ready(&log_path, ice_ip).await?;
        Ok(janus)
    }

    async fn wait_ready(&mut self, log_path: &Path, ice_ip: Ipv4Addr) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "janus exited ({status}) during start; log {}:\n{}",
                    log_path.display(),
                    tail(log_path)
                );
            }
            if let Ok(resp) = http::get(&format!("{}/info", self.api)).await
                && resp.status == 200
            {
                tracing::debug!(%ice_ip, "janus ready");
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "janus did not answer within 15 s; log {}:\n{}",
                    log_path.display(),
                    tail(log_path)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id (Janus itself: `taskset` execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
