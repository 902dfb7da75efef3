#!/usr/bin/env python3
"""Checks the direction of imports in src/: no import cycle between files, and the Plan's
data module (src/plan/) reaching into none of the modules that build or run it.

    python3 ci/layers.py            # prints the cycles and forbidden imports, exit 1 if any
    python3 ci/layers.py --graph    # prints every file's dependencies

A file depends on another when it names it through `crate::`, `super::` or `self::` paths,
in `use` lines or inline (`crate::sys::cstr(..)`). A path is resolved to the deepest module
file that exists: `crate::image::run::Plan` is src/image/run.rs, `crate::plan::Mount` is
src/plan/mod.rs. Test modules (`#[cfg(test)] mod tests { .. }` at the end of a file, and
files named tests.rs) are left out: tests may reach anywhere.
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
# What src/plan/ must not import: it is data, below everything that builds or runs it.
PLAN_FORBIDDEN = ["cli", "profile", "instance", "supervisor", "child", "init", "image",
                  "probe", "network", "limits", "security", "planner", "prepare", "runtime"]


def module_of(path):
    """src/a/b.rs -> ['a', 'b']; src/a/mod.rs -> ['a']; src/lib.rs -> []."""
    rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return rel


def files():
    out = {}
    for dirpath, _, names in os.walk(SRC):
        for name in names:
            if name.endswith(".rs") and name != "tests.rs":
                path = os.path.join(dirpath, name)
                if "bin" in os.path.relpath(path, SRC).split(os.sep)[:1]:
                    continue
                out[tuple(module_of(path))] = os.path.relpath(path, os.path.join(SRC, ".."))
    return out


def strip_tests(text):
    m = re.search(r"#\[cfg\(test\)\]\s*mod tests\s*\{", text)
    text = text[: m.start()] if m else text
    text = re.sub(r"//[^\n]*", "", text)
    return text


PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
GLOB = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\*")
GROUP = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{")


def paths(text):
    """Every module path named, with `use a::{b, c::d}` groups expanded one level."""
    for m in PATH.finditer(text):
        yield m.group(1), m.group(2).split("::")[1:]
    for m in GLOB.finditer(text):
        yield m.group(1), m.group(2).split("::")[1:] if m.group(2) else []
    for m in GROUP.finditer(text):
        base = m.group(2).split("::")[1:] if m.group(2) else []
        depth, i = 1, m.end()
        start = i
        while depth and i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        inner = text[start : i - 1]
        for item in re.split(r",(?![^{]*\})", inner):
            item = item.strip().split(" as ")[0].strip()
            if item and not item.startswith("{"):
                yield m.group(1), base + [p for p in item.split("::") if p and p != "{"]


def resolve(kind, parts, here, known):
    if kind == "crate":
        base = []
    elif kind == "self":
        base = list(here)
    else:  # super: the parent module of this file's module
        base = list(here[:-1])
    full = base + parts
    for n in range(len(full), -1, -1):
        if tuple(full[:n]) in known:
            return tuple(full[:n])
    return None


def graph():
    known = files()
    deps = {m: set() for m in known}
    for mod, path in known.items():
        text = strip_tests(open(os.path.join(SRC, "..", path)).read())
        for kind, parts in paths(text):
            target = resolve(kind, parts, mod, known)
            if target is not None and target != mod and target != ():
                deps[mod].add(target)
    return known, deps


def cycles(deps):
    """Strongly connected components with more than one file (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in deps[v]:
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
    for v in deps:
        if v not in index:
            visit(v)
    return out


def main():
    known, deps = graph()
    name = lambda m: known[m]
    if "--graph" in sys.argv:
        for m in sorted(deps):
            print(f"{name(m)}: {' '.join(sorted(name(d) for d in deps[m]))}")
        return 0
    bad = 0
    for comp in cycles(deps):
        bad += 1
        print(f"import cycle between {len(comp)} files: {' '.join(name(m) for m in comp)}")
        for m in comp:
            inside = sorted(name(d) for d in deps[m] if d in comp)
            print(f"  {name(m)} -> {' '.join(inside)}")
    for m in deps:
        if m[:1] == ("plan",):
            for d in sorted(deps[m]):
                if d[0] in PLAN_FORBIDDEN:
                    bad += 1
                    print(f"{name(m)} reaches into {name(d)}: src/plan/ is data only")
    if bad:
        print(f"ci/layers.py: {bad} problem(s); imports must go one way (README, Layout)")
        return 1
    print(f"ci/layers.py: {len(deps)} files, no import cycle, src/plan/ is data only")
    return 0


if __name__ == "__main__":
    sys.exit(main())
