#!/usr/bin/env python3
"""The folder graph of src/: which folder's files include which other folder's headers.

Usage: scripts/include_graph.py [--check] [SRC_DIR]
  Prints every folder -> folder edge (with how many #include lines make it), the cycles among
  folders, and the files outside src/session/ that include session/session_impl.h.
  --check  also compares the edges with src/DEPENDENCIES, the allowed-dependency table, and
           exits 1 naming each #include that the table does not allow (a new dependency, and
           so possibly a new cycle, fails the test include_layers).
"""
import pathlib
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"([a-z_]+)/([^"]+)"', re.M)


def includes(src):
    """(from folder, to folder, file, line number, header) for each #include "folder/..."."""
    for path in sorted(src.rglob("*")):
        if path.suffix not in (".h", ".cpp") or path.parent == src:
            continue
        folder = path.relative_to(src).parts[0]
        text = path.read_text()
        for m in INCLUDE.finditer(text):
            to = m.group(1)
            if to != folder and (src / to).is_dir():
                line = text.count("\n", 0, m.start()) + 1
                yield folder, to, path.relative_to(src.parent), line, f"{to}/{m.group(2)}"


def allowed_table(file):
    """folder -> the folders it may include, from lines 'folder: other other ...'."""
    table = {}
    for raw in file.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        folder, _, others = line.partition(":")
        table[folder.strip()] = set(others.split())
    return table


def cycles(edges):
    """The strongly connected components of more than one folder (Tarjan)."""
    graph = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def main(argv):
    check = "--check" in argv
    args = [a for a in argv if a != "--check"]
    src = pathlib.Path(args[0] if args else pathlib.Path(__file__).resolve().parent.parent / "src")
    found = list(includes(src))
    counts = {}
    for a, b, *_ in found:
        counts[(a, b)] = counts.get((a, b), 0) + 1
    print("edges (from -> to: #include lines):")
    for (a, b), n in sorted(counts.items()):
        print(f"  {a} -> {b}: {n}")
    found_cycles = cycles(counts)
    print("cycles:", "none" if not found_cycles else "")
    for c in found_cycles:
        print("  " + " <-> ".join(c))
    hub = sorted({str(f) for a, _, f, _, h in found if h == "session/session_impl.h" and a != "session"})
    print(f"session/session_impl.h included outside session/: {len(hub)} files")
    for f in hub:
        print("  " + f)
    if not check:
        return 0
    table_file = src / "DEPENDENCIES"
    table = allowed_table(table_file)
    bad = [(f, line, a, h) for a, b, f, line, h in found if b not in table.get(a, set())]
    for f, line, a, h in bad:
        print(f"{f}:{line}: {a}/ may not include {h} (allowed for {a}/: "
              f"{' '.join(sorted(table.get(a, set()))) or 'nothing'}; see {table_file.name})", file=sys.stderr)
    if bad:
        print(f"include_layers: {len(bad)} include(s) break src/DEPENDENCIES", file=sys.stderr)
        return 1
    print(f"include_layers: every #include follows {table_file.relative_to(src.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
