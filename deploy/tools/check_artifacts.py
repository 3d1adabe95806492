#!/usr/bin/env python3
"""Offline checks of Strata's deployment files against the code they configure.

    check_artifacts.py [--rendered OUTPUT_JSON]

Run from anywhere; paths are relative to the repository (two levels above this file).

- deploy/systemd/*.env: every variable is one the binary reads (an `env = "STRATA_…"` or an
  env::var("STRATA_…") in its crate) or RUST_LOG.
- Every node configuration (node.env, compose services, rendered cloud-init): STRATA_AUTH is a
  value the node accepts, and a node whose auth is `required` (the default) has token keys.
- control.env and the rendered control-plane env (not compose.yaml, a local plaintext cluster):
  gRPC over TLS (STRATA_TLS_CERT, STRATA_TLS_KEY and STRATA_CLIENT_CA all set, no
  STRATA_PLAINTEXT) with operator tokens; node.env and the rendered node env: every
  STRATA_CONTROL_PLANE endpoint is https:// and STRATA_CERTS_DIR is set; the host node.env
  dials is the name control.env's `certs-issue --node-id` example issues the certificate for.
- deploy/systemd/*.service: ExecStart is the binary, EnvironmentFile is /etc/strata/NAME.env,
  the stop and restart policy and the hardening the deployment relies on are present, and the
  node's TimeoutStopSec leaves at least 10 s beyond its drain timeout (node.env, the default in
  config.rs, and the largest drain_timeout_seconds the region module accepts).
- deploy/bin/strata-fetch parses (sh -n).
- deploy/container/Containerfile.*: every path copied from the repository exists and is not
  excluded by the file's .dockerignore; `--from` names an earlier stage; the package built with
  `cargo build -p` exists in the workspace, is the binary copied into the runtime stage and is
  the entrypoint; the runtime stage runs as a non-root user.
- deploy/container/compose.yaml: the YAML parses; build contexts and container files exist;
  depends_on and named volumes refer to declared ones; every STRATA_* variable is a flag of the
  service's binary; each node's published ports match its RTC listen port and public URL; the
  certificate service issues a certificate for every node id.
- --rendered: the output of `terraform output -json` in deploy/tools/render-test: each user
  data is #cloud-config YAML; the files it writes are deploy/systemd's unit and
  deploy/bin/strata-fetch byte for byte; its env file holds only real flags; the node's
  certificate paths name the node id; every file its env names (certificates, keys, token
  keys, operator tokens) is written, keys and tokens root:strata 0640; no file holding a
  private key is readable by all; etcd's initial cluster includes the member.
- docs/operations.md: every grpcurl call names an existing strata.v1 method, and its -d JSON
  uses only fields (lowerCamelCase) and enum values of the request message; every operator RPC
  and the health check have a recipe; every metric named appears in the code; YAML blocks
  (the alert rules) parse.

Exits 1 when a problem was found.
"""

import base64
import fnmatch
import glob
import json
import os
import re
import shlex
import subprocess
import sys

import yaml

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DEPLOY = os.path.join(REPO, "deploy")
FLAGS = {}
# role: (binary, its configuration source, the crate's sources that may read STRATA_* variables)
BINARIES = {
    "node": ("strata-node", "data-plane/node/src/config.rs", "data-plane/node/src"),
    "control": ("strata-control", "control-plane/src/config.rs", "control-plane/src"),
}
ALWAYS_ALLOWED_ENV = {"RUST_LOG", "RUST_BACKTRACE"}

problems = []


def problem(where, what):
    problems.append(f"{os.path.relpath(where, REPO) if os.path.isabs(where) else where}: {what}")


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


# --- the binaries' flags ----------------------------------------------------------------------


def env_vars(src_dir):
    """STRATA_* variables a crate reads: clap `env = "…"` and std::env::var("…")."""
    names = set()
    for path in glob.glob(os.path.join(REPO, src_dir, "**", "*.rs"), recursive=True):
        text = read(path)
        names.update(re.findall(r'\benv\s*=\s*"(STRATA_[A-Z0-9_]+)"', text))
        names.update(re.findall(r'env::var(?:_os)?\(\s*"(STRATA_[A-Z0-9_]+)"', text))
    return names


def default_drain_seconds():
    text = read(os.path.join(REPO, BINARIES["node"][1]))
    m = re.search(r'env\s*=\s*"STRATA_DRAIN_TIMEOUT",\s*default_value\s*=\s*"([^"]+)"', text)
    return parse_seconds(m.group(1)) if m else None


def parse_seconds(value):
    m = re.fullmatch(r"\s*([0-9.]+)\s*(ms|s|m|min)?\s*", value)
    if not m:
        return None
    n = float(m.group(1))
    return {"ms": n / 1000, "s": n, None: n, "m": n * 60, "min": n * 60}[m.group(2)]


def check_env_keys(where, keys, role):
    for k in keys:
        if k not in FLAGS[role] and k not in ALWAYS_ALLOWED_ENV:
            problem(where, f"{k} is not a flag of {BINARIES[role][0]} (see {BINARIES[role][1]})")


def auth_policy():
    """(default, allowed values) of the node's STRATA_AUTH, or None without token support."""
    if "STRATA_AUTH" not in FLAGS.get("node", set()):
        return None
    src = ""
    for path in glob.glob(os.path.join(REPO, BINARIES["node"][2], "**", "*.rs"), recursive=True):
        src += read(path)
    m = re.search(r'env\s*=\s*"STRATA_AUTH"[^)]*?default_value\s*=\s*"([^"]+)"', src)
    e = re.search(r"pub enum AuthMode\s*\{(.*?)\}", src, re.S)
    values = set()
    if e:
        body = re.sub(r"//[^\n]*|#\[[^\]]*\]", "", e.group(1))
        values = {v.lower() for v in re.findall(r"\b([A-Z][A-Za-z0-9]*)\s*,?", body)}
    return (m.group(1) if m else None), values


def check_auth(where, env):
    """A node whose auth is `required` (the default) needs token keys, or it refuses to start."""
    policy = auth_policy()
    if policy is None:
        return
    default, values = policy
    auth = env.get("STRATA_AUTH", default)
    if values and auth not in values:
        problems.append(f"{where}: STRATA_AUTH={auth} is not one of {sorted(values)}")
    if auth == "required" and not (env.get("STRATA_TOKEN_KEYS_FILE") or env.get("STRATA_TOKEN_KEYS")):
        problems.append(
            f"{where}: auth is required (STRATA_AUTH{'' if 'STRATA_AUTH' in env else ' default'}) "
            "but no token keys are configured: the node would refuse to start"
        )


TRUE_VALUES = {"1", "true", "yes", "on", "y"}


def check_control_tls(where, env):
    """A control plane serves gRPC over TLS (all three files) and has operator tokens."""
    tls = ("STRATA_TLS_CERT", "STRATA_TLS_KEY", "STRATA_CLIENT_CA")
    if not all(k in FLAGS.get("control", set()) for k in tls):
        return  # a binary without TLS flags: check_env_keys reports any that are set
    given = [k for k in tls if env.get(k)]
    if not given:
        problems.append(
            f"{where}: no STRATA_TLS_CERT, STRATA_TLS_KEY and STRATA_CLIENT_CA: gRPC would be "
            "plaintext without authentication (anyone who reaches it can drain the cluster)"
        )
    elif len(given) < len(tls):
        missing = ", ".join(k for k in tls if k not in given)
        problems.append(
            f"{where}: the TLS settings go together, {missing} missing "
            "(strata-control refuses to start)"
        )
    if str(env.get("STRATA_PLAINTEXT", "")).strip().lower() in TRUE_VALUES:
        problems.append(f"{where}: STRATA_PLAINTEXT is set: plaintext is for local development only")
    if not env.get("STRATA_OPERATOR_TOKENS"):
        problems.append(
            f"{where}: no STRATA_OPERATOR_TOKENS: no operator could call the API over TLS"
        )


def control_plane_endpoints(env):
    return [e.strip() for e in str(env.get("STRATA_CONTROL_PLANE") or "").split(",") if e.strip()]


def check_node_control_plane(where, env):
    """A node reaches the control plane over TLS, with its certificates."""
    endpoints = control_plane_endpoints(env)
    if not endpoints:
        problems.append(f"{where}: no STRATA_CONTROL_PLANE (the node would dial 127.0.0.1)")
    for e in endpoints:
        if not e.startswith("https://"):
            problems.append(
                f"{where}: STRATA_CONTROL_PLANE endpoint {e} is not https://: the node's "
                "control-plane connection would be plaintext"
            )
    if any(e.startswith("https://") for e in endpoints) and not env.get("STRATA_CERTS_DIR"):
        problems.append(f"{where}: https:// control-plane endpoints need STRATA_CERTS_DIR")


def world_readable(wf):
    """True when a cloud-init write_files entry is readable by others (default mode 0644)."""
    try:
        return int(str(wf.get("permissions") or "0644"), 8) & 0o004 != 0
    except ValueError:
        return True


def check_secret_file(where, files, path, what):
    entry = files.get(path)
    if not entry:
        problems.append(f"{where}: {what} {path} is not written")
    elif entry[1].get("permissions") != "0640" or entry[1].get("owner") != "root:strata":
        problems.append(f"{where}: {path} is not root:strata 0640")


def parse_env_file(text):
    env = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            env[line] = None
            continue
        k, v = line.split("=", 1)
        env[k.strip()] = v.strip()
    return env


# --- systemd ------------------------------------------------------------------------------------


def parse_unit(text):
    """{section: {key: [values]}}"""
    sections, cur = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            cur = sections.setdefault(line[1:-1], {})
            continue
        if cur is None or "=" not in line:
            return None
        k, v = line.split("=", 1)
        cur.setdefault(k.strip(), []).append(v.strip())
    return sections


def unit_value(unit, section, key):
    values = unit.get(section, {}).get(key)
    return values[-1] if values else None


def check_certificate_name(envs):
    """The host node.env dials is the name control.env says to issue the certificate for."""
    path = os.path.join(DEPLOY, "systemd", "control.env")
    if "node" not in envs or "control" not in envs:
        return
    issued = set(re.findall(r"certs-issue\b[^\n]*--node-id[ =]+([A-Za-z0-9.-]+)", read(path)))
    if not issued:
        problem(path, "no `strata-node certs-issue --node-id NAME` example for the certificate")
        return
    for e in control_plane_endpoints(envs["node"]):
        m = re.match(r"https://\[?([^/\]]+?)\]?(?::[0-9]+)?/?$", e)
        if m and m.group(1) not in issued:
            problems.append(
                f"deploy/systemd/node.env: the node dials {m.group(1)}, but control.env issues "
                f"the control plane's certificate for {', '.join(sorted(issued))}: the node "
                "would reject it"
            )


def check_systemd():
    envs = {}
    for role in BINARIES:
        path = os.path.join(DEPLOY, "systemd", f"{role}.env")
        if not os.path.isfile(path):
            problem(path, "missing")
            continue
        env = parse_env_file(read(path))
        for k, v in env.items():
            if v is None:
                problem(path, f"line {k!r} is not NAME=VALUE")
        check_env_keys(path, env, role)
        if role == "node":
            check_auth(os.path.relpath(path, REPO), env)
            check_node_control_plane(os.path.relpath(path, REPO), env)
        else:
            check_control_tls(os.path.relpath(path, REPO), env)
        envs[role] = env
    check_certificate_name(envs)

    drain_default = default_drain_seconds()
    if drain_default is None:
        problem(BINARIES["node"][1], "no default for STRATA_DRAIN_TIMEOUT found")
    region_vars = os.path.join(DEPLOY, "terraform/modules/region/variables.tf")
    m = re.search(r"var\.drain_timeout_seconds\s*<=\s*([0-9]+)", read(region_vars))
    tf_drain_max = float(m.group(1)) if m else None
    if tf_drain_max is None:
        problem(region_vars, "no upper bound on drain_timeout_seconds found")

    for role, (binary, _, _) in BINARIES.items():
        path = os.path.join(DEPLOY, "systemd", f"{binary}.service")
        if not os.path.isfile(path):
            problem(path, "missing")
            continue
        unit = parse_unit(read(path))
        if unit is None:
            problem(path, "not a unit file (a line outside a section, or without '=')")
            continue
        svc = "Service"
        want = {
            "ExecStart": f"/usr/local/bin/{binary}",
            "EnvironmentFile": f"/etc/strata/{role}.env",
            "KillSignal": "SIGTERM",
            "Restart": "on-failure",
            "NoNewPrivileges": "yes",
            "ProtectSystem": "strict",
            "AmbientCapabilities": "",
            "CapabilityBoundingSet": "",
            "User": "strata",
        }
        for key, value in want.items():
            got = unit_value(unit, svc, key)
            if got is None:
                problem(path, f"[Service] has no {key}=")
            elif got.split()[0:1] != value.split()[0:1] and not (value == "" and got == ""):
                problem(path, f"{key}={got}, expected {key}={value}")
        if not unit_value(unit, svc, "LimitNOFILE"):
            problem(path, "[Service] has no LimitNOFILE=")
        if unit_value(unit, "Install", "WantedBy") != "multi-user.target":
            problem(path, "[Install] WantedBy= is not multi-user.target")
        if role == "node":
            stop = parse_seconds(unit_value(unit, svc, "TimeoutStopSec") or "")
            if stop is None:
                problem(path, "TimeoutStopSec= missing or not in seconds")
                continue
            drains = [("the default in config.rs", drain_default)]
            drain_env = envs.get("node", {}).get("STRATA_DRAIN_TIMEOUT")
            if drain_env:
                drains.append(("node.env", parse_seconds(drain_env)))
            drains.append(("the region module's largest drain_timeout_seconds", tf_drain_max))
            for source, drain in drains:
                if drain is not None and stop < drain + 10:
                    problem(
                        path,
                        f"TimeoutStopSec={stop:g} leaves less than 10 s after a drain of "
                        f"{drain:g} s ({source})",
                    )

    fetch = os.path.join(DEPLOY, "bin", "strata-fetch")
    res = subprocess.run(["sh", "-n", fetch], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        problem(fetch, f"sh -n: {res.stderr.strip()}")
    if not os.access(fetch, os.X_OK):
        problem(fetch, "not executable")


# --- container files -------------------------------------------------------------------------


def workspace_packages():
    """Package names of the workspace members listed in the root Cargo.toml."""
    root = read(os.path.join(REPO, "Cargo.toml"))
    m = re.search(r"^members\s*=\s*\[(.*?)\]", root, re.M | re.S)
    names = set()
    for member in re.findall(r'"([^"]+)"', m.group(1) if m else ""):
        manifest = os.path.join(REPO, member, "Cargo.toml")
        if os.path.isfile(manifest):
            pm = re.search(r'^\[package\][^\[]*?^name\s*=\s*"([^"]+)"', read(manifest), re.M | re.S)
            if pm:
                names.add(pm.group(1))
    return names


def containerfile_instructions(text):
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        instr, _, args = buf.partition(" ")
        out.append((instr.upper(), args.strip()))
        buf = ""
    return out


def ignored(path, patterns):
    for pat in patterns:
        pat = pat.rstrip("/")
        if pat.startswith("**/"):
            if any(fnmatch.fnmatch(part, pat[3:]) for part in path.split("/")):
                return True
        elif fnmatch.fnmatch(path, pat) or path.split("/")[0] == pat:
            return True
    return False


def check_containerfiles():
    packages = workspace_packages()
    files = sorted(glob.glob(os.path.join(DEPLOY, "container", "Containerfile.*")))
    files = [f for f in files if not f.endswith(".dockerignore")]
    if not files:
        problem(os.path.join(DEPLOY, "container"), "no Containerfile.*")
    for path in files:
        ignore_file = path + ".dockerignore"
        patterns = []
        if os.path.isfile(ignore_file):
            patterns = [
                line.strip()
                for line in read(ignore_file).splitlines()
                if line.strip() and not line.strip().startswith("#")
            ]
        else:
            problem(path, f"no {os.path.basename(ignore_file)} (target/ would be sent as context)")
        stages, built, copied_bins, workdir = [], set(), [], "/"
        user, entry = None, None
        for instr, args in containerfile_instructions(read(path)):
            if instr == "FROM":
                m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?$", args, re.I)
                if not m:
                    problem(path, f"FROM {args}: cannot read")
                    continue
                stages.append(m.group(2) or str(len(stages)))
                user, workdir = None, "/"
            elif instr == "WORKDIR":
                workdir = args
            elif instr == "USER":
                user = args
            elif instr == "ENTRYPOINT":
                try:
                    entry = json.loads(args)
                except ValueError:
                    problem(path, "ENTRYPOINT is not in exec (JSON) form")
            elif instr == "RUN":
                for m in re.finditer(r"cargo build\b[^&;|]*?\s-p\s+(\S+)", args):
                    built.add((m.group(1), workdir))
                    if m.group(1) not in packages:
                        problem(path, f"cargo build -p {m.group(1)}: no such workspace package")
            elif instr in ("COPY", "ADD"):
                words = shlex.split(args)
                opts = [w for w in words if w.startswith("--")]
                rest = [w for w in words if not w.startswith("--")]
                if len(rest) < 2:
                    problem(path, f"{instr} {args}: needs a source and a destination")
                    continue
                sources, dest = rest[:-1], rest[-1]
                src_stage = next((o.split("=", 1)[1] for o in opts if o.startswith("--from=")), None)
                if src_stage is not None:
                    if src_stage not in stages[:-1]:
                        problem(path, f"COPY --from={src_stage}: no earlier stage of that name")
                    copied_bins.extend((s, dest) for s in sources)
                    continue
                for s in sources:
                    rel = s.rstrip("/").lstrip("./") or "."
                    if not glob.glob(os.path.join(REPO, rel)):
                        problem(path, f"COPY {s}: no such path in the repository")
                    elif ignored(rel, patterns):
                        problem(path, f"COPY {s}: excluded by {os.path.basename(ignore_file)}")
        if len(stages) < 2:
            problem(path, "not a multi-stage build")
        if user in (None, "root", "0"):
            problem(path, "the runtime stage runs as root (no USER, or USER root)")
        for pkg, wd in built:
            want = os.path.join(wd, "target/release", pkg)
            if not any(os.path.normpath(s) == os.path.normpath(want) for s, _ in copied_bins):
                problem(path, f"the runtime stage does not copy {want}")
            dests = [d for s, d in copied_bins if os.path.basename(s) == pkg]
            if entry and dests and entry[0] not in dests:
                problem(path, f"ENTRYPOINT {entry[0]} is not where {pkg} was copied ({dests[0]})")
        if not built:
            problem(path, "no `cargo build -p PACKAGE`")


def check_compose():
    path = os.path.join(DEPLOY, "container", "compose.yaml")
    if not os.path.isfile(path):
        problem(path, "missing")
        return
    try:
        doc = yaml.safe_load(read(path))
    except yaml.YAMLError as e:
        problem(path, f"YAML does not parse: {e}")
        return
    base = os.path.dirname(path)
    services = doc.get("services") or {}
    volumes = set((doc.get("volumes") or {}).keys())
    node_ids, certs_commands = [], []
    for name, svc in services.items():
        where = f"{os.path.relpath(path, REPO)}: service {name}"
        role = None
        build = svc.get("build")
        if build:
            ctx = os.path.normpath(os.path.join(base, build.get("context", ".")))
            if not os.path.isdir(ctx):
                problems.append(f"{where}: build context {ctx} does not exist")
            cf = os.path.join(ctx, build.get("dockerfile", "Dockerfile"))
            if not os.path.isfile(cf):
                problems.append(f"{where}: {build.get('dockerfile')} does not exist in the context")
            role = "node" if cf.endswith(".node") else "control" if cf.endswith(".control") else None
        elif not svc.get("image"):
            problems.append(f"{where}: neither build nor image")
        deps = svc.get("depends_on") or {}
        for dep in deps if isinstance(deps, (list, dict)) else []:
            if dep not in services:
                problems.append(f"{where}: depends_on {dep}, which is not a service")
        for vol in svc.get("volumes") or []:
            src = str(vol).split(":", 1)[0]
            if not src.startswith((".", "/")) and src not in volumes:
                problems.append(f"{where}: volume {src} is not declared under volumes:")
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
        if role:
            check_env_keys(f"{os.path.relpath(path, REPO)}: service {name}", env, role)
        if svc.get("entrypoint") or svc.get("command"):
            cmd = svc.get("command")
            if role == "node" and cmd and "certs-issue" in str(cmd):
                certs_commands.append(str(cmd))
        if role == "node" and "STRATA_NODE_ID" in env:
            check_auth(where, {k: str(v) for k, v in env.items()})
            node_ids.append(env["STRATA_NODE_ID"])
            ports = [str(p) for p in svc.get("ports") or []]
            rtc = str(env.get("STRATA_RTC_LISTEN", "")).rsplit(":", 1)[-1]
            if not any(p.endswith(f":{rtc}:{rtc}/udp") for p in ports):
                problems.append(
                    f"{where}: STRATA_RTC_LISTEN port {rtc} is not published as the same UDP "
                    "port on the host (the ICE candidate carries it)"
                )
            http = str(env.get("STRATA_HTTP_LISTEN", "")).rsplit(":", 1)[-1]
            url_port = str(env.get("STRATA_PUBLIC_URL", "")).rsplit(":", 1)[-1].rstrip("/")
            if not any(p.endswith(f":{url_port}:{http}") for p in ports):
                problems.append(
                    f"{where}: STRATA_PUBLIC_URL port {url_port} is not the host port of "
                    f"the HTTP listener {http}"
                )
    if node_ids and not certs_commands:
        problems.append(f"{os.path.relpath(path, REPO)}: no service runs strata-node certs-issue")
    for nid in node_ids:
        if certs_commands and not any(re.search(rf"\b{re.escape(nid)}\b", c) for c in certs_commands):
            problems.append(f"{os.path.relpath(path, REPO)}: no certificate is issued for {nid}")


# --- rendered cloud-init -------------------------------------------------------------------------


def check_user_data(where, text, role, node_id=None):
    if not text.startswith("#cloud-config\n"):
        problems.append(f"{where}: does not start with #cloud-config")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        problems.append(f"{where}: YAML does not parse: {e}")
        return None
    if not isinstance(doc, dict):
        problems.append(f"{where}: not a YAML mapping")
        return None
    files = {}
    for wf in doc.get("write_files") or []:
        content = wf.get("content", "")
        if wf.get("encoding") == "b64":
            try:
                content = base64.b64decode(content, validate=True).decode()
            except (ValueError, UnicodeDecodeError) as e:
                problems.append(f"{where}: {wf.get('path')}: bad base64: {e}")
                continue
        files[wf.get("path")] = (content, wf)
        if "PRIVATE KEY-----" in content and world_readable(wf):
            problems.append(
                f"{where}: {wf.get('path')} holds a private key but is readable by all "
                f"(permissions {wf.get('permissions') or 'default 0644'})"
            )
    if role in BINARIES:
        binary = BINARIES[role][0]
        expect = {
            f"/etc/systemd/system/{binary}.service": f"deploy/systemd/{binary}.service",
            "/usr/local/sbin/strata-fetch": "deploy/bin/strata-fetch",
        }
        for dest, src in expect.items():
            if dest not in files:
                problems.append(f"{where}: does not write {dest}")
            elif files[dest][0] != read(os.path.join(REPO, src)):
                problems.append(f"{where}: {dest} differs from {src}")
        env_path = f"/etc/strata/{role}.env"
        if env_path not in files:
            problems.append(f"{where}: does not write {env_path}")
        else:
            env = parse_env_file(files[env_path][0])
            check_env_keys(f"{where}: {env_path}", env, role)
            if role == "node" and env.get("STRATA_NODE_ID") != node_id:
                problems.append(f"{where}: STRATA_NODE_ID is {env.get('STRATA_NODE_ID')}")
            if role == "node":
                check_auth(f"{where}: {env_path}", env)
                check_node_control_plane(f"{where}: {env_path}", env)
                keys_file = env.get("STRATA_TOKEN_KEYS_FILE")
                if keys_file:
                    kf = files.get(keys_file)
                    if not kf:
                        problems.append(f"{where}: STRATA_TOKEN_KEYS_FILE={keys_file} is not written")
                    elif kf[1].get("permissions") != "0640" or kf[1].get("owner") != "root:strata":
                        problems.append(f"{where}: {keys_file} is not root:strata 0640")
            if role == "control":
                check_control_tls(f"{where}: {env_path}", env)
                for var in ("STRATA_TLS_CERT", "STRATA_CLIENT_CA"):
                    if env.get(var) and env[var] not in files:
                        problems.append(f"{where}: {var}={env[var]} is not written")
                if env.get("STRATA_TLS_KEY"):
                    check_secret_file(where, files, env["STRATA_TLS_KEY"], "STRATA_TLS_KEY")
                if env.get("STRATA_OPERATOR_TOKENS"):
                    check_secret_file(
                        where, files, env["STRATA_OPERATOR_TOKENS"], "STRATA_OPERATOR_TOKENS"
                    )
        runcmd = [" ".join(map(str, c)) if isinstance(c, list) else str(c) for c in doc.get("runcmd") or []]
        if not any(re.match(rf"/usr/local/sbin/strata-fetch https?://\S+ [0-9a-f]{{64}} /usr/local/bin/{binary}$", c) for c in runcmd):
            problems.append(f"{where}: runcmd does not install {binary} with strata-fetch URL SHA256")
        if not any(c == f"systemctl enable --now {binary}.service" for c in runcmd):
            problems.append(f"{where}: runcmd does not enable and start {binary}.service")
        if not any("useradd --system" in " ".join(map(str, c)) for c in doc.get("bootcmd") or []):
            problems.append(f"{where}: bootcmd does not create the strata user")
    if role == "node":
        certs_dir = parse_env_file(files.get("/etc/strata/node.env", ("", None))[0]).get("STRATA_CERTS_DIR")
        for name in ("ca.pem", f"{node_id}.pem", f"{node_id}.key"):
            if f"{certs_dir}/{name}" not in files:
                problems.append(f"{where}: does not write {certs_dir}/{name}")
        key = files.get(f"{certs_dir}/{node_id}.key")
        if key and (key[1].get("permissions") != "0640" or key[1].get("owner") != "root:strata"):
            problems.append(f"{where}: the node key is not root:strata 0640")
    if role == "etcd":
        env_file = files.get("/etc/strata/etcd.env")
        if not env_file:
            problems.append(f"{where}: does not write /etc/strata/etcd.env")
        else:
            env = parse_env_file(env_file[0])
            cluster = dict(p.split("=", 1) for p in env.get("ETCD_INITIAL_CLUSTER", "").split(",") if "=" in p)
            if cluster.get(env.get("ETCD_NAME")) != env.get("ETCD_INITIAL_ADVERTISE_PEER_URLS"):
                problems.append(f"{where}: the member's peer URL is not its entry in ETCD_INITIAL_CLUSTER")
        dropin = files.get("/etc/systemd/system/etcd.service.d/strata.conf")
        if not dropin or "EnvironmentFile=/etc/strata/etcd.env" not in dropin[0]:
            problems.append(f"{where}: no etcd.service drop-in reading /etc/strata/etcd.env")
        if "etcd-server" not in (doc.get("packages") or []):
            problems.append(f"{where}: does not install etcd-server")
    return doc


def check_rendered(path):
    out = json.loads(read(path))
    check_user_data("rendered node_user_data", out["node_user_data"]["value"], "node", "eu-1")
    check_user_data("rendered control_user_data", out["control_user_data"]["value"], "control")
    members = out["etcd_user_data"]["value"]
    if len(members) != 3:
        problems.append(f"rendered etcd_user_data: {len(members)} members, expected 3")
    for name, text in members.items():
        check_user_data(f"rendered etcd_user_data[{name}]", text, "etcd")


# --- grpcurl recipes in docs/operations.md ------------------------------------------------------


def parse_proto(path):
    text = re.sub(r"//[^\n]*", "", read(path))
    methods, messages, enums = {}, {}, {}
    for svc in re.finditer(r"service\s+(\w+)\s*\{(.*?)\n\}", text, re.S):
        for rpc in re.finditer(r"rpc\s+(\w+)\s*\(\s*(\w+)\s*\)", svc.group(2)):
            methods[f"{svc.group(1)}/{rpc.group(1)}"] = rpc.group(2)
    for msg in re.finditer(r"message\s+(\w+)\s*\{(.*?)\}", text, re.S):
        fields = {}
        for f in re.finditer(r"(?:repeated\s+)?(\w+)\s+(\w+)\s*=\s*\d+\s*;", msg.group(2)):
            camel = re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), f.group(2))
            fields[camel] = f.group(1)
            fields[f.group(2)] = f.group(1)
        messages[msg.group(1)] = fields
    for en in re.finditer(r"enum\s+(\w+)\s*\{(.*?)\}", text, re.S):
        enums[en.group(1)] = set(re.findall(r"(\w+)\s*=\s*\d+", en.group(2)))
    return methods, messages, enums


def check_json(where, value, msg, messages, enums):
    if not isinstance(value, dict):
        problems.append(f"{where}: {msg} must be a JSON object")
        return
    for k, v in value.items():
        ftype = messages.get(msg, {}).get(k)
        if ftype is None:
            problems.append(f"{where}: {msg} has no field {k}")
        elif ftype in messages:
            check_json(where, v, ftype, messages, enums)
        elif ftype in enums and v not in enums[ftype]:
            problems.append(f"{where}: {v!r} is not a value of {ftype}")


def check_docs():
    path = os.path.join(REPO, "docs", "operations.md")
    if not os.path.isfile(path):
        problem(path, "missing")
        return
    methods, messages, enums = parse_proto(os.path.join(REPO, "proto/strata/v1/control.proto"))
    text = read(path).replace("\\\n", " ")
    seen = set()
    for n, line in enumerate(text.splitlines(), 1):
        if "grpcurl" not in line:
            continue
        where = f"docs/operations.md: grpcurl line {n}"
        for m in re.finditer(r"strata\.v1\.(\w+)/(\w+)", line):
            method = f"{m.group(1)}/{m.group(2)}"
            seen.add(method)
            if method not in methods:
                problems.append(f"{where}: no method strata.v1.{method} in control.proto")
                continue
            d = re.search(r"-d\s+'([^']*)'", line)
            if d and d.group(1) != "@":
                try:
                    body = json.loads(d.group(1))
                except ValueError as e:
                    problems.append(f"{where}: -d is not JSON: {e}")
                    continue
                check_json(where, body, methods[method], messages, enums)
    sources = "".join(
        read(f)
        for d in ("control-plane/src", "data-plane")
        for f in glob.glob(os.path.join(REPO, d, "**", "*.rs"), recursive=True)
    )
    for name in sorted(set(re.findall(r"\bstrata_(?:control|node|relay)_[a-z0-9_]+", text))):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if f'"{name}' not in sources and f'"{base}' not in sources and f"{name} " not in sources:
            problems.append(f"docs/operations.md: metric {name} does not appear in the code")
    for block in re.findall(r"```yaml\n(.*?)```", text, re.S):
        try:
            yaml.safe_load(block)
        except yaml.YAMLError as e:
            problems.append(f"docs/operations.md: a yaml block does not parse: {e}")
    operator = [
        "NodeService/ListNodes", "NodeService/GetNode", "NodeService/Drain",
        "NodeService/Deregister", "RoutingService/ListStreams", "RoutingService/GetStream",
        "RoutingService/WatchStream", "RoutingService/Resolve", "PlacementService/Place",
    ]
    for method in operator:
        if method not in seen:
            problems.append(f"docs/operations.md: no grpcurl recipe for strata.v1.{method}")
    if "grpc.health.v1.Health/Check" not in text:
        problems.append("docs/operations.md: no grpcurl recipe for grpc.health.v1.Health/Check")


def run(repo=None, rendered=None):
    """The problems found in the repository at `repo` (default: this file's)."""
    global REPO, DEPLOY, FLAGS, problems
    if repo is not None:
        REPO = os.path.abspath(repo)
        DEPLOY = os.path.join(REPO, "deploy")
    problems = []
    FLAGS = {role: env_vars(src) for role, (_, _, src) in BINARIES.items()}
    for role, (_, cfg, _) in BINARIES.items():
        if not FLAGS[role]:
            problem(cfg, "no STRATA_* variables found (has the flag syntax changed?)")
    check_systemd()
    check_containerfiles()
    check_compose()
    check_docs()
    if rendered:
        check_rendered(rendered)
    return problems


def main(argv):
    rendered = None
    if argv[:1] == ["--rendered"] and len(argv) == 2:
        rendered = argv[1]
    elif argv:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    found = run(rendered=rendered)
    parts = "env files, units, strata-fetch, container files, compose.yaml, docs/operations.md"
    if rendered:
        parts += ", rendered cloud-init"
    for p in found:
        print(f"  problem: {p}")
    print(f"check_artifacts: {parts}: {len(found)} problem(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
