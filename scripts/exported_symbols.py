#!/usr/bin/env python3
"""The symbols libdaifu.so exports, by namespace; --check fails on an internal one.

Usage: scripts/exported_symbols.py [--check] LIBDAIFU [INCLUDE_DIR]

libdaifu is built with hidden visibility: it exports what include/daifu/ marks DAIFU_API,
plus what the compiler emits for it (template instantiations, typeinfo, vtables). Tests and the
CLI reach the internals through daifu_internals (src/CMakeLists.txt), never through the
shared library. With --check, every exported `daifu::detail::NAME` must be a name declared in a
`namespace detail` block of a public header (the guard loop, the knobs' base class): a src/
function or class that is exported fails the check, named.
"""
import collections
import re
import subprocess
import sys
from pathlib import Path


def exported(lib):
    """Demangled names of the defined dynamic symbols of `lib`."""
    nm = subprocess.run(["nm", "-D", "--defined-only", "--format=posix", lib],
                        check=True, capture_output=True, text=True).stdout
    mangled = [line.split()[0] for line in nm.splitlines() if line.strip()]
    demangled = subprocess.run(["c++filt"], input="\n".join(mangled), check=True,
                               capture_output=True, text=True).stdout
    return demangled.splitlines()


def public_detail_names(include_dir):
    """Identifiers that appear inside `namespace detail { ... }` of the public headers."""
    names = set()
    for header in sorted(Path(include_dir).glob("*.h")):
        text = header.read_text()
        for m in re.finditer(r"namespace detail \{", text):
            depth, i = 1, m.end()
            while depth and i < len(text):
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                i += 1
            names |= set(re.findall(r"[A-Za-z_]\w*", text[m.end():i]))
    return names


def namespace_of(symbol):
    m = re.match(r"(?:[\w:<>, ]*?\s)?((?:\w+::)+)", symbol)
    if symbol.startswith(("typeinfo", "vtable", "VTT")):
        m = re.search(r"for ((?:\w+::)+)", symbol)
    return m.group(1).rstrip(":").split("::")[0] if m else "(C)"


def main(argv):
    check = "--check" in argv
    args = [a for a in argv if a != "--check"]
    if not args:
        print(__doc__)
        return 2
    lib = args[0]
    include_dir = args[1] if len(args) > 1 else Path(__file__).resolve().parent.parent / "include" / "daifu"
    symbols = exported(lib)
    counts = collections.Counter(namespace_of(s) for s in symbols)
    print(f"{len(symbols)} exported symbols in {lib}")
    for ns, n in counts.most_common():
        print(f"  {ns}: {n}")
    allowed = public_detail_names(include_dir)
    detail = sorted({m.group(1) for s in symbols for m in re.finditer(r"daifu::detail::(\w+)", s)})
    print(f"daifu::detail names exported: {', '.join(detail) if detail else 'none'}")
    internal = [name for name in detail if name not in allowed]
    if internal:
        print(f"exported internals (declared in no public header's namespace detail): {', '.join(internal)}")
        for name in internal:
            for s in symbols:
                if f"daifu::detail::{name}" in s:
                    print(f"  {s}")
        return 1 if check else 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
