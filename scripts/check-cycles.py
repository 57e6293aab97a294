#!/usr/bin/env python3
"""Fails when modules inside a crate import each other in a cycle.

Reads each workspace crate's src/ as text: every `crate::a::b` path in a module's code
(not its comments; `use` lines and paths in code alike; test modules left out) is an
arrow to the deepest module of that path that exists. `super::` paths are not followed:
they point up the tree, to the module that declared this one. Prints each cycle with its arrows and exits 1 if
there is one. A crate's layers stay one-way this way (docs/architecture.md).

    scripts/check-cycles.py            # every crate of the workspace
    scripts/check-cycles.py engine     # one
"""
import os, re, sys

CRATES = ["shared", "storage", "store-sqlite", "engine", "relay", "cloud"]


def cycles(src):
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith('.rs'):
                continue
            p = os.path.join(root, f)
            rel = os.path.relpath(p, src)[:-3]
            parts = rel.split('/')
            # A binary's main.rs beside a lib.rs is a crate of its own that uses the library.
            if rel == 'main' and os.path.exists(os.path.join(src, 'lib.rs')):
                continue
            if parts[-1] in ('mod', 'lib', 'main'):
                parts = parts[:-1]
            if parts and parts[-1] == 'tests':
                continue
            mods['::'.join(parts) or 'crate'] = open(p).read()
    names = set(mods)
    def resolve(path):
        segs = path.split('::')
        for n in range(len(segs), 0, -1):
            cand = '::'.join(segs[:n])
            if cand in names:
                return cand
        return None
    # `crate::Name` through the crate root's `pub use module::Name` is an arrow to module.
    reexports = {}
    for use in re.findall(r'pub use ([a-z_]+)::(\{[^}]*\}|\w+);', mods.get('crate', '')):
        for name in re.findall(r'\w+', use[1]):
            reexports[name] = use[0]
    g = {m: set() for m in names}
    for m, text in mods.items():
        text = re.sub(r'#\[cfg\(test\)\]\s*mod tests \{.*', '', text, flags=re.S)
        # Comments name modules without importing them (doc links).
        text = re.sub(r'//.*', '', text)
        paths = re.findall(r'crate::([a-z_]+(?:::[a-z_]+)*)', text)
        paths += [reexports[n] for n in re.findall(r'crate::([A-Z]\w*)', text) if n in reexports]
        for path in paths:
            t = resolve(path)
            # A module naming its own ancestor is the tree, not an import.
            if t and t != m and not m.startswith(t + '::'):
                g[m].add(t)
    # Strongly connected components (Tarjan): each of more than one module is a cycle.
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return [(comp, {a: sorted(x for x in g[a] if x in comp) for a in comp}) for comp in out]


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    found = 0
    for crate in sys.argv[1:] or CRATES:
        for comp, arrows in cycles(os.path.join(root, crate, "src")):
            found += 1
            print(f"{crate}: import cycle among {', '.join(comp)}")
            for a, to in arrows.items():
                print(f"    {a} -> {', '.join(to)}")
    if found:
        print(f"check-cycles: {found} import cycle(s); see docs/architecture.md for the layers")
        sys.exit(1)
    print("check-cycles: no import cycle in " + ", ".join(sys.argv[1:] or CRATES))


if __name__ == "__main__":
    main()
