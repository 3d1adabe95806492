#!/usr/bin/env python3
"""Fails when the top-level modules of a workspace crate import each other in a circle.

For every crate of the workspace (the `members` of the root Cargo.toml), each top-level
module of its library (`src/x.rs` or `src/x/`, with everything under it) gets an edge to
every other top-level module its code names as `crate::y` (in `use` lists too). Comments
are left out. A strongly connected set of two or more modules is a circle: it is printed
with one path around it, and the exit status is 1.

    scripts/check-module-cycles.py            # the whole workspace
    scripts/check-module-cycles.py data-plane/node
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def members():
    text = (ROOT / "Cargo.toml").read_text()
    m = re.search(r"members\s*=\s*\[(.*?)\]", text, re.S)
    return re.findall(r'"([^"]+)"', m.group(1)) if m else []


def strip_comments(code):
    code = re.sub(r"/\*.*?\*/", "", code, flags=re.S)
    return re.sub(r"//[^\n]*", "", code)


def group_heads(body):
    """First path segment of each item of a `{a, b::c, d::{e}}` list."""
    heads, depth, item = [], 0, ""
    for ch in body + ",":
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            head = item.strip().split("::")[0].strip()
            if head:
                heads.append(head)
            item = ""
        else:
            item += ch
    return heads


def brace_body(code, start):
    depth = 0
    for i in range(start, len(code)):
        if code[i] == "{":
            depth += 1
        elif code[i] == "}":
            depth -= 1
            if depth == 0:
                return code[start + 1 : i]
    return ""


def referenced(code):
    names = set(re.findall(r"\bcrate::([A-Za-z_][A-Za-z0-9_]*)", code))
    for m in re.finditer(r"\bcrate::\{", code):
        names.update(group_heads(brace_body(code, m.end() - 1)))
    return names


def modules(src):
    out = {}
    for p in sorted(src.iterdir()):
        if p.name in ("lib.rs", "main.rs", "bin"):
            continue
        if p.is_file() and p.suffix == ".rs":
            out.setdefault(p.stem, []).append(p)
        elif p.is_dir():
            out.setdefault(p.name, []).extend(sorted(p.rglob("*.rs")))
    return out


def graph(src):
    mods = modules(src)
    edges = {}
    for name, files in mods.items():
        refs = set()
        for f in files:
            refs |= referenced(strip_comments(f.read_text()))
        edges[name] = sorted(r for r in refs if r in mods and r != name)
    return edges


def circles(edges):
    """Tarjan's strongly connected components of two or more nodes."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


def path_around(edges, comp):
    """One cycle through the component's first module, for the message."""
    start, inside = comp[0], set(comp)
    prev, todo = {start: None}, [start]
    while todo:
        v = todo.pop(0)
        for w in edges[v]:
            if w == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return list(reversed(path)) + [start]
            if w in inside and w not in prev:
                prev[w] = v
                todo.append(w)
    return comp


def main(args):
    crates = args or members()
    failed = 0
    for crate in crates:
        src = ROOT / crate / "src"
        if not src.is_dir():
            continue
        edges = graph(src)
        for comp in circles(edges):
            failed += 1
            print(f"{crate}: modules import each other in a circle: "
                  + " -> ".join(path_around(edges, comp)))
    if failed:
        print(f"{failed} import circle(s)")
        return 1
    print(f"no import circle between the top-level modules of {len(crates)} crate(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
