#!/usr/bin/env python3
"""Proves that check_artifacts.py catches what it claims to: each case breaks one file of a
temporary repository (deploy/ and docs/ copied, everything else linked) and expects a problem
matching a pattern.

    test_check_artifacts.py [RENDERED_JSON]

With RENDERED_JSON (the render test's `terraform output -json`), the cases on rendered
cloud-init run too. Prints one line per case and "N passed, N failed"; exits 1 if any failed.
"""

import json
import os
import re
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, HERE)
import check_artifacts  # noqa: E402  (after the path is set)

NODE_UNIT = "deploy/systemd/strata-node.service"
NODE_ENV = "deploy/systemd/node.env"
CONTROL_ENV = "deploy/systemd/control.env"
NODE_CF = "deploy/container/Containerfile.node"
COMPOSE = "deploy/container/compose.yaml"
DOCS = "docs/operations.md"

# (name, file, old text (or a list of them, each replaced) or None to append, new text,
# expected pattern)
CASES = [
    ("unknown variable in node.env", "deploy/systemd/node.env",
     "STRATA_NODE_ID=", "STRATA_NODEID=", r"STRATA_NODEID is not a flag of strata-node"),
    ("node variable in control.env", "deploy/systemd/control.env",
     "STRATA_PREFIX=", "STRATA_REGION=", r"STRATA_REGION is not a flag of strata-control"),
    ("stop timeout shorter than the drain", NODE_UNIT,
     "TimeoutStopSec=30", "TimeoutStopSec=15", r"TimeoutStopSec=15 leaves less than 10 s"),
    ("drain longer than the unit allows", "deploy/systemd/node.env",
     "STRATA_DRAIN_TIMEOUT=10s", "STRATA_DRAIN_TIMEOUT=25s", r"after a drain of 25 s \(node\.env\)"),
    ("no KillSignal", NODE_UNIT, "KillSignal=SIGTERM\n", "", r"has no KillSignal="),
    ("weaker ProtectSystem", NODE_UNIT,
     "ProtectSystem=strict", "ProtectSystem=full", r"ProtectSystem=full, expected ProtectSystem=strict"),
    ("ambient capabilities", NODE_UNIT,
     "AmbientCapabilities=\n", "AmbientCapabilities=CAP_NET_ADMIN\n", r"AmbientCapabilities=CAP_NET_ADMIN"),
    ("COPY of a missing path", NODE_CF, "COPY tests tests", "COPY test test", r"COPY test: no such path"),
    ("COPY of an ignored path", NODE_CF + ".dockerignore", None, "proto\n", r"COPY proto: excluded by"),
    ("unknown package", NODE_CF, "-p strata-node", "-p strata-nodes", r"no such workspace package"),
    ("runtime as root", NODE_CF, "USER strata\n", "", r"runtime stage runs as root"),
    ("entrypoint elsewhere", NODE_CF,
     'ENTRYPOINT ["/usr/local/bin/strata-node"]', 'ENTRYPOINT ["/usr/bin/strata-node"]',
     r"ENTRYPOINT /usr/bin/strata-node is not where"),
    ("compose: RTC port not published as itself", COMPOSE,
     '"127.0.0.1:10003:10003/udp"', '"127.0.0.1:10003:8443/udp"', r"service us-1: STRATA_RTC_LISTEN port"),
    ("compose: public URL port", COMPOSE,
     "STRATA_PUBLIC_URL: http://127.0.0.1:8082", "STRATA_PUBLIC_URL: http://127.0.0.1:8083",
     r"service eu-2: STRATA_PUBLIC_URL port 8083"),
    ("compose: unknown dependency", COMPOSE,
     "      etcd:\n        condition: service_healthy", "      etc:\n        condition: service_healthy",
     r"depends_on etc, which is not a service"),
    ("compose: certificate missing", COMPOSE,
     "for id in eu-1 eu-2 us-1 us-2;", "for id in eu-1 eu-2 us-1;", r"no certificate is issued for us-2"),
    ("compose: unknown variable", COMPOSE,
     "STRATA_ETCD_ENDPOINTS: http://etcd:2379", "STRATA_ETCD: http://etcd:2379",
     r"STRATA_ETCD is not a flag of strata-control"),
    ("compose: broken YAML", COMPOSE, None, "  bad: [\n", r"YAML does not parse"),
    ("control.env without TLS", CONTROL_ENV,
     ["STRATA_TLS_CERT=/etc/strata/certs/cp.pem\n", "STRATA_TLS_KEY=/etc/strata/certs/cp.key\n",
      "STRATA_CLIENT_CA=/etc/strata/certs/ca.pem\n"], "",
     r"control\.env: no STRATA_TLS_CERT, STRATA_TLS_KEY and STRATA_CLIENT_CA: gRPC would be plaintext"),
    ("control.env with half the TLS settings", CONTROL_ENV,
     "STRATA_CLIENT_CA=/etc/strata/certs/ca.pem\n", "",
     r"control\.env: the TLS settings go together, STRATA_CLIENT_CA missing"),
    ("control.env in plaintext mode", CONTROL_ENV, None, "STRATA_PLAINTEXT=true\n",
     r"control\.env: STRATA_PLAINTEXT is set"),
    ("control.env without operator tokens", CONTROL_ENV,
     "STRATA_OPERATOR_TOKENS=/etc/strata/operator-tokens\n", "",
     r"control\.env: no STRATA_OPERATOR_TOKENS"),
    ("node.env: control plane over http", NODE_ENV,
     "STRATA_CONTROL_PLANE=https://", "STRATA_CONTROL_PLANE=http://",
     r"node\.env: STRATA_CONTROL_PLANE endpoint http://cp\.example\.net:7400 is not https://"),
    ("node.env: https without certificates", NODE_ENV,
     "STRATA_CERTS_DIR=/etc/strata/certs\n", "", r"node\.env: https:// control-plane endpoints need STRATA_CERTS_DIR"),
    ("node.env dials a name the certificate lacks", NODE_ENV,
     "STRATA_CONTROL_PLANE=https://cp.example.net:7400", "STRATA_CONTROL_PLANE=https://control.example.net:7400",
     r"the node dials control\.example\.net, but control\.env issues .* for cp\.example\.net"),
    ("node.env without token keys", "deploy/systemd/node.env",
     "STRATA_TOKEN_KEYS_FILE=/etc/strata/token-keys\n", "", r"no token keys are configured"),
    ("compose: bad auth value", COMPOSE, "STRATA_AUTH: open", "STRATA_AUTH: opne",
     r"STRATA_AUTH=opne is not one of"),
    ("docs: unknown field", DOCS,
     """-d '{"nodeId":"us-2"}' $CP strata.v1.NodeService/GetNode""",
     """-d '{"node_ID":"us-2"}' $CP strata.v1.NodeService/GetNode""", r"GetNodeRequest has no field node_ID"),
    ("docs: unknown enum value", DOCS, '"purpose":"PURPOSE_PLAY"', '"purpose":"PLAY"',
     r"'PLAY' is not a value of Purpose"),
    ("docs: unknown method", DOCS, "strata.v1.RoutingService/ListStreams",
     "strata.v1.RoutingService/ListStream", r"no method strata\.v1\.RoutingService/ListStream"),
    ("docs: a recipe missing", DOCS, "strata.v1.NodeService/Deregister",
     "strata.v1.NodeService/GetNode", r"no grpcurl recipe for strata\.v1\.NodeService/Deregister"),
    ("docs: unknown metric", DOCS, "strata_node_redirects_total", "strata_node_redirect_total",
     r"metric strata_node_redirect_total does not appear"),
    ("docs: broken alert rules", DOCS, "        for: 1m\n", "        for: [1m\n", r"a yaml block does not parse"),
]

# Cases on the rendered cloud-init: (name, file to change or None, old, new, rendered output
# key, old, new in that output, expected pattern)
RENDERED_CASES = [
    ("rendered: unit changed after rendering", NODE_UNIT, "LimitNOFILE=65536", "LimitNOFILE=1024",
     None, None, None, r"strata-node\.service differs from deploy/systemd/strata-node\.service"),
    ("rendered: unknown variable", None, None, None,
     "node_user_data", "STRATA_REGION=eu", "STRATA_REGON=eu", r"STRATA_REGON is not a flag"),
    ("rendered: key readable by all", None, None, None,
     "node_user_data", 'permissions: "0640"', 'permissions: "0644"', r"node key is not root:strata 0640"),
    ("rendered: token keys readable by all", None, None, None,
     "node_user_data", "- path: /etc/strata/token-keys\n    owner: root:strata\n    permissions: \"0640\"",
     "- path: /etc/strata/token-keys\n    owner: root:strata\n    permissions: \"0644\"",
     r"/etc/strata/token-keys is not root:strata 0640"),
    ("rendered: control-plane key readable by all", None, None, None,
     "control_user_data", "- path: /etc/strata/certs/cp.key\n    owner: root:strata\n    permissions: \"0640\"",
     "- path: /etc/strata/certs/cp.key\n    owner: root:strata\n    permissions: \"0644\"",
     r"/etc/strata/certs/cp\.key is not root:strata 0640"),
    ("rendered: private key without a mode", None, None, None,
     "control_user_data", "- path: /etc/strata/certs/cp.key\n    owner: root:strata\n    permissions: \"0640\"\n",
     "- path: /etc/strata/certs/cp.key\n    owner: root:strata\n",
     r"cp\.key holds a private key but is readable by all \(permissions default 0644\)"),
    ("rendered: operator tokens readable by all", None, None, None,
     "control_user_data", "- path: /etc/strata/operator-tokens\n    owner: root:strata\n    permissions: \"0640\"",
     "- path: /etc/strata/operator-tokens\n    owner: strata:strata\n    permissions: \"0644\"",
     r"/etc/strata/operator-tokens is not root:strata 0640"),
    ("rendered: operator tokens not written", None, None, None,
     "control_user_data", "- path: /etc/strata/operator-tokens\n", "- path: /etc/strata/operator-token\n",
     r"STRATA_OPERATOR_TOKENS /etc/strata/operator-tokens is not written"),
    ("rendered: control plane without its client CA", None, None, None,
     "control_user_data", "      STRATA_CLIENT_CA=/etc/strata/certs/ca.pem\n", "",
     r"control\.env: the TLS settings go together, STRATA_CLIENT_CA missing"),
    ("rendered: node dials the control plane over http", None, None, None,
     "node_user_data", "https://cp-b.example.net", "http://cp-b.example.net",
     r"node\.env: STRATA_CONTROL_PLANE endpoint http://cp-b\.example\.net:7400 is not https://"),
    ("rendered: etcd member outside its cluster", None, None, None,
     "etcd_user_data", "ETCD_NAME=strata-etcd-2", "ETCD_NAME=strata-etcd-9",
     r"peer URL is not its entry in ETCD_INITIAL_CLUSTER"),
    ("rendered: not cloud-config", None, None, None,
     "control_user_data", "#cloud-config\n", "#!/bin/sh\n", r"does not start with #cloud-config"),
]


def make_repo(tmp):
    for entry in os.listdir(REPO):
        if entry in (".git", "target", "deploy", "docs"):
            continue
        os.symlink(os.path.join(REPO, entry), os.path.join(tmp, entry))
    for d in ("deploy", "docs"):
        shutil.copytree(os.path.join(REPO, d), os.path.join(tmp, d), symlinks=True,
                        ignore=shutil.ignore_patterns(".terraform"))


def edit(path, old, new):
    """Applies the change; returns (error or None, original text to restore)."""
    with open(path, encoding="utf-8") as f:
        original = f.read()
    if old is None:
        text = original + new
    else:
        text = original
        for o in old if isinstance(old, list) else [old]:
            if o not in text:
                return f"the case no longer applies: {o!r} is not in {path}", original
            text = text.replace(o, new)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return None, original


def restore(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def expect(problems, pattern):
    if not problems:
        return "the checker found nothing"
    if not any(re.search(pattern, p) for p in problems):
        return f"no problem matching {pattern!r} in:\n    " + "\n    ".join(problems)
    return None


def main(argv):
    rendered = argv[0] if argv else None
    passed = failed = 0
    baseline = check_artifacts.run(REPO, rendered)
    if baseline:
        print("test_check_artifacts: the unchanged tree already has problems:")
        print("\n".join(f"  {p}" for p in baseline))
        return 1

    def report(name, err):
        nonlocal passed, failed
        if err is None:
            passed += 1
            print(f"  ok    {name}")
        else:
            failed += 1
            print(f"  FAIL  {name}: {err}")

    with tempfile.TemporaryDirectory(prefix="strata-check-art-") as tmp:
        make_repo(tmp)
        for name, rel, old, new, pattern in CASES:
            path = os.path.join(tmp, rel)
            err, original = edit(path, old, new)
            err = err or expect(check_artifacts.run(tmp), pattern)
            restore(path, original)
            report(name, err)

        if rendered:
            with open(rendered, encoding="utf-8") as f:
                original_out = json.load(f)
            out_path = os.path.join(tmp, "rendered.json")
            for name, rel, old, new, key, rold, rnew, pattern in RENDERED_CASES:
                err, original = edit(os.path.join(tmp, rel), old, new) if rel else (None, None)
                out = json.loads(json.dumps(original_out))
                if key and err is None:
                    value = out[key]["value"]
                    if isinstance(value, dict):
                        value = {k: v.replace(rold, rnew) for k, v in value.items()}
                        changed = value != original_out[key]["value"]
                    else:
                        changed = rold in value
                        value = value.replace(rold, rnew)
                    out[key]["value"] = value
                    if not changed:
                        err = f"the case no longer applies: {rold!r} is not in {key}"
                with open(out_path, "w", encoding="utf-8") as f:
                    json.dump(out, f)
                err = err or expect(check_artifacts.run(tmp, out_path), pattern)
                if rel:
                    restore(os.path.join(tmp, rel), original)
                report(name, err)
        else:
            print("  (rendered cloud-init cases skipped: no render output given)")

    check_artifacts.run(REPO)  # leave the module pointing at the real repository
    print(f"test_check_artifacts: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
