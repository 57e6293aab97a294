#!/usr/bin/env python3
"""Reads the callgrind files scripts/profile-relay.sh leaves in OUT_DIR and prints, as
Markdown, each relay thread's instructions and where the store writer's instructions per
stored message go (its callees, three levels deep), with the sessions' frame decoding.

    scripts/profile-relay-report.py OUT_DIR
"""
import glob
import os
import re
import subprocess
import sys
from collections import defaultdict

HEAD = re.compile(r"^\s*([\d,]+) \([ \d.]+%\)\s+\*\s+(.*?)(?: \[.*\])?$")
CALLEE = re.compile(r"^\s*([\d,]+) \([ \d.]+%\)\s+>\s+(.*?) \(([\d,]+)x\)(?: \[.*\])?$")


def num(s):
    return int(s.replace(",", ""))


def function(loc):
    """'file:function' -> 'function' (callgrind names a function by its source file)."""
    return loc.split(":", 1)[1] if ":" in loc and not loc.startswith("???") else loc


def profile(path):
    """Inclusive cost and calls per function, and each function's callees."""
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--tree=calling", "--threshold=100", path],
        capture_output=True, text=True, check=True,
    ).stdout
    incl, calls, callees, cur = {}, defaultdict(int), defaultdict(list), None
    for line in text.splitlines():
        if m := HEAD.match(line):
            cur = function(m.group(2))
            incl[cur] = max(incl.get(cur, 0), num(m.group(1)))
        elif cur and (m := CALLEE.match(line)):
            callee = function(m.group(2))
            calls[callee] += num(m.group(3))
            callees[cur].append((num(m.group(1)), num(m.group(3)), callee))
    return incl, calls, callees


def total(path):
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    return 0


def find(names, suffix):
    return next((k for k in names if k.endswith(suffix)), None)


def short(name):
    return name if len(name) <= 90 else "…" + name[-89:]


def main():
    out = sys.argv[1]
    files = sorted(glob.glob(os.path.join(out, "callgrind.*-*")), key=total, reverse=True)
    if not files:
        sys.exit(f"no callgrind data in {out}: see {os.path.join(out, 'bench.log')}")
    # The busy threads are the writer and the session workers; the rest are small.
    profiles = {f: profile(f) for f in files[:4]}
    writer = next((f for f, (incl, _, _) in profiles.items() if find(incl, "Writer::commit_group")), None)
    if writer is None:
        sys.exit("no thread ran Writer::commit_group")
    incl, calls, callees = profiles[writer]
    group = find(incl, "Writer::commit_group")
    insert = find(calls, "Writer::insert_message")
    n = calls[insert] if insert else 0
    if not n:
        sys.exit("the store writer stored nothing")

    print(f"messages stored (calls of `Writer::insert_message`): {n:,}\n")
    print("| relay thread (callgrind file) | instructions | per message stored |")
    print("| --- | ---: | ---: |")
    for f in files:
        tag = " (store writer)" if f == writer else ""
        print(f"| {os.path.basename(f)}{tag} | {total(f):,} | {total(f) // n:,} |")

    print(f"\nstore writer: `Writer::commit_group` is {incl[group] // n:,} instructions per message stored, of which:\n")
    print("| callee (indented: its callees) | calls | instructions per message stored |")
    print("| --- | ---: | ---: |")

    def tree(fn, depth, indent):
        for cost, k, callee in sorted(callees.get(fn, []), reverse=True)[:8]:
            if cost // n < 150:
                continue
            print(f"| {indent}`{short(callee)}` | {k:,} | {cost // n:,} |")
            if depth > 1:
                tree(callee, depth - 1, indent + "· ")

    tree(group, 3, "")
    for f, (incl2, calls2, _) in profiles.items():
        dec = find(incl2, "ClientFrame::decode")
        if dec and calls2.get(dec):
            print(f"\nsessions ({os.path.basename(f)}): `ClientFrame::decode`, {calls2[dec]:,} calls, "
                  f"{incl2[dec] // calls2[dec]:,} instructions each")


if __name__ == "__main__":
    main()
