#!/usr/bin/env python3
"""Offline consistency checks of Strata's Terraform (deploy/terraform), with python-hcl2.

    check_terraform.py [--plan] DIR...

For every directory under DIR that holds .tf files (a module):
  - every .tf file parses;
  - every variable and output has a non-empty description;
  - every variable that holds a secret (a name ending in key_pem, token_keys, operator_tokens,
    secret or password, or an object type with a key_pem attribute) is sensitive = true;
  - every var.X, local.X and data.T.N used is declared in the module; every variable declared
    is used;
  - every argument passed to a local module (source "./…" or "../…") is a variable of that
    module, and every variable of it without a default is passed;
  - every module.X.Y names a declared module call and, for local modules, an output of it;
  - every provider alias passed in `providers = {…}` is configured in the calling module;
  - files read with file/filebase64/templatefile("${path.module}/…") exist, and the
    variables a template uses are exactly the ones passed to templatefile();
  - a terraform.tfvars.example sets (or shows commented out, `# name = …`) only variables of
    its module, and sets every variable without a default;
  - no syntax Terraform 1.0 rejects (optional() attributes, nullable, terraform_data, moved,
    import, check, removed blocks, precondition/postcondition, replace_triggered_by, newer
    functions, validations that refer to other variables…), and required_version admits 1.0.

--plan prints, for each module, "validate DIR" when it needs no provider (so that
`terraform validate` can run offline) or "skip DIR (needs provider: …)".

Exits 1 when a problem was found, printing one line per problem.
"""

import os
import re
import sys

try:
    import hcl2
except ImportError:  # pragma: no cover - reported to the caller
    print("check_terraform.py: python-hcl2 is missing (pip install python-hcl2)", file=sys.stderr)
    sys.exit(2)

IDENT = r"[A-Za-z_][A-Za-z0-9_-]*"
META_ARGS = {"source", "version", "count", "for_each", "providers", "depends_on"}
LITERAL_KEYS = {"description", "error_message"}

# Syntax Terraform 1.0.x does not accept, found in comment-free text: (pattern, why).
NEWER_SYNTAX = [
    (r"\boptional\s*\(", "optional() object attributes need Terraform 1.3"),
    (r"^\s*nullable\s*=", "nullable needs Terraform 1.1"),
    (r"\bterraform_data\b", "terraform_data needs Terraform 1.4"),
    (r"^\s*moved\s*\{", "moved blocks need Terraform 1.1"),
    (r"^\s*import\s*\{", "import blocks need Terraform 1.5"),
    (r"^\s*removed\s*\{", "removed blocks need Terraform 1.7"),
    (r"^\s*check\s+\"", "check blocks need Terraform 1.5"),
    (r"^\s*(pre|post)condition\s*\{", "preconditions and postconditions need Terraform 1.2"),
    (r"\breplace_triggered_by\b", "replace_triggered_by needs Terraform 1.2"),
    (r"^\s*ephemeral\s*(=|\")", "ephemeral values need Terraform 1.10"),
    (r"^\s*cloud\s*\{", "the cloud block needs Terraform 1.1"),
    (r"\bprovider::", "provider-defined functions need Terraform 1.8"),
    (r"\b(startswith|endswith|timecmp)\s*\(", "this function needs Terraform 1.3"),
    (r"\b(strcontains|plantimestamp)\s*\(", "this function needs Terraform 1.5"),
    (r"\bissensitive\s*\(", "issensitive() needs Terraform 1.8"),
    (r"\btemplatestring\s*\(", "templatestring() needs Terraform 1.9"),
    (r"\bephemeralasnull\s*\(", "ephemeralasnull() needs Terraform 1.10"),
]

# Variables that hold secrets (private keys, token keys, tokens) by name, and object types that
# carry a private key.
SECRET_NAME = re.compile(r"(^|_)(key_pem|token_keys|operator_tokens|secret|password)$")
SECRET_TYPE = re.compile(r"\bkey_pem\s*=")

TEMPLATE_KEYWORDS = {"for", "in", "if", "else", "endif", "endfor", "true", "false", "null"}


def unquote(label):
    if len(label) >= 2 and label[0] == '"' and label[-1] == '"':
        return label[1:-1]
    return label


def strip_comments(text):
    """HCL text without comments; strings (and URLs in them) are kept."""
    out, i, n = [], 0, len(text)
    in_str = False
    while i < n:
        c = text[i]
        if in_str:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if c == '"':
                in_str = False
            i += 1
        elif c == '"':
            in_str = True
            out.append(c)
            i += 1
        elif c == "#" or text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def walk_strings(node, skip_keys=LITERAL_KEYS):
    """Every string in a parsed structure (keys of blocks and objects included)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for x in node:
            yield from walk_strings(x, skip_keys)
    elif isinstance(node, dict):
        for k, v in node.items():
            if k.startswith("__") or k in skip_keys:
                continue
            yield k
            yield from walk_strings(v, skip_keys)


def skip_brackets(s, i):
    """Index after a balanced [...] starting at s[i] == '['."""
    depth = 0
    while i < len(s):
        if s[i] == "[":
            depth += 1
        elif s[i] == "]":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i


def module_refs(s):
    """(module name, output name or None) for every module.X[...].Y in s."""
    for m in re.finditer(r"(?<![\w.])module\.(" + IDENT + ")", s):
        name, i = m.group(1), m.end()
        while i < len(s) and s[i] == "[":
            i = skip_brackets(s, i)
        out = re.match(r"\.(" + IDENT + ")", s[i:])
        yield name, out.group(1) if out else None


def split_top_level(s):
    """Splits 'a = 1, b = f(x, y)' at top-level commas."""
    parts, depth, cur, in_str = [], 0, [], False
    i = 0
    while i < len(s):
        c = s[i]
        if in_str:
            cur.append(c)
            if c == "\\" and i + 1 < len(s):
                cur.append(s[i + 1])
                i += 2
                continue
            if c == '"':
                in_str = False
        elif c == '"':
            in_str = True
            cur.append(c)
        elif c in "([{":
            depth += 1
            cur.append(c)
        elif c in ")]}":
            depth -= 1
            cur.append(c)
        elif c == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    if "".join(cur).strip():
        parts.append("".join(cur))
    return parts


def call_args(s, start):
    """The argument text of a call whose '(' is at s[start]."""
    depth, i, in_str = 0, start, False
    while i < len(s):
        c = s[i]
        if in_str:
            if c == "\\":
                i += 2
                continue
            if c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return s[start + 1 : i]
        i += 1
    return s[start + 1 :]


def template_names(text):
    """(names used, names bound by for) in a Terraform template's ${…} and %{…}."""
    used, bound = set(), set()
    for m in re.finditer(r"[$%]\{", text):
        if m.start() > 0 and text[m.start() - 1] == m.group(0)[0]:
            continue  # $${ or %%{ escapes
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        expr = text[m.end() : i - 1].strip().strip("~").strip()
        expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
        fm = re.match(r"for\s+(" + IDENT + r")(?:\s*,\s*(" + IDENT + r"))?\s+in\s+(.*)", expr)
        if fm:
            bound.update(x for x in fm.group(1, 2) if x)
            expr = fm.group(3)
        for t in re.finditer(IDENT, expr):
            name = t.group(0)
            before = expr[: t.start()].rstrip()
            after = expr[t.end() :].lstrip()
            if before.endswith(".") or after.startswith("(") or name in TEMPLATE_KEYWORDS:
                continue
            if re.fullmatch(r"[0-9]+", name):
                continue
            used.add(name)
    return used, bound


def admits_1_0(constraint):
    """True when a required_version constraint string admits Terraform 1.0.3."""
    version = (1, 0, 3)
    for part in constraint.split(","):
        m = re.match(r"\s*(>=|<=|~>|!=|=|>|<)?\s*v?([0-9]+(?:\.[0-9]+){0,2})\s*$", part)
        if not m:
            return False
        op, nums = m.group(1) or "=", [int(x) for x in m.group(2).split(".")]
        v = tuple(nums + [0] * (3 - len(nums)))
        ok = {
            ">=": version >= v,
            ">": version > v,
            "<=": version <= v,
            "<": version < v,
            "=": version == v,
            "!=": version != v,
        }.get(op)
        if op == "~>":
            upper = list(nums[:-1]) if len(nums) > 1 else [nums[0]]
            upper[-1] += 1
            ok = version >= v and version[: len(upper)] < tuple(upper)
        if not ok:
            return False
    return True


class Module:
    def __init__(self, path):
        self.path = path
        self.variables = {}
        self.outputs = {}
        self.locals = set()
        self.data = set()
        self.module_calls = {}
        self.provider_aliases = set()
        self.required_providers = set()
        self.has_resources = False
        self.required_versions = []
        self.strings = []  # (file, string) of every expression
        self.texts = {}  # file -> comment-free text


_PARSED = {}


def parse_hcl(raw):
    """hcl2.loads with a cache keyed by the text (the self-test parses many near-copies)."""
    if raw not in _PARSED:
        _PARSED[raw] = hcl2.loads(raw)
    return _PARSED[raw]


def load_module(path, problems):
    mod = Module(path)
    for name in sorted(os.listdir(path)):
        if not name.endswith(".tf"):
            continue
        f = os.path.join(path, name)
        with open(f, encoding="utf-8") as fh:
            raw = fh.read()
        mod.texts[f] = strip_comments(raw)
        try:
            doc = parse_hcl(raw)
        except Exception as e:  # noqa: BLE001 - any parse failure is a finding
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            problems.append(f"{f}: does not parse: {first}")
            continue
        for block in doc.get("variable", []):
            for label, body in block.items():
                if label.startswith("__"):
                    continue
                mod.variables[unquote(label)] = body
        for block in doc.get("output", []):
            for label, body in block.items():
                if label.startswith("__"):
                    continue
                mod.outputs[unquote(label)] = body
        for block in doc.get("locals", []):
            mod.locals.update(k for k in block if not k.startswith("__"))
        for block in doc.get("data", []):
            for dtype, named in block.items():
                if dtype.startswith("__"):
                    continue
                mod.data.update(
                    f"{unquote(dtype)}.{unquote(n)}" for n in named if not n.startswith("__")
                )
        if doc.get("resource"):
            mod.has_resources = True
        for block in doc.get("module", []):
            for label, body in block.items():
                if label.startswith("__"):
                    continue
                mod.module_calls[unquote(label)] = (f, body)
        for block in doc.get("provider", []):
            for label, body in block.items():
                if label.startswith("__"):
                    continue
                alias = body.get("alias")
                mod.provider_aliases.add(
                    unquote(label) + ("." + unquote(alias) if alias else "")
                )
        for block in doc.get("terraform", []):
            if "required_version" in block:
                mod.required_versions.append((f, unquote(block["required_version"])))
            for rp in block.get("required_providers", []):
                mod.required_providers.update(k for k in rp if not k.startswith("__"))
        for s in walk_strings(doc):
            mod.strings.append((f, s))
    return mod


def find_modules(roots):
    found = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != ".terraform")
            if any(n.endswith(".tf") for n in filenames):
                found.append(os.path.normpath(dirpath))
    return found


def is_local_source(source):
    return source.startswith("./") or source.startswith("../")


def check_module(mod, modules, problems):
    p = mod.path
    # Descriptions.
    for name, body in mod.variables.items():
        if not unquote(str(body.get("description", ""))).strip():
            problems.append(f"{p}: variable {name} has no description")
    for name, body in mod.outputs.items():
        if not unquote(str(body.get("description", ""))).strip():
            problems.append(f"{p}: output {name} has no description")

    # Secrets are sensitive: Terraform then keeps them out of plan output and refuses outputs
    # that would show them.
    for name, body in mod.variables.items():
        secret = SECRET_NAME.search(name) or SECRET_TYPE.search(str(body.get("type", "")))
        if secret and body.get("sensitive") is not True:
            problems.append(f"{p}: variable {name} holds a secret but is not sensitive = true")

    # terraform.tfvars.example
    example = os.path.join(p, "terraform.tfvars.example")
    if os.path.isfile(example):
        check_tfvars_example(example, mod, problems)

    # References.
    used_vars = set()
    for f, s in mod.strings:
        for m in re.finditer(r"(?<![\w.])var\.(" + IDENT + ")", s):
            used_vars.add(m.group(1))
            if m.group(1) not in mod.variables:
                problems.append(f"{f}: var.{m.group(1)} is not declared in {p}")
        for m in re.finditer(r"(?<![\w.])local\.(" + IDENT + ")", s):
            if m.group(1) not in mod.locals:
                problems.append(f"{f}: local.{m.group(1)} is not declared in {p}")
        for m in re.finditer(r"(?<![\w.])data\.(" + IDENT + r")\.(" + IDENT + ")", s):
            if f"{m.group(1)}.{m.group(2)}" not in mod.data:
                problems.append(f"{f}: data.{m.group(1)}.{m.group(2)} is not declared in {p}")
        for name, out in module_refs(s):
            if name not in mod.module_calls:
                problems.append(f"{f}: module.{name} is not declared in {p}")
                continue
            _, body = mod.module_calls[name]
            source = unquote(str(body.get("source", "")))
            child = modules.get(os.path.normpath(os.path.join(p, source)))
            if out and child is not None and out not in child.outputs:
                problems.append(f"{f}: module.{name}.{out}: {source} has no output {out}")
    for name in mod.variables:
        if name not in used_vars:
            problems.append(f"{p}: variable {name} is declared but never used")

    # Validations may only refer to their own variable in Terraform 1.0.
    for name, body in mod.variables.items():
        for v in body.get("validation", []):
            for s in walk_strings(v):
                for m in re.finditer(r"(?<![\w.])var\.(" + IDENT + ")", s):
                    if m.group(1) != name:
                        problems.append(
                            f"{p}: validation of variable {name} refers to var.{m.group(1)} "
                            "(Terraform 1.0 allows only the variable itself)"
                        )

    # Module calls.
    for name, (f, body) in mod.module_calls.items():
        source = unquote(str(body.get("source", "")))
        if not is_local_source(source):
            continue
        child_path = os.path.normpath(os.path.join(p, source))
        child = modules.get(child_path)
        if child is None:
            problems.append(f"{f}: module {name}: source {source} is not a module directory")
            continue
        args = {k for k in body if not k.startswith("__")} - META_ARGS
        for a in sorted(args - set(child.variables)):
            problems.append(f"{f}: module {name} passes {a}, which {source} does not declare")
        for v, vbody in child.variables.items():
            if "default" not in vbody and v not in args:
                problems.append(f"{f}: module {name} does not pass required variable {v}")
        providers = body.get("providers")
        if isinstance(providers, dict):
            for value in providers.values():
                target = str(value).strip()
                if target.startswith("${") and target.endswith("}"):
                    target = target[2:-1].strip()
                if target not in mod.provider_aliases:
                    problems.append(
                        f"{f}: module {name} is passed provider {target}, "
                        f"which {p} does not configure"
                    )
        elif providers is not None:
            problems.append(f"{f}: module {name}: providers is not a map")

    # Files read relative to the module, and template variables.
    for f, s in mod.strings:
        for m in re.finditer(
            r"\b(file|filebase64|templatefile)\(\\?\"\$\{path\.module\}/([^\"\\]+)\\?\"", s
        ):
            target = os.path.normpath(os.path.join(p, m.group(2)))
            if not os.path.isfile(target):
                problems.append(f"{f}: {m.group(1)}() reads {target}, which does not exist")
                continue
            if m.group(1) != "templatefile":
                continue
            args = split_top_level(call_args(s, m.start() + len("templatefile")))
            if len(args) != 2 or not args[1].strip().startswith("{"):
                problems.append(f"{f}: templatefile({m.group(2)}) without an object of variables")
                continue
            passed = set()
            for item in split_top_level(args[1].strip()[1:-1]):
                km = re.match(r"\s*(" + IDENT + r")\s*[=:]", item)
                if km:
                    passed.add(km.group(1))
            with open(target, encoding="utf-8") as fh:
                used, bound = template_names(fh.read())
            for n in sorted(used - bound - passed):
                problems.append(f"{target}: uses {n}, which {f} does not pass to templatefile()")
            for n in sorted(passed - used):
                problems.append(f"{f}: passes {n} to {target}, which does not use it")

    # Terraform 1.0 syntax.
    for f, text in mod.texts.items():
        for pattern, why in NEWER_SYNTAX:
            for m in re.finditer(pattern, text, re.M):
                line = text.count("\n", 0, m.start()) + 1
                problems.append(f"{f}:{line}: {why}")
    if not mod.required_versions:
        problems.append(f"{p}: no terraform {{ required_version }}")
    for f, c in mod.required_versions:
        if not admits_1_0(c):
            problems.append(f"{f}: required_version {c!r} does not admit Terraform 1.0.3")


def check_tfvars_example(path, mod, problems):
    """Names a terraform.tfvars.example sets or shows commented out are variables of the
    module; every variable without a default is set."""
    with open(path, encoding="utf-8") as fh:
        raw = fh.read()
    try:
        values = parse_hcl(raw)
    except Exception as e:  # noqa: BLE001 - any parse failure is a finding
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        problems.append(f"{path}: does not parse: {first}")
        return
    values = {k for k in values if not k.startswith("__")}
    shown = set(re.findall(r"^#\s*(" + IDENT + r")\s*=", raw, re.M))
    for name in sorted(values | shown):
        if name not in mod.variables:
            problems.append(f"{path}: {name} is not a variable of {mod.path}")
    for name, body in sorted(mod.variables.items()):
        if "default" not in body and name not in values:
            problems.append(f"{path}: does not set {name}, which has no default")


def needs_providers(mod, modules, seen=None):
    """Provider names a module (and its local children) needs."""
    seen = seen or set()
    if mod.path in seen:
        return set()
    seen.add(mod.path)
    needed = set(mod.required_providers)
    needed.update(a.split(".")[0] for a in mod.provider_aliases)
    if mod.has_resources or mod.data:
        needed.add("(resources)")
    for _, body in mod.module_calls.values():
        source = unquote(str(body.get("source", "")))
        child = modules.get(os.path.normpath(os.path.join(mod.path, source)))
        if not is_local_source(source):
            needed.add(f"(remote module {source})")
        elif child is not None:
            needed |= needs_providers(child, modules, seen)
    if "(resources)" in needed and len(needed) > 1:
        needed.discard("(resources)")
    return needed


def run(roots):
    """(problems, modules, number of .tf files) for the modules under roots."""
    problems = []
    modules = {p: load_module(p, problems) for p in find_modules(roots)}
    for mod in modules.values():
        check_module(mod, modules, problems)
    return problems, modules, sum(len(m.texts) for m in modules.values())


def main(argv):
    plan = "--plan" in argv
    roots = [a for a in argv if a != "--plan"]
    if not roots:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    if plan:
        modules = {p: load_module(p, []) for p in find_modules(roots)}
        for p, mod in modules.items():
            needed = needs_providers(mod, modules)
            if needed:
                print(f"skip {p} (needs provider: {', '.join(sorted(needed))})")
            else:
                print(f"validate {p}")
        return 0
    problems, modules, files = run(roots)
    for line in problems:
        print(f"  problem: {line}")
    print(
        f"check_terraform: {len(modules)} modules, {files} .tf files, "
        f"{len(problems)} problem(s)"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
