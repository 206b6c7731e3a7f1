#!/usr/bin/env python3
"""The journal's events and fields, read off src/journal/events.h, against docs/workplace.md.

Usage: scripts/journal_events.py [--check] [REPO_DIR]
  Prints each event with its fields and the files that name it (event::<name>).
  --check  exits 1 (the test journal_events_documented) when
           - docs/workplace.md has no row for an event, or the row leaves out one of its fields,
             or documents an event that events.h does not have;
           - a file in src/ or tools/ spells an event as a string literal ({"event", "knob"},
             line["event"] = "knob", event == "knob") instead of event::knob;
           - an event is declared but nothing names it.
"""
import pathlib
import re
import sys

DECLARED = re.compile(r'^\s*X\(([a-z_]+), ((?:"[a-z_0-9 ]*"\s*(?:\\\s*)?)+)\)', re.M)
LITERAL = re.compile(r'\{"event", "([a-z_]+)"|\["event"\] = "([a-z_]+)"|event == "([a-z_]+)"')
DOC_ROW = re.compile(r'^\| (`[a-z_]+`(?: / `[a-z_]+`)*) \|(.*)\|(.*)\|\s*$', re.M)


def main(argv):
    check = "--check" in argv
    args = [a for a in argv if a != "--check"]
    repo = pathlib.Path(args[0] if args else pathlib.Path(__file__).resolve().parent.parent)
    header = (repo / "src/journal/events.h").read_text()
    events = {name: "".join(re.findall(r'"([^"]*)"', literals)).split() for name, literals in DECLARED.findall(header)}
    problems = []
    users = {name: set() for name in events}
    for folder in ("src", "tools"):
        for path in sorted((repo / folder).rglob("*.[ch]pp")) + sorted((repo / folder).rglob("*.h")):
            text = path.read_text()
            rel = str(path.relative_to(repo))
            for match in LITERAL.finditer(text):
                name = next(g for g in match.groups() if g)
                problems.append(f"{rel}: the event \"{name}\" is spelled as a string; use event::{name} (src/journal/events.h)")
            for name in re.findall(r'\bevent::([a-z_]+)', text):
                if name in users:
                    users[name].add(rel)
    doc = (repo / "docs" / "workplace.md").read_text()
    rows = {}
    for names, _, fields in DOC_ROW.findall(doc):
        for name in re.findall(r'`([a-z_]+)`', names):
            rows[name] = fields
    for name, fields in events.items():
        if name not in rows:
            problems.append(f"journal event `{name}` is not in docs/workplace.md's table of events")
            continue
        documented = set(re.findall(r'`([a-z_0-9]+)`', rows[name]))
        for field in fields:
            if field not in documented:
                problems.append(f"docs/workplace.md: the row of `{name}` does not mention its field `{field}`")
        if not users[name]:
            problems.append(f"journal event `{name}` is declared in src/journal/events.h but nothing names it")
    for name in rows:
        if name not in events:
            problems.append(f"docs/workplace.md documents the journal event `{name}`, which src/journal/events.h does not have")
    for name in events:
        print(f"{name} ({' '.join(events[name])}): {' '.join(sorted(users[name]))}")
    print(f"{len(events)} events, {len(problems)} problems")
    if check and problems:
        for p in problems:
            print(p, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
