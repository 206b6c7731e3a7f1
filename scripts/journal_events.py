#!/usr/bin/env python3
"""The journal's event names, read off the writers in src/, and whether docs/workplace.md has them.

Usage: scripts/journal_events.py [--check] [REPO_DIR]
  Prints each event name with the files that write it.
  --check  exits 1 naming each event that docs/workplace.md does not document (the test
           journal_events_documented).
"""
import pathlib
import re
import sys

WRITE = re.compile(r'\{"event", "([a-z_]+)"|\["event"\] = "([a-z_]+)"')


def main(argv):
    check = "--check" in argv
    args = [a for a in argv if a != "--check"]
    repo = pathlib.Path(args[0] if args else pathlib.Path(__file__).resolve().parent.parent)
    writers = {}
    for path in sorted((repo / "src").rglob("*.cpp")):
        for match in WRITE.finditer(path.read_text()):
            name = match.group(1) or match.group(2)
            writers.setdefault(name, set()).add(str(path.relative_to(repo)))
    doc = (repo / "docs" / "workplace.md").read_text()
    missing = [n for n in sorted(writers) if f"`{n}`" not in doc]
    for name in sorted(writers):
        print(f"{name}: {' '.join(sorted(writers[name]))}")
    if check and missing:
        for name in missing:
            print(f"journal event `{name}` (written by {', '.join(sorted(writers[name]))}) is not in docs/workplace.md",
                  file=sys.stderr)
        return 1
    print(f"{len(writers)} events, {len(missing)} undocumented")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
