//! Network namespaces for the benchmarks: a private one for the whole run, named ones per
//! region, veth pairs between them, and sockets bound inside a given namespace.
//!
//! Every address used here (127.x on extra interfaces, 10.98/16 and 10.99/16) exists only
//! inside namespaces this process created or its own private one; nothing is configured in
//! the machine's real network namespace: [`isolate`] re-executes the benchmark under
//! `unshare -n` first unless it already runs in a namespace of its own.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{Context, Result, bail, ensure};
use nix::sched::{CloneFlags, setns};

use crate::grpcurl::find_executable;

/// Set in the environment of a benchmark re-executed in its own network namespace.
const ISOLATED_ENV: &str = "STRATA_BENCH_ISOLATED";

/// Whether this process runs as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// `ip` from iproute2 (also looked for in the sbin directories, which a non-login PATH may
/// lack).
pub fn ip_command() -> Result<PathBuf> {
    find_executable("ip")
        .or_else(|| {
            ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
        })
        .context("`ip` (iproute2) is not installed")
}

/// Runs `ip ARGS`; fails with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new(ip_command()?)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    ensure!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Where [`isolate`] left the process.
pub enum Isolation {
    /// This process runs in a namespace of its own: go on.
    Ready,
    /// The benchmark ran in a re-executed child that exited with this code: exit with it.
    Done(i32),
    /// No private namespace could be had (not root, no `unshare`): the reason.
    Unavailable(String),
}

/// Whether this process is in a network namespace of its own: started so by this bench or by
/// `scripts/test.sh` (`STRATA_NETNS=1`), or one whose only interface is `lo`.
pub fn is_private() -> bool {
    if std::env::var_os(ISOLATED_ENV).is_some_and(|v| v == "1") || crate::ports::netns_enabled() {
        return true;
    }
    std::fs::read_dir("/sys/class/net")
        .map(|entries| {
            entries
                .flatten()
                .all(|e| e.file_name().to_str() == Some("lo"))
        })
        .unwrap_or(false)
}

/// Makes sure the benchmark runs in a private network namespace: if this process is not in
/// one, runs the same command line again under `unshare -n` and reports its exit code.
pub fn isolate(what: &str) -> Result<Isolation> {
    if is_private() {
        // `lo` starts down in a fresh namespace.
        if is_root() {
            let _ = ip(&["link", "set", "lo", "up"]);
        }
        return Ok(Isolation::Ready);
    }
    if !is_root() {
        return Ok(Isolation::Unavailable("not root".into()));
    }
    let Some(unshare) = find_executable("unshare").or_else(|| {
        ["/usr/bin/unshare", "/bin/unshare"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    }) else {
        return Ok(Isolation::Unavailable("`unshare` is not installed".into()));
    };
    let exe = std::env::current_exe().context("finding the running executable")?;
    eprintln!("{what}: re-running in a private network namespace (unshare -n)");
    let status: ExitStatus = Command::new(unshare)
        .arg("-n")
        .arg("--")
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(ISOLATED_ENV, "1")
        .status()
        .context("running the benchmark under unshare -n")?;
    Ok(Isolation::Done(status.code().unwrap_or(1)))
}

/// A veth pair in this namespace whose first end carries a 127.x address: the extra
/// interface Janus needs to gather a host candidate (it skips `lo`). Both ends are deleted
/// on drop.
pub struct Veth {
    name: String,
}

impl Veth {
    /// Creates `jvPID` / `jvPIDp` with `ip`/32 on the first end, both up.
    pub fn loopback_alias(addr: Ipv4Addr) -> Result<Self> {
        let name = format!("jv{}", std::process::id() % 1_000_000);
        let peer = format!("{name}p");
        let _ = ip(&["link", "del", &name]);
        ip(&["link", "add", &name, "type", "veth", "peer", "name", &peer])?;
        let veth = Self { name };
        ip(&["addr", "add", &format!("{addr}/32"), "dev", &veth.name])?;
        ip(&["link", "set", &veth.name, "up"])?;
        ip(&["link", "set", &peer, "up"])?;
        Ok(veth)
    }

    /// The interface carrying the address.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.name]);
    }
}

/// Named network namespaces (`ip netns add`) and the veth pairs into them, deleted on drop,
/// even when a run fails.
///
/// The pairs are deleted explicitly: `ip netns del` only drops the name, and a namespace
/// lives on (with its half of a pair, and so the half left here with its routes) while any
/// socket bound in it is still open, e.g. in a task of the runtime that has not ended yet.
pub struct Namespaces {
    prefix: String,
    names: Vec<String>,
    links: Vec<String>,
}

impl Namespaces {
    /// Names start with `strata-PURPOSE-PID-`; namespaces a dead run left behind under the
    /// same purpose are deleted first.
    pub fn new(purpose: &str) -> Self {
        sweep_stale(purpose);
        Self {
            prefix: format!("strata-{purpose}-{}-", std::process::id()),
            names: Vec::new(),
            links: Vec::new(),
        }
    }

    /// Adds namespace `PREFIX{suffix}` with `lo` up; returns its name.
    pub fn add(&mut self, suffix: &str) -> Result<String> {
        let name = format!("{}{suffix}", self.prefix);
        let _ = ip(&["netns", "del", &name]);
        ip(&["netns", "add", &name])?;
        self.names.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }

    /// A veth pair from this namespace into `ns`, deleted on drop: see [`link_to`].
    pub fn link_to(
        &mut self,
        ns: &str,
        here: &str,
        there: &str,
        here_ip: Ipv4Addr,
        there_ip: Ipv4Addr,
    ) -> Result<()> {
        self.links.push(here.to_owned());
        link_to(ns, here, there, here_ip, there_ip)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for link in self.links.drain(..).rev() {
            // Deleting one end of a veth pair deletes both, wherever the other end is.
            let _ = ip(&["link", "del", &link]);
        }
        for name in self.names.drain(..).rev() {
            if let Err(e) = ip(&["netns", "del", &name]) {
                eprintln!("warning: could not delete network namespace {name}: {e:#}");
            }
        }
    }
}

/// Deletes `strata-PURPOSE-PID-*` namespaces whose process is gone.
fn sweep_stale(purpose: &str) {
    let prefix = format!("strata-{purpose}-");
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let Some(name) = e.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            eprintln!("deleting network namespace {name} left by a run that is gone");
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

/// A veth pair from this namespace into `ns`: `here` (this end, in this namespace) and
/// `there` (the end in `ns`), each with a /30 address, both up.
pub fn link_to(
    ns: &str,
    here: &str,
    there: &str,
    here_ip: Ipv4Addr,
    there_ip: Ipv4Addr,
) -> Result<()> {
    let _ = ip(&["link", "del", here]);
    ip(&[
        "link", "add", here, "type", "veth", "peer", "name", there, "netns", ns,
    ])?;
    ip(&["addr", "add", &format!("{here_ip}/30"), "dev", here])?;
    ip(&["link", "set", here, "up"])?;
    ip(&[
        "-n",
        ns,
        "addr",
        "add",
        &format!("{there_ip}/30"),
        "dev",
        there,
    ])?;
    ip(&["-n", ns, "link", "set", there, "up"])?;
    Ok(())
}

/// Binds a UDP socket to `addr` inside namespace `ns` (a thread enters the namespace, binds,
/// and ends; the socket stays in `ns`). Blocking: call from `spawn_blocking` on a runtime.
pub fn bind_udp_in(ns: &str, addr: SocketAddr) -> Result<std::net::UdpSocket> {
    let path = PathBuf::from("/run/netns").join(ns);
    let handle = std::thread::spawn(move || -> Result<std::net::UdpSocket> {
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        setns(&file, CloneFlags::CLONE_NEWNET).context("setns")?;
        let socket = std::net::UdpSocket::bind(addr)
            .with_context(|| format!("binding UDP {addr} in {}", path.display()))?;
        socket.set_nonblocking(true)?;
        Ok(socket)
    });
    match handle.join() {
        Ok(r) => r,
        Err(_) => bail!("the thread binding in namespace {ns} panicked"),
    }
}
